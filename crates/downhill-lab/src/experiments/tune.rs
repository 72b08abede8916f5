//! The tuning protocol every experiment's verdict rests on: one owner for the validation
//! split, the learning-rate grid, its extension, the seeds and the paired-seed verdict.
//!
//! 1. **Split** ([`ValidationSplit`]): a stratified, seeded share of the *training* set is held
//!    out for selection; the test set is never used to choose anything. The split is recorded
//!    in each experiment's `results.json` ([`SplitRecord`]).
//! 2. **Grid** ([`LrGrid`]): learning rates `10^(k/2)` for consecutive integers `k` (half
//!    decades), at least five of them.
//! 3. **Selection** ([`tune`]): every grid point is trained with every seed; the selected
//!    learning rate has the lowest *mean over seeds* of the validation score (lower is better;
//!    a run that diverged scores `+inf`, so a point where any seed diverged is never chosen
//!    over a finite one).
//! 4. **Extension**: when the selected point is the lowest or the highest of the grid, the grid
//!    grows by one half decade on that side and the new point is trained, at most
//!    `max_extensions` times per side. If the optimum is still on an edge the result says so
//!    ([`Tuned::on_edge`]) and every verdict built on it is inconclusive.
//! 5. **Verdict** ([`Verdict::paired`]): two arms are compared seed by seed, each at its own
//!    selected learning rate: `d_s = score_B(s) - score_A(s)`. With `n >= 2` seeds, mean
//!    `d̄`, sample standard deviation `sd` and standard error `se = sd / √n`, the verdict is
//!    "A lower" when every `d_s > 0` and `d̄ > 2 se`, "B lower" when every `d_s < 0` and
//!    `-d̄ > 2 se`, and "inconclusive" otherwise, or when either arm's optimum is on a grid
//!    edge, or when a difference is not finite.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::data::stratified_split;
use crate::{LabError, Result};

/// How many standard errors the mean paired difference must exceed.
pub const STANDARD_ERRORS: f64 = 2.0;

/// The smallest number of seeds the protocol accepts.
pub const MIN_SEEDS: usize = 3;

/// The smallest number of grid points the protocol accepts.
pub const MIN_GRID_POINTS: usize = 5;

/// `n` consecutive seeds starting at `first`.
pub fn seeds(first: u64, n: usize) -> Vec<u64> {
    (0..n as u64).map(|i| first.wrapping_add(i)).collect()
}

/// The learning rate `10^(k/2)` of half-decade exponent `k`.
pub fn half_decade(k: i32) -> f64 {
    10f64.powf(f64::from(k) / 2.0)
}

/// A grid of half-decade learning rates `10^(k/2)` for `k` in `lo..=hi`, and how far it may
/// grow on each side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct LrGrid {
    /// Lowest exponent (learning rate `10^(lo/2)`).
    pub lo: i32,
    /// Highest exponent.
    pub hi: i32,
    /// Half decades the grid may add on each side when the optimum lands on that edge.
    pub max_extensions: u32,
}

impl LrGrid {
    /// The grid `10^(lo/2) ..= 10^(hi/2)`; at least [`MIN_GRID_POINTS`] points.
    pub fn new(lo: i32, hi: i32, max_extensions: u32) -> Result<Self> {
        if hi < lo || (hi - lo + 1) < MIN_GRID_POINTS as i32 {
            return Err(LabError::config(format!(
                "a learning-rate grid needs at least {MIN_GRID_POINTS} half-decade points, got \
                 exponents {lo}..={hi}"
            )));
        }
        Ok(LrGrid {
            lo,
            hi,
            max_extensions,
        })
    }

    /// Its learning rates, ascending.
    pub fn lrs(&self) -> Vec<f64> {
        (self.lo..=self.hi).map(half_decade).collect()
    }
}

/// One grid point after tuning: its learning rate and every seed's score.
#[derive(Clone, Debug, Serialize)]
pub struct GridPoint {
    /// Half-decade exponent `k` (lr = `10^(k/2)`).
    pub exponent: i32,
    /// The learning rate.
    pub lr: f64,
    /// Score of each seed, in the order of [`Tuned::seeds`] (`null`: diverged).
    pub scores: Vec<Option<f64>>,
    /// Mean over seeds (`null` when a seed diverged).
    pub mean: Option<f64>,
}

/// The outcome of [`tune`] for one arm (one optimizer, setting or batch size).
#[derive(Clone, Debug, Serialize)]
pub struct Tuned {
    /// What was tuned.
    pub arm: String,
    /// What the score is (for example "validation loss after epoch 20").
    pub score: String,
    /// The seeds, in the order of every [`GridPoint::scores`].
    pub seeds: Vec<u64>,
    /// The grid as first asked for.
    pub initial_grid: LrGrid,
    /// Every point tried, ascending in lr (the initial grid and its extensions).
    pub points: Vec<GridPoint>,
    /// Index of the selected point in [`points`](Self::points).
    pub best: usize,
    /// Half decades added below and above the initial grid.
    pub extended: (u32, u32),
    /// Whether the selected point is still on an edge of the (extended) grid, or no point
    /// had a finite score: verdicts built on it are inconclusive.
    pub on_edge: bool,
}

impl Tuned {
    /// The selected learning rate.
    pub fn best_lr(&self) -> f64 {
        self.points[self.best].lr
    }

    /// Scores of the selected point per seed (`+inf`: diverged).
    pub fn best_scores(&self) -> Vec<f64> {
        self.points[self.best]
            .scores
            .iter()
            .map(|s| s.unwrap_or(f64::INFINITY))
            .collect()
    }

    /// Mean score of the selected point (`+inf` when a seed diverged).
    pub fn best_mean(&self) -> f64 {
        self.points[self.best].mean.unwrap_or(f64::INFINITY)
    }

    /// The learning rates tried, ascending.
    pub fn lrs(&self) -> Vec<f64> {
        self.points.iter().map(|p| p.lr).collect()
    }

    /// One sentence: the grid tried, its extensions and the selected point.
    pub fn describe(&self) -> String {
        let (lo, hi) = (self.points[0].lr, self.points[self.points.len() - 1].lr);
        let ext = match self.extended {
            (0, 0) => String::from("not extended"),
            (d, u) => format!("extended by {d} half decade(s) down and {u} up"),
        };
        format!(
            "{}: half-decade grid {}..{} ({} points, {ext}), selected lr {} ({} {}{})",
            self.arm,
            super::fmt_lr(lo),
            super::fmt_lr(hi),
            self.points.len(),
            super::fmt_lr(self.best_lr()),
            self.score,
            fmt_score(self.best_mean()),
            if self.on_edge {
                ", still on a grid edge: inconclusive"
            } else {
                ""
            }
        )
    }
}

fn fmt_score(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "diverged".into()
    }
}

/// Tune one arm: train `score(lr, seed)` (lower is better; a non-finite value means diverged)
/// on every point of `grid` with every seed, select the point of lowest mean, and extend the
/// grid by half decades while the selection is on an edge (see the module docs).
///
/// `score` is called once per (point, seed); callers that need more than the score of a run
/// (curves, test accuracy) keep it themselves, keyed by lr and seed.
pub fn tune(
    arm: impl Into<String>,
    score_name: impl Into<String>,
    grid: LrGrid,
    seeds: &[u64],
    mut score: impl FnMut(f64, u64) -> Result<f64>,
) -> Result<Tuned> {
    if seeds.len() < MIN_SEEDS {
        return Err(LabError::config(format!(
            "the tuning protocol needs at least {MIN_SEEDS} seeds, got {}",
            seeds.len()
        )));
    }
    let mut scores: BTreeMap<i32, Vec<f64>> = BTreeMap::new();
    let mut eval = |k: i32, scores: &mut BTreeMap<i32, Vec<f64>>| -> Result<()> {
        if let std::collections::btree_map::Entry::Vacant(slot) = scores.entry(k) {
            let lr = half_decade(k);
            let mut per_seed = Vec::with_capacity(seeds.len());
            for &s in seeds {
                let v = score(lr, s)?;
                per_seed.push(if v.is_finite() { v } else { f64::INFINITY });
            }
            slot.insert(per_seed);
        }
        Ok(())
    };
    for k in grid.lo..=grid.hi {
        eval(k, &mut scores)?;
    }
    let (mut lo, mut hi) = (grid.lo, grid.hi);
    let mut extended = (0u32, 0u32);
    loop {
        let best = select(&scores);
        match best {
            Some(k) if k == lo && extended.0 < grid.max_extensions => {
                lo -= 1;
                extended.0 += 1;
                eval(lo, &mut scores)?;
            }
            Some(k) if k == hi && extended.1 < grid.max_extensions => {
                hi += 1;
                extended.1 += 1;
                eval(hi, &mut scores)?;
            }
            _ => break,
        }
    }
    let best_k = select(&scores);
    let points: Vec<GridPoint> = scores
        .iter()
        .map(|(&k, v)| {
            let mean = mean_of(v);
            GridPoint {
                exponent: k,
                lr: half_decade(k),
                scores: v.iter().map(|&x| x.is_finite().then_some(x)).collect(),
                mean: mean.is_finite().then_some(mean),
            }
        })
        .collect();
    let best = best_k
        .and_then(|k| points.iter().position(|p| p.exponent == k))
        .unwrap_or(0);
    Ok(Tuned {
        arm: arm.into(),
        score: score_name.into(),
        seeds: seeds.to_vec(),
        initial_grid: grid,
        best,
        extended,
        on_edge: best_k.is_none_or(|k| k == lo || k == hi),
        points,
    })
}

fn mean_of(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// The exponent of lowest finite mean score (ties: the lower lr), or `None` if none is finite.
fn select(scores: &BTreeMap<i32, Vec<f64>>) -> Option<i32> {
    let mut best: Option<(i32, f64)> = None;
    for (&k, v) in scores {
        let m = mean_of(v);
        if m.is_finite() && best.is_none_or(|(_, b)| m < b) {
            best = Some((k, m));
        }
    }
    best.map(|(k, _)| k)
}

/// Which arm a [`Verdict`] favours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Arm A has the lower score in every seed, by more than the threshold on average.
    ALower,
    /// Arm B has the lower score in every seed, by more than the threshold on average.
    BLower,
    /// Neither (signs disagree, the gap is within the threshold, an optimum is on a grid edge,
    /// or a score is not finite).
    Inconclusive,
}

/// A comparison of two arms from paired seed differences (see the module docs).
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// Arm A.
    pub a: String,
    /// Arm B.
    pub b: String,
    /// What was compared (for example "validation loss after epoch 20").
    pub score: String,
    /// The seeds, paired.
    pub seeds: Vec<u64>,
    /// `score_B(s) - score_A(s)` per seed (`null`: not finite).
    pub differences: Vec<Option<f64>>,
    /// Mean difference `d̄` (`null`: undefined).
    pub mean: Option<f64>,
    /// Standard error of the mean difference (`null`: undefined).
    pub standard_error: Option<f64>,
    /// The threshold the mean must exceed: [`STANDARD_ERRORS`] standard errors.
    pub threshold: Option<f64>,
    /// Seeds whose difference has the sign of the mean.
    pub agreeing_seeds: usize,
    /// The result.
    pub decision: Decision,
    /// Why the verdict is inconclusive, when it is for a reason other than the statistic.
    pub reason: Option<String>,
}

impl Verdict {
    /// Compare arm `a` (scores `sa`) with arm `b` (scores `sb`), paired by `seeds`; lower is
    /// better. `edge` says whether either arm's optimum is on a grid edge (the verdict is then
    /// inconclusive whatever the numbers).
    pub fn paired(
        (a, sa): (&str, &[f64]),
        (b, sb): (&str, &[f64]),
        score: &str,
        seeds: &[u64],
        edge: bool,
    ) -> Verdict {
        let d: Vec<f64> = sa.iter().zip(sb).map(|(x, y)| y - x).collect();
        let n = d.len();
        let finite = n == seeds.len() && d.iter().all(|v| v.is_finite());
        let (mean, se) = if finite && n >= 2 {
            let m = mean_of(&d);
            let var = d.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1) as f64;
            (Some(m), Some(var.sqrt() / (n as f64).sqrt()))
        } else {
            (None, None)
        };
        let threshold = se.map(|s| STANDARD_ERRORS * s);
        let agreeing = mean.map_or(0, |m| {
            d.iter()
                .filter(|v| v.signum() == m.signum() && **v != 0.0)
                .count()
        });
        let mut reason = None;
        let decision = match (mean, threshold) {
            _ if edge => {
                reason = Some("an optimum is on a grid edge".to_string());
                Decision::Inconclusive
            }
            (Some(m), Some(t)) if agreeing == n && m.abs() > t => {
                if m > 0.0 {
                    Decision::ALower
                } else {
                    Decision::BLower
                }
            }
            (Some(_), Some(_)) => Decision::Inconclusive,
            _ => {
                reason = Some(if n < 2 {
                    "fewer than two seeds".to_string()
                } else {
                    "a run diverged at the selected lr".to_string()
                });
                Decision::Inconclusive
            }
        };
        Verdict {
            a: a.to_string(),
            b: b.to_string(),
            score: score.to_string(),
            seeds: seeds.to_vec(),
            differences: d.iter().map(|v| v.is_finite().then_some(*v)).collect(),
            mean,
            standard_error: se,
            threshold,
            agreeing_seeds: agreeing,
            decision,
            reason,
        }
    }

    /// The name of the arm it favours, if any.
    pub fn winner(&self) -> Option<&str> {
        match self.decision {
            Decision::ALower => Some(&self.a),
            Decision::BLower => Some(&self.b),
            Decision::Inconclusive => None,
        }
    }

    /// One sentence: the decision, the statistic, the threshold and the seeds.
    pub fn describe(&self) -> String {
        let what = match self.decision {
            Decision::ALower => format!("{} lower than {}", self.a, self.b),
            Decision::BLower => format!("{} lower than {}", self.b, self.a),
            Decision::Inconclusive => format!("{} vs {}: inconclusive", self.a, self.b),
        };
        let stat = match (self.mean, self.standard_error, self.threshold) {
            (Some(m), Some(se), Some(t)) => format!(
                "mean paired gap ({} - {}) {m:.4}, standard error {se:.4}, threshold {STANDARD_ERRORS} SE = {t:.4}, {} of {} seeds agree in sign",
                self.b,
                self.a,
                self.agreeing_seeds,
                self.seeds.len()
            ),
            _ => "no statistic".to_string(),
        };
        format!(
            "{what} ({} at each arm's selected lr; {stat}; seeds {}{})",
            self.score,
            self.seeds
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            self.reason
                .as_ref()
                .map_or(String::new(), |r| format!("; {r}"))
        )
    }
}

/// A validation split carved from the training set: which training indices train and which
/// select.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationSplit {
    /// Indices (into the training set) that are trained on.
    pub train: Vec<usize>,
    /// Indices (into the training set) held out for selection.
    pub validation: Vec<usize>,
    /// What `results.json` records about it.
    pub record: SplitRecord,
}

/// The validation split as recorded in `results.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SplitRecord {
    /// Where it was carved from (always the training set).
    pub carved_from: String,
    /// Held-out share, in per mille of the training set.
    pub validation_per_mille: u32,
    /// Seed of the split (fixed per experiment, independent of the training seeds).
    pub seed: u64,
    /// Whether it is stratified by class.
    pub stratified: bool,
    /// Training examples after the split.
    pub train_examples: usize,
    /// Validation examples.
    pub validation_examples: usize,
    /// Examples of the test set, never used for selection.
    pub test_examples: usize,
    /// What selects: "validation loss" (the mean loss on the validation examples).
    pub selection: String,
}

impl SplitRecord {
    /// One sentence describing the split.
    pub fn describe(&self) -> String {
        format!(
            "selection on the {} of a validation split carved from the training set \
             ({} of {} training examples, {:.0}%, {}seed {}); the {} test examples are never \
             used for selection",
            self.selection,
            self.validation_examples,
            self.validation_examples + self.train_examples,
            f64::from(self.validation_per_mille) / 10.0,
            if self.stratified {
                "stratified by class, "
            } else {
                ""
            },
            self.seed,
            self.test_examples
        )
    }
}

/// Hold out `fraction` of the training set, stratified by `labels` (class indices below
/// [`crate::data::NUM_CLASSES`]) and seeded by `seed` (the same seed gives the same split).
/// `test_examples` is only recorded.
pub fn validation_split(
    labels: &[u8],
    fraction: f64,
    seed: u64,
    test_examples: usize,
) -> Result<ValidationSplit> {
    if !(fraction > 0.0 && fraction < 1.0) {
        return Err(LabError::config(format!(
            "the validation fraction must be in (0, 1), got {fraction}"
        )));
    }
    let (train, validation) = stratified_split(labels, fraction, seed ^ 0x7a11_da7e);
    if train.is_empty() || validation.is_empty() {
        return Err(LabError::config(format!(
            "a validation split of {fraction} of {} examples leaves one side empty",
            labels.len()
        )));
    }
    let record = SplitRecord {
        carved_from: "training set".into(),
        validation_per_mille: (fraction * 1000.0).round() as u32,
        seed,
        stratified: true,
        train_examples: train.len(),
        validation_examples: validation.len(),
        test_examples,
        selection: "validation loss".into(),
    };
    Ok(ValidationSplit {
        train,
        validation,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn the_statistic_matches_hand_computed_cases() {
        let seeds = [0, 1, 2];
        // d = [0.1, 0.2, 0.3]: mean 0.2, sd 0.1, se 0.1/√3 = 0.057735, 2 se = 0.11547 < 0.2.
        let v = Verdict::paired(
            ("A", &[1.0, 1.0, 1.0]),
            ("B", &[1.1, 1.2, 1.3]),
            "loss",
            &seeds,
            false,
        );
        assert!(close(v.mean.unwrap(), 0.2));
        assert!(close(v.standard_error.unwrap(), 0.1 / 3f64.sqrt()));
        assert!(close(v.threshold.unwrap(), 0.2 / 3f64.sqrt()));
        assert_eq!(v.agreeing_seeds, 3);
        assert_eq!(v.decision, Decision::ALower);
        assert_eq!(v.winner(), Some("A"));
        // Mirrored: B lower.
        let v = Verdict::paired(
            ("A", &[1.1, 1.2, 1.3]),
            ("B", &[1.0, 1.0, 1.0]),
            "loss",
            &seeds,
            false,
        );
        assert_eq!(v.decision, Decision::BLower);
        // d = [0.1, 0.2, 1.5]: all positive, mean 0.6, sd = sqrt(((-.5)^2 + (-.4)^2 + .9^2)/2)
        // = sqrt(0.61) = 0.78102, se = 0.45092, 2 se = 0.90185 > 0.6: inconclusive.
        let v = Verdict::paired(
            ("A", &[0.0, 0.0, 0.0]),
            ("B", &[0.1, 0.2, 1.5]),
            "loss",
            &seeds,
            false,
        );
        assert!(close(v.mean.unwrap(), 0.6));
        assert!(close(
            v.standard_error.unwrap(),
            (0.61f64).sqrt() / 3f64.sqrt()
        ));
        assert_eq!(v.decision, Decision::Inconclusive);
        assert!(v.reason.is_none());
        // Signs disagree: d = [1, 1, -0.01]: mean 0.66333 > 2 se? sd = 0.5832, se 0.3367, 2 se
        // 0.6734 > 0.6633 anyway, and one seed disagrees.
        let v = Verdict::paired(
            ("A", &[0.0, 0.0, 0.0]),
            ("B", &[1.0, 1.0, -0.01]),
            "loss",
            &seeds,
            false,
        );
        assert_eq!(v.agreeing_seeds, 2);
        assert_eq!(v.decision, Decision::Inconclusive);
        // A constant nonzero gap: se = 0, every seed agrees: decided.
        let v = Verdict::paired(
            ("A", &[1.0, 2.0, 3.0]),
            ("B", &[1.5, 2.5, 3.5]),
            "loss",
            &seeds,
            false,
        );
        assert_eq!(v.standard_error, Some(0.0));
        assert_eq!(v.decision, Decision::ALower);
        // Identical arms: no sign agrees.
        let v = Verdict::paired(
            ("A", &[1.0, 2.0, 3.0]),
            ("B", &[1.0, 2.0, 3.0]),
            "loss",
            &seeds,
            false,
        );
        assert_eq!(v.decision, Decision::Inconclusive);
    }

    #[test]
    fn an_edge_or_a_divergence_makes_the_verdict_inconclusive() {
        let seeds = [0, 1, 2];
        let v = Verdict::paired(
            ("A", &[1.0, 1.0, 1.0]),
            ("B", &[2.0, 2.0, 2.0]),
            "loss",
            &seeds,
            true,
        );
        assert_eq!(v.decision, Decision::Inconclusive);
        assert_eq!(v.reason.as_deref(), Some("an optimum is on a grid edge"));
        assert!(v.describe().contains("grid edge"));
        let v = Verdict::paired(
            ("A", &[1.0, f64::INFINITY, 1.0]),
            ("B", &[2.0, 2.0, 2.0]),
            "loss",
            &seeds,
            false,
        );
        assert_eq!(v.decision, Decision::Inconclusive);
        assert_eq!(v.mean, None);
        assert_eq!(v.differences[1], None);
    }

    #[test]
    fn the_description_states_statistic_threshold_and_seeds() {
        let v = Verdict::paired(
            ("with", &[1.0, 1.0, 1.0]),
            ("without", &[1.1, 1.2, 1.3]),
            "validation loss",
            &[4, 5, 6],
            false,
        );
        let text = v.describe();
        for part in [
            "with lower than without",
            "mean paired gap (without - with) 0.2000",
            "standard error 0.0577",
            "threshold 2 SE = 0.1155",
            "3 of 3 seeds agree",
            "seeds 4, 5, 6",
        ] {
            assert!(text.contains(part), "{part} not in {text}");
        }
    }

    /// A score with its minimum at exponent `k0` (a parabola in k), one seed slightly shifted.
    fn bowl(k0: f64) -> impl FnMut(f64, u64) -> Result<f64> {
        move |lr: f64, seed: u64| {
            let k = 2.0 * lr.log10();
            Ok((k - k0).powi(2) + 0.01 * seed as f64)
        }
    }

    #[test]
    fn an_interior_optimum_does_not_extend_the_grid() {
        let grid = LrGrid::new(-6, -2, 3).unwrap();
        let t = tune("x", "loss", grid, &[0, 1, 2], bowl(-4.0)).unwrap();
        assert_eq!(t.points.len(), 5);
        assert_eq!(t.extended, (0, 0));
        assert!(!t.on_edge);
        assert!(close(t.best_lr(), 1e-2));
        assert_eq!(t.best_scores(), vec![0.0, 0.01, 0.02]);
    }

    #[test]
    fn an_edge_optimum_extends_the_grid_until_it_is_interior() {
        let grid = LrGrid::new(-6, -2, 3).unwrap();
        // Minimum at k = -1: one step up gives k = -1 on the edge, a second gives -0 and -1 is
        // interior.
        let mut calls = 0;
        let mut inner = bowl(-1.0);
        let t = tune("x", "loss", grid, &[0, 1, 2], |lr, s| {
            calls += 1;
            inner(lr, s)
        })
        .unwrap();
        assert_eq!(t.extended, (0, 2));
        assert_eq!(t.points.len(), 7);
        assert_eq!(calls, 7 * 3, "each (point, seed) is trained once");
        assert!(!t.on_edge);
        assert_eq!(t.points[t.best].exponent, -1);
        // Downward too.
        let t = tune("x", "loss", grid, &[0, 1, 2], bowl(-8.0)).unwrap();
        assert_eq!(t.extended, (3, 0));
        assert_eq!(t.points[t.best].exponent, -8);
        assert!(!t.on_edge);
    }

    #[test]
    fn an_optimum_beyond_the_bound_is_on_the_edge() {
        let grid = LrGrid::new(-6, -2, 2).unwrap();
        let t = tune("x", "loss", grid, &[0, 1, 2], bowl(5.0)).unwrap();
        assert_eq!(t.extended, (0, 2));
        assert_eq!(t.points[t.best].exponent, 0);
        assert!(t.on_edge);
        assert!(t.describe().contains("inconclusive"));
        // A diverged point beyond the edge makes the last finite point interior.
        let t = tune("x", "loss", grid, &[0, 1, 2], |lr, _| {
            Ok(if lr > 0.2 { f64::NAN } else { -lr })
        })
        .unwrap();
        assert_eq!(t.extended, (0, 1));
        assert_eq!(t.points[t.best].exponent, -2);
        assert!(!t.on_edge);
        assert_eq!(t.points[t.points.len() - 1].mean, None);
        // Nothing finite: on the edge (no optimum).
        let t = tune("x", "loss", grid, &[0, 1, 2], |_, _| Ok(f64::INFINITY)).unwrap();
        assert!(t.on_edge);
    }

    #[test]
    fn the_protocol_refuses_small_grids_and_few_seeds() {
        assert!(LrGrid::new(-4, -1, 1).is_err());
        let grid = LrGrid::new(-6, -2, 0).unwrap();
        assert_eq!(grid.lrs().len(), 5);
        assert!(close(grid.lrs()[0], 1e-3));
        let err = tune("x", "loss", grid, &[0, 1], bowl(-4.0)).unwrap_err();
        assert!(err.to_string().contains("at least 3 seeds"), "{err}");
    }

    #[test]
    fn the_validation_split_is_disjoint_deterministic_and_stratified() {
        // 10 classes of 50, 30, ... examples.
        let labels: Vec<u8> = (0..10u8)
            .flat_map(|c| std::iter::repeat_n(c, 20 + 10 * usize::from(c)))
            .collect();
        let a = validation_split(&labels, 0.2, 7, 123).unwrap();
        let b = validation_split(&labels, 0.2, 7, 123).unwrap();
        assert_eq!(a, b, "same seed, same split");
        let c = validation_split(&labels, 0.2, 8, 123).unwrap();
        assert_ne!(a.validation, c.validation, "another seed, another split");
        let mut all: Vec<usize> = a.train.iter().chain(&a.validation).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..labels.len()).collect::<Vec<_>>(), "a partition");
        assert_eq!(
            a.validation.len(),
            (labels.len() as f64 * 0.2).round() as usize
        );
        for class in 0..10u8 {
            let n = labels.iter().filter(|&&l| l == class).count();
            let v = a.validation.iter().filter(|&&i| labels[i] == class).count();
            assert!(
                (v as f64 - 0.2 * n as f64).abs() <= 1.0,
                "class {class}: {v} of {n}"
            );
        }
        assert_eq!(a.record.validation_examples, a.validation.len());
        assert_eq!(a.record.test_examples, 123);
        assert!(a.record.describe().contains("never used for selection"));
        assert!(validation_split(&labels, 1.0, 7, 0).is_err());
        assert!(validation_split(&labels[..1], 0.2, 7, 0).is_err());
    }
}
