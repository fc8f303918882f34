//! What a `/stats` answer shows, chosen before anything is rendered: the processes and syscalls
//! a query matches are ranked by plain numbers read from the store, and only the page it asks
//! for is rendered. The cost of an answer grows with what it shows (plus one pass over the
//! processes held, a few words each), not with the host's history: a store of 10,000 exited
//! processes used to be rendered whole — names, quantiles, buckets — to be cut afterwards.

use std::cmp::Reverse;

use super::query::{SortKey, StatsQuery};
use crate::store::{histogram::Histogram, ProcKey, Process, SyscallKey, SyscallTotals};

/// The syscalls a query matches: all, or the one or two (ABI, number) pairs its `syscall=`
/// names.
pub struct Matcher(Option<Vec<SyscallKey>>);

impl Matcher {
    pub fn of(q: &StatsQuery) -> Self {
        Self(q.syscall.as_ref().map(|f| f.keys()))
    }

    pub fn wants(&self, k: &SyscallKey) -> bool {
        self.0.as_ref().is_none_or(|keys| keys.contains(k))
    }
}

/// A process's totals over the syscalls a query matches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sums {
    pub count: u64,
    pub errors: u64,
    pub total_ns: u64,
    pub runq_ns: u64,
    pub blocked_ns: u64,
}

impl Sums {
    pub fn on_cpu_ns(&self) -> u64 {
        self.total_ns.saturating_sub(self.runq_ns + self.blocked_ns)
    }

    fn add(&mut self, h: &Histogram) {
        self.count += h.count;
        self.errors += h.errors;
        self.total_ns += h.total_ns;
        self.runq_ns += h.split.runq_ns;
        self.blocked_ns += h.split.blocked_ns;
    }

    /// Without a `syscall=` filter, the process's own running total (no walk over its
    /// syscalls); with one, the sum over the matching syscalls.
    pub fn of(p: &Process, m: &Matcher) -> Self {
        match &m.0 {
            None => Self {
                count: p.total.count,
                errors: p.total.errors,
                total_ns: p.total.total_ns,
                runq_ns: p.total.split.runq_ns,
                blocked_ns: p.total.split.blocked_ns,
            },
            Some(keys) => {
                let mut s = Self::default();
                for t in keys.iter().filter_map(|k| p.syscalls.get(k)) {
                    s.add(&t.hist);
                }
                s
            }
        }
    }
}

/// A syscall histogram's value under `key` (descending order ranks by it). Without latency
/// (counts-only mode) there is no p99: every one ranks 0.
pub fn syscall_rank(h: &Histogram, key: SortKey, latency: bool) -> u64 {
    match key {
        SortKey::Count => h.count,
        SortKey::Total => h.total_ns,
        SortKey::P99 => h.quantile_ns(0.99).filter(|_| latency).unwrap_or(0),
        SortKey::Errors => h.errors,
        SortKey::Cpu => h.on_cpu_ns(),
        SortKey::Blocked => h.split.blocked_ns,
    }
}

/// A process's value under `key`: the key summed over its matching syscalls, except p99, the
/// largest of theirs (the only key that reads the histograms).
fn process_rank(p: &Process, s: &Sums, m: &Matcher, key: SortKey, latency: bool) -> u64 {
    match key {
        SortKey::Count => s.count,
        SortKey::Total => s.total_ns,
        SortKey::Errors => s.errors,
        SortKey::Cpu => s.on_cpu_ns(),
        SortKey::Blocked => s.blocked_ns,
        SortKey::P99 => p
            .syscalls
            .iter()
            .filter(|(k, _)| m.wants(k))
            .map(|(_, t)| syscall_rank(&t.hist, key, latency))
            .max()
            .unwrap_or(0),
    }
}

/// A process that matches a query, with what it ranks by. Ordered by the rank descending, then
/// by (pid, incarnation): a total order, so pages of an unchanging store never overlap or skip.
pub struct Ranked<'a> {
    pub order: (Reverse<u64>, ProcKey),
    pub process: &'a Process,
    pub sums: Sums,
}

/// Every process the query's filters match, ranked, in no particular order; and how many of the
/// processes held have exited (counted in the same pass). A process is listed when it has a
/// matching syscall or a matching call in flight.
pub fn candidates<'a>(
    processes: impl Iterator<Item = &'a Process>,
    q: &StatsQuery,
    m: &Matcher,
    latency: bool,
) -> (Vec<Ranked<'a>>, usize) {
    let mut exited = 0;
    let mut out = Vec::new();
    for p in processes {
        exited += usize::from(p.exited.is_some());
        if q.pid.is_some_and(|pid| pid != p.key.pid)
            || q.comm.as_deref().is_some_and(|c| c != p.comm)
            || !q.exited.admits(p.exited.is_some())
        {
            continue;
        }
        let listed = match &m.0 {
            None => !p.syscalls.is_empty() || !p.in_flight.is_empty(),
            Some(keys) => {
                keys.iter().any(|k| p.syscalls.get(k).is_some())
                    || p.in_flight.iter().any(|f| m.wants(&f.syscall))
            }
        };
        if !listed {
            continue;
        }
        let sums = Sums::of(p, m);
        out.push(Ranked {
            order: (Reverse(process_rank(p, &sums, m, q.sort, latency)), p.key),
            process: p,
            sums,
        });
    }
    (out, exited)
}

/// The matching syscalls of `list`, ranked by `key`, cut to the first `n`; and how many matched.
pub fn top_syscalls<'a>(
    list: impl Iterator<Item = (&'a SyscallKey, &'a SyscallTotals)>,
    m: &Matcher,
    key: SortKey,
    latency: bool,
    n: usize,
) -> (Vec<(SyscallKey, &'a SyscallTotals)>, usize) {
    let mut ranked: Vec<((Reverse<u64>, SyscallKey), &SyscallTotals)> = list
        .filter(|(k, _)| m.wants(k))
        .map(|(&k, t)| ((Reverse(syscall_rank(&t.hist, key, latency)), k), t))
        .collect();
    let total = ranked.len();
    let shown = window(&mut ranked, 0, n, |r| r.0);
    (shown.iter().map(|&((_, k), t)| (k, t)).collect(), total)
}

/// The items `offset..offset + limit` of `items` in the order of `key`, sorted; the rest of
/// `items` is left in no particular order. Two selections and a sort of the window: linear in
/// `items`, and `limit log limit`, where sorting everything would be `items log items`.
pub fn window<T, K: Ord>(
    items: &mut [T],
    offset: usize,
    limit: usize,
    key: impl Fn(&T) -> K,
) -> &mut [T] {
    let n = items.len();
    let start = offset.min(n);
    let end = offset.saturating_add(limit).min(n);
    if start == end {
        return &mut [];
    }
    if end < n {
        items.select_nth_unstable_by_key(end, &key);
    }
    let head = &mut items[..end];
    if start > 0 {
        head.select_nth_unstable_by_key(start, &key);
    }
    let page = &mut head[start..];
    page.sort_unstable_by_key(key);
    page
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        store::{
            histogram::{Delta, TimeSplit},
            Store,
        },
        syscalls::Abi,
    };

    fn sc(nr: u32) -> SyscallKey {
        SyscallKey {
            abi: Abi::Native,
            nr,
        }
    }

    /// Process `pid` made `n` calls of `nr` taking `total` ns, `blocked` of them asleep.
    fn add(s: &mut Store, pid: u32, nr: u32, n: u64, total: u64, blocked: u64) {
        let key = ProcKey {
            pid,
            incarnation: 1,
        };
        s.add(
            key,
            sc(nr),
            &Delta {
                errors: 0,
                total_ns: total,
                split: TimeSplit {
                    runq_ns: 0,
                    blocked_ns: blocked,
                    blocked_calls: u64::from(blocked > 0),
                },
                buckets: vec![(100, n)],
            },
        );
    }

    fn ranked_pids(s: &Store, query: &str) -> (Vec<u32>, Vec<Sums>) {
        let q = StatsQuery::parse(Some(query)).unwrap();
        let m = Matcher::of(&q);
        let (mut all, _) = candidates(s.processes().values(), &q, &m, true);
        let page = window(&mut all, q.offset, q.limit, |r| r.order);
        (
            page.iter().map(|r| r.process.key.pid).collect(),
            page.iter().map(|r| r.sums).collect(),
        )
    }

    #[test]
    fn processes_rank_by_the_key_summed_over_the_matching_syscalls() {
        let mut s = Store::for_test(Duration::from_secs(60), 100);
        // pid 1: one long sleep; pid 2: much computing; pid 3: a few of both.
        add(&mut s, 1, 35, 1, 1_000_000, 990_000);
        add(&mut s, 2, 318, 10, 800_000, 0);
        add(&mut s, 3, 35, 1, 350_000, 340_000);
        add(&mut s, 3, 318, 50, 500_000, 0);
        assert_eq!(ranked_pids(&s, "").0, vec![1, 3, 2], "total");
        assert_eq!(ranked_pids(&s, "sort=cpu").0, vec![2, 3, 1]);
        assert_eq!(ranked_pids(&s, "sort=blocked").0, vec![1, 3, 2]);
        assert_eq!(ranked_pids(&s, "sort=count").0, vec![3, 2, 1]);
        assert_eq!(ranked_pids(&s, "sort=count&limit=1&offset=1").0, vec![2]);
        // Filtered: sums over getrandom (318) alone; pid 1 never made it.
        let (pids, sums) = ranked_pids(&s, "syscall=getrandom");
        assert_eq!(pids, vec![2, 3]);
        assert_eq!(
            (sums[0].count, sums[0].total_ns, sums[0].blocked_ns),
            (10, 800_000, 0)
        );
        let (_, sums) = ranked_pids(&s, "pid=3");
        assert_eq!(
            (sums[0].count, sums[0].total_ns, sums[0].on_cpu_ns()),
            (51, 850_000, 510_000)
        );
    }

    #[test]
    fn ties_go_to_the_lower_pid_so_pages_never_overlap() {
        let mut s = Store::for_test(Duration::from_secs(60), 1000);
        for pid in (1..=100).rev() {
            add(&mut s, pid, 39, 1, 1000, 0);
        }
        let mut walked = Vec::new();
        for offset in (0..100).step_by(7) {
            walked.extend(ranked_pids(&s, &format!("limit=7&offset={offset}")).0);
        }
        assert_eq!(walked, (1..=100).collect::<Vec<u32>>());
    }

    #[test]
    fn windows_are_the_sorted_list_cut() {
        let all: Vec<u32> = (0..200).map(|i| (i * 7919) % 211).collect();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        for (offset, limit) in [
            (0, 10),
            (5, 10),
            (0, 200),
            (0, 500),
            (190, 20),
            (200, 5),
            (300, 1),
        ] {
            let mut items = all.clone();
            let got = window(&mut items, offset, limit, |&x| x).to_vec();
            let want: Vec<u32> = sorted.iter().skip(offset).take(limit).copied().collect();
            assert_eq!(got, want, "offset {offset} limit {limit}");
        }
    }

    #[test]
    fn pages_cover_each_item_once() {
        let all: Vec<(u64, u32)> = (0..1000).map(|i| ((i % 13) as u64, i)).collect();
        let mut seen = Vec::new();
        let mut offset = 0;
        while offset < all.len() {
            let mut items = all.clone();
            seen.extend(
                window(&mut items, offset, 37, |&(k, id)| (Reverse(k), id))
                    .iter()
                    .map(|x| x.1),
            );
            offset += 37;
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..1000).collect::<Vec<u32>>());
    }
}
