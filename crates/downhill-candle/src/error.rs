//! The adapter's error type: an opaque [`Error`] with an [`ErrorKind`] and a message.

/// What went wrong, broadly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A var or gradient is not `f32`.
    DType,
    /// A gradient is not on its var's device (or a CPU-only route met a var elsewhere).
    Device,
    /// A var is not contiguous, or a gradient's shape differs from its var's.
    Layout,
    /// Two vars share a name.
    DuplicateName,
    /// Two vars share a storage, or a gradient shares storage with a var.
    AliasedStorage,
    /// The downhill optimizer reported an error.
    Optimizer,
    /// candle reported an error.
    Candle,
    /// A hyperparameter, clipping threshold, schedule or accumulation setting is invalid.
    Config,
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The adapter's error: an [`ErrorKind`] and a message naming the var and the value at fault.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl From<downhill::Error> for Error {
    fn from(err: downhill::Error) -> Self {
        let kind = match err.kind() {
            downhill::ErrorKind::InvalidConfig => ErrorKind::Config,
            _ => ErrorKind::Optimizer,
        };
        Error {
            kind,
            message: err.to_string(),
            source: Some(Box::new(err)),
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(err: candle_core::Error) -> Self {
        Error {
            kind: ErrorKind::Candle,
            message: err.to_string(),
            source: Some(Box::new(err)),
        }
    }
}

/// `Result` with the adapter's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
