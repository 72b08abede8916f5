//! Optimizer state checkpoints in the safetensors format.
//!
//! A checkpoint holds one `F32` tensor per state buffer, named `"{param}/{buffer}"` (for
//! example `"fc1.weight/exp_avg"`; scalar state such as NAdam's `mu_product` is a tensor of
//! shape `[1]`), and one metadata entry, `downhill`, whose JSON value has, in this order:
//!
//! | field | value |
//! |---|---|
//! | `format` | `downhill-optimizer-state` |
//! | `format_version` | `1` |
//! | `optimizer` | the optimizer's name, e.g. `adam` |
//! | `state` | `{"groups": [{"config": {..}, "initial_lr": f64, "params": [{"name", "len", "step", "has_state"}]}], "skipped_steps": u64, "extra": {key: JSON}}` |
//! | `crc32` | CRC-32 of every tensor's name, length and bytes, in name order, as hex |
//!
//! A single entry keeps the file byte-for-byte deterministic (safetensors stores metadata as an
//! unordered map).
//!
//! Hyperparameters are written with serde_json, whose `f64` round-trips exactly, and buffers
//! bit for bit, so a run resumed from a checkpoint continues bit-identically. Loading checks
//! the format, the optimizer, every group's parameter names and lengths, every buffer and the
//! checksum before touching the optimizer: on any error it is left unchanged.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::hparams::Hyperparameters;
use crate::kernel::Kernel;

const FORMAT: &str = "downhill-optimizer-state";
const VERSION: &str = "1";

#[derive(Serialize, Deserialize)]
struct Header {
    format: String,
    format_version: String,
    optimizer: String,
    state: StateDoc,
    crc32: String,
}

#[derive(Serialize, Deserialize)]
struct StateDoc {
    groups: Vec<GroupDoc>,
    skipped_steps: u64,
    #[serde(default)]
    extra: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
struct GroupDoc {
    config: serde_json::Value,
    initial_lr: f64,
    params: Vec<ParamDoc>,
}

#[derive(Serialize, Deserialize)]
struct ParamDoc {
    name: String,
    len: usize,
    step: u64,
    has_state: bool,
}

fn to_le_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn crc(tensors: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = crc32fast::Hasher::new();
    for (name, bytes) in tensors {
        h.update(name.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    format!("{:08x}", h.finalize())
}

/// Serialises an optimizer's full state.
pub(crate) fn encode<K: Kernel>(e: &Engine<K>) -> Result<Vec<u8>> {
    let mut tensors: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut groups = Vec::with_capacity(e.groups.len());
    for g in &e.groups {
        let mut params = Vec::with_capacity(g.params.len());
        for &i in &g.params {
            let slot = &e.slots[i];
            let has_state = !slot.buffers.is_empty() || slot.step > 0;
            if has_state {
                for (name, buf) in K::buffers(&g.config).iter().zip(&slot.buffers) {
                    tensors.insert(format!("{}/{name}", slot.spec.name), to_le_bytes(buf));
                }
                for ((name, _), v) in K::scalar_state(&g.config).iter().zip(&slot.scalars) {
                    tensors.insert(format!("{}/{name}", slot.spec.name), to_le_bytes(&[*v]));
                }
            }
            params.push(ParamDoc {
                name: slot.spec.name.clone(),
                len: slot.spec.len,
                step: slot.step,
                has_state,
            });
        }
        groups.push(GroupDoc {
            config: serde_json::to_value(&g.config)
                .map_err(|err| Error::checkpoint(format!("cannot serialise config: {err}")))?,
            initial_lr: g.initial_lr,
            params,
        });
    }
    let doc = StateDoc {
        groups,
        skipped_steps: e.skipped,
        extra: e.extra.clone(),
    };
    let header = Header {
        format: FORMAT.to_string(),
        format_version: VERSION.to_string(),
        optimizer: K::NAME.to_string(),
        state: doc,
        crc32: crc(&tensors),
    };
    let mut meta = HashMap::new();
    meta.insert(
        "downhill".to_string(),
        serde_json::to_string(&header)
            .map_err(|err| Error::checkpoint(format!("cannot serialise state: {err}")))?,
    );
    let views = tensors
        .iter()
        .map(|(name, bytes)| {
            TensorView::new(Dtype::F32, vec![bytes.len() / 4], bytes)
                .map(|v| (name.clone(), v))
                .map_err(|err| Error::checkpoint(format!("tensor '{name}': {err}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, Some(meta))
        .map_err(|err| Error::checkpoint(format!("cannot serialise: {err}")))
}

/// Restores a state into `e`, or leaves it untouched and returns the reason.
pub(crate) fn decode_into<K: Kernel>(e: &mut Engine<K>, bytes: &[u8]) -> Result<()> {
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
    let head: Header = serde_json::from_str(raw)
        .map_err(|err| Error::checkpoint(format!("metadata 'downhill' is not valid: {err}")))?;
    if head.format != FORMAT {
        return Err(Error::checkpoint(format!(
            "format is '{}', expected '{FORMAT}'",
            head.format
        )));
    }
    if head.format_version != VERSION {
        return Err(Error::checkpoint(format!(
            "format_version is '{}', this build reads '{VERSION}'",
            head.format_version
        )));
    }
    if head.optimizer != K::NAME {
        return Err(Error::checkpoint(format!(
            "checkpoint is for optimizer '{}', this optimizer is '{}'",
            head.optimizer,
            K::NAME
        )));
    }
    let mut tensors: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 || view.shape().len() != 1 {
            return Err(Error::checkpoint(format!(
                "tensor '{name}' is {:?} of shape {:?}, expected a 1-D F32 tensor",
                view.dtype(),
                view.shape()
            )));
        }
        tensors.insert(name, view.data().to_vec());
    }
    let sum = crc(&tensors);
    if sum != head.crc32 {
        return Err(Error::checkpoint(format!(
            "checksum mismatch (file says {}, data gives {sum}): the file is corrupted",
            head.crc32
        )));
    }
    let doc = head.state;
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
        if gdoc.params.len() != group.params.len() {
            return Err(Error::checkpoint(format!(
                "group {gi} has {} parameters in the checkpoint, {} in this optimizer",
                gdoc.params.len(),
                group.params.len()
            )));
        }
        for (pdoc, &slot_id) in gdoc.params.iter().zip(&group.params) {
            let spec = &e.slots[slot_id].spec;
            if pdoc.name != spec.name || pdoc.len != spec.len {
                return Err(Error::checkpoint(format!(
                    "group {gi}: checkpoint has parameter '{}' of length {}, this optimizer \
                     has '{}' of length {}",
                    pdoc.name, pdoc.len, spec.name, spec.len
                )));
            }
            let mut buffers = Vec::new();
            let mut scalars = Vec::new();
            if pdoc.has_state {
                for name in K::buffers(&config) {
                    buffers.push(take(&mut tensors, &spec.name, name, spec.len)?);
                }
                for (name, _) in K::scalar_state(&config) {
                    scalars.extend(take(&mut tensors, &spec.name, name, 1)?);
                }
            }
            staged.push((slot_id, pdoc.step, buffers, scalars));
        }
        configs.push((config, gdoc.initial_lr));
    }
    if let Some(extra) = tensors.keys().next() {
        return Err(Error::checkpoint(format!(
            "checkpoint has tensor '{extra}' that this optimizer does not use"
        )));
    }
    for (group, (config, initial_lr)) in e.groups.iter_mut().zip(configs) {
        group.config = config;
        group.initial_lr = initial_lr;
    }
    for (slot_id, step, buffers, scalars) in staged {
        let slot = &mut e.slots[slot_id];
        slot.step = step;
        slot.buffers = buffers;
        slot.scalars = scalars;
    }
    e.skipped = doc.skipped_steps;
    e.extra = doc.extra;
    Ok(())
}

fn take(
    tensors: &mut BTreeMap<String, Vec<u8>>,
    param: &str,
    buffer: &str,
    len: usize,
) -> Result<Vec<f32>> {
    let key = format!("{param}/{buffer}");
    let bytes = tensors
        .remove(&key)
        .ok_or_else(|| Error::checkpoint(format!("checkpoint lacks tensor '{key}'")))?;
    if bytes.len() != len * 4 {
        return Err(Error::checkpoint(format!(
            "tensor '{key}' has {} elements, expected {len}",
            bytes.len() / 4
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to disk,
/// then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::checkpoint(format!("'{}' is not a file path", path.display())))?;
    let tmp_name = format!(
        ".{}.tmp-{}",
        file_name.to_string_lossy(),
        std::process::id()
    );
    let tmp = match dir {
        Some(d) => d.join(tmp_name),
        None => Path::new(&tmp_name).to_path_buf(),
    };
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|err| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, err)
    })
}
