//! Throughput and CPU cost of ingest (TLS, validation, produce) against a
//! plain Kafka producer sending the same bytes: the benchmark of issue 4
//! (figures and commands in `BENCHMARKS.md`).
//!
//! ```text
//! cargo bench -p ingest --bench gateway -- [--batches N] [--records N] [--passes N] [--only validate|tls|kafka]
//! ```
//!
//! It seals `--batches` batches of `--records` nginx-like requests each
//! (fixed seed; `BatchBuilder`, as the shipper uses it), then measures in one
//! run, each figure the best of `--passes`:
//!
//! 1. **validation**: one `schemas::batch::Validator`, reused, checks every
//!    blob on this thread: the check ingest runs on every batch, as ingest
//!    runs it. Records per CPU-second of one core.
//! 2. **TLS receive**: the blobs as `Batch` frames through a TLS 1.3
//!    connection held in memory. Only the server side is timed: rustls
//!    decrypts and `FrameCodec` cuts frames, as ingest's connection task does.
//! 3. **plain producer**, the baseline: ingest's own [`KafkaSink`] (one
//!    rdkafka `FutureProducer` with ingest's settings, key and headers) in
//!    this process, as many messages in flight as ingest's window, to a
//!    private tansu broker. No TLS, no validation.
//! 4. **ingest**: the real `ingest` binary against the same broker. A client
//!    in this process speaks the protocol over mutual TLS 1.3: `Hello`, then
//!    `Batch` frames up to the window from `Welcome`, counting `Ack`s. Timed
//!    from connect to the last `Ack`.
//!
//! For 3 and 4 it reports wall time, frames/s, MB/s, and the CPU time
//! (utime + stime from `/proc/PID/stat`) of the process doing the work, split
//! into the Kafka client's threads and the rest, and of the broker, with how
//! long the broker waited for a CPU. Every pass runs both on the same broker,
//! in alternating order; the overhead is given for the best passes and pass
//! by pass. Ratios are to the plain producer of the same run, so runs on a
//! busy machine compare.

// The broker, the ingest process, the PKI and the protocol client are the
// integration tests' own.
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::future::Future;
use std::hint::black_box;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use clap::{Parser, ValueEnum};
use futures::{SinkExt, StreamExt};
use ingest::config::KafkaSection;
use ingest::{KafkaSink, Sink, ValidBatch};
use schemas::tls::tokio_rustls::rustls;
use schemas::tls::tokio_rustls::rustls::pki_types::ServerName;
use schemas::tls::TlsFiles;
use schemas::wire::{DEFAULT_MAX_FRAME, PROTOCOL_VERSION};
use schemas::{
    BatchBuilder, BatchId, CacheStatus, Frame, FrameCodec, Limits, Method, Record, Scheme,
    Validator,
};
use support::{Broker, Ingest, Pki, Validity};
use tokio::sync::Semaphore;
use tokio_util::codec::{Decoder, Encoder};

const SEED: u64 = 0x5EED_1A6E;
const EDGE: &str = "bench-edge";
const EPOCH: u64 = 0x0123_4567_89AB;
/// The issue's targets.
const MAX_OVERHEAD: f64 = 0.20;
const MIN_RECORDS_PER_CORE: f64 = 2.5e6;
/// What `support`'s ingest configuration sets, so both producers give up
/// on a batch alike.
const DELIVERY_TIMEOUT_MS: u32 = 3000;
/// Plaintext read from rustls at a time (one TLS record at most).
const READ_CHUNK: usize = 16 << 10;
/// Thread names (`comm`, cut to 15 bytes) of the Kafka client: librdkafka's
/// own threads and rust-rdkafka's "producer polling thread".
const KAFKA_THREADS: &[&str] = &["rdk:", "producer pollin"];

#[derive(Debug, Parser)]
struct Args {
    /// Batches generated, and sent on each path in every pass.
    #[arg(long, default_value_t = 1000)]
    batches: usize,
    /// Records per batch (the shipper seals a batch at 2,000 by default).
    #[arg(long, default_value_t = 2000)]
    records: usize,
    /// Passes of every measurement; the best is reported.
    #[arg(long, default_value_t = 3)]
    passes: u32,
    /// Run only this part.
    #[arg(long)]
    only: Option<Part>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    /// `schemas::batch::Validator` alone.
    Validate,
    /// TLS receive and framing alone.
    Tls,
    /// The plain producer and ingest, through the broker.
    Kafka,
}

fn main() {
    let args = Args::parse();
    println!(
        "machine: {} cores, {}; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        load_average()
    );
    let started = Instant::now();
    let blobs = generate(args.batches, args.records, SEED);
    let bytes: usize = blobs.iter().map(|b| b.bytes.len()).sum();
    let raw: usize = blobs.iter().map(|b| b.raw_len).sum();
    let records = (args.batches * args.records) as f64;
    println!(
        "{} batches of {} records: {:.1} MiB of blobs, {:.0} KiB a batch; a record is {:.0} \
         bytes of Cap'n Proto, {:.0} compressed; generated in {:.1} s",
        args.batches,
        args.records,
        mib(bytes as u64),
        bytes as f64 / args.batches as f64 / 1024.0,
        raw as f64 / records,
        bytes as f64 / records,
        started.elapsed().as_secs_f64()
    );

    let dir = tempfile::tempdir().expect("a temporary directory");
    let pki = Pki::new(dir.path());
    let client = pki.client(EDGE, Validity::Current);
    let wanted = |part: Part| args.only.is_none_or(|only| only == part);
    let mut results = Results::default();

    if wanted(Part::Validate) {
        println!("\n== validation: schemas::batch::Validator on one core");
        results.validate = Some(best_of(args.passes, || validate_pass(&blobs)));
    }
    if wanted(Part::Tls) {
        println!("\n== TLS receive: rustls decryption and FrameCodec on one core, in memory");
        let tls = TlsPair {
            client: client.client_config().expect("client TLS config"),
            server: pki.server.server_config(false).expect("server TLS config"),
        };
        results.tls = Some(best_of(args.passes, || tls_pass(&tls, &blobs)));
    }
    if wanted(Part::Kafka) {
        let kafka = through_kafka(&args, &blobs, dir.path(), &pki, &client);
        results.plain = Some(kafka.plain);
        results.ingest = Some(kafka.ingest);
        results.overheads = kafka.overheads;
    }
    results.print();
}

// ---------------------------------------------------------------------------
// Measurements

#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    batches: u64,
    records: u64,
    /// Blob bytes.
    bytes: u64,
    wall: Duration,
    /// CPU time of the thread (in-process parts) or the process doing the
    /// work: this process for the plain producer, ingest's for ingest.
    cpu: Duration,
    /// Of `cpu`, the Kafka client's threads (Kafka paths only).
    kafka: Duration,
    /// The broker's CPU time (Kafka paths only).
    broker: Duration,
    /// How long the broker's threads waited for a CPU while runnable
    /// (Kafka paths only): what the other processes cost it on this machine.
    broker_waited: Duration,
    /// This process's CPU time while it was ingest's client: TLS encryption
    /// and framing on the shipper's side (ingest only).
    client: Duration,
}

impl Measured {
    fn of(blobs: &[Blob]) -> Measured {
        Measured {
            batches: blobs.len() as u64,
            records: blobs.iter().map(|b| u64::from(b.records)).sum(),
            bytes: blobs.iter().map(|b| b.bytes.len() as u64).sum(),
            ..Measured::default()
        }
    }
    fn per_wall_s(&self, n: u64) -> f64 {
        n as f64 / self.wall.as_secs_f64()
    }
    fn records_per_cpu_s(&self) -> f64 {
        self.records as f64 / self.cpu.as_secs_f64()
    }
    fn mb_per_s(&self) -> f64 {
        self.per_wall_s(self.bytes) / 1e6
    }
    /// Milliseconds of `cpu` per batch.
    fn ms_per_batch(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e3 / self.batches as f64
    }
    fn print_pass(&self, label: &str) {
        println!(
            "    {label}: {:.3} s wall, {:.3} s CPU; {} records/s, {:.0} MB/s",
            self.wall.as_secs_f64(),
            self.cpu.as_secs_f64(),
            thousands(self.per_wall_s(self.records)),
            self.mb_per_s()
        );
    }
}

/// The best of several passes: the least wall time, and the CPU figures of
/// the pass whose measured process used the least CPU.
fn best(passes: &[Measured]) -> Measured {
    let least_cpu = passes
        .iter()
        .min_by_key(|m| m.cpu)
        .expect("at least one pass");
    Measured {
        wall: passes.iter().map(|m| m.wall).min().expect("a pass"),
        ..*least_cpu
    }
}

fn best_of(passes: u32, mut pass: impl FnMut() -> Measured) -> Measured {
    let measured: Vec<Measured> = (1..=passes.max(1))
        .map(|i| {
            let m = pass();
            m.print_pass(&format!("pass {i}/{passes}"));
            m
        })
        .collect();
    best(&measured)
}

/// Runs `work` on this thread; wall and thread CPU time around it.
fn thread_timed(blobs: &[Blob], work: impl FnOnce()) -> Measured {
    let (wall, cpu) = (Instant::now(), thread_cpu());
    work();
    Measured {
        wall: wall.elapsed(),
        cpu: thread_cpu() - cpu,
        ..Measured::of(blobs)
    }
}

// ---------------------------------------------------------------------------
// In process: validation, TLS receive

/// What ingest does to every batch before Kafka sees it, with a validator
/// kept from batch to batch as ingest keeps one per validation slot.
fn validate_pass(blobs: &[Blob]) -> Measured {
    let limits = Limits::default();
    let mut validator = Validator::new();
    thread_timed(blobs, || {
        for blob in blobs {
            let (_, records) = validator
                .validate(black_box(&blob.bytes), &limits)
                .expect("generated blobs are valid");
            assert_eq!(records, blob.records);
        }
    })
}

struct TlsPair {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

/// A fresh TLS 1.3 session in memory; the client sends every blob as a
/// `Batch` frame (untimed), then the server side reads them (timed).
fn tls_pass(tls: &TlsPair, blobs: &[Blob]) -> Measured {
    let name = ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut client = rustls::Connection::from(
        rustls::ClientConnection::new(tls.client.clone(), name).expect("a TLS client"),
    );
    let mut server = rustls::Connection::from(
        rustls::ServerConnection::new(tls.server.clone()).expect("a TLS server"),
    );
    while client.is_handshaking() || server.is_handshaking() {
        transfer(&mut client, &mut server);
        transfer(&mut server, &mut client);
    }

    client.set_buffer_limit(None);
    let mut codec = FrameCodec::default();
    let mut frame = BytesMut::new();
    let wire: Vec<Vec<u8>> = blobs
        .iter()
        .map(|blob| {
            frame.clear();
            codec
                .encode(Frame::Batch(blob.bytes.clone()), &mut frame)
                .expect("encoding a frame");
            client
                .writer()
                .write_all(&frame)
                .expect("buffering plaintext");
            let mut records = Vec::with_capacity(frame.len() + frame.len() / 256 + 64);
            while client.wants_write() {
                client.write_tls(&mut records).expect("writing to a Vec");
            }
            records
        })
        .collect();

    let mut received = BytesMut::new();
    let mut frames = 0;
    let m = thread_timed(blobs, || {
        for records in &wire {
            let mut input = &records[..];
            while !input.is_empty() {
                server.read_tls(&mut input).expect("reading TLS records");
                server.process_new_packets().expect("valid TLS records");
                read_plaintext(&mut server, &mut received);
                while let Some(frame) = codec.decode(&mut received).expect("valid frames") {
                    assert!(matches!(frame, Frame::Batch(_)), "only batches were sent");
                    frames += 1;
                    black_box(frame);
                }
            }
        }
    });
    assert_eq!(frames, blobs.len(), "every frame arrived");
    m
}

/// Moves whatever `from` has to send into `to` (handshake messages).
fn transfer(from: &mut rustls::Connection, to: &mut rustls::Connection) {
    let mut wire = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut wire).expect("writing to a Vec");
    }
    let mut input = &wire[..];
    while !input.is_empty() {
        to.read_tls(&mut input).expect("reading TLS records");
        to.process_new_packets().expect("the TLS handshake");
    }
}

/// Appends the plaintext rustls holds to `into`, through zeroed room, as
/// tokio-rustls fills a `Framed` read buffer.
fn read_plaintext(conn: &mut rustls::Connection, into: &mut BytesMut) {
    loop {
        let filled = into.len();
        into.resize(filled + READ_CHUNK, 0);
        match conn.reader().read(&mut into[filled..]) {
            Ok(0) => {
                into.truncate(filled);
                return;
            }
            Ok(n) => into.truncate(filled + n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                into.truncate(filled);
                return;
            }
            Err(e) => panic!("reading plaintext: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Through Kafka: the plain producer and ingest

/// Runs the passes of both paths against one private broker and one ingest;
/// returns the best of each.
fn through_kafka(
    args: &Args,
    blobs: &[Blob],
    dir: &std::path::Path,
    pki: &Pki,
    client: &TlsFiles,
) -> Kafka {
    println!("\n== through Kafka: a private tansu broker (sqlite storage)");
    let broker = Broker::start(dir);
    let ingest = Ingest::start(dir, pki, &broker, "", "");
    let broker_pid = broker.pid().expect("the broker runs");
    let section = KafkaSection {
        bootstrap: broker.bootstrap(),
        topic: ingest.topic.clone(),
        delivery_timeout_ms: DELIVERY_TIMEOUT_MS,
        ..KafkaSection::default()
    };
    // The topic exists: ingest created it before it started listening.
    let sink = KafkaSink::new(&section, DEFAULT_MAX_FRAME as u32).expect("a Kafka producer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let edge: Arc<str> = EDGE.into();

    // One batch through each, so both producers are connected and warm.
    let window = runtime.block_on(async {
        let first = &blobs[0];
        sink.deliver(first.valid(&edge))
            .await
            .expect("the plain producer's first batch");
        let (mut conn, window) = open(ingest.addr, client).await;
        conn.send(Frame::Batch(first.bytes.clone()))
            .await
            .expect("sending a batch");
        match support::next_frame(&mut conn).await {
            Some(Frame::Ack(id)) if id == first.id => {}
            other => panic!("expected an Ack for the first batch, got {other:?}"),
        }
        conn.close().await.expect("closing the connection");
        window
    });
    println!(
        "  broker pid {broker_pid} on {}, ingest pid {} on {}, topic {}; window {window}",
        broker.bootstrap(),
        ingest.pid(),
        ingest.addr,
        ingest.topic
    );

    let (mut plain, mut through_ingest) = (Vec::new(), Vec::new());
    for pass in 1..=args.passes.max(1) {
        let plain_first = pass % 2 == 1;
        for run_plain in [plain_first, !plain_first] {
            let m = if run_plain {
                let label = format!("pass {pass}/{}: plain producer", args.passes);
                let m = plain_pass(&runtime, &label, &sink, &edge, blobs, window, broker_pid);
                plain.push(m);
                m.print_pass(&label);
                m
            } else {
                let label = format!("pass {pass}/{}: ingest", args.passes);
                let m = ingest_pass(&runtime, &label, &ingest, client, blobs, broker_pid);
                through_ingest.push(m);
                m.print_pass(&label);
                m
            };
            println!(
                "      Kafka client threads {:.2} s, broker {:.2} s (waited {:.2} s for a CPU){}",
                m.kafka.as_secs_f64(),
                m.broker.as_secs_f64(),
                m.broker_waited.as_secs_f64(),
                if run_plain {
                    String::new()
                } else {
                    format!(", client (this process) {:.2} s", m.client.as_secs_f64())
                }
            );
        }
    }
    Kafka {
        plain: best(&plain),
        ingest: best(&through_ingest),
        overheads: plain
            .iter()
            .zip(&through_ingest)
            .map(|(plain, ingest)| ingest.wall.as_secs_f64() / plain.wall.as_secs_f64() - 1.0)
            .collect(),
    }
}

/// The best of each path's passes, and ingest's overhead in every pass.
struct Kafka {
    plain: Measured,
    ingest: Measured,
    /// Ingest's wall time over the plain producer's in the same pass, − 1.
    overheads: Vec<f64>,
}

/// CPU times of the process doing the work and of the broker, at one moment.
#[derive(Debug, Clone, Copy)]
struct Usage {
    cpu: Duration,
    kafka: Duration,
    broker: Duration,
    broker_waited: Duration,
    this: Duration,
}

impl Usage {
    fn now(pid: u32, broker: u32) -> Usage {
        Usage {
            cpu: process_cpu(pid),
            kafka: KAFKA_THREADS.iter().map(|p| threads_cpu(pid, p)).sum(),
            broker: process_cpu(broker),
            broker_waited: run_queue_wait(broker),
            this: process_cpu(std::process::id()),
        }
    }

    fn since(self, before: Usage, wall: Duration, blobs: &[Blob]) -> Measured {
        Measured {
            wall,
            cpu: self.cpu - before.cpu,
            kafka: self.kafka.saturating_sub(before.kafka),
            broker: self.broker - before.broker,
            broker_waited: self.broker_waited.saturating_sub(before.broker_waited),
            client: self.this - before.this,
            ..Measured::of(blobs)
        }
    }
}

/// The baseline: every blob through ingest's producer, `window` at a time.
fn plain_pass(
    runtime: &tokio::runtime::Runtime,
    label: &str,
    sink: &KafkaSink,
    edge: &Arc<str>,
    blobs: &[Blob],
    window: u32,
    broker: u32,
) -> Measured {
    let done = AtomicU64::new(0);
    let before = Usage::now(std::process::id(), broker);
    let started = Instant::now();
    runtime.block_on(with_progress(label, blobs.len(), &done, async {
        let mut deliveries = futures::stream::iter(blobs)
            .map(|blob| sink.deliver(blob.valid(edge)))
            .buffer_unordered(window as usize);
        while let Some(delivered) = deliveries.next().await {
            delivered.expect("Kafka confirmed the batch");
            done.fetch_add(1, Ordering::Relaxed);
        }
    }));
    let wall = started.elapsed();
    Usage::now(std::process::id(), broker).since(before, wall, blobs)
}

/// Every blob through ingest on one connection, as a shipper sends them.
fn ingest_pass(
    runtime: &tokio::runtime::Runtime,
    label: &str,
    ingest: &Ingest,
    client: &TlsFiles,
    blobs: &[Blob],
    broker: u32,
) -> Measured {
    let done = AtomicU64::new(0);
    let before = Usage::now(ingest.pid(), broker);
    let started = Instant::now();
    let conn = runtime.block_on(with_progress(label, blobs.len(), &done, async {
        let (conn, window) = open(ingest.addr, client).await;
        let (mut tx, mut rx) = conn.split();
        let room = Semaphore::new(window as usize);
        let send = async {
            for blob in blobs {
                room.acquire().await.expect("never closed").forget();
                tx.send(Frame::Batch(blob.bytes.clone()))
                    .await
                    .expect("sending a batch");
            }
            tx
        };
        let receive = async {
            let mut acked = HashSet::with_capacity(blobs.len());
            while acked.len() < blobs.len() {
                match rx.next().await {
                    Some(Ok(Frame::Ack(id))) => {
                        assert!(acked.insert(id), "{id:?} acked twice");
                        room.add_permits(1);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Ok(Frame::Nack {
                        id,
                        retryable,
                        reason,
                    })) => panic!("ingest NACKed {id:?} (retryable: {retryable}): {reason}"),
                    other => panic!("expected an Ack, got {other:?}"),
                }
            }
            rx
        };
        let (tx, rx) = tokio::join!(send, receive);
        tx.reunite(rx).expect("the halves of one connection")
    }));
    let wall = started.elapsed();
    let measured = Usage::now(ingest.pid(), broker).since(before, wall, blobs);
    runtime.block_on(async {
        let mut conn = conn;
        conn.close().await.expect("closing the connection");
    });
    measured
}

/// Mutual TLS to ingest and the handshake: the connection and its window.
async fn open(addr: SocketAddr, client: &TlsFiles) -> (support::Connection, u32) {
    let mut conn = support::connect(addr, client).await.expect("TLS to ingest");
    match support::hello(&mut conn, PROTOCOL_VERSION, PROTOCOL_VERSION).await {
        Some(Frame::Welcome { window, .. }) => (conn, window),
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// Drives `work`, printing every second how many of `total` batches are done.
async fn with_progress<T>(
    label: &str,
    total: usize,
    done: &AtomicU64,
    work: impl Future<Output = T>,
) -> T {
    let started = Instant::now();
    let mut work = pin!(work);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let done = done.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "    {secs:5.1} s  {label}: {done}/{total} batches confirmed ({:.0}/s)",
                    done as f64 / secs
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The report

#[derive(Debug, Default)]
struct Results {
    validate: Option<Measured>,
    tls: Option<Measured>,
    plain: Option<Measured>,
    ingest: Option<Measured>,
    overheads: Vec<f64>,
}

impl Results {
    fn print(&self) {
        println!(
            "\n== results: best of the passes; load average {}",
            load_average()
        );
        println!(
            "  {:<34} {:>8} {:>9} {:>11} {:>6} {:>9} {:>13} {:>9}",
            "", "wall s", "frames/s", "records/s", "MB/s", "CPU/batch", "records/CPU-s", "vs plain"
        );
        let rows = [
            ("plain producer (baseline)", self.plain),
            ("ingest: TLS + validation + produce", self.ingest),
            ("validation alone, one core", self.validate),
            ("TLS receive + framing, one core", self.tls),
        ];
        for (label, m) in rows {
            let Some(m) = m else { continue };
            let ratio = self.plain.map_or("-".to_owned(), |p| {
                format!("{:.2}", m.records_per_cpu_s() / p.records_per_cpu_s())
            });
            println!(
                "  {:<34} {:>8.2} {:>9.0} {:>11} {:>6.0} {:>6.2} ms {:>13} {:>9}",
                label,
                m.wall.as_secs_f64(),
                m.per_wall_s(m.batches),
                thousands(m.per_wall_s(m.records)),
                m.mb_per_s(),
                m.ms_per_batch(m.cpu),
                thousands(m.records_per_cpu_s()),
                ratio,
            );
        }
        println!(
            "  (MB = 10^6 bytes of blob; \"vs plain\" = records per CPU-second ÷ the plain \
             producer's; CPU is the thread's for the one-core rows, the process's otherwise)"
        );

        if let (Some(plain), Some(ingest)) = (self.plain, self.ingest) {
            let overhead = ingest.wall.as_secs_f64() / plain.wall.as_secs_f64() - 1.0;
            println!(
                "\n  ingest overhead over the plain producer: {:.2} s vs {:.2} s wall = {:+.1} % \
                 (target ≤ {:.0} %: {})",
                ingest.wall.as_secs_f64(),
                plain.wall.as_secs_f64(),
                overhead * 100.0,
                MAX_OVERHEAD * 100.0,
                met(overhead <= MAX_OVERHEAD)
            );
            let mut sorted = self.overheads.clone();
            sorted.sort_by(f64::total_cmp);
            println!(
                "    pass by pass: {}; median {:+.1} %",
                self.overheads
                    .iter()
                    .map(|o| format!("{:+.1} %", o * 100.0))
                    .collect::<Vec<_>>()
                    .join(", "),
                (sorted[(sorted.len() - 1) / 2] + sorted[sorted.len() / 2]) * 50.0
            );
            println!(
                "  CPU per batch, plain producer: {:.2} ms (Kafka client threads {:.2} ms); \
                 broker {:.2} ms, busy {:.0} % of the wall time, waited {:.2} ms for a CPU",
                plain.ms_per_batch(plain.cpu),
                plain.ms_per_batch(plain.kafka),
                plain.ms_per_batch(plain.broker),
                100.0 * plain.broker.as_secs_f64() / plain.wall.as_secs_f64(),
                plain.ms_per_batch(plain.broker_waited)
            );
            let rest = ingest.cpu.saturating_sub(ingest.kafka);
            println!(
                "  CPU per batch, ingest: {:.2} ms = Kafka client threads {:.2} ms + the rest \
                 (TLS, framing, validation, protocol) {:.2} ms; broker {:.2} ms, busy {:.0} % \
                 of the wall time, waited {:.2} ms for a CPU; client {:.2} ms",
                ingest.ms_per_batch(ingest.cpu),
                ingest.ms_per_batch(ingest.kafka),
                ingest.ms_per_batch(rest),
                ingest.ms_per_batch(ingest.broker),
                100.0 * ingest.broker.as_secs_f64() / ingest.wall.as_secs_f64(),
                ingest.ms_per_batch(ingest.broker_waited),
                ingest.ms_per_batch(ingest.client)
            );
            if let (Some(validate), Some(tls)) = (self.validate, self.tls) {
                let alone = validate.ms_per_batch(validate.cpu) + tls.ms_per_batch(tls.cpu);
                println!(
                    "    of the rest, measured alone: validation {:.2} ms + TLS receive and \
                     framing {:.2} ms; the remainder (runtime, protocol, copies) {:.2} ms",
                    validate.ms_per_batch(validate.cpu),
                    tls.ms_per_batch(tls.cpu),
                    ingest.ms_per_batch(rest) - alone
                );
            }
            println!(
                "  ingest validated {} records per CPU-second of its process",
                thousands(ingest.records_per_cpu_s())
            );
        }
        if let Some(validate) = self.validate {
            let per_core = validate.records_per_cpu_s();
            println!(
                "  validation alone: {} records/s per core, {:.0} ns a record, {:.0} MB/s of blob \
                 (target ≥ {}: {})",
                thousands(per_core),
                1e9 / per_core,
                validate.bytes as f64 / validate.cpu.as_secs_f64() / 1e6,
                thousands(MIN_RECORDS_PER_CORE),
                met(per_core >= MIN_RECORDS_PER_CORE)
            );
        }
    }
}

fn met(yes: bool) -> &'static str {
    if yes {
        "met"
    } else {
        "missed"
    }
}

// ---------------------------------------------------------------------------
// CPU time from /proc

/// CPU time of the calling thread (ns resolution, from the scheduler).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("/proc/thread-self/schedstat (Linux)");
    let ns = text
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("schedstat starts with the run time in ns");
    Duration::from_nanos(ns)
}

/// utime + stime of a process: all its threads, live and exited.
fn process_cpu(pid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat_cpu(&stat))
        .unwrap_or_else(|| panic!("no CPU time for process {pid}"))
}

/// utime + stime of the live threads of `pid` whose name starts with `prefix`.
fn threads_cpu(pid: u32, prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|name| name.starts_with(prefix))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter_map(|stat| stat_cpu(&stat))
        .sum()
}

/// Time the live threads of `pid` spent runnable but waiting for a CPU
/// (the second field of `schedstat`, in ns).
fn run_queue_wait(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().nth(1)?.parse().ok())
        .map(Duration::from_nanos)
        .sum()
}

/// utime + stime from a `/proc/…/stat` line.
fn stat_cpu(stat: &str) -> Option<Duration> {
    // Fields after the parenthesised command name start with field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // USER_HZ is 100 on every Linux this runs on (`getconf CLK_TCK`).
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

// ---------------------------------------------------------------------------
// Batches

/// A sealed batch and what its header says.
struct Blob {
    bytes: Bytes,
    id: BatchId,
    records: u32,
    /// The uncompressed payload (Cap'n Proto), in bytes.
    raw_len: usize,
}

impl Blob {
    fn valid(&self, edge: &Arc<str>) -> ValidBatch {
        ValidBatch {
            edge: edge.clone(),
            id: self.id,
            records: self.records,
            blob: self.bytes.clone(),
        }
    }
}

/// SplitMix64: tiny, deterministic, good enough to vary log fields.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `percent` / 100.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

// The traffic mix of the shipper's benchmark (`shipper/benches/throughput.rs`),
// as records rather than log lines.
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.81 Mobile Safari/537.36",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Go-http-client/2.0",
    "okhttp/4.12.0",
    "",
];
/// (`$host`, the zone the shipper derives from it).
const HOSTS: &[(&str, &str)] = &[
    ("www.shop.example", "www.shop.example"),
    ("shop.example", "shop.example"),
    ("api.shop.example", "api.shop.example"),
    ("static.shop.example", "static.shop.example"),
    ("Blog.Example.ORG", "blog.example.org"),
    ("cdn.example.net:8443", "cdn.example.net"),
];
const WORDS: &[&str] = &[
    "shoes",
    "red",
    "winter+jacket",
    "gift",
    "sale",
    "laptop",
    "usb-c",
    "coffee",
    "tent",
    "lamp",
];

/// `batches` sealed batches of `records` requests each: ~2,000 requests a
/// second from 5,000 clients (15 % IPv6), mostly GETs of pages, assets and
/// API calls, 85 % 2xx; the fields of the dev stack's log format.
fn generate(batches: usize, records: usize, seed: u64) -> Vec<Blob> {
    let mut rng = Rng(seed);
    let clients: Vec<IpAddr> = (0..5000)
        .map(|i| {
            let mut part = |n: u64| rng.below(n) as u16;
            if i % 7 == 0 {
                let (a, b, c) = (part(0x10000), part(0x10000), part(0x10000));
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, a, b, 0, 0, 0, c))
            } else {
                let (a, b, c, d) = (1 + part(223), part(256), part(256), 1 + part(254));
                IpAddr::V4(Ipv4Addr::new(a as u8, b as u8, c as u8, d as u8))
            }
        })
        .collect();
    // 2026-11-22 10:00:00 UTC
    let mut timestamp_ns: i64 = 1_795_341_600_000_000_000;
    let mut builder = BatchBuilder::new();
    (1..=batches as u64)
        .map(|seq| {
            for _ in 0..records {
                timestamp_ns += rng.below(1_000_000) as i64;
                push_request(&mut builder, &mut rng, &clients, timestamp_ns);
            }
            let id = BatchId { epoch: EPOCH, seq };
            let raw_len = builder.raw_len();
            Blob {
                bytes: builder.seal(id).into(),
                id,
                records: records as u32,
                raw_len,
            }
        })
        .collect()
}

fn push_request(builder: &mut BatchBuilder, rng: &mut Rng, clients: &[IpAddr], timestamp_ns: i64) {
    let client_ip = *rng.pick(clients);
    let (host, zone) = *rng.pick(HOSTS);
    let method = match rng.below(100) {
        0..=84 => Method::Get,
        85..=94 => Method::Post,
        95..=97 => Method::Head,
        98 => Method::Put,
        _ => Method::Options,
    };
    let (path, query) = match rng.below(10) {
        0..=2 => {
            let kind = *rng.pick(&["js", "css", "img"]);
            let hash = rng.next() as u32;
            let ext = *rng.pick(&["js", "css", "webp"]);
            (
                format!("/static/{kind}/app.{hash:08x}.{ext}"),
                String::new(),
            )
        }
        3..=4 => (
            format!("/api/v2/products/{}", rng.below(100_000)),
            String::new(),
        ),
        5 => {
            let word = *rng.pick(WORDS);
            (
                "/search".to_owned(),
                format!("q={word}&page={}", 1 + rng.below(5)),
            )
        }
        6 => (
            format!("/products/{}", rng.below(100_000)),
            format!(
                "ref=home&utm_source=newsletter&utm_campaign=w{}",
                rng.below(52)
            ),
        ),
        7 => ("/".to_owned(), String::new()),
        8 => {
            let month = 1 + rng.below(12);
            (
                format!("/blog/2026/{month:02}/post-{}.html", rng.below(500)),
                String::new(),
            )
        }
        _ => (
            format!("/cart/{}/items", rng.below(1_000_000)),
            String::new(),
        ),
    };
    let protocol = *rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/2.0", "HTTP/2.0", "HTTP/1.0"]);
    let status = match rng.below(100) {
        0..=79 => 200,
        80..=84 => 304,
        85..=87 => 301,
        88..=89 => 302,
        90..=94 => 404,
        95 => 206,
        96 => 499,
        97 => 500,
        98 => 502,
        _ => 503,
    };
    let response_bytes = if status == 304 {
        0
    } else {
        let magnitude = 8 + rng.below(10);
        rng.below(1 << magnitude)
    };
    let referer = if rng.chance(45) {
        String::new()
    } else {
        format!("https://www.shop.example/products/{}", rng.below(100_000))
    };
    let user_agent = *rng.pick(USER_AGENTS);
    let magnitude = rng.below(12);
    let request_time_us = rng.below(1 << magnitude) as u32 * 1000;
    let cache_status = *rng.pick(&[
        CacheStatus::Hit,
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::None,
        CacheStatus::None,
        CacheStatus::Expired,
        CacheStatus::Bypass,
    ]);
    let request_bytes = 80 + rng.below(1500);
    let scheme = if rng.chance(92) {
        Scheme::Https
    } else {
        Scheme::Http
    };
    builder.push(&Record {
        timestamp_ns,
        zone,
        client_ip: Some(client_ip),
        method,
        scheme,
        host,
        path: &path,
        query: &query,
        protocol,
        status,
        response_bytes,
        request_bytes,
        request_time_us,
        cache_status,
        referer: &referer,
        user_agent,
        ..Record::default()
    });
}

// ---------------------------------------------------------------------------
// Formatting

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.trim_start().strip_prefix(':'))
        .map_or_else(|| "unknown CPU".to_owned(), |v| v.trim().to_owned())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// 1234567.8 → "1,234,568".
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
