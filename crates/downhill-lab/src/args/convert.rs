//! The flags of `downhill convert-checkpoint`.

use std::path::PathBuf;

use clap::Args;

/// `downhill convert-checkpoint IN OUT`.
#[derive(Debug, Clone, Args)]
pub struct ConvertArgs {
    /// The checkpoint to read: a torch.optim `state_dict()` saved with `torch.save` (`.pt`,
    /// `.pth`) or a downhill optimizer state (`.safetensors`).
    #[arg(value_name = "IN")]
    pub input: PathBuf,
    /// The checkpoint to write, in the other format.
    #[arg(value_name = "OUT")]
    pub output: PathBuf,
    /// Parameter names for a `.pt` file without `param_names`, in torch's parameter order
    /// across groups (default: the file's `param_names`, else the torch indices `0`, `1`, ...).
    #[arg(long, value_name = "A,B,..", value_delimiter = ',')]
    pub param_names: Option<Vec<String>>,
    /// Read a `.pt` file as this downhill optimizer (`adam` reads torch's AdamW as Adam with
    /// decoupled decay); default: the one the file's keys name.
    #[arg(long, value_name = "NAME")]
    pub optimizer: Option<String>,
}
