//! The crate's error type: an opaque [`Error`] with an [`ErrorKind`] and a message.

use std::fmt;

/// What went wrong, broadly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file is not a readable `torch.save` archive (not a zip, truncated, a record or a
    /// storage missing, a malformed pickle).
    Format,
    /// The pickle calls something other than the tensor-rebuild functions, or uses an opcode
    /// that builds arbitrary objects. Nothing was executed.
    Forbidden,
    /// The file holds something downhill cannot honour: a torch.optim optimizer downhill does
    /// not have, a flag such as `differentiable=True`, a non-`f32` tensor.
    Unsupported,
    /// The file does not fit the optimizer: another optimizer, missing or extra parameters,
    /// other shapes, other groups.
    Mismatch,
    /// The downhill core rejected the state (its message says why).
    Downhill,
    /// An operating-system I/O error.
    Io,
}

/// The crate's error: an [`ErrorKind`] and a message naming the field and the value at fault.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn format(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Format, message)
    }

    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Forbidden, message)
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unsupported, message)
    }

    pub(crate) fn mismatch(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Mismatch, message)
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.kind {
            ErrorKind::Format => "not a readable torch checkpoint",
            ErrorKind::Forbidden => "unsafe pickle rejected",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Mismatch => "checkpoint does not fit",
            ErrorKind::Downhill => "downhill",
            ErrorKind::Io => "i/o error",
        };
        write!(f, "{prefix}: {}", self.message)
    }
}

impl std::error::Error for Error {}

impl From<downhill::Error> for Error {
    fn from(err: downhill::Error) -> Self {
        Error::new(ErrorKind::Downhill, err.to_string())
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
