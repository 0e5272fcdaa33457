//! Structure-aware: a valid batch sealed from fuzzer-chosen records, then
//! corrupted, partly *under* its CRC, so that the fuzzer reaches the LZ4
//! decoder and the Cap'n Proto traversal instead of stopping at the CRC.
//!
//! Each mutation edits either the blob as it is (header or LZ4 block,
//! optionally making the CRC match again afterwards) or the uncompressed
//! payload (the Cap'n Proto messages), which is then compressed again, with
//! the raw length and CRC optionally fixed. Checked:
//! * an unmutated batch decodes to exactly the records that went in;
//! * a mutated one is refused or passes [`check_decoded`]; nothing panics;
//! * a reused validator reaches `decode`'s verdict with the same error
//!   ([`check_validator_agrees`]);
//! * the heap `decode` holds stays within [`decode_heap_bound`].

#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use schemas::batch::{self, BatchBuilder, BatchId, Limits};
use schemas_fuzz::{
    blob, check_decoded, check_validator_agrees, decode_heap_bound, peak_heap, records,
    OwnedRecord, PeakAlloc,
};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

#[derive(Debug, Arbitrary)]
struct Input {
    epoch: u64,
    seq: u64,
    records: Vec<OwnedRecord>,
    mutations: Vec<Mutation>,
}

#[derive(Debug, Arbitrary)]
enum Mutation {
    /// Edit the sealed blob; with `fix_crc`, recompute the CRC afterwards.
    Blob { edit: Edit, fix_crc: bool },
    /// Edit the uncompressed payload and compress it again; with
    /// `fix_header`, make raw length and CRC match it.
    Payload { edit: Edit, fix_header: bool },
}

/// At most this many mutations are applied: each payload edit costs a
/// decompression and a compression, and the harness should not outspend
/// the code under test.
const MAX_MUTATIONS: usize = 16;

/// No edit makes what it edits longer than this (a few dozen records).
const MAX_EDITED_LEN: usize = 64 << 10;

/// Positions are taken modulo the length of what is edited.
#[derive(Debug, Arbitrary)]
enum Edit {
    FlipBit {
        at: u32,
        bit: u8,
    },
    SetByte {
        at: u32,
        value: u8,
    },
    /// Little-endian, as Cap'n Proto pointers and lengths are.
    SetWord {
        at: u32,
        value: u64,
    },
    /// Big-endian, as the batch header's fields are.
    SetU32Be {
        at: u32,
        value: u32,
    },
    Truncate {
        len: u32,
    },
    Insert {
        at: u32,
        bytes: Vec<u8>,
    },
    Remove {
        at: u32,
        len: u16,
    },
    /// Copy a range elsewhere (e.g. a whole record message).
    Duplicate {
        from: u32,
        len: u16,
        to: u32,
    },
}

impl Edit {
    fn apply(&self, bytes: &mut Vec<u8>) {
        let len = bytes.len();
        let at = |i: u32| if len == 0 { 0 } else { i as usize % len };
        match *self {
            Edit::FlipBit { at: i, bit } => {
                if len > 0 {
                    bytes[at(i)] ^= 1 << (bit % 8);
                }
            }
            Edit::SetByte { at: i, value } => {
                if len > 0 {
                    bytes[at(i)] = value;
                }
            }
            Edit::SetWord { at: i, value } => put(bytes, at(i), &value.to_le_bytes()),
            Edit::SetU32Be { at: i, value } => put(bytes, at(i), &value.to_be_bytes()),
            Edit::Truncate { len: n } => bytes.truncate(n as usize % (len + 1)),
            Edit::Insert {
                at: i,
                bytes: ref new,
            } => {
                if len + new.len() > MAX_EDITED_LEN {
                    return;
                }
                let i = if len == 0 { 0 } else { i as usize % (len + 1) };
                bytes.splice(i..i, new.iter().copied());
            }
            Edit::Remove { at: i, len: n } => {
                let i = at(i);
                let end = (i + usize::from(n)).min(len);
                bytes.drain(i..end);
            }
            Edit::Duplicate { from, len: n, to } => {
                let from = at(from);
                let end = (from + usize::from(n)).min(len);
                if len + (end - from) > MAX_EDITED_LEN {
                    return;
                }
                let copy = bytes[from..end].to_vec();
                let to = if len == 0 { 0 } else { to as usize % (len + 1) };
                bytes.splice(to..to, copy);
            }
        }
    }
}

/// Overwrites bytes from `at`, as many as fit.
fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    let end = (at + value.len()).min(bytes.len());
    if at < end {
        bytes[at..end].copy_from_slice(&value[..end - at]);
    }
}

fuzz_target!(|input: Input| {
    let id = BatchId {
        epoch: input.epoch,
        seq: input.seq,
    };
    let mut builder = BatchBuilder::new();
    for r in &input.records {
        builder.push(&r.record());
    }
    let mut blob = builder.seal(id);

    for mutation in input.mutations.iter().take(MAX_MUTATIONS) {
        match mutation {
            Mutation::Blob { edit, fix_crc } => {
                edit.apply(&mut blob);
                if *fix_crc {
                    blob::fix_crc(&mut blob);
                }
            }
            Mutation::Payload { edit, fix_header } => {
                if let Some(mut raw) = blob::payload(&blob) {
                    edit.apply(&mut raw);
                    blob::set_payload(&mut blob, &raw, *fix_header);
                }
            }
        }
    }

    let (decoded, heap) = peak_heap(|| batch::decode(&blob, &Limits::default()));
    assert!(
        heap <= decode_heap_bound(blob.len()),
        "decode held {heap} heap bytes for a {}-byte blob",
        blob.len()
    );
    check_validator_agrees(&blob, &decoded);
    if input.mutations.is_empty() {
        let batch = decoded.expect("an unmutated batch decodes");
        assert_eq!(batch.id(), id);
        let expected: Vec<String> = input
            .records
            .iter()
            .map(|r| format!("{:?}", r.record()))
            .collect();
        assert_eq!(records(&batch), expected, "records changed on the way");
        check_decoded(&blob, &batch);
    } else if let Ok(batch) = decoded {
        check_decoded(&blob, &batch);
    }
});
