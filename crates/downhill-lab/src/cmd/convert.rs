//! `downhill convert-checkpoint`: between torch.optim `.pt` files and downhill's
//! `.safetensors` optimizer states.
//!
//! ```text
//! downhill convert-checkpoint optim.pt optim.safetensors [--param-names fc1.weight,fc1.bias]
//! downhill convert-checkpoint optim.safetensors optim.pt
//! ```
//!
//! `.pt` to `.safetensors`: the optimizer is recognised from the file's keys (torch's `AdamW`
//! is `Adam` with `decoupled_weight_decay=True`: downhill's `adamw`), shapes come from the
//! state tensors, names from `--param-names`, else the file's `param_names`, else the torch
//! indices. The result is loaded into the optimizer it describes before it is written, so the
//! written file loads. `.safetensors` to `.pt`: names and order are the downhill checkpoint's;
//! the result is what `torch.save(opt.state_dict())` writes for the same torch.optim optimizer
//! (see the downhill-torch crate for the flags it writes and what it refuses).

use std::path::Path;

use downhill::checkpoint::Snapshot;

use crate::args::ConvertArgs;
use crate::{LabError, LabErrorKind, Result};

enum Format {
    Torch,
    Downhill,
}

fn format_of(path: &Path, flag: &str) -> Result<Format> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("pt" | "pth") => Ok(Format::Torch),
        Some("safetensors") => Ok(Format::Downhill),
        _ => Err(LabError::config(format!(
            "{flag} {}: the extension must be .pt, .pth or .safetensors",
            path.display()
        ))),
    }
}

fn torch_err(path: &Path) -> impl Fn(downhill_torch::Error) -> LabError + '_ {
    move |e| LabError::new(LabErrorKind::Data, format!("{}: {e}", path.display()))
}

/// Run `downhill convert-checkpoint`; returns what it printed.
pub fn run_convert(args: &ConvertArgs) -> Result<String> {
    let from = format_of(&args.input, "IN")?;
    let to = format_of(&args.output, "OUT")?;
    let bytes = std::fs::read(&args.input).map_err(|e| LabError::io(&args.input, e))?;
    let (out, summary) = match (from, to) {
        (Format::Torch, Format::Downhill) => {
            let pt = downhill_torch::StateDict::read(&bytes).map_err(torch_err(&args.input))?;
            let name = args.optimizer.as_deref().unwrap_or(pt.optimizer());
            let snap = pt
                .to_snapshot_as(name, args.param_names.as_deref())
                .map_err(torch_err(&args.input))?;
            let opt = snap.build()?;
            (
                opt.to_bytes()?,
                describe(&snap, "torch.optim", pt.torch_class()),
            )
        }
        (Format::Downhill, Format::Torch) => {
            if args.param_names.is_some() || args.optimizer.is_some() {
                return Err(LabError::config(
                    "--param-names and --optimizer apply to a .pt input; a downhill checkpoint \
                     has its own names and optimizer",
                ));
            }
            let snap = Snapshot::from_bytes(&bytes).map_err(|e| {
                LabError::new(LabErrorKind::Data, format!("{}: {e}", args.input.display()))
            })?;
            let pt = downhill_torch::write(&snap).map_err(torch_err(&args.input))?;
            (
                pt,
                describe(&snap, "downhill", snap.optimizer().unwrap_or("?")),
            )
        }
        _ => {
            return Err(LabError::config(format!(
                "IN {} and OUT {} are in the same format",
                args.input.display(),
                args.output.display()
            )))
        }
    };
    downhill::checkpoint::write_atomic(&args.output, &out)?;
    let msg = format!("{summary}\nwrote {}", args.output.display());
    println!("{msg}");
    Ok(msg)
}

fn describe(snap: &Snapshot, source: &str, what: &str) -> String {
    let params: Vec<String> = snap
        .groups
        .iter()
        .flat_map(|g| &g.params)
        .map(|p| format!("{} {:?} step {}", p.name, p.shape, p.step))
        .collect();
    format!(
        "{source} {what} -> {}: {} group(s), {} parameter(s): {}",
        snap.optimizer().unwrap_or("?"),
        snap.groups.len(),
        params.len(),
        params.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn testdata(f: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../testdata/torch")
            .join(f)
    }

    fn args(input: PathBuf, output: PathBuf) -> ConvertArgs {
        ConvertArgs {
            input,
            output,
            param_names: None,
            optimizer: None,
        }
    }

    #[test]
    fn pt_to_safetensors_and_back_keeps_every_value() {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("adam.safetensors");
        let msg = run_convert(&args(testdata("adam_amsgrad.pt"), st.clone())).unwrap();
        assert!(
            msg.contains("torch.optim Adam -> adam") && msg.contains("w [2, 3] step 3"),
            "{msg}"
        );
        let pt = dir.path().join("again.pt");
        run_convert(&args(st.clone(), pt.clone())).unwrap();
        let again = dir.path().join("again.safetensors");
        run_convert(&args(pt, again.clone())).unwrap();
        assert_eq!(std::fs::read(st).unwrap(), std::fs::read(again).unwrap());
    }

    #[test]
    fn names_and_optimizer_can_be_given() {
        let dir = tempfile::tempdir().unwrap();
        let st = dir.path().join("sgd.safetensors");
        let mut a = args(testdata("sgd_nesterov_groups.pt"), st.clone());
        a.param_names = Some(vec!["fc.weight".into(), "fc.bias".into()]);
        let msg = run_convert(&a).unwrap();
        assert!(
            msg.contains("fc.weight [2, 3]") && msg.contains("2 group(s)"),
            "{msg}"
        );
        let mut a = args(testdata("adamw.pt"), dir.path().join("adam.safetensors"));
        a.optimizer = Some("adam".into());
        assert!(run_convert(&a).unwrap().contains("-> adam:"));
        a.optimizer = Some("sgd".into());
        let err = run_convert(&a).unwrap_err();
        assert!(err.to_string().contains("not downhill's 'sgd'"), "{err}");
    }

    #[test]
    fn bad_inputs_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = run_convert(&args(
            testdata("bad/os_system.pt"),
            dir.path().join("x.safetensors"),
        ))
        .unwrap_err();
        assert!(err.to_string().contains("nothing was executed"), "{err}");
        let err =
            run_convert(&args(testdata("adam_amsgrad.pt"), dir.path().join("x.bin"))).unwrap_err();
        assert!(
            err.to_string().contains(".pt, .pth or .safetensors"),
            "{err}"
        );
        assert!(!dir.path().join("x.safetensors").exists());
    }
}
