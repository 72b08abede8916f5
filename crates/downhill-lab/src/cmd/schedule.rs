//! `downhill schedule`: draw a learning-rate schedule over steps.
//!
//! ```text
//! downhill schedule --schedule warmup:steps=100,then=cosine:total=900,min=0.1 --steps 1000
//! ```
//!
//! writes `OUT/schedule.png` and `OUT/schedule.svg` (lr against the 0-based optimizer step) and
//! prints the lr at a few steps; with `--json` it prints `{"lr": [...]}` (one value per step)
//! instead, and draws only when `--out` is given.

use std::path::PathBuf;

use downhill::schedule::Schedule;

use crate::args::ScheduleArgs;
use crate::plot::{self, LineChart, Series};
use crate::{LabError, Result};

/// The validated schedule of `args`, warm-up included.
pub fn schedule_of(args: &ScheduleArgs) -> Result<Schedule> {
    let s = Schedule::parse(&args.schedule)
        .map_err(|e| LabError::config(format!("--schedule {:?}: {e}", args.schedule)))?;
    Ok(if args.warmup_steps > 0 {
        s.with_warmup(args.warmup_steps, 0.0)
    } else {
        s
    })
}

/// The learning rates of steps `0..steps`.
pub fn lrs(schedule: &Schedule, base_lr: f64, steps: u64) -> Vec<f64> {
    (0..steps).map(|t| schedule.lr(base_lr, t)).collect()
}

/// Run `downhill schedule`.
pub fn run_schedule(args: &ScheduleArgs) -> Result<()> {
    if args.steps == 0 {
        return Err(LabError::config("--steps must be positive, got 0"));
    }
    if !args.base_lr.is_finite() || args.base_lr <= 0.0 {
        return Err(LabError::config(format!(
            "--base-lr must be finite and > 0, got {}",
            args.base_lr
        )));
    }
    let schedule = schedule_of(args)?;
    let values = lrs(&schedule, args.base_lr, args.steps);
    let out = match (&args.out, args.json) {
        (Some(dir), _) => Some(dir.clone()),
        (None, false) => Some(PathBuf::from("runs/schedule")),
        (None, true) => None,
    };
    if let Some(dir) = &out {
        std::fs::create_dir_all(dir).map_err(|e| LabError::io(dir, e))?;
        let mut chart = LineChart::new(
            format!("{schedule}"),
            "optimizer step (0-based)",
            if args.base_lr == 1.0 {
                "lr multiplier".to_owned()
            } else {
                format!("lr (base {})", args.base_lr)
            },
        );
        chart.x_integer = true;
        chart.series.push(Series::new(
            schedule.to_string(),
            values
                .iter()
                .enumerate()
                .map(|(t, &v)| (t as f64, v))
                .collect(),
            plot::palette_color(0),
        ));
        let rendered = plot::render(&chart, &dir.join("schedule"))?;
        if !args.json {
            println!(
                "plot: {} and {}",
                rendered.png.display(),
                rendered.svg.display()
            );
        }
    }
    if args.json {
        let json = serde_json::json!({ "lr": values });
        println!("{json}");
        return Ok(());
    }
    println!("schedule: {schedule}");
    let n = args.steps;
    let mut shown: Vec<u64> = vec![0, 1, n / 4, n / 2, 3 * n / 4, n - 1];
    shown.retain(|&t| t < n);
    shown.dedup();
    println!("{:>10} {:>14}", "step", "lr");
    for t in shown {
        println!("{t:>10} {:>14.6e}", values[t as usize]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Command};
    use clap::Parser;

    fn args(extra: &[&str]) -> ScheduleArgs {
        let mut argv = vec!["downhill", "schedule"];
        argv.extend_from_slice(extra);
        let Command::Schedule(a) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not schedule")
        };
        a
    }

    #[test]
    fn json_values_follow_the_schedule() {
        let a = args(&[
            "--schedule",
            "step:size=2,gamma=0.5",
            "--steps",
            "5",
            "--base-lr",
            "0.1",
            "--json",
        ]);
        assert_eq!(a.steps, 5);
        let s = schedule_of(&a).unwrap();
        let v = lrs(&s, a.base_lr, a.steps);
        let json = serde_json::json!({ "lr": v });
        let back: Vec<f64> = serde_json::from_value(json["lr"].clone()).unwrap();
        assert_eq!(back, [0.1, 0.1, 0.1 * 0.5, 0.1 * 0.5, 0.1 * 0.25]);
        run_schedule(&a).unwrap();
    }

    #[test]
    fn warmup_and_plot_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(&[
            "--schedule",
            "cosine:total=20,min=0.1",
            "--warmup-steps",
            "4",
            "--steps",
            "30",
            "--out",
            dir.path().to_str().unwrap(),
        ]);
        let s = schedule_of(&a).unwrap();
        assert_eq!(s.multiplier(0), 0.0);
        assert_eq!(s.multiplier(4), 1.0);
        run_schedule(&a).unwrap();
        assert!(dir.path().join("schedule.png").exists());
        assert!(dir.path().join("schedule.svg").exists());
    }

    #[test]
    fn bad_specs_are_config_errors() {
        let a = args(&["--schedule", "cosine:min=0.1"]);
        let err = run_schedule(&a).unwrap_err();
        assert_eq!(err.kind(), crate::LabErrorKind::Config);
        assert!(run_schedule(&args(&["--schedule", "constant", "--steps", "0"])).is_err());
    }
}
