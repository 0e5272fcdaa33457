//! Seed inputs for the fuzz targets in `schemas/fuzz/`: a few valid blobs
//! and a frame stream holding every frame type, so the fuzzers start past
//! the magic, the CRCs and LZ4. As a test, checks that the seeds are valid;
//! with `SLUICE_FUZZ_SEEDS_DIR` set, also writes them to
//! `$SLUICE_FUZZ_SEEDS_DIR/<target>/<name>` (see `schemas/fuzz/README.md`).

use std::path::Path;

use bytes::{Bytes, BytesMut};
use schemas::batch::{self, BatchBuilder, BatchId, Limits};
use schemas::{CacheStatus, Frame, FrameCodec, Method, Record, Scheme, TlsProtocol};
use tokio_util::codec::{Decoder, Encoder};

fn full<'a>(path: &'a str, extras: Vec<(&'a str, &'a str)>) -> Record<'a> {
    Record {
        timestamp_ns: 1_795_341_600_000_000_000,
        zone: "shop.example",
        client_ip: Some("2001:db8::1".parse().expect("literal")),
        method: Method::Other,
        method_other: "PROPFIND",
        scheme: Scheme::Https,
        host: "shop.example",
        path,
        query: "a=1",
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
        extras,
    }
}

fn seal(records: &[Record<'_>], seq: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for r in records {
        builder.push(r);
    }
    builder.seal(BatchId { epoch: 7, seq })
}

/// Small valid blobs: empty, minimal, full, several records with extras.
fn blobs() -> Vec<(&'static str, Vec<u8>)> {
    let minimal = Record {
        zone: "a.example",
        client_ip: Some("192.0.2.1".parse().expect("literal")),
        status: 200,
        ..Record::default()
    };
    let several: Vec<Record<'_>> = (0..4)
        .map(|i| {
            full(
                ["/", "/a", "/bb", "/ccc"][i],
                vec![("request_id", "abc"); i],
            )
        })
        .collect();
    vec![
        ("empty", seal(&[], 1)),
        ("minimal", seal(&[minimal], 2)),
        ("full", seal(&[full("/index.html", vec![])], 3)),
        ("several", seal(&several, 4)),
    ]
}

/// One stream with a frame of every type, the batch carrying a valid blob.
fn frame_stream() -> Vec<u8> {
    let id = BatchId { epoch: 7, seq: 3 };
    let frames = [
        Frame::Hello {
            min_version: 1,
            max_version: 1,
            agent: "shipper/0.1".into(),
        },
        Frame::Welcome {
            version: 1,
            max_frame: 16 << 20,
            window: 64,
        },
        Frame::Batch(Bytes::from(seal(&[full("/", vec![])], 3))),
        Frame::Ack(id),
        Frame::Nack {
            id,
            retryable: true,
            reason: "busy".into(),
        },
        Frame::Ping(1),
        Frame::Pong(1),
        Frame::GoAway("bye".into()),
    ];
    let mut codec = FrameCodec::default();
    let mut out = BytesMut::new();
    for frame in frames {
        codec.encode(frame, &mut out).expect("encodes");
    }
    out.to_vec()
}

#[test]
fn seeds_are_valid_and_written_on_request() {
    let blobs = blobs();
    for (name, blob) in &blobs {
        batch::decode(blob, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let stream = frame_stream();
    let mut buf = BytesMut::from(&stream[..]);
    let mut codec = FrameCodec::default();
    let mut n = 0;
    while codec.decode(&mut buf).expect("decodes").is_some() {
        n += 1;
    }
    assert_eq!((n, buf.len()), (8, 0));

    let Some(dir) = std::env::var_os("SLUICE_FUZZ_SEEDS_DIR") else {
        return;
    };
    let dir = Path::new(&dir);
    for (name, blob) in &blobs {
        write(&dir.join("batch_validator"), name, blob);
    }
    // frame_decoder reads `limit | chunking | stream`: the default
    // max_frame, in one piece and in chunks of up to 7 bytes.
    write(
        &dir.join("frame_decoder"),
        "all-types",
        &[[1, 0].as_slice(), &stream].concat(),
    );
    write(
        &dir.join("frame_decoder"),
        "all-types-chunked",
        &[[1, 7].as_slice(), &stream].concat(),
    );
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
