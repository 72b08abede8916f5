//! Optimizer state checkpoints in the safetensors format.
//!
//! A checkpoint holds one tensor per state buffer, named `"{param}/{buffer}"` (for example
//! `"fc1.weight/exp_avg"`), with the buffer's dtype and shape (the parameter's shape for
//! element-wise optimizers; scalar state such as NAdam's `mu_product` is a tensor of shape
//! `[1]`), and one metadata entry, `downhill`, whose JSON value has, in this order:
//!
//! | field | value |
//! |---|---|
//! | `format` | `downhill-optimizer-state` |
//! | `format_version` | `2` |
//! | `optimizer` | the optimizer's name, e.g. `adam` |
//! | `state` | `{"groups": [{"config": {..}, "initial_lr": f64, "params": [{"name", "shape", "step", "has_state"}]}], "skipped_steps": u64, "lr_driver": {..}, "records": {key: {"version": u32, "data": {..}}}}` |
//! | `crc32` | CRC-32 of every tensor's name, length and bytes, in name order, as hex |
//!
//! An optimizer with optimizer-wide scalar state ([`StepKind::Global`](crate::kernel::StepKind::Global):
//! Prodigy's `d`, `d_max`, ...) has it under `"global_state"` in `state`:
//! `{name: {"value": f64, "bits": u64}}`, the value for people and its IEEE bits for the
//! loader, so that it comes back bit for bit.
//!
//! A single entry keeps the file byte-for-byte deterministic (safetensors stores metadata as an
//! unordered map).
//!
//! # Storages other than `f32` ([`crate::storage`])
//!
//! A group whose [`Precision`] is not the default has it under `"precision"` in its group
//! entry (`{"state": "int8", "rounding": "nearest", "master_weights": true}`), and its
//! buffers are stored as they are held: bf16 state as a `BF16` tensor of the buffer's shape;
//! 8-bit codes as a `U8` tensor of the buffer's shape with the blocks' absmax in a second
//! tensor `"{param}/{buffer}.absmax"` (`F32`, one per block of 256); 4-bit codes as a `U8`
//! tensor of `len / 2` packed bytes with `"{param}/{buffer}.absmax"` holding the scales (one
//! per block of 128). A bf16/f16 parameter's `f32` master weights are `"{param}/master"`
//! (`F32`, the parameter's shape), flagged `"master": true` in its parameter entry. A
//! non-zero stochastic-rounding seed is `"rounding_seed"` in `state`. Loading restores the
//! checkpoint's precision, as it restores its configs; every code, absmax and master weight
//! comes back bit for bit, so a resumed run continues bit-identically. Files of `f32`
//! optimizers are unchanged by all this.
//!
//! Hyperparameters are written with serde_json, whose `f64` round-trips exactly, and buffers
//! bit for bit, so a run resumed from a checkpoint continues bit-identically. Loading checks
//! the format, the optimizer, every group's parameter names and shapes, every buffer and the
//! checksum before touching the optimizer: on any error it is left unchanged.
//!
//! # Format 1
//!
//! Checkpoints of format version 1 (downhill 0.1 before shapes) still load: their parameters
//! have a length instead of a shape (it must equal the registered parameter's element count),
//! every tensor is 1-D, and their untyped `extra` JSON becomes version-0 records under the same
//! keys, which a [`Record`](crate::state::Record) reads in its `upgrade`. The candle adapter's
//! step counter and learning-rate multiplier (key `downhill_candle`) go to the learning-rate
//! driver, whose schedule and base learning rates are then the ones set before loading.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::hparams::Hyperparameters;
use crate::kernel::Kernel;
use crate::param::DType;
use crate::schedule::LrDriver;
use crate::state::{RecordDoc, StateBuf};
use crate::storage::quant::{Q4_BLOCK, Q8_BLOCK};
use crate::storage::{BufKind, Precision};

const FORMAT: &str = "downhill-optimizer-state";
const VERSION: &str = "2";
/// The key under which format 1 kept the candle adapter's counters.
const V1_ADAPTER_KEY: &str = "downhill_candle";

#[derive(Serialize, Deserialize)]
struct Header<S> {
    format: String,
    format_version: String,
    optimizer: String,
    state: S,
    crc32: String,
}

/// The part of the header every version shares, read first.
#[derive(Deserialize)]
struct Envelope {
    format: String,
    format_version: String,
    optimizer: String,
    state: serde_json::Value,
    crc32: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateDoc {
    groups: Vec<GroupDoc>,
    skipped_steps: u64,
    lr_driver: LrDriver,
    records: BTreeMap<String, RecordDoc>,
    #[serde(default, skip_serializing_if = "is_zero")]
    rounding_seed: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    global_state: BTreeMap<String, GlobalValue>,
}

/// One optimizer-wide scalar: readable, and exact.
#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GlobalValue {
    value: f64,
    bits: u64,
}

impl GlobalValue {
    fn of(v: f64) -> Self {
        GlobalValue {
            value: v,
            bits: v.to_bits(),
        }
    }
}

fn global_doc(values: impl IntoIterator<Item = (String, f64)>) -> BTreeMap<String, GlobalValue> {
    values
        .into_iter()
        .map(|(k, v)| (k, GlobalValue::of(v)))
        .collect()
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupDoc {
    config: serde_json::Value,
    initial_lr: f64,
    params: Vec<ParamDoc>,
    #[serde(default, skip_serializing_if = "Precision::is_default")]
    precision: Precision,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamDoc {
    name: String,
    shape: Vec<usize>,
    step: u64,
    has_state: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    master: bool,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

fn is_false(x: &bool) -> bool {
    !*x
}

/// Format 1's state.
#[derive(Deserialize)]
struct StateDocV1 {
    groups: Vec<GroupDocV1>,
    skipped_steps: u64,
    #[serde(default)]
    extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct GroupDocV1 {
    config: serde_json::Value,
    initial_lr: f64,
    params: Vec<ParamDocV1>,
}

#[derive(Deserialize)]
struct ParamDocV1 {
    name: String,
    len: usize,
    step: u64,
    has_state: bool,
}

impl StateDocV1 {
    /// Format 1 in format 2's terms: lengths as 1-D shapes (checked against the registration
    /// by length only), `extra` as version-0 records, and the adapter's counters apart.
    fn upgrade(self) -> (StateDoc, Option<(u64, f64)>) {
        let groups = self
            .groups
            .into_iter()
            .map(|g| GroupDoc {
                config: g.config,
                initial_lr: g.initial_lr,
                params: g
                    .params
                    .into_iter()
                    .map(|p| ParamDoc {
                        name: p.name,
                        shape: vec![p.len],
                        step: p.step,
                        has_state: p.has_state,
                        master: false,
                    })
                    .collect(),
                precision: Precision::default(),
            })
            .collect();
        let mut adapter = None;
        let mut records = BTreeMap::new();
        for (key, value) in self.extra {
            if key == V1_ADAPTER_KEY {
                let steps = value["steps"].as_u64();
                let multiplier = value["lr_multiplier"].as_f64();
                if let (Some(s), Some(m)) = (steps, multiplier) {
                    adapter = Some((s, m));
                    continue;
                }
            }
            records.insert(
                key,
                RecordDoc {
                    version: 0,
                    data: value,
                },
            );
        }
        let doc = StateDoc {
            groups,
            skipped_steps: self.skipped_steps,
            lr_driver: LrDriver::default(),
            records,
            rounding_seed: 0,
            global_state: BTreeMap::new(),
        };
        (doc, adapter)
    }
}

fn to_le_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A checkpoint tensor: dtype, shape and little-endian bytes.
type Tensors = BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)>;

/// The tensors of one state buffer stored under `key` with the buffer's `shape`.
fn buffer_tensors(tensors: &mut Tensors, key: String, shape: Vec<usize>, buf: &StateBuf) {
    match buf {
        StateBuf::F32(v) => {
            tensors.insert(key, (Dtype::F32, shape, to_le_bytes(v)));
        }
        StateBuf::BF16(v, _) => {
            let bytes = v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect();
            tensors.insert(key, (Dtype::BF16, shape, bytes));
        }
        StateBuf::Q8 { codes, absmax, .. } => {
            tensors.insert(
                format!("{key}.absmax"),
                (Dtype::F32, vec![absmax.len()], to_le_bytes(absmax)),
            );
            tensors.insert(key, (Dtype::U8, shape, codes.clone()));
        }
        StateBuf::Q4 { codes, scales, .. } => {
            tensors.insert(
                format!("{key}.absmax"),
                (Dtype::F32, vec![scales.len()], to_le_bytes(scales)),
            );
            tensors.insert(key, (Dtype::U8, vec![codes.len()], codes.clone()));
        }
    }
}

/// The tensors of a checkpoint as [`crc`] sums them (for the fuzz targets).
pub(crate) type CheckpointTensors = Tensors;

pub(crate) fn crc(tensors: &Tensors) -> String {
    let mut h = crc32fast::Hasher::new();
    for (name, (_, _, bytes)) in tensors {
        h.update(name.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    format!("{:08x}", h.finalize())
}

fn dtype_name(d: Dtype) -> String {
    format!("{d:?}")
}

fn expected_dtype(kind: BufKind) -> DType {
    match kind {
        BufKind::F32 => DType::F32,
        BufKind::BF16(_) => DType::BF16,
        BufKind::Q8(_) | BufKind::Q4(_) => DType::U8,
    }
}

/// Serialises an optimizer's full state.
pub(crate) fn encode<K: Kernel>(e: &Engine<K>) -> Result<Vec<u8>> {
    let mut tensors: Tensors = BTreeMap::new();
    let mut groups = Vec::with_capacity(e.groups.len());
    for g in &e.groups {
        let mut params = Vec::with_capacity(g.params.len());
        for &i in &g.params {
            let slot = &e.slots[i];
            let has_state = !slot.buffers.is_empty() || slot.step > 0;
            if has_state {
                for (b, (name, buf)) in K::buffers(&g.config).iter().zip(&slot.buffers).enumerate()
                {
                    let key = format!("{}/{name}", slot.spec.name);
                    let shape = K::buffer_shape(&g.config, b, &slot.spec.shape);
                    buffer_tensors(&mut tensors, key, shape, buf);
                }
                for ((name, _), v) in K::scalar_state(&g.config).iter().zip(&slot.scalars) {
                    let key = format!("{}/{name}", slot.spec.name);
                    tensors.insert(key, (Dtype::F32, vec![1], to_le_bytes(&[*v])));
                }
            }
            if let Some(master) = &slot.master {
                let key = format!("{}/master", slot.spec.name);
                tensors.insert(
                    key,
                    (Dtype::F32, slot.spec.shape.clone(), to_le_bytes(master)),
                );
            }
            params.push(ParamDoc {
                name: slot.spec.name.clone(),
                shape: slot.spec.shape.clone(),
                step: slot.step,
                has_state,
                master: slot.master.is_some(),
            });
        }
        groups.push(GroupDoc {
            config: serde_json::to_value(&g.config)
                .map_err(|err| Error::checkpoint(format!("cannot serialise config: {err}")))?,
            initial_lr: g.initial_lr,
            params,
            precision: g.precision,
        });
    }
    let doc = StateDoc {
        groups,
        skipped_steps: e.skipped,
        lr_driver: e.driver.clone(),
        records: e.records.clone(),
        rounding_seed: e.rounding_seed,
        global_state: global_doc(
            K::global_state(&e.groups[0].config)
                .iter()
                .zip(&e.global)
                .map(|((name, _), &v)| (name.to_string(), v)),
        ),
    };
    write(K::NAME, doc, &tensors)
}

/// Writes a header and its tensors as safetensors bytes (the one writer of the format).
fn write(optimizer: &str, doc: StateDoc, tensors: &Tensors) -> Result<Vec<u8>> {
    let header = Header {
        format: FORMAT.to_string(),
        format_version: VERSION.to_string(),
        optimizer: optimizer.to_string(),
        state: doc,
        crc32: crc(tensors),
    };
    let mut meta = HashMap::new();
    meta.insert(
        "downhill".to_string(),
        serde_json::to_string(&header)
            .map_err(|err| Error::checkpoint(format!("cannot serialise state: {err}")))?,
    );
    let views = tensors
        .iter()
        .map(|(name, (dtype, shape, bytes))| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|err| Error::checkpoint(format!("tensor '{name}': {err}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(meta))
        .map_err(|err| Error::checkpoint(format!("cannot serialise: {err}")))
}

/// One parameter's state, read and checked, waiting to be committed.
struct Staged {
    slot: usize,
    step: u64,
    buffers: Vec<StateBuf>,
    scalars: Vec<f32>,
    master: Option<Vec<f32>>,
}

/// Restores a state into `e`, or leaves it untouched and returns the reason.
/// A checkpoint read and checked (format, version, dtypes, checksum), not yet matched to an
/// optimizer.
struct Read {
    optimizer: String,
    doc: StateDoc,
    /// Format 1's adapter counters.
    v1_adapter: Option<(u64, f64)>,
    /// Format 1: parameters are matched by length.
    by_length: bool,
    tensors: Tensors,
}

/// Reads the safetensors bytes of a checkpoint (the one reader of the format).
fn read(bytes: &[u8]) -> Result<Read> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|err| {
        Error::checkpoint(format!(
            "not a valid safetensors file (truncated or corrupted?): {err}"
        ))
    })?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|err| Error::checkpoint(format!("unreadable header: {err}")))?;
    let raw = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("downhill"))
        .ok_or_else(|| {
            Error::checkpoint("no 'downhill' metadata entry: not a downhill optimizer state")
        })?;
    let head: Envelope = serde_json::from_str(raw)
        .map_err(|err| Error::checkpoint(format!("metadata 'downhill' is not valid: {err}")))?;
    if head.format != FORMAT {
        return Err(Error::checkpoint(format!(
            "format is '{}', expected '{FORMAT}'",
            head.format
        )));
    }
    let state_err = |err: serde_json::Error| {
        Error::checkpoint(format!("metadata 'downhill' is not valid: {err}"))
    };
    let by_length = head.format_version == "1";
    let (doc, v1_adapter) = match head.format_version.as_str() {
        "2" => (
            serde_json::from_value::<StateDoc>(head.state).map_err(state_err)?,
            None,
        ),
        "1" => serde_json::from_value::<StateDocV1>(head.state)
            .map_err(state_err)?
            .upgrade(),
        other => {
            return Err(Error::checkpoint(format!(
                "format_version is '{other}', this build reads '1' and '{VERSION}'"
            )))
        }
    };
    let mut tensors: Tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        if !matches!(view.dtype(), Dtype::F32 | Dtype::BF16 | Dtype::U8) {
            return Err(Error::checkpoint(format!(
                "tensor '{name}' is {:?}, this build stores state as F32, BF16 or U8",
                view.dtype()
            )));
        }
        tensors.insert(
            name,
            (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
        );
    }
    let sum = crc(&tensors);
    if sum != head.crc32 {
        return Err(Error::checkpoint(format!(
            "checksum mismatch (file says {}, data gives {sum}): the file is corrupted",
            head.crc32
        )));
    }
    Ok(Read {
        optimizer: head.optimizer,
        doc,
        v1_adapter,
        by_length,
        tensors,
    })
}

/// Restores a state into `e`, or leaves it untouched and returns the reason.
pub(crate) fn decode_into<K: Kernel>(e: &mut Engine<K>, bytes: &[u8]) -> Result<()> {
    let Read {
        optimizer,
        doc,
        v1_adapter,
        by_length,
        mut tensors,
    } = read(bytes)?;
    if optimizer != K::NAME {
        return Err(Error::checkpoint(format!(
            "checkpoint is for optimizer '{optimizer}', this optimizer is '{}'",
            K::NAME
        )));
    }
    if doc.groups.len() != e.groups.len() {
        return Err(Error::checkpoint(format!(
            "checkpoint has {} parameter groups, this optimizer has {}",
            doc.groups.len(),
            e.groups.len()
        )));
    }
    // Stage everything, then commit.
    let mut configs = Vec::with_capacity(doc.groups.len());
    let mut staged = Vec::new();
    for (gi, (gdoc, group)) in doc.groups.iter().zip(&e.groups).enumerate() {
        let config: K::Config = serde_json::from_value(gdoc.config.clone()).map_err(|err| {
            Error::checkpoint(format!(
                "group {gi}: config is not a valid {}: {err}",
                K::NAME
            ))
        })?;
        config
            .validate()
            .map_err(|err| Error::checkpoint(format!("group {gi}: {}", err.message())))?;
        let precision = gdoc.precision;
        Engine::<K>::check_precision(&precision)
            .map_err(|err| Error::checkpoint(format!("group {gi}: {}", err.message())))?;
        if gdoc.params.len() != group.params.len() {
            return Err(Error::checkpoint(format!(
                "group {gi} has {} parameters in the checkpoint, {} in this optimizer",
                gdoc.params.len(),
                group.params.len()
            )));
        }
        for (pdoc, &slot_id) in gdoc.params.iter().zip(&group.params) {
            let spec = &e.slots[slot_id].spec;
            if pdoc.name != spec.name {
                return Err(Error::checkpoint(format!(
                    "group {gi}: checkpoint has parameter '{}', this optimizer has '{}'",
                    pdoc.name, spec.name
                )));
            }
            let same = if by_length {
                pdoc.shape.iter().product::<usize>() == spec.len()
            } else {
                pdoc.shape == spec.shape
            };
            if !same {
                return Err(Error::checkpoint(format!(
                    "parameter '{}': the checkpoint has shape {:?}, this optimizer registered \
                     shape {:?}",
                    spec.name, pdoc.shape, spec.shape
                )));
            }
            let mut buffers = Vec::new();
            let mut scalars = Vec::new();
            if pdoc.has_state {
                for (b, name) in K::buffers(&config).iter().enumerate() {
                    let shape = K::buffer_shape(&config, b, &spec.shape);
                    let want = if by_length {
                        vec![shape.iter().product()]
                    } else {
                        shape
                    };
                    let kind = Engine::<K>::buffer_kind(&config, &precision, b, spec.len());
                    buffers.push(take_buffer(&mut tensors, &spec.name, name, &want, kind)?);
                }
                for (name, _) in K::scalar_state(&config) {
                    scalars.extend(take(&mut tensors, &spec.name, name, &[1])?);
                }
            }
            let master = if pdoc.master {
                Some(take(&mut tensors, &spec.name, "master", &spec.shape)?)
            } else {
                None
            };
            staged.push(Staged {
                slot: slot_id,
                step: pdoc.step,
                buffers,
                scalars,
                master,
            });
        }
        configs.push((config, gdoc.initial_lr, precision));
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(Error::checkpoint(format!(
            "checkpoint has tensor '{extra}' that this optimizer does not use"
        )));
    }
    let driver = match v1_adapter {
        _ if !by_length => doc.lr_driver,
        Some((steps, multiplier)) => {
            let mut d = e.driver.clone();
            d.restore_v1(steps, multiplier)
                .map_err(|err| Error::checkpoint(err.message().to_string()))?;
            d
        }
        None => e.driver.clone(),
    };
    driver
        .validate(e.groups.len())
        .map_err(|err| Error::checkpoint(format!("lr_driver: {}", err.message())))?;
    let names = K::global_state(&configs[0].0);
    let mut global = Vec::with_capacity(names.len());
    for (name, _) in &names {
        let v = doc.global_state.get(*name).ok_or_else(|| {
            Error::checkpoint(format!(
                "checkpoint lacks the optimizer-wide state '{name}' of {}",
                K::NAME
            ))
        })?;
        global.push(f64::from_bits(v.bits));
    }
    if let Some(extra) = doc
        .global_state
        .keys()
        .find(|k| !names.iter().any(|(n, _)| n == k))
    {
        return Err(Error::checkpoint(format!(
            "checkpoint has optimizer-wide state '{extra}' that {} does not use",
            K::NAME
        )));
    }
    for (group, (config, initial_lr, precision)) in e.groups.iter_mut().zip(configs) {
        group.config = config;
        group.initial_lr = initial_lr;
        group.precision = precision;
    }
    for s in staged {
        let slot = &mut e.slots[s.slot];
        slot.step = s.step;
        slot.buffers = s.buffers;
        slot.scalars = s.scalars;
        slot.master = s.master;
    }
    e.skipped = doc.skipped_steps;
    e.rounding_seed = doc.rounding_seed;
    e.global = global;
    e.records = doc.records;
    e.driver = driver;
    Ok(())
}

/// Removes tensor `{param}/{buffer}` and checks its dtype and shape.
fn take_raw(tensors: &mut Tensors, key: &str, dtype: Dtype, shape: &[usize]) -> Result<Vec<u8>> {
    let (got_dtype, got, bytes) = tensors
        .remove(key)
        .ok_or_else(|| Error::checkpoint(format!("checkpoint lacks tensor '{key}'")))?;
    if got_dtype != dtype {
        return Err(Error::checkpoint(format!(
            "tensor '{key}' is {}, the group's precision stores it as {}",
            dtype_name(got_dtype),
            dtype_name(dtype)
        )));
    }
    if got != shape {
        return Err(Error::checkpoint(format!(
            "tensor '{key}' has shape {got:?}, expected {shape:?}"
        )));
    }
    Ok(bytes)
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn take(tensors: &mut Tensors, param: &str, buffer: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let key = format!("{param}/{buffer}");
    Ok(f32s(&take_raw(tensors, &key, Dtype::F32, shape)?))
}

/// One state buffer of the storage `kind`, with its absmax for codes.
fn take_buffer(
    tensors: &mut Tensors,
    param: &str,
    buffer: &str,
    shape: &[usize],
    kind: BufKind,
) -> Result<StateBuf> {
    let key = format!("{param}/{buffer}");
    let len: usize = shape.iter().product();
    let absmax = |tensors: &mut Tensors, blocks: usize| -> Result<Vec<f32>> {
        let key = format!("{key}.absmax");
        Ok(f32s(&take_raw(tensors, &key, Dtype::F32, &[blocks])?))
    };
    let dtype = match expected_dtype(kind) {
        DType::F32 => Dtype::F32,
        DType::BF16 => Dtype::BF16,
        _ => Dtype::U8,
    };
    Ok(match kind {
        BufKind::F32 => StateBuf::F32(f32s(&take_raw(tensors, &key, dtype, shape)?)),
        BufKind::BF16(rounding) => {
            let bytes = take_raw(tensors, &key, dtype, shape)?;
            let v = bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            StateBuf::BF16(v, rounding)
        }
        BufKind::Q8(sign) => {
            let codes = take_raw(tensors, &key, dtype, shape)?;
            let absmax = absmax(tensors, len.div_ceil(Q8_BLOCK))?;
            StateBuf::Q8 {
                codes,
                absmax,
                sign,
            }
        }
        BufKind::Q4(sign) => {
            let codes = take_raw(tensors, &key, dtype, &[len.div_ceil(2)])?;
            let scales = absmax(tensors, len.div_ceil(Q4_BLOCK))?;
            StateBuf::Q4 {
                codes,
                scales,
                sign,
            }
        }
    })
}

/// Writes `bytes` to `path` atomically and durably, refusing a concurrent writer.
///
/// 1. An exclusive advisory lock is taken on the sidecar file `.{name}.lock` next to `path`
///    (created if needed and left in place; the operating system releases the lock when the
///    process ends, even if it is killed). If another process holds it, the write is refused
///    with [`ErrorKind::Locked`](crate::ErrorKind::Locked) and nothing is touched.
/// 2. The bytes go to a temporary file in the same folder, which is flushed to disk
///    (`fsync`), and the folder is flushed so that the temporary file's entry is durable.
/// 3. The temporary file is renamed over `path` and the folder is flushed again, so that after
///    a crash at any point `path` holds either the previous complete file or the new one.
///
/// On an error (a full disk, a file-size limit, a missing folder) the temporary file is
/// removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => std::path::PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::checkpoint(format!("'{}' is not a file path", path.display())))?;
    let _lock = PathLock::acquire(path)?;
    remove_stale_temporaries(&dir, &file_name.to_string_lossy());
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        sync_dir(&dir)?;
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    result.map_err(|err| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, err)
    })
}

/// Removes the temporary files that writers of `name` killed mid-write left behind (the
/// caller holds the lock, so none of them is being written).
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let prefix = format!(".{name}.tmp-");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Flushes a folder's entries to disk (a no-op where folders cannot be opened as files).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The exclusive lock of a path being written (a file, or a folder such as a training run's):
/// the file `.{name}.lock` next to it, held with the operating system's advisory lock
/// (`flock`) as long as the value lives, and released even if the process is killed.
/// [`write_atomic`] holds one over each write; a program writing a folder over a long time
/// holds one over the folder, so that a second writer is refused with
/// [`ErrorKind::Locked`](crate::ErrorKind::Locked) instead of interleaving with the first.
///
/// ```
/// # let dir = tempfile::tempdir().unwrap();
/// let run = dir.path().join("run");
/// let held = downhill::checkpoint::PathLock::acquire(&run).unwrap();
/// let again = downhill::checkpoint::PathLock::acquire(&run);
/// # #[cfg(unix)]
/// assert_eq!(again.unwrap_err().kind(), downhill::ErrorKind::Locked);
/// drop(held);
/// assert!(downhill::checkpoint::PathLock::acquire(&run).is_ok());
/// ```
///
/// The lock file is removed when the lock is dropped (while still held, so that no other
/// writer can hold a lock on the removed file at the same time as one on a new file of the
/// same name: a lock is only taken on the file the path names at that moment).
#[derive(Debug)]
pub struct PathLock {
    file: std::fs::File,
    path: std::path::PathBuf,
}

impl PathLock {
    /// Takes the lock of `path` (which need not exist; its folder must), or refuses with
    /// [`ErrorKind::Locked`](crate::ErrorKind::Locked) naming `path` if another holder has it
    /// (another process, or another `PathLock` of this one).
    pub fn acquire(path: &Path) -> Result<PathLock> {
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => d.to_path_buf(),
            None => std::path::PathBuf::from("."),
        };
        let name = path.file_name().ok_or_else(|| {
            Error::checkpoint(format!("'{}' names no file or folder", path.display()))
        })?;
        lock_for_writing(path, &dir, &name.to_string_lossy())
    }

    /// The lock file.
    pub fn lock_file(&self) -> &Path {
        &self.path
    }
}

impl Drop for PathLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

/// Takes the exclusive lock of `.{name}.lock` in `dir`, or refuses if another process holds
/// it.
fn lock_for_writing(path: &Path, dir: &Path, name: &str) -> Result<PathLock> {
    let lock_path = dir.join(format!(".{name}.lock"));
    loop {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    crate::ErrorKind::Locked,
                    Some(path.display().to_string()),
                    format!(
                        "{}: another process is writing it (lock {} is held)",
                        path.display(),
                        lock_path.display()
                    ),
                ))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io(&lock_path, e)),
        }
        if still_named(&file, &lock_path) {
            return Ok(PathLock {
                file,
                path: lock_path,
            });
        }
        // The lock file was removed (its writer finished) between our open and our lock:
        // the lock is on a file nobody else will look at. Try again with the current one.
    }
}

/// Whether `path` still names the open file `file`.
fn still_named(file: &std::fs::File, path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (file.metadata(), std::fs::metadata(path)) {
            (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (file, path);
        true
    }
}

/// A checkpoint's contents as plain values: what [`Optimizer::to_bytes`](crate::Optimizer::to_bytes)
/// writes, for tools that read or write checkpoints without an optimizer at hand (converters
/// to and from other frameworks' formats, inspection).
///
/// [`Snapshot::from_bytes`] reads a checkpoint of format 2 (the format's checks included),
/// [`Snapshot::to_bytes`] writes one, and [`Snapshot::build`] makes the optimizer it describes,
/// which checks every buffer against the optimizer's kernel.
///
/// ```
/// use downhill::checkpoint::Snapshot;
/// use downhill::{AdamConfig, Optimizer, Param};
///
/// let mut opt = AdamConfig::default().build([("w", [2usize])])?;
/// opt.step(&mut [Param::new("w", &mut [1.0f32, 2.0], &[0.1f32, -0.1])])?;
/// let snap = Snapshot::from_bytes(&opt.to_bytes()?)?;
/// let w = &snap.groups[0].params[0];
/// assert_eq!((w.name.as_str(), w.step), ("w", 1));
/// assert_eq!(w.buffer("exp_avg").map(|b| b.values.len()), Some(2));
/// let again = snap.build()?; // the same optimizer, state included
/// assert_eq!(again.to_bytes()?, opt.to_bytes()?);
/// # Ok::<(), downhill::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The parameter groups, in order.
    pub groups: Vec<SnapshotGroup>,
    /// Steps skipped by the non-finite policy.
    pub skipped_steps: u64,
    /// The learning-rate driver.
    pub lr_driver: LrDriver,
    /// Companion records by key.
    pub records: BTreeMap<String, RecordDoc>,
    /// Optimizer-wide scalar state by name (Prodigy's `d`, ...; empty for other optimizers).
    pub global_state: BTreeMap<String, f64>,
}

/// One parameter group of a [`Snapshot`].
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotGroup {
    /// The group's hyperparameters (every group of a snapshot is of the same optimizer).
    pub config: crate::OptimizerConfig,
    /// The learning rate the group was created with.
    pub initial_lr: f64,
    /// The group's parameters, in registration order.
    pub params: Vec<SnapshotParam>,
}

/// One parameter of a [`Snapshot`]: its name, shape, step count and state.
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotParam {
    /// The registered name.
    pub name: String,
    /// The registered shape.
    pub shape: Vec<usize>,
    /// How many times it was updated.
    pub step: u64,
    /// Its state buffers and scalar state (scalars have shape `[1]`), by name, or `None`
    /// before its first step.
    pub state: Option<Vec<SnapshotBuffer>>,
}

/// One state buffer (or scalar state, of shape `[1]`) of a [`SnapshotParam`].
#[derive(Clone, Debug, PartialEq)]
pub struct SnapshotBuffer {
    /// The kernel's name for it (`exp_avg`, `mu_product`, ...).
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// Its values.
    pub values: Vec<f32>,
}

impl SnapshotParam {
    /// The buffer (or scalar state) called `name`, once the parameter has state.
    pub fn buffer(&self, name: &str) -> Option<&SnapshotBuffer> {
        self.state.as_ref()?.iter().find(|b| b.name == name)
    }
}

impl Snapshot {
    /// The optimizer's name (the first group's; `None` without groups).
    pub fn optimizer(&self) -> Option<&'static str> {
        self.groups.first().map(|g| g.config.name())
    }

    /// Reads a checkpoint of format 2.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let Read {
            optimizer,
            doc,
            by_length,
            mut tensors,
            ..
        } = read(bytes)?;
        if by_length {
            return Err(Error::checkpoint(
                "format_version is '1': load it into its optimizer and save it again to \
                 upgrade it to format 2",
            ));
        }
        let mut groups = Vec::with_capacity(doc.groups.len());
        for (gi, g) in doc.groups.into_iter().enumerate() {
            if !g.precision.is_default() || g.params.iter().any(|p| p.master) {
                return Err(Error::checkpoint(format!(
                    "group {gi} stores its state with precision {:?}: a snapshot holds f32 \
                     state only",
                    g.precision
                )));
            }
            let tagged = serde_json::json!({ "optimizer": optimizer, "config": g.config });
            let config: crate::OptimizerConfig = serde_json::from_value(tagged).map_err(|err| {
                Error::checkpoint(format!(
                    "group {gi}: config is not a valid {optimizer}: {err}"
                ))
            })?;
            let mut params = Vec::with_capacity(g.params.len());
            for p in g.params {
                let state = if p.has_state {
                    let prefix = format!("{}/", p.name);
                    let keys: Vec<String> = tensors
                        .keys()
                        .filter(|k| {
                            k.strip_prefix(&prefix)
                                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
                        })
                        .cloned()
                        .collect();
                    let mut bufs = Vec::with_capacity(keys.len());
                    for key in keys {
                        let (dtype, shape, bytes) = tensors.remove(&key).expect("listed key");
                        if dtype != Dtype::F32 {
                            return Err(Error::checkpoint(format!(
                                "tensor '{key}' is {}: a snapshot holds f32 state only (load \
                                 the checkpoint into its optimizer instead)",
                                dtype_name(dtype)
                            )));
                        }
                        bufs.push(SnapshotBuffer {
                            name: key[prefix.len()..].to_string(),
                            shape,
                            values: f32s(&bytes),
                        });
                    }
                    Some(bufs)
                } else {
                    None
                };
                params.push(SnapshotParam {
                    name: p.name,
                    shape: p.shape,
                    step: p.step,
                    state,
                });
            }
            groups.push(SnapshotGroup {
                config,
                initial_lr: g.initial_lr,
                params,
            });
        }
        if let Some(extra) = tensors.keys().next() {
            return Err(Error::checkpoint(format!(
                "checkpoint has tensor '{extra}' that belongs to no parameter"
            )));
        }
        Ok(Snapshot {
            groups,
            skipped_steps: doc.skipped_steps,
            lr_driver: doc.lr_driver,
            records: doc.records,
            global_state: doc
                .global_state
                .iter()
                .map(|(k, v)| (k.clone(), f64::from_bits(v.bits)))
                .collect(),
        })
    }

    /// Writes the snapshot as checkpoint bytes (format 2), which the optimizer it describes
    /// loads with [`Optimizer::load_bytes`](crate::Optimizer::load_bytes). Nothing is checked
    /// against the optimizer's kernel here; [`Snapshot::build`] does that.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let optimizer = self
            .optimizer()
            .ok_or_else(|| Error::param("groups", "a snapshot needs at least one group"))?;
        let mut tensors: Tensors = BTreeMap::new();
        let mut groups = Vec::with_capacity(self.groups.len());
        for (gi, g) in self.groups.iter().enumerate() {
            if g.config.name() != optimizer {
                return Err(Error::config(
                    "optimizer",
                    format!(
                        "group {gi} is a '{}' config, the optimizer is '{optimizer}'",
                        g.config.name()
                    ),
                ));
            }
            let config = serde_json::to_value(&g.config)
                .map_err(|err| Error::checkpoint(format!("cannot serialise config: {err}")))?
                .get("config")
                .cloned()
                .unwrap_or(serde_json::Value::Null);
            let mut params = Vec::with_capacity(g.params.len());
            for p in &g.params {
                for b in p.state.iter().flatten() {
                    if b.shape.iter().product::<usize>() != b.values.len() {
                        return Err(Error::shape(
                            &p.name,
                            format!(
                                "buffer '{}' of '{}' has shape {:?} but {} values",
                                b.name,
                                p.name,
                                b.shape,
                                b.values.len()
                            ),
                        ));
                    }
                    let key = format!("{}/{}", p.name, b.name);
                    if tensors
                        .insert(
                            key.clone(),
                            (Dtype::F32, b.shape.clone(), to_le_bytes(&b.values)),
                        )
                        .is_some()
                    {
                        return Err(Error::param(&key, format!("tensor '{key}' appears twice")));
                    }
                }
                params.push(ParamDoc {
                    name: p.name.clone(),
                    shape: p.shape.clone(),
                    step: p.step,
                    has_state: p.state.is_some(),
                    master: false,
                });
            }
            groups.push(GroupDoc {
                config,
                initial_lr: g.initial_lr,
                params,
                precision: Precision::default(),
            });
        }
        let doc = StateDoc {
            groups,
            skipped_steps: self.skipped_steps,
            lr_driver: self.lr_driver.clone(),
            records: self.records.clone(),
            rounding_seed: 0,
            global_state: global_doc(self.global_state.clone()),
        };
        write(optimizer, doc, &tensors)
    }

    /// Builds the optimizer the snapshot describes (its groups, parameters and shapes) and
    /// loads the snapshot into it: the optimizer checks every buffer's name and shape.
    pub fn build(&self) -> Result<Box<dyn crate::Optimizer>> {
        let first = self
            .groups
            .first()
            .ok_or_else(|| Error::param("groups", "a snapshot needs at least one group"))?;
        let groups = self
            .groups
            .iter()
            .map(|g| {
                let specs = g
                    .params
                    .iter()
                    .map(|p| crate::ParamSpec::shaped(p.name.clone(), p.shape.clone()))
                    .collect();
                (g.config.clone(), specs)
            })
            .collect();
        let mut opt = first.config.build_groups(groups)?;
        opt.load_bytes(&self.to_bytes()?)?;
        Ok(opt)
    }
}
