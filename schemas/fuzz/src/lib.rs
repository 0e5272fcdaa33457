//! What the fuzz targets in `fuzz_targets/` share: records the fuzzer
//! chooses, the checks every decoded batch must pass, an allocator that
//! measures the peak heap of one call, and the blob layout of
//! [`schemas::batch`] for mutating a sealed blob *under* its CRC.
//!
//! See `README.md` beside this crate for how to run the targets.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use schemas::batch::{self, BatchBuilder, BatchError, DecodedBatch, Limits, Validator};
use schemas::{CacheStatus, Method, Record, Scheme, TlsProtocol};

/// The owned data of one [`Record`], chosen by the fuzzer.
#[derive(Debug, Arbitrary)]
pub struct OwnedRecord {
    timestamp_ns: i64,
    client_ip: Ip,
    /// Method, scheme, cache status, TLS protocol; out-of-range values pick
    /// each enum's catch-all.
    enums: [u8; 4],
    status: u16,
    response_bytes: u64,
    request_bytes: u64,
    request_time_us: u32,
    upstream_time_us: Option<u32>,
    texts: [String; 10],
    extras: Vec<(String, String)>,
}

#[derive(Debug, Arbitrary)]
enum Ip {
    None,
    V4([u8; 4]),
    V6([u8; 16]),
}

impl OwnedRecord {
    pub fn record(&self) -> Record<'_> {
        let [method, scheme, cache_status, tls_protocol] = self.enums.map(u16::from);
        let t = &self.texts;
        Record {
            timestamp_ns: self.timestamp_ns,
            zone: &t[0],
            client_ip: match self.client_ip {
                Ip::None => None,
                Ip::V4(b) => Some(IpAddr::from(b)),
                Ip::V6(b) => Some(IpAddr::from(b)),
            },
            method: Method::try_from(method).unwrap_or(Method::Other),
            method_other: &t[1],
            scheme: Scheme::try_from(scheme).unwrap_or(Scheme::Unknown),
            host: &t[2],
            path: &t[3],
            query: &t[4],
            protocol: &t[5],
            status: self.status,
            response_bytes: self.response_bytes,
            request_bytes: self.request_bytes,
            request_time_us: self.request_time_us,
            upstream_time_us: self.upstream_time_us,
            cache_status: CacheStatus::try_from(cache_status).unwrap_or(CacheStatus::None),
            referer: &t[6],
            user_agent: &t[7],
            content_type: &t[8],
            country: &t[9],
            tls_protocol: TlsProtocol::try_from(tls_protocol).unwrap_or(TlsProtocol::None),
            extras: self
                .extras
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect(),
        }
    }
}

/// Every record of a batch with every field read (`Debug` formats them
/// all), in order.
pub fn records(batch: &DecodedBatch) -> Vec<String> {
    let mut out = Vec::with_capacity(batch.len() as usize);
    batch
        .for_each(|r| out.push(format!("{r:?}")))
        .expect("a batch that decoded reads again without error");
    out
}

/// What must hold for every blob that [`batch::decode`] accepted:
/// `peek` agrees with it, every record reads again, and the records
/// re-sealed by [`BatchBuilder`] decode to the very same records (so
/// validation accepts nothing the builder cannot represent).
pub fn check_decoded(blob: &[u8], batch: &DecodedBatch) {
    assert_eq!(
        batch::peek(blob).expect("peek accepts what decode accepted"),
        (batch.id(), batch.len()),
        "peek and decode disagree"
    );
    let first = records(batch);
    assert_eq!(first.len(), batch.len() as usize, "record count");

    let mut builder = BatchBuilder::new();
    batch
        .for_each(|r| builder.push(r))
        .expect("a batch that decoded reads again without error");
    let resealed = builder.seal(batch.id());
    let again = batch::decode(&resealed, &Limits::default()).expect("a re-sealed batch decodes");
    assert_eq!(again.id(), batch.id(), "identity after re-sealing");
    assert_eq!(records(&again), first, "records after re-sealing");
}

thread_local! {
    /// One validator for every input of a run, as ingest reuses one for
    /// many batches: each blob meets a buffer holding earlier payloads.
    static VALIDATOR: RefCell<Validator> = RefCell::new(Validator::new());
}

/// What must hold for every blob, whatever [`batch::decode`] said of it
/// (`decoded`): a reused [`Validator`] says the same, with the same error,
/// and holds no more heap for it than `decode` may.
pub fn check_validator_agrees(blob: &[u8], decoded: &Result<DecodedBatch, BatchError>) {
    let (validated, heap) =
        peak_heap(|| VALIDATOR.with(|v| v.borrow_mut().validate(blob, &Limits::default())));
    assert!(
        heap <= decode_heap_bound(blob.len()),
        "validate held {heap} heap bytes for a {}-byte blob",
        blob.len()
    );
    let decoded = decoded.as_ref().map(|b| (b.id(), b.len()));
    assert_eq!(
        validated.as_ref().copied(),
        decoded,
        "validate and decode disagree"
    );
}

/// A heap allocator that keeps the high-water mark of live bytes, so a
/// target can check what one call allocated at most. Install it in a target
/// with `#[global_allocator]`.
pub struct PeakAlloc;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        new
    }
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// Runs `f` and returns its result with the most heap bytes it held at
/// once (beyond what was live before). Meaningful only in a binary whose
/// global allocator is [`PeakAlloc`].
pub fn peak_heap<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let result = f();
    (result, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}

/// Most heap [`batch::decode`] may hold for a blob of `len` bytes: the
/// payload (LZ4 expands at most 255 times); as many bytes of texts (a
/// record's texts fit in its message); a stored record of at most 128 bytes
/// (asserted in `schemas`) per 16 bytes of payload, the smallest message;
/// the stored extras, 12 bytes each and at most one per 8-byte word of
/// payload, in a vector that may have doubled; a [`Record`]'s extras while
/// visiting (32 bytes each, the same number); and a little for error
/// messages. Anything more is an allocation the blob did not pay for.
pub fn decode_heap_bound(len: usize) -> usize {
    let payload = 255 * len;
    let texts = payload;
    let records = 128 * payload / 16;
    let extras = 2 * 12 * payload / 8;
    let visited = 32 * payload / 8;
    payload + texts + records + extras + visited + (64 << 10)
}

/// The blob layout of [`schemas::batch`] (see its module doc), which the
/// structure-aware target needs to change a sealed blob's payload and
/// seal it again, so that mutations get past the CRC to LZ4 and Cap'n
/// Proto. Only the fuzzer writes blobs this way.
pub mod blob {
    use schemas::batch::HEADER_LEN;

    const RAW_LEN_AT: usize = 28;
    const CRC_AT: usize = 32;
    /// The harness never decompresses more than this itself.
    const MAX_RAW: usize = 4 << 20;
    /// LZ4's largest expansion; `decode` refuses a blob claiming more.
    const LZ4_MAX_RATIO: usize = 255;

    /// The header's claimed uncompressed length.
    fn raw_len(blob: &[u8]) -> Option<usize> {
        let bytes = blob.get(RAW_LEN_AT..RAW_LEN_AT + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?) as usize)
    }

    /// The uncompressed payload, if the header and the LZ4 block allow.
    pub fn payload(blob: &[u8]) -> Option<Vec<u8>> {
        let block = blob.get(HEADER_LEN..)?;
        let len = raw_len(blob)?;
        if len > MAX_RAW || len > block.len().saturating_mul(LZ4_MAX_RATIO) {
            return None;
        }
        let mut raw = vec![0; len];
        let n = lz4_flex::block::decompress_into(block, &mut raw).ok()?;
        raw.truncate(n);
        Some(raw)
    }

    /// Replaces the blob's LZ4 block by `raw` compressed. With `fix_header`
    /// the raw length and the CRC are made to match `raw`.
    pub fn set_payload(blob: &mut Vec<u8>, raw: &[u8], fix_header: bool) {
        if blob.len() < HEADER_LEN {
            return;
        }
        blob.truncate(HEADER_LEN);
        blob.extend_from_slice(&lz4_flex::block::compress(raw));
        if fix_header {
            let len = u32::try_from(raw.len()).unwrap_or(u32::MAX);
            blob[RAW_LEN_AT..RAW_LEN_AT + 4].copy_from_slice(&len.to_be_bytes());
            set_crc(blob, raw);
        }
    }

    /// Makes the header's CRC match its other fields and the payload, if the
    /// payload can be decompressed as the header claims.
    pub fn fix_crc(blob: &mut [u8]) {
        if let Some(raw) = payload(blob) {
            set_crc(blob, &raw);
        }
    }

    fn set_crc(blob: &mut [u8], raw: &[u8]) {
        let crc = crc32c::crc32c_append(crc32c::crc32c(&blob[..CRC_AT]), raw);
        blob[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    }
}
