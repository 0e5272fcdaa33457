//! Kafka → aggregator → PostgreSQL on this machine, flushes included —
//! target 2 of issue 5's "Performance" (figures and commands in
//! `BENCHMARKS.md`). Needs the dev stack (`SLUICE_DEV_ENV`, as the ignored
//! tests do):
//!
//! ```text
//! SLUICE_DEV_ENV=$PWD/deploy/.dev/env cargo bench -p aggregator --bench end_to_end -- [--records N] [--rate R --seconds S]
//! ```
//!
//! Everything runs in a [`Sandbox`] of the process tests' harness: a fresh
//! topic on the dev broker, a fresh database on each dev PostgreSQL
//! cluster, and the release `aggregator` binary (the one cargo builds for
//! benchmarks) with the harness's configuration: flush every second. The
//! batches are the generated log of `benches/common`, parsed and sealed
//! with the shipper's own code, produced as ingest produces them.
//!
//! 1. **throughput** — `--records` records are produced first; then the
//!    aggregator starts and the clock runs from its first applied record
//!    until every shard has stored the topic's high watermarks, that is
//!    until the last flush committed. Reported: records/s, and CPU time
//!    per record of the aggregator (`utime + stime` from `/proc`), of the
//!    PostgreSQL backends serving its databases, and of the broker.
//! 2. **steady** — the aggregator runs first; batches are produced at
//!    `--rate` records/s for `--seconds`, with log times of the moment they
//!    are sent. Over the steady part (after `--warmup` seconds) it reports
//!    the share of a core each process used and the flushes: the share of
//!    wall time the aggregator spent inside its flush
//!    (`sluice_aggregator_flush_seconds`, a wall-clock histogram that also
//!    counts the waits for PostgreSQL, so an upper bound on the
//!    aggregator's CPU in flushes) and the CPU of the PostgreSQL backends,
//!    which work only when the aggregator flushes.
//!
//! Every phase prints its progress once a second.

#[path = "../tests/harness/mod.rs"]
mod harness;

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, ValueEnum};
use common::{process_cpu, thousands, Sealed, Workload, EDGE};

/// Batches are spread over this many edges (the message key, hence the
/// partition), round robin.
const EDGES: usize = 8;

fn edge(i: usize) -> String {
    format!("{EDGE}-{}", i % EDGES)
}
use harness::{Aggregator, AggregatorOptions, DevStack, Sandbox};

#[derive(Debug, Parser)]
struct Args {
    /// Records produced before the throughput run.
    #[arg(long, default_value_t = 2_000_000)]
    records: usize,
    /// Records per second of the steady run.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// Length of the steady run.
    #[arg(long, default_value_t = 40)]
    seconds: u64,
    /// Seconds of the steady run left out of its figures.
    #[arg(long, default_value_t = 10)]
    warmup: u64,
    /// Zones (hosts) in the log.
    #[arg(long, default_value_t = 100)]
    zones: usize,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Run only this part.
    #[arg(long)]
    only: Option<Part>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    Throughput,
    Steady,
}

const SEED: u64 = 0x5EED_E2E0;

fn main() {
    let args = Args::parse();
    println!("{}", common::machine());
    let stack = DevStack::from_env();
    if args.only.is_none_or(|p| p == Part::Throughput) {
        throughput(&args, &stack);
    }
    if args.only.is_none_or(|p| p == Part::Steady) {
        steady(&args, &stack);
    }
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// The batches of `records` generated lines whose log time starts at
/// `start_s` and advances `lines_per_s` a second.
fn batches(args: &Args, records: usize, start_s: i64, lines_per_s: u64) -> Vec<Sealed> {
    let started = Instant::now();
    let log = common::generate(&Workload {
        lines: records,
        zones: args.zones,
        start_s,
        lines_per_s,
        seed: SEED,
    });
    let sealed = common::seal_batches(&log);
    println!(
        "generated {records} records ({:.1} MiB of log) into {} batches ({:.1} MiB) in {:.1} s",
        common::mib(log.len()),
        sealed.len(),
        common::mib(sealed.iter().map(|s| s.blob.len()).sum()),
        started.elapsed().as_secs_f64()
    );
    sealed
}

/// CPU clocks of the processes involved, at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Clocks {
    at: Option<Instant>,
    aggregator: Duration,
    postgres: Duration,
    broker: Duration,
    records: u64,
    flush_seconds: f64,
    flushes: u64,
}

impl Clocks {
    fn read(run: &Run) -> Clocks {
        let metrics = run.metrics();
        Clocks {
            at: Some(Instant::now()),
            aggregator: process_cpu(run.pid).unwrap_or_default(),
            postgres: run
                .backends()
                .iter()
                .filter_map(|pid| process_cpu(*pid))
                .sum(),
            broker: run.broker.and_then(process_cpu).unwrap_or_default(),
            records: metric(&metrics, "sluice_aggregator_records_consumed_total") as u64,
            flush_seconds: metric(&metrics, "sluice_aggregator_flush_seconds_sum"),
            flushes: metric(&metrics, "sluice_aggregator_flush_seconds_count") as u64,
        }
    }

    fn since(&self, earlier: &Clocks) -> Span {
        Span {
            wall: self
                .at
                .expect("read")
                .duration_since(earlier.at.expect("read")),
            aggregator: self.aggregator.saturating_sub(earlier.aggregator),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            broker: self.broker.saturating_sub(earlier.broker),
            records: self.records - earlier.records,
            flush_seconds: self.flush_seconds - earlier.flush_seconds,
            flushes: self.flushes - earlier.flushes,
        }
    }
}

/// What happened between two [`Clocks`].
#[derive(Debug)]
struct Span {
    wall: Duration,
    aggregator: Duration,
    postgres: Duration,
    broker: Duration,
    records: u64,
    flush_seconds: f64,
    flushes: u64,
}

impl Span {
    /// Where the span's CPU went, and its flushes: the lines both phases print.
    fn print_costs(&self) {
        println!(
            "  share of a core: aggregator {:.1} %, PostgreSQL backends {:.1} %, broker {:.1} %",
            self.share(self.aggregator),
            self.share(self.postgres),
            self.share(self.broker)
        );
        println!(
            "  flushes: {}, {:.3} s inside flush = {:.1} % of the wall time ({:.0} ms each on average)",
            self.flushes,
            self.flush_seconds,
            100.0 * self.flush_seconds / self.wall.as_secs_f64(),
            1000.0 * self.flush_seconds / self.flushes.max(1) as f64
        );
        println!(
            "  CPU per record: aggregator {:.2} µs, PostgreSQL backends {:.2} µs, broker {:.2} µs",
            self.per_record_us(self.aggregator),
            self.per_record_us(self.postgres),
            self.per_record_us(self.broker)
        );
    }

    fn share(&self, cpu: Duration) -> f64 {
        100.0 * cpu.as_secs_f64() / self.wall.as_secs_f64()
    }
    fn per_record_us(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.records.max(1) as f64
    }
}

/// The value of a metric without labels in Prometheus text; 0 if absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A running aggregator and what is measured around it.
struct Run<'s> {
    sandbox: &'s Sandbox,
    aggregator: Aggregator,
    pid: u32,
    broker: Option<u32>,
}

impl<'s> Run<'s> {
    fn start(sandbox: &'s Sandbox, stack_env: &str) -> Run<'s> {
        // Before the aggregator connects: the setting applies to new sessions.
        for i in 0..sandbox.shards.len() {
            sandbox.query(
                i,
                &format!("ALTER DATABASE {} SET track_functions = 'all'", sandbox.id),
                &[],
            );
        }
        let mut aggregator = sandbox.aggregator("bench", &AggregatorOptions::default());
        aggregator.migrate();
        aggregator.start();
        let pid = pid_of(&aggregator.config.display().to_string());
        // The broker's pid file sits beside the env file's other state.
        let broker = std::fs::read_to_string(
            std::path::Path::new(stack_env)
                .parent()
                .expect("the env file is in a directory")
                .join("pids/kafka.pid"),
        )
        .ok()
        .and_then(|t| t.trim().parse().ok());
        println!(
            "aggregator pid {pid} ({}), broker pid {broker:?}, log {}",
            env!("CARGO_BIN_EXE_aggregator"),
            aggregator.log.display()
        );
        Run {
            sandbox,
            aggregator,
            pid,
            broker,
        }
    }

    /// `/metrics` of the aggregator, waiting while its API is not up yet.
    fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.aggregator.api);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match ureq::get(&url)
                .call()
                .and_then(|mut r| r.body_mut().read_to_string())
            {
                Ok(text) => return text,
                Err(e) => assert!(Instant::now() < deadline, "GET {url}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where the PostgreSQL backends spent their time: per shard, the
    /// time executing statements (`pg_stat_database.active_time`) and the
    /// functions that took most of it (`pg_stat_user_functions`, kept
    /// because the sandbox's databases are created with
    /// `track_functions = 'all'`).
    fn report_postgres(&self) {
        for (i, shard) in self.sandbox.shards.iter().enumerate() {
            let active: f64 = self
                .sandbox
                .query(
                    i,
                    "SELECT coalesce(active_time, 0)::float8 FROM pg_stat_database WHERE datname = $1",
                    &[&self.sandbox.id],
                )
                .first()
                .map_or(0.0, |row| row.get(0));
            println!(
                "  {}: {:.2} s executing statements; functions by total time (self time):",
                shard.name,
                active / 1000.0
            );
            let rows = self.sandbox.query(
                i,
                "SELECT funcname::text, calls, total_time, self_time FROM pg_stat_user_functions \
                 ORDER BY total_time DESC LIMIT 8",
                &[],
            );
            for row in rows {
                let (name, calls, total, own): (String, i64, f64, f64) =
                    (row.get(0), row.get(1), row.get(2), row.get(3));
                println!(
                    "    {name:<24} {calls:>9} calls {:>8.2} s ({:.2} s) = {:.0} % of the statements' time",
                    total / 1000.0,
                    own / 1000.0,
                    100.0 * total / active.max(1e-9)
                );
            }
        }
    }

    /// Pids of the PostgreSQL backends connected to the sandbox's
    /// databases, on every cluster.
    fn backends(&self) -> Vec<u32> {
        (0..self.sandbox.shards.len())
            .flat_map(|i| {
                self.sandbox.query(
                    i,
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&self.sandbox.id],
                )
            })
            .map(|row| row.get::<_, i32>(0) as u32)
            .collect()
    }
}

/// The pid of the process whose command line mentions `config`.
fn pid_of(config: &str) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if args.contains(&config.as_bytes()) && args.contains(&b"run".as_slice()) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no process runs with {config}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn env_file() -> String {
    std::env::var("SLUICE_DEV_ENV").expect("DevStack::from_env checked it")
}

fn throughput(args: &Args, stack: &DevStack) {
    println!(
        "\n== throughput: {} records produced first, then consumed (load average {})",
        args.records,
        common::load_average()
    );
    let sandbox = Sandbox::create(stack, args.partitions);
    // Log times in the last minutes: all within the lateness (1 h).
    let sealed = batches(args, args.records, now_s() - 300, 20_000);
    let mut producer = sandbox.producer(200);
    for (i, s) in sealed.iter().enumerate() {
        producer.send(&edge(i), s.id, s.records, &s.blob);
    }
    producer.flush();
    let total: u64 = sealed.iter().map(|s| u64::from(s.records)).sum();
    drop(sealed);

    let started = Instant::now();
    let mut run = Run::start(&sandbox, &env_file());
    // From the first record applied (joining the group and loading
    // positions take a few seconds that are not throughput).
    let first = loop {
        run.aggregator.assert_running();
        let clocks = Clocks::read(&run);
        if clocks.records > 0 {
            break clocks;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing consumed after a minute"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    println!(
        "first records applied {:.1} s after the start",
        started.elapsed().as_secs_f64()
    );
    let mut last = first;
    while last.records < total {
        std::thread::sleep(Duration::from_secs(1));
        run.aggregator.assert_running();
        let now = Clocks::read(&run);
        let span = now.since(&last);
        println!(
            "  applied {} of {total} records: {} records/s over the last second, aggregator {:.0} % of a core, load {}",
            now.records,
            thousands(span.records as f64 / span.wall.as_secs_f64()),
            span.share(span.aggregator),
            common::load_average()
        );
        last = now;
    }
    let applied = Clocks::read(&run);
    sandbox.wait_until_consumed(&mut [&mut run.aggregator], Duration::from_secs(300));
    let stored = Clocks::read(&run);
    let span = stored.since(&first);
    let applied_span = applied.since(&first);
    println!(
        "\n  [throughput] {total} records, {} partitions, {} shards; load average {}",
        args.partitions,
        sandbox.shards.len(),
        common::load_average()
    );
    println!(
        "  first record applied → every shard stored the high watermarks: {:.2} s, {} records/s",
        span.wall.as_secs_f64(),
        thousands(total as f64 / span.wall.as_secs_f64())
    );
    println!(
        "  first → last record applied (before the last flush): {:.2} s, {} records/s",
        applied_span.wall.as_secs_f64(),
        thousands(total as f64 / applied_span.wall.as_secs_f64())
    );
    span.print_costs();
    run.report_postgres();
    run.aggregator.terminate(Duration::from_secs(30));
}

fn steady(args: &Args, stack: &DevStack) {
    println!(
        "\n== steady: {} records/s for {} s (the first {} s not counted); load average {}",
        thousands(args.rate as f64),
        args.seconds,
        args.warmup,
        common::load_average()
    );
    let sandbox = Sandbox::create(stack, args.partitions);
    let records = (args.rate * args.seconds) as usize;
    // Generated before the clock starts, with the log times they will be
    // sent at (from `begin_s`).
    let begin_s = now_s() + 60;
    let sealed = batches(args, records, begin_s, args.rate);
    let mut run = Run::start(&sandbox, &env_file());
    let mut producer = sandbox.producer(u64::MAX);
    // Wait for the log's first second, with the aggregator in its group.
    while now_s() < begin_s {
        run.aggregator.assert_running();
        std::thread::sleep(Duration::from_millis(20));
    }
    let begin = Instant::now();
    let mut sent = 0u64;
    let mut warm: Option<Clocks> = None;
    let mut last = Clocks::read(&run);
    let mut next_report = begin + Duration::from_secs(1);
    for (i, s) in sealed.iter().enumerate() {
        // Batch i goes out when the records before it are due.
        let due = begin + Duration::from_secs_f64(sent as f64 / args.rate as f64);
        loop {
            let now = Instant::now();
            if now >= next_report {
                run.aggregator.assert_running();
                let clocks = Clocks::read(&run);
                let span = clocks.since(&last);
                println!(
                    "  {:>3} s: sent {sent}, applied {}, {} records/s applied, aggregator {:.0} %, \
                     PostgreSQL {:.0} %, flush {:.1} % of the wall; load {}",
                    (now - begin).as_secs(),
                    clocks.records,
                    thousands(span.records as f64 / span.wall.as_secs_f64()),
                    span.share(span.aggregator),
                    span.share(span.postgres),
                    100.0 * span.flush_seconds / span.wall.as_secs_f64(),
                    common::load_average()
                );
                if warm.is_none() && now - begin >= Duration::from_secs(args.warmup) {
                    warm = Some(clocks);
                }
                last = clocks;
                next_report += Duration::from_secs(1);
            }
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(next_report - now));
        }
        producer.send(&edge(i), s.id, s.records, &s.blob);
        sent += u64::from(s.records);
    }
    producer.flush();
    let end = Clocks::read(&run);
    let warm = warm.expect("--seconds longer than --warmup");
    let span = end.since(&warm);
    println!(
        "\n  [steady] {} records/s offered; over the last {:.1} s: {} records/s applied; load average {}",
        thousands(args.rate as f64),
        span.wall.as_secs_f64(),
        thousands(span.records as f64 / span.wall.as_secs_f64()),
        common::load_average()
    );
    span.print_costs();
    sandbox.wait_until_consumed(&mut [&mut run.aggregator], Duration::from_secs(120));
    run.report_postgres();
    run.aggregator.terminate(Duration::from_secs(30));
}
