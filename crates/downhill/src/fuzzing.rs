//! Entry points shared by the fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly, `cargo fuzz`)
//! and the corpus replay test (`tests/fuzz_corpus.rs`, stable, run by CI): each takes the raw
//! bytes of one input, feeds them to a loader or parser, and panics only when an invariant of
//! that loader breaks (a failed load that changed the optimizer, a canonical form that does not
//! read back). Errors are the expected outcome for garbage; a panic anywhere is a finding.
//!
//! Not a stable API: hidden from the docs, kept public so that the fuzz crate, which lives
//! outside the workspace, can call exactly what the replay test calls.
//!
//! | entry | input | what it checks |
//! |---|---|---|
//! | [`checkpoint`] | the bytes of a checkpoint file | [`Optimizer::load_bytes`] errors or succeeds; an error leaves the optimizer unchanged; a loaded state saves, reloads and steps |
//! | [`checkpoint_fixed_crc`] | the same, with the checksum recomputed before decoding | everything past the checksum check |
//! | [`schedule_text`] | a schedule or plateau spec (`cosine:total=10`) | parse; a parsed one prints a canonical form that parses back equal, and gives a learning rate at any step |
//! | [`schedule_json`] | a JSON schedule, plateau config or learning-rate driver | the same for the JSON forms |
//! | [`hparams`] | `name` then `field=value` lines, or a JSON config | [`OptimizerConfig::from_hparams`], [`OptimizerConfig::set`] (unchanged on error), a valid config builds and round-trips |

use serde_json::Value;

use crate::hparams::{HyperKind, HyperValue};
use crate::schedule::{PlateauConfig, Schedule};
use crate::{Hyperparams, Optimizer, OptimizerConfig, Param, ParamSpec, HYPERPARAMETERS};

/// Most elements the checkpoint target registers from a checkpoint's own parameter list.
const MAX_ELEMENTS: usize = 1 << 12;

/// The parameters registered when a checkpoint's own list is unusable (and the seeds' shapes).
pub fn default_params() -> Vec<ParamSpec> {
    vec![ParamSpec::shaped("w", [2usize, 3]), ParamSpec::new("b", 3)]
}

/// The `downhill` metadata entry of a safetensors file, parsed, if there is one.
fn header(data: &[u8]) -> Option<Value> {
    let (_, meta) = safetensors::SafeTensors::read_metadata(data).ok()?;
    let raw = meta.metadata().as_ref()?.get("downhill")?;
    serde_json::from_str(raw).ok()
}

/// The parameter groups a checkpoint header lists, if they are small and well formed.
fn groups_of(head: &Value) -> Option<Vec<Vec<ParamSpec>>> {
    let groups = head.get("state")?.get("groups")?.as_array()?;
    if groups.is_empty() || groups.len() > 8 {
        return None;
    }
    let mut total = 0usize;
    let mut out = Vec::new();
    for g in groups {
        let mut specs = Vec::new();
        for p in g.get("params")?.as_array()? {
            let name = p.get("name")?.as_str()?;
            let shape: Vec<usize> = match (p.get("shape"), p.get("len")) {
                (Some(Value::Array(dims)), _) => dims
                    .iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<_>>()?,
                (_, Some(len)) => vec![usize::try_from(len.as_u64()?).ok()?],
                _ => return None,
            };
            let len = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
            total = total.checked_add(len)?;
            if total > MAX_ELEMENTS || shape.len() > 4 {
                return None;
            }
            specs.push(ParamSpec::shaped(name, shape));
        }
        out.push(specs);
    }
    Some(out)
}

/// An optimizer of the kind a checkpoint names, registered with the parameters it lists when
/// they are small and well formed (else [`default_params`]), so that loading gets past the
/// name and shape checks; SGD when the name is unknown.
pub fn optimizer_for(data: &[u8]) -> Box<dyn Optimizer> {
    let head = header(data);
    let config = head
        .as_ref()
        .and_then(|h| h.get("optimizer")?.as_str())
        .and_then(|name| OptimizerConfig::default_for(name).ok())
        .unwrap_or_else(|| OptimizerConfig::default_for("sgd").expect("sgd is registered"));
    if let Some(groups) = head.as_ref().and_then(groups_of) {
        let groups = groups.into_iter().map(|g| (config.clone(), g)).collect();
        if let Ok(opt) = config.build_groups(groups) {
            return opt;
        }
    }
    config
        .build(default_params())
        .or_else(|_| {
            OptimizerConfig::default_for("sgd")
                .expect("sgd is registered")
                .build(default_params())
        })
        .expect("SGD builds with the default parameters")
}

/// One step of `opt` over its parameters with small gradients; the result is ignored (a
/// loaded state may hold non-finite values, which the step may refuse).
fn step_once(opt: &mut dyn Optimizer) {
    let specs = opt.param_specs();
    let mut data: Vec<Vec<f32>> = specs.iter().map(|s| vec![0.5; s.len()]).collect();
    let grads: Vec<Vec<f32>> = specs.iter().map(|s| vec![0.25; s.len()]).collect();
    let mut params: Vec<Param<'_>> = specs
        .iter()
        .zip(data.iter_mut())
        .zip(&grads)
        .map(|((s, d), g)| Param::new(&s.name, &mut d[..], &g[..]))
        .collect();
    let _ = opt.step(&mut params);
}

/// Loads `data` as a checkpoint into [`optimizer_for`]`(data)`.
///
/// # Panics
///
/// When a failed load changed the optimizer, or a state that loaded cannot be saved and
/// loaded again into a fresh optimizer with the same bytes.
pub fn checkpoint(data: &[u8]) {
    let mut opt = optimizer_for(data);
    let before = opt.to_bytes().expect("a fresh optimizer saves");
    match opt.load_bytes(data) {
        Err(_) => {
            let after = opt
                .to_bytes()
                .expect("an optimizer saves after a failed load");
            assert!(before == after, "a failed load changed the optimizer");
        }
        Ok(()) => {
            let saved = opt.to_bytes().expect("a loaded state saves");
            let mut again = optimizer_for(&saved);
            again.load_bytes(&saved).expect("a saved state loads again");
            let resaved = again.to_bytes().expect("a reloaded state saves");
            assert!(saved == resaved, "save, load, save is not the identity");
            step_once(opt.as_mut());
        }
    }
}

/// `data` with the `crc32` of its `downhill` metadata replaced by the checksum of its tensors,
/// re-serialised; `None` if `data` is not a safetensors file with a JSON object there.
pub fn fix_checksum(data: &[u8]) -> Option<Vec<u8>> {
    let st = safetensors::SafeTensors::deserialize(data).ok()?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(data).ok()?;
    let mut metadata = meta.metadata().clone()?;
    let mut head: Value = serde_json::from_str(metadata.get("downhill")?).ok()?;
    let tensors: crate::checkpoint::CheckpointTensors = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let t = (view.dtype(), view.shape().to_vec(), view.data().to_vec());
            (name, t)
        })
        .collect();
    head.as_object_mut()?.insert(
        "crc32".into(),
        Value::String(crate::checkpoint::crc(&tensors)),
    );
    metadata.insert("downhill".into(), serde_json::to_string(&head).ok()?);
    safetensors::serialize(st.tensors(), Some(metadata)).ok()
}

/// [`checkpoint`] on `data` with its checksum fixed by [`fix_checksum`] (on `data` itself when
/// that is impossible), so that mutations of the header and tensors reach the checks after
/// the checksum.
pub fn checkpoint_fixed_crc(data: &[u8]) {
    match fix_checksum(data) {
        Some(fixed) => checkpoint(&fixed),
        None => checkpoint(data),
    }
}

/// Steps at which a parsed schedule's learning rate is computed.
const STEPS: [u64; 10] = [0, 1, 2, 3, 10, 99, 1000, 123_457, 1 << 31, 1 << 53];

fn exercise_schedule(s: &Schedule) {
    let text = s.to_string();
    let back = Schedule::parse(&text)
        .unwrap_or_else(|e| panic!("canonical form {text:?} of {s:?} does not parse: {e}"));
    assert!(back == *s, "{text:?} reads back as {back:?}, not {s:?}");
    if let Ok(json) = serde_json::to_string(s) {
        // JSON cannot carry inf or NaN: such a schedule need not read back.
        let _ = Schedule::parse(&json);
    }
    for step in STEPS {
        let _ = s.lr(0.1, step);
        let _ = s.multiplier(step);
    }
}

fn exercise_plateau(p: &PlateauConfig) {
    let text = p.to_string();
    let back = PlateauConfig::parse(&text)
        .unwrap_or_else(|e| panic!("canonical form {text:?} of {p:?} does not parse: {e}"));
    assert!(back == *p, "{text:?} reads back as {back:?}, not {p:?}");
}

/// Parses `data` (UTF-8) as a schedule spec and as a plateau spec.
///
/// # Panics
///
/// When a parsed schedule's canonical text does not parse back to an equal value.
pub fn schedule_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = Schedule::parse(text) {
        exercise_schedule(&s);
    }
    if let Ok(p) = PlateauConfig::parse(text) {
        exercise_plateau(&p);
    }
}

/// Parses `data` as a JSON schedule, a JSON plateau config and a JSON learning-rate driver.
///
/// # Panics
///
/// As [`schedule_text`].
pub fn schedule_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(s) = serde_json::from_str::<Schedule>(text) {
        if s.validate().is_ok() {
            exercise_schedule(&s);
        }
    }
    if let Ok(s) = Schedule::parse(text) {
        exercise_schedule(&s);
    }
    if let Ok(p) = serde_json::from_str::<PlateauConfig>(text) {
        if p.validate().is_ok() {
            exercise_plateau(&p);
        }
    }
    if let Ok(d) = serde_json::from_str::<crate::schedule::LrDriver>(text) {
        for groups in 0..3 {
            if d.validate(groups).is_ok() {
                let _ = d.steps();
            }
        }
    }
}

/// A command-line value in the kind of the hyperparameter called `field`.
fn value_for(field: &str, text: &str) -> HyperValue {
    let kind = HYPERPARAMETERS
        .iter()
        .find(|h| h.name == field)
        .map(|h| h.kind);
    let number = |t: &str| t.trim().parse::<f64>().ok().map(HyperValue::Number);
    let parsed = match kind {
        Some(HyperKind::Number | HyperKind::Integer | HyperKind::OptionalNumber) => number(text),
        Some(HyperKind::Pair) => text.split_once(',').and_then(|(a, b)| {
            Some(HyperValue::Pair(
                a.trim().parse().ok()?,
                b.trim().parse().ok()?,
            ))
        }),
        Some(HyperKind::Flag) => text.parse::<bool>().ok().map(HyperValue::Flag),
        Some(HyperKind::OptionalPair | HyperKind::NumberOrPair) => {
            let optional_pair = text.split_once(',').and_then(|(a, b)| {
                let a = match a.trim() {
                    "None" => None,
                    a => Some(a.parse().ok()?),
                };
                Some(HyperValue::OptionalPair(a, b.trim().parse().ok()?))
            });
            match kind {
                Some(HyperKind::NumberOrPair) => optional_pair.or_else(|| number(text)),
                _ => optional_pair,
            }
        }
        Some(HyperKind::Triple) => {
            let v: Vec<f64> = text
                .split(',')
                .map(|t| t.trim().parse().ok())
                .collect::<Option<_>>()
                .unwrap_or_default();
            (v.len() == 3).then(|| HyperValue::Triple(v[0], v[1], v[2]))
        }
        Some(HyperKind::Choice(_)) | None => None,
    };
    parsed.unwrap_or_else(|| HyperValue::Text(text.to_owned()))
}

/// A valid config builds with [`default_params`] (or fails with an error), and a built
/// optimizer's state saves and loads.
fn exercise_config(config: &OptimizerConfig) {
    if config.validate().is_err() {
        return;
    }
    if let Ok(mut opt) = config.build(default_params()) {
        step_once(opt.as_mut());
        let bytes = opt.to_bytes().expect("a built optimizer saves");
        let mut fresh = config.build(default_params()).expect("it built once");
        fresh.load_bytes(&bytes).expect("a saved state loads");
    }
}

/// Parses `data` as hyperparameters: a JSON [`OptimizerConfig`] or [`Hyperparams`] when it
/// starts with `{`, else an optimizer name on the first line and `field=value` lines.
///
/// # Panics
///
/// When [`OptimizerConfig::set`] fails but changes the config, or a valid config cannot save
/// and load its state.
pub fn hparams(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if text.trim_start().starts_with('{') {
        if let Ok(config) = serde_json::from_str::<OptimizerConfig>(text) {
            exercise_config(&config);
        }
        if let Ok(h) = serde_json::from_str::<Hyperparams>(text) {
            for name in crate::OPTIMIZER_NAMES {
                if let Ok(config) = OptimizerConfig::from_hparams(name, &h) {
                    exercise_config(&config);
                }
            }
        }
        return;
    }
    let mut lines = text.lines();
    let name = lines.next().unwrap_or("").trim();
    let mut h = Hyperparams::default();
    let mut config = OptimizerConfig::default_for(name).ok();
    for line in lines {
        let (field, raw) = line.split_once('=').unwrap_or((line, ""));
        let value = value_for(field, raw);
        let _ = h.set(field, value.clone());
        if let Some(c) = config.as_mut() {
            let before = c.clone();
            if c.set(field, &value).is_err() {
                assert!(*c == before, "a refused set of {field} changed the config");
            }
            let _ = c.get(field);
        }
    }
    if let Some(c) = &config {
        exercise_config(c);
    }
    if let Ok(c) = OptimizerConfig::from_hparams(name, &h) {
        exercise_config(&c);
    }
}

/// The repository's `fuzz/` folder (the fuzz crate, its corpora and seeds).
pub fn fuzz_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// Feeds every file of `fuzz/corpus/<target>` to `entry`; returns how many there were (the
/// corpus replay tests of this crate and the lab).
pub fn replay(target: &str, entry: fn(&[u8])) -> usize {
    replay_dir(&fuzz_dir().join("corpus").join(target), target, entry)
}

/// Feeds every file of `dir` to `entry`, in name order; returns how many there were. Panics
/// (it is a test helper) if the folder is unreadable or empty, if an input panics, or if the
/// replay takes a minute or more: a bound on the corpus, not on the machine (a replay this
/// slow means `cmin` was skipped).
pub fn replay_dir(dir: &std::path::Path, target: &str, entry: fn(&[u8])) -> usize {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    let start = std::time::Instant::now();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let r = std::panic::catch_unwind(|| entry(&bytes));
        assert!(r.is_ok(), "{target}: {} panicked", f.display());
    }
    assert!(
        start.elapsed() < std::time::Duration::from_secs(60),
        "{target}: replay took {:?}",
        start.elapsed()
    );
    files.len()
}
