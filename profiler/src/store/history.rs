//! A short, bounded history of system-wide activity: per time slice, per syscall, what the
//! drains added (a histogram and failures by errno). It is what the dashboard's heatmap and
//! insights about change over time read; cumulative totals cannot say "in the last minute".
//!
//! Slices are at least `SLICE` long (several fast drains share one), and only the last `SLICES`
//! are kept. A slice keeps the syscalls the table names apart and every other number
//! (unallocated: ENOSYS) under one key (`SyscallKey::or_unnamed`): 33,000 unallocated numbers
//! called every second would otherwise take over a gigabyte in five minutes. Memory is so
//! bounded by SLICES × the named syscalls called × their non-empty buckets.

use std::{
    collections::{BTreeMap, VecDeque},
    time::{Duration, Instant, SystemTime},
};

use super::{
    histogram::{DeltaRef, Histogram},
    keys::SyscallKey,
};

pub const SLICE: Duration = Duration::from_secs(1);
pub const SLICES: usize = 300;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SliceEntry {
    pub hist: Histogram,
    pub errnos: BTreeMap<u32, u64>,
}

#[derive(Clone, Debug)]
pub struct Slice {
    pub start: (Instant, SystemTime),
    pub end: (Instant, SystemTime),
    pub syscalls: BTreeMap<SyscallKey, SliceEntry>,
}

#[derive(Debug, Default)]
pub struct History {
    /// Oldest first; the last one may still be open (its end moves with each drain).
    pub slices: VecDeque<Slice>,
    /// What the current drain added, until `close_drain` files it.
    pending: BTreeMap<SyscallKey, SliceEntry>,
}

impl History {
    pub fn add(&mut self, sc: SyscallKey, d: DeltaRef<'_>) {
        self.pending
            .entry(sc.or_unnamed())
            .or_default()
            .hist
            .add_ref(d);
    }

    pub fn add_errno(&mut self, sc: SyscallKey, errno: u32, n: u64) {
        *self
            .pending
            .entry(sc.or_unnamed())
            .or_default()
            .errnos
            .entry(errno)
            .or_default() += n;
    }

    /// Files the drain that covered `since`..`now` into the open slice, or a new one if the open
    /// slice is already `SLICE` long.
    pub fn close_drain(&mut self, since: (Instant, SystemTime), now: (Instant, SystemTime)) {
        let pending = std::mem::take(&mut self.pending);
        let open = self
            .slices
            .back()
            .is_some_and(|s| s.end.0.saturating_duration_since(s.start.0) < SLICE);
        if !open {
            self.slices.push_back(Slice {
                start: since,
                end: now,
                syscalls: BTreeMap::new(),
            });
            while self.slices.len() > SLICES {
                self.slices.pop_front();
            }
        }
        let slice = self.slices.back_mut().expect("a slice was just ensured");
        slice.end = now;
        for (sc, e) in pending {
            let into = slice.syscalls.entry(sc).or_default();
            into.hist.merge(&e.hist);
            for (errno, n) in e.errnos {
                *into.errnos.entry(errno).or_default() += n;
            }
        }
    }

    /// One syscall's calls over the slices that ended between `newest` (inclusive) and `oldest`
    /// (exclusive) before `now`. A number without a name has none of its own (see
    /// `SyscallKey::or_unnamed`).
    pub fn window(
        &self,
        sc: SyscallKey,
        now: Instant,
        newest: Duration,
        oldest: Duration,
    ) -> SliceEntry {
        let mut out = SliceEntry::default();
        for s in self.slices.iter().filter(|s| {
            let age = now.saturating_duration_since(s.end.0);
            newest <= age && age < oldest
        }) {
            if let Some(e) = s.syscalls.get(&sc) {
                out.hist.merge(&e.hist);
                for (&errno, &n) in &e.errnos {
                    *out.errnos.entry(errno).or_default() += n;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        store::histogram::Delta,
        syscalls::{self, Abi},
    };

    const READ: SyscallKey = SyscallKey {
        abi: Abi::Native,
        nr: 0,
    };

    fn d(n: u64) -> Delta {
        Delta {
            errors: 0,
            total_ns: n * 100,
            split: Default::default(),
            buckets: vec![(50, n)],
        }
    }

    fn at(t0: (Instant, SystemTime), ms: u64) -> (Instant, SystemTime) {
        let d = Duration::from_millis(ms);
        (t0.0 + d, t0.1 + d)
    }

    #[test]
    fn fast_drains_share_a_slice_and_old_slices_leave() {
        let t0 = (Instant::now(), SystemTime::now());
        let mut h = History::default();
        for i in 0..10 {
            h.add(READ, d(1).view());
            h.close_drain(at(t0, i * 100), at(t0, (i + 1) * 100));
        }
        assert_eq!(h.slices.len(), 1, "ten 100 ms drains fill one 1 s slice");
        assert_eq!(h.slices[0].syscalls[&READ].hist.count, 10);
        h.add(READ, d(5).view());
        h.add_errno(READ, 11, 2);
        h.close_drain(at(t0, 1000), at(t0, 1100));
        assert_eq!(h.slices.len(), 2);
        assert_eq!(h.slices[1].syscalls[&READ].errnos[&11], 2);
        for i in 0..(SLICES as u64 + 5) {
            h.close_drain(at(t0, 2000 + i * 1000), at(t0, 3000 + i * 1000));
        }
        assert_eq!(h.slices.len(), SLICES);
    }

    #[test]
    fn window_sums_recent_slices_only() {
        let t0 = (Instant::now(), SystemTime::now());
        let mut h = History::default();
        for (i, n) in [3u64, 4, 5].into_iter().enumerate() {
            h.add(READ, d(n).view());
            let i = i as u64;
            h.close_drain(at(t0, i * 1000), at(t0, (i + 1) * 1000));
        }
        let now = at(t0, 3000).0;
        let secs = Duration::from_secs;
        assert_eq!(h.window(READ, now, secs(0), secs(2)).hist.count, 9);
        assert_eq!(h.window(READ, now, secs(2), secs(4)).hist.count, 3);
        assert_eq!(h.window(READ, now, secs(0), secs(10)).hist.count, 12);
    }

    #[test]
    fn numbers_without_a_name_share_one_entry() {
        let t0 = (Instant::now(), SystemTime::now());
        let mut h = History::default();
        let nr = |nr| SyscallKey {
            abi: Abi::Native,
            nr,
        };
        for n in 1000..4000 {
            h.add(nr(n), d(1).view());
            h.add_errno(nr(n), 38, 1);
        }
        h.add(READ, d(2).view());
        h.close_drain(at(t0, 0), at(t0, 1000));
        let slice = &h.slices[0].syscalls;
        assert_eq!(slice.len(), 2, "{:?}", slice.keys());
        let unnamed = &slice[&nr(syscalls::UNNAMED)];
        assert_eq!((unnamed.hist.count, unnamed.errnos[&38]), (3000, 3000));
        assert_eq!(slice[&READ].hist.count, 2);
        let now = at(t0, 1000).0;
        let all = Duration::from_secs(10);
        assert_eq!(h.window(nr(1000), now, Duration::ZERO, all).hist.count, 0);
        assert_eq!(syscalls::name(Abi::Native, syscalls::UNNAMED), "unnamed");
    }
}
