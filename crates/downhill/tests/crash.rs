//! Crash safety of checkpoints: a writer killed at any point of a save leaves the previous or
//! the new checkpoint, always loadable; a full disk (a file-size limit) is a clear error that
//! leaves the previous checkpoint intact; a second writer of the same path is refused.
//!
//! The children are this test binary run again with one test selected (`--exact NAME`) and
//! an environment variable that turns that test from a no-op into the child's job.

#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use downhill::testkit::Rng;
use downhill::{AdamConfig, ErrorKind, Optimizer, Param};

const CHILD_DIR: &str = "DOWNHILL_CRASH_CHILD_DIR";
const LEN: usize = 1 << 18;

fn optimizer() -> downhill::Adam {
    AdamConfig::default().build([("w", LEN)]).unwrap()
}

fn step(opt: &mut downhill::Adam, w: &mut [f32], rng: &mut Rng) {
    let g = rng.vec(LEN, 1.0);
    opt.step(&mut [Param::new("w", w, &g)]).unwrap();
}

/// The next line the child printed with its `CHILD ` marker, without the marker.
fn child_line(out: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if let Some(rest) = line.trim().strip_prefix("CHILD ") {
            return Some(rest.to_string());
        }
    }
}

fn child(test: &str, dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    cmd
}

/// Child: step and save `ckpt.safetensors` in a loop, printing `writing N` before and
/// `saved N` after each save.
#[test]
fn child_save_loop() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let path = PathBuf::from(dir).join("ckpt.safetensors");
    let mut opt = optimizer();
    if path.exists() {
        opt.load(&path).unwrap();
    }
    let mut w = vec![0.5f32; LEN];
    let mut rng = Rng::new(opt.step_count("w").unwrap_or(0));
    loop {
        step(&mut opt, &mut w, &mut rng);
        println!("\nCHILD writing {}", opt.step_count("w").unwrap());
        opt.save(&path).unwrap();
        println!("\nCHILD saved {}", opt.step_count("w").unwrap());
    }
}

#[test]
fn a_writer_killed_at_random_points_leaves_the_previous_or_the_new_checkpoint() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let mut rng = Rng::new(99);
    let (mut trials, mut mid_write) = (0, 0);
    let started = Instant::now();
    while trials < 200 {
        let before = if path.exists() {
            let mut o = optimizer();
            o.load(&path).unwrap();
            o.step_count("w").unwrap()
        } else {
            0
        };
        let mut c = child("child_save_loop", dir.path()).spawn().unwrap();
        let mut out = BufReader::new(c.stdout.take().unwrap());
        // Wait for the first save of this run, then kill after a random delay (a save of this
        // 3 MB state takes a millisecond or more, so most kills land inside one).
        let first = loop {
            let line = child_line(&mut out).expect("the child saved once");
            if let Some(n) = line.strip_prefix("saved ") {
                break n.parse::<u64>().unwrap();
            }
        };
        assert_eq!(first, before + 1);
        let delay = rng.next_u64() % 6_000;
        std::thread::sleep(Duration::from_micros(delay));
        c.kill().unwrap();
        let _ = c.wait();
        let (mut last, mut writing) = (first, false);
        while let Some(l) = child_line(&mut out) {
            if let Some(n) = l.strip_prefix("saved ") {
                last = n.parse().unwrap();
                writing = false;
            } else if l.starts_with("writing ") {
                writing = true;
            }
        }
        let mut o = optimizer();
        o.load(&path)
            .unwrap_or_else(|e| panic!("trial {trials}: the checkpoint does not load: {e}"));
        let on_disk = o.step_count("w").unwrap();
        assert!(
            on_disk == last || on_disk == last + 1,
            "trial {trials}: checkpoint at step {on_disk}, the writer had finished {last}"
        );
        if writing {
            mid_write += 1;
        }
        trials += 1;
    }
    assert!(
        mid_write >= 20,
        "only {mid_write} kills landed inside a save"
    );
    eprintln!(
        "{trials} kills in {:.1} s, {mid_write} of them between the start and the end of a save",
        started.elapsed().as_secs_f64()
    );
}

/// Child: with a file-size limit of 1 MB (and SIGXFSZ ignored, so the write fails with EFBIG
/// instead of killing the process), try to save over `ckpt.safetensors`; print the error.
#[test]
fn child_save_over_a_size_limit() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let path = PathBuf::from(dir).join("ckpt.safetensors");
    // SAFETY: plain libc calls with valid arguments, before any other thread writes files.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 1 << 20,
            rlim_max: 1 << 20,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let mut opt = optimizer();
    let mut w = vec![0.5f32; LEN];
    step(&mut opt, &mut w, &mut Rng::new(5));
    step(&mut opt, &mut w, &mut Rng::new(6));
    match opt.save(&path) {
        Ok(()) => println!("\nCHILD saved"),
        Err(e) => println!("\nCHILD error {:?}: {e}", e.kind()),
    }
}

#[test]
fn a_full_disk_is_a_clear_error_and_the_previous_checkpoint_stays() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let mut opt = optimizer();
    let mut w = vec![0.5f32; LEN];
    step(&mut opt, &mut w, &mut Rng::new(5));
    opt.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let out = child("child_save_over_a_size_limit", dir.path())
        .output()
        .unwrap();
    let line = child_line(&mut &out.stdout[..])
        .unwrap_or_else(|| panic!("child printed {:?}", String::from_utf8_lossy(&out.stdout)));
    assert!(line.starts_with("error Io"), "{line}");
    assert!(line.contains("ckpt.safetensors"), "names the file: {line}");
    assert!(
        line.to_lowercase().contains("too large"),
        "says why: {line}"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "previous checkpoint changed"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "nothing left behind: {names:?}");
    let mut again = optimizer();
    again.load(&path).unwrap();
}

/// Child: hold the write lock of `ckpt.safetensors` (as a writer in the middle of a save
/// does) until stdin closes.
#[test]
fn child_hold_the_lock() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let lock = PathBuf::from(dir).join(".ckpt.safetensors.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock)
        .unwrap();
    f.lock().unwrap();
    println!("\nCHILD locked");
    let mut s = String::new();
    let _ = std::io::stdin().read_line(&mut s);
}

#[test]
fn a_second_writer_of_the_same_path_is_refused() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let opt = optimizer();
    opt.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    let mut c = child("child_hold_the_lock", dir.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(c.stdout.take().unwrap());
    assert_eq!(child_line(&mut out).as_deref(), Some("locked"));
    let err = opt.save(&path).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Locked, "{err}");
    assert!(err.message().contains("another process"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
    drop(c.stdin.take());
    c.wait().unwrap();
    opt.save(&path).unwrap();
}
