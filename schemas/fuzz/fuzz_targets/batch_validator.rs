//! `batch::decode` and `batch::Validator` with the default `Limits` on
//! arbitrary bytes: the full validation the aggregator and ingest run on
//! every blob they receive.
//!
//! Checked:
//! * nothing panics, and a blob `peek` refuses is refused by `decode` too;
//! * a validator, reused from input to input, reaches `decode`'s verdict
//!   with the same error ([`check_validator_agrees`]);
//! * the heap `decode` holds at once stays within what the blob paid for
//!   ([`decode_heap_bound`]: no LZ4 or Cap'n Proto amplification);
//! * a blob that decodes passes [`check_decoded`]: `peek` agrees, every
//!   record reads again, and re-sealing the records gives the same records.

#![no_main]

use libfuzzer_sys::fuzz_target;
use schemas::batch::{self, Limits};
use schemas_fuzz::{
    check_decoded, check_validator_agrees, decode_heap_bound, peak_heap, PeakAlloc,
};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

fuzz_target!(|blob: &[u8]| {
    let (decoded, heap) = peak_heap(|| batch::decode(blob, &Limits::default()));
    assert!(
        heap <= decode_heap_bound(blob.len()),
        "decode held {heap} heap bytes for a {}-byte blob",
        blob.len()
    );
    check_validator_agrees(blob, &decoded);
    if let Ok(batch) = decoded {
        check_decoded(blob, &batch);
    }
    if batch::peek(blob).is_err() {
        assert!(batch::decode(blob, &Limits::default()).is_err());
    }
});
