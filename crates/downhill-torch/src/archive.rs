//! The `torch.save` archive: a zip of `<name>/data.pkl` (the pickle), `<name>/data/<key>`
//! (one raw little-endian storage per key), `<name>/byteorder`, `<name>/version` and a few
//! bookkeeping records, all stored uncompressed.

use std::collections::BTreeMap;
use std::io::{Cursor, Read, Write};

use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use crate::error::{Error, Result};
use crate::pickle::{StorageType, TensorRef, Value};

/// An archive read into memory: the pickle's value and the storages' bytes by key.
pub(crate) struct Archive {
    pub value: Value,
    storages: BTreeMap<String, Vec<u8>>,
}

fn zip_err(err: zip::result::ZipError) -> Error {
    Error::format(format!(
        "not a zip archive as torch.save writes since PyTorch 1.6 (truncated, or the legacy \
         format?): {err}"
    ))
}

impl Archive {
    /// An archive with no storages (for values already resolved).
    pub(crate) fn empty() -> Self {
        Archive {
            value: Value::None,
            storages: BTreeMap::new(),
        }
    }

    /// Reads a `torch.save` file: checks the records, runs the restricted pickle reader and
    /// loads every storage.
    pub(crate) fn read(bytes: &[u8]) -> Result<Self> {
        let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_err)?;
        let names: Vec<String> = zip
            .file_names()
            .map(|n| n.map(|s| s.to_string()))
            .collect::<std::result::Result<_, _>>()
            .map_err(zip_err)?;
        let pkl: Vec<&String> = names.iter().filter(|n| n.ends_with("data.pkl")).collect();
        let pkl = match pkl.as_slice() {
            [one] => one.to_string(),
            [] => return Err(Error::format("the archive has no data.pkl record")),
            _ => return Err(Error::format("the archive has several data.pkl records")),
        };
        let prefix = pkl.strip_suffix("data.pkl").unwrap_or("").to_string();
        let mut record = |name: &str| -> Result<Option<Vec<u8>>> {
            let mut file = match zip.by_name(name) {
                Ok(f) => f,
                Err(zip::result::ZipError::FileNotFound) => return Ok(None),
                Err(e) => return Err(zip_err(e)),
            };
            if file.compression() != CompressionMethod::Stored {
                return Err(Error::unsupported(format!(
                    "record '{name}' is compressed ({:?}); torch.save stores records uncompressed",
                    file.compression()
                )));
            }
            let mut out = Vec::with_capacity(file.size() as usize);
            file.read_to_end(&mut out).map_err(|e| {
                Error::format(format!("record '{name}' cannot be read (truncated?): {e}"))
            })?;
            Ok(Some(out))
        };
        if let Some(order) = record(&format!("{prefix}byteorder"))? {
            if order.as_slice() != b"little" {
                return Err(Error::unsupported(format!(
                    "byteorder is '{}', this reader reads little-endian storages",
                    String::from_utf8_lossy(&order)
                )));
            }
        }
        let pickle = record(&pkl)?.ok_or_else(|| Error::format("data.pkl vanished"))?;
        let value = crate::pickle::read(&pickle)?;
        let mut storages = BTreeMap::new();
        let data_prefix = format!("{prefix}data/");
        for name in &names {
            if let Some(key) = name.strip_prefix(&data_prefix) {
                if let Some(bytes) = record(name)? {
                    storages.insert(key.to_string(), bytes);
                }
            }
        }
        Ok(Archive { value, storages })
    }

    /// The values of an `f32` tensor, row-major, checked against its storage.
    pub(crate) fn f32_values(&self, t: &TensorRef, what: &str) -> Result<Vec<f32>> {
        if t.storage.ty != StorageType::Float {
            return Err(Error::unsupported(format!(
                "{what} is a {} tensor; downhill's state is float32",
                t.storage.ty.name()
            )));
        }
        let bytes = self.storages.get(&t.storage.key).ok_or_else(|| {
            Error::format(format!(
                "{what}: storage '{}' is not in the archive (truncated file?)",
                t.storage.key
            ))
        })?;
        let size = t.storage.ty.size();
        if bytes.len() as u64 != t.storage.numel * size as u64 {
            return Err(Error::format(format!(
                "{what}: storage '{}' has {} bytes, its header says {} elements of {size}",
                t.storage.key,
                bytes.len(),
                t.storage.numel
            )));
        }
        let numel: u64 = t.shape.iter().product();
        let mut expected = 1u64;
        for (dim, (&n, &s)) in t.shape.iter().zip(&t.stride).enumerate().rev() {
            if n > 1 && s != expected {
                return Err(Error::unsupported(format!(
                    "{what} is not contiguous (size {:?}, stride {:?}, dimension {dim})",
                    t.shape, t.stride
                )));
            }
            expected *= n;
        }
        let end = t
            .offset
            .checked_add(numel)
            .filter(|&e| e <= t.storage.numel)
            .ok_or_else(|| {
                Error::format(format!(
                    "{what}: elements {}..{} lie outside its storage of {}",
                    t.offset,
                    t.offset + numel,
                    t.storage.numel
                ))
            })?;
        Ok(bytes[t.offset as usize * 4..end as usize * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
}

/// Writes a `torch.save` archive named `name` holding `value`, whose tensors refer to the
/// storages in `storages` (key, `f32` values), as PyTorch 2.x writes it: records stored
/// uncompressed, storages aligned to 64 bytes.
pub(crate) fn write(name: &str, value: &Value, storages: &[(String, Vec<f32>)]) -> Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    let io = |e: std::io::Error| Error::new(crate::ErrorKind::Io, e.to_string());
    let put = |zip: &mut zip::ZipWriter<Cursor<Vec<u8>>>,
               record: &str,
               bytes: &[u8],
               align: u16|
     -> Result<()> {
        zip.start_file(format!("{name}/{record}"), opts.with_alignment(align))
            .map_err(|e| Error::new(crate::ErrorKind::Io, e.to_string()))?;
        zip.write_all(bytes).map_err(io)
    };
    put(&mut zip, "data.pkl", &crate::pickle::write(value), 64)?;
    put(&mut zip, ".format_version", b"1", 64)?;
    put(&mut zip, ".storage_alignment", b"64", 64)?;
    put(&mut zip, "byteorder", b"little", 64)?;
    for (key, values) in storages {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        put(&mut zip, &format!("data/{key}"), &bytes, 64)?;
    }
    put(&mut zip, "version", b"3\n", 64)?;
    let cursor = zip
        .finish()
        .map_err(|e| Error::new(crate::ErrorKind::Io, e.to_string()))?;
    Ok(cursor.into_inner())
}
