//! The real `aggregator` binary against the dev stack's broker and
//! PostgreSQL clusters, isolated from the dev stack's own aggregator: each
//! test gets a [`Sandbox`] — a fresh Kafka topic, a fresh database on every
//! cluster, a temporary directory — and runs one or more [`Aggregator`]
//! processes on it, fed by a [`Producer`] that writes batches exactly as
//! ingest does.
//!
//! The dev stack is found through the env file named by `SLUICE_DEV_ENV`
//! (`./deploy/dev test` sets it): `KAFKA_BOOTSTRAP` and `PG_SHARDS`.
//!
//! Cleaning up is best effort and also happens when a test fails: dropping
//! an [`Aggregator`] kills its process (printing the tail of its log if the
//! test is panicking), dropping the [`Sandbox`] drops its databases; its
//! directory is kept after a failure, for the logs. The topic is NOT
//! deleted: tansu 0.6 (the dev broker) answers DeleteTopics with
//! `DELETE FROM topic WHERE cluster IN (…)` — every topic of the cluster,
//! the dev stack's own included, and its storage task dies with it. Test
//! topics are created with a one-hour retention instead, so the broker
//! drops their messages.
//!
//! Process tests built on this — kill -9 runs, a shard taken down, two
//! aggregators in one group — have [`Aggregator::start`],
//! [`Aggregator::kill9`], [`Aggregator::terminate`] and
//! [`Sandbox::wait_until_consumed`]; several aggregators with one
//! `group_id` share a sandbox.
//!
//! Outages must not touch what other tests share, so a sandbox can also
//! run on parts of its own ([`Sandbox::create_with`], [`Private`]): a
//! private tansu broker (the launcher ingest's tests use,
//! `ingest/tests/support/tansu.rs`) that can be killed and resumed with its
//! data, and private PostgreSQL clusters ([`Cluster`]: initdb in the
//! sandbox's directory, a free port) that can be stopped as a crash would
//! (`pg_ctl stop -m immediate`) and started again. They go away with the
//! sandbox.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext};
use schemas::BatchId;
use tokio::runtime::Runtime;

#[path = "../../../ingest/tests/support/tansu.rs"]
mod tansu;
pub use tansu::{free_port, Broker};

pub const NEEDS_STACK: &str = "needs the dev stack: ./deploy/dev test";

/// The largest message the test topics take (as ingest's topic: 16 MiB
/// frames plus room for key and headers).
const MAX_MESSAGE_BYTES: usize = (16 << 20) + (64 << 10);

/// Test topics are never deleted (see the module doc); their messages may
/// go after an hour.
const TEST_TOPIC_RETENTION_MS: &str = "3600000";

/// How long one admin or metadata request may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// The dev stack

/// What the tests use of the running dev stack.
#[derive(Debug, Clone)]
pub struct DevStack {
    pub kafka_bootstrap: String,
    /// libpq DSNs of the shards' `sluice` databases, in shard order.
    pub shard_dsns: Vec<String>,
}

impl DevStack {
    /// Reads the env file named by `SLUICE_DEV_ENV`; panics, saying how to
    /// get one, when there is none.
    pub fn from_env() -> DevStack {
        let path = std::env::var("SLUICE_DEV_ENV").unwrap_or_else(|_| {
            panic!(
                "SLUICE_DEV_ENV is not set: this test {NEEDS_STACK} \
                 (or `./deploy/dev up` and SLUICE_DEV_ENV=deploy/.dev/env)"
            )
        });
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading the dev env file {path}: {e} ({NEEDS_STACK})"));
        let vars = parse_env(&text);
        let get = |key: &str| {
            vars.get(key)
                .cloned()
                .unwrap_or_else(|| panic!("{key} missing from the dev env file {path}"))
        };
        let shard_dsns = split_dsns(&get("PG_SHARDS"));
        assert!(!shard_dsns.is_empty(), "PG_SHARDS in {path} names no shard");
        DevStack {
            kafka_bootstrap: get("KAFKA_BOOTSTRAP"),
            shard_dsns,
        }
    }
}

/// `KEY="value"` lines (shell-quoted), comments and blanks skipped.
fn parse_env(text: &str) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(|v| v.replace("\\\"", "\"").replace("\\\\", "\\"))
                .unwrap_or_else(|| value.to_owned());
            vars.insert(key.trim().to_owned(), value);
        }
    }
    vars
}

/// `PG_SHARDS` holds the shards' DSNs one after another, space-separated
/// like their own `key=value` pairs: a URL is one DSN, and a key seen again
/// starts the next `key=value` DSN.
pub fn split_dsns(text: &str) -> Vec<String> {
    let mut dsns: Vec<Vec<&str>> = Vec::new();
    for pair in text.split_whitespace() {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let starts_new = pair.contains("://")
            || dsns.last().is_none_or(|dsn| {
                dsn.iter()
                    .any(|p| p.contains("://") || p.split_once('=').map_or(*p, |(k, _)| k) == key)
            });
        if starts_new {
            dsns.push(Vec::new());
        }
        dsns.last_mut().expect("pushed above").push(pair);
    }
    dsns.into_iter().map(|pairs| pairs.join(" ")).collect()
}

/// `dsn` with its `dbname` replaced (or added).
fn with_dbname(dsn: &str, dbname: &str) -> String {
    let mut pairs: Vec<String> = dsn
        .split_whitespace()
        .filter(|p| !p.starts_with("dbname="))
        .map(str::to_owned)
        .collect();
    pairs.push(format!("dbname={dbname}"));
    pairs.join(" ")
}

// ---------------------------------------------------------------------------
// Private PostgreSQL clusters

/// Where the PostgreSQL 15 server binaries are (`postgresql-15`, which the
/// dev stack installs).
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// A PostgreSQL cluster of one test: initdb in a directory of its own,
/// listening on a free loopback port, trusting local connections as
/// `postgres`. It can be stopped as a crash would and started again with
/// its data; dropping it stops it.
pub struct Cluster {
    dir: PathBuf,
    pub port: u16,
    running: bool,
}

impl Cluster {
    /// initdb in `dir` and start. As root, PostgreSQL runs as the
    /// `postgres` system user (as in `./deploy/dev`), which must be able to
    /// reach `dir`.
    pub fn start(dir: &Path) -> Cluster {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let port = free_port();
        let cluster = Cluster {
            dir: dir.to_owned(),
            port,
            running: false,
        };
        if is_root() {
            run_ok(Command::new("chown").arg("postgres:postgres").arg(dir));
        }
        let data = cluster.data();
        run_ok(
            cluster
                .pg(&format!("{PG_BIN}/initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth-local=trust", "--auth-host=trust"])
                .args(["--encoding=UTF8", "--no-locale", "--no-sync"]),
        );
        // No unix socket (its path could be too long); fsync off, since
        // only the process crashes here, never the machine.
        let settings = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n\
             fsync = off\nmax_connections = 40\nshared_buffers = 32MB\n\
             log_line_prefix = '%m [%p] %q%u@%d '\n"
        );
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .unwrap_or_else(|e| panic!("reading {}: {e}", conf.display()));
        text.push_str(&settings);
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("writing {}: {e}", conf.display()));
        let mut cluster = cluster;
        cluster.resume();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// A PostgreSQL program, run as the cluster's owner.
    fn pg(&self, program: &str) -> Command {
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", program]);
            c
        } else {
            Command::new(program)
        };
        command.current_dir("/");
        command
    }

    /// DSN of the cluster's `postgres` database.
    pub fn dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname=postgres",
            self.port
        )
    }

    /// Its server log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// Starts the (stopped) cluster and waits until it accepts connections.
    pub fn resume(&mut self) {
        assert!(
            !self.running,
            "the cluster in {} runs already",
            self.dir.display()
        );
        run_ok(
            self.pg(&format!("{PG_BIN}/pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .arg("-l")
                .arg(self.log())
                .args(["-w", "-t", "60", "start"]),
        );
        self.running = true;
    }

    /// Stops the cluster without a shutdown checkpoint, as a crash would
    /// (`pg_ctl stop -m immediate`): connections drop at once, and the next
    /// start recovers from the WAL.
    pub fn crash(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        run_ok(
            self.pg(&format!("{PG_BIN}/pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-w", "-t", "60", "-m", "immediate", "stop"]),
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.running {
            self.running = false;
            let _ = self
                .pg(&format!("{PG_BIN}/pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-w", "-t", "30", "-m", "immediate", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// Runs `command`, panicking with its output unless it succeeds.
fn run_ok(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Sandbox

/// One shard of a sandbox: a database of its own on one cluster.
#[derive(Debug, Clone)]
pub struct TestShard {
    /// Shard name in the aggregator's config (zones are placed by name).
    pub name: String,
    /// DSN of the test database.
    pub dsn: String,
    /// DSN of the cluster's `postgres` database, for CREATE/DROP DATABASE.
    admin_dsn: String,
}

/// Which parts of a sandbox are its own instead of the dev stack's.
#[derive(Debug, Clone, Default)]
pub struct Private {
    /// A private tansu broker instead of the dev broker.
    pub broker: bool,
    /// The shards (by index) that get a private PostgreSQL cluster instead
    /// of a database on the dev stack's cluster.
    pub clusters: Vec<usize>,
}

/// A fresh topic, fresh databases and a temporary directory, and the
/// private broker and clusters asked for. Dropping it drops the databases,
/// stops the private parts and removes the directory (kept if the test is
/// failing); a topic on the dev broker stays (see the module doc).
pub struct Sandbox {
    /// `sluice_t_<random hex>`: the database name, and the topic's stem.
    pub id: String,
    pub topic: String,
    pub partitions: i32,
    pub kafka_bootstrap: String,
    pub shards: Vec<TestShard>,
    pub dir: PathBuf,
    runtime: Runtime,
    clients: Vec<tokio_postgres::Client>,
    admin: AdminClient<DefaultClientContext>,
    broker: Option<Broker>,
    /// Shard index → its private cluster.
    clusters: BTreeMap<usize, Cluster>,
}

impl Sandbox {
    /// Creates the topic (`partitions` partitions) and, on every cluster of
    /// the dev stack, a database with the `hll` extension.
    pub fn create(stack: &DevStack, partitions: i32) -> Sandbox {
        Sandbox::create_with(stack, partitions, &Private::default())
    }

    /// Like [`create`](Self::create), with the parts `private` names
    /// started for this sandbox alone, in its directory.
    pub fn create_with(stack: &DevStack, partitions: i32, private: &Private) -> Sandbox {
        let id = format!("sluice_t_{:016x}", rand::random::<u64>());
        let topic = format!("{id}.requests");
        let dir = std::env::temp_dir().join(&id);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let broker = private.broker.then(|| Broker::start(&dir));
        let mut stack = stack.clone();
        if let Some(broker) = &broker {
            stack.kafka_bootstrap = broker.bootstrap();
        }
        let mut clusters = BTreeMap::new();
        for &i in &private.clusters {
            assert!(i < stack.shard_dsns.len(), "no shard {i} to make private");
            let cluster = Cluster::start(&dir.join(format!("pg-shard{i}")));
            stack.shard_dsns[i] = cluster.dsn();
            clusters.insert(i, cluster);
        }
        let stack = &stack;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &stack.kafka_bootstrap)
            .set("client.id", "sluice-aggregator-tests")
            .create()
            .unwrap_or_else(|e| panic!("Kafka admin client for {}: {e}", stack.kafka_bootstrap));
        let shards: Vec<TestShard> = stack
            .shard_dsns
            .iter()
            .enumerate()
            .map(|(i, dsn)| TestShard {
                name: format!("shard{i}"),
                dsn: with_dbname(dsn, &id),
                admin_dsn: with_dbname(dsn, "postgres"),
            })
            .collect();
        // From here on, Drop cleans up whatever got created.
        let mut sandbox = Sandbox {
            id,
            topic,
            partitions,
            kafka_bootstrap: stack.kafka_bootstrap.clone(),
            shards,
            dir,
            runtime,
            clients: Vec::new(),
            admin,
            broker,
            clusters,
        };
        sandbox.create_topic();
        let clients = sandbox.runtime.block_on(async {
            let mut clients = Vec::new();
            for shard in &sandbox.shards {
                let admin = connect(&shard.admin_dsn).await;
                admin
                    .batch_execute(&format!("CREATE DATABASE {}", sandbox.id))
                    .await
                    .unwrap_or_else(|e| panic!("CREATE DATABASE on {}: {e}", shard.admin_dsn));
                let client = connect(&shard.dsn).await;
                client
                    .batch_execute("CREATE EXTENSION IF NOT EXISTS hll")
                    .await
                    .unwrap_or_else(|e| panic!("CREATE EXTENSION hll on {}: {e}", shard.dsn));
                clients.push(client);
            }
            clients
        });
        sandbox.clients = clients;
        println!(
            "sandbox {}: topic {} ({} partitions) on {}{}, databases on {} clusters ({} private), files in {}",
            sandbox.id,
            sandbox.topic,
            partitions,
            sandbox.kafka_bootstrap,
            if sandbox.broker.is_some() { " (private)" } else { "" },
            sandbox.shards.len(),
            sandbox.clusters.len(),
            sandbox.dir.display()
        );
        sandbox
    }

    /// The private broker; panics if the sandbox has none.
    pub fn broker(&mut self) -> &mut Broker {
        self.broker
            .as_mut()
            .expect("this sandbox has no private broker")
    }

    /// Takes shard `i`'s private cluster down as a crash would; the
    /// sandbox's connection to it breaks until [`restore_shard`](Self::restore_shard).
    pub fn crash_shard(&mut self, i: usize) {
        self.clusters
            .get_mut(&i)
            .unwrap_or_else(|| panic!("shard {i} has no private cluster"))
            .crash();
    }

    /// Starts shard `i`'s private cluster again and reconnects to it.
    pub fn restore_shard(&mut self, i: usize) {
        self.clusters
            .get_mut(&i)
            .unwrap_or_else(|| panic!("shard {i} has no private cluster"))
            .resume();
        let client = self.runtime.block_on(connect(&self.shards[i].dsn));
        self.clients[i] = client;
    }

    /// The transactions open in shard `i`'s test database on connections
    /// made since `since` (a process's start: its own, not those a killed
    /// predecessor left behind), as `pid state: query` (the query
    /// shortened). Background workers such as autovacuum do not count.
    pub fn open_transactions(&self, i: usize, since: SystemTime) -> Vec<String> {
        self.query(
            i,
            "SELECT pid || ' ' || state || ': ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 70)
               FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND backend_type = 'client backend' AND backend_start >= $1
                AND xact_start IS NOT NULL",
            &[&since],
        )
        .iter()
        .map(|row| row.get(0))
        .collect()
    }

    fn create_topic(&self) {
        let max_message = MAX_MESSAGE_BYTES.to_string();
        let topic = NewTopic::new(&self.topic, self.partitions, TopicReplication::Fixed(1))
            .set("max.message.bytes", &max_message)
            .set("retention.ms", TEST_TOPIC_RETENTION_MS)
            // tansu applies retention only to topics that say so.
            .set("cleanup.policy", "delete");
        let options = AdminOptions::new()
            .request_timeout(Some(ADMIN_TIMEOUT))
            .operation_timeout(Some(ADMIN_TIMEOUT));
        let results = self
            .runtime
            .block_on(self.admin.create_topics([&topic], &options))
            .unwrap_or_else(|e| panic!("creating topic {}: {e} ({NEEDS_STACK})", self.topic));
        for result in results {
            if let Err((topic, code)) = result {
                panic!("creating topic {topic}: {code}");
            }
        }
        // Wait until the broker reports every partition.
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            let known = self
                .admin
                .inner()
                .fetch_metadata(Some(&self.topic), Timeout::After(ADMIN_TIMEOUT))
                .ok()
                .and_then(|m| {
                    m.topics()
                        .iter()
                        .find(|t| t.name() == self.topic && t.error().is_none())
                        .map(|t| t.partitions().len())
                });
            if known == Some(self.partitions as usize) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {} not visible with {} partitions after {ADMIN_TIMEOUT:?} (metadata says {known:?})",
                self.topic,
                self.partitions
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs a future on the sandbox's runtime (where its database
    /// connections live).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// A connection to shard `i`'s test database.
    pub fn client(&self, i: usize) -> &tokio_postgres::Client {
        &self.clients[i]
    }

    /// Runs a query on shard `i`, panicking with the statement on failure.
    pub fn query(
        &self,
        i: usize,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        self.block_on(self.clients[i].query(sql, params))
            .unwrap_or_else(|e| panic!("on {}: {e}\n{sql}", self.shards[i].name))
    }

    /// The topic's high watermarks: partition → offset of the next message.
    pub fn high_watermarks(&self) -> BTreeMap<i32, i64> {
        (0..self.partitions)
            .map(|p| {
                let (_, high) = self
                    .admin
                    .inner()
                    .fetch_watermarks(&self.topic, p, Timeout::After(ADMIN_TIMEOUT))
                    .unwrap_or_else(|e| panic!("watermarks of {}/{p}: {e}", self.topic));
                (p, high)
            })
            .collect()
    }

    /// Stored positions of shard `i`: partition → next offset.
    pub fn positions(&self, i: usize) -> BTreeMap<i32, i64> {
        self.query(
            i,
            "SELECT partition, next_offset FROM sluice_positions WHERE topic = $1",
            &[&self.topic],
        )
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
    }

    /// Waits until every shard has stored, for every partition holding
    /// messages, the partition's high watermark as its next offset — each
    /// shard stores a position for every message it was handed, whether or
    /// not it carried records for that shard, so "caught up" is the same
    /// test on every shard. Panics if a position passes the watermark, if an
    /// aggregator of `running` exits, or after `patience`, saying what is
    /// behind.
    pub fn wait_until_consumed(&self, running: &mut [&mut Aggregator], patience: Duration) {
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let high = self.high_watermarks();
            let mut behind = Vec::new();
            for i in 0..self.shards.len() {
                let stored = self.positions(i);
                for (&partition, &hw) in &high {
                    let at = stored.get(&partition).copied();
                    assert!(
                        at.is_none_or(|at| at <= hw),
                        "{} stored next_offset {at:?} for partition {partition}, beyond its high watermark {hw}",
                        self.shards[i].name
                    );
                    if hw > 0 && at != Some(hw) {
                        behind.push(format!(
                            "{} partition {partition}: stored {} of {hw}",
                            self.shards[i].name,
                            at.map_or("nothing".to_owned(), |a| a.to_string())
                        ));
                    }
                }
            }
            if behind.is_empty() {
                println!(
                    "consumed: every shard holds the high watermarks {high:?} (after {:.1} s)",
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            for aggregator in running.iter_mut() {
                aggregator.assert_running();
            }
            if started.elapsed() > patience {
                let tails: String = running
                    .iter()
                    .map(|a| {
                        format!(
                            "\n--- {} log (last 40 lines) ---\n{}",
                            a.name,
                            a.log_tail(40)
                        )
                    })
                    .collect();
                panic!(
                    "not consumed after {patience:?}; behind:\n  {}{tails}",
                    behind.join("\n  ")
                );
            }
            if last_report.elapsed() > Duration::from_secs(10) {
                println!("waiting for the aggregator: {}", behind.join("; "));
                last_report = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// An aggregator for this sandbox, its config written to `<dir>/<name>.toml`.
    /// Not started; see [`Aggregator::migrate`] and [`Aggregator::start`].
    pub fn aggregator(&self, name: &str, options: &AggregatorOptions) -> Aggregator {
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let config = self.dir.join(format!("{name}.toml"));
        let mut toml = String::new();
        writeln!(
            toml,
            "[kafka]\nbootstrap = {:?}\ntopic = {:?}\ngroup_id = {:?}\n",
            self.kafka_bootstrap, self.topic, options.group_id
        )
        .unwrap();
        if !options.librdkafka_options.is_empty() {
            writeln!(toml, "[kafka.librdkafka_options]").unwrap();
            for (key, value) in &options.librdkafka_options {
                writeln!(toml, "{key:?} = {value:?}").unwrap();
            }
            writeln!(toml).unwrap();
        }
        for shard in &self.shards {
            writeln!(
                toml,
                "[[shards]]\nname = {:?}\ndsn = {:?}\n",
                shard.name, shard.dsn
            )
            .unwrap();
        }
        writeln!(
            toml,
            "[flush]\ninterval_ms = {}\n\n[rollup]\nlateness = {:?}\nflood_threshold = {}\n\n\
             [retention]\nminute = {:?}\nhour = {:?}\nday = {:?}\n\n[api]\nlisten = \"{api}\"",
            options.flush_interval_ms,
            options.lateness,
            options.flood_threshold,
            options.retention_minute,
            options.retention_hour,
            options.retention_day,
        )
        .unwrap();
        std::fs::write(&config, toml)
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        Aggregator {
            name: name.to_owned(),
            config,
            log: self.dir.join(format!("{name}.log")),
            api,
            child: None,
            starts: 0,
            started_at: SystemTime::UNIX_EPOCH,
        }
    }

    /// A producer for this sandbox's topic.
    pub fn producer(&self, progress_every: u64) -> Producer {
        Producer::new(&self.kafka_bootstrap, &self.topic, progress_every)
    }
}

async fn connect(dsn: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(dsn, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {dsn}: {e} ({NEEDS_STACK})"));
    tokio::spawn(async move {
        // Ends when the client is dropped; errors then are expected.
        let _ = connection.await;
    });
    client
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Close our own connections first: DROP DATABASE needs none open.
        self.clients.clear();
        let id = self.id.clone();
        // Private clusters go whole, with the directory.
        let shards: Vec<TestShard> = self
            .shards
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.clusters.contains_key(i))
            .map(|(_, shard)| shard.clone())
            .collect();
        self.runtime.block_on(async {
            for shard in &shards {
                let dropped = async {
                    let (client, connection) =
                        tokio_postgres::connect(&shard.admin_dsn, tokio_postgres::NoTls).await?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {id} WITH (FORCE)"))
                        .await
                };
                if let Err(e) = dropped.await {
                    eprintln!(
                        "cleanup: dropping database {id} on {}: {e}",
                        shard.admin_dsn
                    );
                }
            }
        });
        self.clusters.clear();
        self.broker = None;
        if std::thread::panicking() {
            eprintln!("sandbox {}: files kept in {}", self.id, self.dir.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("cleanup: removing {}: {e}", self.dir.display());
        }
    }
}

// ---------------------------------------------------------------------------
// Aggregator processes

/// The settings a test chooses; the rest of the config comes from the
/// sandbox.
#[derive(Debug, Clone)]
pub struct AggregatorOptions {
    pub group_id: String,
    pub flush_interval_ms: u64,
    /// A humantime duration, e.g. `"6h"`.
    pub lateness: String,
    pub flood_threshold: u32,
    pub retention_minute: String,
    pub retention_hour: String,
    pub retention_day: String,
    /// `[kafka.librdkafka_options]` of the config, e.g. `("debug", "cgrp")`.
    pub librdkafka_options: Vec<(String, String)>,
}

impl Default for AggregatorOptions {
    fn default() -> Self {
        AggregatorOptions {
            group_id: "sluice-test".to_owned(),
            flush_interval_ms: 1000,
            lateness: "1h".to_owned(),
            flood_threshold: 100,
            retention_minute: "7d".to_owned(),
            retention_hour: "90d".to_owned(),
            retention_day: "3650d".to_owned(),
            librdkafka_options: Vec::new(),
        }
    }
}

/// One `aggregator` process (`CARGO_BIN_EXE_aggregator`), restartable; its
/// output goes to `<dir>/<name>.log`, every start appended.
pub struct Aggregator {
    pub name: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// Where its API listens.
    pub api: SocketAddr,
    child: Option<Child>,
    starts: u32,
    started_at: SystemTime,
}

impl Aggregator {
    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_aggregator"));
        command.arg("--config").arg(&self.config);
        command
    }

    fn log_file(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log.display()))
    }

    /// `aggregator migrate`: creates the schema on every shard.
    pub fn migrate(&self) {
        let output = self
            .command()
            .arg("migrate")
            .output()
            .expect("running aggregator migrate");
        let _ = self.log_file().write_all(&output.stderr);
        assert!(
            output.status.success(),
            "aggregator migrate failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// `aggregator run`, in the background.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is already running", self.name);
        self.starts += 1;
        self.started_at = SystemTime::now();
        let mut log = self.log_file();
        let _ = writeln!(log, "=== harness: start #{} ===", self.starts);
        let child = self
            .command()
            .arg("run")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Plain text: tests read the log.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .expect("starting aggregator run");
        self.child = Some(child);
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// When the latest start was.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// SIGSTOP: the process halts wherever it is, exactly as a kill -9
    /// there would leave things, but what it holds open (transactions,
    /// group membership) stays visible until [`kill9`](Self::kill9), which
    /// ends a stopped process as any other.
    pub fn freeze(&mut self) {
        self.signal("STOP");
    }

    /// SIGCONT: a [`freeze`](Self::freeze)d process carries on where it
    /// stopped, as after any scheduling pause.
    pub fn thaw(&mut self) {
        self.signal("CONT");
    }

    /// Sends the running process `kill -<name>`.
    fn signal(&self, name: &str) {
        if let Some(child) = &self.child {
            let status = Command::new("kill")
                .arg(format!("-{name}"))
                .arg(child.id().to_string())
                .status()
                .unwrap_or_else(|e| panic!("running kill -{name}: {e}"));
            assert!(status.success(), "kill -{name} {} failed", child.id());
        }
    }

    /// SIGKILL, no chance to flush; waits for the process to be gone.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = writeln!(self.log_file(), "=== harness: kill -9 ===");
        }
    }

    /// SIGTERM (the aggregator flushes and leaves its group), then waits up
    /// to `patience` for it to exit, and SIGKILLs it if it did not.
    pub fn terminate(&mut self, patience: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + patience;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let _ = writeln!(
                    self.log_file(),
                    "=== harness: exited after SIGTERM: {status} ==="
                );
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = writeln!(
                    self.log_file(),
                    "=== harness: did not exit on SIGTERM in {patience:?}; killed ==="
                );
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Panics with the log tail if the process was started and has exited.
    pub fn assert_running(&mut self) {
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "aggregator {} exited unexpectedly ({status}); last log lines:\n{}",
                    self.name,
                    self.log_tail(60)
                );
            }
        }
    }

    /// What the latest start logged so far.
    pub fn log_of_this_start(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let marker = format!("=== harness: start #{} ===", self.starts);
        match text.rfind(&marker) {
            Some(at) => text[at..].to_owned(),
            None => String::new(),
        }
    }

    /// The partitions of every assignment since the latest start, in
    /// order (from the `partitions assigned` log lines).
    pub fn assignments(&self) -> Vec<Vec<i32>> {
        self.log_of_this_start()
            .lines()
            .filter(|line| line.contains("partitions assigned"))
            .filter_map(|line| {
                let list = line.split("partitions=[").nth(1)?.split(']').next()?;
                Some(
                    list.split(',')
                        .filter_map(|p| p.trim().parse().ok())
                        .collect(),
                )
            })
            .collect()
    }

    /// Waits until the latest start owns partitions and has loaded their
    /// positions from the shards (so it consumes), at most `patience`;
    /// panics if the process exits. Returns how long it took.
    pub fn wait_until_consuming(&mut self, patience: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let log = self.log_of_this_start();
            let last_assignment = log.rfind("partitions assigned");
            let owns_some = self.assignments().last().is_some_and(|p| !p.is_empty());
            if owns_some
                && last_assignment.is_some_and(|at| {
                    log[at..].contains("resuming from the shards' stored positions")
                })
            {
                return started.elapsed();
            }
            self.assert_running();
            assert!(
                started.elapsed() < patience,
                "aggregator {} did not get partitions within {patience:?}; last log lines:\n{}",
                self.name,
                self.log_tail(30)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// One counter or gauge (the exact series, labels included) from
    /// `/metrics`; `None` if the process does not answer or lacks it.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let url = format!("http://{}/metrics", self.api);
        let text = ureq::get(&url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .ok()?;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
    }

    /// `/metrics` of the running process, as text.
    pub fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.api);
        ureq::get(&url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill9();
            if std::thread::panicking() {
                eprintln!(
                    "--- aggregator {} log ({}), last 40 lines ---\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(40)
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Producing batches as ingest does

/// Delivery failures, collected from librdkafka's thread.
#[derive(Clone, Default)]
struct Deliveries {
    failures: Arc<Mutex<Vec<String>>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.failures
                .lock()
                .expect("failures lock")
                .push(error.to_string());
        }
    }
}

/// Sends sealed batches the way ingest's Kafka sink does (`ingest/src/kafka.rs`):
/// one message per batch, value = the blob, key = edge id, the identity
/// repeated in the `schemas::kafka` headers; idempotent, `acks=all`.
pub struct Producer {
    producer: ThreadedProducer<Deliveries>,
    deliveries: Deliveries,
    topic: String,
    progress_every: u64,
    batches: u64,
    records: u64,
    bytes: u64,
    started: Instant,
}

impl Producer {
    fn new(bootstrap: &str, topic: &str, progress_every: u64) -> Producer {
        let deliveries = Deliveries::default();
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "sluice-aggregator-tests")
            .set("allow.auto.create.topics", "false")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "none")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "60000")
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .create_with_context(deliveries.clone())
            .unwrap_or_else(|e| panic!("Kafka producer for {bootstrap}: {e}"));
        Producer {
            producer,
            deliveries,
            topic: topic.to_owned(),
            progress_every: progress_every.max(1),
            batches: 0,
            records: 0,
            bytes: 0,
            started: Instant::now(),
        }
    }

    /// Queues one batch (blocking while librdkafka's queue is full).
    pub fn send(&mut self, edge: &str, id: BatchId, records: u32, blob: &[u8]) {
        let headers = schemas::kafka::headers(edge, id, records).iter().fold(
            OwnedHeaders::new_with_capacity(5),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            },
        );
        let mut record = BaseRecord::to(&self.topic)
            .key(edge)
            .payload(blob)
            .headers(headers);
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("producing batch {id:?} of {edge}: {e}"),
            }
        }
        self.batches += 1;
        self.records += u64::from(records);
        self.bytes += blob.len() as u64;
        if self.batches % self.progress_every == 0 {
            self.report("produced");
        }
        self.assert_no_failures();
    }

    /// Waits until the broker confirmed every batch; panics on any failure.
    pub fn flush(&mut self) {
        self.producer
            .flush(Timeout::After(Duration::from_secs(120)))
            .unwrap_or_else(|e| panic!("flushing the producer: {e}"));
        self.assert_no_failures();
        self.report("confirmed");
    }

    fn assert_no_failures(&self) {
        let failures = self.deliveries.failures.lock().expect("failures lock");
        assert!(
            failures.is_empty(),
            "{} batches were not delivered; first: {}",
            failures.len(),
            failures[0]
        );
    }

    fn report(&self, what: &str) {
        let seconds = self.started.elapsed().as_secs_f64();
        println!(
            "{what} {} batches, {} records, {:.1} MB in {seconds:.1} s ({:.0} records/s)",
            self.batches,
            self.records,
            self.bytes as f64 / 1e6,
            self.records as f64 / seconds.max(1e-9)
        );
    }

    pub fn batches(&self) -> u64 {
        self.batches
    }
}
