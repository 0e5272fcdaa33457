//! The batch-identity window: has this shard already applied batch
//! `(edge, epoch, seq)`?
//!
//! A shipper numbers its batches 1, 2, 3… within an epoch and resends a batch
//! with its original identity, so Kafka can hold a batch twice (a retry whose
//! first ACK was lost, an operator re-producing) and out of order by at most
//! the shipper's window. Per `(edge, epoch)` we keep every seq up to a
//! contiguous watermark plus the sparse set above it; the set collapses into
//! the watermark as gaps fill, so the state stays a few integers per edge.
//!
//! Bounds: if the sparse set outgrows [`MAX_ABOVE`] (a batch that will never
//! come — dropped at the edge by `drop_oldest`, say), the watermark jumps the
//! oldest gap and [`Window::insert`] reports it so it can be counted. An
//! epoch first seen at seq N starts its watermark [`FIRST_SIGHT_SLACK`] below
//! N, so retries of slightly older batches still count once.

use std::collections::{BTreeSet, HashMap};

/// Largest sparse set kept per epoch before the watermark is forced forward.
pub const MAX_ABOVE: usize = 4096;
/// How far below the first seq seen for an epoch is still accepted.
pub const FIRST_SIGHT_SLACK: u64 = 1024;

/// Applied seqs of one `(edge, epoch)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    pub contiguous_upto: u64,
    pub above: BTreeSet<u64>,
}

/// What [`Window::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: apply the batch.
    New,
    /// Applied before: skip it.
    Duplicate,
    /// New, and the sparse set overflowed: this many never-seen seqs are
    /// now treated as applied.
    NewSkippingGap(u64),
}

impl Window {
    fn first_sight(seq: u64) -> Window {
        Window { contiguous_upto: seq.saturating_sub(FIRST_SIGHT_SLACK + 1), above: BTreeSet::new() }
    }

    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.contiguous_upto || self.above.contains(&seq)
    }

    pub fn insert(&mut self, seq: u64) -> Seen {
        if self.contains(seq) {
            return Seen::Duplicate;
        }
        self.above.insert(seq);
        self.collapse();
        let mut skipped = 0;
        while self.above.len() > MAX_ABOVE {
            let lowest = *self.above.first().expect("non-empty");
            skipped += lowest - self.contiguous_upto - 1;
            self.contiguous_upto = lowest - 1;
            self.collapse();
        }
        if skipped > 0 {
            Seen::NewSkippingGap(skipped)
        } else {
            Seen::New
        }
    }

    fn collapse(&mut self) {
        while self.above.first() == Some(&(self.contiguous_upto + 1)) {
            self.above.pop_first();
            self.contiguous_upto += 1;
        }
    }
}

/// Every window one shard holds, and which of them changed since the last
/// flush.
#[derive(Debug, Default, Clone)]
pub struct Windows {
    windows: HashMap<(String, u64), Window>,
    dirty: BTreeSet<(String, u64)>,
}

impl Windows {
    pub fn from_stored(rows: impl IntoIterator<Item = ((String, u64), Window)>) -> Self {
        Windows { windows: rows.into_iter().collect(), dirty: BTreeSet::new() }
    }

    pub fn insert(&mut self, edge: &str, epoch: u64, seq: u64) -> Seen {
        let key = (edge.to_owned(), epoch);
        let window = self.windows.entry(key.clone()).or_insert_with(|| Window::first_sight(seq));
        let seen = window.insert(seq);
        if seen != Seen::Duplicate {
            self.dirty.insert(key);
        }
        seen
    }

    /// The windows changed since the last [`clear_dirty`](Self::clear_dirty),
    /// to be written in the next flush.
    pub fn dirty(&self) -> Vec<((String, u64), Window)> {
        self.dirty.iter().map(|key| (key.clone(), self.windows[key].clone())).collect()
    }

    /// Called once a flush holding [`dirty`](Self::dirty) has committed.
    pub fn clear_dirty(&mut self) {
        self.dirty.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_seqs_collapse_into_the_watermark() {
        let mut w = Window::default();
        for seq in 1..=100 {
            assert_eq!(w.insert(seq), Seen::New);
        }
        assert_eq!(w, Window { contiguous_upto: 100, above: BTreeSet::new() });
        assert_eq!(w.insert(57), Seen::Duplicate);
    }

    #[test]
    fn out_of_order_retries_count_once() {
        let mut w = Window::default();
        for seq in [1, 2, 4, 5, 3, 4, 3, 6] {
            let expected = if [4, 3].contains(&seq) && w.contains(seq) { Seen::Duplicate } else { Seen::New };
            assert_eq!(w.insert(seq), expected, "seq {seq}");
        }
        assert_eq!(w.contiguous_upto, 6);
        assert!(w.above.is_empty());
    }

    #[test]
    fn a_gap_that_never_fills_is_bounded_and_reported() {
        let mut w = Window::default();
        assert_eq!(w.insert(1), Seen::New);
        // Seq 2 never arrives.
        for seq in 3..3 + MAX_ABOVE as u64 {
            assert_eq!(w.insert(seq), Seen::New);
        }
        assert_eq!(w.insert(3 + MAX_ABOVE as u64), Seen::NewSkippingGap(1));
        assert_eq!(w.contiguous_upto, 3 + MAX_ABOVE as u64);
        assert!(w.above.is_empty());
    }

    #[test]
    fn windows_track_what_changed() {
        let mut ws = Windows::default();
        assert_eq!(ws.insert("edge-a", 7, 1), Seen::New);
        assert_eq!(ws.insert("edge-a", 7, 1), Seen::Duplicate);
        assert_eq!(ws.insert("edge-b", 7, 5000), Seen::New);
        let dirty = ws.dirty();
        assert_eq!(dirty.len(), 2);
        assert_eq!(dirty[1].1.contiguous_upto, 5000 - FIRST_SIGHT_SLACK - 1);
        ws.clear_dirty();
        assert!(ws.dirty().is_empty());
        assert_eq!(ws.insert("edge-b", 7, 4990), Seen::New, "within the first-sight slack");
    }
}
