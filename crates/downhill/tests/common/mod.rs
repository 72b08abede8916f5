//! The one registry of optimizer cases that drives the shared test batteries: every optimizer
//! with every combination of its options.

#![allow(dead_code)]

use downhill::{DecayForm, Hyperparams, OptimizerConfig};

fn h() -> Hyperparams {
    Hyperparams::default()
}

/// `(label, config)` for every optimizer and option combination.
pub fn cases() -> Vec<(String, OptimizerConfig)> {
    let mut out: Vec<(String, Hyperparams, &str)> = Vec::new();
    let mut push = |name: &'static str, label: String, hp: Hyperparams| out.push((label, hp, name));
    for wd in [0.0, 0.01] {
        for max in [false, true] {
            let base = Hyperparams {
                lr: Some(0.01),
                weight_decay: Some(wd),
                maximize: Some(max),
                ..h()
            };
            push("sgd", format!("sgd wd={wd} max={max}"), base.clone());
            for (damp, nest) in [(0.0, false), (0.5, false), (0.0, true)] {
                push(
                    "sgd",
                    format!("sgd momentum damp={damp} nesterov={nest} wd={wd} max={max}"),
                    Hyperparams {
                        momentum: Some(0.9),
                        dampening: Some(damp),
                        nesterov: Some(nest),
                        ..base.clone()
                    },
                );
            }
            for (decay, acc) in [(0.0, 0.0), (0.01, 0.1)] {
                push(
                    "adagrad",
                    format!("adagrad lr_decay={decay} acc={acc} wd={wd} max={max}"),
                    Hyperparams {
                        lr_decay: Some(decay),
                        initial_accumulator_value: Some(acc),
                        ..base.clone()
                    },
                );
            }
            for centered in [false, true] {
                for mom in [0.0, 0.9] {
                    push(
                        "rmsprop",
                        format!("rmsprop centered={centered} momentum={mom} wd={wd} max={max}"),
                        Hyperparams {
                            centered: Some(centered),
                            momentum: Some(mom),
                            ..base.clone()
                        },
                    );
                }
            }
            for ams in [false, true] {
                for dec in [false, true] {
                    for bc in [true, false] {
                        push(
                            "adam",
                            format!("adam amsgrad={ams} decoupled={dec} bc={bc} wd={wd} max={max}"),
                            Hyperparams {
                                amsgrad: Some(ams),
                                decoupled_weight_decay: Some(dec),
                                bias_correction: Some(bc),
                                ..base.clone()
                            },
                        );
                    }
                }
                for (form, decay_form) in
                    [("pytorch", DecayForm::Pytorch), ("paper", DecayForm::Paper)]
                {
                    push(
                        "adamw",
                        format!("adamw amsgrad={ams} form={form} wd={wd} max={max}"),
                        Hyperparams {
                            amsgrad: Some(ams),
                            decay_form: Some(decay_form),
                            ..base.clone()
                        },
                    );
                }
            }
            push("adamax", format!("adamax wd={wd} max={max}"), base.clone());
            push(
                "adadelta",
                format!("adadelta wd={wd} max={max}"),
                base.clone(),
            );
            for dec in [false, true] {
                push(
                    "nadam",
                    format!("nadam decoupled={dec} wd={wd} max={max}"),
                    Hyperparams {
                        decoupled_weight_decay: Some(dec),
                        ..base.clone()
                    },
                );
                push(
                    "radam",
                    format!("radam decoupled={dec} wd={wd} max={max}"),
                    Hyperparams {
                        decoupled_weight_decay: Some(dec),
                        ..base.clone()
                    },
                );
            }
        }
        let base = Hyperparams {
            lr: Some(0.01),
            weight_decay: Some(wd),
            ..h()
        };
        for tr in [true, false] {
            push(
                "lamb",
                format!("lamb trust_ratio={tr} wd={wd}"),
                Hyperparams {
                    trust_ratio: Some(tr),
                    ..base.clone()
                },
            );
            for nest in [false, true] {
                push(
                    "lars",
                    format!("lars trust_ratio={tr} nesterov={nest} wd={wd}"),
                    Hyperparams {
                        trust_ratio: Some(tr),
                        nesterov: Some(nest),
                        ..base.clone()
                    },
                );
            }
        }
        push("lion", format!("lion wd={wd}"), base.clone());
    }
    out.into_iter()
        .map(|(label, hp, name)| {
            let cfg =
                OptimizerConfig::from_hparams(name, &hp).unwrap_or_else(|e| panic!("{label}: {e}"));
            (label, cfg)
        })
        .collect()
}

/// Deterministic pseudo-random values in [-1, 1).
pub fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32) / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A little model: tensors of awkward lengths, gradients of varied scales, each step new.
pub struct Workload {
    pub names: Vec<String>,
    pub params: Vec<Vec<f32>>,
    pub step: u64,
}

impl Workload {
    pub fn new(lens: &[usize]) -> Self {
        Workload {
            names: (0..lens.len()).map(|i| format!("t{i}")).collect(),
            params: lens
                .iter()
                .enumerate()
                .map(|(i, &n)| values(1000 + i as u64, n))
                .collect(),
            step: 0,
        }
    }

    pub fn specs(&self) -> Vec<downhill::ParamSpec> {
        self.names
            .iter()
            .zip(&self.params)
            .map(|(n, p)| downhill::ParamSpec::new(n.clone(), p.len()))
            .collect()
    }

    /// The gradients of the next step (scale varies per tensor; some entries are zero).
    pub fn grads(&self) -> Vec<Vec<f32>> {
        self.params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let scale = [1.0f32, 1e-4, 1e3][i % 3];
                values(self.step * 7919 + i as u64, p.len())
                    .into_iter()
                    .enumerate()
                    .map(|(j, g)| if j % 5 == 0 { 0.0 } else { g * scale })
                    .collect()
            })
            .collect()
    }

    /// One step of `opt` with fresh gradients.
    pub fn step(&mut self, opt: &mut dyn downhill::Optimizer) {
        self.step += 1;
        let grads = self.grads();
        let mut ps: Vec<downhill::Param> = self
            .names
            .iter()
            .zip(self.params.iter_mut())
            .zip(&grads)
            .map(|((n, p), g)| downhill::Param::new(n, p, g))
            .collect();
        opt.step(&mut ps).unwrap();
    }
}
