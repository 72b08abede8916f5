use downhill::{Hyperparams, OptimizerConfig, Param};
use serde_json::json;

fn grad(step: usize, salt: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| (((step * 7 + i * 3 + salt * 11) as f32) * 0.37).sin() * 0.5).collect()
}

fn main() {
    let out = std::path::Path::new(&std::env::args().nth(1).unwrap()).to_path_buf();
    std::fs::create_dir_all(&out).unwrap();
    let h = |f: &dyn Fn(&mut Hyperparams)| { let mut x = Hyperparams { lr: Some(0.01), ..Default::default() }; f(&mut x); x };
    let cases: Vec<(&str, &str, Hyperparams)> = vec![
        ("sgd_momentum_nesterov", "sgd", h(&|x| { x.momentum = Some(0.9); x.nesterov = Some(true); x.weight_decay = Some(0.01); })),
        ("sgd_plain", "sgd", h(&|_| {})),
        ("adagrad", "adagrad", h(&|x| { x.lr_decay = Some(0.01); x.initial_accumulator_value = Some(0.1); })),
        ("rmsprop_centered_momentum", "rmsprop", h(&|x| { x.centered = Some(true); x.momentum = Some(0.9); })),
        ("adam_amsgrad", "adam", h(&|x| { x.amsgrad = Some(true); x.weight_decay = Some(0.01); })),
        ("adamw_paper", "adamw", h(&|x| { x.decay_form = Some("paper".into()); })),
        ("adamax", "adamax", h(&|_| {})),
        ("nadam_decoupled", "nadam", h(&|x| { x.decoupled_weight_decay = Some(true); x.weight_decay = Some(0.01); })),
        ("radam", "radam", h(&|_| {})),
        ("adadelta", "adadelta", h(&|_| {})),
        ("lamb", "lamb", h(&|x| { x.weight_decay = Some(0.01); })),
        ("lars", "lars", h(&|_| {})),
        ("lion", "lion", h(&|x| { x.weight_decay = Some(0.1); })),
    ];
    for (label, name, hp) in cases {
        let c0 = OptimizerConfig::from_hparams(name, &hp).unwrap();
        let c1 = c0.with_lr(0.005).unwrap();
        let mut opt = c0.build_groups(vec![(c0.clone(), vec![("w", 6).into()]), (c1, vec![("b", 3).into()])]).unwrap();
        let mut w: Vec<f32> = (0..6).map(|i| 0.3 - 0.1 * i as f32).collect();
        let mut b: Vec<f32> = vec![0.05, -0.02, 0.0];
        for step in 0..3 {
            let (gw, gb) = (grad(step, 0, 6), grad(step, 1, 3));
            opt.step(&mut [Param::new("w", &mut w, &gw), Param::new("b", &mut b, &gb)]).unwrap();
        }
        opt.set_extra_state("downhill_candle", json!({"steps": 3, "lr_multiplier": 0.5}));
        opt.set_extra_state("downhill_lab", json!({"epoch": 1, "step": 3, "plateau": null}));
        let before = json!({"w": w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "b": b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()});
        opt.save(&out.join(format!("{label}.safetensors"))).unwrap();
        let (gw, gb) = (grad(3, 0, 6), grad(3, 1, 3));
        opt.step(&mut [Param::new("w", &mut w, &gw), Param::new("b", &mut b, &gb)]).unwrap();
        let mut state = serde_json::Map::new();
        for p in ["w", "b"] {
            for buf in ["momentum_buffer", "sum", "square_avg", "grad_avg", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "exp_inf", "mu_product", "acc_delta", "trace", "mu"] {
                if let Some(v) = opt.state_buffer(p, buf) {
                    state.insert(format!("{p}/{buf}"), json!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()));
                }
            }
        }
        let expected = json!({
            "optimizer": name,
            "params_at_save": before,
            "grad_formula": "g[i] = sin(((step*7 + i*3 + salt*11) as f32) * 0.37) * 0.5, salt 0 for w, 1 for b, step 0-based",
            "after_next_step": {"w": w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), "b": b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()},
            "state_after_next_step": state,
            "step_count_after": opt.step_count("w"),
        });
        std::fs::write(out.join(format!("{label}.expected.json")), serde_json::to_string_pretty(&expected).unwrap()).unwrap();
    }
}
