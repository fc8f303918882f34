//! The store as the drain and the views share it: a read-write lock, and a version that every
//! write moves. Views that keep what they rendered (http/cache.rs) key it by the version, so
//! an answer rendered before a write is never mistaken for one rendered after it, whatever
//! the write changed: the version moves when the write lock is taken, not by each writer
//! remembering to say so.

use std::sync::{
    atomic::{AtomicU64, Ordering},
    RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use super::Store;

#[derive(Debug)]
pub struct SharedStore {
    store: RwLock<Store>,
    version: AtomicU64,
}

impl SharedStore {
    pub fn new(store: Store) -> Self {
        Self {
            store: RwLock::new(store),
            version: AtomicU64::new(0),
        }
    }

    /// The store to read. A writer that panicked left it as it was at that point: still the
    /// best answer there is, so a poisoned lock is read through.
    pub fn read(&self) -> RwLockReadGuard<'_, Store> {
        self.store.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The store to change; the version moves before the guard is handed out, while the lock
    /// is held, so a reader that saw the old version can only have read the old store.
    pub fn write(&self) -> RwLockWriteGuard<'_, Store> {
        let guard = self.store.write().unwrap_or_else(|e| e.into_inner());
        self.version.fetch_add(1, Ordering::AcqRel);
        guard
    }

    /// How many writes the store has had: equal versions, equal stores.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_write_moves_the_version_and_reads_do_not() {
        let shared = SharedStore::new(Store::for_test(Duration::from_secs(60), 10));
        let v0 = shared.version();
        drop(shared.read());
        assert_eq!(shared.version(), v0);
        drop(shared.write());
        assert_eq!(shared.version(), v0 + 1);
        shared.write().apply_reload(Duration::from_secs(5), 3);
        assert_eq!(shared.version(), v0 + 2);
    }
}
