//! Property tests for the batch format and the wire codec: whatever goes in
//! comes out unchanged, and every truncated, bit-flipped or random input is
//! an error — never a panic, never a batch that silently differs. Every blob
//! that `batch::decode` sees is also given to a `batch::Validator`, which
//! must reach the same verdict with the same error.

use std::cell::RefCell;
use std::net::IpAddr;

use bytes::BytesMut;
use proptest::prelude::*;
use schemas::batch::{self, BatchBuilder, BatchError, BatchId, Limits, Validator};
use schemas::{CacheStatus, Frame, FrameCodec, Method, Record, Scheme, TlsProtocol};
use tokio_util::codec::{Decoder, Encoder};

/// The owned data a [`Record`] borrows from.
#[derive(Debug, Clone)]
struct Owned {
    numbers: (i64, u16, u64, u64, u32, Option<u32>),
    ip: Option<IpAddr>,
    enums: (usize, usize, usize, usize),
    texts: [String; 11],
    extras: Vec<(String, String)>,
}

impl Owned {
    fn record(&self) -> Record<'_> {
        const METHODS: [Method; 3] = [Method::Get, Method::Post, Method::Other];
        const SCHEMES: [Scheme; 3] = [Scheme::Http, Scheme::Https, Scheme::Unknown];
        const CACHE: [CacheStatus; 3] = [CacheStatus::Hit, CacheStatus::Miss, CacheStatus::None];
        const TLS: [TlsProtocol; 3] = [TlsProtocol::Tls13, TlsProtocol::Tls12, TlsProtocol::None];
        let t = &self.texts;
        let (timestamp_ns, status, response_bytes, request_bytes, request_time_us, upstream) =
            self.numbers;
        Record {
            timestamp_ns,
            zone: &t[0],
            client_ip: self.ip,
            method: METHODS[self.enums.0],
            method_other: &t[1],
            scheme: SCHEMES[self.enums.1],
            host: &t[2],
            path: &t[3],
            query: &t[4],
            protocol: &t[5],
            status,
            response_bytes,
            request_bytes,
            request_time_us,
            upstream_time_us: upstream,
            cache_status: CACHE[self.enums.2],
            referer: &t[6],
            user_agent: &t[7],
            content_type: &t[8],
            country: &t[9],
            tls_protocol: TLS[self.enums.3],
            extras: self
                .extras
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }
}

fn owned() -> impl Strategy<Value = Owned> {
    let ip = prop_oneof![
        Just(None),
        any::<[u8; 4]>().prop_map(|b| Some(IpAddr::from(b))),
        any::<[u8; 16]>().prop_map(|b| Some(IpAddr::from(b))),
    ];
    (
        (
            any::<i64>(),
            any::<u16>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<Option<u32>>(),
        ),
        ip,
        (0..3usize, 0..3usize, 0..3usize, 0..3usize),
        proptest::array::uniform11(".{0,40}"),
        proptest::collection::vec((".{0,10}", ".{0,20}"), 0..4),
    )
        .prop_map(|(numbers, ip, enums, texts, extras)| Owned {
            numbers,
            ip,
            enums,
            texts,
            extras,
        })
}

fn seal(records: &[Owned], id: BatchId) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for r in records {
        builder.push(&r.record());
    }
    builder.seal(id)
}

fn decoded_records(blob: &[u8]) -> Result<Vec<String>, BatchError> {
    verdict(blob, &Limits::default())?;
    let batch = batch::decode(blob, &Limits::default())?;
    let mut out = Vec::new();
    batch.for_each(|r| out.push(format!("{r:?}")))?;
    Ok(out)
}

thread_local! {
    /// One validator for all the cases a test thread runs, so that each
    /// blob meets a buffer holding the bytes of earlier ones.
    static VALIDATOR: RefCell<Validator> = RefCell::new(Validator::new());
}

/// What `decode` says of `blob`, after checking that a reused `Validator`
/// says the same.
fn verdict(blob: &[u8], limits: &Limits) -> Result<(BatchId, u32), BatchError> {
    let decoded = batch::decode(blob, limits).map(|b| (b.id(), b.len()));
    let validated = VALIDATOR.with(|v| v.borrow_mut().validate(blob, limits));
    assert_eq!(validated, decoded, "validate and decode disagree");
    decoded
}

/// The uncompressed payload of a sealed blob.
fn payload(blob: &[u8]) -> Vec<u8> {
    let raw_len = u32::from_be_bytes(blob[28..32].try_into().unwrap()) as usize;
    lz4_flex::block::decompress(&blob[batch::HEADER_LEN..], raw_len).unwrap()
}

/// `blob` with its payload replaced by `raw`, raw length and CRC to match:
/// the edit gets past the CRC to LZ4 and Cap'n Proto.
fn reseal(blob: &[u8], raw: &[u8]) -> Vec<u8> {
    let mut out = blob[..batch::HEADER_LEN].to_vec();
    out[28..32].copy_from_slice(&(raw.len() as u32).to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[..32]), raw);
    out[32..36].copy_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&lz4_flex::block::compress(raw));
    out
}

/// An edit of an uncompressed payload, at a position taken modulo its
/// length. Cap'n Proto words and pointers are little-endian u64s.
#[derive(Debug, Clone)]
enum Edit {
    FlipBit(prop::sample::Index, u8),
    SetWord(prop::sample::Index, u64),
    Truncate(prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0..8u8).prop_map(|(at, bit)| Edit::FlipBit(at, bit)),
        (any::<prop::sample::Index>(), any::<u64>()).prop_map(|(at, w)| Edit::SetWord(at, w)),
        any::<prop::sample::Index>().prop_map(Edit::Truncate),
    ]
}

impl Edit {
    fn apply(&self, raw: &mut Vec<u8>) {
        let len = raw.len();
        if len == 0 {
            return;
        }
        match self {
            Edit::FlipBit(at, bit) => raw[at.index(len)] ^= 1 << bit,
            Edit::SetWord(at, word) => {
                let at = at.index(len) & !7;
                let end = (at + 8).min(len);
                raw[at..end].copy_from_slice(&word.to_le_bytes()[..end - at]);
            }
            // To a whole word: a misaligned payload is refused before
            // Cap'n Proto sees it.
            Edit::Truncate(at) => raw.truncate(at.index(len) & !7),
        }
    }
}

/// Bounds from the default down to ones that the records above exceed.
fn limits() -> impl Strategy<Value = Limits> {
    (
        prop_oneof![9 => Just(32 << 20), 1 => 0..4096usize],
        prop_oneof![9 => Just(200_000), 1 => 0..8u32],
        prop_oneof![9 => Just((2 << 20) / 8), 1 => 0..64usize],
        prop_oneof![9 => Just(8), 1 => 0..4i32],
    )
        .prop_map(
            |(max_raw_len, max_records, traversal_limit_words, nesting_limit)| Limits {
                max_raw_len,
                max_records,
                traversal_limit_words,
                nesting_limit,
            },
        )
}

/// Runs a byte stream through the frame codec to its end, as a connection
/// that then closes would: complete frames, then an error or a clean end.
fn frames(stream: &[u8]) -> Result<Vec<Frame>, schemas::WireError> {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::from(stream);
    let mut out = Vec::new();
    while let Some(frame) = codec.decode(&mut buf)? {
        out.push(frame);
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        out.push(frame);
    }
    Ok(out)
}

fn encode(frames: Vec<Frame>) -> BytesMut {
    let mut codec = FrameCodec::default();
    let mut buf = BytesMut::new();
    for frame in frames {
        codec.encode(frame, &mut buf).unwrap();
    }
    buf
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn batches_round_trip(records in proptest::collection::vec(owned(), 0..20), epoch: u64, seq: u64) {
        let id = BatchId { epoch, seq };
        let blob = seal(&records, id);
        let batch = batch::decode(&blob, &Limits::default()).unwrap();
        prop_assert_eq!(verdict(&blob, &Limits::default()), Ok((id, records.len() as u32)));
        prop_assert_eq!(batch.id(), id);
        prop_assert_eq!(batch.len() as usize, records.len());
        prop_assert_eq!(batch::peek(&blob).unwrap(), (id, records.len() as u32));
        let mut i = 0;
        batch.for_each(|r| {
            assert_eq!(r, &records[i].record());
            i += 1;
        }).unwrap();
        prop_assert_eq!(i, records.len());
    }

    #[test]
    fn truncated_batches_are_errors(records in proptest::collection::vec(owned(), 1..6), cut in any::<prop::sample::Index>()) {
        let blob = seal(&records, BatchId { epoch: 1, seq: 1 });
        let len = cut.index(blob.len());
        prop_assert!(verdict(&blob[..len], &Limits::default()).is_err());
    }

    /// Edits of the Cap'n Proto payload under a CRC that matches again, so
    /// that they reach the record checks; any limits. Whatever the outcome,
    /// `validate` and `decode` agree on it (checked by `verdict`).
    #[test]
    fn payload_edits_and_limits_get_one_verdict(
        records in proptest::collection::vec(owned(), 1..6),
        edits in proptest::collection::vec(edit(), 1..4),
        limits in limits(),
    ) {
        let blob = seal(&records, BatchId { epoch: 1, seq: 1 });
        let mut raw = payload(&blob);
        for edit in &edits {
            edit.apply(&mut raw);
        }
        let _ = verdict(&reseal(&blob, &raw), &limits);
        let _ = verdict(&blob, &limits);
    }

    /// A few LZ4 bits carry no meaning (the last sequence's match-length
    /// nibble), so a flip there decodes to the very same records. Every other
    /// flip must be an error: a batch never decodes to something different.
    #[test]
    fn bit_flipped_batches_never_decode_differently(records in proptest::collection::vec(owned(), 1..6), bit in any::<prop::sample::Index>()) {
        let mut blob = seal(&records, BatchId { epoch: 1, seq: 1 });
        let original = decoded_records(&blob).unwrap();
        let bit = bit.index(blob.len() * 8);
        blob[bit / 8] ^= 1 << (bit % 8);
        match decoded_records(&blob) {
            Err(_) => {}
            Ok(decoded) => {
                prop_assert!(bit / 8 >= batch::HEADER_LEN, "a header flip went unnoticed");
                prop_assert_eq!(decoded, original);
            }
        }
    }

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512), valid_header: bool) {
        if valid_header && bytes.len() >= 8 {
            bytes[..5].copy_from_slice(b"SLCB\x01");
            bytes[5..8].fill(0);
        }
        let _ = decoded_records(&bytes);
        let _ = frames(&bytes);
    }

    #[test]
    fn frames_round_trip(records in proptest::collection::vec(owned(), 0..4), nonce: u64, reason in ".{0,100}", retryable: bool) {
        let blob = bytes::Bytes::from(seal(&records, BatchId { epoch: 9, seq: 3 }));
        let sent = vec![
            Frame::Hello { min_version: 1, max_version: 1, agent: reason.clone() },
            Frame::Welcome { version: 1, max_frame: 1 << 20, window: 16 },
            Frame::Batch(blob),
            Frame::Ack(BatchId { epoch: 9, seq: 3 }),
            Frame::Nack { id: BatchId { epoch: 9, seq: 4 }, retryable, reason: reason.clone() },
            Frame::Ping(nonce),
            Frame::Pong(nonce),
            Frame::GoAway(reason),
        ];
        let stream = encode(sent.clone());
        prop_assert_eq!(frames(&stream).unwrap(), sent);
    }

    #[test]
    fn truncated_or_flipped_frames_are_errors(records in proptest::collection::vec(owned(), 1..4), at in any::<prop::sample::Index>(), flip: bool) {
        let blob = bytes::Bytes::from(seal(&records, BatchId { epoch: 9, seq: 3 }));
        let mut stream = encode(vec![Frame::Batch(blob)]).to_vec();
        if flip {
            let bit = at.index(stream.len() * 8);
            stream[bit / 8] ^= 1 << (bit % 8);
        } else {
            stream.truncate(at.index(stream.len()).max(1));
        }
        prop_assert!(frames(&stream).is_err(), "damaged stream decoded cleanly");
    }
}

#[test]
fn lz4_bomb_is_refused_before_allocating() {
    // A 40-byte blob claiming 4 GiB - 8 of payload.
    let mut blob = seal(&[], BatchId { epoch: 1, seq: 1 });
    blob[28..32].copy_from_slice(&(u32::MAX - 7).to_be_bytes());
    let err = verdict(&blob, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, batch::BatchError::RawTooLarge { .. }),
        "{err}"
    );

    let generous = Limits {
        max_raw_len: usize::MAX,
        ..Limits::default()
    };
    let err = verdict(&blob, &generous).unwrap_err();
    assert!(
        matches!(err, batch::BatchError::ImpossibleRatio { .. }),
        "{err}"
    );
}

#[test]
fn oversized_frames_are_refused_from_their_length() {
    let mut codec = FrameCodec::new(1024);
    let mut buf = BytesMut::from(&[0x00, 0x10, 0x00, 0x00, 3][..]);
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            schemas::WireError::FrameTooLarge {
                len: 0x100000,
                limit: 1024
            }
        ),
        "{err}"
    );
}

#[test]
fn record_limits_are_enforced() {
    let owned = Owned {
        numbers: (0, 200, 0, 0, 0, None),
        ip: None,
        enums: (0, 0, 0, 0),
        texts: std::array::from_fn(|i| {
            if i == 3 {
                "x".repeat(64 << 10)
            } else {
                String::new()
            }
        }),
        extras: Vec::new(),
    };
    let blob = seal(&[owned], BatchId { epoch: 1, seq: 1 });
    let tight = Limits {
        traversal_limit_words: 1024,
        ..Limits::default()
    };
    let err = verdict(&blob, &tight).unwrap_err();
    assert!(
        matches!(err, batch::BatchError::Record { index: 0, .. }),
        "{err}"
    );
    assert!(verdict(&blob, &Limits::default()).is_ok());

    let few = Limits {
        max_records: 0,
        ..Limits::default()
    };
    let err = verdict(&blob, &few).unwrap_err();
    assert_eq!(
        err,
        batch::BatchError::TooManyRecords {
            claimed: 1,
            limit: 0
        }
    );
}
