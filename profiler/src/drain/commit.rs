//! Committing a checkpoint so that a daemon killed at any instant leaves a whole one behind: the
//! bytes go to the inactive half of CHECKPOINT (its chunks in one batch update), and only then
//! does one update of META's record make that half the committed one. A single bpf(MAP_UPDATE_ELEM) completes or
//! does not happen (a signal cannot land inside it), so a reader finds the previous checkpoint
//! or the new one, whole (its length and CRC-32 are in the record), never a mix.

use aya::{maps::MapError, sys::SyscallError};
use profiler_common::{Meta, CHECKPOINT_CHUNK, CHECKPOINT_CHUNKS_PER_HALF};

use crate::kernel::CheckpointMaps;

/// Where a checkpoint's chunks and META's record live: the pinned maps, or a test's fake. The
/// chunks of a half are always written from its first, so those a half holds are contiguous.
pub(super) trait Chunks {
    fn meta(&self) -> Result<Meta, MapError>;
    fn set_meta(&mut self, meta: Meta) -> Result<(), MapError>;
    /// Writes chunks `keys` from `bytes` (`CHECKPOINT_CHUNK` each, in order); on error, some
    /// of them may be written.
    fn put(&mut self, keys: &[u32], bytes: &[u8]) -> Result<(), MapError>;
    /// Appends chunk `key` to `into`; false when there is none.
    fn read(&self, key: u32, into: &mut Vec<u8>) -> Result<bool, MapError>;
    /// Deletes chunk `key`; false when there was none.
    fn delete(&mut self, key: u32) -> Result<bool, MapError>;
}

fn key(half: u32, chunk: u32) -> u32 {
    half << 16 | chunk
}

#[derive(Debug, thiserror::Error)]
pub(super) enum CommitError {
    #[error("the checkpoint takes {bytes} bytes, more than the {max} a half of CHECKPOINT holds")]
    TooLarge { bytes: usize, max: usize },
    #[error("writing the checkpoint")]
    Write(#[source] MapError),
    #[error("encoding the checkpoint")]
    Encode(#[source] postcard::Error),
}

/// Commits checkpoints to `chunks` and reads the committed one back.
pub(super) struct Committer<C> {
    chunks: C,
    /// META's record as last read or written.
    meta: Option<Meta>,
    /// The keys of a half's chunks, kept from commit to commit.
    keys: Vec<u32>,
}

impl<C: Chunks> Committer<C> {
    pub fn new(chunks: C) -> Self {
        Self {
            chunks,
            meta: None,
            keys: Vec::new(),
        }
    }

    fn meta(&mut self) -> Result<Meta, MapError> {
        match self.meta {
            Some(m) => Ok(m),
            None => {
                let m = self.chunks.meta()?;
                self.meta = Some(m);
                Ok(m)
            }
        }
    }

    /// How many checkpoints have been committed to these maps, ever.
    pub fn generation(&mut self) -> Result<u64, MapError> {
        Ok(self.meta()?.generation)
    }

    /// The committed checkpoint's bytes; None when there is none yet. Err(why) when the maps
    /// hold something that is not one.
    pub fn load(&mut self) -> Result<Option<Vec<u8>>, LoadError> {
        let meta = self.meta().map_err(LoadError::Read)?;
        if meta.generation == 0 {
            return Ok(None);
        }
        let chunks = meta.len.div_ceil(CHECKPOINT_CHUNK as u64);
        if chunks > u64::from(CHECKPOINT_CHUNKS_PER_HALF) || meta.half > 1 {
            return Err(LoadError::Corrupt(format!("META names {meta:?}")));
        }
        let mut bytes = Vec::with_capacity(chunks as usize * CHECKPOINT_CHUNK);
        for chunk in 0..chunks as u32 {
            if !self
                .chunks
                .read(key(meta.half, chunk), &mut bytes)
                .map_err(LoadError::Read)?
            {
                return Err(LoadError::Corrupt(format!("chunk {chunk} is missing")));
            }
        }
        bytes.truncate(meta.len as usize);
        if crc32fast::hash(&bytes) != meta.checksum {
            return Err(LoadError::Corrupt("its checksum does not match".into()));
        }
        Ok(Some(bytes))
    }

    /// Commits `bytes` (padded with zeros to whole chunks on return): writes them to the half
    /// META does not name, then names it (`before_flip` runs in between). On error the committed
    /// checkpoint is the previous one, intact.
    pub fn commit(
        &mut self,
        bytes: &mut Vec<u8>,
        before_flip: impl FnOnce(),
    ) -> Result<(), CommitError> {
        let max = CHECKPOINT_CHUNKS_PER_HALF as usize * CHECKPOINT_CHUNK;
        if bytes.len() > max {
            return Err(CommitError::TooLarge {
                bytes: bytes.len(),
                max,
            });
        }
        let meta = self.meta().map_err(CommitError::Write)?;
        let half = meta.half ^ 1;
        let len = bytes.len();
        let checksum = crc32fast::hash(bytes);
        let chunks = len.div_ceil(CHECKPOINT_CHUNK) as u32;
        bytes.resize(chunks as usize * CHECKPOINT_CHUNK, 0);
        self.keys.clear();
        self.keys.extend((0..chunks).map(|chunk| key(half, chunk)));
        self.chunks
            .put(&self.keys, bytes)
            .map_err(CommitError::Write)?;
        before_flip();
        let committed = Meta {
            generation: meta.generation + 1,
            len: len as u64,
            half,
            checksum,
            ..meta
        };
        self.chunks
            .set_meta(committed)
            .map_err(CommitError::Write)?;
        self.meta = Some(committed);
        // Committed. What is left of a longer checkpoint in this half is garbage now (should a
        // delete fail, the next commit to this half tries again).
        for chunk in chunks..CHECKPOINT_CHUNKS_PER_HALF {
            if !matches!(self.chunks.delete(key(half, chunk)), Ok(true)) {
                break;
            }
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum LoadError {
    #[error("reading the checkpoint")]
    Read(#[source] MapError),
    #[error("{0}")]
    Corrupt(String),
}

impl Chunks for CheckpointMaps {
    fn meta(&self) -> Result<Meta, MapError> {
        self.meta.get(&0, 0)
    }

    fn set_meta(&mut self, meta: Meta) -> Result<(), MapError> {
        self.meta.set(0, meta, 0)
    }

    fn put(&mut self, keys: &[u32], bytes: &[u8]) -> Result<(), MapError> {
        self.put_chunks(keys, bytes).map_err(|io_error| {
            MapError::SyscallError(SyscallError {
                call: "bpf_map_update_batch",
                io_error,
            })
        })
    }

    fn read(&self, key: u32, into: &mut Vec<u8>) -> Result<bool, MapError> {
        match self.chunks.get(&key, 0) {
            Ok(chunk) => {
                into.extend_from_slice(&chunk);
                Ok(true)
            }
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn delete(&mut self, key: u32) -> Result<bool, MapError> {
        match self.chunks.remove(&key) {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap as StdMap;

    use super::*;

    /// Chunks in memory that fail every write from the `fail_from`th on (counting from 0), as a
    /// daemon killed there would leave them (or a map that refuses writes for a while).
    #[derive(Default)]
    struct Fake {
        meta: Meta,
        chunks: StdMap<u32, Box<[u8; CHECKPOINT_CHUNK]>>,
        writes: usize,
        fail_from: Option<usize>,
    }

    impl Fake {
        fn write(&mut self) -> Result<(), MapError> {
            self.writes += 1;
            match self.fail_from {
                Some(n) if self.writes > n => Err(MapError::KeyNotFound),
                _ => Ok(()),
            }
        }
    }

    impl Chunks for &mut Fake {
        fn meta(&self) -> Result<Meta, MapError> {
            Ok(self.meta)
        }
        fn set_meta(&mut self, meta: Meta) -> Result<(), MapError> {
            self.write()?;
            self.meta = meta;
            Ok(())
        }
        fn put(&mut self, keys: &[u32], bytes: &[u8]) -> Result<(), MapError> {
            // Chunk by chunk, as the kernel's batch update does: cut short, it leaves the first.
            for (&key, chunk) in keys.iter().zip(bytes.chunks_exact(CHECKPOINT_CHUNK)) {
                self.write()?;
                self.chunks.insert(key, Box::new(chunk.try_into().unwrap()));
            }
            Ok(())
        }
        fn read(&self, key: u32, into: &mut Vec<u8>) -> Result<bool, MapError> {
            Ok(self
                .chunks
                .get(&key)
                .map(|c| into.extend_from_slice(&c[..]))
                .is_some())
        }
        fn delete(&mut self, key: u32) -> Result<bool, MapError> {
            self.write()?;
            Ok(self.chunks.remove(&key).is_some())
        }
    }

    /// `len` bytes that differ from checkpoint to checkpoint.
    fn checkpoint(tag: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
    }

    fn commit(fake: &mut Fake, bytes: &[u8]) -> Result<(), CommitError> {
        Committer::new(fake).commit(&mut bytes.to_vec(), || {})
    }

    fn load(fake: &mut Fake) -> Option<Vec<u8>> {
        Committer::new(fake).load().unwrap()
    }

    #[test]
    fn a_commit_cut_short_at_any_step_leaves_the_previous_checkpoint_or_the_new_one() {
        // Three chunks, then two (one stale chunk to delete), then one less than a chunk.
        let sizes = [3 * CHECKPOINT_CHUNK - 5, CHECKPOINT_CHUNK + 1, 100];
        for (n, &size) in sizes.iter().enumerate() {
            let new = checkpoint(n as u8 + 1, size);
            let mut at = 0;
            loop {
                // The state the previous commits left, then this commit cut after `at` writes.
                let mut fake = Fake::default();
                let mut previous = None;
                for (i, &s) in sizes[..n].iter().enumerate() {
                    let bytes = checkpoint(i as u8 + 1, s);
                    commit(&mut fake, &bytes).unwrap();
                    previous = Some(bytes);
                }
                fake.fail_from = Some(fake.writes + at);
                let outcome = commit(&mut fake, &new);
                // A restarted daemon reads the maps as they are.
                let got = load(&mut fake);
                match outcome {
                    Ok(()) => assert_eq!(got.as_ref(), Some(&new), "commit {n} done"),
                    Err(_) if fake.meta.generation == n as u64 => {
                        assert_eq!(got, previous, "commit {n} cut after {at} writes")
                    }
                    // Cut after the flip (a stale chunk's delete failed): committed.
                    Err(_) => assert_eq!(got.as_ref(), Some(&new), "commit {n} after the flip"),
                }
                // And the next daemon commits on from there.
                fake.fail_from = None;
                let next = checkpoint(99, size / 2 + 1);
                commit(&mut fake, &next).unwrap();
                assert_eq!(load(&mut fake), Some(next));
                if outcome.is_ok() {
                    break;
                }
                at += 1;
            }
            assert!(
                at >= size.div_ceil(CHECKPOINT_CHUNK),
                "every write was cut once"
            );
        }
    }

    #[test]
    fn the_committed_half_is_never_written() {
        let mut fake = Fake::default();
        let mut committer = Committer::new(&mut fake);
        for i in 0..4u8 {
            let mut bytes = checkpoint(i, 2 * CHECKPOINT_CHUNK);
            let before = committer.chunks.meta;
            committer.commit(&mut bytes, || {}).unwrap();
            let after = committer.chunks.meta;
            assert_ne!(before.half, after.half);
            assert_eq!(after.generation, before.generation + 1);
        }
        assert_eq!(fake.chunks.len(), 4, "two halves of two chunks");
        // Shorter checkpoints leave no chunk of the longer ones behind.
        for i in 0..2 {
            commit(&mut fake, &checkpoint(i, 10)).unwrap();
        }
        assert_eq!(fake.chunks.len(), 2, "two halves of one chunk");
    }

    #[test]
    fn too_large_a_checkpoint_is_refused_and_the_previous_one_stays() {
        let mut fake = Fake::default();
        commit(&mut fake, &checkpoint(1, 10)).unwrap();
        let max = CHECKPOINT_CHUNKS_PER_HALF as usize * CHECKPOINT_CHUNK;
        let err = commit(&mut fake, &vec![0; max + 1]).unwrap_err();
        assert!(matches!(err, CommitError::TooLarge { .. }), "{err}");
        assert_eq!(load(&mut fake), Some(checkpoint(1, 10)));
    }

    #[test]
    fn a_damaged_checkpoint_is_not_read() {
        let mut fake = Fake::default();
        assert_eq!(load(&mut fake), None, "nothing committed yet");
        commit(&mut fake, &checkpoint(1, CHECKPOINT_CHUNK + 9)).unwrap();
        let key = key(fake.meta.half, 1);
        fake.chunks.get_mut(&key).unwrap()[3] ^= 1;
        let err = Committer::new(&mut fake).load().unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        fake.chunks.remove(&key);
        let err = Committer::new(&mut fake).load().unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
