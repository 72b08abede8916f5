//! The lab's one error type.

use std::fmt;
use std::path::Path;

/// What went wrong, broadly. Match on this; read the message for the details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LabErrorKind {
    /// Reading or writing a file or folder failed.
    Io,
    /// A data file (IDX, CSV, JSON) is malformed, truncated or inconsistent.
    Data,
    /// A command-line argument or configuration value is invalid.
    Config,
    /// The optimizer (downhill core or the candle adapter) reported an error.
    Optimizer,
    /// The model (candle) reported an error.
    Model,
    /// Drawing a plot or writing a report failed.
    Plot,
    /// Training produced a non-finite loss (the run diverged).
    Diverged,
}

impl fmt::Display for LabErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            LabErrorKind::Io => "I/O error",
            LabErrorKind::Data => "malformed data",
            LabErrorKind::Config => "invalid configuration",
            LabErrorKind::Optimizer => "optimizer error",
            LabErrorKind::Model => "model error",
            LabErrorKind::Plot => "plot error",
            LabErrorKind::Diverged => "training diverged",
        };
        f.write_str(s)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The lab's error: a [`LabErrorKind`] and a message that names the file, field or value at
/// fault (for example `data/x.gz: header says 10000 images of 28x28 but the file has 1234 bytes
/// of pixels, expected 7840000`).
///
/// Build one with the constructors ([`LabError::io`], [`LabError::data`], [`LabError::config`],
/// [`LabError::plot`], ...) or with `?` on a `downhill::Error`, `downhill_candle::Error`,
/// `candle_core::Error` or `std::io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LabError {
    kind: LabErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl LabError {
    /// A new error of `kind` with `message` and no underlying cause.
    pub fn new(kind: LabErrorKind, message: impl Into<String>) -> Self {
        LabError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach an underlying cause (kept as [`std::error::Error::source`]).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What went wrong, broadly.
    pub fn kind(&self) -> LabErrorKind {
        self.kind
    }

    /// The message (without the cause).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An I/O failure on `path`: the message is `"{path}: {err}"`.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        LabError::new(LabErrorKind::Io, format!("{}: {err}", path.display())).with_source(err)
    }

    /// A malformed data file: the message is `"{path}: {what}"`.
    pub fn data(path: &Path, what: impl fmt::Display) -> Self {
        LabError::new(LabErrorKind::Data, format!("{}: {what}", path.display()))
    }

    /// An invalid argument or configuration value; `message` names the field and the value.
    pub fn config(message: impl Into<String>) -> Self {
        LabError::new(LabErrorKind::Config, message)
    }

    /// A plotting or report failure on `path`.
    pub fn plot(path: &Path, what: impl fmt::Display) -> Self {
        LabError::new(LabErrorKind::Plot, format!("{}: {what}", path.display()))
    }

    /// A JSON (de)serialisation failure on `path`.
    pub fn json(path: &Path, err: serde_json::Error) -> Self {
        LabError::new(LabErrorKind::Data, format!("{}: {err}", path.display())).with_source(err)
    }

    /// Prefix the message with some context (`"{context}: {message}"`), keeping kind and cause.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

/// An invalid hyperparameter is a configuration error (exit code 2), whoever reports it.
impl From<downhill::Error> for LabError {
    fn from(err: downhill::Error) -> Self {
        let kind = match err.kind() {
            downhill::ErrorKind::InvalidConfig => LabErrorKind::Config,
            _ => LabErrorKind::Optimizer,
        };
        LabError::new(kind, err.to_string()).with_source(err)
    }
}

impl From<downhill_candle::Error> for LabError {
    fn from(err: downhill_candle::Error) -> Self {
        let kind = match err.kind() {
            downhill_candle::ErrorKind::Config => LabErrorKind::Config,
            _ => LabErrorKind::Optimizer,
        };
        LabError::new(kind, err.to_string()).with_source(err)
    }
}

impl From<candle_core::Error> for LabError {
    fn from(err: candle_core::Error) -> Self {
        LabError::new(LabErrorKind::Model, err.to_string()).with_source(err)
    }
}

impl From<std::io::Error> for LabError {
    fn from(err: std::io::Error) -> Self {
        LabError::new(LabErrorKind::Io, err.to_string()).with_source(err)
    }
}
