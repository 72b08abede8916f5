//! The crate's error type: one opaque struct with a kind, the field it concerns and a message.

use std::fmt;

/// What went wrong, in broad categories a caller can match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A hyperparameter is out of range or inconsistent with another one.
    InvalidConfig,
    /// A parameter, gradient or state buffer has the wrong length, name or group.
    Shape,
    /// A parameter name is unknown, duplicated or missing.
    Param,
    /// A gradient holds NaN or infinity and the non-finite policy says to fail.
    NonFinite,
    /// A checkpoint could not be written or read, or does not match this optimizer.
    Checkpoint,
    /// An operating-system I/O error.
    Io,
    /// Another process holds the lock of a file or folder this one wants to write.
    Locked,
}

/// The error type of every fallible operation in downhill.
///
/// The message names the field and the value, e.g.
/// `invalid config: betas.1 must be in [0, 1), got 1.5`.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    kind: ErrorKind,
    field: Option<String>,
    message: String,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, field: Option<String>, message: impl Into<String>) -> Self {
        Error {
            kind,
            field,
            message: message.into(),
        }
    }

    /// An invalid hyperparameter: `field` is its name, `message` says why and names the
    /// value (`"betas.1 must be in [0, 1), got 1.5"`).
    pub fn config(field: &str, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidConfig, Some(field.to_string()), message)
    }

    pub(crate) fn shape(field: &str, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Shape, Some(field.to_string()), message)
    }

    pub(crate) fn param(field: &str, message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Param, Some(field.to_string()), message)
    }

    /// A checkpoint (or a record in it) that cannot be written or read.
    pub fn checkpoint(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Checkpoint, None, message)
    }

    pub(crate) fn io(path: &std::path::Path, err: std::io::Error) -> Self {
        Error::new(
            ErrorKind::Io,
            Some(path.display().to_string()),
            format!("{}: {err}", path.display()),
        )
    }

    /// The category of the error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The field (hyperparameter, parameter name or file) the error concerns, if any.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }

    /// The human-readable message, without the kind prefix.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.kind {
            ErrorKind::InvalidConfig => "invalid config",
            ErrorKind::Shape => "shape mismatch",
            ErrorKind::Param => "parameter error",
            ErrorKind::NonFinite => "non-finite gradient",
            ErrorKind::Checkpoint => "checkpoint error",
            ErrorKind::Io => "i/o error",
            ErrorKind::Locked => "locked",
        };
        write!(f, "{prefix}: {}", self.message)
    }
}

impl std::error::Error for Error {}

/// Shorthand for `std::result::Result<T, downhill::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Validation helpers shared by every optimizer config: each returns an error that names the
/// field and the value.
#[doc(hidden)]
pub mod check {
    use super::{Error, Result};

    /// `lr` (and similar) must be finite and `>= 0`.
    pub fn non_negative(field: &str, v: f64) -> Result<()> {
        if v.is_finite() && v >= 0.0 {
            Ok(())
        } else {
            Err(Error::config(
                field,
                format!("{field} must be finite and >= 0, got {v}"),
            ))
        }
    }

    /// Any finite value (ASGD's `t0`).
    pub fn finite(field: &str, v: f64) -> Result<()> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(Error::config(
                field,
                format!("{field} must be finite, got {v}"),
            ))
        }
    }

    /// A value in `[0, 1)`, such as a beta or a momentum decay factor.
    pub fn unit_interval(field: &str, v: f64) -> Result<()> {
        if (0.0..1.0).contains(&v) {
            Ok(())
        } else {
            Err(Error::config(
                field,
                format!("{field} must be in [0, 1), got {v}"),
            ))
        }
    }

    /// A value in `[0, 1]`.
    pub fn closed_unit_interval(field: &str, v: f64) -> Result<()> {
        if (0.0..=1.0).contains(&v) {
            Ok(())
        } else {
            Err(Error::config(
                field,
                format!("{field} must be in [0, 1], got {v}"),
            ))
        }
    }

    /// Both elements of a pair in `[0, 1)`; the message names `field.0` or `field.1`.
    pub fn betas(field: &str, v: (f64, f64)) -> Result<()> {
        unit_interval(&format!("{field}.0"), v.0)?;
        unit_interval(&format!("{field}.1"), v.1)
    }
}
