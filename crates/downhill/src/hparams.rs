//! Hyperparameters by name: the values a command line or a JSON file gives, the kinds they
//! take, and the traits that let every optimizer config be read and set field by field.
//!
//! Every optimizer config is declared with [`optimizer_config!`](crate::optimizer_config),
//! which derives its [`Hyperparameters`] impl (defaults, builders, per-field validation, get
//! and set by name) from one field list. The vocabulary of names shared by all optimizers
//! (PyTorch's keyword names: `lr`, `betas`, `weight_decay`, ...) is the list in
//! `optim/mod.rs` that generates [`Hyperparams`](crate::Hyperparams) and [`HYPERPARAMETERS`](crate::HYPERPARAMETERS);
//! a test checks that every config field is in it with the same kind.

use std::fmt;

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};

/// A hyperparameter value as a command line or JSON gives it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HyperValue {
    /// `true` / `false`.
    Flag(bool),
    /// A number (integers too).
    Number(f64),
    /// Two numbers, e.g. `betas = (0.9, 0.999)`.
    Pair(f64, f64),
    /// A name from a fixed set, e.g. `decay_form = "paper"`.
    Text(String),
    /// Two numbers of which the first may be `None`: Adafactor's `eps = (None, 1e-3)`.
    OptionalPair(Option<f64>, f64),
    /// Three numbers, e.g. Muon's `ns_coefficients = (3.4445, -4.775, 2.0315)`.
    Triple(f64, f64, f64),
}

impl fmt::Display for HyperValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HyperValue::Flag(b) => write!(f, "{b}"),
            HyperValue::Number(x) => write!(f, "{x}"),
            HyperValue::Pair(a, b) => write!(f, "({a}, {b})"),
            HyperValue::Text(s) => write!(f, "{s:?}"),
            HyperValue::OptionalPair(None, b) => write!(f, "(None, {b})"),
            HyperValue::OptionalPair(Some(a), b) => write!(f, "({a}, {b})"),
            HyperValue::Triple(a, b, c) => write!(f, "({a}, {b}, {c})"),
        }
    }
}

impl From<f64> for HyperValue {
    fn from(v: f64) -> Self {
        HyperValue::Number(v)
    }
}
impl From<bool> for HyperValue {
    fn from(v: bool) -> Self {
        HyperValue::Flag(v)
    }
}
impl From<(f64, f64)> for HyperValue {
    fn from(v: (f64, f64)) -> Self {
        HyperValue::Pair(v.0, v.1)
    }
}
impl From<(Option<f64>, f64)> for HyperValue {
    fn from(v: (Option<f64>, f64)) -> Self {
        HyperValue::OptionalPair(v.0, v.1)
    }
}
impl From<(f64, f64, f64)> for HyperValue {
    fn from(v: (f64, f64, f64)) -> Self {
        HyperValue::Triple(v.0, v.1, v.2)
    }
}
impl From<&str> for HyperValue {
    fn from(v: &str) -> Self {
        HyperValue::Text(v.to_string())
    }
}
impl From<String> for HyperValue {
    fn from(v: String) -> Self {
        HyperValue::Text(v)
    }
}

/// The kind of value a hyperparameter takes (what a command-line flag parses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HyperKind {
    /// A real number.
    Number,
    /// A real number or `none` (an `Option<f64>` field: Prodigy's `beta3`, whose `None` is
    /// `sqrt(beta2)`). On a command line `--name 0.99` or `--name none`; as a
    /// [`HyperValue`], a [`HyperValue::Number`] or the text [`NONE`]. In the vocabulary, a name
    /// of this kind may also be a plain [`HyperKind::Number`] field of another optimizer
    /// (AdEMAMix's `beta3`), which takes the numbers and refuses `none`.
    OptionalNumber,
    /// A whole number `>= 0`.
    Integer,
    /// Two real numbers (`0.9,0.999` on a command line).
    Pair,
    /// On or off.
    Flag,
    /// One of the listed names.
    Choice(&'static [&'static str]),
    /// Two real numbers of which the first may be `None` (`None,1e-3` on a command line).
    OptionalPair,
    /// Three real numbers (`3.4445,-4.775,2.0315` on a command line).
    Triple,
    /// A real number, or a pair whose first element may be `None`: a vocabulary name that
    /// one optimizer takes as a number and another as such a pair (`eps`: Adam's ε,
    /// Adafactor's `(ε1, ε2)`).
    NumberOrPair,
}

impl HyperKind {
    /// Whether a vocabulary name of this kind can carry the value of a config field of kind
    /// `field`: the same kind, [`HyperKind::NumberOrPair`] for a number or an optional pair,
    /// or [`HyperKind::OptionalNumber`] for a plain number (AdEMAMix's `beta3` beside
    /// Prodigy's).
    pub fn carries(&self, field: HyperKind) -> bool {
        *self == field
            || (*self == HyperKind::NumberOrPair
                && matches!(field, HyperKind::Number | HyperKind::OptionalPair))
            || (*self == HyperKind::OptionalNumber && field == HyperKind::Number)
    }
}

/// A Rust type a hyperparameter field can have, with its [`HyperKind`] and its conversions
/// from and to [`HyperValue`].
pub trait HyperType: Sized {
    /// The kind of value.
    const KIND: HyperKind;
    /// The value as a [`HyperValue`].
    fn to_value(&self) -> HyperValue;
    /// Reads a [`HyperValue`]; `None` if it has another kind or is out of the type's range.
    fn from_value(value: &HyperValue) -> Option<Self>;
}

impl HyperType for f64 {
    const KIND: HyperKind = HyperKind::Number;
    fn to_value(&self) -> HyperValue {
        HyperValue::Number(*self)
    }
    fn from_value(value: &HyperValue) -> Option<Self> {
        match value {
            HyperValue::Number(x) => Some(*x),
            _ => None,
        }
    }
}

/// The text that stands for "no value" of a [`HyperKind::OptionalNumber`].
pub const NONE: &str = "none";

impl HyperType for Option<f64> {
    const KIND: HyperKind = HyperKind::OptionalNumber;
    fn to_value(&self) -> HyperValue {
        match self {
            Some(x) => HyperValue::Number(*x),
            None => HyperValue::Text(NONE.to_string()),
        }
    }
    fn from_value(value: &HyperValue) -> Option<Self> {
        match value {
            HyperValue::Number(x) => Some(Some(*x)),
            HyperValue::Text(t) if t == NONE => Some(None),
            _ => None,
        }
    }
}

impl HyperType for u64 {
    const KIND: HyperKind = HyperKind::Integer;
    fn to_value(&self) -> HyperValue {
        HyperValue::Number(*self as f64)
    }
    fn from_value(value: &HyperValue) -> Option<Self> {
        match value {
            HyperValue::Number(x) if *x >= 0.0 && x.fract() == 0.0 && *x < 2f64.powi(53) => {
                Some(*x as u64)
            }
            _ => None,
        }
    }
}

impl HyperType for usize {
    const KIND: HyperKind = HyperKind::Integer;
    fn to_value(&self) -> HyperValue {
        HyperValue::Number(*self as f64)
    }
    fn from_value(value: &HyperValue) -> Option<Self> {
        u64::from_value(value).and_then(|v| usize::try_from(v).ok())
    }
}

impl HyperType for bool {
    const KIND: HyperKind = HyperKind::Flag;
    fn to_value(&self) -> HyperValue {
        HyperValue::Flag(*self)
    }
    fn from_value(value: &HyperValue) -> Option<Self> {
        match value {
            HyperValue::Flag(b) => Some(*b),
            _ => None,
        }
    }
}

impl HyperType for (f64, f64) {
    const KIND: HyperKind = HyperKind::Pair;
    fn to_value(&self) -> HyperValue {
        HyperValue::Pair(self.0, self.1)
    }
    fn from_value(value: &HyperValue) -> Option<Self> {
        match value {
            HyperValue::Pair(a, b) => Some((*a, *b)),
            _ => None,
        }
    }
}

impl HyperType for (Option<f64>, f64) {
    const KIND: HyperKind = HyperKind::OptionalPair;
    fn to_value(&self) -> HyperValue {
        HyperValue::OptionalPair(self.0, self.1)
    }
    /// Also reads a plain pair `(a, b)` as `(Some(a), b)`.
    fn from_value(value: &HyperValue) -> Option<Self> {
        match value {
            HyperValue::OptionalPair(a, b) => Some((*a, *b)),
            HyperValue::Pair(a, b) => Some((Some(*a), *b)),
            _ => None,
        }
    }
}

impl HyperType for (f64, f64, f64) {
    const KIND: HyperKind = HyperKind::Triple;
    fn to_value(&self) -> HyperValue {
        HyperValue::Triple(self.0, self.1, self.2)
    }
    fn from_value(value: &HyperValue) -> Option<Self> {
        match value {
            HyperValue::Triple(a, b, c) => Some((*a, *b, *c)),
            _ => None,
        }
    }
}

/// The value of a vocabulary name of kind [`HyperKind::NumberOrPair`] (`eps`): a number for
/// most optimizers, a pair whose first element may be `None` for Adafactor. Which one an
/// optimizer takes is its config field's kind; the other is an error naming the field.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumberOrPair {
    /// One number (`--eps 1e-8`).
    Number(f64),
    /// Two numbers, the first optional (`--eps None,1e-3`).
    Pair(Option<f64>, f64),
}

impl From<f64> for NumberOrPair {
    fn from(v: f64) -> Self {
        NumberOrPair::Number(v)
    }
}

impl From<(Option<f64>, f64)> for NumberOrPair {
    fn from(v: (Option<f64>, f64)) -> Self {
        NumberOrPair::Pair(v.0, v.1)
    }
}

impl HyperType for NumberOrPair {
    const KIND: HyperKind = HyperKind::NumberOrPair;
    fn to_value(&self) -> HyperValue {
        match *self {
            NumberOrPair::Number(x) => HyperValue::Number(x),
            NumberOrPair::Pair(a, b) => HyperValue::OptionalPair(a, b),
        }
    }
    fn from_value(value: &HyperValue) -> Option<Self> {
        match value {
            HyperValue::Number(x) => Some(NumberOrPair::Number(*x)),
            HyperValue::OptionalPair(a, b) => Some(NumberOrPair::Pair(*a, *b)),
            HyperValue::Pair(a, b) => Some(NumberOrPair::Pair(Some(*a), *b)),
            _ => None,
        }
    }
}

/// A fieldless enum whose variants are chosen by name (`DecayForm`: `"pytorch"`, `"paper"`).
/// `choice_type!(Type { Variant = "name", ... })` implements [`HyperType`] for it.
#[macro_export]
#[doc(hidden)]
macro_rules! choice_type {
    ($ty:ty { $($variant:ident = $name:literal),+ $(,)? }) => {
        impl $crate::hparams::HyperType for $ty {
            const KIND: $crate::hparams::HyperKind =
                $crate::hparams::HyperKind::Choice(&[$($name),+]);
            fn to_value(&self) -> $crate::hparams::HyperValue {
                $crate::hparams::HyperValue::Text(match self {
                    $(<$ty>::$variant => $name.to_string(),)+
                })
            }
            fn from_value(value: &$crate::hparams::HyperValue) -> Option<Self> {
                match value {
                    $($crate::hparams::HyperValue::Text(s) if s == $name => Some(<$ty>::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

/// One field of an optimizer config.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Field {
    /// The name, as PyTorch names the keyword (`weight_decay`).
    pub name: &'static str,
    /// The kind of value.
    pub kind: HyperKind,
    /// The field's documentation (first line).
    pub doc: &'static str,
}

/// What every optimizer config can do by field name. Derived by
/// [`optimizer_config!`](crate::optimizer_config); see the [module documentation](self).
pub trait Hyperparameters:
    Clone + fmt::Debug + PartialEq + Default + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Every field, in declaration order.
    const FIELDS: &'static [Field];
    /// The learning rate.
    fn lr(&self) -> f64;
    /// Sets the learning rate (not validated: callers check it).
    fn set_lr(&mut self, lr: f64);
    /// The value of field `name`, or `None` if the config has no such field.
    fn get(&self, name: &str) -> Option<HyperValue>;
    /// Sets field `name`. Errors name the field: an unknown name, or a value of another kind
    /// (nothing is changed then). The config is not validated; see
    /// [`Hyperparameters::validate`].
    fn set(&mut self, name: &str, value: &HyperValue) -> Result<()>;
    /// Checks every field; the error names the field and the value.
    fn validate(&self) -> Result<()>;
}

/// The error for a value of the wrong kind for `field`.
#[doc(hidden)]
pub fn wrong_kind(optimizer: &str, field: &str, kind: HyperKind, got: &HyperValue) -> Error {
    let want = match kind {
        HyperKind::Number => "a number".to_string(),
        HyperKind::OptionalNumber => format!("a number or {NONE}"),
        HyperKind::Integer => "a whole number >= 0".to_string(),
        HyperKind::Pair => "a pair of numbers".to_string(),
        HyperKind::Flag => "true or false".to_string(),
        HyperKind::Choice(names) => format!("one of {}", names.join(", ")),
        HyperKind::OptionalPair => "a pair (a number or None, a number)".to_string(),
        HyperKind::Triple => "three numbers".to_string(),
        HyperKind::NumberOrPair => "a number or a pair (a number or None, a number)".to_string(),
    };
    Error::config(
        field,
        format!("{optimizer}: {field} must be {want}, got {got}"),
    )
}

/// The error for a name that is not a field of `optimizer`.
#[doc(hidden)]
pub fn unknown_field(optimizer: &str, field: &str) -> Error {
    Error::config(
        field,
        format!("optimizer '{optimizer}' has no hyperparameter '{field}'"),
    )
}

/// Declares an optimizer's config struct and derives everything that follows from its field
/// list: the struct (serde, `deny_unknown_fields`, defaults for missing fields), `Default`,
/// one builder method per field, `build`, and [`Hyperparameters`] (field table, get/set by
/// name, validation). Each field is `name: Type = default`, optionally `=> check` where
/// `check` is a function of [`check`](crate::error::check) (`non_negative`, `unit_interval`,
/// `closed_unit_interval`, `betas`); a trailing `validate(self) { ... }` block adds checks
/// that involve several fields.
#[macro_export]
#[doc(hidden)]
macro_rules! optimizer_config {
    (
        $(#[$meta:meta])*
        pub struct $name:ident for $kernel:ty {
            $(
                $(#[doc = $doc:literal])*
                $field:ident : $ty:ty = $default:expr $(=> $check:ident)?
            ),* $(,)?
        }
        $(validate($this:ident) $extra:block)?
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $($(#[doc = $doc])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* }
            }
        }

        impl $name {
            $(
                #[doc = concat!("Sets `", stringify!($field), "`.")]
                #[doc = ""]
                $(#[doc = $doc])*
                #[must_use]
                pub fn $field(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*

            /// Validates the config and registers `params` as the first parameter group.
            pub fn build<P: Into<$crate::ParamSpec>>(
                self,
                params: impl IntoIterator<Item = P>,
            ) -> $crate::Result<$crate::Engine<$kernel>> {
                $crate::Engine::new(self, params)
            }
        }

        impl $crate::ConfigKernel for $name {
            type Kernel = $kernel;
        }

        impl $crate::hparams::Hyperparameters for $name {
            const FIELDS: &'static [$crate::hparams::Field] = &[$(
                $crate::hparams::Field {
                    name: stringify!($field),
                    kind: <$ty as $crate::hparams::HyperType>::KIND,
                    doc: $crate::hparams::first_line(&[$($doc),*]),
                },
            )*];

            fn lr(&self) -> f64 {
                self.lr
            }

            fn set_lr(&mut self, lr: f64) {
                self.lr = lr;
            }

            fn get(&self, name: &str) -> Option<$crate::hparams::HyperValue> {
                match name {
                    $(stringify!($field) => {
                        Some($crate::hparams::HyperType::to_value(&self.$field))
                    })*
                    _ => None,
                }
            }

            fn set(&mut self, name: &str, value: &$crate::hparams::HyperValue) -> $crate::Result<()> {
                match name {
                    $(stringify!($field) => {
                        match <$ty as $crate::hparams::HyperType>::from_value(value) {
                            Some(v) => {
                                self.$field = v;
                                Ok(())
                            }
                            None => Err($crate::hparams::wrong_kind(
                                <$kernel as $crate::kernel::Kernel>::NAME,
                                name,
                                <$ty as $crate::hparams::HyperType>::KIND,
                                value,
                            )),
                        }
                    })*
                    _ => Err($crate::hparams::unknown_field(<$kernel as $crate::kernel::Kernel>::NAME, name)),
                }
            }

            fn validate(&self) -> $crate::Result<()> {
                $($(
                    $crate::check::$check(stringify!($field), self.$field)?;
                )?)*
                $(
                    let $this = self;
                    $extra
                )?
                #[allow(unreachable_code)]
                Ok(())
            }
        }
    };
}

/// The first line of a doc comment given as its lines (for [`Field::doc`]).
#[doc(hidden)]
pub const fn first_line(lines: &[&'static str]) -> &'static str {
    if lines.is_empty() {
        ""
    } else {
        lines[0]
    }
}
