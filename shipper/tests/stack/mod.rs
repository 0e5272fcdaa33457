//! The pieces the dev-stack scenarios (`tests/stack_delivery.rs`) are made
//! of, so that each test reads as its story: a [`Scenario`] (temp dir, the
//! stack's env file, a fresh edge identity, a Kafka reader), the real
//! `shipper` binary as a [`Shipper`] process with its own config and spool,
//! an [`AccessLog`] written the way nginx and logrotate would, a [`TcpProxy`]
//! to cut ingest off, and [`Metrics`] scraped from the shipper.
//!
//! # How delivery is judged
//! Every test signs its own client certificate with the dev CA
//! (`CN=edge-test-<random>`), and ingest uses that name as the Kafka key, so
//! the test's batches can be told apart from the traffic loop's and from
//! other tests'. [`Kafka`] reads every partition of the topic from the end
//! it had when the scenario began (a fresh edge id cannot have older
//! messages, and the topic's history can be long), decodes each of the
//! edge's blobs with `schemas::batch::decode`, and keeps, per line number
//! (each written line is unique: path `/t/<n>`), the batch identity it
//! arrived under. *Exactly once*, as the aggregator sees it, means: every
//! line is there, every copy of a line carries the same `(epoch, seq)` (a
//! resend under the same identity is what the aggregator drops), no line is
//! twice in one batch, and one identity never carries two contents.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use schemas::{BatchId, Limits};

use crate::common;

/// Longest a single wait in a scenario may take before it fails.
pub const PATIENCE: Duration = Duration::from_secs(120);
/// How long no new line may arrive before a wait gives up (longer than the
/// shipper's longest reconnect backoff, 10 s, with room to spare).
pub const STALL: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The stack and the scenario
// ---------------------------------------------------------------------------

/// The running dev stack, as its env file (`$SLUICE_DEV_ENV`) describes it.
pub struct Stack {
    env: HashMap<String, String>,
}

impl Stack {
    /// Reads the env file and checks that ingest answers on its port.
    pub fn from_env() -> Stack {
        let stack = Stack {
            env: common::dev_env(),
        };
        let addr: SocketAddr = stack
            .var("INGEST_ADDR")
            .parse()
            .expect("INGEST_ADDR is host:port");
        if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            panic!("ingest does not answer on {addr} ({e}); start the stack with ./deploy/dev up");
        }
        stack
    }

    pub fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{key} is missing from the dev env file ($SLUICE_DEV_ENV)"))
    }

    pub fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.var(key))
    }

    pub fn ingest_addr(&self) -> String {
        self.var("INGEST_ADDR").to_owned()
    }
}

/// One test's world: a temp dir, the stack, its own edge identity, and a
/// reader of the topic that keeps that edge's batches.
pub struct Scenario {
    pub name: &'static str,
    pub dir: tempfile::TempDir,
    pub stack: Stack,
    pub edge: Edge,
    pub kafka: Kafka,
    started: Instant,
}

impl Scenario {
    pub fn new(name: &'static str) -> Scenario {
        let stack = Stack::from_env();
        let dir = tempfile::Builder::new()
            .prefix(&format!("sluice-{name}-"))
            .tempdir()
            .unwrap();
        let edge = Edge::mint(&stack, dir.path());
        let kafka = Kafka::start(&stack, &edge.id);
        let scenario = Scenario {
            name,
            dir,
            stack,
            edge,
            kafka,
            started: Instant::now(),
        };
        scenario.say(&format!(
            "edge {} in {}",
            scenario.edge.id,
            scenario.dir.path().display()
        ));
        scenario
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A config for this scenario's edge, spool `<dir>/spool`, tailing `glob`
    /// (relative to the scenario's dir), shipping straight to ingest.
    pub fn config(&self, glob: &str) -> ShipperConfig {
        ShipperConfig {
            paths: vec![self.path(glob).display().to_string()],
            endpoints: vec![self.stack.ingest_addr()],
            ca_cert: self.stack.path("DEV_CA_CERT"),
            client_cert: self.edge.cert.clone(),
            client_key: self.edge.key.clone(),
            spool_dir: self.path("spool"),
            spool_extra: String::new(),
            max_records: 2000,
            max_batch_bytes: 1 << 20,
            max_age_ms: 100,
            window: 32,
            metrics_port: reserve_port(),
        }
    }

    /// Progress on stderr (shown live with `--nocapture`, and on failure).
    pub fn say(&self, message: &str) {
        eprintln!(
            "[{} +{:>6.1}s] {message}",
            self.name,
            self.started.elapsed().as_secs_f64()
        );
    }

    /// Waits until `n` distinct lines of this edge are in Kafka, printing
    /// progress (`status` adds the shipper's view) every 5 s. Gives up after
    /// `within`, or after [`STALL`] without a new line.
    pub fn wait_for_lines(&self, n: usize, within: Duration, status: impl Fn() -> String) {
        let deadline = Instant::now() + within;
        let mut next_report = Instant::now();
        let mut last = (0, Instant::now());
        loop {
            let have = self.kafka.seen().distinct_lines();
            if have >= n {
                self.say(&format!("{have}/{n} lines in Kafka"));
                return;
            }
            if have != last.0 {
                last = (have, Instant::now());
            }
            if Instant::now() >= next_report {
                self.say(&format!("{have}/{n} lines in Kafka; shipper: {}", status()));
                next_report = Instant::now() + Duration::from_secs(5);
            }
            let stalled = last.1.elapsed() >= STALL;
            if Instant::now() >= deadline || stalled {
                let seen = self.kafka.seen();
                panic!(
                    "only {have} of {n} lines reached Kafka {}\n{}\nshipper: {}",
                    if stalled {
                        format!("(none new for {STALL:?})")
                    } else {
                        format!("within {within:?}")
                    },
                    seen.check_exactly_once(0..n as u64)
                        .err()
                        .unwrap_or_default(),
                    status()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Reads the topic to its current end, then checks that lines
    /// `expected` arrived exactly once (see the module doc).
    pub fn assert_exactly_once(&self, expected: Range<u64>) {
        self.kafka.drain();
        let seen = self.kafka.seen();
        match seen.check_exactly_once(expected.clone()) {
            Ok(summary) => self.say(&format!("exactly once: {summary}")),
            Err(problems) => panic!(
                "lines {expected:?} of edge {} did not arrive exactly once:\n{problems}",
                self.edge.id
            ),
        }
    }
}

/// A failed scenario keeps its dir (logs, the shipper's log and spool) and
/// says where.
impl Drop for Scenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Ok(empty) = tempfile::tempdir() {
                let dir = std::mem::replace(&mut self.dir, empty);
                self.say(&format!(
                    "failed; kept {} for inspection",
                    dir.keep().display()
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Edge identity
// ---------------------------------------------------------------------------

/// A client certificate of its own, signed by the dev CA: its CN is the edge
/// id ingest puts in the Kafka key.
pub struct Edge {
    pub id: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Edge {
    pub fn mint(stack: &Stack, dir: &Path) -> Edge {
        let id = format!("edge-test-{:016x}", rand::random::<u64>());
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        let (cert, key) = common::sign_leaf(
            &pki,
            "edge",
            &id,
            &stack.path("DEV_CA_CERT"),
            &stack.path("DEV_CA_KEY"),
            &format!("extendedKeyUsage=clientAuth\nsubjectAltName=DNS:{id}"),
        );
        Edge { id, cert, key }
    }
}

// ---------------------------------------------------------------------------
// Kafka
// ---------------------------------------------------------------------------

/// Reads the topic in a thread of its own (manual assignment, no consumer
/// group) and keeps what one edge sent.
pub struct Kafka {
    topic: String,
    admin: BaseConsumer,
    partitions: i32,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// librdkafka wants a `group.id` even for a manual assignment; with
/// explicit offsets and no commits the group is never joined or used.
fn consumer(bootstrap: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("shipper-stack-test-{:016x}", rand::random::<u64>()),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("client.id", "shipper-stack-test")
        .create()
        .unwrap_or_else(|e| panic!("a Kafka consumer for {bootstrap}: {e}"))
}

impl Kafka {
    pub fn start(stack: &Stack, edge: &str) -> Kafka {
        let bootstrap = stack.var("KAFKA_BOOTSTRAP").to_owned();
        let topic = stack.var("KAFKA_TOPIC").to_owned();
        let admin = consumer(&bootstrap);
        let metadata = admin
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("Kafka metadata of {topic} from {bootstrap}: {e}"));
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len()) as i32;
        assert!(
            partitions > 0,
            "topic {topic} has no partitions on {bootstrap}"
        );
        let reader = consumer(&bootstrap);
        let mut assignment = TopicPartitionList::new();
        let mut seen = Seen::default();
        for p in 0..partitions {
            let (_, high) = admin
                .fetch_watermarks(&topic, p, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("watermarks of {topic}/{p}: {e}"));
            assignment
                .add_partition_offset(&topic, p, Offset::Offset(high))
                .unwrap();
            seen.next_offset.insert(p, high);
        }
        reader.assign(&assignment).unwrap();
        let seen = Arc::new(Mutex::new(seen));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop, edge) = (seen.clone(), stop.clone(), edge.to_owned());
            std::thread::Builder::new()
                .name("kafka-reader".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match reader.poll(Duration::from_millis(100)) {
                            Some(Ok(m)) => {
                                let ours = m.key() == Some(edge.as_bytes());
                                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                                seen.next_offset.insert(m.partition(), m.offset() + 1);
                                if ours {
                                    seen.add(m.partition(), m.offset(), m.payload().unwrap_or(&[]));
                                }
                            }
                            Some(Err(e)) => eprintln!("kafka reader: {e}"),
                            None => {}
                        }
                    }
                })
                .unwrap()
        };
        Kafka {
            topic,
            admin,
            partitions,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until every partition has been read to the end it has now.
    pub fn drain(&self) {
        let mut highs = Vec::new();
        for p in 0..self.partitions {
            let (_, high) = self
                .admin
                .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("watermarks of {}/{p}: {e}", self.topic));
            highs.push((p, high));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let behind: Vec<(i32, i64, i64)> = {
                let seen = self.seen();
                highs
                    .iter()
                    .map(|&(p, high)| (p, seen.next_offset.get(&p).copied().unwrap_or(0), high))
                    .filter(|&(_, at, high)| at < high)
                    .collect()
            };
            if behind.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the topic was not read to its end within 60 s: (partition, at, end) {behind:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One batch identity as it arrived (possibly several times).
#[derive(Debug)]
pub struct Arrived {
    pub copies: u32,
    /// Line numbers, in record order, of the first copy.
    pub lines: Vec<u64>,
    /// (partition, offset) of every copy.
    pub at: Vec<(i32, i64)>,
    /// Copies whose lines differ from the first copy's.
    pub differing: u32,
}

/// What one edge's messages held.
#[derive(Debug, Default)]
pub struct Seen {
    pub messages: u64,
    pub batches: BTreeMap<BatchId, Arrived>,
    /// Line → the identity of the first batch it arrived in.
    pub line_id: HashMap<u64, BatchId>,
    /// (line, first identity, later identity): the same line in two batches.
    pub new_identity: Vec<(u64, BatchId, BatchId)>,
    /// (line, identity): a line twice within one batch.
    pub twice_in_batch: Vec<(u64, BatchId)>,
    /// Records whose path is not `/t/<n>`.
    pub foreign: Vec<String>,
    pub undecodable: Vec<String>,
    next_offset: HashMap<i32, i64>,
}

/// The line number a record's path carries (`/t/<n>`).
pub fn line_number(path: &str) -> Option<u64> {
    path.strip_prefix("/t/")?.parse().ok()
}

fn show(id: BatchId) -> String {
    format!("(epoch {:#x}, seq {})", id.epoch, id.seq)
}

impl Seen {
    fn add(&mut self, partition: i32, offset: i64, blob: &[u8]) {
        self.messages += 1;
        let batch = match schemas::batch::decode(blob, &Limits::default()) {
            Ok(batch) => batch,
            Err(e) => {
                self.undecodable
                    .push(format!("partition {partition} offset {offset}: {e}"));
                return;
            }
        };
        let id = batch.id();
        let mut lines = Vec::with_capacity(batch.len() as usize);
        let foreign = &mut self.foreign;
        let decoded = batch.for_each(|r| match line_number(r.path) {
            Some(n) => lines.push(n),
            None => foreign.push(format!("{} in {}", r.path, show(id))),
        });
        if let Err(e) = decoded {
            self.undecodable
                .push(format!("partition {partition} offset {offset}: {e}"));
            return;
        }
        if let Some(arrived) = self.batches.get_mut(&id) {
            arrived.copies += 1;
            arrived.at.push((partition, offset));
            if arrived.lines != lines {
                arrived.differing += 1;
            }
            return;
        }
        for &n in &lines {
            match self.line_id.get(&n) {
                None => {
                    self.line_id.insert(n, id);
                }
                Some(&first) if first == id => self.twice_in_batch.push((n, id)),
                Some(&first) => self.new_identity.push((n, first, id)),
            }
        }
        self.batches.insert(
            id,
            Arrived {
                copies: 1,
                lines,
                at: vec![(partition, offset)],
                differing: 0,
            },
        );
    }

    pub fn distinct_lines(&self) -> usize {
        self.line_id.len()
    }

    /// Lines of `expected` that have not arrived, as a count and ranges.
    pub fn describe_missing(&self, expected: Range<u64>) -> String {
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        let mut count = 0u64;
        for n in expected {
            if self.line_id.contains_key(&n) {
                continue;
            }
            count += 1;
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == n => *end = n,
                _ => ranges.push((n, n)),
            }
        }
        if count == 0 {
            return "no line missing".into();
        }
        let shown: Vec<String> = ranges
            .iter()
            .take(12)
            .map(|&(a, b)| {
                if a == b {
                    format!("{a}")
                } else {
                    format!("{a}..={b}")
                }
            })
            .collect();
        format!(
            "{count} lines missing, in {} runs: {}{}",
            ranges.len(),
            shown.join(", "),
            if ranges.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        )
    }

    /// `Ok(summary)` if `expected` arrived exactly once; otherwise every
    /// kind of violation, with examples.
    pub fn check_exactly_once(&self, expected: Range<u64>) -> Result<String, String> {
        let mut problems = String::new();
        let missing = expected
            .clone()
            .filter(|n| !self.line_id.contains_key(n))
            .count();
        if missing > 0 {
            let _ = writeln!(problems, "- {}", self.describe_missing(expected.clone()));
        }
        if !self.new_identity.is_empty() {
            let lines: std::collections::BTreeSet<u64> =
                self.new_identity.iter().map(|&(n, _, _)| n).collect();
            let _ = writeln!(
                problems,
                "- {} lines were sent again under a NEW batch identity (the aggregator would count them twice), e.g.:",
                lines.len()
            );
            for &(n, first, later) in self.new_identity.iter().take(5) {
                let _ = writeln!(
                    problems,
                    "    line /t/{n}: first in {}, again in {}",
                    show(first),
                    show(later)
                );
            }
        }
        if !self.twice_in_batch.is_empty() {
            let _ = writeln!(
                problems,
                "- {} lines appear twice within one batch, e.g. {:?}",
                self.twice_in_batch.len(),
                self.twice_in_batch
                    .iter()
                    .take(5)
                    .map(|&(n, id)| format!("/t/{n} in {}", show(id)))
                    .collect::<Vec<_>>()
            );
        }
        let differing: Vec<String> = self
            .batches
            .iter()
            .filter(|(_, a)| a.differing > 0)
            .take(5)
            .map(|(id, a)| format!("{} at {:?}", show(*id), a.at))
            .collect();
        if !differing.is_empty() {
            let _ = writeln!(
                problems,
                "- one identity carried two different contents: {differing:?}"
            );
        }
        let outside: Vec<u64> = self
            .line_id
            .keys()
            .copied()
            .filter(|n| !expected.contains(n))
            .take(5)
            .collect();
        if !outside.is_empty() || !self.foreign.is_empty() {
            let _ = writeln!(
                problems,
                "- records that were never written as good lines: {outside:?} {:?}",
                self.foreign.iter().take(5).collect::<Vec<_>>()
            );
        }
        if !self.undecodable.is_empty() {
            let _ = writeln!(
                problems,
                "- blobs that do not decode: {:?}",
                self.undecodable.iter().take(5).collect::<Vec<_>>()
            );
        }
        let resent = self.batches.values().filter(|a| a.copies > 1).count();
        let summary = format!(
            "{} lines in {} batches ({} messages; {resent} batches delivered more than once under the same identity, which the aggregator drops); epochs {:x?}",
            self.line_id.len(),
            self.batches.len(),
            self.messages,
            self.batches
                .keys()
                .map(|id| id.epoch)
                .collect::<std::collections::BTreeSet<_>>()
        );
        if problems.is_empty() {
            Ok(summary)
        } else {
            Err(format!("{problems}(seen: {summary})"))
        }
    }
}

// ---------------------------------------------------------------------------
// The shipper process
// ---------------------------------------------------------------------------

/// What a test's `shipper.toml` says. `spool_extra` is TOML added to the
/// `[spool]` table (the write-ahead spool's bound and policies).
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    pub paths: Vec<String>,
    pub endpoints: Vec<String>,
    pub ca_cert: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub spool_dir: PathBuf,
    pub spool_extra: String,
    pub max_records: u32,
    /// `[batch] max_bytes` (uncompressed).
    pub max_batch_bytes: usize,
    pub max_age_ms: u64,
    pub window: u32,
    pub metrics_port: u16,
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

impl ShipperConfig {
    pub fn toml(&self) -> String {
        format!(
            r#"[input]
paths = {paths}
log_format = '{format}'

[batch]
max_records = {max_records}
max_bytes = {max_batch_bytes}
max_age_ms = {max_age_ms}

[spool]
dir = {spool:?}
{spool_extra}

[transport]
endpoints = {endpoints}
server_name = "localhost"
ca_cert = {ca:?}
client_cert = {cert:?}
client_key = {key:?}
window = {window}
connect_timeout_ms = 2000
ack_timeout_ms = 10000

[metrics]
listen = "127.0.0.1:{port}"
"#,
            paths = toml_list(&self.paths),
            format = common::DEV_FORMAT,
            max_records = self.max_records,
            max_batch_bytes = self.max_batch_bytes,
            max_age_ms = self.max_age_ms,
            spool = self.spool_dir.display().to_string(),
            spool_extra = self.spool_extra,
            endpoints = toml_list(&self.endpoints),
            ca = self.ca_cert.display().to_string(),
            cert = self.client_cert.display().to_string(),
            key = self.client_key.display().to_string(),
            window = self.window,
            port = self.metrics_port,
        )
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.metrics_port))
    }
}

/// The `shipper` binary of this build, run as a process with its config in
/// the scenario's dir and its log (every start appended) beside it. Killed
/// with -9 when dropped.
pub struct Shipper {
    pub config: ShipperConfig,
    config_path: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    pub starts: u32,
}

impl Shipper {
    /// Writes the config, has `shipper check-config` accept it, starts the
    /// process and waits until `/health` answers.
    pub fn start(dir: &Path, config: ShipperConfig) -> Shipper {
        let config_path = dir.join("shipper.toml");
        std::fs::write(&config_path, config.toml()).unwrap();
        let check = Command::new(env!("CARGO_BIN_EXE_shipper"))
            .arg("--config")
            .arg(&config_path)
            .arg("check-config")
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "shipper check-config refuses the test's config:\n{}{}\n--- config ---\n{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr),
            config.toml()
        );
        let mut shipper = Shipper {
            config,
            config_path,
            log_path: dir.join("shipper.log"),
            child: None,
            starts: 0,
        };
        shipper.restart();
        shipper
    }

    /// Starts the process again (after [`kill9`](Self::kill9) or
    /// [`terminate`](Self::terminate)), same config, same spool.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the shipper is still running");
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        self.starts += 1;
        writeln!(log, "===== start #{} =====", self.starts).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shipper"))
            .arg("--config")
            .arg(&self.config_path)
            .arg("run")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the shipper binary");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_get(self.config.metrics_addr(), "/health").is_ok() {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "the shipper's /health did not answer within 20 s\n{}",
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no chance to seal, flush or commit anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits up to `within` for the exit (SIGKILL after that).
    pub fn terminate(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Panics (with the log's tail) if the process has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                panic!("the shipper exited: {status}\n{}", self.log_tail(40));
            }
        }
    }

    pub fn metrics(&self) -> Result<Metrics, String> {
        http_get(self.config.metrics_addr(), "/metrics").map(|body| Metrics::parse(&body))
    }

    /// Waits until `sluice_shipper_lines_read_total` reaches `lines`.
    pub fn wait_until_read(&mut self, lines: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let read = self
                .metrics()
                .ok()
                .and_then(|m| m.total("sluice_shipper_lines_read_total"));
            if read.is_some_and(|r| r >= lines as f64) {
                return;
            }
            self.assert_running();
            assert!(
                Instant::now() < deadline,
                "the shipper had not read {lines} lines within {within:?}: {}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn health(&self) -> Result<String, String> {
        http_get(self.config.metrics_addr(), "/health")
    }

    /// One line for progress reports: the counters that tell where things are.
    pub fn status(&self) -> String {
        let spool = dir_bytes(&self.config.spool_dir);
        match self.metrics() {
            Ok(m) => format!(
                "read {} malformed {} records_sent {} acked {} in_flight {} lag {} B; spool_bytes {} (dir {spool} B)",
                m.show("sluice_shipper_lines_read_total"),
                m.show("sluice_shipper_lines_malformed_total"),
                m.show("sluice_shipper_records_sent_total"),
                m.show("sluice_shipper_batches_acked_total"),
                m.show("sluice_shipper_batches_in_flight"),
                m.show("sluice_shipper_file_lag_bytes"),
                m.show("sluice_shipper_spool_bytes"),
            ),
            Err(e) => format!("/metrics: {e}; spool dir {spool} B"),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        format!(
            "--- last {} lines of {} ---\n{}",
            lines.min(all.len()),
            self.log_path.display(),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// Waits for a log line containing every one of `needles`; returns it.
    pub fn wait_for_log(&self, needles: &[&str], within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            if let Some(line) = self
                .log()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return line.to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "no shipper log line with all of {needles:?} within {within:?}\n{}",
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A port outside the kernel's ephemeral range (32768–60999 here), free
/// now. Outside the range, no outgoing connection can take it while a test
/// has it closed (a restarted shipper's metrics, a proxy that is down).
pub fn reserve_port() -> u16 {
    loop {
        let port = 20_000 + (rand::random::<u16>() % 12_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// GET `path`; the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("reading {path}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {response:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("{path}: {}", head.lines().next().unwrap_or("")));
    }
    Ok(body.to_owned())
}

/// One scrape of `/metrics`: sample name (with labels, as printed) → value.
#[derive(Debug, Clone)]
pub struct Metrics(pub BTreeMap<String, f64>);

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| {
                    let (name, value) = l.rsplit_once(' ')?;
                    Some((name.to_owned(), value.parse().ok()?))
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }

    /// [`total`](Self::total), or a panic naming the metric and what is
    /// exported.
    pub fn value(&self, name: &str) -> f64 {
        self.total(name).unwrap_or_else(|| {
            panic!(
                "the shipper does not export {name}; it has: {:?}",
                self.0.keys().collect::<Vec<_>>()
            )
        })
    }

    /// The sum over every label set of `name` (e.g. all the `reason`s of
    /// `lines_malformed_total`), or `None` if there is no such sample.
    pub fn total(&self, name: &str) -> Option<f64> {
        let labelled = format!("{name}{{");
        let values: Vec<f64> = self
            .0
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&labelled))
            .map(|(_, v)| *v)
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    fn show(&self, name: &str) -> String {
        self.total(name)
            .map_or_else(|| "-".into(), |v| v.to_string())
    }

    /// Samples whose name contains `part`.
    pub fn matching(&self, part: &str) -> Vec<(String, f64)> {
        self.0
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// Bytes in the spool dir's files, the dead-letter log excluded.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let Ok(meta) = e.metadata() else { return 0 };
            if meta.is_dir() {
                dir_bytes(&e.path())
            } else if e.file_name().to_string_lossy().starts_with("dead-letter") {
                0
            } else {
                meta.len()
            }
        })
        .sum()
}

// ---------------------------------------------------------------------------
// The access log
// ---------------------------------------------------------------------------

/// An nginx access log in the dev stack's format, written as nginx does
/// (`O_APPEND`), rotated as logrotate does.
pub struct AccessLog {
    pub path: PathBuf,
    out: BufWriter<File>,
    time_local: String,
    rotations: u32,
}

impl AccessLog {
    pub fn create(path: &Path) -> AccessLog {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        AccessLog {
            path: path.to_owned(),
            out: BufWriter::with_capacity(256 << 10, open_append(path)),
            time_local: time_local_now(),
            rotations: 0,
        }
    }

    /// Good line number `n` (see [`good_line`]).
    pub fn line(&mut self, n: u64) {
        self.out
            .write_all(good_line(n, &self.time_local).as_bytes())
            .unwrap();
    }

    pub fn lines(&mut self, range: Range<u64>) {
        for n in range {
            self.line(n);
        }
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.out.write_all(bytes).unwrap();
    }

    pub fn flush(&mut self) {
        self.out.flush().unwrap();
    }

    fn rotated_name(&mut self) -> PathBuf {
        self.rotations += 1;
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{:04}", self.rotations));
        PathBuf::from(name)
    }

    /// logrotate's default: rename to `<path>.NNNN`, and nginx reopens
    /// (after `USR1`) a new file at the path.
    pub fn rotate_rename(&mut self) -> PathBuf {
        self.flush();
        let to = self.rotated_name();
        std::fs::rename(&self.path, &to).unwrap();
        self.out = BufWriter::with_capacity(256 << 10, open_append(&self.path));
        to
    }

    /// logrotate's `copytruncate`: copy to `<path>.NNNN`, truncate the file
    /// in place; nginx keeps writing through its `O_APPEND` descriptor.
    pub fn rotate_copytruncate(&mut self) -> PathBuf {
        self.flush();
        let to = self.rotated_name();
        std::fs::copy(&self.path, &to).unwrap();
        self.out.get_ref().set_len(0).unwrap();
        to
    }
}

fn open_append(path: &Path) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()))
}

/// Line `n` in the dev format: path `/t/<n>`, zone `shipper-test.example`,
/// and a per-line token in the user agent so batches compress like real
/// traffic rather than like a repeated string.
pub fn good_line(n: u64, time_local: &str) -> String {
    let token = splitmix64(n);
    format!(
        "10.{}.{}.{} - - [{time_local}] \"GET /t/{n} HTTP/1.1\" {} {} \"-\" \"sluice-stack-test/{token:016x}\" shipper-test.example 0.{:03} {} {} https\n",
        (token >> 8) as u8,
        (token >> 16) as u8,
        (token >> 24) as u8,
        [200, 200, 200, 304, 404][(token % 5) as usize],
        token % 100_000,
        token % 1000,
        ["HIT", "MISS", "EXPIRED"][(token % 3) as usize],
        200 + token % 800,
    )
}

fn splitmix64(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `$time_local` for now, in UTC: `22/Nov/2026:03:22:36 +0000`.
pub fn time_local_now() -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (days, day_secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[(month - 1) as usize],
        day_secs / 3600,
        day_secs % 3600 / 60,
        day_secs % 60
    )
}

// ---------------------------------------------------------------------------
// A TCP proxy in front of ingest
// ---------------------------------------------------------------------------

/// Forwards `127.0.0.1:<port>` to ingest; [`down`](Self::down) closes the
/// listener and every open connection (new ones are refused), and
/// [`up`](Self::up) listens on the same port again.
pub struct TcpProxy {
    pub addr: SocketAddr,
    target: String,
    runtime: tokio::runtime::Runtime,
    running: Mutex<Option<Running>>,
}

struct Running {
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl TcpProxy {
    pub fn start(target: &str) -> TcpProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let proxy = TcpProxy {
            addr: SocketAddr::from(([127, 0, 0, 1], reserve_port())),
            target: target.to_owned(),
            runtime,
            running: Mutex::new(None),
        };
        proxy.up();
        proxy
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    pub fn up(&self) {
        let mut running = self.running.lock().unwrap();
        if running.is_some() {
            return;
        }
        let addr = self.addr;
        let listener = self.runtime.block_on(async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.set_reuseaddr(true).unwrap();
                match socket.bind(addr).and_then(|()| socket.listen(128)) {
                    Ok(listener) => return listener,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("proxy: binding {addr} again: {e}; retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("proxy: cannot listen on {addr} again: {e}"),
                }
            }
        });
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (target, conns) = (self.target.clone(), connections.clone());
        let accept = self.runtime.spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let target = target.clone();
                let forward = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let mut conns = conns.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(forward.abort_handle());
            }
        });
        *running = Some(Running {
            accept,
            connections,
        });
    }

    /// Ingest becomes unreachable: connections are cut, new ones refused.
    pub fn down(&self) {
        let Some(running) = self.running.lock().unwrap().take() else {
            return;
        };
        running.accept.abort();
        for c in running.connections.lock().unwrap().drain(..) {
            c.abort();
        }
        // Wait for the listener to be dropped, so that connecting is refused.
        let _ = self.runtime.block_on(running.accept);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.down();
    }
}
