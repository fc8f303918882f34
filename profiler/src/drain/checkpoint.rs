//! What a checkpoint holds, and its encoding (postcard, from serde derives: a field added to a
//! record or a total needs no code here, only a `LAYOUT_VERSION` bump, and `format` changes with
//! the records' sizes anyway).
//!
//! It holds the store's cumulative exported state (store/persist.rs) and the readings those
//! totals rest on: every live HISTS slot's header and non-zero buckets and ERRNOS' values as this
//! drain read them, and the processes whose kernel entries this drain is about to delete. A
//! daemon that resumes from it diffs the kernel against those readings, so whatever the kernel
//! counted after the commit counts once, and finishes the deletes without counting anything
//! again.

use profiler_common::{ErrnoKey, HistHead, LAYOUT_VERSION};
use serde::{Deserialize, Serialize, Serializer};

use super::readings::HistReadings;
use crate::store::{
    histogram::Histogram,
    persist::{Exported, ExportedRef},
    ProcKey, SyscallKey, SyscallTotals,
};

/// A slot's reading as kept: (slot, header, non-zero buckets by bucket).
pub(super) type SlotReading = (u32, HistHead, Vec<(u16, u32)>);

/// What [`Checkpoint`] decodes from, borrowed from the drain and the store.
#[derive(Serialize)]
pub(super) struct CheckpointRef<'a> {
    pub format: u64,
    pub exported: ExportedRef<'a>,
    pub readings: ReadingsRef<'a>,
    pub errnos: &'a [(ErrnoKey, u32)],
    /// Ascending.
    pub retiring: Vec<ProcKey>,
}

/// The drain's committed slot readings, serialized as a sequence of [`SlotReading`].
pub(super) struct ReadingsRef<'a>(pub &'a HistReadings);

impl Serialize for ReadingsRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.committed())
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct Checkpoint {
    /// Checked before the rest is decoded (`decode`).
    pub _format: u64,
    pub exported: Exported,
    /// Ascending slots.
    pub readings: Vec<SlotReading>,
    pub errnos: Vec<(ErrnoKey, u32)>,
    pub retiring: Vec<ProcKey>,
}

/// Identifies the encoding: the layout version and the size of every record it holds. A daemon
/// refuses a checkpoint another encoding wrote rather than misreading it.
pub(super) fn format() -> u64 {
    use std::mem::size_of;
    let sizes = [
        size_of::<HistHead>(),
        size_of::<ErrnoKey>(),
        size_of::<ProcKey>(),
        size_of::<SyscallKey>(),
        size_of::<Histogram>(),
        size_of::<SyscallTotals>(),
    ];
    // FNV-1a, as the pinned maps' fingerprint.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in std::iter::once(LAYOUT_VERSION).chain(sizes.iter().map(|&s| s as u64)) {
        for b in v.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Appends the encoded checkpoint to `into`.
pub(super) fn encode(c: &CheckpointRef, into: &mut Vec<u8>) -> postcard::Result<()> {
    *into = postcard::to_extend(c, std::mem::take(into))?;
    Ok(())
}

pub(super) fn decode(bytes: &[u8]) -> Result<Checkpoint, String> {
    let (format, _) = postcard::take_from_bytes::<u64>(bytes).map_err(|e| e.to_string())?;
    if format != self::format() {
        return Err(format!(
            "written by a build with another encoding ({format:#x}, this build {:#x})",
            self::format()
        ));
    }
    postcard::from_bytes(bytes).map_err(|e| format!("decoding it: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use profiler_common::{HistKey, ABI_NATIVE};

    use super::*;
    use crate::drain::deltas::Deltas;
    use crate::store::Store;

    fn head(tgid: u32, nr: u16, total_ns: u64) -> HistHead {
        HistHead {
            key: HistKey {
                tgid,
                incarnation: 3,
                nr,
                abi: ABI_NATIVE,
                shard: 0,
            },
            errors: 2,
            total_ns,
            touched: 1,
            errno_counts: [2, 0, 0, 0],
            errnos: [13, 0, 0, 0],
            runq_ns: 40,
            blocked_ns: 300,
            blocked_calls: 1,
        }
    }

    #[test]
    fn a_checkpoint_decodes_to_what_was_encoded() {
        let slots = [
            (4, head(10, 1, 900), vec![(3u16, 7u32), (9, 1)]),
            (9, head(11, 2, 50), vec![(0, 2)]),
        ];
        let mut readings = HistReadings::default();
        let mut deltas = Deltas::default();
        readings.begin();
        let mut next = 0;
        for (slot, h, buckets) in &slots {
            let read = |into: &mut Vec<_>| into.extend_from_slice(buckets);
            readings.read(&mut next, *slot, h, read, &mut deltas);
        }
        readings.commit();
        let errnos = [(
            ErrnoKey {
                hist: head(10, 1, 0).key,
                errno: 2,
            },
            5u32,
        )];
        let retiring = vec![ProcKey {
            pid: 11,
            incarnation: 3,
        }];
        let store = Store::for_test(Duration::from_secs(60), 10);
        let mut bytes = Vec::new();
        let c = CheckpointRef {
            format: format(),
            exported: store.exported(Instant::now()),
            readings: ReadingsRef(&readings),
            errnos: &errnos,
            retiring: retiring.clone(),
        };
        encode(&c, &mut bytes).unwrap();
        let back = decode(&bytes).unwrap();
        assert_eq!(back.readings, slots.to_vec());
        assert_eq!(back.errnos, errnos.to_vec());
        assert_eq!(back.retiring, retiring);
        assert_eq!(back.exported, Exported::default());

        // Another encoding's checkpoint is refused, not misread.
        bytes[0] ^= 1;
        let err = decode(&bytes).unwrap_err();
        assert!(err.contains("another encoding"), "{err}");
    }
}
