//! The flags of `downhill bench`.

use clap::Args;

use super::HyperArgs;

/// Flags of `downhill bench`.
#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    /// Optimizer to time (sgd, adagrad, rmsprop, adam, adamw, adamax, nadam, radam, adadelta,
    /// lamb, lars, lion).
    #[arg(long)]
    pub optimizer: String,
    /// Parameters in all; integers or exact powers such as `1e7` or `5e7`.
    #[arg(long, default_value = "1000000", value_parser = parse_count)]
    pub params: usize,
    /// Number of tensors the parameters are split into (as equally as possible).
    #[arg(long, default_value = "1", value_parser = parse_count)]
    pub tensors: usize,
    /// Make every tensor an `R x C` matrix (`--matrix 1024x1024 --tensors 10`); `--params`
    /// is then ignored (it is tensors times R times C). For the optimizers that need the
    /// matrix (Adafactor, Muon).
    #[arg(long, value_parser = parse_matrix)]
    pub matrix: Option<(usize, usize)>,
    /// Rayon threads running the step (and the probe).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Print exactly one JSON object instead of a human line.
    #[arg(long)]
    pub json: bool,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// At least this many timed steps...
    #[arg(long, default_value_t = 10)]
    pub min_steps: usize,
    /// ...and at least this many milliseconds of timed steps (the probe gets the same).
    #[arg(long, default_value_t = 500)]
    pub min_time_ms: u64,
    /// Make the probe of a one-pass optimizer also take a square root and a division per
    /// element (the least arithmetic of a PyTorch-exact adaptive optimizer), to tell the
    /// optimizer's own cost from the divider's.
    #[arg(long)]
    pub probe_divide: bool,
    /// Hyperparameters, named as PyTorch names them; unset ones keep the optimizer's default.
    #[command(flatten)]
    pub hyper: HyperArgs,
    /// Parameter dtype, master weights and state storage; `--loss-scale` times the
    /// mixed-precision step (finite check, unscale into f32 copies, optimizer step).
    #[command(flatten)]
    pub precision: super::PrecisionArgs,
}

/// Parses a count written `1000000`, `1_000_000` or `1e6` / `5e7` (which must be a whole
/// number). The error names the text.
pub fn parse_count(text: &str) -> Result<usize, String> {
    let t = text.trim().replace('_', "");
    if let Ok(n) = t.parse::<usize>() {
        return Ok(n);
    }
    match t.parse::<f64>() {
        Ok(x) if x >= 0.0 && x.fract() == 0.0 && x <= 1e15 => Ok(x as usize),
        _ => Err(format!(
            "expected a whole number such as 1000000 or 1e6, got {text:?}"
        )),
    }
}

/// Parses a matrix shape written `1024x1024`. The error names the text.
pub fn parse_matrix(text: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected a matrix shape such as 1024x1024, got {text:?}");
    let (r, c) = text.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    match (r.trim().parse::<usize>(), c.trim().parse::<usize>()) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => Ok((r, c)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_shapes_parse() {
        assert_eq!(parse_matrix("1024x1024"), Ok((1024, 1024)));
        assert_eq!(parse_matrix("4096X1024"), Ok((4096, 1024)));
        assert!(parse_matrix("1024").unwrap_err().contains("\"1024\""));
        assert!(parse_matrix("0x3").is_err());
    }

    #[test]
    fn counts_accept_powers_of_ten() {
        assert_eq!(parse_count("1e7"), Ok(10_000_000));
        assert_eq!(parse_count("5e7"), Ok(50_000_000));
        assert_eq!(parse_count("1_000"), Ok(1000));
        assert!(parse_count("1.5").unwrap_err().contains("1.5"));
        assert!(parse_count("-3").is_err());
        assert!(parse_count("x").is_err());
    }
}
