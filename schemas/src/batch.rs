//! The batch: many records under one identity, LZ4-compressed, checksummed.
//!
//! A sealed batch is a self-describing byte string — the *blob* — that
//! travels unchanged from the shipper's spool, over the wire, into Kafka as
//! the message value, and into the aggregator. Nobody re-encodes it.
//!
//! ```text
//! offset size  field
//!      0    4  magic "SLCB"
//!      4    1  format version (1)
//!      5    3  reserved, zero
//!      8    8  epoch        (u64 BE)  \
//!     16    8  seq          (u64 BE)   } the batch identity, with the edge id
//!     24    4  record count (u32 BE)  /  that ingest takes from the certificate
//!     28    4  raw length   (u32 BE)  length of the uncompressed payload
//!     32    4  CRC32C       (u32 BE)  of header bytes 0..32, then the
//!                                     uncompressed payload
//!     36    …  LZ4 block    (lz4_flex block format, no size prefix)
//! ```
//!
//! The uncompressed payload is `record count` Cap'n Proto messages, each in
//! the standard stream framing, back to back. One message per record lets the
//! shipper encode a line the moment it is parsed, without knowing how many
//! will follow, and bounds the Cap'n Proto traversal limit per record.
//!
//! Decoding ([`decode`]) never trusts the header: the raw length is checked
//! against [`Limits`] and against LZ4's maximum ratio *before* anything is
//! allocated (an "LZ4 bomb" costs nothing), the CRC (which covers the header
//! too, so a flipped identity bit is caught) is checked before Cap'n Proto
//! reads a byte, and every record is read through with traversal and
//! nesting limits, its lists no longer and its texts no larger than its
//! message could hold (so that reading costs no more than the bytes do).
//! Every failure is a [`BatchError`]; nothing panics.
//!
//! Decoding reads each record out of Cap'n Proto once: its checked fields
//! are kept in the [`DecodedBatch`], its texts copied into one buffer, so
//! that visiting the records afterwards ([`DecodedBatch::for_each`]) only
//! slices that buffer. A [`Decoder`] does the same and keeps its
//! decompression buffer from one batch to the next.
//!
//! A [`Validator`] runs the very same checks (the same code: a blob it
//! accepts is one `decode` accepts, and a blob it refuses gets the same
//! error) for a caller that keeps only the verdict: ingest, which forwards
//! the blob as it came. It keeps no records, and reuses its buffer from one
//! batch to the next.

use capnp::message::ReaderSegments;
use capnp::message::{self, ReaderOptions};
use capnp::serialize::{self, NoAllocSliceSegments};

use crate::record::{Record, Stored, StoredExtra};
use crate::request_capnp::request;

const MAGIC: &[u8; 4] = b"SLCB";
/// The batch format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Size of the fixed header in front of the LZ4 block.
pub const HEADER_LEN: usize = 36;
/// LZ4 cannot expand input by more than this factor (255 bytes per literal
/// run byte); anything claiming more is corrupt or hostile.
const LZ4_MAX_RATIO: usize = 255;

/// How far apart the seqs of one epoch's batches may be while any of them is
/// unanswered. The shipper never has a batch in flight this many seqs past
/// its oldest unanswered one, so the aggregator can take a seq this far below
/// the highest it has applied as certainly applied before. Both ends use this
/// one constant.
pub const IDENTITY_WINDOW: u64 = 1024;

/// Who sent a batch and where it sits in that sender's sequence. A retried
/// batch keeps its identity, which is what lets the aggregator drop
/// duplicates. `edge_id` is not in the blob: ingest takes it from the
/// client certificate and carries it as the Kafka key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    /// Random, chosen when the shipper's spool is created.
    pub epoch: u64,
    /// Strictly increasing within an epoch, starting at 1.
    pub seq: u64,
}

/// Bounds a decoder enforces. The defaults suit ingest and the aggregator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted uncompressed payload, in bytes.
    pub max_raw_len: usize,
    /// Most records in one batch.
    pub max_records: u32,
    /// Cap'n Proto traversal limit per record, in 8-byte words.
    pub traversal_limit_words: usize,
    /// Cap'n Proto pointer nesting limit per record.
    pub nesting_limit: i32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_raw_len: 32 << 20,
            max_records: 200_000,
            // A record carries at most a few long texts (a 1 MiB line at worst).
            traversal_limit_words: (2 << 20) / 8,
            nesting_limit: 8,
        }
    }
}

/// Why a blob was rejected. The messages name the offending value, so a log
/// line or NACK reason is enough to understand the failure.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch is {0} bytes, shorter than its {HEADER_LEN}-byte header")]
    Truncated(usize),
    #[error("batch does not start with the magic \"SLCB\"")]
    BadMagic,
    #[error("batch format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    #[error("batch header has non-zero reserved bytes")]
    Reserved,
    #[error("batch claims {claimed} uncompressed bytes; the limit is {limit}")]
    RawTooLarge { claimed: usize, limit: usize },
    #[error("batch claims {claimed} uncompressed bytes from {compressed} compressed ones, beyond LZ4's maximum ratio")]
    ImpossibleRatio { claimed: usize, compressed: usize },
    #[error("batch claims {claimed} records; the limit is {limit}")]
    TooManyRecords { claimed: u32, limit: u32 },
    #[error("batch payload length {0} is not a multiple of 8")]
    Misaligned(usize),
    #[error("LZ4 block is corrupt: {0}")]
    Lz4(String),
    #[error("LZ4 block decompressed to {actual} bytes, header says {claimed}")]
    RawLengthMismatch { claimed: usize, actual: usize },
    #[error("CRC32C mismatch: recorded {expected:#010x}, computed {actual:#010x}")]
    Crc { expected: u32, actual: u32 },
    #[error("record {index} is invalid: {reason}")]
    Record { index: u32, reason: String },
    #[error("batch holds {actual} records, header says {claimed}")]
    CountMismatch { claimed: u32, actual: u32 },
}

/// Accumulates records into the uncompressed payload of one batch.
///
/// ```
/// use schemas::batch::{BatchBuilder, BatchId, Limits, decode};
/// use schemas::Record;
///
/// let mut builder = BatchBuilder::new();
/// builder.push(&Record { zone: "example.com", status: 200, ..Record::default() });
/// let blob = builder.seal(BatchId { epoch: 7, seq: 1 });
///
/// let batch = decode(&blob, &Limits::default()).unwrap();
/// assert_eq!(batch.id(), BatchId { epoch: 7, seq: 1 });
/// let mut zones = Vec::new();
/// batch.for_each(|r| zones.push(r.zone.to_owned())).unwrap();
/// assert_eq!(zones, ["example.com"]);
/// ```
///
/// Encoding and sealing reuse the builder's buffers, so in the steady state
/// a record costs no allocation but Cap'n Proto's small segment table, and a
/// sealed blob is allocated once, at its exact size.
#[derive(Default)]
pub struct BatchBuilder {
    raw: Vec<u8>,
    count: u32,
    /// Where a record's message is built before it is appended to `raw`.
    scratch: Vec<capnp::Word>,
    /// LZ4 output, before it is copied into the blob.
    compressed: Vec<u8>,
}

/// Records whose message may be larger than this many words (32 KiB: a
/// very long line) are built in a heap segment of their own instead of the
/// reused scratch space.
const SCRATCH_WORDS: usize = 4096;

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("count", &self.count)
            .field("raw_len", &self.raw.len())
            .finish()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one record.
    pub fn push(&mut self, record: &Record<'_>) {
        // One first segment large enough for the whole record: Cap'n Proto
        // zeroes only that much (its default is a fresh, zeroed 8 KiB) and
        // the message is always a single segment.
        let words = record.message_words();
        if words <= SCRATCH_WORDS {
            if self.scratch.len() < words {
                self.scratch = capnp::Word::allocate_zeroed_vec(words.next_power_of_two());
            }
            let scratch = capnp::Word::words_to_bytes_mut(&mut self.scratch[..words]);
            let allocator = message::ScratchSpaceHeapAllocator::new(scratch);
            append(&mut self.raw, message::Builder::new(allocator), record);
        } else {
            // Cap'n Proto's largest segment is 2^29 words (4 GiB).
            let words = u32::try_from(words).map_or(1 << 29, |w| w.min(1 << 29));
            let allocator = message::HeapAllocator::new().first_segment_words(words);
            append(&mut self.raw, message::Builder::new(allocator), record);
        }
        self.count += 1;
    }

    /// Records pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Uncompressed payload size so far, for size-based sealing.
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// Compresses the payload into a blob and resets the builder for reuse.
    ///
    /// The blob's capacity is its length: it is kept until ingest acks it,
    /// so it must not hold on to a payload-sized allocation.
    pub fn seal(&mut self, id: BatchId) -> Vec<u8> {
        let raw_len = u32::try_from(self.raw.len()).expect("a batch payload fits in 4 GiB");
        let mut header = [0u8; HEADER_LEN];
        header[0..4].copy_from_slice(MAGIC);
        header[4] = FORMAT_VERSION;
        header[8..16].copy_from_slice(&id.epoch.to_be_bytes());
        header[16..24].copy_from_slice(&id.seq.to_be_bytes());
        header[24..28].copy_from_slice(&self.count.to_be_bytes());
        header[28..32].copy_from_slice(&raw_len.to_be_bytes());
        let crc = checksum(&header[..32], &self.raw);
        header[32..36].copy_from_slice(&crc.to_be_bytes());
        let bound = lz4_flex::block::get_maximum_output_size(self.raw.len());
        if self.compressed.len() < bound {
            self.compressed.resize(bound, 0);
        }
        let written = lz4_flex::block::compress_into(&self.raw, &mut self.compressed)
            .expect("output sized by get_maximum_output_size");
        let mut blob = Vec::with_capacity(HEADER_LEN + written);
        blob.extend_from_slice(&header);
        blob.extend_from_slice(&self.compressed[..written]);
        self.raw.clear();
        self.count = 0;
        blob
    }
}

/// Builds `record` in `message` and appends it, framed, to `raw`.
fn append<A: message::Allocator>(
    raw: &mut Vec<u8>,
    mut message: message::Builder<A>,
    record: &Record<'_>,
) {
    record.write_to(message.init_root::<request::Builder<'_>>());
    debug_assert_eq!(
        message.get_segments_for_output().len(),
        1,
        "Record::message_words is an upper bound"
    );
    serialize::write_message(raw, &message).expect("writing to a Vec cannot fail");
}

/// A decoded, verified batch: the header checked, the payload decompressed
/// and its CRC matched, every record read and checked once by [`decode`]
/// and kept: its numbers and enums as they are, its texts in one buffer.
/// Visiting the records cannot fail on bad data and reads no Cap'n Proto.
///
/// It holds no more than its payload's size in texts (each record's texts
/// fit in its message), and a fixed size per record and per extra.
pub struct DecodedBatch {
    id: BatchId,
    records: Vec<Stored>,
    /// Every text of every record, back to back.
    texts: String,
    extras: Vec<StoredExtra>,
}

impl std::fmt::Debug for DecodedBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedBatch")
            .field("id", &self.id)
            .field("count", &self.records.len())
            .field("texts_len", &self.texts.len())
            .finish()
    }
}

/// Reads only the identity and record count of a blob, checking no more than
/// the header. For logs and metrics before (or instead of) a full decode.
pub fn peek(blob: &[u8]) -> Result<(BatchId, u32), BatchError> {
    let header = Header::parse(blob)?;
    Ok((header.id, header.count))
}

struct Header {
    id: BatchId,
    count: u32,
    raw_len: usize,
    crc: u32,
}

impl Header {
    fn parse(blob: &[u8]) -> Result<Header, BatchError> {
        let header: &[u8; HEADER_LEN] = blob
            .get(..HEADER_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(BatchError::Truncated(blob.len()))?;
        if &header[0..4] != MAGIC {
            return Err(BatchError::BadMagic);
        }
        if header[4] != FORMAT_VERSION {
            return Err(BatchError::UnsupportedVersion(header[4]));
        }
        if header[5..8] != [0, 0, 0] {
            return Err(BatchError::Reserved);
        }
        let u64_at = |at: usize| u64::from_be_bytes(header[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_be_bytes(header[at..at + 4].try_into().unwrap());
        Ok(Header {
            id: BatchId {
                epoch: u64_at(8),
                seq: u64_at(16),
            },
            count: u32_at(24),
            raw_len: u32_at(28) as usize,
            crc: u32_at(32),
        })
    }
}

fn checksum(header: &[u8], raw: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header), raw)
}

/// Verifies a blob completely and returns it decoded. See the module doc
/// for what is checked, in which order. [`Decoder::decode`] does the same
/// with a buffer it keeps.
pub fn decode(blob: &[u8], limits: &Limits) -> Result<DecodedBatch, BatchError> {
    Decoder::new().decode(blob, limits)
}

/// The smallest framed message: its segment table (one word for one
/// segment) and a segment of one word (the root pointer).
const MIN_MESSAGE_BYTES: usize = 16;

/// Decodes blobs as [`decode`] does, reusing its decompression buffer
/// from one blob to the next (allocated once, never zeroed again, as a
/// [`Validator`]'s): for a caller that decodes in a loop, such as the
/// aggregator. The buffer grows to the largest payload decoded, at most
/// [`Limits::max_raw_len`], and is kept until the decoder is dropped.
///
/// ```
/// use schemas::batch::{BatchBuilder, BatchId, Decoder, Limits};
/// use schemas::Record;
///
/// let mut builder = BatchBuilder::new();
/// builder.push(&Record { zone: "example.com", status: 200, ..Record::default() });
/// let blob = builder.seal(BatchId { epoch: 7, seq: 1 });
///
/// let mut decoder = Decoder::new();
/// let batch = decoder.decode(&blob, &Limits::default()).unwrap();
/// assert_eq!((batch.id(), batch.len()), (BatchId { epoch: 7, seq: 1 }, 1));
/// ```
#[derive(Default)]
pub struct Decoder {
    /// The last payload, and spare capacity from larger earlier ones.
    payload: Vec<capnp::Word>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("buffer_bytes", &(self.payload.len() * 8))
            .finish()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `blob` completely and returns it decoded; see [`decode`].
    pub fn decode(&mut self, blob: &[u8], limits: &Limits) -> Result<DecodedBatch, BatchError> {
        let header = unpack(blob, limits, &mut self.payload)?;
        let payload = &capnp::Word::words_to_bytes(&self.payload)[..header.raw_len];
        // At most one record per smallest message, whatever the header
        // claims; every record's texts fit in its message.
        let mut records =
            Vec::with_capacity((header.count as usize).min(payload.len() / MIN_MESSAGE_BYTES));
        let mut texts = String::with_capacity(payload.len());
        let mut extras = Vec::new();
        for_each_root(
            payload,
            header.count,
            reader_options(limits),
            |index, root, words| {
                let record =
                    Stored::read(root, words, &mut texts, &mut extras).map_err(invalid(index))?;
                records.push(record);
                Ok(())
            },
        )?;
        Ok(DecodedBatch {
            id: header.id,
            records,
            texts,
            extras,
        })
    }
}

/// Checks blobs exactly as [`decode`] does, for a caller that needs only
/// the verdict.
///
/// ```
/// use schemas::batch::{BatchBuilder, BatchId, Limits, Validator};
/// use schemas::Record;
///
/// let mut builder = BatchBuilder::new();
/// builder.push(&Record { zone: "example.com", status: 200, ..Record::default() });
/// let blob = builder.seal(BatchId { epoch: 7, seq: 1 });
///
/// let mut validator = Validator::new();
/// let (id, records) = validator.validate(&blob, &Limits::default()).unwrap();
/// assert_eq!((id, records), (BatchId { epoch: 7, seq: 1 }, 1));
/// ```
///
/// The same blob gets the same verdict, and the same [`BatchError`], from
/// both. A validator keeps nothing of a blob but is cheaper than `decode`
/// in a loop: it decompresses into one buffer that it reuses (allocated
/// once, never zeroed again: LZ4 writes every byte of the payload, whose
/// length is checked) and checks each record without building a
/// [`Record`]. Its buffer grows to the largest payload validated, at most
/// [`Limits::max_raw_len`], and is kept until the validator is dropped.
#[derive(Default)]
pub struct Validator {
    /// The last payload, and spare capacity from larger earlier ones.
    payload: Vec<capnp::Word>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("buffer_bytes", &(self.payload.len() * 8))
            .finish()
    }
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `blob` as [`decode`] does; returns its identity and record
    /// count.
    pub fn validate(&mut self, blob: &[u8], limits: &Limits) -> Result<(BatchId, u32), BatchError> {
        let header = unpack(blob, limits, &mut self.payload)?;
        let payload = &capnp::Word::words_to_bytes(&self.payload)[..header.raw_len];
        for_each_root(
            payload,
            header.count,
            reader_options(limits),
            |index, root, words| Record::check(root, words).map_err(invalid(index)),
        )?;
        Ok((header.id, header.count))
    }
}

/// Checks the header against `limits`, decompresses the payload into the
/// first `raw_len` bytes of `payload` (growing it if it is shorter) and
/// checks the CRC.
fn unpack(
    blob: &[u8],
    limits: &Limits,
    payload: &mut Vec<capnp::Word>,
) -> Result<Header, BatchError> {
    let header = Header::parse(blob)?;
    let compressed = &blob[HEADER_LEN..];
    if header.raw_len > limits.max_raw_len {
        return Err(BatchError::RawTooLarge {
            claimed: header.raw_len,
            limit: limits.max_raw_len,
        });
    }
    if header.raw_len > compressed.len().saturating_mul(LZ4_MAX_RATIO) {
        return Err(BatchError::ImpossibleRatio {
            claimed: header.raw_len,
            compressed: compressed.len(),
        });
    }
    if header.count > limits.max_records {
        return Err(BatchError::TooManyRecords {
            claimed: header.count,
            limit: limits.max_records,
        });
    }
    if header.raw_len % 8 != 0 {
        return Err(BatchError::Misaligned(header.raw_len));
    }

    let words = header.raw_len / 8;
    if payload.len() < words {
        // What it held is overwritten anyway: no need to copy it over.
        *payload = capnp::Word::allocate_zeroed_vec(words);
    }
    // Exactly `raw_len` bytes, so a block that decompresses to more is an
    // error here, however large the buffer is.
    let raw = &mut capnp::Word::words_to_bytes_mut(payload)[..header.raw_len];
    let actual = lz4_flex::block::decompress_into(compressed, raw)
        .map_err(|e| BatchError::Lz4(e.to_string()))?;
    if actual != header.raw_len {
        return Err(BatchError::RawLengthMismatch {
            claimed: header.raw_len,
            actual,
        });
    }
    let crc = checksum(&blob[..32], raw);
    if crc != header.crc {
        return Err(BatchError::Crc {
            expected: header.crc,
            actual: crc,
        });
    }
    Ok(header)
}

fn reader_options(limits: &Limits) -> ReaderOptions {
    let mut options = ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(limits.traversal_limit_words))
        .nesting_limit(limits.nesting_limit);
    options
}

/// Reads the payload's messages in order and calls `f` with the index of
/// each, its root and its size in words. The payload must hold exactly
/// `count` messages.
fn for_each_root(
    payload: &[u8],
    count: u32,
    options: ReaderOptions,
    mut f: impl FnMut(u32, request::Reader<'_>, usize) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let mut rest = payload;
    let mut index = 0u32;
    while !rest.is_empty() {
        if index == count {
            // Counted before reading, so a payload with extra messages is
            // reported as such rather than as a read error.
            return Err(BatchError::CountMismatch {
                claimed: count,
                actual: index + 1,
            });
        }
        let unread = rest.len();
        let segments =
            NoAllocSliceSegments::from_slice(&mut rest, options).map_err(invalid(index))?;
        let message_words = (unread - rest.len()) / 8;
        let read = |root: request::Reader<'_>| f(index, root, message_words);
        // Every message our shipper writes is one segment. Cap'n Proto asks
        // for the segment at every pointer it follows, which a plain slice
        // answers faster than `NoAllocSliceSegments` (callgrind: about 500
        // of 4,800 instructions a record in ingest's validation).
        match segments.get_segment(0) {
            Some(only) if segments.len() == 1 => with_root(&[only][..], options, index, read)?,
            _ => with_root(segments, options, index, read)?,
        }
        index += 1;
    }
    if index != count {
        return Err(BatchError::CountMismatch {
            claimed: count,
            actual: index,
        });
    }
    Ok(())
}

/// Calls `f` with the root of the message in `segments`, which is record
/// `index`.
fn with_root<S: ReaderSegments>(
    segments: S,
    options: ReaderOptions,
    index: u32,
    f: impl FnOnce(request::Reader<'_>) -> Result<(), BatchError>,
) -> Result<(), BatchError> {
    let message = message::Reader::new(segments, options);
    f(message.get_root().map_err(invalid(index))?)
}

/// Record `index` cannot be read.
fn invalid(index: u32) -> impl Fn(capnp::Error) -> BatchError {
    move |e| BatchError::Record {
        index,
        reason: e.to_string(),
    }
}

impl DecodedBatch {
    pub fn id(&self) -> BatchId {
        self.id
    }

    /// Number of records.
    pub fn len(&self) -> u32 {
        // `decode` checked it against the header's u32 count.
        self.records.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Calls `f` with each record in order. Records borrow from the batch.
    /// Every record was checked by `decode`: this returns an error only if
    /// `f` does, which it cannot.
    pub fn for_each(&self, mut f: impl FnMut(&Record<'_>)) -> Result<(), BatchError> {
        self.try_for_each(|record| {
            f(record);
            Ok(())
        })
    }

    /// Like [`for_each`](Self::for_each), stopping at the first error `f`
    /// returns.
    pub fn try_for_each(
        &self,
        mut f: impl FnMut(&Record<'_>) -> Result<(), BatchError>,
    ) -> Result<(), BatchError> {
        // One vector for every record's extras: no allocation per record.
        let mut extras = Vec::new();
        for stored in &self.records {
            let record = stored.record(&self.texts, &self.extras, extras);
            f(&record)?;
            extras = record.extras;
            extras.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CacheStatus, Method, Scheme, TlsProtocol};

    fn full(path: &str) -> Record<'_> {
        Record {
            timestamp_ns: 1_795_341_600_000_000_000,
            zone: "shop.example",
            client_ip: Some("2001:db8::1".parse().unwrap()),
            method: Method::Other,
            method_other: "PROPFIND",
            scheme: Scheme::Https,
            host: "Shop.Example:8443",
            path,
            query: "a=1&b=2",
            protocol: "HTTP/1.1",
            status: 207,
            response_bytes: 1234,
            request_bytes: 567,
            request_time_us: 89,
            upstream_time_us: Some(42),
            cache_status: CacheStatus::Hit,
            referer: "https://shop.example/",
            user_agent: "curl/8.5.0",
            content_type: "text/html",
            country: "NL",
            tls_protocol: TlsProtocol::Tls13,
            extras: vec![("request_id", "abc123"), ("empty_value", "")],
        }
    }

    /// Each record's message is one segment sized within `message_words`,
    /// from the scratch space or (for a huge record) the heap, and decodes
    /// to what went in.
    #[test]
    fn records_of_every_size_encode_as_one_segment_and_round_trip() {
        let long = "/x".repeat(40_000);
        let texts_of_every_length: Vec<String> = (0..40).map(|n| "p".repeat(n)).collect();
        let mut records = vec![Record::default(), full("/"), full(&long)];
        records.extend(texts_of_every_length.iter().map(|p| full(p)));
        for record in &records {
            let mut message = message::Builder::new_default();
            record.write_to(message.init_root::<request::Builder<'_>>());
            let words = message.get_segments_for_output()[0].len() / 8;
            assert!(
                words <= record.message_words(),
                "{words} words > bound {}",
                record.message_words()
            );
        }
        let mut builder = BatchBuilder::new();
        for record in &records {
            builder.push(record);
        }
        let blob = builder.seal(BatchId { epoch: 1, seq: 1 });
        let batch = decode(&blob, &Limits::default()).unwrap();
        let mut decoded = Vec::new();
        batch.for_each(|r| decoded.push(format!("{r:?}"))).unwrap();
        let expected: Vec<String> = records.iter().map(|r| format!("{r:?}")).collect();
        assert_eq!(decoded, expected);
    }

    /// A validator's buffer still holds the bytes of earlier, larger
    /// payloads; each batch must be judged on its own bytes, as `decode`
    /// judges it.
    #[test]
    fn a_reused_validator_judges_every_batch_as_decode_does() {
        let seal = |records: usize, seq| {
            let mut builder = BatchBuilder::new();
            for _ in 0..records {
                builder.push(&full("/index.html"));
            }
            builder.seal(BatchId { epoch: 3, seq })
        };
        let large = seal(300, 1);
        let small = seal(2, 2);
        let empty = seal(0, 3);
        // Claims one word more than its block holds, which the stale bytes
        // of `large` would supply if the length were not checked.
        let mut short = small.clone();
        let raw_len = u32::from_be_bytes(small[28..32].try_into().unwrap());
        short[28..32].copy_from_slice(&(raw_len + 8).to_be_bytes());

        let limits = Limits::default();
        let mut validator = Validator::new();
        let blobs: [&[u8]; 7] = [
            &large,
            &small,
            &short,
            &empty,
            &large[..100],
            &large,
            &small,
        ];
        let verdicts: Vec<_> = blobs
            .iter()
            .map(|blob| {
                let decoded = decode(blob, &limits).map(|b| (b.id(), b.len()));
                let validated = validator.validate(blob, &limits);
                assert_eq!(validated, decoded);
                validated
            })
            .collect();
        let id = |seq| BatchId { epoch: 3, seq };
        assert_eq!(verdicts[0], Ok((id(1), 300)));
        assert_eq!(verdicts[1], Ok((id(2), 2)));
        assert!(
            matches!(verdicts[2], Err(BatchError::RawLengthMismatch { .. })),
            "{:?}",
            verdicts[2]
        );
        assert_eq!(verdicts[3], Ok((id(3), 0)));
        assert!(verdicts[4].is_err());
        assert_eq!(verdicts[6], Ok((id(2), 2)));
    }

    /// Our builder writes every record as one segment, which validation
    /// reads the quick way; a message of many segments (far pointers) from
    /// another writer is just as valid and must read the same.
    #[test]
    fn a_record_spread_over_many_segments_reads_the_same() {
        let record = full("/many/segments");
        let allocator = message::HeapAllocator::new()
            .first_segment_words(2)
            .allocation_strategy(message::AllocationStrategy::FixedSize);
        let mut message = message::Builder::new(allocator);
        record.write_to(message.init_root::<request::Builder<'_>>());
        assert!(message.get_segments_for_output().len() > 5);
        let mut builder = BatchBuilder::new();
        serialize::write_message(&mut builder.raw, &message).unwrap();
        builder.count = 1;
        builder.push(&full("/one/segment"));
        let blob = builder.seal(BatchId { epoch: 5, seq: 1 });

        let limits = Limits::default();
        let batch = decode(&blob, &limits).unwrap();
        let mut read = Vec::new();
        batch.for_each(|r| read.push(format!("{r:?}"))).unwrap();
        let expected = [record, full("/one/segment")].map(|r| format!("{r:?}"));
        assert_eq!(read, expected);
        assert_eq!(
            Validator::new().validate(&blob, &limits),
            Ok((BatchId { epoch: 5, seq: 1 }, 2))
        );
    }

    /// Cap'n Proto lets two pointers share one text; a record whose texts
    /// add up to more than its message is refused (by `decode` and the
    /// validator alike), so that a decoded batch holds no more texts than
    /// its payload.
    #[test]
    fn a_record_whose_texts_share_bytes_is_refused() {
        let zone = "z".repeat(200);
        let record = Record {
            zone: &zone,
            path: "/p",
            ..Record::default()
        };
        let mut message = message::Builder::new_default();
        record.write_to(message.init_root::<request::Builder<'_>>());
        let segment = message.get_segments_for_output()[0].to_vec();
        let word = |i: usize| u64::from_le_bytes(segment[i * 8..i * 8 + 8].try_into().unwrap());
        // The root struct's pointer section, and the target of each of its
        // list pointers.
        let root = word(0);
        let data_words = ((root >> 32) & 0xffff) as usize;
        let pointers_at = 1 + ((root as u32 as i32) >> 2) as usize + data_words;
        let offset = |p: u64| ((p as u32 as i32) >> 2) as i64;
        let target = |i: usize| i as i64 + 1 + offset(word(i));
        let text_at = |i: usize| {
            let start = target(i) as usize * 8;
            &segment[start..start + 4]
        };
        let slots = (root >> 48) as usize;
        let zone = (pointers_at..pointers_at + slots)
            .find(|&i| word(i) & 3 == 1 && text_at(i) == b"zzzz")
            .expect("the zone's pointer");
        let path = (pointers_at..pointers_at + slots)
            .find(|&i| word(i) & 3 == 1 && text_at(i) == b"/p\0\0")
            .expect("the path's pointer");

        let seal = |segment: &[u8]| {
            let mut builder = BatchBuilder::new();
            builder.raw.extend_from_slice(&0u32.to_le_bytes());
            builder
                .raw
                .extend_from_slice(&((segment.len() / 8) as u32).to_le_bytes());
            builder.raw.extend_from_slice(segment);
            builder.count = 1;
            builder.seal(BatchId { epoch: 6, seq: 1 })
        };
        let limits = Limits::default();
        let batch = decode(&seal(&segment), &limits).unwrap();
        let mut read = Vec::new();
        batch.for_each(|r| read.push(format!("{r:?}"))).unwrap();
        assert_eq!(read, [format!("{record:?}")]);

        // Every other text's pointer (host, path, protocol) aimed at the
        // zone's 200 bytes: they add up to more than the message's size.
        let mut shared = segment.clone();
        let aimed = |from: usize| {
            let delta = target(zone) - (from as i64 + 1);
            let kind_and_size = word(zone) & !0xffff_fffc | (word(zone) & 3);
            kind_and_size | ((delta as u32 as u64) << 2 & 0xffff_fffc)
        };
        for slot in pointers_at..pointers_at + slots {
            if slot != zone && word(slot) & 3 == 1 && target(slot) != target(zone) {
                shared[slot * 8..slot * 8 + 8].copy_from_slice(&aimed(slot).to_le_bytes());
            }
        }
        assert_ne!(
            shared[path * 8..path * 8 + 8],
            segment[path * 8..path * 8 + 8]
        );
        let blob = seal(&shared);
        let decoded = decode(&blob, &limits).map(|b| b.len());
        assert!(
            matches!(&decoded, Err(BatchError::Record { index: 0, reason }) if reason.contains("shared texts")),
            "{decoded:?}"
        );
        assert_eq!(
            Validator::new().validate(&blob, &limits).map(|(_, n)| n),
            decoded
        );
    }

    #[test]
    fn a_sealed_blob_holds_no_spare_capacity_and_the_builder_is_reusable() {
        let mut builder = BatchBuilder::new();
        for seq in 1..=3 {
            for _ in 0..500 {
                builder.push(&full("/index.html"));
            }
            let blob = builder.seal(BatchId { epoch: 9, seq });
            assert_eq!(blob.capacity(), blob.len());
            assert!(builder.is_empty() && builder.raw_len() == 0);
            let batch = decode(&blob, &Limits::default()).unwrap();
            assert_eq!((batch.id().seq, batch.len()), (seq, 500));
        }
    }
}
