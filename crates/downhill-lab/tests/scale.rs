//! `downhill scale --point`: one point in a process of its own holds what the step needs
//! (parameters, gradients, AdamW's two state buffers) and little else.

use std::process::Command;

#[test]
fn a_point_holds_parameters_gradients_and_state() {
    let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .args([
            "scale",
            "--point",
            "4e6:3",
            "--threads",
            "1",
            "--steps",
            "2",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["needed_bytes"], 4_000_000u64 * 16);
    let ratio = p["resident_over_needed"].as_f64().unwrap();
    if p["rss_before"].as_u64().unwrap() > 0 {
        // 64 MB needed; the thread pool and the allocator's own pages add well under 5%.
        assert!((0.98..1.05).contains(&ratio), "{p}");
    }
}

#[test]
fn a_bad_point_is_a_one_line_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .args(["scale", "--point", "10:11"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--point must be PARAMS:TENSORS, got '10:11'"),
        "{err}"
    );
}
