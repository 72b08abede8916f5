//! Checkpoints of a [`Sharded`] optimizer: each rank's shard, the consolidated state, and
//! re-sharding a consolidated state for another world size.
//!
//! - A **shard** is the rank's own optimizer (its pieces, registered 1-D when a tensor is
//!   split) in the ordinary checkpoint format, with a `downhill_shard` record giving the
//!   world size, the rank, the stage, the partition and the pieces. It loads back only on
//!   the same rank of the same layout.
//! - The **consolidated** state is the unsharded optimizer's checkpoint, byte for byte the
//!   format [`Optimizer::to_bytes`](crate::Optimizer::to_bytes) of the unsharded optimizer writes: rank 0 gathers every
//!   shard, loads each into a copy of that rank's optimizer, joins the pieces of every tensor
//!   and writes the result. It loads into the unsharded optimizer, or into a [`Sharded`] one of
//!   any world size, partition and stage, which takes its pieces of every tensor.
//!
//! Consolidating holds the whole state on rank 0 (twice, briefly); loading a consolidated
//! state holds it on every rank while the pieces are cut out.

use std::path::Path;

use super::collective::Collective;
use super::shard::{ParamState, Shard};
use super::sharded::{ShardRecord, Sharded, ZeroStage};
use crate::error::{Error, Result};
use crate::param::ParamSpec;
use crate::state::{Record, RecordDoc};

/// The file name of rank `rank`'s shard in a checkpoint folder of a `world`-rank run.
pub fn shard_file_name(rank: usize, world: usize) -> String {
    format!("optimizer.rank{rank}-of-{world}.safetensors")
}

impl Sharded {
    /// The parameters of the unsharded optimizer, per group.
    fn full_groups(&self) -> Vec<Vec<ParamSpec>> {
        let mut out = vec![Vec::new(); self.num_groups_planned()];
        for p in &self.plan().params {
            out[p.group].push(p.spec.clone());
        }
        out
    }

    /// The whole state, in the unsharded optimizer's checkpoint format, on rank 0 (`None` on
    /// the other ranks). A collective: every rank must call it.
    pub fn consolidated_bytes(&self) -> Result<Option<Vec<u8>>> {
        let plan = self.plan();
        let mut full = (self.builder())(self.full_groups())?;
        if self.config().stage == ZeroStage::Replicated {
            if self.rank() != 0 {
                return Ok(None);
            }
            for p in &plan.params {
                full.import_param(&p.spec.name, self.shard().export_param(&p.spec.name)?)?;
            }
            restore_without_layout(full.as_mut(), self.shard())?;
            return full.to_bytes().map(Some);
        }
        let c: &dyn Collective = self.comm().as_ref();
        let Some(shards) = c.gather_bytes(self.shard().to_bytes()?, 0)? else {
            return Ok(None);
        };
        let mut pieces: Vec<Vec<(usize, ParamState)>> = vec![Vec::new(); plan.params.len()];
        let mut rank0: Option<Box<dyn Shard>> = None;
        for (j, bytes) in shards.iter().enumerate() {
            let mut staging = (self.builder())(plan.shard_groups(j, self.num_groups_planned()))?;
            staging.load_bytes(bytes).map_err(|e| {
                Error::checkpoint(format!(
                    "the shard of rank {j} does not load: {}",
                    e.message()
                ))
            })?;
            for p in &plan.pieces[j] {
                let name = &plan.params[p.param].spec.name;
                pieces[p.param].push((p.offset, staging.export_param(name)?));
            }
            if j == 0 {
                rank0 = Some(staging);
            }
        }
        for (k, mut ps) in pieces.into_iter().enumerate() {
            ps.sort_by_key(|(offset, _)| *offset);
            let states: Vec<ParamState> = ps.into_iter().map(|(_, s)| s).collect();
            full.import_param(&plan.params[k].spec.name, ParamState::concat(&states))?;
        }
        let rank0 = rank0.ok_or_else(|| Error::checkpoint("no shard was gathered"))?;
        restore_without_layout(full.as_mut(), rank0.as_ref())?;
        full.to_bytes().map(Some)
    }
}

/// [`Optimizer::save`](crate::Optimizer::save) of a [`Sharded`] optimizer (a collective).
pub(crate) fn save(s: &Sharded, path: &Path) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let name = shard_file_name(s.rank(), s.plan().world);
    let shard = match dir {
        Some(d) => d.join(name),
        None => Path::new(&name).to_path_buf(),
    };
    let written = crate::checkpoint::write_atomic(&shard, &s.shard().to_bytes()?);
    let consolidated = s.consolidated_bytes()?;
    let written = written.and_then(|()| match consolidated {
        Some(bytes) => crate::checkpoint::write_atomic(path, &bytes),
        None => Ok(()),
    });
    // Every rank learns whether every file was written.
    let c: &dyn Collective = s.comm().as_ref();
    let failed = c.all_gather(&[u8::from(written.is_err())])?;
    written?;
    if let Some(r) = failed.iter().position(|&f| f != 0) {
        return Err(Error::checkpoint(format!(
            "rank {r} could not write its part of the checkpoint {}",
            path.display()
        )));
    }
    Ok(())
}

/// Gives `full` the progress of `from` without its shard record.
fn restore_without_layout(full: &mut dyn Shard, from: &dyn Shard) -> Result<()> {
    let mut progress = from.progress();
    progress.records.remove(ShardRecord::KEY);
    full.restore_progress(progress)
}

/// [`Optimizer::load_bytes`] of a [`Sharded`] optimizer: a consolidated state (re-sharded), or
/// this rank's own shard.
pub(crate) fn load(s: &mut Sharded, bytes: &[u8]) -> Result<()> {
    let mut full = (s.builder())(s.full_groups())?;
    let full_err = match full.load_bytes(bytes) {
        Ok(()) => return reshard(s, full.as_ref()),
        Err(e) => e,
    };
    let mut inner = (s.builder())(s.local_groups())?;
    if let Err(shard_err) = inner.load_bytes(bytes) {
        return Err(Error::checkpoint(format!(
            "neither a consolidated optimizer state ({}) nor the shard of rank {} ({})",
            full_err.message(),
            s.rank(),
            shard_err.message()
        )));
    }
    let want = s.shard_record();
    let got: Option<ShardRecord> = inner
        .record_doc(ShardRecord::KEY)
        .map(RecordDoc::decode)
        .transpose()?;
    match got {
        Some(got) if got == want => {}
        Some(got) => {
            return Err(Error::checkpoint(format!(
                "the shard is rank {} of {} ({:?}, {}), this optimizer is rank {} of {} ({:?}, \
                 {}): load the consolidated state to change the layout",
                got.rank,
                got.world,
                got.stage,
                got.partition.as_str(),
                want.rank,
                want.world,
                want.stage,
                want.partition.as_str()
            )))
        }
        None => return Err(Error::checkpoint("the shard has no layout record")),
    }
    let (mode, chunk) = s.settings();
    inner.set_mode(mode);
    inner.set_chunk_elems(chunk);
    *s.shard_mut() = inner;
    Ok(())
}

/// Takes this rank's pieces of every tensor from the unsharded optimizer `full`.
fn reshard(s: &mut Sharded, full: &dyn Shard) -> Result<()> {
    let mut inner = s.fresh_shard()?;
    let plan = s.plan();
    let replicated = s.config().stage == ZeroStage::Replicated;
    if replicated {
        for p in &plan.params {
            inner.import_param(&p.spec.name, full.export_param(&p.spec.name)?)?;
        }
    } else {
        for p in &plan.pieces[s.rank()] {
            let spec = &plan.params[p.param].spec;
            let state = full.export_param(&spec.name)?;
            let state = if p.len == spec.len() {
                state
            } else {
                state.slice(p.offset, p.len)
            };
            inner.import_param(&spec.name, state)?;
        }
    }
    let mut progress = full.progress();
    progress.records.insert(
        ShardRecord::KEY.to_string(),
        RecordDoc::encode(&s.shard_record())?,
    );
    inner.restore_progress(progress)?;
    *s.shard_mut() = inner;
    Ok(())
}
