//! Axes: linear or log [`Scale`], fitted ranges, tick labels ([`format_tick`]).

/// Axis scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scale {
    /// Linear axis.
    Linear,
    /// Base-10 logarithmic axis; non-positive values are not drawn.
    Log,
}

impl Scale {
    /// `Log` when every finite value is positive and they span at least a factor of ten,
    /// `Linear` otherwise. This is the "log-y if it helps" rule of the loss plots.
    pub fn auto(values: impl IntoIterator<Item = f64>) -> Scale {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            if v <= 0.0 {
                return Scale::Linear;
            }
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo.is_finite() && hi / lo >= 10.0 {
            Scale::Log
        } else {
            Scale::Linear
        }
    }

    pub(super) fn forward(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log if v > 0.0 => v.log10(),
            Scale::Log => f64::NAN,
        }
    }

    pub(super) fn inverse(self, v: f64) -> f64 {
        match self {
            Scale::Linear => v,
            Scale::Log => 10f64.powf(v),
        }
    }
}

/// Fit `[lo, hi]` around the finite values (positive ones on a log axis), padded by 4% of the
/// span in axis units. Empty or constant data still give a valid, non-empty range.
pub(super) fn fit_range(values: impl Iterator<Item = f64>, scale: Scale) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.map(|v| scale.forward(v)).filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    } else if hi - lo < 1e-12 * (1.0 + lo.abs()) {
        let half = 0.5 * (1.0 + lo.abs()) * if scale == Scale::Log { 0.2 } else { 0.1 };
        (lo, hi) = (lo - half, hi + half);
    }
    let pad = 0.04 * (hi - lo);
    (scale.inverse(lo - pad), scale.inverse(hi + pad))
}

/// Format an axis tick or a table value compactly: `0.5`, `12`, `1e-3`, `2.5e4`.
pub fn format_tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    if (1e-2..1e5).contains(&a) {
        // Up to 4 significant digits, trailing zeros removed.
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        let s = format!("{v:.decimals$}");
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    } else {
        let s = format!("{v:.2e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
        format!("{mantissa}e{exp}")
    }
}

/// Whether a tick at `v` gets a label: always on a linear axis; on a log axis only at 1, 2 and
/// 5 times a power of ten (plotters puts a tick at every 1..9 x 10^k when less than two decades
/// show, and nine labels per decade crowd).
pub(super) fn labelled(v: f64, scale: Scale) -> bool {
    if scale == Scale::Linear {
        return true;
    }
    let mantissa = v / 10f64.powf(v.abs().log10().floor());
    [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_scale_is_chosen_only_when_it_helps() {
        assert_eq!(Scale::auto([2.3, 0.05]), Scale::Log);
        assert_eq!(Scale::auto([2.3, 0.5]), Scale::Linear);
        assert_eq!(Scale::auto([2.3, 0.0, 0.001]), Scale::Linear);
        assert_eq!(Scale::auto([f64::NAN, 10.0, 0.1]), Scale::Log);
    }

    #[test]
    fn ticks_are_compact() {
        assert_eq!(format_tick(0.5), "0.5");
        assert_eq!(format_tick(12.0), "12");
        assert_eq!(format_tick(0.001), "1e-3");
        assert_eq!(format_tick(25000.0), "25000");
        assert_eq!(format_tick(250000.0), "2.5e5");
        assert_eq!(format_tick(0.0123456), "0.01235");
        assert_eq!(format_tick(0.0), "0");
    }
}
