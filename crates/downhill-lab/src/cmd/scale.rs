//! The `scale` subcommand: how the cost of an optimizer step grows with the parameter count
//! (1e3 up to 5e8 in one tensor) and with the tensor count (1 up to 100,000 tensors holding
//! 1e7 parameters), and how much memory a step holds.
//!
//! ```text
//! downhill scale --optimizer adamw --max-params 5e8 --out scale/
//! ```
//!
//! Every point runs in a child process of its own (`downhill scale --point PARAMS:TENSORS`),
//! so that its resident memory is its own: the child reads `VmRSS` before allocating, fills
//! the parameters and gradients, takes one step (which allocates and writes the state), reads
//! `VmRSS` again and times `--steps` more steps (median). Resident growth is compared with
//! parameters + gradients + state, the bytes a step cannot do without. The parent writes
//! `scale.json` (every point), `scale.md` (the tables of BENCHMARKS.md), `params.png/svg`
//! and `tensors.png/svg` (step time and throughput against the two counts), and measures the
//! 1e7-parameter point right before and right after the largest one, so that the largest
//! point's throughput is compared with a 1e7 figure of the same minutes.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use downhill::{OptimizerConfig, Param, ParamSpec};
use serde::{Deserialize, Serialize};

use crate::args::ScaleArgs;
use crate::plot::{render, LineChart, Series};
use crate::{LabError, Result};

/// One measured point.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    /// Optimizer name.
    pub optimizer: String,
    /// Parameters in all.
    pub params: usize,
    /// Tensors they are split into.
    pub tensors: usize,
    /// Rayon threads.
    pub threads: usize,
    /// Timed steps.
    pub steps: usize,
    /// Median seconds per step.
    pub median_step_seconds: f64,
    /// Million parameters updated per second at the median.
    pub mparams_per_s: f64,
    /// State bytes of the optimizer (its checkpointed buffers; from `Optimizer::traffic`).
    pub state_bytes: u64,
    /// Parameters + gradients + state, in bytes.
    pub needed_bytes: u64,
    /// Resident memory before anything was allocated, bytes (`VmRSS`).
    pub rss_before: u64,
    /// Resident memory after the first step, bytes.
    pub rss_after: u64,
    /// Peak resident memory of the process, bytes (`VmHWM`).
    pub rss_peak: u64,
    /// `(rss_after - rss_before) / needed_bytes`.
    pub resident_over_needed: f64,
    /// Seconds the first step took (it allocates and first touches the state).
    pub first_step_seconds: f64,
}

/// Runs `downhill scale`: the sweep, or (with the hidden `--point`) one point.
pub fn run_scale(args: &ScaleArgs) -> Result<()> {
    if let Some(point) = &args.point {
        let (params, tensors) = parse_point(point)?;
        let p = measure(&args.optimizer, params, tensors, args.threads, args.steps)?;
        let line = serde_json::to_string(&p)
            .map_err(|e| LabError::config(format!("cannot write JSON: {e}")))?;
        println!("{line}");
        return Ok(());
    }
    check(args)?;
    OptimizerConfig::default_for(&args.optimizer)?;
    std::fs::create_dir_all(&args.out).map_err(|e| LabError::io(&args.out, e))?;
    let mut by_params = Vec::new();
    let mut n = 1_000usize;
    let mut counts = Vec::new();
    while n < args.max_params {
        counts.push(n);
        n = n.saturating_mul(10);
    }
    counts.push(args.max_params);
    let reference = 10_000_000usize.min(args.max_params);
    let mut reference_runs = Vec::new();
    for &n in &counts {
        if n == args.max_params && n > reference {
            reference_runs.push(child(args, reference, 1)?);
        }
        let p = child(args, n, 1)?;
        if n == reference {
            reference_runs.push(p.clone());
        }
        by_params.push(p);
        if n == args.max_params && n > reference {
            reference_runs.push(child(args, reference, 1)?);
        }
    }
    let mut by_tensors = Vec::new();
    let mut t = 1usize;
    loop {
        let t_now = t.min(args.max_tensors).min(args.tensor_sweep_params);
        by_tensors.push(child(args, args.tensor_sweep_params, t_now)?);
        if t_now >= args.max_tensors.min(args.tensor_sweep_params) {
            break;
        }
        t = t.saturating_mul(10);
    }
    let report = Report {
        optimizer: args.optimizer.clone(),
        threads: args.threads,
        by_params,
        by_tensors,
        reference_runs,
    };
    write(&report, &args.out)?;
    print!("{}", report.markdown());
    Ok(())
}

fn check(args: &ScaleArgs) -> Result<()> {
    if args.max_params < 1_000 {
        return Err(LabError::config(format!(
            "--max-params must be at least 1000, got {}",
            args.max_params
        )));
    }
    if args.max_tensors == 0 || args.max_tensors > args.tensor_sweep_params {
        return Err(LabError::config(format!(
            "--max-tensors must be in 1..=--tensor-sweep-params ({}), got {}",
            args.tensor_sweep_params, args.max_tensors
        )));
    }
    if args.threads == 0 || args.steps == 0 {
        return Err(LabError::config(format!(
            "--threads and --steps must be at least 1, got {} and {}",
            args.threads, args.steps
        )));
    }
    Ok(())
}

fn parse_point(text: &str) -> Result<(usize, usize)> {
    let bad = || LabError::config(format!("--point must be PARAMS:TENSORS, got '{text}'"));
    let (a, b) = text.split_once(':').ok_or_else(bad)?;
    let params = crate::args::bench::parse_count(a).map_err(|_| bad())?;
    let tensors = crate::args::bench::parse_count(b).map_err(|_| bad())?;
    if params == 0 || tensors == 0 || tensors > params {
        return Err(bad());
    }
    Ok((params, tensors))
}

/// Runs one point in a child process of this binary and reads its JSON line.
fn child(args: &ScaleArgs, params: usize, tensors: usize) -> Result<Point> {
    let exe = std::env::current_exe()
        .map_err(|e| LabError::config(format!("cannot find the downhill binary: {e}")))?;
    let out = Command::new(&exe)
        .args(["scale", "--optimizer", &args.optimizer])
        .args(["--threads", &args.threads.to_string()])
        .args(["--steps", &args.steps.to_string()])
        .args(["--point", &format!("{params}:{tensors}")])
        .output()
        .map_err(|e| LabError::io(&exe, e))?;
    if !out.status.success() {
        return Err(LabError::config(format!(
            "the point {params} parameters in {tensors} tensors failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let p: Point = serde_json::from_slice(&out.stdout).map_err(|e| {
        LabError::config(format!("the point {params}:{tensors} printed no JSON: {e}"))
    })?;
    eprintln!(
        "{:>11} params in {:>6} tensors: {:>10.3} ms per step, {:>6.0} Mparam/s, resident {:.3}x needed",
        p.params,
        p.tensors,
        p.median_step_seconds * 1e3,
        p.mparams_per_s,
        p.resident_over_needed
    );
    Ok(p)
}

/// `VmRSS` and `VmHWM` of this process in bytes (0 where /proc is not there).
fn resident() -> (u64, u64) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return (0, 0);
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Measures one point in this process.
fn measure(
    name: &str,
    params: usize,
    tensors: usize,
    threads: usize,
    steps: usize,
) -> Result<Point> {
    let (rss_before, _) = resident();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| LabError::config(format!("cannot start {threads} threads: {e}")))?;
    let config = OptimizerConfig::default_for(name)?;
    let specs: Vec<ParamSpec> = (0..tensors)
        .map(|i| {
            ParamSpec::new(
                format!("t{i}"),
                params / tensors + usize::from(i < params % tensors),
            )
        })
        .collect();
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    pool.install(|| {
        // Parameters and gradients written in full (so resident), small and varied.
        let fill = |len: usize, salt: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i.wrapping_mul(2_654_435_761) ^ salt) % 2001) as f32 * 1e-3 - 1.0)
                .collect()
        };
        let mut values: Vec<Vec<f32>> = specs.iter().map(|s| fill(s.len(), 0)).collect();
        let grads: Vec<Vec<f32>> = specs.iter().map(|s| fill(s.len(), 77)).collect();
        let mut opt = config.build(specs.clone())?;
        let step = |opt: &mut dyn downhill::Optimizer, values: &mut [Vec<f32>]| {
            let mut ps: Vec<Param<'_>> = names
                .iter()
                .zip(values.iter_mut())
                .zip(&grads)
                .map(|((n, p), g)| Param::new(n, p, g))
                .collect();
            opt.step(&mut ps)
        };
        let t0 = Instant::now();
        step(opt.as_mut(), &mut values)?;
        let first_step_seconds = t0.elapsed().as_secs_f64();
        let (rss_after, _) = resident();
        let mut times = Vec::with_capacity(steps);
        for _ in 0..steps {
            let t = Instant::now();
            step(opt.as_mut(), &mut values)?;
            times.push(t.elapsed().as_secs_f64());
        }
        let (_, rss_peak) = resident();
        times.sort_by(|a, b| a.total_cmp(b));
        let median = if times.len() % 2 == 1 {
            times[times.len() / 2]
        } else {
            0.5 * (times[times.len() / 2 - 1] + times[times.len() / 2])
        };
        // State buffers per element: a one-element tensor reads the parameter, the gradient
        // and every buffer once.
        let buffers = opt.traffic(1).0 as u64 - 2;
        let state_bytes = buffers * 4 * params as u64;
        let needed_bytes = 8 * params as u64 + state_bytes;
        Ok(Point {
            optimizer: name.to_string(),
            params,
            tensors,
            threads,
            steps,
            median_step_seconds: median,
            mparams_per_s: params as f64 / median / 1e6,
            state_bytes,
            needed_bytes,
            rss_before,
            rss_after,
            rss_peak,
            resident_over_needed: rss_after.saturating_sub(rss_before) as f64 / needed_bytes as f64,
            first_step_seconds,
        })
    })
}

/// The sweep's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// Optimizer name.
    pub optimizer: String,
    /// Rayon threads.
    pub threads: usize,
    /// The sweep over parameter counts (one tensor each).
    pub by_params: Vec<Point>,
    /// The sweep over tensor counts.
    pub by_tensors: Vec<Point>,
    /// The 1e7-parameter point measured right before and right after the largest one.
    pub reference_runs: Vec<Point>,
}

impl Report {
    /// The largest point's throughput over the mean of the 1e7 figures measured around it.
    pub fn largest_over_reference(&self) -> Option<f64> {
        let largest = self.by_params.last()?;
        let refs: Vec<f64> = self
            .reference_runs
            .iter()
            .map(|p| p.mparams_per_s)
            .collect();
        if refs.is_empty() {
            return None;
        }
        Some(largest.mparams_per_s / (refs.iter().sum::<f64>() / refs.len() as f64))
    }

    /// The tables of BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "{} with default hyperparameters, {} thread(s), median of the timed steps; each \
             point in its own process; resident = VmRSS after the first step minus before \
             allocating; needed = parameters + gradients + state.\n\n",
            self.optimizer, self.threads
        );
        s += "| params | tensors | ms per step | Mparam/s | needed GB | resident GB | resident / needed |\n";
        s += "|---|---|---|---|---|---|---|\n";
        for p in self.by_params.iter().chain(&self.by_tensors) {
            s += &format!(
                "| {} | {} | {:.3} | {:.0} | {:.3} | {:.3} | {:.4} |\n",
                p.params,
                p.tensors,
                p.median_step_seconds * 1e3,
                p.mparams_per_s,
                p.needed_bytes as f64 / 1e9,
                p.rss_after.saturating_sub(p.rss_before) as f64 / 1e9,
                p.resident_over_needed
            );
        }
        if let (Some(r), Some(largest)) = (self.largest_over_reference(), self.by_params.last()) {
            let refs: Vec<String> = self
                .reference_runs
                .iter()
                .map(|p| format!("{:.0}", p.mparams_per_s))
                .collect();
            s += &format!(
                "\nThroughput at {} parameters over the 1e7 figure measured right before and \
                 after it ({} Mparam/s): {:.3}.\n",
                largest.params,
                refs.join(" and "),
                r
            );
        }
        s
    }
}

fn write(report: &Report, out: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(report)
        .map_err(|e| LabError::config(format!("cannot write JSON: {e}")))?;
    let path = out.join("scale.json");
    std::fs::write(&path, json).map_err(|e| LabError::io(&path, e))?;
    let path = out.join("scale.md");
    std::fs::write(&path, report.markdown()).map_err(|e| LabError::io(&path, e))?;
    for (stem, points, x_label, x) in [
        ("params", &report.by_params, "parameters (one tensor)", 0),
        (
            "tensors",
            &report.by_tensors,
            "tensors (same parameters in all)",
            1,
        ),
    ] {
        let mut chart = LineChart::new(
            format!("{}: cost of one step", report.optimizer),
            x_label,
            "seconds per step; Mparam/s",
        );
        chart.x_scale = crate::plot::Scale::Log;
        chart.y_scale = crate::plot::Scale::Log;
        let at = |p: &Point| {
            if x == 0 {
                p.params as f64
            } else {
                p.tensors as f64
            }
        };
        chart.series.push(
            Series::new(
                "seconds per step",
                points
                    .iter()
                    .map(|p| (at(p), p.median_step_seconds))
                    .collect(),
                crate::plot::palette_color(0),
            )
            .with_markers(),
        );
        chart.series.push(
            Series::new(
                "Mparam/s",
                points.iter().map(|p| (at(p), p.mparams_per_s)).collect(),
                crate::plot::palette_color(1),
            )
            .with_markers(),
        );
        render(&chart, &out.join(stem))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_measures_memory_and_time() {
        let p = measure("adamw", 1 << 20, 3, 1, 2).unwrap();
        assert_eq!(p.state_bytes, 8 << 20);
        assert_eq!(p.needed_bytes, 16 << 20);
        assert!(p.median_step_seconds > 0.0);
        if p.rss_before > 0 {
            // The process's other allocations (the pool, the test harness) move it a little.
            assert!((0.9..1.2).contains(&p.resident_over_needed), "{p:?}");
        }
    }

    #[test]
    fn bad_points_are_errors() {
        assert!(parse_point("10").is_err());
        assert!(parse_point("10:0").is_err());
        assert!(parse_point("10:11").is_err());
        assert_eq!(parse_point("1e6:1000").unwrap(), (1_000_000, 1000));
    }
}
