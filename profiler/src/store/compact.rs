//! A map kept as a sorted vector with no spare room: what the store holds per process (its
//! syscalls, and per syscall its failures by errno). A B-tree node is allocated for 11 entries
//! whatever it holds, and a process's 20 syscalls with one errno each took 9.9 KiB that way
//! (see memory.rs); lookups are a binary search over a few dozen entries at most. The API is
//! the part of `BTreeMap`'s the store and its readers use.
//!
//! `INLINE` entries are kept in the map itself, no allocation, until it holds more: a syscall's
//! failures by errno are nearly always one errno, and as its own allocation that one entry was
//! a cache miss for each failing series in every drain. One 16-byte entry fits where the
//! vector's pointer and length were, so it costs no room.

use std::{fmt, marker::PhantomData, ops::Index};

use smallvec::SmallVec;

use serde::{
    de::{MapAccess, Visitor},
    Deserialize, Deserializer, Serialize, Serializer,
};

/// Entries `SortedMap::entry_from` reads on from its cursor before it binary searches the rest.
const WALK_AHEAD: usize = 4;

#[derive(Clone, PartialEq, Eq)]
pub struct SortedMap<K, V, const INLINE: usize = 0>(SmallVec<[(K, V); INLINE]>);

impl<K, V, const INLINE: usize> Default for SortedMap<K, V, INLINE> {
    fn default() -> Self {
        SortedMap(SmallVec::new())
    }
}

impl<K: fmt::Debug, V: fmt::Debug, const INLINE: usize> fmt::Debug for SortedMap<K, V, INLINE> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| (k, v)))
            .finish()
    }
}

type Pairs<'a, K, V> = std::iter::Map<std::slice::Iter<'a, (K, V)>, fn(&(K, V)) -> (&K, &V)>;

fn pair<K, V>((k, v): &(K, V)) -> (&K, &V) {
    (k, v)
}

impl<K: Ord + Copy, V, const INLINE: usize> SortedMap<K, V, INLINE> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn find(&self, k: &K) -> Result<usize, usize> {
        self.0.binary_search_by(|(key, _)| key.cmp(k))
    }

    pub fn get(&self, k: &K) -> Option<&V> {
        self.find(k).ok().map(|at| &self.0[at].1)
    }

    /// `k`'s value, inserted as the default if absent.
    pub fn entry(&mut self, k: K) -> Entry<'_, K, V, INLINE> {
        Entry {
            at: self.find(&k),
            map: &mut self.0,
            key: k,
        }
    }

    /// `k`'s value, inserted as the default if absent, for a caller visiting keys in ascending
    /// order: every key before `*cursor` is below `k`. The next key is then usually at the
    /// cursor, so a walk over many keys reads the entries front to back instead of binary
    /// searching each (whose scattered reads miss the cache one after another). Moves the
    /// cursor past `k`.
    pub fn entry_from(&mut self, cursor: &mut usize, k: K) -> Entry<'_, K, V, INLINE> {
        let from = (*cursor).min(self.0.len());
        // The entries are sorted: the one before the cursor is the largest of them. (Checking
        // them all made a debug build's walk quadratic: 40 s for a process of 33,000 series,
        // past what tests/tests/kernel_log.rs waits on a slow machine.)
        debug_assert!(from == 0 || self.0[from - 1].0 < k);
        // A walk skips the keys that gained nothing (a process's start-up calls, between the
        // ones it keeps making): the few entries after the cursor are read on, the next lines
        // of memory, before a binary search's scattered reads.
        let ahead = &self.0[from..];
        let near = ahead.iter().take(WALK_AHEAD).position(|(key, _)| *key >= k);
        let at = match near {
            Some(i) if ahead[i].0 == k => Ok(from + i),
            Some(i) => Err(from + i),
            None if ahead.len() <= WALK_AHEAD => Err(self.0.len()),
            None => match ahead[WALK_AHEAD..].binary_search_by(|(key, _)| key.cmp(&k)) {
                Ok(i) => Ok(from + WALK_AHEAD + i),
                Err(i) => Err(from + WALK_AHEAD + i),
            },
        };
        *cursor = at.unwrap_or_else(|i| i) + 1;
        Entry {
            at,
            map: &mut self.0,
            key: k,
        }
    }

    /// Asks the CPU to start loading the first entries, about to be read (see
    /// host/prefetch.rs). Nothing to load when the map is empty.
    pub fn prefetch(&self) {
        if !self.0.is_empty() {
            crate::host::prefetch::prefetch(self.0.as_ptr());
        }
    }

    /// Asks the CPU to start loading the entry at position `at` (by key), if there is one:
    /// every line it spans. Its address needs no read, unlike those of its value's own
    /// allocations.
    pub fn prefetch_entry(&self, at: usize) {
        if at < self.0.len() {
            crate::host::prefetch::prefetch_lines(self.0.as_ptr().wrapping_add(at), 1);
        }
    }

    /// The value at position `at` (by key), if there is one.
    pub fn value_at(&self, at: usize) -> Option<&V> {
        self.0.get(at).map(|(_, v)| v)
    }

    /// By key.
    pub fn iter(&self) -> Pairs<'_, K, V> {
        self.0.iter().map(pair as fn(&(K, V)) -> (&K, &V))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &K> + ExactSizeIterator {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &V> + ExactSizeIterator {
        self.0.iter().map(|(_, v)| v)
    }
}

pub struct Entry<'a, K, V, const INLINE: usize> {
    map: &'a mut SmallVec<[(K, V); INLINE]>,
    at: Result<usize, usize>,
    key: K,
}

impl<'a, K, V: Default, const INLINE: usize> Entry<'a, K, V, INLINE> {
    pub fn or_default(self) -> &'a mut V {
        let at = match self.at {
            Ok(at) => at,
            Err(at) => {
                // Exactly the room needed: the point of this map.
                self.map.reserve_exact(1);
                self.map.insert(at, (self.key, V::default()));
                at
            }
        };
        &mut self.map[at].1
    }
}

impl<K: Ord + Copy, V, const INLINE: usize> Index<&K> for SortedMap<K, V, INLINE> {
    type Output = V;

    fn index(&self, k: &K) -> &V {
        self.get(k).expect("no entry for the key")
    }
}

impl<'a, K: Ord + Copy, V, const INLINE: usize> IntoIterator for &'a SortedMap<K, V, INLINE> {
    type Item = (&'a K, &'a V);
    type IntoIter = Pairs<'a, K, V>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K, V, const INLINE: usize> IntoIterator for SortedMap<K, V, INLINE> {
    type Item = (K, V);
    type IntoIter = smallvec::IntoIter<[(K, V); INLINE]>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<K: Ord + Copy, V, const INLINE: usize> FromIterator<(K, V)> for SortedMap<K, V, INLINE> {
    /// The last value of a key given twice wins.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut pairs: Vec<(K, V)> = iter.into_iter().collect();
        pairs.reverse();
        pairs.sort_by_key(|p| p.0);
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        let mut pairs = SmallVec::from_vec(pairs);
        pairs.shrink_to_fit();
        SortedMap(pairs)
    }
}

impl<K: Serialize + Ord + Copy, V: Serialize, const INLINE: usize> Serialize
    for SortedMap<K, V, INLINE>
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de, K, V, const INLINE: usize> Deserialize<'de> for SortedMap<K, V, INLINE>
where
    K: Deserialize<'de> + Ord + Copy,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Pairs<K, V, const INLINE: usize>(PhantomData<(K, V)>);

        impl<'de, K, V, const INLINE: usize> Visitor<'de> for Pairs<K, V, INLINE>
        where
            K: Deserialize<'de> + Ord + Copy,
            V: Deserialize<'de>,
        {
            type Value = SortedMap<K, V, INLINE>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(m.size_hint().unwrap_or(0).min(4096));
                while let Some(pair) = m.next_entry()? {
                    pairs.push(pair);
                }
                Ok(pairs.into_iter().collect())
            }
        }

        d.deserialize_map(Pairs(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_a_map_by_key() {
        let mut m: SortedMap<u32, u64> = SortedMap::default();
        for (k, n) in [(13, 1), (2, 4), (13, 2), (7, 1)] {
            *m.entry(k).or_default() += n;
        }
        assert_eq!(
            m.iter().collect::<Vec<_>>(),
            vec![(&2, &4), (&7, &1), (&13, &3)]
        );
        assert_eq!((m.len(), m[&13], m.get(&5)), (3, 3, None));
        assert_eq!(m.0.capacity(), 3, "no spare room");
        let back: SortedMap<u32, u64> =
            postcard::from_bytes(&postcard::to_allocvec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
        let from: SortedMap<u32, u64> = [(9, 1), (1, 2), (9, 5)].into_iter().collect();
        assert_eq!(from.into_iter().collect::<Vec<_>>(), vec![(1, 2), (9, 5)]);
    }

    #[test]
    fn an_inline_entry_takes_no_room_and_no_allocation() {
        assert_eq!(
            size_of::<SortedMap<u32, u64, 1>>(),
            size_of::<Vec<(u32, u64)>>()
        );
        let mut m: SortedMap<u32, u64, 1> = SortedMap::default();
        *m.entry(2).or_default() += 1;
        *m.entry(2).or_default() += 1;
        assert!(!m.0.spilled(), "one errno, in place");
        *m.entry(13).or_default() += 1;
        assert!(m.0.spilled());
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(&2, &2), (&13, &1)]);
        let back: SortedMap<u32, u64, 1> =
            postcard::from_bytes(&postcard::to_allocvec(&m).unwrap()).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn a_walk_from_a_cursor_finds_and_inserts_like_entry() {
        let few = vec![3u32, 5, 8, 13, 21];
        // Long enough that a jump is a binary search of many entries.
        let many: Vec<u32> = (0..40).map(|i| 3 * i + 1).collect();
        for (keys, walk) in [
            (&few, vec![1, 3, 4, 5, 8, 9, 13, 21, 30]),
            (&few, vec![21]),
            (&few, vec![0, 30]),
            (&few, vec![5, 6, 7, 13]),
            (&few, vec![]),
            (&many, vec![0, 22, 24, 25, 26, 100, 117, 118, 200]),
            (&many, vec![1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31, 118]),
            (&many, vec![116]),
            (&many, vec![50, 51]),
            // Skips within the few entries read on, found and missing.
            (&many, vec![4, 13, 15, 19, 26, 27, 113, 119, 120]),
        ] {
            let mut by_entry: SortedMap<u32, u64> = keys.iter().map(|&k| (k, 1)).collect();
            let mut by_cursor = by_entry.clone();
            let mut cursor = 0;
            for &k in &walk {
                *by_entry.entry(k).or_default() += 10;
                *by_cursor.entry_from(&mut cursor, k).or_default() += 10;
                assert_eq!(by_cursor.0[cursor - 1].0, k, "the cursor is just past {k}");
            }
            assert_eq!(by_cursor, by_entry, "walk {walk:?}");
        }
    }
}
