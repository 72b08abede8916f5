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
//! A single entry keeps the file byte-for-byte deterministic (safetensors stores metadata as an
//! unordered map).
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
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupDoc {
    config: serde_json::Value,
    initial_lr: f64,
    params: Vec<ParamDoc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParamDoc {
    name: String,
    shape: Vec<usize>,
    step: u64,
    has_state: bool,
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
                    })
                    .collect(),
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
        };
        (doc, adapter)
    }
}

fn to_le_bytes(x: &[f32]) -> Vec<u8> {
    x.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn crc(tensors: &BTreeMap<String, (Vec<usize>, Vec<u8>)>) -> String {
    let mut h = crc32fast::Hasher::new();
    for (name, (_, bytes)) in tensors {
        h.update(name.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    format!("{:08x}", h.finalize())
}

fn dtype_of(buf: &StateBuf) -> Dtype {
    match buf.dtype() {
        DType::F32 => Dtype::F32,
    }
}

/// Serialises an optimizer's full state.
pub(crate) fn encode<K: Kernel>(e: &Engine<K>) -> Result<Vec<u8>> {
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let mut dtypes: HashMap<String, Dtype> = HashMap::new();
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
                    let bytes = match buf {
                        StateBuf::F32(v) => to_le_bytes(v),
                    };
                    dtypes.insert(key.clone(), dtype_of(buf));
                    tensors.insert(key, (shape, bytes));
                }
                for ((name, _), v) in K::scalar_state(&g.config).iter().zip(&slot.scalars) {
                    let key = format!("{}/{name}", slot.spec.name);
                    dtypes.insert(key.clone(), Dtype::F32);
                    tensors.insert(key, (vec![1], to_le_bytes(&[*v])));
                }
            }
            params.push(ParamDoc {
                name: slot.spec.name.clone(),
                shape: slot.spec.shape.clone(),
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
        lr_driver: e.driver.clone(),
        records: e.records.clone(),
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
        .map(|(name, (shape, bytes))| {
            TensorView::new(dtypes[name], shape.clone(), bytes)
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
    if head.optimizer != K::NAME {
        return Err(Error::checkpoint(format!(
            "checkpoint is for optimizer '{}', this optimizer is '{}'",
            head.optimizer,
            K::NAME
        )));
    }
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(Error::checkpoint(format!(
                "tensor '{name}' is {:?}, this build stores state as F32",
                view.dtype()
            )));
        }
        tensors.insert(name, (view.shape().to_vec(), view.data().to_vec()));
    }
    let sum = crc(&tensors);
    if sum != head.crc32 {
        return Err(Error::checkpoint(format!(
            "checksum mismatch (file says {}, data gives {sum}): the file is corrupted",
            head.crc32
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
                    buffers.push(StateBuf::F32(take(&mut tensors, &spec.name, name, &want)?));
                }
                for (name, _) in K::scalar_state(&config) {
                    scalars.extend(take(&mut tensors, &spec.name, name, &[1])?);
                }
            }
            staged.push(Staged {
                slot: slot_id,
                step: pdoc.step,
                buffers,
                scalars,
            });
        }
        configs.push((config, gdoc.initial_lr));
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
    for (group, (config, initial_lr)) in e.groups.iter_mut().zip(configs) {
        group.config = config;
        group.initial_lr = initial_lr;
    }
    for s in staged {
        let slot = &mut e.slots[s.slot];
        slot.step = s.step;
        slot.buffers = s.buffers;
        slot.scalars = s.scalars;
    }
    e.skipped = doc.skipped_steps;
    e.records = doc.records;
    e.driver = driver;
    Ok(())
}

fn take(
    tensors: &mut BTreeMap<String, (Vec<usize>, Vec<u8>)>,
    param: &str,
    buffer: &str,
    shape: &[usize],
) -> Result<Vec<f32>> {
    let key = format!("{param}/{buffer}");
    let (got, bytes) = tensors
        .remove(&key)
        .ok_or_else(|| Error::checkpoint(format!("checkpoint lacks tensor '{key}'")))?;
    if got != shape {
        return Err(Error::checkpoint(format!(
            "tensor '{key}' has shape {got:?}, expected {shape:?}"
        )));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
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
