//! The downhill side of scripts/gen_torch_checkpoints.py's reverse direction: for every torch
//! fixture in DIR (testdata/torch), downhill trains with the case's hyperparameters and writes
//! `DIR/from_downhill/<case>.pt` (downhill_torch::save) and `<case>.json`. Run by the script:
//! `cargo run --release -p downhill-torch --example reverse_fixtures -- testdata/torch`.

#[path = "../tests/fixture/mod.rs"]
mod fixture;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: reverse_fixtures DIR")?,
    );
    let out = dir.join("from_downhill");
    std::fs::create_dir_all(&out)?;
    for case in fixture::cases() {
        let (pt, json) = fixture::reverse(&case);
        std::fs::write(out.join(format!("{case}.pt")), pt)?;
        std::fs::write(
            out.join(format!("{case}.json")),
            serde_json::to_string_pretty(&json)? + "\n",
        )?;
        println!("downhill wrote {case}.pt");
    }
    Ok(())
}
