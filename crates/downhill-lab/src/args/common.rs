//! The flags `compare` and `train` share: model, data, epochs, batch size, seed, threads, and
//! (flattened from [`TrainingArgs`]) the training utilities; validated into a [`ModelSpec`],
//! a [`DataSource`] and [`TrainOptions`].

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{ParallelArgs, TrainingArgs};
use crate::data::DataSource;
use crate::models::{ModelKind, ModelSpec, DEFAULT_CNN_CHANNELS, DEFAULT_MLP_HIDDEN};
use crate::train::TrainOptions;
use crate::{LabError, Result};

/// Model choice on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelArg {
    /// Multinomial logistic regression (784-10).
    Logreg,
    /// Multi-layer perceptron (see --hidden, --dropout).
    Mlp,
    /// Small CNN: two 5x5 conv + ReLU + max-pool blocks, then a linear layer.
    Cnn,
}

impl From<ModelArg> for ModelKind {
    fn from(m: ModelArg) -> Self {
        match m {
            ModelArg::Logreg => ModelKind::Logreg,
            ModelArg::Mlp => ModelKind::Mlp,
            ModelArg::Cnn => ModelKind::Cnn,
        }
    }
}

/// Flags shared by `compare` and `train`: model, data, schedule, seed, threads.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Model to train.
    #[arg(long, value_enum, default_value_t = ModelArg::Mlp)]
    pub model: ModelArg,
    /// MLP hidden-layer widths, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_MLP_HIDDEN.to_vec())]
    pub hidden: Vec<usize>,
    /// MLP dropout probability after each hidden layer.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f64,
    /// CNN channels of the two conv layers, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [DEFAULT_CNN_CHANNELS.0, DEFAULT_CNN_CHANNELS.1])]
    pub channels: Vec<usize>,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Folder with MNIST-format files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
    /// t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]); default: the bundled 10k digits
    /// split 8,000 / 2,000.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Seed of the split, initialisation, batch order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// No progress bars or per-run lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Worker threads (candle's matmul and downhill's kernels); default: physical cores.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Skip the training-set accuracy evaluated after every epoch.
    #[arg(long)]
    pub no_train_accuracy: bool,
    /// Schedules, clipping, accumulation and parameter groups.
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Data-parallel training under MPI.
    #[command(flatten)]
    pub parallel: ParallelArgs,
}

impl CommonArgs {
    /// The validated model spec.
    pub fn model_spec(&self) -> Result<ModelSpec> {
        let kind = ModelKind::from(self.model);
        let mut spec = ModelSpec::default_for(kind);
        match kind {
            ModelKind::Mlp => {
                spec.hidden = self.hidden.clone();
                spec.dropout = self.dropout;
            }
            ModelKind::Cnn => {
                let [a, b] = self.channels[..] else {
                    return Err(LabError::config(format!(
                        "--channels expects two numbers, got {:?}",
                        self.channels
                    )));
                };
                spec.channels = (a, b);
            }
            ModelKind::Logreg => {}
        }
        spec.validate()?;
        Ok(spec)
    }

    /// The data source.
    pub fn data_source(&self) -> DataSource {
        match &self.data_dir {
            Some(dir) => DataSource::Dir(dir.clone()),
            None => DataSource::Bundled,
        }
    }

    /// The validated training options (progress bar on unless `--quiet`).
    pub fn train_options(&self, label: &str) -> Result<TrainOptions> {
        if self.epochs == 0 {
            return Err(LabError::config("--epochs must be positive, got 0"));
        }
        if self.batch_size == 0 {
            return Err(LabError::config("--batch-size must be positive, got 0"));
        }
        let mut opts = TrainOptions {
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed: self.seed,
            eval_train: !self.no_train_accuracy,
            progress: !self.quiet,
            label: label.to_owned(),
            ..TrainOptions::default()
        };
        self.training.apply(&mut opts)?;
        opts.validate()?;
        Ok(opts)
    }

    /// The flags in canonical form (every value explicit), for reproducible command lines.
    pub fn canonical_flags(&self) -> Vec<String> {
        let mut f = vec!["--model".to_owned(), self.model_name().to_owned()];
        match self.model {
            ModelArg::Mlp => {
                f.push("--hidden".into());
                f.push(join(&self.hidden));
                if self.dropout != 0.0 {
                    f.push("--dropout".into());
                    f.push(self.dropout.to_string());
                }
            }
            ModelArg::Cnn => {
                f.push("--channels".into());
                f.push(join(&self.channels));
            }
            ModelArg::Logreg => {}
        }
        f.extend([
            "--epochs".into(),
            self.epochs.to_string(),
            "--batch-size".into(),
            self.batch_size.to_string(),
            "--seed".into(),
            self.seed.to_string(),
        ]);
        if let Some(dir) = &self.data_dir {
            f.push("--data-dir".into());
            f.push(dir.display().to_string());
        }
        if let Some(t) = self.threads {
            f.push("--threads".into());
            f.push(t.to_string());
        }
        if self.no_train_accuracy {
            f.push("--no-train-accuracy".into());
        }
        f.extend(self.training.canonical_flags());
        f.extend(self.parallel.canonical_flags());
        f
    }

    fn model_name(&self) -> &'static str {
        ModelKind::from(self.model).as_str()
    }
}

fn join(v: &[usize]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(",")
}
