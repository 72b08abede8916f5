//! `downhill plot`: redraw the plots of run folders from their files.

use crate::args::PlotArgs;
use crate::plot::plot_run;
use crate::Result;

/// Run `downhill plot`: [`plot_run`] on every run folder given.
pub fn run_plot(args: &PlotArgs) -> Result<()> {
    for dir in &args.run_dirs {
        crate::run::ensure_complete(dir)?;
        plot_run(dir)?;
    }
    Ok(())
}
