//! The batch-identity window: has this shard already applied batch
//! `(edge, epoch, seq)`?
//!
//! Within an epoch a shipper's seqs strictly increase (possibly with gaps),
//! and it resends a batch with its original
//! identity, so Kafka can hold a batch twice — a retry whose first ACK was
//! lost, an operator re-producing — and out of order by less than the
//! shipper's window of unacknowledged batches.
//!
//! So per `(edge, epoch)` we keep, as IPsec's anti-replay window does, the
//! highest seq applied and a bitmap of which of the [`WINDOW`] seqs at and
//! below it were applied: a fixed 8 + 128 bytes, whatever the traffic. A seq
//! more than [`WINDOW`] below the highest cannot be a first delivery (the
//! shipper never has that many batches unacknowledged), so it is reported
//! as [`Seen::TooOld`] and skipped like a duplicate.

use std::collections::{BTreeSet, HashMap};

/// How many seqs below the highest are tracked individually: the spread the
/// shipper promises never to exceed.
pub const WINDOW: u64 = schemas::batch::IDENTITY_WINDOW;
const WORDS: usize = (WINDOW / 64) as usize;

/// Applied seqs of one `(edge, epoch)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Highest seq applied.
    pub high: u64,
    /// Bit `i` (word `i / 64`, bit `i % 64`) set: seq `high - i` was applied.
    pub bits: [u64; WORDS],
}

/// What [`Window::insert`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: apply the batch.
    New,
    /// Applied before: skip it.
    Duplicate,
    /// Below the window: certainly delivered before; skip it.
    TooOld,
}

impl Window {
    fn first(seq: u64) -> Window {
        let mut bits = [0; WORDS];
        bits[0] = 1;
        Window { high: seq, bits }
    }

    fn bit(&self, age: u64) -> bool {
        self.bits[(age / 64) as usize] & (1 << (age % 64)) != 0
    }

    fn set(&mut self, age: u64) {
        self.bits[(age / 64) as usize] |= 1 << (age % 64);
    }

    /// Shifts the bitmap so that bit 0 stands for `high + by`.
    fn advance(&mut self, by: u64) {
        if by >= WINDOW {
            self.bits = [0; WORDS];
            return;
        }
        let (words, bits) = ((by / 64) as usize, (by % 64) as u32);
        for i in (0..WORDS).rev() {
            let from = i.checked_sub(words);
            let hi = from.map_or(0, |f| self.bits[f]);
            let lo = from
                .and_then(|f| f.checked_sub(1))
                .map_or(0, |f| self.bits[f]);
            self.bits[i] = if bits == 0 {
                hi
            } else {
                (hi << bits) | (lo >> (64 - bits))
            };
        }
    }

    pub fn insert(&mut self, seq: u64) -> Seen {
        if seq > self.high {
            self.advance(seq - self.high);
            self.high = seq;
            self.set(0);
            return Seen::New;
        }
        let age = self.high - seq;
        if age >= WINDOW {
            Seen::TooOld
        } else if self.bit(age) {
            Seen::Duplicate
        } else {
            self.set(age);
            Seen::New
        }
    }

    /// The bitmap as stored: big-endian words, 128 bytes.
    pub fn bits_bytes(&self) -> Vec<u8> {
        self.bits.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    /// Rebuilds a stored window; `None` if the bitmap is not 128 bytes.
    pub fn from_stored(high: u64, bytes: &[u8]) -> Option<Window> {
        if bytes.len() != WORDS * 8 {
            return None;
        }
        let mut bits = [0; WORDS];
        for (word, chunk) in bits.iter_mut().zip(bytes.chunks_exact(8)) {
            *word = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
        }
        Some(Window { high, bits })
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
        Windows {
            windows: rows.into_iter().collect(),
            dirty: BTreeSet::new(),
        }
    }

    pub fn insert(&mut self, edge: &str, epoch: u64, seq: u64) -> Seen {
        let key = (edge.to_owned(), epoch);
        let seen = match self.windows.get_mut(&key) {
            Some(window) => window.insert(seq),
            None => {
                self.windows.insert(key.clone(), Window::first(seq));
                Seen::New
            }
        };
        if seen == Seen::New {
            self.dirty.insert(key);
        }
        seen
    }

    /// The windows changed since the last call, as they are now, for the
    /// flush about to be written; they count as clean from here on.
    pub fn take_dirty(&mut self) -> Vec<((String, u64), Window)> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|key| {
                let window = self.windows[&key].clone();
                (key, window)
            })
            .collect()
    }

    /// Marks windows dirty again, after the flush that took them failed.
    pub fn restore_dirty(&mut self, taken: impl IntoIterator<Item = (String, u64)>) {
        self.dirty.extend(taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn in_order_seqs_are_new_once() {
        let mut w = Window::first(1);
        for seq in 2..=3000 {
            assert_eq!(w.insert(seq), Seen::New);
        }
        assert_eq!(w.insert(3000), Seen::Duplicate);
        assert_eq!(w.insert(3000 - WINDOW + 1), Seen::Duplicate);
        assert_eq!(w.insert(3000 - WINDOW), Seen::TooOld);
    }

    #[test]
    fn gaps_and_late_retries() {
        let mut w = Window::first(5);
        assert_eq!(
            w.insert(1028),
            Seen::New,
            "a restart reserved a new seq range"
        );
        assert_eq!(w.insert(7), Seen::New, "a late retry inside the window");
        assert_eq!(w.insert(7), Seen::Duplicate);
        assert_eq!(w.insert(5), Seen::Duplicate);
        assert_eq!(w.insert(4), Seen::TooOld);
    }

    #[test]
    fn stored_form_round_trips() {
        let mut w = Window::first(100);
        for seq in [90, 99, 150, 37] {
            w.insert(seq);
        }
        assert_eq!(Window::from_stored(w.high, &w.bits_bytes()), Some(w));
        assert_eq!(Window::from_stored(1, &[0; 3]), None);
    }

    #[test]
    fn windows_track_what_changed() {
        let mut ws = Windows::default();
        assert_eq!(ws.insert("edge-a", 7, 1), Seen::New);
        assert_eq!(ws.insert("edge-a", 7, 1), Seen::Duplicate);
        assert_eq!(ws.insert("edge-b", 7, 5000), Seen::New);
        let taken = ws.take_dirty();
        assert_eq!(taken.len(), 2);
        assert!(ws.take_dirty().is_empty());
        assert_eq!(ws.insert("edge-b", 7, 4990), Seen::New);
        // A failed flush gives back what it took; a later change is kept.
        ws.restore_dirty(taken.into_iter().map(|(key, _)| key));
        let again = ws.take_dirty();
        assert_eq!(again.len(), 2);
        let mut edge_b = again
            .iter()
            .find(|(key, _)| key.0 == "edge-b")
            .unwrap()
            .1
            .clone();
        assert_eq!(
            edge_b.insert(4990),
            Seen::Duplicate,
            "the window as it is now"
        );
    }

    proptest! {
        /// Against a plain set: any delivery order within the window.
        #[test]
        fn agrees_with_a_set(seqs in proptest::collection::vec(1u64..3000, 1..400)) {
            let mut w = Window::first(seqs[0]);
            let mut seen = std::collections::BTreeSet::from([seqs[0]]);
            for &seq in &seqs[1..] {
                let high = *seen.last().unwrap();
                let expected = if seq + WINDOW <= high {
                    Seen::TooOld
                } else if seen.insert(seq) {
                    Seen::New
                } else {
                    Seen::Duplicate
                };
                prop_assert_eq!(w.insert(seq), expected, "seq {}", seq);
            }
        }
    }
}
