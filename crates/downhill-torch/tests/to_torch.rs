//! downhill to PyTorch: scripts/gen_torch_checkpoints.py loaded every `.pt` file downhill
//! wrote (testdata/torch/from_downhill) with `torch.load(weights_only=True)`, gave it to
//! `load_state_dict` and continued M steps; its report must show every case within the golden
//! tolerance. The committed files must be what the current writer writes, byte for byte, so the
//! report is about this code.

mod fixture;

use fixture::*;

#[test]
fn torch_loaded_and_continued_every_file_downhill_wrote() {
    let dir = testdata().join("from_downhill");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let tol = 1e-6 * M as f64;
    for case in cases() {
        let r = &report["cases"][&case];
        assert_eq!(
            r["loaded_weights_only"],
            serde_json::json!(true),
            "{case}: {r}"
        );
        assert_eq!(
            r["state_keys_match"],
            serde_json::json!(true),
            "{case}: {r}"
        );
        for k in ["max_rel_err_params", "max_rel_err_state"] {
            let e = r[k].as_f64().unwrap();
            assert!(e <= tol, "{case}: {k} = {e:e} > {tol:e}");
        }
    }
}

#[test]
fn the_committed_files_are_what_downhill_writes_now() {
    let dir = testdata().join("from_downhill");
    for case in cases() {
        let (pt, json) = reverse(&case);
        let committed = std::fs::read(dir.join(format!("{case}.pt"))).unwrap();
        assert!(committed == pt, "{case}.pt differs from what downhill writes now: rerun scripts/gen_torch_checkpoints.py");
        let committed = std::fs::read_to_string(dir.join(format!("{case}.json"))).unwrap();
        assert!(
            committed == serde_json::to_string_pretty(&json).unwrap() + "\n",
            "{case}.json differs from what downhill computes now"
        );
    }
}
