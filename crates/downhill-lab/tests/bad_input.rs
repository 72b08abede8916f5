//! Bad input everywhere: every `downhill` subcommand, run as a process, with bad flags, bad
//! values, missing and unreadable paths, an unwritable output folder and garbage data files
//! (IDX, gzip, checkpoints, schedules, run folders). Each case must end with the documented
//! exit code (README "Exit codes": 2 for a usage or configuration error, 1 for anything else)
//! and one `error:` line naming the culprit (the flag and value, the field, or the path), and
//! never with a panic or a backtrace; a failed `train` leaves no run folder that looks
//! complete. docs/RELIABILITY.md lists the cases.
//!
//! The cases train at most one epoch of a tiny MLP on 48 generated images: the whole file takes
//! a few seconds.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `downhill args` with backtraces on, so that a panic could not hide, in a scratch
/// folder, so that a default output folder (`runs/`, `out/`) never lands in the source tree.
fn downhill(args: &[&str]) -> Output {
    let cwd = std::env::temp_dir().join("downhill-bad-input-cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    Command::new(env!("CARGO_BIN_EXE_downhill"))
        .current_dir(&cwd)
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the downhill binary runs")
}

/// One bad invocation: the exit code and the words its `error:` line must contain.
struct Case {
    args: Vec<String>,
    code: i32,
    culprit: Vec<String>,
}

fn case(args: &[&str], code: i32, culprit: &[&str]) -> Case {
    Case {
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        culprit: culprit.iter().map(|s| s.to_string()).collect(),
    }
}

/// Runs `c` and returns what went wrong, if anything.
fn check(c: &Case) -> Option<String> {
    let args: Vec<&str> = c.args.iter().map(String::as_str).collect();
    let out = downhill(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = format!(
        "downhill {}: exit {:?}, stderr:\n{stderr}",
        args.join(" "),
        out.status.code()
    );
    if stderr.contains("panicked") || stderr.contains("backtrace") {
        return Some(format!("panic or backtrace: {shown}"));
    }
    if out.status.code() != Some(c.code) {
        return Some(format!("expected exit {}: {shown}", c.code));
    }
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    if errors.len() != 1 {
        return Some(format!("expected one error: line: {shown}"));
    }
    // clap names a missing argument on the lines after its error line, before its usage.
    let named = if stderr.contains("\nUsage:") {
        stderr.split("\nUsage:").next().unwrap_or("")
    } else {
        errors[0]
    };
    let missing: Vec<&String> = c
        .culprit
        .iter()
        .filter(|w| !named.contains(w.as_str()))
        .collect();
    if !missing.is_empty() {
        return Some(format!("error line does not name {missing:?}: {shown}"));
    }
    None
}

fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = magic.to_be_bytes().to_vec();
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A data folder with the standard MNIST names: `n` training and `n / 2` test images.
fn data_dir(root: &Path, name: &str, n: u32) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for (prefix, count) in [("train", n), ("t10k", n / 2)] {
        let pixels: Vec<u8> = (0..count * 784).map(|i| (i * 37 % 251) as u8).collect();
        let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            idx(0x803, &[count, 28, 28], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            idx(0x801, &[count], &labels),
        )
        .unwrap();
    }
    dir
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// The subcommands `downhill --help` lists.
fn subcommands() -> Vec<String> {
    let out = downhill(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("Exit codes"),
        "--help documents the exit codes:\n{text}"
    );
    text.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_subcommand_rejects_bad_input_with_one_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let good = data_dir(root, "good", 48);
    let tiny = [
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--quiet",
    ];

    // Garbage data folders: each starts as a good one with one file broken.
    let bad_magic = data_dir(root, "bad-magic", 8);
    std::fs::write(
        bad_magic.join("train-images-idx3-ubyte"),
        b"garbage, not IDX at all",
    )
    .unwrap();
    let truncated = data_dir(root, "truncated", 8);
    let images = std::fs::read(truncated.join("train-images-idx3-ubyte")).unwrap();
    std::fs::write(truncated.join("train-images-idx3-ubyte"), &images[..1000]).unwrap();
    let bad_gz = data_dir(root, "bad-gz", 8);
    std::fs::remove_file(bad_gz.join("train-images-idx3-ubyte")).unwrap();
    let zipped = gz(&images);
    std::fs::write(
        bad_gz.join("train-images-idx3-ubyte.gz"),
        &zipped[..zipped.len() / 2],
    )
    .unwrap();
    let bad_labels = data_dir(root, "bad-labels", 8);
    std::fs::write(
        bad_labels.join("t10k-labels-idx1-ubyte"),
        idx(0x801, &[4], &[1, 2, 42, 3]),
    )
    .unwrap();
    let mismatch = data_dir(root, "mismatch", 8);
    std::fs::write(
        mismatch.join("train-labels-idx1-ubyte"),
        idx(0x801, &[3], &[1, 2, 3]),
    )
    .unwrap();
    // An unreadable file: a folder where the images should be (refused even to root).
    let unreadable = data_dir(root, "unreadable", 8);
    std::fs::remove_file(unreadable.join("train-images-idx3-ubyte")).unwrap();
    std::fs::create_dir(unreadable.join("train-images-idx3-ubyte")).unwrap();
    let missing = root.join("no-such-folder");
    // An unwritable output folder: one below a regular file.
    let file = root.join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let below_file = file.join("out");
    // What the errors name: the file in the way (a prefix of every path below it).
    let unwritable = s(&file);

    // A good checkpoint from a tiny run, then broken copies of it.
    let run = root.join("run");
    let ck = root.join("ck");
    let mut args = vec!["train", "--optimizer", "adam", "--data-dir"];
    let good_s = s(&good);
    let run_s = s(&run);
    let ck_s = s(&ck);
    args.extend([good_s.as_str(), "--out", &run_s, "--checkpoint", &ck_s]);
    args.extend(tiny);
    let out = downhill(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run.join("config.json").is_file() && !run.join("INCOMPLETE").exists());
    let copy = |name: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(&ck).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
        dir
    };
    let ck_garbage_opt = copy("ck-garbage-optimizer");
    std::fs::write(
        ck_garbage_opt.join("optimizer.safetensors"),
        b"\x08\0\0\0\0\0\0\0{garbage",
    )
    .unwrap();
    let ck_flipped = copy("ck-flipped");
    let mut bytes = std::fs::read(ck_flipped.join("optimizer.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(ck_flipped.join("optimizer.safetensors"), &bytes).unwrap();
    let ck_truncated_model = copy("ck-truncated-model");
    let model = std::fs::read(ck_truncated_model.join("model.safetensors")).unwrap();
    std::fs::write(
        ck_truncated_model.join("model.safetensors"),
        &model[..model.len() / 2],
    )
    .unwrap();
    let ck_no_optimizer = copy("ck-no-optimizer");
    std::fs::remove_file(ck_no_optimizer.join("optimizer.safetensors")).unwrap();
    // Unreadable: a folder where the optimizer state should be (refused even to root).
    let ck_unreadable = copy("ck-unreadable");
    std::fs::remove_file(ck_unreadable.join("optimizer.safetensors")).unwrap();
    std::fs::create_dir(ck_unreadable.join("optimizer.safetensors")).unwrap();

    // Garbage run folders for `plot`.
    let run_copy = |name: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in ["config.json", "metrics.csv"] {
            std::fs::copy(run.join(f), dir.join(f)).unwrap();
        }
        dir
    };
    let bad_config = run_copy("bad-config");
    std::fs::write(bad_config.join("config.json"), b"{\"optimizer\": ").unwrap();
    let bad_metrics = run_copy("bad-metrics");
    std::fs::write(
        bad_metrics.join("metrics.csv"),
        b"kind,epoch,step,value\ntrain_loss,x,1,2\n",
    )
    .unwrap();
    let incomplete = run_copy("incomplete");
    std::fs::write(incomplete.join("INCOMPLETE"), b"").unwrap();

    let (good, bad_magic, truncated, bad_gz, bad_labels, mismatch, unreadable, missing, below_file) = (
        s(&good),
        s(&bad_magic),
        s(&truncated),
        s(&bad_gz),
        s(&bad_labels),
        s(&mismatch),
        s(&unreadable),
        s(&missing),
        s(&below_file),
    );
    // `train` with the tiny defaults, each default flag replaced when `extra` gives it.
    let train = |extra: &[&str]| {
        let mut v = vec!["train"];
        let base = [
            ["--optimizer", "adam"],
            ["--data-dir", &good],
            ["--hidden", "8"],
            ["--epochs", "1"],
            ["--batch-size", "16"],
        ];
        for [flag, value] in base {
            if !extra.contains(&flag) {
                v.extend([flag, value]);
            }
        }
        v.push("--quiet");
        v.extend(extra);
        v.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let t = |extra: &[&str], code: i32, culprit: &[&str]| Case {
        args: train(extra),
        code,
        culprit: culprit.iter().map(|s| s.to_string()).collect(),
    };
    let data = |dir: &str, culprit: &[&str]| {
        let mut c = t(&[], 1, culprit);
        let at = c.args.iter().position(|a| a == "--data-dir").unwrap();
        c.args[at + 1] = dir.to_owned();
        c
    };
    let resume = |dir: &Path, culprit: &str| {
        let d = s(dir);
        t(&["--resume", &d], 1, &[culprit])
    };
    let images = |dir: &str| format!("{dir}/train-images-idx3-ubyte");

    let mut cases = vec![
        // train: flags and values.
        case(
            &["train", "--optimizer", "adam", "--bogus"],
            2,
            &["--bogus"],
        ),
        case(&["train"], 2, &["--optimizer"]),
        t(&["--optimizer", "nope"], 2, &["nope"]),
        t(&["--lr", "abc"], 2, &["abc", "--lr"]),
        t(&["--lr", "-1"], 2, &["lr", "-1"]),
        t(&["--lr", "nan"], 2, &["lr", "NaN"]),
        t(&["--betas", "0.9"], 2, &["0.9", "--betas"]),
        t(&["--betas", "0.9,1.5"], 2, &["beta", "1.5"]),
        t(&["--eps", "-1e-8"], 2, &["eps"]),
        t(&["--momentum", "0.9"], 2, &["momentum"]),
        t(&["--epochs", "0"], 2, &["--epochs", "0"]),
        t(&["--epochs", "-3"], 2, &["-3"]),
        t(&["--batch-size", "0"], 2, &["--batch-size", "0"]),
        t(&["--hidden", "0"], 2, &["hidden"]),
        t(&["--model", "transformer"], 2, &["transformer"]),
        t(&["--schedule", "bogus:x=1"], 2, &["--schedule", "bogus"]),
        t(
            &["--schedule", "cosine:total=0"],
            2,
            &["--schedule", "total"],
        ),
        t(
            &["--schedule", "{\"kind\": \"cosine\""],
            2,
            &["--schedule", "JSON"],
        ),
        t(
            &[
                "--schedule",
                "{\"kind\": \"step\", \"step_size\": 0, \"gamma\": 0.5}",
            ],
            2,
            &["--schedule", "step_size"],
        ),
        t(
            &["--plateau", "plateau:factor=2"],
            2,
            &["--plateau", "factor"],
        ),
        t(
            &["--clip-global-norm", "nan"],
            2,
            &["clip_global_norm", "NaN"],
        ),
        t(&["--clip-value", "-1"], 2, &["clip_value", "-1"]),
        t(&["--accumulate", "0"], 2, &["--accumulate", "0"]),
        t(&["--nonfinite", "maybe"], 2, &["maybe"]),
        t(&["--threads", "x"], 2, &["x"]),
        // train: paths and data files.
        data(&missing, &[&missing]),
        data(&bad_magic, &[&images(&bad_magic), "magic"]),
        data(&truncated, &[&images(&truncated), "truncated"]),
        data(&bad_gz, &[&format!("{}.gz", images(&bad_gz)), "gzip"]),
        data(&bad_labels, &["t10k-labels-idx1-ubyte", "42"]),
        data(&mismatch, &["train-", "3"]),
        data(&unreadable, &[&unreadable, "train-images-idx3-ubyte"]),
        t(&["--out", &below_file], 1, &[&unwritable]),
        t(&["--checkpoint", &below_file], 1, &[&unwritable]),
        t(&["--resume", &missing], 1, &[&missing]),
        resume(&ck_garbage_opt, "optimizer.safetensors"),
        resume(&ck_flipped, "optimizer.safetensors"),
        resume(&ck_truncated_model, "model.safetensors"),
        resume(&ck_no_optimizer, "optimizer.safetensors"),
        resume(&ck_unreadable, "optimizer.safetensors"),
        // compare.
        case(&["compare", "--bogus"], 2, &["--bogus"]),
        case(
            &["compare", "--optimizers", "adam,adam"],
            2,
            &["adam", "twice"],
        ),
        case(&["compare", "--optimizers", "nope"], 2, &["nope"]),
        case(
            &["compare", "--optimizers", "adam", "--lr", "adam=x"],
            2,
            &["adam=x"],
        ),
        case(
            &["compare", "--optimizers", "adam", "--lr", "sgd=0.1"],
            2,
            &["sgd"],
        ),
        case(
            &["compare", "--optimizers", "adam", "--lr", "adam"],
            2,
            &["--lr", "adam"],
        ),
        case(
            &["compare", "--optimizers", "adam", "--epochs", "0"],
            2,
            &["--epochs"],
        ),
        case(
            &["compare", "--optimizers", "adam", "--data-dir", &bad_magic],
            1,
            &[&images(&bad_magic)],
        ),
        case(
            &[
                "compare",
                "--optimizers",
                "adam",
                "--data-dir",
                &good,
                "--out",
                &below_file,
                "--epochs",
                "1",
                "--hidden",
                "8",
                "--quiet",
            ],
            1,
            &[&unwritable],
        ),
        // plot.
        case(&["plot"], 2, &["RUN_DIRS"]),
        case(&["plot", &missing], 1, &[&missing]),
        case(
            &["plot", &s(&bad_config)],
            1,
            &[&s(&bad_config.join("config.json"))],
        ),
        case(
            &["plot", &s(&bad_metrics)],
            1,
            &[&s(&bad_metrics.join("metrics.csv"))],
        ),
        case(
            &["plot", &s(&incomplete)],
            1,
            &[&s(&incomplete), "incomplete"],
        ),
        // trace.
        case(&["trace", "--bogus"], 2, &["--bogus"]),
        case(
            &["trace", "--optimizer", "nope", "--function", "rosenbrock"],
            2,
            &["nope"],
        ),
        case(
            &["trace", "--optimizer", "adam", "--function", "nope"],
            2,
            &["nope"],
        ),
        case(
            &[
                "trace",
                "--optimizer",
                "adam",
                "--function",
                "rosenbrock",
                "--start",
                "1",
            ],
            2,
            &["--start", "1"],
        ),
        case(
            &[
                "trace",
                "--optimizer",
                "adam",
                "--function",
                "rosenbrock",
                "--lr",
                "-1",
            ],
            2,
            &["lr", "-1"],
        ),
        case(
            &[
                "trace",
                "--optimizer",
                "adam",
                "--function",
                "rosenbrock",
                "--clip-grad-norm",
                "-1",
            ],
            2,
            &["-1"],
        ),
        // landscape.
        case(&["landscape", "--bogus"], 2, &["--bogus"]),
        case(&["landscape", "--function", "nope"], 2, &["nope"]),
        case(&["landscape", "--optimizers", "nope"], 2, &["nope"]),
        case(&["landscape", "--lr", "nan"], 2, &["lr", "NaN"]),
        case(
            &[
                "landscape",
                "--function",
                "rosenbrock",
                "--optimizers",
                "adam",
                "--steps",
                "5",
                "--out",
                &below_file,
            ],
            1,
            &[&unwritable],
        ),
        // bench.
        case(&["bench", "--bogus"], 2, &["--bogus"]),
        case(&["bench", "--optimizer", "nope"], 2, &["nope"]),
        case(
            &["bench", "--optimizer", "adam", "--params", "abc"],
            2,
            &["abc"],
        ),
        case(
            &["bench", "--optimizer", "adam", "--params", "0"],
            2,
            &["--params", "0"],
        ),
        case(
            &["bench", "--optimizer", "adam", "--threads", "0"],
            2,
            &["--threads", "0"],
        ),
        case(
            &["bench", "--optimizer", "adam", "--lr", "-1"],
            2,
            &["lr", "-1"],
        ),
        // schedule.
        case(&["schedule", "--bogus"], 2, &["--bogus"]),
        case(
            &["schedule", "--schedule", "bogus"],
            2,
            &["--schedule", "bogus"],
        ),
        case(
            &["schedule", "--schedule", "{garbage"],
            2,
            &["--schedule", "JSON"],
        ),
        case(
            &["schedule", "--schedule", "{\"kind\": \"nope\"}"],
            2,
            &["--schedule", "nope"],
        ),
        case(
            &["schedule", "--schedule", "multistep:milestones=60;30"],
            2,
            &["--schedule", "milestones"],
        ),
        case(
            &["schedule", "--schedule", "cosine:total=10", "--steps", "0"],
            2,
            &["--steps", "0"],
        ),
        case(
            &[
                "schedule",
                "--schedule",
                "cosine:total=10",
                "--base-lr",
                "-1",
            ],
            2,
            &["--base-lr", "-1"],
        ),
        case(
            &[
                "schedule",
                "--schedule",
                "cosine:total=10",
                "--out",
                &below_file,
            ],
            1,
            &[&unwritable],
        ),
        // report.
        case(&["report", "--bogus"], 2, &["--bogus"]),
        case(&["report", "--only", "nope"], 2, &["nope"]),
        case(&["report", "--seed", "x"], 2, &["x"]),
    ];

    // Every subcommand has cases; the experiment subcommands get a bad flag and a bad value.
    let names = subcommands();
    for name in &names {
        if !cases.iter().any(|c| &c.args[0] == name) {
            cases.push(case(&[name, "--bogus"], 2, &["--bogus"]));
            cases.push(case(&[name, "--seed", "x"], 2, &["x"]));
        }
    }
    for name in [
        "train",
        "compare",
        "plot",
        "trace",
        "landscape",
        "bench",
        "schedule",
        "report",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} missing from --help: {names:?}"
        );
    }

    let failures: Vec<String> = cases.iter().filter_map(check).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );

    // No failed train left a folder that looks complete.
    assert!(!below_file.is_empty() && !Path::new(&below_file).exists());
}

#[test]
fn a_failed_train_leaves_no_complete_looking_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let good = data_dir(root, "good", 48);
    let ck = root.join("not-a-checkpoint");
    std::fs::create_dir_all(&ck).unwrap();
    std::fs::write(ck.join("model.safetensors"), b"garbage").unwrap();
    let out = root.join("run");
    let (good, ck, out_s) = (s(&good), s(&ck), s(&out));
    let o = downhill(&[
        "train",
        "--optimizer",
        "sgd",
        "--data-dir",
        &good,
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        &out_s,
        "--resume",
        &ck,
    ]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        !out.exists(),
        "the folder the failed run created is removed"
    );

    // A folder that existed (an earlier run) is marked incomplete instead.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("config.json"), b"{}").unwrap();
    let o = downhill(&[
        "train",
        "--optimizer",
        "sgd",
        "--data-dir",
        &good,
        "--hidden",
        "8",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        &out_s,
        "--resume",
        &ck,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(out.join("INCOMPLETE").is_file());
    let o = downhill(&["plot", &out_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("incomplete"));
}
