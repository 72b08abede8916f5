//! `downhill trace`: print one optimizer's trajectory on a 2-D test function as JSON.

use serde::Serialize;

use crate::args::TraceArgs;
use crate::landscape::trajectory;
use crate::{LabError, Result};

#[derive(Serialize)]
struct TraceOutput<'a> {
    points: &'a [[f32; 2]],
}

/// The JSON `downhill trace` prints: `{"points": [[x, y], ...]}` (compact, no newline).
pub fn trace_json(args: &TraceArgs) -> Result<String> {
    let start = args
        .start
        .map_or(args.function.start(), |(x, y)| [x as f32, y as f32]);
    let points = trajectory(
        &args.optimizer,
        &args.hyper.to_hyperparams(),
        args.function,
        start,
        args.steps,
        args.clip_grad_norm,
    )?;
    serde_json::to_string(&TraceOutput { points: &points })
        .map_err(|e| LabError::config(format!("trace: cannot encode the points as JSON: {e}")))
}

/// Run `downhill trace`: print [`trace_json`] and a newline on stdout.
pub fn run_trace(args: &TraceArgs) -> Result<()> {
    println!("{}", trace_json(args)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        trace: TraceArgs,
    }

    #[test]
    fn trace_prints_n_plus_one_points_from_a_negative_start() {
        for argv in [
            &[
                "t",
                "--optimizer",
                "adam",
                "--function",
                "rosenbrock",
                "--start=-1.2,1",
                "--steps",
                "25",
                "--lr",
                "0.01",
            ][..],
            &[
                "t",
                "--optimizer",
                "adam",
                "--function",
                "rosenbrock",
                "--start",
                "-1.2,1",
                "--steps",
                "25",
                "--lr=0.01",
            ][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            let json = trace_json(&cli.trace).unwrap();
            assert!(json.starts_with("{\"points\":[[-1.2,1.0],"), "{json}");
            let v: serde_json::Value = serde_json::from_str(&json).unwrap();
            let obj = v.as_object().unwrap();
            assert_eq!(obj.len(), 1, "only the points key");
            let points = obj["points"].as_array().unwrap();
            assert_eq!(points.len(), 26);
            for p in points {
                let p = p.as_array().unwrap();
                assert_eq!(p.len(), 2);
                assert!(p.iter().all(|c| c.as_f64().is_some_and(f64::is_finite)));
            }
        }
    }

    #[test]
    fn trace_rejects_unknown_optimizers_and_bad_values_by_name() {
        let cli =
            Cli::try_parse_from(["t", "--optimizer", "adamx", "--function", "beale"]).unwrap();
        let err = trace_json(&cli.trace).unwrap_err();
        assert!(err.to_string().contains("adamx"), "{err}");
        let cli = Cli::try_parse_from([
            "t",
            "--optimizer",
            "adam",
            "--function",
            "beale",
            "--lr",
            "-1",
        ])
        .unwrap();
        let err = trace_json(&cli.trace).unwrap_err();
        assert!(err.to_string().contains("-1"), "{err}");
    }
}
