//! The textual form of schedules and plateau configs (`cosine:total=1000,min=0.01`): the
//! parser, and `Display` writing it back.

use std::fmt;
use std::str::FromStr;

use super::*;

/// Shortest round-trip spelling of `v`, without a trailing `.0`
/// (`1`, `0.1`, `1e-8`, `inf`, `NaN`).
pub(super) fn fmt_f64(v: f64) -> String {
    let s = format!("{v:?}");
    match s.strip_suffix(".0") {
        Some(t) => t.to_owned(),
        None => s,
    }
}

impl fmt::Display for Schedule {
    /// Writes the canonical textual form, which [`Schedule::parse`] reads
    /// back to an equal schedule (all keys are written).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => f.write_str("constant"),
            Schedule::Step { step_size, gamma } => {
                write!(f, "step:size={step_size},gamma={}", fmt_f64(*gamma))
            }
            Schedule::MultiStep { milestones, gamma } => {
                f.write_str("multistep:milestones=")?;
                for (i, m) in milestones.iter().enumerate() {
                    if i > 0 {
                        f.write_str(";")?;
                    }
                    write!(f, "{m}")?;
                }
                write!(f, ",gamma={}", fmt_f64(*gamma))
            }
            Schedule::Exponential { gamma } => write!(f, "exponential:gamma={}", fmt_f64(*gamma)),
            Schedule::InverseSqrt => f.write_str("inverse-sqrt"),
            Schedule::Linear {
                start_factor,
                end_factor,
                total_steps,
            } => write!(
                f,
                "linear:start={},end={},total={total_steps}",
                fmt_f64(*start_factor),
                fmt_f64(*end_factor)
            ),
            Schedule::Polynomial {
                total_steps,
                power,
                end_factor,
            } => write!(
                f,
                "polynomial:total={total_steps},power={},end={}",
                fmt_f64(*power),
                fmt_f64(*end_factor)
            ),
            Schedule::Cosine {
                total_steps,
                min_factor,
            } => write!(f, "cosine:total={total_steps},min={}", fmt_f64(*min_factor)),
            Schedule::CosineWarmRestarts {
                t0,
                t_mult,
                min_factor,
            } => write!(
                f,
                "cosine-restarts:t0={t0},mult={t_mult},min={}",
                fmt_f64(*min_factor)
            ),
            Schedule::WarmupStableDecay {
                warmup_steps,
                stable_steps,
                decay_steps,
                min_factor,
                decay_shape,
            } => write!(
                f,
                "wsd:warmup={warmup_steps},stable={stable_steps},decay={decay_steps},min={},shape={}",
                fmt_f64(*min_factor),
                decay_shape.as_str()
            ),
            Schedule::OneCycle {
                total_steps,
                pct_start,
                div_factor,
                final_div_factor,
                anneal,
                three_phase,
            } => write!(
                f,
                "onecycle:total={total_steps},pct={},div={},final-div={},anneal={},three-phase={three_phase}",
                fmt_f64(*pct_start),
                fmt_f64(*div_factor),
                fmt_f64(*final_div_factor),
                anneal.as_str()
            ),
            Schedule::Warmup {
                warmup_steps,
                start_factor,
                then,
            } => write!(
                f,
                "warmup:steps={warmup_steps},start={},then={then}",
                fmt_f64(*start_factor)
            ),
            Schedule::Join { .. } => match serde_json::to_string(self) {
                Ok(json) => f.write_str(&json),
                Err(_) => Err(fmt::Error),
            },
        }
    }
}

impl FromStr for Schedule {
    type Err = Error;

    /// Same as [`Schedule::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

/// Deepest nesting of `warmup:...,then=` accepted by the parser.
pub(super) const MAX_NESTING: usize = 8;

pub(super) const SCHEDULE_NAMES: &str =
    "constant, step, multistep, exponential, inverse-sqrt, linear, \
                              polynomial, cosine, cosine-restarts, wsd, onecycle, warmup";

/// Lower-cases `s` and maps `_` to `-` (names) or `-` to `_` (keys).
pub(super) fn normalize(s: &str, from: char, to: char) -> String {
    s.trim()
        .chars()
        .map(|c| {
            if c == from {
                to
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

pub(super) fn parse_spec(spec: &str, depth: usize) -> Result<Schedule> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err(arg_error(
            "schedule",
            format!("spec is empty; expected one of: {SCHEDULE_NAMES}"),
        ));
    }
    let (name, params) = match spec.split_once(':') {
        Some((name, params)) => (name, params),
        None => (spec, ""),
    };
    let name = normalize(name, '_', '-');
    let canonical: &'static str = match name.as_str() {
        "constant" | "const" | "none" => "constant",
        "step" | "steplr" => "step",
        "multistep" | "multi-step" | "multisteplr" => "multistep",
        "exponential" | "exp" | "exponentiallr" => "exponential",
        "inverse-sqrt" | "inv-sqrt" | "invsqrt" | "rsqrt" => "inverse-sqrt",
        "linear" | "linearlr" => "linear",
        "polynomial" | "poly" | "polynomiallr" => "polynomial",
        "cosine" | "cos" | "cosineannealinglr" => "cosine",
        "cosine-restarts" | "cosine-warm-restarts" | "sgdr" | "cosineannealingwarmrestarts" => {
            "cosine-restarts"
        }
        "wsd" | "warmup-stable-decay" => "wsd",
        "onecycle" | "one-cycle" | "onecyclelr" => "onecycle",
        "warmup" | "linear-warmup" => "warmup",
        _ => {
            return Err(arg_error(
                "schedule",
                format!("name `{name}` is unknown; expected one of: {SCHEDULE_NAMES}"),
            ))
        }
    };
    let mut p = Params::parse(canonical, params)?;
    let schedule = match canonical {
        "constant" => Schedule::Constant,
        "step" => Schedule::Step {
            step_size: p.req_u64(&["size", "step_size"], "step_size")?,
            gamma: p.f64(&["gamma"], "gamma")?.unwrap_or(0.1),
        },
        "multistep" => Schedule::MultiStep {
            milestones: p.req_list(&["milestones"], "milestones")?,
            gamma: p.f64(&["gamma"], "gamma")?.unwrap_or(0.1),
        },
        "exponential" => Schedule::Exponential {
            gamma: p.req_f64(&["gamma"], "gamma")?,
        },
        "inverse-sqrt" => Schedule::InverseSqrt,
        "linear" => Schedule::Linear {
            start_factor: p
                .f64(&["start", "start_factor"], "start_factor")?
                .unwrap_or(1.0 / 3.0),
            end_factor: p.f64(&["end", "end_factor"], "end_factor")?.unwrap_or(1.0),
            total_steps: p
                .u64(&["total", "total_steps"], "total_steps")?
                .unwrap_or(5),
        },
        "polynomial" => Schedule::Polynomial {
            total_steps: p
                .u64(&["total", "total_steps"], "total_steps")?
                .unwrap_or(5),
            power: p.f64(&["power"], "power")?.unwrap_or(1.0),
            end_factor: p.f64(&["end", "end_factor"], "end_factor")?.unwrap_or(0.0),
        },
        "cosine" => Schedule::Cosine {
            total_steps: p.req_u64(&["total", "total_steps"], "total_steps")?,
            min_factor: p.f64(&["min", "min_factor"], "min_factor")?.unwrap_or(0.0),
        },
        "cosine-restarts" => Schedule::CosineWarmRestarts {
            t0: p.req_u64(&["t0", "t_0"], "t0")?,
            t_mult: p.u64(&["mult", "t_mult"], "t_mult")?.unwrap_or(1),
            min_factor: p.f64(&["min", "min_factor"], "min_factor")?.unwrap_or(0.0),
        },
        "wsd" => Schedule::WarmupStableDecay {
            warmup_steps: p.req_u64(&["warmup", "warmup_steps"], "warmup_steps")?,
            stable_steps: p.req_u64(&["stable", "stable_steps"], "stable_steps")?,
            decay_steps: p.req_u64(&["decay", "decay_steps"], "decay_steps")?,
            min_factor: p.f64(&["min", "min_factor"], "min_factor")?.unwrap_or(0.0),
            decay_shape: match p.take(&["shape", "decay_shape"], "decay_shape")? {
                None => DecayShape::default(),
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "linear" => DecayShape::Linear,
                    "cosine" | "cos" => DecayShape::Cosine,
                    "1-sqrt" | "one-minus-sqrt" | "one_minus_sqrt" => DecayShape::OneMinusSqrt,
                    _ => return Err(bad_value("decay_shape", "linear, cosine or 1-sqrt", v)),
                },
            },
        },
        "onecycle" => Schedule::OneCycle {
            total_steps: p.req_u64(&["total", "total_steps"], "total_steps")?,
            pct_start: p.f64(&["pct", "pct_start"], "pct_start")?.unwrap_or(0.3),
            div_factor: p.f64(&["div", "div_factor"], "div_factor")?.unwrap_or(25.0),
            final_div_factor: p
                .f64(&["final_div", "final_div_factor"], "final_div_factor")?
                .unwrap_or(1e4),
            anneal: match p.take(&["anneal", "anneal_strategy"], "anneal")? {
                None => Anneal::default(),
                Some(v) => match v.to_ascii_lowercase().as_str() {
                    "cos" | "cosine" => Anneal::Cos,
                    "linear" => Anneal::Linear,
                    _ => return Err(bad_value("anneal", "cos or linear", v)),
                },
            },
            three_phase: p.bool(&["three_phase"], "three_phase")?.unwrap_or(false),
        },
        "warmup" => {
            let warmup_steps = p.req_u64(&["steps", "warmup_steps"], "warmup_steps")?;
            let start_factor = p
                .f64(&["start", "start_factor"], "start_factor")?
                .unwrap_or(0.0);
            let then = p
                .take(&["then"], "then")?
                .ok_or_else(|| arg_error("then", "is required for `warmup` (key `then`)"))?;
            if depth >= MAX_NESTING {
                return Err(arg_error(
                    "then",
                    format!("nests warm-ups more than {MAX_NESTING} levels deep"),
                ));
            }
            Schedule::Warmup {
                warmup_steps,
                start_factor,
                then: Box::new(parse_spec(then, depth + 1)?),
            }
        }
        _ => unreachable!("every canonical name is handled"),
    };
    p.finish()?;
    Ok(schedule)
}

pub(super) fn bad_value(field: &'static str, expected: &str, got: &str) -> Error {
    arg_error(field, format!("must be {expected}, got `{got}`"))
}

/// The `key=value` list of a spec, consumed key by key.
pub(super) struct Params<'a> {
    /// Canonical name of the schedule, for messages.
    owner: &'static str,
    /// Normalized key, value, already consumed.
    entries: Vec<(String, &'a str, bool)>,
    /// Main spelling of every key asked for, for messages.
    known: Vec<&'static str>,
}

impl<'a> Params<'a> {
    pub(super) fn parse(owner: &'static str, text: &'a str) -> Result<Self> {
        let mut entries = Vec::new();
        let mut rest = text;
        while !rest.trim().is_empty() {
            let eq = rest.find('=');
            let comma = rest.find(',');
            let eq = match (eq, comma) {
                (Some(eq), Some(comma)) if comma < eq => None,
                (eq, _) => eq,
            };
            let Some(eq) = eq else {
                let param = rest[..comma.unwrap_or(rest.len())].trim();
                let message = if param.is_empty() {
                    format!("`{owner}` has an empty parameter; expected key=value")
                } else {
                    format!("parameter `{param}` of `{owner}` has no `=`; expected key=value")
                };
                return Err(arg_error("schedule", message));
            };
            let key = normalize(&rest[..eq], '-', '_');
            let after = &rest[eq + 1..];
            if key == "then" {
                entries.push((key, after.trim(), false));
                break;
            }
            match after.find(',') {
                Some(c) => {
                    entries.push((key, after[..c].trim(), false));
                    rest = &after[c + 1..];
                }
                None => {
                    entries.push((key, after.trim(), false));
                    break;
                }
            }
        }
        Ok(Self {
            owner,
            entries,
            known: Vec::new(),
        })
    }

    /// The raw value of the key spelled as one of `keys`, if present.
    pub(super) fn take(
        &mut self,
        keys: &[&'static str],
        field: &'static str,
    ) -> Result<Option<&'a str>> {
        self.known.push(keys[0]);
        let mut found = None;
        for (key, value, used) in &mut self.entries {
            if keys.contains(&key.as_str()) {
                if found.is_some() {
                    return Err(arg_error(
                        field,
                        format!("is given twice (key `{}`)", keys[0]),
                    ));
                }
                *used = true;
                found = Some(*value);
            }
        }
        Ok(found)
    }

    pub(super) fn missing(&self, keys: &[&'static str], field: &'static str) -> Error {
        arg_error(
            field,
            format!("is required for `{}` (key `{}`)", self.owner, keys[0]),
        )
    }

    pub(super) fn u64(
        &mut self,
        keys: &[&'static str],
        field: &'static str,
    ) -> Result<Option<u64>> {
        self.take(keys, field)?
            .map(|v| parse_u64(v).ok_or_else(|| bad_value(field, "a non-negative integer", v)))
            .transpose()
    }

    pub(super) fn req_u64(&mut self, keys: &[&'static str], field: &'static str) -> Result<u64> {
        self.u64(keys, field)?
            .ok_or_else(|| self.missing(keys, field))
    }

    pub(super) fn f64(
        &mut self,
        keys: &[&'static str],
        field: &'static str,
    ) -> Result<Option<f64>> {
        self.take(keys, field)?
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| bad_value(field, "a number", v))
            })
            .transpose()
    }

    pub(super) fn req_f64(&mut self, keys: &[&'static str], field: &'static str) -> Result<f64> {
        self.f64(keys, field)?
            .ok_or_else(|| self.missing(keys, field))
    }

    pub(super) fn bool(
        &mut self,
        keys: &[&'static str],
        field: &'static str,
    ) -> Result<Option<bool>> {
        self.take(keys, field)?
            .map(|v| match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(true),
                "false" | "no" | "0" => Ok(false),
                _ => Err(bad_value(field, "true or false", v)),
            })
            .transpose()
    }

    pub(super) fn req_list(
        &mut self,
        keys: &[&'static str],
        field: &'static str,
    ) -> Result<Vec<u64>> {
        let v = self
            .take(keys, field)?
            .ok_or_else(|| self.missing(keys, field))?;
        v.split(';')
            .filter(|item| !item.trim().is_empty())
            .map(|item| {
                parse_u64(item).ok_or_else(|| {
                    bad_value(field, "a `;`-separated list of non-negative integers", v)
                })
            })
            .collect()
    }

    /// Fails on a key that no variant field asked for.
    pub(super) fn finish(self) -> Result<()> {
        match self.entries.iter().find(|(_, _, used)| !used) {
            None => Ok(()),
            Some((key, _, _)) => {
                let expected = if self.known.is_empty() {
                    "none".to_owned()
                } else {
                    self.known.join(", ")
                };
                Err(arg_error(
                    "schedule",
                    format!(
                        "`{}` has no parameter `{key}`; expected: {expected}",
                        self.owner
                    ),
                ))
            }
        }
    }
}

/// Parses `1000`, `10_000` or an integral `1e4` (up to 2^53).
pub(super) fn parse_u64(v: &str) -> Option<u64> {
    let v = v.trim().replace('_', "");
    if let Ok(n) = v.parse::<u64>() {
        return Some(n);
    }
    let x = v.parse::<f64>().ok()?;
    const MAX_EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    (x.is_finite() && x >= 0.0 && x.fract() == 0.0 && x <= MAX_EXACT).then_some(x as u64)
}
