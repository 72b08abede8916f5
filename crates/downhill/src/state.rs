//! How optimizer state is stored, and the typed companion records saved with it.
//!
//! A state buffer is a `StateBuf` (crate-internal): today always `f32`; lower-precision storages (bf16,
//! 8-bit blockwise) are further variants that the engine converts to `f32` tiles around the
//! kernels, so kernels and the checkpoint layout (one safetensors tensor per buffer, with its
//! dtype and shape) stay as they are.
//!
//! Companions of an optimizer (a training loop's position, a plateau scheduler) save their
//! state in the optimizer's checkpoint as a [`Record`]: a serde type with a key and a version,
//! written and read with `set_record` and `record` on a `dyn Optimizer` (or on an
//! [`Engine`](crate::Engine)), typed by the record, versioned on disk.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::param::DType;

/// One state buffer of one parameter.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub(crate) enum StateBuf {
    /// `f32` values.
    F32(Vec<f32>),
}

impl StateBuf {
    /// `len` copies of `value` in `f32`.
    pub fn filled(len: usize, value: f32) -> Self {
        StateBuf::F32(vec![value; len])
    }

    /// The storage type.
    pub fn dtype(&self) -> DType {
        match self {
            StateBuf::F32(_) => DType::F32,
        }
    }

    /// The values if stored as `f32`.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            StateBuf::F32(v) => Some(v),
        }
    }

    /// The values, mutably, if stored as `f32`.
    pub fn as_f32_mut(&mut self) -> Option<&mut Vec<f32>> {
        match self {
            StateBuf::F32(v) => Some(v),
        }
    }
}

/// Typed, versioned state of an optimizer's companion, saved in its checkpoint under
/// [`Record::KEY`].
///
/// ```
/// use downhill::state::Record;
/// use downhill::{Optimizer, SgdConfig};
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Position { epoch: u64 }
///
/// impl Record for Position {
///     const KEY: &'static str = "my_trainer";
///     const VERSION: u32 = 1;
/// }
///
/// let mut opt = SgdConfig::default().build([("w", 1)])?;
/// opt.set_record(&Position { epoch: 3 })?;
/// let bytes = opt.to_bytes()?;
/// let mut fresh = SgdConfig::default().build([("w", 1)])?;
/// fresh.load_bytes(&bytes)?;
/// assert_eq!(fresh.record::<Position>()?, Some(Position { epoch: 3 }));
/// # Ok::<(), downhill::Error>(())
/// ```
pub trait Record: Serialize + DeserializeOwned {
    /// The name the record is saved under; one record per key.
    const KEY: &'static str;
    /// The record's layout version, saved with it.
    const VERSION: u32;
    /// Reads a record saved with another `version` (older layouts, or version 0: the untyped
    /// JSON that checkpoint format 1 kept under the same key). The default refuses.
    fn upgrade(version: u32, data: serde_json::Value) -> Result<Self> {
        let _ = data;
        Err(Error::checkpoint(format!(
            "record '{}' has version {version}, this build reads version {}",
            Self::KEY,
            Self::VERSION
        )))
    }
}

/// A record as stored: its version and its serde data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordDoc {
    /// The [`Record::VERSION`] it was written with (0: format-1 JSON).
    pub version: u32,
    /// The record's fields.
    pub data: serde_json::Value,
}

impl RecordDoc {
    /// Serialises a record.
    pub fn encode<R: Record>(record: &R) -> Result<Self> {
        let data = serde_json::to_value(record).map_err(|e| {
            Error::checkpoint(format!("record '{}' cannot be serialised: {e}", R::KEY))
        })?;
        Ok(RecordDoc {
            version: R::VERSION,
            data,
        })
    }

    /// Reads the record back, upgrading it if it has another version.
    pub fn decode<R: Record>(&self) -> Result<R> {
        if self.version == R::VERSION {
            serde_json::from_value(self.data.clone())
                .map_err(|e| Error::checkpoint(format!("record '{}' is malformed: {e}", R::KEY)))
        } else {
            R::upgrade(self.version, self.data.clone())
        }
    }
}
