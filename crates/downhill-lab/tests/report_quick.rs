//! `downhill report --quick` end to end: every experiment writes its figures (PNG and SVG),
//! `results.json` and `index.html`, the report page links them all, and every verdict is
//! computed: it quotes at least one number that `results.json` holds.

use std::path::Path;
use std::process::Command;

use downhill_lab::experiments::EXPERIMENTS;

/// The text of the first verdict paragraph of an experiment page.
fn verdict(html: &str) -> String {
    let start = html
        .find("class=\"verdict\"")
        .expect("the page has a verdict");
    let rest = &html[start..];
    let text = &rest[..rest.find("</p>").expect("the verdict ends")];
    // Drop the badge.
    text[text.find("</span>").expect("the badge ends") + 7..].to_string()
}

/// Every number in a JSON value.
fn numbers(v: &serde_json::Value, out: &mut Vec<f64>) {
    match v {
        serde_json::Value::Number(n) => out.extend(n.as_f64()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| numbers(x, out)),
        _ => {}
    }
}

/// Whether `text` quotes some non-trivial number of `values` in one of the formats the
/// verdicts use.
fn quotes_a_result(text: &str, values: &[f64]) -> bool {
    values.iter().any(|&v| {
        if v == 0.0 || v == 1.0 || (v.fract() == 0.0 && v.abs() < 10.0) {
            return false; // too common to prove anything
        }
        [
            format!("{v:.3}"),
            format!("{v:.2}%"),
            format!("{:.2}%", 100.0 * v),
            format!("{:.1}%", 100.0 * v),
            format!("{v:.1e}"),
        ]
        .iter()
        .any(|s| text.contains(s.as_str()))
    })
}

fn check_experiment(dir: &Path) {
    let results = std::fs::read_to_string(dir.join("results.json")).expect("results.json");
    let json: serde_json::Value = serde_json::from_str(&results).expect("valid JSON");
    let html = std::fs::read_to_string(dir.join("index.html")).expect("index.html");
    let text = verdict(&html);
    let mut values = Vec::new();
    numbers(&json, &mut values);
    assert!(
        quotes_a_result(&text, &values),
        "{}: the verdict quotes no number of results.json: {text}",
        dir.display()
    );
    let mut pngs = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            pngs += 1;
            assert!(path.with_extension("svg").is_file(), "{}", path.display());
            assert!(std::fs::metadata(&path).unwrap().len() > 1000);
            let name = path.file_name().unwrap().to_str().unwrap();
            assert!(html.contains(name), "{name} is not shown on the page");
        }
    }
    assert!(pngs >= 1, "{}: no figure", dir.display());
}

/// Every `<img src>` of `html` (relative to `dir`) decodes as a PNG of a plausible size.
fn every_figure_decodes(dir: &Path, html: &str) -> usize {
    let mut n = 0;
    for part in html.split("<img src=\"").skip(1) {
        let src = &part[..part.find('"').expect("the src ends")];
        let path = dir.join(src);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{src}: {e}"));
        let mut reader = png::Decoder::new(file)
            .read_info()
            .unwrap_or_else(|e| panic!("{src}: not a PNG: {e}"));
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader
            .next_frame(&mut buf)
            .unwrap_or_else(|e| panic!("{src}: {e}"));
        assert!(info.width >= 300 && info.height >= 200, "{src}: {info:?}");
        n += 1;
    }
    n
}

#[test]
fn quick_report_writes_every_experiment_with_computed_verdicts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let status = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .args(["report", "--quick", "--out"])
        .arg(&out)
        .status()
        .expect("the downhill binary runs");
    assert!(status.success());
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    let timings: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("timings.json")).unwrap()).unwrap();
    for t in timings.as_array().unwrap() {
        assert_eq!(t["ok"], true, "{t}");
    }
    for name in EXPERIMENTS.iter().map(|e| e.name) {
        check_experiment(&out.join(name));
        assert!(
            index.contains(&format!("{name}/")),
            "{name} figures not on the report"
        );
        assert!(
            index.contains(&format!("downhill {name} --out")),
            "{name} command missing"
        );
    }
    assert!(index.contains("landscape/rosenbrock.png"));
    assert_eq!(
        index.matches("class=\"verdict\"").count(),
        EXPERIMENTS.len() + 1
    );
    assert!(index.contains("<nav>"), "table of contents");
    let figures = every_figure_decodes(&out, &index);
    assert!(
        figures >= EXPERIMENTS.len(),
        "{figures} figures on the report"
    );
}

#[test]
fn one_experiment_runs_as_a_subcommand() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("sparse");
    let status = Command::new(env!("CARGO_BIN_EXE_downhill"))
        .args(["sparse", "--quick", "--seed", "3", "--out"])
        .arg(&out)
        .status()
        .expect("the downhill binary runs");
    assert!(status.success());
    check_experiment(&out);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("--seed 3 --quick"));
}
