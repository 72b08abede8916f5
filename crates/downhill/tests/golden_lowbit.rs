//! 8-bit state against bitsandbytes 0.50.2's CPU backend (testdata/golden/lowbit, made by
//! scripts/gen_golden_lowbit.py), with bitsandbytes' own parity protocol: 50 steps, each one
//! started from bitsandbytes' state of the step before (its codes and absmax loaded into
//! downhill); after it the dequantized state `isclose(atol = 3e-3, rtol = 1e-3)` but for fewer
//! than 20 elements per million, at least 99.9% of the codes equal to bitsandbytes', and the
//! parameter (which runs free) within a mean absolute error of 6e-5 every 10 steps. The maps
//! are bitsandbytes' own, bit for bit.

use std::path::PathBuf;

use downhill::storage::{quant, Precision, Sign, StateDtype};
use downhill::{Mode, Optimizer, OptimizerConfig, Param};
use safetensors::SafeTensors;

struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as i64 - (1 << 23)) as f32 * (2.0f32).powi(-23)
    }
}

fn uniform_vec(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut r = SplitMix64(seed);
    (0..n).map(|_| r.uniform() * scale).collect()
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/golden/lowbit")
}

fn f32s(t: &safetensors::tensor::TensorView<'_>) -> Vec<f32> {
    t.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// What one case measured.
struct Outcome {
    worst_code_agreement: f64,
    worst_off_per_million: f64,
    worst_param_error: f64,
}

fn run_case(path: &std::path::Path, mode: Mode) -> Outcome {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let case = &meta["case"];
    let n: usize = meta["n"].parse().unwrap();
    let steps: usize = meta["steps"].parse().unwrap();
    let every: usize = meta["param_every"].parse().unwrap();
    let buffers: Vec<String> = serde_json::from_str(&meta["buffers"]).unwrap();
    let config: serde_json::Value = serde_json::from_str(&meta["config"]).unwrap();
    let cfg: OptimizerConfig = serde_json::from_value(serde_json::json!({
        "optimizer": meta["optimizer"],
        "config": config,
    }))
    .unwrap();
    let mut opt: Box<dyn Optimizer> = cfg.build(vec![("w", n).into()]).unwrap();
    opt.set_precision(0, Precision::state(StateDtype::Int8))
        .unwrap();
    opt.set_mode(mode);

    // bitsandbytes' maps are downhill's.
    let qmap1 = f32s(&st.tensor("qmap1").unwrap());
    assert_eq!(&qmap1[..], &quant::map8(Sign::Signed)[..], "{case}: qmap1");
    if let Ok(q2) = st.tensor("qmap2") {
        assert_eq!(
            &f32s(&q2)[..],
            &quant::map8(Sign::NonNegative)[..],
            "{case}: qmap2"
        );
    }

    let blocks = n.div_ceil(256);
    let codes: Vec<Vec<u8>> = buffers
        .iter()
        .map(|b| st.tensor(&format!("{b}.codes")).unwrap().data().to_vec())
        .collect();
    let absmax: Vec<Vec<f32>> = buffers
        .iter()
        .map(|b| f32s(&st.tensor(&format!("{b}.absmax")).unwrap()))
        .collect();
    let params = f32s(&st.tensor("param").unwrap());
    let mut out = Outcome {
        worst_code_agreement: 1.0,
        worst_off_per_million: 0.0,
        worst_param_error: 0.0,
    };

    let mut w = uniform_vec(11, n, 1.0);
    for step in 1..=steps {
        if step > 1 {
            for (b, name) in buffers.iter().enumerate() {
                let t = step - 2;
                opt.set_state_codes(
                    "w",
                    name,
                    &codes[b][t * n..(t + 1) * n],
                    &absmax[b][t * blocks..(t + 1) * blocks],
                )
                .unwrap();
            }
        }
        let g = uniform_vec(1000 + step as u64, n, 1.0 / 128.0);
        opt.step(&mut [Param::new("w", &mut w, &g)]).unwrap();
        let t = step - 1;
        for (b, name) in buffers.iter().enumerate() {
            let want_codes = &codes[b][t * n..(t + 1) * n];
            let want_absmax = &absmax[b][t * blocks..(t + 1) * blocks];
            let (got_codes, got_absmax) = opt.state_codes("w", name).unwrap();
            let same = got_codes
                .iter()
                .zip(want_codes)
                .filter(|(a, b)| a == b)
                .count();
            let agreement = same as f64 / n as f64;
            // Dequantized state, isclose(atol = 3e-3, rtol = 1e-3) as bitsandbytes' test.
            let sign = if qmap_of(&st, name, &buffers) == 2 {
                Sign::NonNegative
            } else {
                Sign::Signed
            };
            let mut got = vec![0.0; n];
            let mut want = vec![0.0; n];
            quant::dequantize8(got_codes, got_absmax, sign, &mut got);
            quant::dequantize8(want_codes, want_absmax, sign, &mut want);
            let off = got
                .iter()
                .zip(&want)
                .filter(|(a, b)| {
                    ((**a as f64) - (**b as f64)).abs() > 3e-3 + 1e-3 * (**b as f64).abs()
                })
                .count();
            let per_million = off as f64 * 1e6 / n as f64;
            assert!(
                agreement >= 0.999,
                "{case} step {step} {name}: codes agree on {agreement}"
            );
            assert!(
                per_million < 20.0,
                "{case} step {step} {name}: {off} elements not close"
            );
            out.worst_code_agreement = out.worst_code_agreement.min(agreement);
            out.worst_off_per_million = out.worst_off_per_million.max(per_million);
        }
        if step % every == 0 {
            let k = step / every - 1;
            let want = &params[k * n..(k + 1) * n];
            let err = w
                .iter()
                .zip(want)
                .map(|(a, b)| (*a as f64 - *b as f64).abs())
                .sum::<f64>()
                / n as f64;
            assert!(err < 6e-5, "{case} step {step}: mean |param error| {err}");
            out.worst_param_error = out.worst_param_error.max(err);
        }
    }
    out
}

/// Which of bitsandbytes' maps quantizes `name`: the second state (`exp_avg_sq`) uses qmap2.
fn qmap_of(_st: &SafeTensors<'_>, name: &str, buffers: &[String]) -> usize {
    if buffers.len() == 2 && buffers[1] == name {
        2
    } else {
        1
    }
}

#[test]
fn eight_bit_state_follows_bitsandbytes() {
    let mut files: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    assert!(files.len() >= 7, "golden files missing");
    for path in &files {
        for mode in [Mode::Fast, Mode::Reference] {
            let o = run_case(path, mode);
            eprintln!(
                "{} {mode:?}: codes equal >= {:.5}, not close <= {:.1} per million, mean |param error| <= {:.2e}",
                path.file_stem().unwrap().to_string_lossy(),
                o.worst_code_agreement,
                o.worst_off_per_million,
                o.worst_param_error
            );
        }
    }
}
