//! Inputs that the fuzz targets in `schemas/fuzz/` found, replayed by the
//! ordinary test suite so that what was fixed stays fixed without cargo-fuzz
//! (`schemas/fuzz/README.md`).

use schemas::batch::{self, BatchError, Limits, Validator};

/// Found by `batch_mutated`: one bit flipped in a record's `extras` pointer
/// made it point at a text word instead, which Cap'n Proto then read as the
/// tag of a list of 5,258 zero-sized structs. Such a list occupies no bytes
/// (Cap'n Proto charges it only to the traversal limit), so this 174-byte
/// blob made `decode` reserve 168 KB for extras and loop 5,258 times. At the
/// traversal limit that is 262,144 extras (8 MiB) per record: a 2 KB blob of
/// 2,000 such records took 20 s to validate in a release build, and its
/// extras would then reach the aggregator. Now refused: a list may not have
/// more elements than its message has words.
#[test]
fn an_extras_list_longer_than_its_message_is_refused() {
    let blob = unhex(&[
        "534c43420100000000bf28ffffffffd5ff2407ff28ffffff0000000100000128",
        "71dd3f545000000000240500f00000000006000c0026a42889622c00d11100f0",
        "09247d0000b6b6d114245e000000622cd1df5101b6d1140bd01c001001050081",
        "0000002d0000001a0a000a020057250000000a0800040200132118000f02000d",
        "0060006f3700000028522a000b110c1f003302001558000f080009171220000f",
        "02000d1526210060000000000000",
    ]);
    let validated = Validator::new().validate(&blob, &Limits::default());
    match batch::decode(&blob, &Limits::default()) {
        Err(BatchError::Record { index: 0, reason }) => {
            assert!(reason.contains("5258 extras in a message of"), "{reason}");
            assert_eq!(validated, Err(BatchError::Record { index: 0, reason }));
        }
        other => panic!("expected record 0 to be refused, got {other:?}"),
    }
}

fn unhex(lines: &[&str]) -> Vec<u8> {
    let hex: String = lines.concat();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}
