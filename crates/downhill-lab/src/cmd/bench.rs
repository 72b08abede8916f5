//! The `bench` subcommand: time an optimizer step after warm-up and compare it with a
//! bandwidth probe of the same access shape, run in the same process.
//!
//! ```text
//! downhill bench --optimizer adam --params 1e7 --tensors 1 --threads 2 --json
//! ```
//!
//! The timing itself is [`downhill::bench::bench`]; this module parses the flags (the
//! hyperparameter flags are the same as `train` and `trace`), and prints either one human line
//! or, with `--json`, exactly one JSON object: every field of [`downhill::bench::BenchResult`]
//! (`mparams_per_s`, `gb_per_s`, `probe_gb_per_s`, `median_step_seconds`, ...) plus
//! `library: "downhill"`, `variant: "fused"` and the optimizer's full `config`, so that
//! `scripts/bench_peers.py` can run PyTorch and optax with exactly the same hyperparameters.

use std::time::Duration;

use downhill::bench::{bench, BenchOptions, BenchResult};
use downhill::OptimizerConfig;

use crate::args::BenchArgs;
use crate::LabError;

/// Runs `downhill bench`: builds the optimizer from the flags, times it and its probe, and
/// prints the result (one line, or one JSON object with `--json`).
pub fn run_bench(args: &BenchArgs) -> Result<(), LabError> {
    let config = OptimizerConfig::from_hparams(&args.optimizer, &args.hyper.to_hyperparams())?;
    let options = bench_options(args)?;
    let result = bench(&config, &options)?;
    if args.json {
        println!("{}", json_line(&result, &config)?);
    } else {
        println!("{}", human_line(&result));
    }
    Ok(())
}

/// Checks the counts and turns the flags into [`BenchOptions`].
fn bench_options(args: &BenchArgs) -> Result<BenchOptions, LabError> {
    let params = match args.matrix {
        Some((r, c)) => r
            .checked_mul(c)
            .and_then(|n| n.checked_mul(args.tensors))
            .ok_or_else(|| LabError::config("--matrix times --tensors overflows"))?,
        None => args.params,
    };
    if params == 0 {
        return Err(LabError::config("--params must be at least 1, got 0"));
    }
    if args.tensors == 0 || args.tensors > params {
        return Err(LabError::config(format!(
            "--tensors must be in 1..=params ({}), got {}",
            params, args.tensors
        )));
    }
    if args.threads == 0 {
        return Err(LabError::config("--threads must be at least 1, got 0"));
    }
    if args.min_steps == 0 {
        return Err(LabError::config("--min-steps must be at least 1, got 0"));
    }
    Ok(BenchOptions {
        precision: args.precision.precision(),
        param_dtype: match args.precision.param_dtype.dtype() {
            candle_core::DType::BF16 => downhill::DType::BF16,
            candle_core::DType::F16 => downhill::DType::F16,
            _ => downhill::DType::F32,
        },
        params,
        tensors: args.tensors,
        threads: args.threads,
        warmup: args.warmup,
        min_steps: args.min_steps,
        min_time: Duration::from_millis(args.min_time_ms),
        probe_divide: args.probe_divide,
        matrix: args.matrix,
        loss_scale: args.precision.loss_scale()?,
    })
}

/// The `--json` object: the [`BenchResult`] fields, then `library`, `variant` and `config`.
fn json_line(result: &BenchResult, config: &OptimizerConfig) -> Result<String, LabError> {
    let to_json = |e: serde_json::Error| LabError::config(format!("cannot write JSON: {e}"));
    let mut value = serde_json::to_value(result).map_err(to_json)?;
    let config = serde_json::to_value(config).map_err(to_json)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("library".into(), "downhill".into());
        // Another storage is another variant (`fused-int8`, `fused-bf16-master`, ...), so that
        // tables keyed by variant keep it apart from the f32 row.
        obj.insert("variant".into(), variant(result).into());
        // `{"optimizer": "adam", "config": {...}}`: keep the inner hyperparameters only.
        let hyper = config
            .get("config")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        obj.insert("config".into(), hyper);
    }
    serde_json::to_string(&value).map_err(to_json)
}

/// `fused`, or `fused-{state}` / `fused-{param dtype}-{master|sr}[-{state}]` for another storage.
fn variant(r: &BenchResult) -> String {
    let mut v = "fused".to_string();
    if r.param_dtype != "f32" {
        v.push_str(&format!(
            "-{}-{}",
            r.param_dtype,
            if r.master_weights { "master" } else { "sr" }
        ));
    }
    if r.state_dtype != "f32" {
        v.push_str(&format!("-{}", r.state_dtype));
    }
    if r.loss_scale.is_some() {
        v.push_str("-loss-scale");
    }
    v
}

/// One line for a person: speed, bandwidth and the fraction of the probe's bandwidth.
fn human_line(r: &BenchResult) -> String {
    format!(
        "{}: {} params in {} tensor{}, {} thread{}, {}: median {} per step over {} steps, \
         {:.0} Mparam/s, {:.1} GB/s (probe {:.1} GB/s, {:.0}% of it)",
        r.optimizer,
        r.params,
        r.tensors,
        if r.tensors == 1 { "" } else { "s" },
        r.threads,
        if r.threads == 1 { "" } else { "s" },
        r.isa,
        format_seconds(r.median_step_seconds),
        r.steps,
        r.mparams_per_s,
        r.gb_per_s,
        r.probe_gb_per_s,
        100.0 * r.fraction_of_probe,
    ) + &storage_note(r)
}

/// ` [state int8, params bf16 + f32 master]` for a storage other than the default.
fn storage_note(r: &BenchResult) -> String {
    let scaled = if r.loss_scale.is_some() {
        " [loss-scaled: finite check, unscale, step]"
    } else {
        ""
    };
    if r.state_dtype == "f32" && r.param_dtype == "f32" {
        return scaled.to_string();
    }
    let master = if r.param_dtype == "f32" {
        ""
    } else if r.master_weights {
        " + f32 master"
    } else {
        ", stochastic rounding"
    };
    format!(
        " [state {}, params {}{master}]{scaled}",
        r.state_dtype, r.param_dtype
    )
}

/// `1.23 µs`, `45.6 ms`, `1.20 s`.
fn format_seconds(s: f64) -> String {
    if s < 1e-3 {
        format!("{:.2} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        b: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.b)
    }

    #[test]
    fn flags_parse_with_defaults_and_hyperparameters() {
        let a = parse(&["--optimizer", "sgd", "--params", "1e4", "--momentum", "0.9"]).unwrap();
        assert_eq!(a.params, 10_000);
        assert_eq!(a.tensors, 1);
        assert_eq!(a.threads, 2);
        assert_eq!(a.warmup, 3);
        assert!(!a.json);
        assert_eq!(a.hyper.to_hyperparams().momentum, Some(0.9));
        assert!(
            parse(&["--params", "1e4"]).is_err(),
            "--optimizer is required"
        );
    }

    #[test]
    fn bad_counts_are_config_errors() {
        let mut a = parse(&["--optimizer", "adam", "--params", "10", "--tensors", "11"]).unwrap();
        let err = bench_options(&a).unwrap_err();
        assert!(err.message().contains("11"), "{err}");
        a.tensors = 1;
        a.threads = 0;
        assert!(bench_options(&a).is_err());
    }

    #[test]
    fn json_is_one_object_with_the_required_fields() {
        let a = parse(&[
            "--optimizer",
            "sgd",
            "--momentum",
            "0.9",
            "--params",
            "1000",
            "--tensors",
            "3",
            "--threads",
            "1",
            "--warmup",
            "1",
            "--min-steps",
            "3",
            "--min-time-ms",
            "0",
        ])
        .unwrap();
        let config = OptimizerConfig::from_hparams("sgd", &a.hyper.to_hyperparams()).unwrap();
        let r = bench(&config, &bench_options(&a).unwrap()).unwrap();
        let line = json_line(&r, &config).unwrap();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for key in [
            "mparams_per_s",
            "gb_per_s",
            "probe_gb_per_s",
            "median_step_seconds",
            "optimizer",
            "params",
            "tensors",
            "threads",
            "isa",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {line}");
        }
        assert_eq!(v["config"]["momentum"], 0.9);
        assert_eq!(v["params"], 1000);
        assert!(v["median_step_seconds"].as_f64().unwrap() > 0.0);
        assert!(human_line(&r).contains("Mparam/s"));
        assert_eq!(v["probe_divide"], false);
    }

    #[test]
    fn loss_scale_times_the_unscaled_step() {
        let quick = |extra: &[&str]| {
            let mut argv = vec![
                "--optimizer",
                "adamw",
                "--params",
                "5000",
                "--threads",
                "1",
                "--warmup",
                "1",
                "--min-steps",
                "2",
                "--min-time-ms",
                "0",
                "--param-dtype",
                "f16",
            ];
            argv.extend_from_slice(extra);
            let a = parse(&argv).unwrap();
            let config = OptimizerConfig::from_hparams("adamw", &a.hyper.to_hyperparams()).unwrap();
            bench(&config, &bench_options(&a).unwrap()).unwrap()
        };
        let plain = quick(&[]);
        let scaled = quick(&["--loss-scale", "dynamic"]);
        assert_eq!(plain.loss_scale, None);
        assert_eq!(scaled.loss_scale, Some(downhill::LossScale::dynamic()));
        // Two reads of each 2-byte gradient, a 4-byte copy written, and read instead of the
        // 2-byte gradient: 10 more bytes per parameter.
        assert_eq!(scaled.bytes_per_step, plain.bytes_per_step + 10 * 5000);
        assert_eq!(variant(&scaled), "fused-f16-master-loss-scale");
        assert!(human_line(&scaled).contains("loss-scaled"));
        let line = json_line(
            &scaled,
            &OptimizerConfig::from_hparams("adamw", &Default::default()).unwrap(),
        )
        .unwrap();
        assert!(line.contains("\"loss_scale\""), "{line}");
        let bad = parse(&["--optimizer", "adamw", "--loss-scale=-1"]).unwrap();
        assert!(bench_options(&bad)
            .unwrap_err()
            .message()
            .contains("loss_scale"));
    }

    #[test]
    fn probe_divide_applies_to_one_pass_shapes_only() {
        let quick = |opt: &str, params: &str| {
            let a = parse(&[
                "--optimizer",
                opt,
                "--params",
                params,
                "--threads",
                "1",
                "--warmup",
                "1",
                "--min-steps",
                "2",
                "--min-time-ms",
                "0",
                "--probe-divide",
            ])
            .unwrap();
            assert!(a.probe_divide);
            let config = OptimizerConfig::from_hparams(opt, &a.hyper.to_hyperparams()).unwrap();
            bench(&config, &bench_options(&a).unwrap()).unwrap()
        };
        let r = quick("rmsprop", "5000");
        assert!(r.probe_divide);
        assert!(r.probe_gb_per_s.is_finite() && r.probe_gb_per_s > 0.0);
        // LAMB's probe has its two-pass shape; the flag leaves it alone.
        assert!(!quick("lamb", "5000").probe_divide);
        // A LAMB tensor of 1,000 elements takes one pass, and so does its probe.
        assert!(quick("lamb", "1000").probe_divide);
    }
}
