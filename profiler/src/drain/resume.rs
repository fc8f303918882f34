//! A daemon started on pinned maps continues from the last committed checkpoint as if it had
//! never stopped: the store takes back its exported totals, the drain the readings they rest on
//! (so its first drain counts exactly what the kernel counted after the commit: while the last
//! daemon ran on, and since this one attached), and the deletes the checkpoint announced are
//! finished (their totals are already in). Processes still in the kernel show their whole
//! history: their per-process totals start from the checkpointed readings. Exited processes
//! already retired are in the totals, but their own /stats entries are gone.

use std::time::Instant;

use super::{
    checkpoint,
    commit::LoadError,
    keys::{proc_key, syscall_key},
    retire, Drain,
};
use crate::{
    kernel::{self, pin},
    store::{shared::SharedStore, FastSet, ProcKey},
};

/// What a daemon resumed from.
pub struct Resumed {
    /// Checkpoints committed to these maps before this one started.
    pub generation: u64,
    pub bytes: usize,
    /// Histogram slots whose readings it continues from.
    pub slots: usize,
    /// Processes whose deletes it finished.
    pub retired: usize,
}

impl Drain {
    /// With pinned maps holding a checkpoint, resumes from it (see the module's comment); None
    /// without one (new maps, or no pinning). A checkpoint that cannot be read is an error:
    /// counting from zero again would break the promise that counters continue.
    pub fn resume(&mut self, store: &SharedStore) -> Result<Option<Resumed>, kernel::Error> {
        let Some(cp) = &mut self.checkpoint else {
            return Ok(None);
        };
        let bytes = match cp.committer.load() {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(LoadError::Read(e)) => return Err(kernel::Error::ReadMap(CHECKPOINT, e)),
            Err(LoadError::Corrupt(why)) => return Err(pin::Error::Checkpoint { why }.into()),
        };
        let generation = cp
            .committer
            .generation()
            .map_err(|e| kernel::Error::ReadMap(CHECKPOINT, e))?;
        let c = checkpoint::decode(&bytes).map_err(|why| pin::Error::Checkpoint { why })?;
        let retiring: FastSet<ProcKey> = c.retiring.iter().copied().collect();

        // The readings, as if this daemon had made them: diffed against nothing, they are the
        // kernel's whole counts, which seed the per-process totals.
        self.deltas.clear();
        self.hists.begin();
        let mut next = 0;
        for (slot, head, buckets) in &c.readings {
            let read_buckets = |into: &mut Vec<_>| into.extend_from_slice(buckets);
            self.hists
                .read(&mut next, *slot, head, read_buckets, &mut self.deltas);
        }
        self.deltas.sort_and_merge_shards();
        for (key, n) in &c.errnos {
            let sc = syscall_key(key.hist.abi, key.hist.nr.into());
            let errno = (proc_key(&key.hist), sc, key.errno, u64::from(*n));
            self.deltas.unsorted_errnos.push(errno);
        }
        self.deltas.sort_errnos();
        self.hists.commit();
        let mut errnos = c.errnos;
        self.errnos.replace(&mut errnos);
        {
            let mut store = store.write();
            store.restore(c.exported, Instant::now());
            // Retiring processes' totals are in, and their entries about to go.
            store.seed(self.deltas.gains().filter(|g| !retiring.contains(&g.proc)));
        }

        // The previous daemon may have died before or while deleting these; what it deleted
        // is not found again.
        let slots = self.hists.previous_keys();
        let freed = retire::delete(&mut self.maps, &retiring, slots, &mut self.errnos);
        self.hists.forget(&freed);
        Ok(Some(Resumed {
            generation,
            bytes: bytes.len(),
            slots: c.readings.len(),
            retired: retiring.len(),
        }))
    }
}

const CHECKPOINT: &str = profiler_common::CHECKPOINT_MAP;
