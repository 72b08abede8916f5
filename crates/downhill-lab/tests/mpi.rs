//! `downhill train` under `mpirun -np 2` (build with `--features mpi`; CI runs it from
//! `.ci/run`). One test, its parts in order, so that no two MPI jobs share the two cores:
//!
//! 1. `--zero 1` and `--zero 2` with global `--batch-size 64` end with exactly the model and
//!    the metrics of one process with `--batch-size 64 --accumulate 2` (the same two
//!    micro-batches of 32, reduced in the same order); the difference from the plain
//!    `--batch-size 64` run is printed (`cargo test ... -- --nocapture`).
//! 2. The state bytes per rank printed by `downhill train` and recorded in `config.json` are
//!    `total / 2` within the flat partition's bound.
//! 3. A rank killed (SIGKILL) after the first checkpoint stops the job within seconds, with
//!    mpirun's message; the run resumes from the last complete checkpoint (on ZeRO 1 instead of
//!    2: re-sharded from the consolidated state) and ends with the model of step 1.
//! 4. A rank that hangs (SIGSTOP) makes the other stop after `--comm-timeout` with an error
//!    naming the exchange, instead of waiting forever.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_downhill");

/// The flags every run shares: clipping and two parameter groups, so that the clipping norm
/// and the groups are exercised (most runs add dropout 0.1, for the micro-batch masks).
fn flags(epochs: usize) -> Vec<String> {
    [
        "train",
        "--optimizer",
        "adamw",
        "--lr",
        "0.003",
        "--model",
        "mlp",
        "--hidden",
        "64,64",
        "--clip-global-norm",
        "1",
        "--no-decay-bias-norm",
        "--batch-size",
        "64",
        "--threads",
        "1",
        "--seed",
        "7",
        "--quiet",
        "--no-train-accuracy",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(["--epochs".to_string(), epochs.to_string()])
    .collect()
}

fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args(["-np", &np.to_string(), "--oversubscribe"])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .arg(EXE);
    c
}

fn run(mut c: Command, extra: &[String]) -> Output {
    let out = c.args(extra).output().expect("start mpirun / downhill");
    assert!(out.status.success(), "{c:?} failed:\n{}", text(&out));
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// The model a checkpoint folder holds, tensor by tensor (sorted by name).
fn model(ckpt: &Path) -> Vec<(String, Vec<f32>)> {
    let t =
        candle_core::safetensors::load(ckpt.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let mut v: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn same_bits(a: &[(String, Vec<f32>)], b: &[(String, Vec<f32>)]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((n, x), (m, y))| {
            n == m && x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
}

/// `metrics.csv` without the wall-clock rows.
fn metrics(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .filter(|l| !l.contains("epoch_seconds"))
        .map(str::to_owned)
        .collect()
}

fn config(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap()
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: the command name may hold spaces, so read after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// The pid of MPI rank `rank` among the processes `mpirun` (pid `launcher`) started.
fn rank_pid(launcher: u32, rank: usize) -> Option<u32> {
    let want = format!("OMPI_COMM_WORLD_RANK={rank}");
    children_of(launcher).into_iter().find(|p| {
        std::fs::read(format!("/proc/{p}/environ"))
            .map(|env| env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()))
            .unwrap_or(false)
    })
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Waits until `file` exists (or `timeout` passes).
fn wait_for(file: &Path, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if file.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Starts `downhill` under `mpirun -np 2` with `args`, waits for `ready`, then sends `sig` to
/// rank 1; returns how long the job took to end after the signal, and its output.
fn interrupt(args: &[String], ready: &Path, sig: &str) -> (Duration, Output) {
    let child = mpirun(2)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(ready, Duration::from_secs(120)),
        "{} never appeared",
        ready.display()
    );
    let victim = rank_pid(child.id(), 1).expect("rank 1 among mpirun's children");
    signal(victim, sig);
    let at = Instant::now();
    let out = child.wait_with_output().unwrap();
    (at.elapsed(), out)
}

#[test]
fn downhill_train_under_mpirun() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let epochs = 3;
    let f = flags(epochs);
    let ckpt = |n: &str| -> PathBuf { d.join(format!("{n}_ckpt")) };
    let out = |n: &str| -> PathBuf { d.join(format!("{n}_run")) };
    let with = |n: &str, extra: &[&str]| -> Vec<String> {
        let mut a = f.clone();
        a.extend([
            "--checkpoint".into(),
            path(d, &format!("{n}_ckpt")),
            "--out".into(),
            path(d, &format!("{n}_run")),
        ]);
        a.extend(extra.iter().map(|s| s.to_string()));
        if !extra.contains(&"--dropout") {
            a.extend(["--dropout".into(), "0.1".into()]);
        }
        a
    };

    // 1. ZeRO 1 and 2 on two ranks against accumulation in one process.
    let z1 = run(mpirun(2), &with("zero1", &["--zero", "1"]));
    run(mpirun(2), &with("zero2", &["--zero", "2"]));
    run(Command::new(EXE), &with("acc2", &["--accumulate", "2"]));
    let acc2 = model(&ckpt("acc2"));
    for z in ["zero1", "zero2"] {
        assert!(
            same_bits(&model(&ckpt(z)), &acc2),
            "{z}: the model differs from --accumulate 2"
        );
        assert_eq!(
            metrics(&out(z)),
            metrics(&out("acc2")),
            "{z}: the metrics differ"
        );
    }
    // The plain run computes the gradient of the 64 examples in one pass: other roundings.
    // Compared without dropout, which would otherwise draw the masks of the 64 rows in another
    // order (layer by layer over all 64 rows, instead of both layers for rows 0-31 first).
    run(
        mpirun(2),
        &with("zero2_nodrop", &["--zero", "2", "--dropout", "0"]),
    );
    run(
        Command::new(EXE),
        &with("acc2_nodrop", &["--accumulate", "2", "--dropout", "0"]),
    );
    run(Command::new(EXE), &with("plain", &["--dropout", "0"]));
    let acc2_nodrop = model(&ckpt("acc2_nodrop"));
    assert!(same_bits(&model(&ckpt("zero2_nodrop")), &acc2_nodrop));
    let plain = model(&ckpt("plain"));
    let (mut differ, mut total, mut max_abs, mut d2, mut n2) = (0usize, 0usize, 0f64, 0f64, 0f64);
    for ((_, x), (_, y)) in plain.iter().zip(&acc2_nodrop) {
        for (a, b) in x.iter().zip(y) {
            total += 1;
            differ += usize::from(a.to_bits() != b.to_bits());
            max_abs = max_abs.max((*a as f64 - *b as f64).abs());
            d2 += (*a as f64 - *b as f64).powi(2);
            n2 += (*b as f64).powi(2);
        }
    }
    let test_loss = |run: &Path| -> f64 {
        let m = metrics(run);
        let last = m
            .iter()
            .rev()
            .find(|l| l.starts_with("test_loss"))
            .unwrap()
            .clone();
        last.rsplit(',').next().unwrap().parse().unwrap()
    };
    eprintln!(
        "after {epochs} epochs: --zero 1, --zero 2 (2 ranks) and --accumulate 2 are bit-identical; \
         without dropout, plain --batch-size 64 vs --zero 2 = --accumulate 2: {differ} of {total} \
         parameters differ, max |diff| {max_abs:.3e}, ||diff|| / ||params|| {:.3e}, final test \
         loss {:.6} vs {:.6}",
        (d2 / n2).sqrt(),
        test_loss(&out("plain")),
        test_loss(&out("acc2_nodrop"))
    );

    // 2. State per rank: printed, recorded, half the total within the flat bound.
    let printed = text(&z1);
    assert!(
        printed.contains("optimizer state bytes per rank:"),
        "{printed}"
    );
    let dp = &config(&out("zero1"))["training"]["data_parallel"];
    let per: Vec<u64> = dp["state_bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap())
        .collect();
    let params: u64 = plain.iter().map(|(_, v)| v.len() as u64).sum();
    assert_eq!(
        per.iter().sum::<u64>(),
        params * 8,
        "AdamW keeps 8 bytes per parameter: {per:?}"
    );
    for b in &per {
        assert!(
            b.abs_diff(params * 4) <= 5120 * 8,
            "{per:?} vs total/2 = {}",
            params * 4
        );
    }
    eprintln!(
        "{}",
        printed
            .lines()
            .filter(|l| l.contains("state bytes") || l.contains("data-parallel"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // 3. A rank killed after the first checkpoint; resume from the last complete one.
    let (after, killed) = interrupt(
        &with("killed", &["--zero", "2"]),
        &ckpt("killed").join("metrics.csv"),
        "-KILL",
    );
    let said = text(&killed);
    assert!(
        !killed.status.success(),
        "the job survived a dead rank:\n{said}"
    );
    assert!(
        after < Duration::from_secs(20),
        "the job took {after:?} to stop"
    );
    assert!(
        said.contains("signal 9") || said.contains("Killed"),
        "{said}"
    );
    let resume = [path(d, "killed_ckpt")];
    let mut args = with("resumed", &["--zero", "1"]);
    args.extend(["--resume".to_string(), resume[0].clone()]);
    run(mpirun(2), &args);
    assert!(
        same_bits(&model(&ckpt("resumed")), &acc2),
        "the resumed run differs from an uninterrupted one"
    );
    eprintln!(
        "killed rank: the job stopped {:.2} s after SIGKILL; resumed run bit-identical",
        after.as_secs_f64()
    );

    // 4. A rank that hangs: the other gives up after --comm-timeout and ends the job.
    let (after, hung) = interrupt(
        &with("hung", &["--zero", "2", "--comm-timeout", "3"]),
        &ckpt("hung").join("metrics.csv"),
        "-STOP",
    );
    let said = text(&hung);
    assert!(!hung.status.success(), "{said}");
    assert!(said.contains("did not complete within 3.0 s"), "{said}");
    assert!(
        after < Duration::from_secs(30),
        "the job took {after:?} to stop"
    );
    eprintln!(
        "hung rank: the job stopped {:.2} s after SIGSTOP",
        after.as_secs_f64()
    );
    eprintln!("mpi test took {:.1} s", started.elapsed().as_secs_f64());
}
