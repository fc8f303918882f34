//! The histogram slots in the order the store takes their deltas (by process, then syscall, then
//! slot: a pair's shards side by side), kept from drain to drain. A slot's key changes only
//! when the kernel hands the slot out again, so a drain orders its deltas by placing each at
//! its slot's rank instead of sorting them: on a steady host nothing is sorted, and a new
//! series costs a sort of the new ones and a merge. (Sorting 10,000 deltas and their errnos
//! every drain was a tenth of the daemon's CPU at 10,000 live series.)

/// A delta's place in the store's order: (process, syscall) as two integers (deltas.rs).
pub(super) type Order = (u64, u64);

/// No rank: a slot never ranked, or an empty place.
pub(super) const NONE: u32 = u32::MAX;

#[derive(Default)]
pub(super) struct Ranking {
    /// (order, slot), ascending; an entry of a slot since handed out again stays until the
    /// slot is seen under its new key (it only takes a place no delta lands in).
    ranked: Vec<(Order, u32)>,
    /// Each slot's index in `ranked`, or NONE.
    rank_of: Vec<u32>,
    /// Scratch, kept from drain to drain.
    fresh: Vec<(Order, u32)>,
    merged: Vec<(Order, u32)>,
    /// By rank, the position of the item placed there, or NONE.
    places: Vec<u32>,
}

impl Ranking {
    /// `slot`'s rank, if it is ranked under `order`.
    pub(super) fn rank(&self, order: Order, slot: u32) -> Option<u32> {
        rank_in(&self.ranked, &self.rank_of, order, slot)
    }

    /// The positions of `items` in rank order (`key` gives an item's order and slot), new
    /// slots ranked first. False (`out` then unspecified) if two items claim one rank: a slot
    /// read twice in a drain, which should not be; the caller sorts instead. On a steady host
    /// each item's rank is looked up once.
    pub(super) fn order<T>(
        &mut self,
        items: &[T],
        key: impl Fn(&T) -> (Order, u32),
        out: &mut Vec<u32>,
    ) -> bool {
        out.clear();
        for learnt in [false, true] {
            self.places.clear();
            self.places.resize(self.ranked.len(), NONE);
            let mut unranked = false;
            for (at, item) in items.iter().enumerate() {
                let (order, slot) = key(item);
                match self.rank(order, slot) {
                    Some(r) if self.places[r as usize] == NONE => {
                        self.places[r as usize] = at as u32
                    }
                    None if !learnt => {
                        unranked = true;
                        break;
                    }
                    _ => return false,
                }
            }
            if !unranked {
                out.extend(self.places.iter().copied().filter(|&at| at != NONE));
                return true;
            }
            self.learn(items.iter().map(&key));
        }
        unreachable!("the second pass has every item ranked, or returned")
    }

    /// Ranks every (order, slot) of `seen` that is not ranked under that order yet; a slot
    /// ranked under another order leaves its old place.
    pub(super) fn learn(&mut self, seen: impl Iterator<Item = (Order, u32)>) {
        let (ranked, rank_of) = (&self.ranked, &self.rank_of);
        self.fresh.clear();
        self.fresh
            .extend(seen.filter(|&(order, slot)| rank_in(ranked, rank_of, order, slot).is_none()));
        if self.fresh.is_empty() {
            return;
        }
        // One place per slot (a slot is read once a drain, so under one key).
        self.fresh.sort_unstable_by_key(|&(_, slot)| slot);
        self.fresh.dedup_by_key(|&mut (_, slot)| slot);
        for &(_, slot) in &self.fresh {
            if let Some(old) = self
                .rank_of
                .get(slot as usize)
                .and_then(|&r| self.ranked.get_mut(r as usize))
            {
                old.1 = NONE;
            }
        }
        self.ranked.retain(|&(_, slot)| slot != NONE);
        self.fresh.sort_unstable();
        self.merged.clear();
        let (ranked, fresh) = (self.ranked.iter().copied(), self.fresh.iter().copied());
        self.merged.extend(merge_by_key(ranked, fresh, |&e| e));
        std::mem::swap(&mut self.ranked, &mut self.merged);
        let slots = self.ranked.iter().map(|&(_, s)| s as usize + 1).max();
        self.rank_of.clear();
        self.rank_of.resize(slots.unwrap_or(0), NONE);
        for (r, &(_, slot)) in self.ranked.iter().enumerate() {
            self.rank_of[slot as usize] = r as u32;
        }
    }
}

/// The items of `a` and `b`, each sorted by `key`, as one sorted sequence (`a`'s first where
/// keys tie).
fn merge_by_key<T, K: Ord>(
    a: impl Iterator<Item = T>,
    b: impl Iterator<Item = T>,
    key: impl Fn(&T) -> K,
) -> impl Iterator<Item = T> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if key(x) <= key(y) => a.next(),
        (_, Some(_)) => b.next(),
        _ => a.next(),
    })
}

/// `slot`'s index in `ranked` if it is there under `order`.
fn rank_in(ranked: &[(Order, u32)], rank_of: &[u32], order: Order, slot: u32) -> Option<u32> {
    let r = *rank_of.get(slot as usize)?;
    (ranked.get(r as usize) == Some(&(order, slot))).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranks(r: &Ranking, of: &[(Order, u32)]) -> Vec<Option<u32>> {
        of.iter().map(|&(o, s)| r.rank(o, s)).collect()
    }

    #[test]
    fn slots_rank_by_order_then_slot_and_move_when_handed_out_again() {
        let mut r = Ranking::default();
        let (a, b, c) = (((1, 5), 9), ((1, 5), 2), ((0, 7), 4));
        r.learn([a, b, c].into_iter());
        assert_eq!(ranks(&r, &[c, b, a]), [Some(0), Some(1), Some(2)]);
        // Learning what is known changes nothing.
        r.learn([a, c].into_iter());
        assert_eq!(ranks(&r, &[c, b, a]), [Some(0), Some(1), Some(2)]);
        // Slot 4 handed out again, to a later key; a new slot in between.
        let (c2, d) = (((2, 0), 4), ((1, 1), 30));
        r.learn([c2, d].into_iter());
        assert_eq!(r.rank(c.0, c.1), None, "its old key left its place");
        assert_eq!(
            ranks(&r, &[d, b, a, c2]),
            [Some(0), Some(1), Some(2), Some(3)]
        );
        assert_eq!(r.ranked.len(), 4);
        assert_eq!(r.rank((9, 9), 1000), None, "a slot never seen");
    }

    #[test]
    fn items_come_in_rank_order_new_slots_learnt_and_a_slot_twice_refused() {
        let mut r = Ranking::default();
        let items = [((1, 5), 9), ((0, 7), 4), ((1, 5), 2)];
        let mut out = Vec::new();
        assert!(r.order(&items, |&i| i, &mut out));
        assert_eq!(out, [1, 2, 0], "by order, then slot");
        // Known slots, some idle this time, and a new one between them.
        let items = [((1, 5), 9), ((0, 9), 30), ((0, 7), 4)];
        assert!(r.order(&items, |&i| i, &mut out));
        assert_eq!(out, [2, 1, 0]);
        let twice = [((1, 5), 9), ((1, 5), 9)];
        assert!(!r.order(&twice, |&i| i, &mut out), "one slot read twice");
    }
}
