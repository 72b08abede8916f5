//! `downhill landscape`: every optimizer on the 2-D test functions, with contour plots, the
//! trajectories, `landscape.json` and an `index.html` (see [`crate::landscape`]).

use downhill::{Hyperparams, OPTIMIZER_NAMES};

use crate::args::LandscapeArgs;
use crate::landscape::{landscape, LandscapeOptions, LandscapeResult};
use crate::report::landscape_page;
use crate::{LabError, Result};

/// Run `downhill landscape`: one contour plot per function, `landscape.json` with every
/// chosen lr and search score, and an `index.html` showing them; returns the results.
pub fn run_landscape(args: &LandscapeArgs) -> Result<Vec<LandscapeResult>> {
    let functions = args.functions()?;
    if args.start.is_some() && functions.len() > 1 {
        return Err(LabError::config(
            "--start needs a single --function (each function has its own start point)",
        ));
    }
    let optimizers: Vec<String> = if args.optimizers.is_empty() {
        // Every optimizer that takes a 2-D point as a 1-D parameter (Muon takes matrices
        // only: `--optimizers muon` says so, by default it is left out).
        OPTIMIZER_NAMES
            .iter()
            .filter(|name| {
                downhill::OptimizerConfig::default_for(name)
                    .and_then(|c| c.build(vec![downhill::ParamSpec::new("xy", 2)]))
                    .is_ok()
            })
            .map(|s| s.to_string())
            .collect()
    } else {
        args.optimizers.clone()
    };
    let options = LandscapeOptions {
        steps: args.steps,
        lr: args.lr,
        clip_grad_norm: args.clip_grad_norm,
        hyper: Hyperparams::default(),
        start: args.start.map(|(x, y)| [x as f32, y as f32]),
    };
    let mut results = Vec::with_capacity(functions.len());
    for f in functions {
        let result = landscape(f, &optimizers, &options, &args.out)?;
        eprintln!(
            "{}: wrote {}",
            f.name(),
            args.out.join(&result.png).display()
        );
        results.push(result);
    }
    let json_path = args.out.join("landscape.json");
    crate::run::write_json(&json_path, &results)?;
    let index = landscape_page(&results, &args.command(&optimizers)).write(&args.out)?;
    eprintln!("wrote {} and {}", json_path.display(), index.display());
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn landscape_args_reject_unknown_functions() {
        #[derive(Parser)]
        struct L {
            #[command(flatten)]
            l: LandscapeArgs,
        }
        let args = L::try_parse_from(["t", "--function", "rastrigin"])
            .unwrap()
            .l;
        let err = run_landscape(&args).unwrap_err();
        assert!(err.to_string().contains("rastrigin"), "{err}");
        let args = L::try_parse_from(["t", "--optimizers", "sgd,adam", "--start=-1,1"])
            .unwrap()
            .l;
        assert_eq!(args.optimizers, ["sgd", "adam"]);
        assert!(run_landscape(&args).is_err(), "--start with all functions");
    }
}
