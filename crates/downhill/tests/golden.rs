//! Golden trajectories from real PyTorch and optax (testdata/golden, made by
//! scripts/gen_golden.py): every optimizer and option combination, 200 steps on four tensors
//! with ordinary, tiny, huge, zero and sign-flipping gradients. Parameters, state buffers and
//! step counts must match to a relative error of 1e-6 after one step and 1e-5 through step 200,
//! for the fast kernels and for the reference implementation.
//!
//! The optimizers that need the matrix have their cases in testdata/golden/matrix (made by
//! scripts/gen_golden_matrix.py): the same format, with a shape and a gradient scale per tensor.

use std::path::PathBuf;

use downhill::{Mode, Optimizer, OptimizerConfig, Param, ParamSpec};
use serde_json::Value;

/// splitmix64, as in testdata/golden/README.md.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1), exact in f32.
    fn uniform(&mut self) -> f32 {
        ((self.next() >> 40) as i64 - (1 << 23)) as f32 * (2.0f32).powi(-23)
    }
}

const TENSORS: [(&str, usize, f32); 4] = [
    ("w0", 37, 1.0),
    ("w1", 16, 1.0 / 1048576.0),
    ("w2", 71, 65536.0),
    ("w3", 9, 1.0),
];

/// The tensors of a case: a file's own list when its entries have shapes
/// (testdata/golden/matrix), else the four of testdata/golden/README.md.
struct Tensor {
    name: String,
    shape: Vec<usize>,
    len: usize,
    scale: f32,
}

fn tensors_of(doc: &Value) -> Vec<Tensor> {
    let listed = doc["tensors"].as_array().cloned().unwrap_or_default();
    if !listed.is_empty() && listed.iter().all(|t| t.get("shape").is_some()) {
        return listed
            .iter()
            .map(|t| {
                let shape: Vec<usize> = t["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect();
                Tensor {
                    name: t["name"].as_str().unwrap().to_string(),
                    len: shape.iter().product(),
                    shape,
                    scale: t["scale"].as_f64().unwrap() as f32,
                }
            })
            .collect();
    }
    TENSORS
        .iter()
        .map(|&(n, len, scale)| Tensor {
            name: n.to_string(),
            shape: vec![len],
            len,
            scale,
        })
        .collect()
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/golden")
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).abs() / (y as f64).abs().max(1e-6))
        .fold(0.0, f64::max)
}

/// Runs one golden case; returns a description of every mismatch.
fn run_case(path: &std::path::Path, mode: Mode) -> Vec<String> {
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let case = doc["case"].as_str().unwrap().to_string();
    let name = doc["optimizer"].as_str().unwrap();
    let missing: Vec<u64> = doc["w3_grad_missing_steps"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    let tensors = tensors_of(&doc);
    let shapes: std::collections::HashMap<&str, &[usize]> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    let groups = doc["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let cfg: OptimizerConfig = serde_json::from_value(serde_json::json!({
                "optimizer": name,
                "config": g["config"],
            }))
            .unwrap_or_else(|e| panic!("{case}: config does not parse: {e}"));
            let params = g["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let n = p.as_str().unwrap();
                    ParamSpec::shaped(n, shapes[n].to_vec())
                })
                .collect();
            (cfg, params)
        })
        .collect::<Vec<_>>();
    let mut opt: Box<dyn Optimizer> = groups[0].0.build_groups(groups.clone()).unwrap();
    opt.set_mode(mode);

    let mut rng = SplitMix64(doc["seed"].as_u64().unwrap());
    let mut params: Vec<Vec<f32>> = tensors
        .iter()
        .map(|t| {
            let v: Vec<f32> = (0..t.len).map(|_| rng.uniform()).collect();
            if t.name == "w3" {
                vec![0.0; t.len]
            } else {
                v
            }
        })
        .collect();
    let mut failures = Vec::new();
    for (i, n) in tensors.iter().map(|t| t.name.as_str()).enumerate() {
        let want = f32s(&doc["initial"][n]);
        if want != params[i] {
            failures.push(format!(
                "{case}: initial {n} differs from the generator spec"
            ));
            return failures;
        }
    }
    let snapshots = doc["snapshots"].as_array().unwrap();
    let steps = doc["steps"].as_u64().unwrap();
    let mut snap = snapshots.iter().peekable();
    let mut grads: Vec<Vec<f32>> = tensors.iter().map(|t| vec![0.0; t.len]).collect();
    for k in 1..=steps {
        for (t, tensor) in tensors.iter().enumerate() {
            for (j, slot) in grads[t].iter_mut().enumerate() {
                let mut g = rng.uniform() * tensor.scale;
                if tensor.name == "w3" {
                    if j % 3 == 0 {
                        g = 0.0;
                    } else if k % 2 == 1 {
                        g = -g;
                    }
                }
                *slot = g;
            }
        }
        let mut ps: Vec<Param> = params
            .iter_mut()
            .zip(&grads)
            .zip(tensors.iter().map(|t| t.name.as_str()))
            .map(|((v, g), n)| {
                if n == "w3" && missing.contains(&k) {
                    Param::without_grad(n, v)
                } else {
                    Param::new(n, v, g)
                }
            })
            .collect();
        opt.step(&mut ps).unwrap();
        while let Some(s) = snap.peek() {
            if s["step"].as_u64().unwrap() != k {
                break;
            }
            let s = snap.next().unwrap();
            // A file's own "tolerance" (Muon's bf16 cases, justified in
            // testdata/golden/matrix/README.md), else the core's.
            let tol = match (k, doc.get("tolerance")) {
                (1, Some(t)) => t["step1"].as_f64().unwrap(),
                (_, Some(t)) => t["all_steps"].as_f64().unwrap(),
                (1, None) => 1e-6,
                _ => 1e-5,
            };
            for (t, n) in tensors.iter().map(|t| t.name.as_str()).enumerate() {
                let e = rel_err(&params[t], &f32s(&s["params"][n]));
                if e > tol {
                    failures.push(format!(
                        "{case} [{mode:?}] step {k} param {n}: rel err {e:.3e}"
                    ));
                }
                if let Some(c) = s["step_counts"][n].as_u64() {
                    let got = opt.step_count(n).unwrap();
                    if got != c {
                        failures.push(format!("{case} step {k} {n}: step count {got} != {c}"));
                    }
                }
                if let Some(bufs) = s["state"][n].as_object() {
                    for (b, want) in bufs {
                        match opt.state_buffer(n, b) {
                            None => failures.push(format!("{case} step {k} {n}: no buffer {b}")),
                            Some(got) => {
                                let e = rel_err(got, &f32s(want));
                                if e > tol {
                                    failures.push(format!(
                                        "{case} [{mode:?}] step {k} {n}/{b}: rel err {e:.3e}"
                                    ));
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    failures
}

/// The `*.json` files of testdata/golden and of its subfolders (one per generator script
/// besides scripts/gen_golden.py, e.g. `elem/` from scripts/gen_golden_elem.py).
fn cases() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![golden_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("testdata/golden exists") {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "json") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn check_all(mode: Mode) {
    let files = cases();
    let mut seen = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for f in &files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        seen.insert(doc["optimizer"].as_str().unwrap().to_string());
        failures.extend(run_case(f, mode));
    }
    for name in downhill::OPTIMIZER_NAMES {
        assert!(seen.contains(*name), "no golden file for {name}");
    }
    assert!(
        failures.is_empty(),
        "{} mismatches in {} cases:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn fast_kernels_match_pytorch_and_optax() {
    check_all(Mode::Fast);
}

#[test]
fn reference_implementations_match_pytorch_and_optax() {
    check_all(Mode::Reference);
}
