//! Throughput, CPU and memory of the shipper on generated nginx logs — the
//! benchmark of issue 3 (figures and commands in `BENCHMARKS.md`).
//!
//! ```text
//! taskset -c 0 cargo bench -p shipper --bench throughput -- [--lines N] [--only encode|ship] [--cpu 1]
//! ```
//!
//! (`--help` lists the rest: a slow sink to fill the window, the spool's
//! fsync policy, a wrapper such as valgrind for the shipper.)
//!
//! For each format (`combined`, and the dev stack's extended format) it
//! generates `--lines` log lines from a fixed seed, then measures, in one run:
//!
//! 1. **baseline** — a plain `lz4_flex` block compression of the same log
//!    bytes, in 1 MiB chunks. Every other figure is also given as a ratio to
//!    this one, so runs on different (or busy) machines compare.
//! 2. **encode** — on this thread: split lines, parse ([`LineParser`]),
//!    encode ([`BatchBuilder::push`]) and seal (CRC + LZ4) batches exactly as
//!    the pipeline does, with the default batch limits. A parse-only pass
//!    and the time spent in `seal` tell the stages apart.
//! 3. **ship** — the real `shipper` binary, default configuration, tailing
//!    the generated file and sending over mutual TLS (certificates made by
//!    the `openssl` CLI, as the integration tests do) to a sink in this
//!    process that acks every batch. Reported: lines/s from start to the last
//!    ack, the shipper's CPU time per line (utime + stime of the process, as
//!    `getrusage` counts them, from `/proc/PID/stat`) and its peak RSS
//!    (`VmHWM`).
//!
//! CPU time is measured beside wall time because the benchmark machine is
//! shared: per-CPU-second rates move much less when a neighbour is busy.
//! `--cpu N` pins the shipper to one core (with `taskset`); run the benchmark
//! itself under `taskset -c M` to keep the sink off that core.

// The throw-away PKI (`make_pki`) is the integration tests' own.
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures::{SinkExt, StreamExt};
use schemas::tls::tokio_rustls::TlsAcceptor;
use schemas::wire::PROTOCOL_VERSION;
use schemas::{BatchBuilder, BatchId, Frame, FrameCodec, Limits, Record};
use shipper::config::BatchConfig;
use shipper::format::{LineParser, LogFormat};
use tokio_util::codec::Framed;

/// The dev stack's `log_format` (deploy/dev): combined plus host, timing,
/// cache status, request length and scheme.
const EXTENDED: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $host $request_time $upstream_cache_status $request_length $scheme"#;
const SEED: u64 = 0x5EED_51CE;
const LZ4_CHUNK: usize = 1 << 20;

#[derive(Debug, Parser)]
struct Args {
    /// Log lines generated per format.
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
    /// Formats to run.
    #[arg(long, value_delimiter = ',', default_value = "combined,extended")]
    formats: Vec<Format>,
    /// Run only this part (the baseline always runs).
    #[arg(long)]
    only: Option<Part>,
    /// Passes of the in-process measurements; the fastest is reported.
    #[arg(long, default_value_t = 3)]
    passes: u32,
    /// Pin the shipper process to this CPU (needs `taskset`).
    #[arg(long)]
    cpu: Option<u32>,
    /// Set the shipper's `spool.fsync` ("batch", the default, fsyncs every
    /// batch before sending it; "never" leaves writing to the OS).
    #[arg(long)]
    spool_fsync: Option<String>,
    /// Run the shipper under this command, for profiling; e.g.
    /// "valgrind --tool=callgrind --callgrind-out-file=shipper.callgrind".
    #[arg(long)]
    wrap: Option<String>,
    /// Fully decode every batch in the sink (default: the first one only).
    #[arg(long)]
    verify: bool,
    /// Make the sink a slow ingest: wait this long before each ack, so the
    /// shipper's window fills (for the memory bound rather than speed).
    #[arg(long, default_value_t = 0)]
    ack_delay_ms: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Combined,
    Extended,
}

impl Format {
    fn log_format(self) -> &'static str {
        match self {
            Format::Combined => "combined",
            Format::Extended => EXTENDED,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Format::Combined => "combined",
            Format::Extended => "extended",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Encode,
    Ship,
}

fn main() {
    let args = Args::parse();
    println!(
        "machine: {} cores ({} usable by this process), {}; load average {}",
        cpuinfo("processor").count(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpuinfo("model name")
            .next()
            .unwrap_or_else(|| "unknown CPU".to_owned()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for &format in &args.formats {
        run_format(&args, format);
    }
}

fn run_format(args: &Args, format: Format) {
    let name = format.name();
    let started = Instant::now();
    let log = generate(format, args.lines, SEED);
    println!(
        "\n== {name}: {} lines, {:.1} MiB ({:.0} bytes/line), generated in {:.1} s",
        args.lines,
        mib(log.len()),
        log.len() as f64 / args.lines as f64,
        started.elapsed().as_secs_f64()
    );

    let base = best_of(args.passes, || lz4_pass(&log, args.lines));
    base.print(
        name,
        "baseline: lz4_flex block compression of the log bytes",
    );
    let mut results = vec![("baseline".to_owned(), base.clone())];

    if args.only.is_none_or(|p| p == Part::Encode) {
        let parse = best_of(args.passes, || encode_pass(&log, format, false));
        parse.print(name, "parse only");
        let full = best_of(args.passes, || encode_pass(&log, format, true));
        full.print(name, "parse + encode + seal (CRC, LZ4)");
        println!(
            "  [{name}] per line: parse {:.0} ns, encode {:.0} ns, seal {:.0} ns (CPU); \
             payload {:.0} bytes/line, blobs {:.1} MiB, {:.2}x smaller than the log",
            parse.cpu_ns_per_line(),
            full.cpu_ns_per_line() - parse.cpu_ns_per_line() - full.seal_ns_per_line(),
            full.seal_ns_per_line(),
            full.raw_bytes as f64 / full.lines as f64,
            mib(full.out_bytes),
            log.len() as f64 / full.out_bytes as f64,
        );
        results.push(("parse".to_owned(), parse));
        results.push(("parse+encode+seal".to_owned(), full));
    }

    if args.only.is_none_or(|p| p == Part::Ship) {
        let ship = ship(args, format, &log);
        results.push(("file → TLS sink".to_owned(), ship));
    }

    println!("\n  [{name}] summary (ratios to the lz4 baseline of this run):");
    println!(
        "  {:<22} {:>14} {:>14} {:>10} {:>12} {:>9}",
        "", "lines/s wall", "lines/CPU-s", "CPU ns/ln", "ratio (CPU)", "peak RSS"
    );
    for (label, m) in &results {
        println!(
            "  {:<22} {:>14} {:>14} {:>10.0} {:>12.3} {:>9}",
            label,
            thousands(m.lines_per_wall_s()),
            thousands(m.lines_per_cpu_s()),
            m.cpu_ns_per_line(),
            m.lines_per_cpu_s() / base.lines_per_cpu_s(),
            m.peak_rss_kib
                .map_or("-".to_owned(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
        );
    }
}

// ---------------------------------------------------------------------------
// Measurements

#[derive(Debug, Clone, Default)]
struct Measured {
    lines: u64,
    wall: Duration,
    cpu: Duration,
    /// Time inside `BatchBuilder::seal`, for the encode pass.
    seal: Duration,
    out_bytes: usize,
    /// Uncompressed batch payload (Cap'n Proto), for the encode pass.
    raw_bytes: usize,
    peak_rss_kib: Option<u64>,
}

impl Measured {
    fn lines_per_wall_s(&self) -> f64 {
        self.lines as f64 / self.wall.as_secs_f64()
    }
    fn lines_per_cpu_s(&self) -> f64 {
        self.lines as f64 / self.cpu.as_secs_f64()
    }
    fn cpu_ns_per_line(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.lines as f64
    }
    fn seal_ns_per_line(&self) -> f64 {
        self.seal.as_nanos() as f64 / self.lines as f64
    }
    fn print(&self, format: &str, what: &str) {
        println!(
            "  [{format}] {what}: {} lines/s wall, {} lines/CPU-s ({:.0} ns/line)",
            thousands(self.lines_per_wall_s()),
            thousands(self.lines_per_cpu_s()),
            self.cpu_ns_per_line()
        );
    }
}

/// Runs `pass` `n` times (printing each) and keeps the one with the least CPU.
fn best_of(n: u32, mut pass: impl FnMut() -> Measured) -> Measured {
    let mut best: Option<Measured> = None;
    for i in 1..=n.max(1) {
        let m = pass();
        println!(
            "    pass {i}/{n}: {:.3} s wall, {:.3} s CPU",
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64()
        );
        if best.as_ref().is_none_or(|b| m.cpu < b.cpu) {
            best = Some(m);
        }
    }
    best.expect("at least one pass")
}

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

fn timed(f: impl FnOnce() -> Measured) -> Measured {
    let (wall0, cpu0) = (Instant::now(), thread_cpu());
    let mut m = f();
    m.wall = wall0.elapsed();
    m.cpu = thread_cpu() - cpu0;
    m
}

fn lz4_pass(log: &[u8], lines: usize) -> Measured {
    let mut out = vec![0u8; lz4_flex::block::get_maximum_output_size(LZ4_CHUNK)];
    timed(|| {
        let mut out_bytes = 0;
        for chunk in log.chunks(LZ4_CHUNK) {
            out_bytes += lz4_flex::block::compress_into(chunk, &mut out).expect("sized output");
            black_box(&out);
        }
        Measured {
            lines: lines as u64,
            out_bytes,
            ..Measured::default()
        }
    })
}

/// What the pipeline thread does per line, minus the file and the socket.
fn encode_pass(log: &[u8], format: Format, encode: bool) -> Measured {
    let compiled = LogFormat::compile_or_preset(format.log_format()).expect("format compiles");
    let mut parser = LineParser::new(compiled, BTreeMap::new());
    let mut builder = BatchBuilder::new();
    let limits = BatchConfig::default();
    timed(|| {
        let mut m = Measured::default();
        let mut seq = 0;
        let mut seal = |builder: &mut BatchBuilder, m: &mut Measured| {
            seq += 1;
            m.raw_bytes += builder.raw_len();
            let at = Instant::now();
            let blob = builder.seal(BatchId { epoch: 1, seq });
            m.seal += at.elapsed();
            m.out_bytes += blob.len();
        };
        let mut rest = log;
        while let Some(newline) = memchr::memchr(b'\n', rest) {
            let (line, next) = (&rest[..newline], &rest[newline + 1..]);
            rest = next;
            m.lines += 1;
            // As the pipeline does: into a record of its own, not handed back.
            let mut record = Record::default();
            parser
                .parse_bytes_into(line, &mut record)
                .expect("generated lines parse");
            if !encode {
                black_box(record);
                continue;
            }
            builder.push(&record);
            if builder.len() >= limits.max_records || builder.raw_len() >= limits.max_bytes {
                seal(&mut builder, &mut m);
            }
        }
        if !builder.is_empty() {
            seal(&mut builder, &mut m);
        }
        m
    })
}

// ---------------------------------------------------------------------------
// file → shipper → TLS → sink

#[derive(Debug, Default)]
struct SinkStats {
    records: AtomicU64,
    batches: AtomicU64,
    bytes: AtomicU64,
}

fn ship(args: &Args, format: Format, log: &[u8]) -> Measured {
    let name = format.name();
    let dir = tempfile::tempdir().expect("temp dir");
    let log_path = dir.path().join("access.log");
    std::fs::write(&log_path, log).expect("writing the log");
    let pki_dir = dir.path().join("pki");
    std::fs::create_dir(&pki_dir).expect("pki dir");
    let pki = common::make_pki(&pki_dir);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio");
    let stats = Arc::new(SinkStats::default());
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("binding the sink");
    let port = listener.local_addr().expect("sink address").port();
    let acceptor = TlsAcceptor::from(pki.server().server_config(false).expect("server TLS"));
    let ack_delay = Duration::from_millis(args.ack_delay_ms);
    runtime.spawn(sink(
        listener,
        acceptor,
        stats.clone(),
        args.verify,
        ack_delay,
    ));

    let config = dir.path().join("shipper.toml");
    let (client_cert, client_key) = pki.client();
    std::fs::write(
        &config,
        format!(
            "[input]\npaths = ['{}']\nlog_format = '{}'\n\n[spool]\ndir = '{}'\n{}\n\
             [transport]\nendpoints = ['127.0.0.1:{port}']\nserver_name = 'localhost'\n\
             ca_cert = '{}'\nclient_cert = '{}'\nclient_key = '{}'\n\n\
             [metrics]\nlisten = '127.0.0.1:0'\n",
            log_path.display(),
            format.log_format(),
            dir.path().join("spool").display(),
            args.spool_fsync
                .as_ref()
                .map_or(String::new(), |f| format!("fsync = '{f}'\n")),
            pki.ca().display(),
            client_cert.display(),
            client_key.display(),
        ),
    )
    .expect("writing the config");

    let stderr_path = dir.path().join("shipper.stderr");
    let mut child = spawn_shipper(args, &config, &stderr_path);
    let pid = child.id();
    let started = Instant::now();
    println!(
        "  [{name}] ship: shipper pid {pid}{} → TLS sink on 127.0.0.1:{port}",
        args.cpu.map_or(String::new(), |c| format!(" on CPU {c}"))
    );

    let want = args.lines as u64;
    let deadline = started + Duration::from_secs(600);
    let mut last_print = started;
    let mut usage = ProcUsage::default();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let done = stats.records.load(Ordering::Relaxed);
        if let Some(u) = ProcUsage::read(pid) {
            usage = u;
        }
        if done >= want {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the shipper exited early ({status}); its log:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {want} lines arrived in 10 minutes"
        );
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            println!(
                "    {secs:5.1} s: {done:>9} lines acked ({} lines/s), shipper CPU {:.2} s, RSS {:.1} MiB",
                thousands(done as f64 / secs),
                usage.cpu.as_secs_f64(),
                usage.rss_kib as f64 / 1024.0
            );
        }
    }
    let wall = started.elapsed();
    let threads = thread_breakdown(pid);
    stop(&mut child);

    let got = stats.records.load(Ordering::Relaxed);
    assert_eq!(got, want, "the sink received every line exactly once");
    let m = Measured {
        lines: got,
        wall,
        cpu: usage.cpu,
        out_bytes: stats.bytes.load(Ordering::Relaxed) as usize,
        peak_rss_kib: Some(usage.hwm_kib),
        ..Measured::default()
    };
    println!(
        "  [{name}] file → TLS sink: {got} lines in {:.2} s = {} lines/s; shipper CPU {:.2} s \
         ({:.2} s of it in the kernel) = {:.0} ns/line; \
         peak RSS (VmHWM) {:.1} MiB; {} batches, {:.1} MiB on the wire",
        wall.as_secs_f64(),
        thousands(m.lines_per_wall_s()),
        m.cpu.as_secs_f64(),
        usage.system.as_secs_f64(),
        m.cpu_ns_per_line(),
        usage.hwm_kib as f64 / 1024.0,
        stats.batches.load(Ordering::Relaxed),
        mib(m.out_bytes),
    );
    println!("  [{name}] shipper CPU by thread: {threads}");
    m
}

fn spawn_shipper(args: &Args, config: &Path, stderr: &Path) -> Child {
    let pin = args.cpu.map(|cpu| format!("taskset -c {cpu}"));
    let mut argv: Vec<String> = [pin.as_deref(), args.wrap.as_deref()]
        .into_iter()
        .flatten()
        .flat_map(|prefix| prefix.split_whitespace().map(str::to_owned))
        .collect();
    argv.push(env!("CARGO_BIN_EXE_shipper").to_owned());
    Command::new(&argv[0])
        .args(&argv[1..])
        .arg("--config")
        .arg(config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr).expect("shipper stderr file"))
        .spawn()
        .expect("starting the shipper")
}

/// SIGTERM, then SIGKILL if it has not stopped within 10 s.
fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A fake ingest as cheap as possible: mutual TLS, Hello/Welcome (window 64,
/// ingest's default), an Ack for every batch (after `ack_delay`). It reads
/// only the blob's header, except for the first batch (or all, with
/// `verify`), which it decodes completely.
async fn sink(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    stats: Arc<SinkStats>,
    verify: bool,
    ack_delay: Duration,
) {
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, stats) = (acceptor.clone(), stats.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut framed = Framed::new(tls, FrameCodec::default());
            let Some(Ok(Frame::Hello { .. })) = framed.next().await else {
                return;
            };
            let welcome = Frame::Welcome {
                version: PROTOCOL_VERSION,
                max_frame: 16 << 20,
                window: 64,
            };
            if framed.send(welcome).await.is_err() {
                return;
            }
            let mut first = true;
            while let Some(Ok(frame)) = framed.next().await {
                let reply = match frame {
                    Frame::Batch(blob) => {
                        let (id, count) = if verify || first {
                            let batch = schemas::batch::decode(&blob, &Limits::default())
                                .expect("the shipper sends valid batches");
                            (batch.id(), batch.len())
                        } else {
                            schemas::batch::peek(&blob).expect("a batch header")
                        };
                        first = false;
                        if !ack_delay.is_zero() {
                            tokio::time::sleep(ack_delay).await;
                        }
                        stats.records.fetch_add(u64::from(count), Ordering::Relaxed);
                        stats.batches.fetch_add(1, Ordering::Relaxed);
                        stats.bytes.fetch_add(blob.len() as u64, Ordering::Relaxed);
                        Frame::Ack(id)
                    }
                    Frame::Ping(nonce) => Frame::Pong(nonce),
                    _ => return,
                };
                if framed.send(reply).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// A process's CPU time and memory, from `/proc`.
#[derive(Debug, Default, Clone, Copy)]
struct ProcUsage {
    /// utime + stime of all its threads, live and exited (what getrusage
    /// reports), at the kernel's clock-tick resolution (10 ms).
    cpu: Duration,
    /// The stime part: the kernel's work for it (file reads, spool writes,
    /// the socket).
    system: Duration,
    rss_kib: u64,
    /// Peak resident set size.
    hwm_kib: u64,
}

impl ProcUsage {
    fn read(pid: u32) -> Option<ProcUsage> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        let (user, system) = stat_user_system(&stat)?;
        Some(ProcUsage {
            cpu: user + system,
            system,
            rss_kib: kib("VmRSS:")?,
            hwm_kib: kib("VmHWM:")?,
        })
    }
}

/// utime + stime from a `/proc/…/stat` line.
fn stat_cpu(stat: &str) -> Option<Duration> {
    stat_user_system(stat).map(|(user, system)| user + system)
}

/// (utime, stime) from a `/proc/…/stat` line.
fn stat_user_system(stat: &str) -> Option<(Duration, Duration)> {
    // Fields after the parenthesised command name start with field 3.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // USER_HZ is 100 on every Linux this runs on (`getconf CLK_TCK`).
    let ticks = |i: usize| {
        Some(Duration::from_millis(
            fields.get(i)?.parse::<u64>().ok()? * 10,
        ))
    };
    Some((ticks(11)?, ticks(12)?))
}

/// "name 1.23 s, …" for the shipper's live threads, grouped by name.
fn thread_breakdown(pid: u32) -> String {
    let mut by_name: BTreeMap<String, Duration> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "-".to_owned();
    };
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let cpu = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|s| stat_cpu(&s))
            .unwrap_or_default();
        *by_name.entry(name.trim().to_owned()).or_default() += cpu;
    }
    let mut parts: Vec<(String, Duration)> = by_name.into_iter().collect();
    parts.sort_by_key(|(_, cpu)| std::cmp::Reverse(*cpu));
    parts
        .iter()
        .map(|(name, cpu)| format!("{name} {:.2} s", cpu.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------
// Log generation

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
    "-",
];
const HOSTS: &[&str] = &[
    "www.shop.example",
    "shop.example",
    "api.shop.example",
    "static.shop.example",
    "Blog.Example.ORG",
    "cdn.example.net:8443",
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
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `lines` log lines in `format`, each ending in a newline. The traffic
/// mix: ~2,000 requests per second from 5,000 clients (15 % IPv6), mostly
/// GETs of pages, assets and API calls, 85 % 2xx.
fn generate(format: Format, lines: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    let mut out = Vec::with_capacity(lines * 320);
    let clients: Vec<String> = (0..5000)
        .map(|i| {
            if i % 7 == 0 {
                format!(
                    "2001:db8:{:x}:{:x}::{:x}",
                    rng.below(0x10000),
                    rng.below(0x10000),
                    rng.below(0x10000)
                )
            } else {
                format!(
                    "{}.{}.{}.{}",
                    1 + rng.below(223),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                )
            }
        })
        .collect();
    let mut second = 10 * 3600; // 10:00:00 on the day below
    for _ in 0..lines {
        if rng.below(2000) == 0 {
            second += 1;
        }
        let day = 22 + second / 86_400;
        let (h, m, s) = (second / 3600 % 24, second / 60 % 60, second % 60);
        let client = rng.pick(&clients);
        let user = if rng.chance(2) { "alice" } else { "-" };
        let method = match rng.below(100) {
            0..=84 => "GET",
            85..=94 => "POST",
            95..=97 => "HEAD",
            98 => "PUT",
            _ => "OPTIONS",
        };
        let path = match rng.below(10) {
            0..=2 => format!(
                "/static/{}/app.{:08x}.{}",
                rng.pick(&["js", "css", "img"]),
                rng.next() as u32,
                rng.pick(&["js", "css", "webp"])
            ),
            3..=4 => format!("/api/v2/products/{}", rng.below(100_000)),
            5 => format!("/search?q={}&page={}", rng.pick(WORDS), 1 + rng.below(5)),
            6 => format!(
                "/products/{}?ref=home&utm_source=newsletter&utm_campaign=w{}",
                rng.below(100_000),
                rng.below(52)
            ),
            7 => "/".to_owned(),
            8 => format!(
                "/blog/2026/{:02}/post-{}.html",
                1 + rng.below(12),
                rng.below(500)
            ),
            _ => format!("/cart/{}/items", rng.below(1_000_000)),
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
        let bytes = if status == 304 {
            0
        } else {
            let magnitude = 8 + rng.below(10);
            rng.below(1 << magnitude)
        };
        let referer = if rng.chance(45) {
            "-".to_owned()
        } else {
            format!("https://www.shop.example/products/{}", rng.below(100_000))
        };
        let agent = rng.pick(USER_AGENTS);
        write!(
            out,
            "{client} - {user} [{day:02}/{}/2026:{h:02}:{m:02}:{s:02} +0000] \"{method} {path} {protocol}\" \
             {status} {bytes} \"{referer}\" \"{agent}\"",
            MONTHS[10],
        )
        .expect("writing to a Vec");
        if format == Format::Extended {
            let host = rng.pick(HOSTS);
            let magnitude = rng.below(12);
            let request_time = rng.below(1 << magnitude);
            let cache = *rng.pick(&["HIT", "HIT", "MISS", "-", "-", "EXPIRED", "BYPASS"]);
            let request_length = 80 + rng.below(1500);
            let scheme = if rng.chance(92) { "https" } else { "http" };
            write!(
                out,
                " {host} {}.{:03} {cache} {request_length} {scheme}",
                request_time / 1000,
                request_time % 1000
            )
            .expect("writing to a Vec");
        }
        out.push(b'\n');
    }
    out
}

// ---------------------------------------------------------------------------
// Formatting

/// The values of one key of /proc/cpuinfo, one per core.
fn cpuinfo(key: &str) -> impl Iterator<Item = String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let values: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix(key))
        .filter_map(|v| v.trim_start().strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .collect();
    values.into_iter()
}

fn mib(bytes: usize) -> f64 {
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
