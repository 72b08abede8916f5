//! [`Partition`]: several optimizers over disjoint sets of parameters behind one
//! [`Optimizer`] (optax's `multi_transform`), e.g. Muon on the 2-D weights and AdamW on the rest.

use crate::engine::{Mode, NonFinitePolicy};
use crate::error::{Error, Result};
use crate::optimizer::Optimizer;
use crate::param::{Param, ParamSpec};
use crate::schedule::{LrDriver, Schedule};
use crate::state::RecordDoc;
use crate::storage::{Precision, StateBytes};

/// Named optimizers over disjoint parameter sets, stepped as one.
///
/// Every parameter belongs to exactly one part; [`Optimizer::step`] hands each part its own
/// parameters (in the order given). Groups are numbered part by part: the groups of the first
/// part, then those of the second, and so on. The learning-rate schedule and multiplier go to
/// every part (each part's driver keeps its own base learning rates; [`Optimizer::lr_driver`]
/// is the first part's). Companion records are kept by the first part. One checkpoint holds
/// every part (see [`Partition::to_bytes`]) and restores them bit for bit.
///
/// # Examples
/// ```
/// use downhill::{AdamWConfig, MuonConfig, Optimizer, Param, ParamSpec, Partition};
///
/// let muon = MuonConfig::default().build([ParamSpec::shaped("w", [2, 3])])?;
/// let adamw = AdamWConfig::default().build([("b", 3)])?;
/// let mut opt = Partition::new(vec![
///     ("muon".into(), Box::new(muon) as Box<dyn Optimizer>),
///     ("adamw".into(), Box::new(adamw)),
/// ])?;
/// let (mut w, mut b) = (vec![0.5f32; 6], vec![0.0f32; 3]);
/// opt.step(&mut [
///     Param::new("b", &mut b, &[1.0, -1.0, 0.0]),
///     Param::new("w", &mut w, &[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
/// ])?;
/// assert_eq!(opt.part_of("w"), Some(0));
/// assert_eq!(opt.num_groups(), 2);
/// assert!(b[0] < 0.0 && w[0] < 0.5);
/// # Ok::<(), downhill::Error>(())
/// ```
pub struct Partition {
    parts: Vec<(String, Box<dyn Optimizer>)>,
}

/// The magic of a partition's checkpoint: `DHPART1\n`, then the parts (see
/// [`Partition::to_bytes`]).
const MAGIC: &[u8; 8] = b"DHPART1\n";

impl Partition {
    /// The parts, with their names (unique, not empty). The parts' parameter names must be
    /// disjoint; the error names a parameter found in two parts.
    pub fn new(parts: Vec<(String, Box<dyn Optimizer>)>) -> Result<Self> {
        if parts.is_empty() {
            return Err(Error::config(
                "parts",
                "a partition needs at least one part",
            ));
        }
        let mut seen = std::collections::HashMap::new();
        for (k, (name, opt)) in parts.iter().enumerate() {
            if name.is_empty() || parts[..k].iter().any(|(n, _)| n == name) {
                return Err(Error::config(
                    "parts",
                    format!("part names must be unique and not empty, got {name:?}"),
                ));
            }
            for spec in opt.param_specs() {
                if let Some(other) = seen.insert(spec.name.clone(), name.clone()) {
                    return Err(Error::param(
                        &spec.name,
                        format!(
                            "parameter '{}' is in two parts, '{other}' and '{name}'",
                            spec.name
                        ),
                    ));
                }
            }
        }
        Ok(Partition { parts })
    }

    /// The parts, in order.
    pub fn parts(&self) -> impl Iterator<Item = (&str, &dyn Optimizer)> {
        self.parts.iter().map(|(n, o)| (n.as_str(), o.as_ref()))
    }

    /// The index of the part a parameter belongs to.
    pub fn part_of(&self, name: &str) -> Option<usize> {
        self.parts
            .iter()
            .position(|(_, o)| o.group_of(name).is_some())
    }

    /// `(part, group within the part)` of a partition-wide group index.
    fn locate(&self, group: usize) -> Option<(usize, usize)> {
        let mut g = group;
        for (k, (_, o)) in self.parts.iter().enumerate() {
            if g < o.num_groups() {
                return Some((k, g));
            }
            g -= o.num_groups();
        }
        None
    }

    fn locate_or_panic(&self, group: usize) -> (usize, usize) {
        self.locate(group)
            .unwrap_or_else(|| panic!("group {group} out of range ({} groups)", self.num_groups()))
    }

    /// The first group index of part `k`.
    fn group0(&self, k: usize) -> usize {
        self.parts[..k].iter().map(|(_, o)| o.num_groups()).sum()
    }

    /// Reads the parts' checkpoints from a partition's bytes, checking the part names.
    fn split_bytes<'b>(&self, bytes: &'b [u8]) -> Result<Vec<&'b [u8]>> {
        fn bad(why: &str) -> Error {
            Error::checkpoint(format!("not a partition checkpoint: {why}"))
        }
        fn take<'b>(rest: &mut &'b [u8], n: usize) -> Result<&'b [u8]> {
            if rest.len() < n {
                return Err(bad("truncated"));
            }
            let (a, b) = rest.split_at(n);
            *rest = b;
            Ok(a)
        }
        fn word(rest: &mut &[u8]) -> Result<usize> {
            let b = take(rest, 8)?;
            Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
        }
        let mut rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| bad("no DHPART1 header"))?;
        let count = word(&mut rest)?;
        if count != self.parts.len() {
            return Err(bad(&format!(
                "{count} parts, this partition has {}",
                self.parts.len()
            )));
        }
        let mut out = Vec::with_capacity(count);
        for (name, _) in &self.parts {
            let n = word(&mut rest)?;
            let got = take(&mut rest, n)?;
            if got != name.as_bytes() {
                return Err(bad(&format!(
                    "part {:?} where {name:?} was expected",
                    String::from_utf8_lossy(got)
                )));
            }
            let n = word(&mut rest)?;
            out.push(take(&mut rest, n)?);
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(out)
    }
}

impl Optimizer for Partition {
    fn name(&self) -> &'static str {
        "partition"
    }

    fn step(&mut self, params: &mut [Param<'_>]) -> Result<()> {
        // Check everything first, so that a bad call modifies nothing: every name belongs to a
        // part; then each part checks its own parameters before any part steps.
        let mut owner = Vec::with_capacity(params.len());
        for p in params.iter() {
            let k = self
                .part_of(p.name)
                .ok_or_else(|| Error::param(p.name, format!("unknown parameter '{}'", p.name)))?;
            owner.push(k);
        }
        let mut split: Vec<Vec<Param<'_>>> = (0..self.parts.len()).map(|_| Vec::new()).collect();
        for (p, &k) in params.iter_mut().zip(&owner) {
            let g = p.grad;
            split[k].push(p.with_grad(g));
        }
        for (k, ps) in split.iter_mut().enumerate() {
            // A part that fails leaves the parts before it stepped: check the rest first by
            // stepping only when every part has accepted its parameters' names and lengths.
            let specs = self.parts[k].1.param_specs();
            for p in ps.iter() {
                let spec = specs.iter().find(|s| s.name == p.name).expect("owned");
                if p.value.len() != spec.len()
                    || p.grad.as_ref().is_some_and(|g| g.len() != spec.len())
                {
                    return Err(Error::shape(
                        p.name,
                        format!(
                            "parameter '{}' has {} elements, registered with {}",
                            p.name,
                            p.value.len(),
                            spec.len()
                        ),
                    ));
                }
            }
        }
        for (k, ps) in split.iter_mut().enumerate() {
            self.parts[k].1.step(ps)?;
        }
        Ok(())
    }

    fn num_groups(&self) -> usize {
        self.parts.iter().map(|(_, o)| o.num_groups()).sum()
    }

    fn lr(&self, group: usize) -> f64 {
        let (k, g) = self.locate_or_panic(group);
        self.parts[k].1.lr(g)
    }

    fn set_lr(&mut self, group: usize, lr: f64) -> Result<()> {
        let (k, g) = self
            .locate(group)
            .ok_or_else(|| Error::config("group", format!("group {group} out of range")))?;
        self.parts[k].1.set_lr(g, lr)
    }

    fn set_schedule(&mut self, schedule: Option<Schedule>) -> Result<()> {
        for (_, o) in &mut self.parts {
            o.set_schedule(schedule.clone())?;
        }
        Ok(())
    }

    fn set_lr_multiplier(&mut self, multiplier: f64) -> Result<()> {
        for (_, o) in &mut self.parts {
            o.set_lr_multiplier(multiplier)?;
        }
        Ok(())
    }

    fn lr_driver(&self) -> &LrDriver {
        self.parts[0].1.lr_driver()
    }

    fn group_of(&self, name: &str) -> Option<usize> {
        let k = self.part_of(name)?;
        Some(self.group0(k) + self.parts[k].1.group_of(name)?)
    }

    fn param_specs(&self) -> Vec<ParamSpec> {
        self.parts
            .iter()
            .flat_map(|(_, o)| o.param_specs())
            .collect()
    }

    fn group_config_json(&self, group: usize) -> serde_json::Value {
        let (k, g) = self.locate_or_panic(group);
        let mut v = self.parts[k].1.group_config_json(g);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("part".into(), self.parts[k].0.clone().into());
            obj.insert("optimizer".into(), self.parts[k].1.name().into());
        }
        v
    }

    fn step_count(&self, name: &str) -> Option<u64> {
        self.parts[self.part_of(name)?].1.step_count(name)
    }

    fn state_buffer(&self, name: &str, buffer: &str) -> Option<&[f32]> {
        self.parts[self.part_of(name)?].1.state_buffer(name, buffer)
    }

    fn precision(&self, group: usize) -> Precision {
        let (k, g) = self.locate_or_panic(group);
        self.parts[k].1.precision(g)
    }

    /// Sets the precision of one part's group: the part decides (Muon refuses lossy state
    /// with an error naming itself and `state_dtype`; AdamW takes it).
    fn set_precision(&mut self, group: usize, precision: Precision) -> Result<()> {
        let (k, g) = self.locate(group).ok_or_else(|| {
            Error::config(
                "group",
                format!("group {group} out of range ({} groups)", self.num_groups()),
            )
        })?;
        self.parts[k].1.set_precision(g, precision)
    }

    fn set_rounding_seed(&mut self, seed: u64) {
        for (_, o) in &mut self.parts {
            o.set_rounding_seed(seed);
        }
    }

    fn state_bytes(&self) -> StateBytes {
        self.parts
            .iter()
            .fold(StateBytes::default(), |acc, (_, o)| {
                let b = o.state_bytes();
                StateBytes {
                    state: acc.state + b.state,
                    master: acc.master + b.master,
                    params: acc.params + b.params,
                }
            })
    }

    fn state_values(&self, name: &str, buffer: &str) -> Option<Vec<f32>> {
        self.parts[self.part_of(name)?].1.state_values(name, buffer)
    }

    fn state_codes(&self, name: &str, buffer: &str) -> Option<(&[u8], &[f32])> {
        self.parts[self.part_of(name)?].1.state_codes(name, buffer)
    }

    fn set_state_codes(
        &mut self,
        name: &str,
        buffer: &str,
        codes: &[u8],
        absmax: &[f32],
    ) -> Result<()> {
        let k = self.part_of(name).ok_or_else(|| {
            Error::param(name, format!("partition: no part has parameter '{name}'"))
        })?;
        self.parts[k].1.set_state_codes(name, buffer, codes, absmax)
    }

    fn set_nonfinite_policy(&mut self, policy: NonFinitePolicy) {
        for (_, o) in &mut self.parts {
            o.set_nonfinite_policy(policy);
        }
    }

    fn skipped_steps(&self) -> u64 {
        self.parts
            .iter()
            .map(|(_, o)| o.skipped_steps())
            .max()
            .unwrap_or(0)
    }

    fn traffic(&self, len: usize) -> (usize, usize) {
        self.parts[0].1.traffic(len)
    }

    fn set_mode(&mut self, mode: Mode) {
        for (_, o) in &mut self.parts {
            o.set_mode(mode);
        }
    }

    fn set_chunk_elems(&mut self, elems: Option<usize>) {
        for (_, o) in &mut self.parts {
            o.set_chunk_elems(elems);
        }
    }

    fn record_doc(&self, key: &str) -> Option<&RecordDoc> {
        self.parts[0].1.record_doc(key)
    }

    fn set_record_doc(&mut self, key: &str, doc: RecordDoc) {
        self.parts[0].1.set_record_doc(key, doc)
    }

    /// `DHPART1\n`, the number of parts (u64, little-endian), then per part its name and its
    /// own checkpoint (safetensors), each preceded by its length (u64, little-endian).
    fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.parts.len() as u64).to_le_bytes());
        for (name, o) in &self.parts {
            let bytes = o.to_bytes()?;
            out.extend_from_slice(&(name.len() as u64).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            out.extend_from_slice(&bytes);
        }
        Ok(out)
    }

    /// Restores every part; on error nothing is changed (each part is loaded into a copy of
    /// its state first: the parts are restored from their old bytes if a later one fails).
    fn load_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let blobs = self.split_bytes(bytes)?;
        let backup: Vec<Vec<u8>> = self
            .parts
            .iter()
            .map(|(_, o)| o.to_bytes())
            .collect::<Result<_>>()?;
        for (k, blob) in blobs.iter().enumerate() {
            if let Err(e) = self.parts[k].1.load_bytes(blob) {
                for (j, old) in backup.iter().enumerate().take(k) {
                    self.parts[j].1.load_bytes(old)?;
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AdamWConfig, MuonConfig};

    fn partition() -> Partition {
        let muon = MuonConfig::default()
            .lr(0.02)
            .build([
                ParamSpec::shaped("w1", [4, 6]),
                ParamSpec::shaped("w2", [6, 3]),
            ])
            .unwrap();
        let adamw = AdamWConfig::default()
            .build([("b1", 4), ("b2", 3)])
            .unwrap();
        Partition::new(vec![
            ("muon".into(), Box::new(muon)),
            ("adamw".into(), Box::new(adamw)),
        ])
        .unwrap()
    }

    fn run(opt: &mut Partition, ps: &mut [Vec<f32>], from: u64, to: u64) {
        let names = ["w1", "w2", "b1", "b2"];
        for k in from..to {
            let grads: Vec<Vec<f32>> = ps
                .iter()
                .enumerate()
                .map(|(i, p)| crate::testkit::values(k * 13 + i as u64, p.len()))
                .collect();
            let mut params: Vec<Param> = ps
                .iter_mut()
                .zip(&grads)
                .zip(names)
                .map(|((p, g), n)| Param::new(n, p, g))
                .collect();
            opt.step(&mut params).unwrap();
        }
    }

    fn start() -> Vec<Vec<f32>> {
        [24, 18, 4, 3]
            .iter()
            .map(|&n| crate::testkit::values(n as u64, n))
            .collect()
    }

    #[test]
    fn precision_goes_to_the_part_of_the_group_and_survives_a_checkpoint() {
        use crate::storage::StateDtype;
        let mut opt = partition();
        // Group 0 is Muon's: it keeps f32 state and says so, naming itself and the option.
        let err = opt
            .set_precision(0, Precision::state(StateDtype::BF16))
            .unwrap_err();
        assert!(err.to_string().contains("muon"), "{err}");
        assert!(err.to_string().contains("state_dtype"), "{err}");
        assert_eq!(opt.precision(0), Precision::default());
        // Group 1 is AdamW's: bf16 state, kept through the partition's checkpoint.
        opt.set_precision(1, Precision::state(StateDtype::BF16))
            .unwrap();
        assert!(opt.set_precision(2, Precision::default()).is_err());
        let mut ps = start();
        run(&mut opt, &mut ps, 1, 3);
        let bytes = opt.to_bytes().unwrap();
        let mut back = partition();
        back.load_bytes(&bytes).unwrap();
        assert_eq!(back.precision(1).state, StateDtype::BF16);
        assert_eq!(back.state_bytes(), opt.state_bytes());
        let mut qs = ps.clone();
        run(&mut opt, &mut ps, 3, 5);
        run(&mut back, &mut qs, 3, 5);
        assert_eq!(ps, qs);
    }

    #[test]
    fn parts_step_their_own_parameters_like_the_optimizers_alone() {
        let mut opt = partition();
        let mut ps = start();
        run(&mut opt, &mut ps, 1, 4);
        // AdamW alone on the biases gives the same bits.
        let mut alone = AdamWConfig::default()
            .build([("b1", 4), ("b2", 3)])
            .unwrap();
        let mut bs = [start()[2].clone(), start()[3].clone()];
        for k in 1..4u64 {
            let g: Vec<Vec<f32>> = [(2, 4), (3, 3)]
                .iter()
                .map(|&(i, n)| crate::testkit::values(k * 13 + i, n))
                .collect();
            let (b1, b2) = bs.split_at_mut(1);
            alone
                .step(&mut [
                    Param::new("b1", &mut b1[0], &g[0]),
                    Param::new("b2", &mut b2[0], &g[1]),
                ])
                .unwrap();
        }
        assert_eq!(ps[2], bs[0]);
        assert_eq!(ps[3], bs[1]);
        assert_eq!(opt.num_groups(), 2);
        assert_eq!(opt.group_of("b2"), Some(1));
        assert_eq!(opt.step_count("w2"), Some(3));
        assert!(opt.state_buffer("w1", "momentum_buffer").is_some());
        assert!(opt.state_buffer("b1", "exp_avg").is_some());
        assert_eq!(opt.group_config_json(1)["part"], "adamw");
    }

    #[test]
    fn one_checkpoint_resumes_bit_identically() {
        let mut a = partition();
        let mut pa = start();
        run(&mut a, &mut pa, 1, 4);
        let bytes = a.to_bytes().unwrap();
        let mut b = partition();
        b.load_bytes(&bytes).unwrap();
        let mut pb = pa.clone();
        run(&mut a, &mut pa, 4, 8);
        run(&mut b, &mut pb, 4, 8);
        let bits = |v: &Vec<Vec<f32>>| -> Vec<Vec<u32>> {
            v.iter().map(|p| crate::testkit::bits(p)).collect()
        };
        assert_eq!(bits(&pa), bits(&pb));
        assert_eq!(a.to_bytes().unwrap(), b.to_bytes().unwrap());
        // A damaged checkpoint is an error and changes nothing.
        let before = b.to_bytes().unwrap();
        assert!(b.load_bytes(&bytes[..bytes.len() - 3]).is_err());
        assert!(b.load_bytes(b"nonsense").is_err());
        assert_eq!(b.to_bytes().unwrap(), before);
    }

    #[test]
    fn overlapping_or_unknown_parameters_are_errors() {
        let one = || -> Box<dyn Optimizer> {
            Box::new(AdamWConfig::default().build([("b", 2)]).unwrap())
        };
        let err = Partition::new(vec![("x".into(), one()), ("y".into(), one())])
            .err()
            .unwrap();
        assert!(err.to_string().contains("'b'"), "{err}");
        assert!(Partition::new(vec![
            ("x".into(), one()),
            (
                "x".into(),
                Box::new(AdamWConfig::default().build([("c", 2)]).unwrap())
            )
        ])
        .is_err());
        let mut opt = partition();
        let mut v = vec![0.0f32; 2];
        let err = opt
            .step(&mut [Param::new("nope", &mut v, &[1.0, 1.0])])
            .unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        let mut w = vec![0.0f32; 5];
        assert!(opt
            .step(&mut [Param::new("w1", &mut w, &[1.0; 5])])
            .is_err());
        assert_eq!(
            opt.step_count("w1").unwrap_or(0),
            0,
            "a refused step changes nothing"
        );
    }
}
