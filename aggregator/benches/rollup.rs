//! The aggregator's in-memory rollup on one core, and GoAccess 1.7 on the
//! same log, in one run — targets 1 and 3 of issue 5's "Performance"
//! (figures and commands in `BENCHMARKS.md`).
//!
//! ```text
//! taskset -c 0 cargo bench -p aggregator --bench rollup -- [--lines N] [--passes N] [--only rollup|goaccess]
//! ```
//!
//! It generates `--lines` log lines from a fixed seed (`benches/common`),
//! parses and seals them with the shipper's own parser and batch builder
//! (the blobs ingest would put on Kafka), then measures on this thread:
//!
//! 1. **baseline: decode** — `schemas::batch::Decoder::decode` of every
//!    blob (one decoder, as the consumer keeps) and a visit of every record, which the consumer does before any rollup.
//!    Every other figure is also given as a ratio to this one.
//! 2. **decode + rollup** — the same, and each decoded batch handed to
//!    [`BatchRollup::add`], the consumer's own per-batch code: shard
//!    routing, client class, threat detection, the (zone, minute)
//!    [`ZoneRow`](aggregator::rollup::ZoneRow)s with their HyperLogLog,
//!    latency sketch, top-N and maps, security rows and floods. Every
//!    `--flush-every` batches the pending rows are dropped, as a flush
//!    does. A timer around `add` gives the rollup of decoded batches alone:
//!    the figure of target 1.
//! 3. **GoAccess** — `goaccess` (Debian's 1.7, single-threaded) reading the
//!    same log from a file, with the same fields, writing a JSON report:
//!    wall time and CPU time (its `user + sys`).
//!
//! Each in-process measurement is the best of `--passes` passes by CPU
//! time (`/proc/thread-self/schedstat`). The machine is shared, so CPU
//! time and ratios to the same run's baseline say more than wall time.

mod common;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aggregator::config::RollupConfig;
use aggregator::consume::BatchRollup;
use aggregator::rollup::Pending;
use aggregator::schema::{Family, Resolution, Rows};
use clap::{Parser, ValueEnum};
use common::{thousands, thread_cpu, Sealed, Workload};
use schemas::batch::{DecodedBatch, Decoder, Limits};

#[derive(Debug, Parser)]
struct Args {
    /// Log lines generated.
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
    /// Zones (hosts) in the log.
    #[arg(long, default_value_t = 100)]
    zones: usize,
    /// Lines per second of log time (how many minutes the log spans).
    #[arg(long, default_value_t = 20_000)]
    log_rate: u64,
    /// Shards the zones are spread over (every one is written, as one
    /// aggregator does).
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Drop the pending rows every this many batches, as a flush does (50
    /// batches of 2,000: one second at 100k records/s).
    #[arg(long, default_value_t = 50)]
    flush_every: usize,
    /// Passes of the in-process measurements; the one with the least CPU
    /// is reported.
    #[arg(long, default_value_t = 3)]
    passes: u32,
    /// Run only this part (the decode baseline always runs).
    #[arg(long)]
    only: Option<Part>,
    /// Instead of measuring, run the rollup once and print a digest
    /// (SHA-256) of every row each flush would write: two builds that print
    /// the same digest produce the same rows from this log.
    #[arg(long)]
    digest: bool,
    /// The GoAccess binary.
    #[arg(long, default_value = "goaccess")]
    goaccess: String,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Rollup,
    Goaccess,
}

/// 2026-11-22 10:00:00 UTC.
const START_S: i64 = 1_795_341_600;
const SEED: u64 = 0x5EED_A66E;

fn main() {
    let args = Args::parse();
    println!("{}", common::machine());
    let workload = Workload {
        lines: args.lines,
        zones: args.zones,
        start_s: START_S,
        lines_per_s: args.log_rate,
        seed: SEED,
    };
    let started = Instant::now();
    let log = common::generate(&workload);
    println!(
        "log: {} lines, {:.1} MiB ({:.0} bytes/line), {} zones, {:.1} minutes of log time; generated in {:.1} s",
        args.lines,
        common::mib(log.len()),
        log.len() as f64 / args.lines as f64,
        args.zones,
        args.lines as f64 / args.log_rate as f64 / 60.0,
        started.elapsed().as_secs_f64()
    );
    let (cpu0, wall0) = (thread_cpu(), Instant::now());
    let sealed = common::seal_batches(&log);
    let seal = Measured {
        records: args.lines as u64,
        wall: wall0.elapsed(),
        cpu: thread_cpu() - cpu0,
        ..Measured::default()
    };
    println!(
        "sealed {} batches, {:.1} MiB of blobs, with the shipper's parser and batch builder: \
         {:.0} ns/line of CPU (one pass, for reference)",
        sealed.len(),
        common::mib(sealed.iter().map(|s| s.blob.len()).sum()),
        seal.cpu_ns_per_record()
    );

    if args.digest {
        let digest = rows_digest(&sealed, &args);
        println!("\nrows digest (SHA-256 of every flush's minute rows): {digest}");
        return;
    }

    let mut results: Vec<(String, Measured)> = Vec::new();
    println!("\nbaseline: decode every batch, visit every record");
    let base = best_of(args.passes, || decode_pass(&sealed));
    results.push(("decode (baseline)".into(), base.clone()));

    if args.only.is_none_or(|p| p == Part::Rollup) {
        println!("\ndecode + BatchRollup::add ({} shards)", args.shards);
        let full = best_of(args.passes, || rollup_pass(&sealed, &args));
        let rollup_alone = Measured {
            records: full.records,
            wall: full.inner,
            cpu: full.inner,
            ..Measured::default()
        };
        println!(
            "  the most rows pending at a flush: {} zone rows, {} security rows",
            full.rows.0, full.rows.1
        );
        results.push(("decode + rollup".into(), full.clone()));
        results.push(("rollup alone (timer)".into(), rollup_alone));
        let difference = full.cpu.saturating_sub(base.cpu);
        results.push((
            "rollup alone (difference)".into(),
            Measured {
                records: full.records,
                wall: difference,
                cpu: difference,
                ..Measured::default()
            },
        ));
        results.push(("shipper parse + seal".into(), seal.clone()));
        let whole = seal.cpu + full.cpu;
        results.push((
            "parse…seal + decode + rollup".into(),
            Measured {
                records: full.records,
                wall: whole,
                cpu: whole,
                ..Measured::default()
            },
        ));
    }

    let mut goaccess = None;
    if args.only.is_none_or(|p| p == Part::Goaccess) {
        let m = run_goaccess(&args, &log);
        results.push(("GoAccess 1.7".into(), m.clone()));
        goaccess = Some(m);
    }

    println!(
        "\nsummary ({} lines; load average now {}):",
        args.lines,
        common::load_average()
    );
    println!(
        "  {:<30} {:>13} {:>13} {:>9} {:>10} {:>11}",
        "", "records/s wall", "rec/CPU-s", "CPU ns/rec", "× decode", "× GoAccess"
    );
    for (label, m) in &results {
        println!(
            "  {:<30} {:>13} {:>13} {:>9.0} {:>10.2} {:>11}",
            label,
            thousands(m.per_wall_s()),
            thousands(m.per_cpu_s()),
            m.cpu_ns_per_record(),
            m.per_cpu_s() / base.per_cpu_s(),
            goaccess.as_ref().map_or("-".to_owned(), |g| format!(
                "{:.1}",
                m.per_cpu_s() / g.per_cpu_s()
            )),
        );
    }
    println!(
        "  (\"rollup alone (timer)\" is the time inside BatchRollup::add, wall clock on a busy-looping \
         thread; \"(difference)\" is decode + rollup minus the baseline's CPU)"
    );
}

#[derive(Debug, Clone, Default)]
struct Measured {
    records: u64,
    wall: Duration,
    cpu: Duration,
    /// Time inside `BatchRollup::add`.
    inner: Duration,
    /// The most zone rows and security rows pending at a flush.
    rows: (usize, usize),
}

impl Measured {
    fn per_wall_s(&self) -> f64 {
        self.records as f64 / self.wall.as_secs_f64()
    }
    fn per_cpu_s(&self) -> f64 {
        self.records as f64 / self.cpu.as_secs_f64()
    }
    fn cpu_ns_per_record(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.records as f64
    }
}

/// Runs `pass` `n` times (printing each) and keeps the one with the least CPU.
fn best_of(n: u32, mut pass: impl FnMut() -> Measured) -> Measured {
    let mut best: Option<Measured> = None;
    for i in 1..=n.max(1) {
        let m = pass();
        println!(
            "  pass {i}/{n}: {:.3} s wall, {:.3} s CPU, {:.0} ns/record, {} records/CPU-s (load {})",
            m.wall.as_secs_f64(),
            m.cpu.as_secs_f64(),
            m.cpu_ns_per_record(),
            thousands(m.per_cpu_s()),
            common::load_average()
        );
        if best.as_ref().is_none_or(|b| m.cpu < b.cpu) {
            best = Some(m);
        }
    }
    best.expect("at least one pass")
}

fn timed(f: impl FnOnce() -> Measured) -> Measured {
    let (wall0, cpu0) = (Instant::now(), thread_cpu());
    let mut m = f();
    m.wall = wall0.elapsed();
    m.cpu = thread_cpu() - cpu0;
    m
}

/// `Decoder::decode`, as the consumer decodes (one decoder for every
/// batch), never inlined, so that a profile can name it
/// (`valgrind --toggle-collect='rollup::decode'`).
#[inline(never)]
fn decode(decoder: &mut Decoder, blob: &[u8], limits: &Limits) -> DecodedBatch {
    decoder.decode(blob, limits).expect("sealed batches decode")
}

/// [`BatchRollup::add`], never inlined, so that a profile can name it
/// (`valgrind --toggle-collect='rollup::add'`). No Kafka timestamp:
/// nothing is late.
#[inline(never)]
fn add(
    rollup: &mut BatchRollup,
    batch: &DecodedBatch,
    wanted: &[bool],
    pendings: &mut [Pending],
) -> u64 {
    rollup.add(batch, wanted, pendings, None)
}

fn decode_pass(sealed: &[Sealed]) -> Measured {
    let limits = Limits::default();
    let mut decoder = Decoder::new();
    timed(|| {
        let mut records = 0u64;
        for s in sealed {
            let batch = decode(&mut decoder, &s.blob, &limits);
            batch
                .for_each(|record| {
                    black_box(record);
                    records += 1;
                })
                .expect("decoded");
        }
        Measured {
            records,
            ..Measured::default()
        }
    })
}

/// What the core holds for `--shards` shards, all of them wanted: the
/// per-batch rollup, one `Pending` per shard, and the wanted mask.
fn consumer(args: &Args) -> (BatchRollup, Vec<Pending>, Vec<bool>) {
    let rollup = BatchRollup::new(
        (0..args.shards).map(|i| format!("shard{i}")),
        &RollupConfig::default(),
    );
    let pendings = (0..args.shards).map(|_| Pending::default()).collect();
    (rollup, pendings, vec![true; args.shards])
}

fn rollup_pass(sealed: &[Sealed], args: &Args) -> Measured {
    let limits = Limits::default();
    let mut decoder = Decoder::new();
    let (mut rollup, mut pendings, wanted) = consumer(args);
    timed(|| {
        let mut m = Measured::default();
        for (i, s) in sealed.iter().enumerate() {
            let batch = decode(&mut decoder, &s.blob, &limits);
            let at = Instant::now();
            let late = add(&mut rollup, &batch, &wanted, &mut pendings);
            m.inner += at.elapsed();
            assert_eq!(late, 0);
            m.records += u64::from(batch.len());
            if (i + 1) % args.flush_every.max(1) == 0 || i + 1 == sealed.len() {
                let zone_rows = pendings
                    .iter()
                    .map(|p| p.zones.values().map(|z| z.minutes.len()).sum::<usize>())
                    .sum();
                let security_rows = pendings.iter().map(|p| p.security.len()).sum();
                m.rows = (m.rows.0.max(zone_rows), m.rows.1.max(security_rows));
                black_box(&pendings);
                for pending in &mut pendings {
                    pending.clear_rows();
                }
            }
        }
        m
    })
}

/// A rollup pass as [`rollup_pass`] does it, untimed, digesting the rows
/// of every flush (zone and security, at minute resolution: the hours and
/// days are merged from them) as they would be sent.
fn rows_digest(sealed: &[Sealed], args: &Args) -> String {
    use sha2::Digest;
    let limits = Limits::default();
    let mut decoder = Decoder::new();
    let (mut rollup, mut pendings, wanted) = consumer(args);
    let mut hasher = sha2::Sha256::new();
    let mut rows = 0;
    for (i, s) in sealed.iter().enumerate() {
        let batch = decode(&mut decoder, &s.blob, &limits);
        add(&mut rollup, &batch, &wanted, &mut pendings);
        if (i + 1) % args.flush_every.max(1) == 0 || i + 1 == sealed.len() {
            for pending in &mut pendings {
                for family in Family::ALL {
                    let of = Rows::of(pending, family, Resolution::Minute);
                    rows += of.len();
                    hasher.update(of.to_text());
                }
                pending.clear_rows();
            }
        }
    }
    println!(
        "  {rows} rows written by {} flushes",
        sealed.len().div_ceil(args.flush_every.max(1))
    );
    hex::encode(hasher.finalize())
}

/// GoAccess over the log, written to a file first (it reads files).
fn run_goaccess(args: &Args, log: &[u8]) -> Measured {
    let dir = std::env::temp_dir().join(format!("sluice-bench-goaccess-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating a temporary directory");
    let path: PathBuf = dir.join("access.log");
    std::fs::write(&path, log).expect("writing the log");
    let report = dir.join("report.json");
    let goaccess_args: Vec<String> = vec![
        path.display().to_string(),
        "--no-global-config".into(),
        format!("--log-format={}", common::GOACCESS_LOG_FORMAT),
        format!("--date-format={}", common::GOACCESS_DATE_FORMAT),
        format!("--time-format={}", common::GOACCESS_TIME_FORMAT),
        "--no-progress".into(),
        "-o".into(),
        report.display().to_string(),
    ];
    println!(
        "\nGoAccess: {} {}",
        args.goaccess,
        goaccess_args
            .iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut best: Option<Measured> = None;
    for i in 1..=args.passes.max(1) {
        let (wall, cpu) = common::run_timed(&args.goaccess, &goaccess_args);
        let m = Measured {
            records: args.lines as u64,
            wall,
            cpu,
            ..Measured::default()
        };
        println!(
            "  pass {i}/{}: {:.3} s wall, {:.3} s CPU, {} lines/CPU-s (load {})",
            args.passes,
            wall.as_secs_f64(),
            cpu.as_secs_f64(),
            thousands(m.per_cpu_s()),
            common::load_average()
        );
        if best.as_ref().is_none_or(|b| m.cpu < b.cpu) {
            best = Some(m);
        }
    }
    // Every line must have been understood, or the comparison is unfair.
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("reading GoAccess's report"))
            .expect("GoAccess's report is JSON");
    let general = &json["general"];
    let valid = general["valid_requests"].as_u64();
    let failed = general["failed_requests"].as_u64();
    println!("  GoAccess's report: valid_requests {valid:?}, failed_requests {failed:?}");
    assert_eq!(
        valid,
        Some(args.lines as u64),
        "GoAccess did not read every line"
    );
    let _ = std::fs::remove_dir_all(&dir);
    best.expect("at least one pass")
}
