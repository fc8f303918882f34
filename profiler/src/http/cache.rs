//! Rendered answers, kept until the store changes. The store changes only when the drain
//! commits (once per interval), so every request for one answer between two drains gets the
//! same bytes: rendering them once per drain instead of once per request is what lets fifty
//! dashboards cost what one does. Each entry is an answer's key (views/answer_key.rs: the
//! endpoint, its parsed query, the negotiated format) and the store's version it was rendered
//! at; a request reads the version first and takes only an entry of that version, so an answer
//! from before a drain's commit is never served after it.
//!
//! Single flight: the first request for a (key, version) renders; those that come while it
//! renders wait for its answer rather than rendering it again (and take no render slot). If
//! the renderer goes away (its client closed, its deadline passed), a waiter renders instead.
//!
//! Bounded: at most [`MAX_ENTRIES`] entries, their answers at most `max_bytes` together (the
//! daemon gives `max_response_bytes`: the cache holds at most one more largest answer's worth);
//! the least recently used go first. Only answers that went well (200) are kept.

use std::sync::{Arc, Mutex};

use axum::{
    body::Bytes,
    http::{HeaderMap, StatusCode},
};
use tokio::sync::OnceCell;

/// Entries kept: the endpoints' queries in use at once (a dashboard's panels, `top`'s, a
/// scraper's format) are a handful.
pub const MAX_ENTRIES: usize = 16;

/// A rendered answer, whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One render, and every request that waits for it.
pub type Flight = OnceCell<Arc<Answer>>;

/// What [`AnswerCache::lookup`] found.
pub enum Lookup {
    /// Rendered at the version asked for.
    Hit(Arc<Answer>),
    /// Being rendered, or to be rendered by whoever initialises the flight first.
    Join(Arc<Flight>),
}

pub struct AnswerCache<K, V> {
    max_bytes: usize,
    state: Mutex<State<K, V>>,
}

struct State<K, V> {
    entries: Vec<Entry<K, V>>,
    /// Bumped at every lookup: an entry's `used` orders the evictions.
    clock: u64,
}

struct Entry<K, V> {
    key: K,
    version: V,
    flight: Arc<Flight>,
    /// The answer's size once kept; 0 while it renders.
    bytes: usize,
    used: u64,
}

impl<K: Clone + PartialEq, V: Copy + PartialEq> AnswerCache<K, V> {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            state: Mutex::new(State {
                entries: Vec::with_capacity(MAX_ENTRIES),
                clock: 0,
            }),
        }
    }

    /// The answer to `key` at `version`, or the flight that renders it. An entry of `key` at
    /// another version is replaced: the store has moved on (its waiters keep their flight).
    pub fn lookup(&self, key: &K, version: V) -> Lookup {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.clock += 1;
        let used = state.clock;
        let fresh = || Entry {
            key: key.clone(),
            version,
            flight: Arc::new(Flight::new()),
            bytes: 0,
            used,
        };
        let entries = &mut state.entries;
        let entry = match entries.iter().position(|e| e.key == *key) {
            Some(i) if entries[i].version == version => {
                let e = &mut entries[i];
                e.used = used;
                if let Some(answer) = e.flight.get() {
                    return Lookup::Hit(answer.clone());
                }
                e
            }
            Some(i) => {
                entries[i] = fresh();
                &entries[i]
            }
            None => {
                if entries.len() >= MAX_ENTRIES {
                    let oldest = least_recently_used(entries, |_| true);
                    entries.swap_remove(oldest);
                }
                entries.push(fresh());
                entries.last().expect("just pushed")
            }
        };
        Lookup::Join(entry.flight.clone())
    }

    /// Keeps `answer`, rendered for `flight`, if it is a 200 and `flight` is still its key's
    /// entry; makes room by evicting the least recently used answers. Otherwise forgets the
    /// entry, so that the next request renders anew.
    pub fn settle(&self, key: &K, flight: &Arc<Flight>, answer: &Answer) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let entries = &mut state.entries;
        let Some(mut i) = entries
            .iter()
            .position(|e| e.key == *key && Arc::ptr_eq(&e.flight, flight))
        else {
            return;
        };
        let size = answer.body.len();
        if answer.status != StatusCode::OK || size > self.max_bytes {
            entries.swap_remove(i);
            return;
        }
        entries[i].bytes = size;
        while entries.iter().map(|e| e.bytes).sum::<usize>() > self.max_bytes {
            let kept = entries[i].flight.clone();
            // Only kept answers free bytes: one still rendering stays.
            let oldest =
                least_recently_used(entries, |e| e.bytes > 0 && !Arc::ptr_eq(&e.flight, &kept));
            entries.swap_remove(oldest);
            // swap_remove moved the last entry into `oldest`: find ours again.
            i = entries
                .iter()
                .position(|e| Arc::ptr_eq(&e.flight, &kept))
                .expect("never evicted");
        }
    }

    /// Entries and the bytes of their answers.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        let state = self.state.lock().unwrap();
        let bytes = state.entries.iter().map(|e| e.bytes).sum();
        (state.entries.len(), bytes)
    }
}

/// The index of the entry used longest ago among those `evictable` admits.
fn least_recently_used<K, V>(
    entries: &[Entry<K, V>],
    evictable: impl Fn(&Entry<K, V>) -> bool,
) -> usize {
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| evictable(e))
        .min_by_key(|(_, e)| e.used)
        .map(|(i, _)| i)
        .expect("over a bound, there is another entry to evict")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: StatusCode, body: &'static str) -> Arc<Answer> {
        Arc::new(Answer {
            status,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
        })
    }

    /// Looks `key` up at `version`; renders `body` if nobody has. Returns the body and whether
    /// it was rendered here.
    async fn get(
        cache: &AnswerCache<&'static str, u64>,
        key: &'static str,
        version: u64,
        body: &'static str,
    ) -> (Bytes, bool) {
        let flight = match cache.lookup(&key, version) {
            Lookup::Hit(a) => return (a.body.clone(), false),
            Lookup::Join(f) => f,
        };
        let mut rendered = false;
        let (here, mine) = (&mut rendered, &flight);
        let a = flight
            .get_or_init(|| async move {
                *here = true;
                let a = answer(StatusCode::OK, body);
                cache.settle(&key, mine, &a);
                a
            })
            .await;
        (a.body.clone(), rendered)
    }

    #[tokio::test]
    async fn an_answer_is_kept_for_its_version_only() {
        let cache = AnswerCache::new(1 << 20);
        assert_eq!(get(&cache, "/a", 1, "one").await, ("one".into(), true));
        assert_eq!(get(&cache, "/a", 1, "other").await, ("one".into(), false));
        assert_eq!(
            get(&cache, "/a", 2, "two").await,
            ("two".into(), true),
            "a new version renders anew"
        );
        assert_eq!(get(&cache, "/b", 2, "bee").await, ("bee".into(), true));
        assert_eq!(get(&cache, "/a", 2, "x").await, ("two".into(), false));
        assert_eq!(cache.held(), (2, 6), "the version-1 answer is gone");
    }

    #[tokio::test]
    async fn waiters_share_one_render() {
        let cache = AnswerCache::<&str, u64>::new(1 << 20);
        let Lookup::Join(first) = cache.lookup(&"/a", 1) else {
            panic!("nothing was rendered yet");
        };
        let Lookup::Join(second) = cache.lookup(&"/a", 1) else {
            panic!("still rendering");
        };
        assert!(
            Arc::ptr_eq(&first, &second),
            "the second joins the first's flight"
        );
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let renders = std::sync::atomic::AtomicUsize::new(0);
        let render = |flight: Arc<Flight>| {
            let (cache, renders) = (&cache, &renders);
            async move {
                flight
                    .get_or_init(|| async {
                        renders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let a = answer(StatusCode::OK, "one");
                        cache.settle(&"/a", &flight, &a);
                        a
                    })
                    .await
                    .clone()
            }
        };
        let leader = async {
            let a = first
                .get_or_init(|| async {
                    renders.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = released.await;
                    let a = answer(StatusCode::OK, "one");
                    cache.settle(&"/a", &first, &a);
                    a
                })
                .await;
            a.clone()
        };
        let (a, b, ()) = tokio::join!(leader, render(second), async {
            tokio::task::yield_now().await;
            release.send(()).unwrap();
        });
        assert_eq!(
            (a.body.clone(), b.body.clone()),
            ("one".into(), "one".into())
        );
        assert_eq!(renders.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(matches!(cache.lookup(&"/a", 1), Lookup::Hit(_)));
    }

    #[test]
    fn failures_are_not_kept() {
        let cache = AnswerCache::<&str, u64>::new(1 << 20);
        let Lookup::Join(f) = cache.lookup(&"/a", 1) else {
            panic!()
        };
        cache.settle(&"/a", &f, &answer(StatusCode::BAD_REQUEST, "too large"));
        assert_eq!(cache.held(), (0, 0));
        assert!(matches!(cache.lookup(&"/a", 1), Lookup::Join(g) if !Arc::ptr_eq(&f, &g)));
    }

    #[test]
    fn a_render_overtaken_by_a_newer_version_is_not_kept() {
        let cache = AnswerCache::<&str, u64>::new(1 << 20);
        let Lookup::Join(old) = cache.lookup(&"/a", 1) else {
            panic!()
        };
        let Lookup::Join(new) = cache.lookup(&"/a", 2) else {
            panic!()
        };
        cache.settle(&"/a", &old, &answer(StatusCode::OK, "old"));
        assert_eq!(
            cache.held(),
            (1, 0),
            "only version 2's entry, still rendering"
        );
        cache.settle(&"/a", &new, &answer(StatusCode::OK, "new"));
        assert_eq!(cache.held(), (1, 3));
    }

    #[tokio::test]
    async fn bytes_and_entries_are_bounded_least_recently_used_first() {
        let cache = AnswerCache::new(10);
        get(&cache, "/a", 1, "aaaa").await;
        get(&cache, "/b", 1, "bbbb").await;
        get(&cache, "/a", 1, "").await; // /a is now the more recently used
        get(&cache, "/c", 1, "cccc").await;
        assert_eq!(cache.held(), (2, 8), "/b evicted to fit /c");
        assert_eq!(get(&cache, "/a", 1, "").await, ("aaaa".into(), false));
        assert_eq!(get(&cache, "/b", 1, "BBBB").await, ("BBBB".into(), true));
        assert!(get(&cache, "/big", 1, "0123456789A").await.1);
        assert_eq!(cache.held().1, 8, "larger than the bound: served, not kept");

        let cache = AnswerCache::new(10);
        let Lookup::Join(rendering) = cache.lookup(&"/r", 1) else {
            panic!()
        };
        get(&cache, "/a", 1, "aaaa").await;
        get(&cache, "/b", 1, "bbbbbbbb").await;
        assert_eq!(
            cache.held(),
            (2, 8),
            "/a evicted for bytes, not /r, which holds none yet"
        );
        cache.settle(&"/r", &rendering, &answer(StatusCode::OK, "rr"));
        assert_eq!(cache.held(), (2, 10));

        let cache = AnswerCache::new(1 << 20);
        const KEYS: [&str; MAX_ENTRIES + 2] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16", "17",
        ];
        for k in KEYS {
            get(&cache, k, 1, "x").await;
        }
        assert_eq!(cache.held(), (MAX_ENTRIES, MAX_ENTRIES));
        assert!(get(&cache, "0", 1, "y").await.1, "the oldest went first");
        assert!(!get(&cache, "17", 1, "y").await.1);
    }
}
