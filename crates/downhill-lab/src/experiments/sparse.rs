//! `downhill sparse`: logistic regression on a synthetic Zipf-distributed bag of words, the
//! small analogue of the Adam paper's IMDB experiment (Kingma & Ba 2015, §6.1, Fig. 1 right).
//!
//! Data: a vocabulary of 10,000 words with Zipf frequencies (`p(k) ∝ 1/k`); each document
//! draws tokens until it holds a fixed number of distinct words (1.5% of the vocabulary) and
//! is a binary bag of words. Labels come from a sparse linear teacher: 1,000 random words
//! carry a N(0, 1) weight, and a document is positive when its score exceeds the training
//! median. Training: minibatch 128, 50% input dropout (kept features scaled by 2), lr α/√t,
//! every optimizer on a small lr grid; the best lr is the one with the lowest final training
//! loss. The loss and gradient are written by hand on the sparse rows; downhill steps the
//! dense weight vector directly (no candle).

use downhill::schedule::Schedule;
use downhill::{Hyperparams, OptimizerConfig, Param, ParamSpec};
use serde::Serialize;

use super::{figure, fmt3, fmt_lr, json_num, write_results, Ctx};
use crate::plot::{lr_sweep, palette_color, LineChart, Scale, Series};
use crate::report::{Outcome, Section};
use crate::rng::SplitMix64;
use crate::{LabError, Result};

/// Vocabulary size.
pub const VOCAB: usize = 10_000;
/// Distinct words per document (1.5% density).
pub const WORDS_PER_DOC: usize = 150;
/// Words with a non-zero teacher weight.
pub const TEACHER_WORDS: usize = 1_000;

/// A synthetic sparse binary data set.
#[derive(Debug, Clone)]
pub struct SparseData {
    /// Training rows: sorted word indices.
    pub train_x: Vec<Vec<u32>>,
    /// Training labels in {0, 1}.
    pub train_y: Vec<f32>,
    /// Test rows.
    pub test_x: Vec<Vec<u32>>,
    /// Test labels.
    pub test_y: Vec<f32>,
}

/// Draw the data set (see the module docs).
pub fn make_data(n_train: usize, n_test: usize, seed: u64) -> SparseData {
    let mut rng = SplitMix64::derive(seed, "sparse/data");
    let mut cdf = Vec::with_capacity(VOCAB);
    let mut acc = 0.0;
    for k in 0..VOCAB {
        acc += 1.0 / (k + 1) as f64;
        cdf.push(acc);
    }
    let total = acc;
    let mut teacher = vec![0.0f64; VOCAB];
    let mut words: Vec<usize> = (0..VOCAB).collect();
    rng.shuffle(&mut words);
    for &w in &words[..TEACHER_WORDS] {
        teacher[w] = rng.normal();
    }
    let doc = |rng: &mut SplitMix64| {
        let mut seen = vec![false; VOCAB];
        let mut row = Vec::with_capacity(WORDS_PER_DOC);
        while row.len() < WORDS_PER_DOC {
            let u = rng.next_f64() * total;
            let k = cdf.partition_point(|&c| c < u).min(VOCAB - 1);
            if !seen[k] {
                seen[k] = true;
                row.push(k as u32);
            }
        }
        row.sort_unstable();
        row
    };
    let score = |row: &[u32]| row.iter().map(|&j| teacher[j as usize]).sum::<f64>();
    let train_x: Vec<Vec<u32>> = (0..n_train).map(|_| doc(&mut rng)).collect();
    let test_x: Vec<Vec<u32>> = (0..n_test).map(|_| doc(&mut rng)).collect();
    let mut scores: Vec<f64> = train_x.iter().map(|r| score(r)).collect();
    scores.sort_by(f64::total_cmp);
    let median = scores[scores.len() / 2];
    let label = |r: &Vec<u32>| if score(r) > median { 1.0 } else { 0.0 };
    SparseData {
        train_y: train_x.iter().map(label).collect(),
        test_y: test_x.iter().map(label).collect(),
        train_x,
        test_x,
    }
}

fn logit(w: &[f32], b: f32, row: &[u32]) -> f32 {
    row.iter().map(|&j| w[j as usize]).sum::<f32>() + b
}

/// Mean logistic loss and accuracy of `(w, b)` on rows `x` (no dropout).
pub fn evaluate(w: &[f32], b: f32, x: &[Vec<u32>], y: &[f32]) -> (f64, f64) {
    let (mut loss, mut correct) = (0.0f64, 0usize);
    for (row, &t) in x.iter().zip(y) {
        let z = f64::from(logit(w, b, row));
        // log(1 + e^z) - t z, computed stably.
        loss += z.max(0.0) + (-z.abs()).exp().ln_1p() - f64::from(t) * z;
        correct += usize::from((z > 0.0) == (t > 0.5));
    }
    (loss / x.len() as f64, correct as f64 / x.len() as f64)
}

/// Per-epoch curve of one training run.
#[derive(Debug, Clone, Serialize)]
pub struct SparseRun {
    /// Optimizer label.
    pub optimizer: String,
    /// Initial learning rate (α in α/√t).
    pub lr: f64,
    /// Full training loss (no dropout) before training and after every epoch (`null`:
    /// diverged).
    pub train_loss: Vec<Option<f64>>,
    /// Test accuracy after the last epoch.
    pub test_accuracy: f64,
}

/// Train logistic regression on `data` with `config` for `epochs` (minibatch 128, 50% input
/// dropout, lr α/√t, or constant α when `decay` is false).
pub fn train_sparse(
    data: &SparseData,
    label: &str,
    config: &OptimizerConfig,
    (epochs, decay): (usize, bool),
    seed: u64,
) -> Result<SparseRun> {
    let mut opt = config.build(vec![ParamSpec::new("w", VOCAB), ParamSpec::new("b", 1)])?;
    if decay {
        // α/√t with the 1-based step t.
        opt.set_schedule(Some(Schedule::InverseSqrt))?;
    }
    let (mut w, mut b) = (vec![0.0f32; VOCAB], vec![0.0f32; 1]);
    let (mut gw, mut gb) = (vec![0.0f32; VOCAB], vec![0.0f32; 1]);
    let mut rng = SplitMix64::derive(seed, "sparse/train");
    let n = data.train_x.len();
    let mut order: Vec<usize> = (0..n).collect();
    let mut curve = vec![json_num(evaluate(&w, b[0], &data.train_x, &data.train_y).0)];
    let mut kept: Vec<u32> = Vec::with_capacity(WORDS_PER_DOC);
    let mut diverged = false;
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        for batch in order.chunks(128) {
            gw.fill(0.0);
            gb[0] = 0.0;
            let scale = 1.0 / batch.len() as f32;
            for &i in batch {
                kept.clear();
                kept.extend(
                    data.train_x[i]
                        .iter()
                        .copied()
                        .filter(|_| rng.next_u64() & 1 == 0),
                );
                let z = 2.0 * kept.iter().map(|&j| w[j as usize]).sum::<f32>() + b[0];
                let err = (1.0 / (1.0 + (-z).exp()) - data.train_y[i]) * scale;
                for &j in &kept {
                    gw[j as usize] += 2.0 * err;
                }
                gb[0] += err;
            }
            opt.step(&mut [Param::new("w", &mut w, &gw), Param::new("b", &mut b, &gb)])?;
        }
        let (loss, _) = evaluate(&w, b[0], &data.train_x, &data.train_y);
        if !loss.is_finite() {
            diverged = true;
        }
        curve.push(if diverged { None } else { json_num(loss) });
    }
    let (_, acc) = evaluate(&w, b[0], &data.test_x, &data.test_y);
    Ok(SparseRun {
        optimizer: label.to_string(),
        lr: config.lr(),
        train_loss: curve,
        test_accuracy: if diverged { f64::NAN } else { acc },
    })
}

/// The optimizers of the figure: (label, core name, hyperparameters without lr, α/√t decay).
/// AdaGrad also runs with a constant α: its accumulator already decays the step like 1/√t.
fn optimizers() -> Vec<(&'static str, &'static str, Hyperparams, bool)> {
    vec![
        ("AdaGrad", "adagrad", Hyperparams::default(), true),
        (
            "AdaGrad (constant α)",
            "adagrad",
            Hyperparams::default(),
            false,
        ),
        (
            "SGD-Nesterov",
            "sgd",
            Hyperparams {
                momentum: Some(0.9),
                nesterov: Some(true),
                ..Hyperparams::default()
            },
            true,
        ),
        ("Adam", "adam", Hyperparams::default(), true),
        ("RMSProp", "rmsprop", Hyperparams::default(), true),
    ]
}

#[derive(Debug, Serialize)]
struct Results {
    vocab: usize,
    words_per_doc: usize,
    density: f64,
    train_examples: usize,
    test_examples: usize,
    epochs: usize,
    learning_rates: Vec<f64>,
    runs: Vec<SparseRun>,
    /// The best run (lowest final training loss) of each optimizer.
    best: Vec<SparseRun>,
}

fn final_loss(r: &SparseRun) -> f64 {
    r.train_loss
        .last()
        .copied()
        .flatten()
        .unwrap_or(f64::INFINITY)
}

/// Run the experiment (see the module docs).
pub fn run(ctx: &Ctx) -> Result<Section> {
    let (n_train, n_test, epochs, lrs): (usize, usize, usize, Vec<f64>) = if ctx.quick {
        (2000, 1000, 8, vec![1e-1, 1.0, 10.0])
    } else {
        (
            6000,
            2000,
            30,
            (-6..=4).map(|k| 10f64.powf(f64::from(k) / 2.0)).collect(),
        )
    };
    let data = make_data(n_train, n_test, ctx.seed);
    let mut runs = Vec::new();
    let mut best: Vec<SparseRun> = Vec::new();
    let mut sweep = Vec::new();
    for (i, (label, name, h, decay)) in optimizers().into_iter().enumerate() {
        let mut mine = Vec::new();
        for &lr in &lrs {
            let config = OptimizerConfig::from_hparams(
                name,
                &Hyperparams {
                    lr: Some(lr),
                    ..h.clone()
                },
            )?;
            mine.push(train_sparse(
                &data,
                label,
                &config,
                (epochs, decay),
                ctx.seed,
            )?);
        }
        sweep.push(Series::new(
            label,
            mine.iter().map(|r| (r.lr, final_loss(r))).collect(),
            palette_color(i),
        ));
        let b = mine
            .iter()
            .min_by(|a, b| final_loss(a).total_cmp(&final_loss(b)))
            .cloned()
            .ok_or_else(|| LabError::config("empty lr grid"))?;
        best.push(b);
        runs.extend(mine);
    }
    let mut chart = LineChart::new(
        "Sparse bag-of-words logistic regression, 50% input dropout (best lr each)",
        "epochs",
        "training loss (log)",
    );
    chart.y_scale = Scale::Log;
    chart.x_integer = true;
    for (i, r) in best.iter().enumerate() {
        chart.series.push(Series::new(
            format!("{} (α={})", r.optimizer, fmt_lr(r.lr)),
            r.train_loss
                .iter()
                .enumerate()
                .map(|(e, v)| (e as f64, v.unwrap_or(f64::INFINITY)))
                .collect(),
            palette_color(i),
        ));
    }
    let img_curve = figure(&chart, &ctx.out, "train_loss", "training loss per epoch")?;
    let mut sweep_chart = lr_sweep(
        "Sparse logistic regression: final training loss vs α",
        "final training loss (log)",
        sweep,
    );
    sweep_chart.y_scale = Scale::Log;
    let img_sweep = figure(&sweep_chart, &ctx.out, "lr_sweep", "final loss against lr")?;

    let density = WORDS_PER_DOC as f64 / VOCAB as f64;
    let results = Results {
        vocab: VOCAB,
        words_per_doc: WORDS_PER_DOC,
        density,
        train_examples: n_train,
        test_examples: n_test,
        epochs,
        learning_rates: lrs.clone(),
        runs,
        best: best.clone(),
    };
    write_results(&ctx.out, &results)?;

    let loss = |name: &str| {
        best.iter()
            .find(|r| r.optimizer == name)
            .map_or(f64::NAN, final_loss)
    };
    let acc = |name: &str| {
        best.iter()
            .find(|r| r.optimizer == name)
            .map_or(f64::NAN, |r| r.test_accuracy)
    };
    let (ada, sgd, adam, rms) = (
        loss("AdaGrad"),
        loss("SGD-Nesterov"),
        loss("Adam"),
        loss("RMSProp"),
    );
    let ada_beats_sgd = ada < 0.8 * sgd;
    let adam_like_ada = adam <= 1.1 * ada;
    let outcome = match (ada_beats_sgd, adam_like_ada) {
        (true, true) => Outcome::Reproduced,
        (false, false) => Outcome::NotReproduced,
        _ => Outcome::Mixed,
    };
    let text = format!(
        "Final training loss at each optimizer's best α after {epochs} epochs: AdaGrad {}, \
         SGD-Nesterov {}, Adam {}, RMSProp {} (test accuracy {:.1}%, {:.1}%, {:.1}%, {:.1}%). \
         AdaGrad's loss is {:.2}x SGD-Nesterov's (a large margin is taken as below 0.8x: {}), \
         and Adam's is {:.2}x AdaGrad's (as fast: at most 1.1x: {}). AdaGrad with a constant α \
         (no α/√t on top of its own decay) reached {} (α={}).",
        fmt3(ada),
        fmt3(sgd),
        fmt3(adam),
        fmt3(rms),
        100.0 * acc("AdaGrad"),
        100.0 * acc("SGD-Nesterov"),
        100.0 * acc("Adam"),
        100.0 * acc("RMSProp"),
        ada / sgd,
        if ada_beats_sgd { "yes" } else { "no" },
        adam / ada,
        if adam_like_ada { "yes" } else { "no" },
        fmt3(loss("AdaGrad (constant α)")),
        best.iter()
            .find(|r| r.optimizer == "AdaGrad (constant α)")
            .map_or("-".into(), |r| fmt_lr(r.lr))
    );
    Ok(ctx
        .section()
        .claim(
            "On sparse bag-of-words features with dropout, AdaGrad outperforms SGD with Nesterov \
             momentum by a large margin, and Adam converges as fast as AdaGrad. (Kingma & Ba \
             2015, §6.1, Fig. 1 right, IMDB)",
        )
        .paragraph(format!(
            "Synthetic Zipf bag of words: {VOCAB} words, {WORDS_PER_DOC} distinct words per \
             document ({:.1}% density), labels from a sparse linear teacher over \
             {TEACHER_WORDS} words; {n_train} training and {n_test} test documents; minibatch \
             128, 50% input dropout, lr α/√t with α in {{{}}} (AdaGrad also with a constant \
             α); the curves show the full training loss without dropout.",
            100.0 * density,
            lrs.iter()
                .map(|&l| fmt_lr(l))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .image(img_curve)
        .image(img_sweep)
        .verdict(outcome, text))
}
