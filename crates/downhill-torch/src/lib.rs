//! Read and write `torch.optim` checkpoints (`torch.save(optimizer.state_dict(), path)`)
//! for downhill optimizers, without Python and without executing the pickle.
//!
//! # Overview
//!
//! [`StateDict::read`] reads a `.pt` file of any torch.optim optimizer downhill shares
//! (SGD, Adagrad, RMSprop, Adam, AdamW, Adamax, NAdam, RAdam, Adadelta, Rprop, ASGD), and
//! [`StateDict::load_into`] puts its hyperparameters, step counts and state buffers into a
//! downhill optimizer, which then continues the run where PyTorch stopped. [`save()`] (or
//! [`write()`] from a [`Snapshot`]) writes the state of a
//! downhill optimizer as a `.pt` file that `torch.load(path, weights_only=True)` followed by
//! `optimizer.load_state_dict(...)` accepts. downhill's LAMB, LARS, Lion, ADOPT and AdEMAMix
//! have no torch.optim counterpart, so they have no `.pt` form (see the table below).
//!
//! ```no_run
//! use downhill::{AdamWConfig, Optimizer, ParamSpec};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // The model's parameters, named as in torch's `named_parameters()`.
//! let specs = [ParamSpec::shaped("fc.weight", [10, 784]), ParamSpec::shaped("fc.bias", [10])];
//! let mut opt = AdamWConfig::default().build(specs)?;
//! let pt = downhill_torch::StateDict::read(&std::fs::read("optim.pt")?)?;
//! pt.load_into(&mut opt)?;            // continue PyTorch's run in downhill
//! // ... train ...
//! std::fs::write("optim-out.pt", downhill_torch::save(&opt)?)?;      // and back
//! # Ok(())
//! # }
//! ```
//!
//! # The optimizers
//!
//! What each torch.optim class's `state_dict()` holds (PyTorch 2.15) and what it becomes in
//! downhill. Every state entry is a `float32` tensor; `step` is a 0-d tensor (torch's SGD keeps
//! none), read as downhill's step count and written back as a 0-d tensor; "0-d" entries are
//! downhill's scalar state (shape `[1]`). The group keys are torch's, in its order, and equal
//! downhill's hyperparameter names (flags aside, see below).
//!
//! | downhill | torch.optim | group keys (besides the flags) | state besides `step` |
//! |---|---|---|---|
//! | `sgd` | `SGD` | lr, momentum, dampening, weight_decay, nesterov, maximize | `momentum_buffer` (when momentum ≠ 0; no `step`) |
//! | `adagrad` | `Adagrad` | lr, lr_decay, eps, weight_decay, initial_accumulator_value, maximize | `sum` |
//! | `rmsprop` | `RMSprop` | lr, momentum, alpha, eps, centered, weight_decay, maximize | `square_avg`, `momentum_buffer` (momentum > 0), `grad_avg` (centered) |
//! | `adam` | `Adam` | lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay | `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq` (amsgrad) |
//! | `adamw` | `AdamW` (= `Adam` with `decoupled_weight_decay=True`) | as Adam | as Adam |
//! | `adamax` | `Adamax` | lr, betas, eps, weight_decay, maximize | `exp_avg`, `exp_inf` |
//! | `nadam` | `NAdam` | lr, betas, eps, weight_decay, momentum_decay, decoupled_weight_decay, maximize | `mu_product` (0-d), `exp_avg`, `exp_avg_sq` |
//! | `radam` | `RAdam` | lr, betas, eps, weight_decay, decoupled_weight_decay, maximize | `exp_avg`, `exp_avg_sq` |
//! | `adadelta` | `Adadelta` | lr, rho, eps, weight_decay, maximize | `square_avg`, `acc_delta` |
//! | `rprop` | `Rprop` | lr, etas, step_sizes, maximize | `prev`, `step_size` |
//! | `asgd` | `ASGD` | lr, lambd, alpha, t0, weight_decay, maximize | `eta` (0-d), `mu` (0-d), `ax` |
//!
//! Pairs (`betas`, `etas`, `step_sizes`) are tuples of ints or floats (torch's default
//! `step_sizes` is `(1e-6, 50)`, an int); downhill writes floats. Rprop's `step_size` holds
//! every coordinate's current step (the `lr` is only its start), and ASGD's `eta` and `mu` are
//! the step size and averaging weight of the *next* step, as torch computed them after the
//! last one: both are taken from the file, not recomputed.
//!
//! downhill's optimizers with no torch.optim class, so no `.pt` form
//! ([`without_torch_counterpart`]; writing one is an [`ErrorKind::Unsupported`] error naming
//! it): LAMB, LARS and Lion (optax has them; PyTorch has no LAMB/LARS/Lion class), ADOPT and
//! AdEMAMix (optax.contrib), Prodigy (PyPI `prodigyopt`). torch.optim's `Adafactor` and `Muon`
//! have downhill counterparts that this crate does not map yet ([`not_mapped_yet`]: writing
//! one is an [`ErrorKind::Unsupported`] error saying so), and `SparseAdam` and `LBFGS` have no
//! downhill optimizer in the registry; files of these four are refused with the keys they hold.
//!
//! # How parameters are matched
//!
//! A torch `state_dict()` keys state by parameter index (running across groups) and lists
//! each group's indices. When the groups carry `param_names` (PyTorch 2.6 and later, for an
//! optimizer built from `model.named_parameters()`), every name must be registered in the same
//! group of the downhill optimizer; otherwise parameters are matched by position within each
//! group, as torch's own `load_state_dict` does. Either way the groups must agree in number and
//! size, and every state tensor must have its parameter's shape.
//!
//! # Hyperparameters and flags
//!
//! Group hyperparameters are read by torch's names, which are downhill's (`lr`, `betas`,
//! `weight_decay`, ...), as ints or floats (or a one-element tensor, as torch allows for `lr`),
//! and validated by downhill; `initial_lr` (added by torch's LR schedulers) becomes the group's
//! initial learning rate. The optimizer is recognised from the set of keys (the file does not
//! name its class); torch's `AdamW` is `Adam` with `decoupled_weight_decay=True` and reads as
//! downhill's `adamw` (or, loaded into a downhill `adam`, as Adam with decoupled decay).
//!
//! | flag | read | written |
//! |---|---|---|
//! | `foreach` | any value: it picks torch's multi-tensor loop, the math is the same | `None` |
//! | `fused` | any value: it picks torch's fused kernel, the math is the same (its last-bit rounding may differ from torch's loop; downhill continues with the loop's, which its goldens match) | `None` |
//! | `capturable` | any value: CUDA-graph-safe step counters, the same math (ASGD's capturable step computes `1 - λη` in `float32` and multiplies by the tensor `η`, so its last bit may differ from the loop's; downhill continues with the loop's, as for `fused`); the state's bytes are read wherever they were saved (`cuda:0` storages too) | `False` |
//! | `differentiable` | `True` is rejected: torch's step is then part of an autograd graph, downhill's is not | `False` |
//!
//! A downhill setting torch lacks is refused when writing (`adam`'s `bias_correction = false`,
//! `adamw`'s `decay_form = "paper"`), naming the field and the value. A downhill
//! learning-rate schedule is not written: the file holds each group's current `lr`.
//! torch's SGD keeps no step count: a parameter read with a momentum buffer gets step 1.
//!
//! # Security
//!
//! A `.pt` file is a zip holding a pickle, and a pickle is a program: `torch.load` with
//! `weights_only=False` runs whatever it names. This crate never runs anything. Its pickle
//! reader (`src/pickle.rs`) is a small virtual machine over plain values that knows exactly
//! the callables `torch.save` uses for a state dict: `torch._utils._rebuild_tensor_v2`, the
//! storage types (`torch.FloatStorage`, ...) and `collections.OrderedDict`. A `GLOBAL` that
//! names anything else (`os.system`, `builtins.eval`, ...) is an [`ErrorKind::Forbidden`]
//! error as soon as it is read, before any `REDUCE` could call it, and so are the opcodes that
//! build arbitrary objects (`INST`, `OBJ`, `NEWOBJ`; `BUILD` may only set a dict's attributes,
//! which are dropped). Every length is checked
//! against the bytes left, so a truncated or hostile file is an error, not a crash.
//!
//! # Why this reader
//!
//! - `candle_core::pickle` reads these files, but it lives in an ML framework (candle-core
//!   pulls gemm, half, safetensors, rand, ...), reads only, and its `read_all` skips the
//!   integer keys of `state`; writing a `.pt` needs a pickle writer anyway.
//! - `serde-pickle` reads and writes pickles but has no persistent ids (`BINPERSID`, how
//!   torch names storages) and resolves globals through its own value model.
//! - So: the [`zip`] crate without default features (crc32fast, indexmap, memchr; already in
//!   the workspace through candle) for the archive, and a 600-line allow-list pickle
//!   reader/writer of our own that is easy to audit.
//!
//! The crate is apart from the core so that the core keeps no archive dependency; it needs
//! only `downhill`, `zip` and `serde_json`.
#![warn(missing_docs)]

mod archive;
mod classes;
mod error;
mod pickle;

use downhill::checkpoint::{Snapshot, SnapshotBuffer, SnapshotGroup, SnapshotParam};
use downhill::hparams::{HyperKind, HyperValue};
use downhill::{Optimizer, OptimizerConfig};

pub use error::{Error, ErrorKind, Result};

use classes::TorchClass;
use pickle::{StorageRef, StorageType, TensorRef, Value};

/// The optimizers a `.pt` file can hold, as downhill names them.
pub const SHARED_OPTIMIZERS: &[&str] = &[
    "sgd", "adagrad", "rmsprop", "adam", "adamw", "adamax", "nadam", "radam", "adadelta", "rprop",
    "asgd",
];

/// downhill's optimizers that torch.optim does not have (so they have no `.pt` form), each
/// with where it comes from. With [`SHARED_OPTIMIZERS`] they cover downhill's whole registry
/// ([`downhill::OPTIMIZER_NAMES`]).
pub fn without_torch_counterpart() -> impl Iterator<Item = (&'static str, &'static str)> {
    classes::NO_TORCH_CLASS.iter().copied()
}

/// downhill's optimizers whose torch.optim class exists but has no `.pt` mapping here yet, as
/// `(downhill name, torch.optim class)`.
pub fn not_mapped_yet() -> impl Iterator<Item = (&'static str, &'static str)> {
    classes::NOT_MAPPED_YET.iter().copied()
}

/// A torch.optim `state_dict()` read from a `.pt` file: the optimizer it is of, its groups'
/// hyperparameters and each parameter's step count and state tensors.
#[derive(Clone, Debug)]
pub struct StateDict {
    class: &'static TorchClass,
    /// downhill's name for it (`adamw` for torch's Adam with decoupled decay).
    optimizer: &'static str,
    groups: Vec<TorchGroup>,
}

#[derive(Clone, Debug)]
struct TorchGroup {
    /// Hyperparameters by torch key (flags checked and removed).
    hyper: Vec<(String, Value)>,
    initial_lr: Option<f64>,
    params: Vec<TorchParam>,
}

#[derive(Clone, Debug)]
struct TorchParam {
    /// The index in torch's `state`.
    index: i64,
    name: Option<String>,
    /// `None` when torch holds no state for it.
    state: Option<TorchState>,
}

#[derive(Clone, Debug)]
struct TorchState {
    step: Option<u64>,
    /// Tensors other than `step`, by key, in the file's order; shapes as saved.
    buffers: Vec<(String, Vec<usize>, Vec<f32>)>,
}

fn number(value: &Value, archive: &archive::Archive, what: &str) -> Result<f64> {
    match value {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(x) => Ok(*x),
        Value::Tensor(t) if t.shape.iter().product::<u64>() == 1 => {
            Ok(archive.f32_values(t, what)?[0] as f64)
        }
        other => Err(Error::unsupported(format!(
            "{what} must be a number, got {}",
            other.describe()
        ))),
    }
}

fn hyper_value(
    kind: HyperKind,
    value: &Value,
    archive: &archive::Archive,
    what: &str,
) -> Result<HyperValue> {
    match kind {
        HyperKind::Number | HyperKind::Integer => {
            Ok(HyperValue::Number(number(value, archive, what)?))
        }
        HyperKind::Pair => match value {
            Value::Tuple(v) | Value::List(v) if v.len() == 2 => Ok(HyperValue::Pair(
                number(&v[0], archive, &format!("{what}[0]"))?,
                number(&v[1], archive, &format!("{what}[1]"))?,
            )),
            other => Err(Error::unsupported(format!(
                "{what} must be a pair of numbers, got {}",
                other.describe()
            ))),
        },
        HyperKind::Flag => match value {
            Value::Bool(b) => Ok(HyperValue::Flag(*b)),
            other => Err(Error::unsupported(format!(
                "{what} must be True or False, got {}",
                other.describe()
            ))),
        },
        _ => Err(Error::unsupported(format!(
            "{what} has a kind torch does not write"
        ))),
    }
}

fn to_value(v: &HyperValue) -> Value {
    match v {
        HyperValue::Flag(b) => Value::Bool(*b),
        HyperValue::Number(x) => Value::Float(*x),
        HyperValue::Pair(a, b) => Value::Tuple(vec![Value::Float(*a), Value::Float(*b)]),
        HyperValue::OptionalPair(a, b) => {
            Value::Tuple(vec![a.map_or(Value::None, Value::Float), Value::Float(*b)])
        }
        HyperValue::Triple(a, b, c) => {
            Value::Tuple(vec![Value::Float(*a), Value::Float(*b), Value::Float(*c)])
        }
        HyperValue::Text(s) => Value::Str(s.clone()),
    }
}

fn str_key(k: &Value, what: &str) -> Result<String> {
    match k {
        Value::Str(s) => Ok(s.clone()),
        other => Err(Error::format(format!(
            "{what} has a key {} that is not a string",
            other.describe()
        ))),
    }
}

impl StateDict {
    /// Reads the bytes of a `.pt` file written by `torch.save(optimizer.state_dict(), ...)`.
    pub fn read(bytes: &[u8]) -> Result<Self> {
        let archive = archive::Archive::read(bytes)?;
        let root = &archive.value;
        let Value::Dict(_) = root else {
            return Err(Error::format(format!(
                "the pickle holds {}, not a state_dict()",
                root.describe()
            )));
        };
        let (Some(state), Some(groups)) = (root.get("state"), root.get("param_groups")) else {
            return Err(Error::format(
                "the pickle is a dict without 'state' and 'param_groups': not an optimizer's \
                 state_dict() (a model's?)",
            ));
        };
        let Value::Dict(state) = state else {
            return Err(Error::format(format!(
                "'state' is {}, not a dict",
                state.describe()
            )));
        };
        let Value::List(groups) = groups else {
            return Err(Error::format(format!(
                "'param_groups' is {}, not a list",
                groups.describe()
            )));
        };
        if groups.is_empty() {
            return Err(Error::format("'param_groups' is empty"));
        }
        let mut class: Option<&'static TorchClass> = None;
        let mut out_groups = Vec::with_capacity(groups.len());
        let mut seen = std::collections::HashSet::new();
        for (gi, g) in groups.iter().enumerate() {
            let Value::Dict(entries) = g else {
                return Err(Error::format(format!(
                    "param group {gi} is {}, not a dict",
                    g.describe()
                )));
            };
            let keys = entries
                .iter()
                .map(|(k, _)| str_key(k, &format!("param group {gi}")))
                .collect::<Result<Vec<_>>>()?;
            let this =
                classes::identify(&keys).ok_or_else(|| {
                    let hyper: Vec<&str> = keys
                        .iter()
                        .map(String::as_str)
                        .filter(|k| !classes::BOOKKEEPING.contains(k))
                        .collect();
                    Error::unsupported(format!(
                    "param group {gi} has the keys [{}], which are not those of any torch.optim \
                     optimizer downhill-torch maps ({}; torch.optim's Adafactor, Muon, SparseAdam \
                     and LBFGS are not among them); {}",
                    hyper.join(", "),
                    classes::CLASSES.iter().map(|c| c.class).collect::<Vec<_>>().join(", "),
                    classes::no_counterpart_note()
                ))
                })?;
            if let Some(c) = class {
                if c.class != this.class {
                    return Err(Error::format(format!(
                        "param group {gi} is of torch.optim.{}, group 0 of torch.optim.{}",
                        this.class, c.class
                    )));
                }
            }
            class = Some(this);
            let mut hyper = Vec::new();
            let mut initial_lr = None;
            let mut indices = None;
            let mut names = None;
            for ((_, v), k) in entries.iter().zip(&keys) {
                match k.as_str() {
                    "params" => indices = Some(v),
                    "param_names" => names = Some(v),
                    "initial_lr" => {
                        initial_lr = Some(number(
                            v,
                            &archive,
                            &format!("param group {gi}: initial_lr"),
                        )?)
                    }
                    flag if classes::FLAGS.contains(&flag) => classes::check_flag(gi, flag, v)?,
                    _ => hyper.push((k.clone(), v.clone())),
                }
            }
            let Some(Value::List(indices)) = indices else {
                return Err(Error::format(format!(
                    "param group {gi} has no 'params' list"
                )));
            };
            let names = match names {
                None => None,
                Some(Value::List(n)) if n.len() == indices.len() => Some(
                    n.iter()
                        .map(|v| match v {
                            Value::Str(s) => Ok(s.clone()),
                            other => Err(Error::format(format!(
                                "param group {gi}: a param_names entry is {}",
                                other.describe()
                            ))),
                        })
                        .collect::<Result<Vec<_>>>()?,
                ),
                Some(other) => {
                    return Err(Error::format(format!(
                        "param group {gi}: param_names is {} for {} params",
                        other.describe(),
                        indices.len()
                    )))
                }
            };
            let mut params = Vec::with_capacity(indices.len());
            for (pi, idx) in indices.iter().enumerate() {
                let Value::Int(index) = idx else {
                    return Err(Error::format(format!(
                        "param group {gi}: params[{pi}] is {}, not an index",
                        idx.describe()
                    )));
                };
                if !seen.insert(*index) {
                    return Err(Error::format(format!(
                        "parameter index {index} appears in two groups"
                    )));
                }
                let name = names.as_ref().map(|n| n[pi].clone());
                let label = match &name {
                    Some(n) => format!("parameter {index} ('{n}')"),
                    None => format!("parameter {index}"),
                };
                let st = state
                    .iter()
                    .find(|(k, _)| matches!(k, Value::Int(i) if i == index))
                    .map(|(_, v)| v);
                let st = match st {
                    None => None,
                    Some(Value::Dict(entries)) if entries.is_empty() => None,
                    Some(Value::Dict(entries)) => {
                        let mut step = None;
                        let mut buffers = Vec::new();
                        for (k, v) in entries {
                            let k = str_key(k, &format!("the state of {label}"))?;
                            let what = format!("{label}: {k}");
                            match (k.as_str(), v) {
                                (_, Value::None) => {}
                                ("step", v) => {
                                    let s = number(v, &archive, &what)?;
                                    if !(s >= 0.0 && s.fract() == 0.0 && s < 2f64.powi(53)) {
                                        return Err(Error::format(format!(
                                            "{what} is {s}, not a step count"
                                        )));
                                    }
                                    step = Some(s as u64);
                                }
                                (_, Value::Tensor(t)) => {
                                    let values = archive.f32_values(t, &what)?;
                                    let shape = t.shape.iter().map(|&d| d as usize).collect();
                                    buffers.push((k, shape, values));
                                }
                                (_, other) => {
                                    return Err(Error::unsupported(format!(
                                        "{what} is {}, not a tensor",
                                        other.describe()
                                    )))
                                }
                            }
                        }
                        Some(TorchState { step, buffers })
                    }
                    Some(other) => {
                        return Err(Error::format(format!(
                            "the state of {label} is {}, not a dict",
                            other.describe()
                        )))
                    }
                };
                params.push(TorchParam {
                    index: *index,
                    name,
                    state: st,
                });
            }
            out_groups.push(TorchGroup {
                hyper,
                initial_lr,
                params,
            });
        }
        if let Some((k, _)) = state
            .iter()
            .find(|(k, _)| !matches!(k, Value::Int(i) if seen.contains(i)))
        {
            return Err(Error::format(format!(
                "'state' has an entry for {}, which no param group lists",
                k.describe()
            )));
        }
        let class = class.expect("at least one group");
        let decoupled = out_groups[0]
            .hyper
            .iter()
            .any(|(k, v)| k == "decoupled_weight_decay" && *v == Value::Bool(true));
        let optimizer = if class.class == "Adam" && decoupled {
            "adamw"
        } else {
            class.downhill
        };
        let dict = StateDict {
            class,
            optimizer,
            groups: out_groups,
        };
        // Check every group's hyperparameters now, so that a bad file fails at `read`.
        for gi in 0..dict.groups.len() {
            dict.config(gi, optimizer, &archive)?;
        }
        // Keep the archive's numbers resolved: hyperparameters given as tensors.
        let mut dict = dict;
        for g in &mut dict.groups {
            for (k, v) in &mut g.hyper {
                if let Value::Tensor(_) = v {
                    *v = Value::Float(number(v, &archive, k)?);
                }
            }
        }
        Ok(dict)
    }

    /// Reads a `.pt` file.
    pub fn read_file(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .map_err(|e| Error::new(ErrorKind::Io, format!("{}: {e}", path.display())))?;
        StateDict::read(&bytes)
    }

    /// downhill's name of the optimizer the file holds (`adamw` for torch's `AdamW`, which is
    /// `Adam` with `decoupled_weight_decay=True`).
    pub fn optimizer(&self) -> &'static str {
        self.optimizer
    }

    /// The torch.optim class the file's keys belong to (`"Adam"` for both Adam and AdamW).
    pub fn torch_class(&self) -> &'static str {
        self.class.class
    }

    /// Number of parameter groups.
    pub fn num_groups(&self) -> usize {
        self.groups.len()
    }

    /// The parameter names of every group, if the file has them (`param_names`).
    pub fn param_names(&self) -> Option<Vec<Vec<String>>> {
        self.groups
            .iter()
            .map(|g| g.params.iter().map(|p| p.name.clone()).collect())
            .collect()
    }

    /// Group `gi`'s hyperparameters as a config of downhill's optimizer `name`.
    fn config(&self, gi: usize, name: &str, archive: &archive::Archive) -> Result<OptimizerConfig> {
        let group = &self.groups[gi];
        let accepted = name == self.optimizer || (self.optimizer == "adamw" && name == "adam");
        if !accepted {
            return Err(Error::mismatch(format!(
                "the file holds a torch.optim.{} state ({}), not downhill's '{name}'",
                self.class.class, self.optimizer
            )));
        }
        let mut config = OptimizerConfig::default_for(name)?;
        for (key, value) in &group.hyper {
            let what = format!("param group {gi}: {key}");
            if key == "decoupled_weight_decay" && name == "adamw" {
                if *value != Value::Bool(true) {
                    return Err(Error::mismatch(format!(
                        "{what} is {}; downhill's adamw always decouples",
                        value.describe()
                    )));
                }
                continue;
            }
            let field = config
                .fields()
                .iter()
                .find(|f| f.name == key)
                .ok_or_else(|| {
                    Error::unsupported(format!(
                        "{what}: downhill's {name} has no such hyperparameter"
                    ))
                })?;
            let v = hyper_value(field.kind, value, archive, &what)?;
            config
                .set(key, &v)
                .map_err(|e| Error::new(ErrorKind::Downhill, format!("param group {gi}: {e}")))?;
        }
        Ok(config)
    }

    fn configs(&self, name: &str) -> Result<Vec<OptimizerConfig>> {
        let empty = archive::Archive::empty();
        (0..self.groups.len())
            .map(|gi| self.config(gi, name, &empty))
            .collect()
    }

    /// Loads the file into `opt`: every group's hyperparameters, every parameter's step count
    /// and state. Parameters are matched by the file's `param_names` when it has them, by
    /// position within each group otherwise; groups must agree in number and size and state
    /// tensors must have their parameter's shapes. On error `opt` is unchanged.
    pub fn load_into(&self, opt: &mut dyn Optimizer) -> Result<()> {
        let configs = self.configs(opt.name())?;
        let mut snap = Snapshot::from_bytes(&opt.to_bytes()?)?;
        if snap.groups.len() != self.groups.len() {
            return Err(Error::mismatch(format!(
                "the file has {} param groups, the optimizer {}",
                self.groups.len(),
                snap.groups.len()
            )));
        }
        for (gi, ((group, config), target)) in self
            .groups
            .iter()
            .zip(configs)
            .zip(&mut snap.groups)
            .enumerate()
        {
            if group.params.len() != target.params.len() {
                return Err(Error::mismatch(format!(
                    "param group {gi} has {} parameters in the file, {} in the optimizer \
                     (missing parameters?)",
                    group.params.len(),
                    target.params.len()
                )));
            }
            let named = group.params.iter().all(|p| p.name.is_some());
            for (pos, dst) in target.params.iter_mut().enumerate() {
                let src = if named {
                    group
                        .params
                        .iter()
                        .find(|p| p.name.as_deref() == Some(dst.name.as_str()))
                        .ok_or_else(|| {
                            Error::mismatch(format!(
                                "parameter '{}' of the optimizer is not in param group {gi} of \
                                 the file (it has {})",
                                dst.name,
                                group
                                    .params
                                    .iter()
                                    .map(|p| format!("'{}'", p.name.as_deref().unwrap_or("")))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ))
                        })?
                } else {
                    &group.params[pos]
                };
                let (step, state) = self.state_for(src, &dst.name, &dst.shape)?;
                dst.step = step;
                dst.state = state;
            }
            target.initial_lr = group.initial_lr.unwrap_or(config.lr());
            target.config = config;
        }
        opt.load_bytes(&snap.to_bytes()?)?;
        Ok(())
    }

    /// The step and downhill state of torch parameter `src` for a parameter `name` of shape
    /// `shape`.
    fn state_for(
        &self,
        src: &TorchParam,
        name: &str,
        shape: &[usize],
    ) -> Result<(u64, Option<Vec<SnapshotBuffer>>)> {
        let Some(st) = &src.state else {
            return Ok((0, None));
        };
        let mut bufs = Vec::with_capacity(st.buffers.len());
        for (key, bshape, values) in &st.buffers {
            let scalar = bshape.is_empty();
            if !scalar && bshape.as_slice() != shape {
                return Err(Error::mismatch(format!(
                    "parameter '{name}' has shape {shape:?}, the file's {key} for it (torch \
                     parameter {}) has shape {bshape:?}",
                    src.index
                )));
            }
            bufs.push(SnapshotBuffer {
                name: key.clone(),
                shape: if scalar { vec![1] } else { shape.to_vec() },
                values: values.clone(),
            });
        }
        let step = match st.step {
            Some(s) => s,
            None if self.class.has_step => {
                return Err(Error::format(format!(
                    "the state of torch parameter {} has no 'step'",
                    src.index
                )))
            }
            // torch's SGD counts no steps; a momentum buffer means at least one.
            None => 1,
        };
        Ok((step, Some(bufs)))
    }

    /// The file as a downhill [`Snapshot`] of its own optimizer (see
    /// [`StateDict::optimizer`]), for converting without a model at hand. Parameters are named
    /// by `names` (every group's, in order), else by the file's `param_names`, else by their
    /// torch index (`"0"`, `"1"`, ...). Shapes come from the state tensors, so every parameter
    /// must have state; otherwise use [`StateDict::load_into`] with an optimizer built for the
    /// model.
    pub fn to_snapshot(&self, names: Option<&[String]>) -> Result<Snapshot> {
        self.to_snapshot_as(self.optimizer, names)
    }

    /// [`StateDict::to_snapshot`] as downhill's optimizer `name`: the file's own, or `adam`
    /// for torch's AdamW (Adam with decoupled decay); any other name is a mismatch.
    pub fn to_snapshot_as(&self, name: &str, names: Option<&[String]>) -> Result<Snapshot> {
        let total: usize = self.groups.iter().map(|g| g.params.len()).sum();
        if let Some(n) = names {
            if n.len() != total {
                return Err(Error::mismatch(format!(
                    "{} parameter names given, the file has {total} parameters",
                    n.len()
                )));
            }
        }
        let configs = self.configs(name)?;
        let mut groups = Vec::with_capacity(self.groups.len());
        let mut k = 0;
        for (group, config) in self.groups.iter().zip(configs) {
            let mut params = Vec::with_capacity(group.params.len());
            for p in &group.params {
                let name = match (names, &p.name) {
                    (Some(n), _) => n[k].clone(),
                    (None, Some(n)) => n.clone(),
                    (None, None) => p.index.to_string(),
                };
                k += 1;
                let shape = p
                    .state
                    .as_ref()
                    .and_then(|s| s.buffers.iter().find(|(_, s, _)| !s.is_empty()))
                    .map(|(_, s, _)| s.clone())
                    .ok_or_else(|| {
                        Error::mismatch(format!(
                            "parameter '{name}' (torch parameter {}) has no state tensor in the \
                             file, so its shape is unknown; load the file into an optimizer \
                             built for the model instead (StateDict::load_into)",
                            p.index
                        ))
                    })?;
                let (step, state) = self.state_for(p, &name, &shape)?;
                params.push(SnapshotParam {
                    name,
                    shape,
                    step,
                    state,
                });
            }
            groups.push(SnapshotGroup {
                initial_lr: group.initial_lr.unwrap_or(config.lr()),
                config,
                params,
            });
        }
        let snap = Snapshot {
            groups,
            skipped_steps: 0,
            lr_driver: Default::default(),
            records: Default::default(),
            global_state: Default::default(),
        };
        snap.build()?; // downhill checks every buffer against its kernel
        Ok(snap)
    }
}

/// The state of `opt` as the bytes of a `.pt` file (see [`write()`]).
pub fn save(opt: &dyn Optimizer) -> Result<Vec<u8>> {
    write(&Snapshot::from_bytes(&opt.to_bytes()?)?)
}

/// A downhill checkpoint as the bytes of a `.pt` file: what `torch.save(opt.state_dict())`
/// writes for the torch.optim optimizer of the same name, with `param_names` (the downhill
/// names), hyperparameters in torch's key order, `foreach`/`fused` `None` and
/// `capturable`/`differentiable` `False`, each parameter's `step` as a 0-d `float32` tensor,
/// and its state tensors. `torch.load(path, weights_only=True)` reads it and
/// `optimizer.load_state_dict` accepts it for an optimizer built with the same groups.
pub fn write(snap: &Snapshot) -> Result<Vec<u8>> {
    let name = snap
        .optimizer()
        .ok_or_else(|| Error::format("the checkpoint has no parameter group"))?;
    let class = classes::for_downhill(name)?;
    let defaults = OptimizerConfig::default_for(name)?;
    let mut storages: Vec<(String, Vec<f32>)> = Vec::new();
    let mut tensor = |values: Vec<f32>, shape: &[usize]| -> Value {
        let key = storages.len().to_string();
        let numel = values.len() as u64;
        let mut stride = vec![1u64; shape.len()];
        for i in (0..shape.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * shape[i + 1] as u64;
        }
        storages.push((key.clone(), values));
        Value::Tensor(TensorRef {
            storage: StorageRef {
                ty: StorageType::Float,
                key,
                location: "cpu".into(),
                numel,
            },
            offset: 0,
            shape: shape.iter().map(|&d| d as u64).collect(),
            stride,
        })
    };
    let mut state = Vec::new();
    let mut groups = Vec::new();
    let mut index = 0i64;
    for (gi, g) in snap.groups.iter().enumerate() {
        for field in g.config.fields() {
            if !class.keys.contains(&field.name)
                && g.config.get(field.name) != defaults.get(field.name)
            {
                return Err(Error::unsupported(format!(
                    "param group {gi}: {name}'s {} = {} has no torch.optim counterpart (torch \
                     behaves as {} = {})",
                    field.name,
                    g.config
                        .get(field.name)
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    field.name,
                    defaults
                        .get(field.name)
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                )));
            }
        }
        let mut entries = Vec::new();
        entries.push((
            Value::Str("param_names".into()),
            Value::List(
                g.params
                    .iter()
                    .map(|p| Value::Str(p.name.clone()))
                    .collect(),
            ),
        ));
        for key in class.keys {
            let v = if classes::FLAGS.contains(key) {
                classes::flag_default(key)
            } else if *key == "decoupled_weight_decay" && name == "adamw" {
                Value::Bool(true)
            } else {
                to_value(&g.config.get(key).ok_or_else(|| {
                    Error::unsupported(format!("downhill's {name} has no '{key}'"))
                })?)
            };
            entries.push((Value::Str(key.to_string()), v));
        }
        let mut indices = Vec::new();
        for p in &g.params {
            indices.push(Value::Int(index));
            let mut st = Vec::new();
            let bufs = match (&p.state, name) {
                (Some(b), _) => Some(b.clone()),
                // torch's Adagrad creates its state at construction and reads it unguarded.
                (None, "adagrad") => {
                    let init = match g.config.get("initial_accumulator_value") {
                        Some(HyperValue::Number(x)) => x as f32,
                        _ => 0.0,
                    };
                    Some(vec![SnapshotBuffer {
                        name: "sum".into(),
                        shape: p.shape.clone(),
                        values: vec![init; p.shape.iter().product()],
                    }])
                }
                (None, _) => None,
            };
            if let Some(bufs) = bufs {
                if class.has_step {
                    st.push((Value::Str("step".into()), tensor(vec![p.step as f32], &[])));
                }
                for b in bufs {
                    // Scalar state (NAdam's mu_product) is a 0-d tensor in torch.
                    let shape: Vec<usize> = if class.scalar_state.contains(&b.name.as_str()) {
                        vec![]
                    } else {
                        b.shape.clone()
                    };
                    st.push((Value::Str(b.name.clone()), tensor(b.values, &shape)));
                }
                state.push((Value::Int(index), Value::Dict(st)));
            }
            index += 1;
        }
        entries.push((Value::Str("params".into()), Value::List(indices)));
        groups.push(Value::Dict(entries));
    }
    let root = Value::Dict(vec![
        (Value::Str("state".into()), Value::Dict(state)),
        (Value::Str("param_groups".into()), Value::List(groups)),
    ]);
    archive::write("archive", &root, &storages)
}
