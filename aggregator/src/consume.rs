//! Kafka in, rollups out: the consumer thread and the aggregation core.
//!
//! ```text
//!  consumer thread (librdkafka, blocking)        core (async task)
//!    poll ─ Message{gen,partition,offset} ──▶  decode, dedup, route to shard
//!    rebalance: Assigned ─────────────────▶    load positions ─▶ reply offsets
//!               Revoking ─────────────────▶    flush ─▶ reply
//!    seek ◀──────────────────────── Seek{gen}  after a fenced flush
//!    commit ◀───────────────────── Commit     after each flush (a hint)
//!                                               every interval: flush shards
//! ```
//!
//! A flush runs beside the core: at each tick the core hands every shard's
//! [`Pending`] to a flush task and goes on applying messages into fresh
//! ones, so a slow database costs latency, not throughput. One flush is in
//! flight at a time; a shard whose flush failed gets its rows back, merged
//! with what came meanwhile, and the next tick retries. A rebalance and
//! shutdown wait for the flush in flight and then flush the rest.
//!
//! Exactly-once rests on the shards, not on Kafka's committed offsets: those
//! are written after each flush only so that standard lag tooling (and the
//! [`GroupWatchdog`]) can see progress, and are never read back. Per shard and partition the core knows the
//! stored `next_offset`; a message below it is already in that shard and is
//! skipped there, and a batch whose identity the shard's window holds is
//! skipped too. On assignment each partition resumes from the lowest
//! position any shard stored for it. A flush that finds its positions moved
//! by someone else ([`StoreError::Fenced`]) means this process fell behind a
//! rebalance: it drops everything unflushed, reloads, and seeks back — a
//! message tagged with an older seek generation is then ignored.
//!
//! Running the blocking librdkafka poll on its own thread keeps it off the
//! runtime, and lets rebalance callbacks block until the core has flushed
//! or loaded positions, which is what the group protocol expects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use schemas::batch::{DecodedBatch, Decoder, Limits};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::classify::client::ClientCache;
use crate::classify::threat::{classify_with_client, Threat, Threats};
use crate::config::{Config, RollupConfig};
use crate::dedup::{Seen, Window, Windows};
use crate::metrics::Metrics;
use crate::rollup::{minute_of, Facts, Minute, Pending, Scratch};
use crate::schema::minute_start;
use crate::shard::ShardMap;
use crate::store::{Flush, Shard, StoreError};

/// What the consumer thread tells the core.
#[derive(Debug)]
enum Event {
    Message {
        gen: u64,
        partition: i32,
        offset: i64,
        edge: String,
        blob: Vec<u8>,
        /// The message's Kafka timestamp, if it has one.
        timestamp: Option<SystemTime>,
    },
    /// The consumer reached the end of a partition: everything Kafka held
    /// for it was delivered before this.
    Caught { gen: u64, partition: i32 },
    Assigned {
        partitions: Vec<i32>,
        reply: oneshot::Sender<Seek>,
    },
    Revoking {
        partitions: Vec<i32>,
        reply: oneshot::Sender<()>,
    },
}

/// What the core asks of the consumer thread.
#[derive(Debug)]
enum Command {
    /// Restart partitions after a fenced or failed flush.
    Seek(Seek),
    /// Record flushed positions as the group's committed offsets: a hint
    /// for lag monitoring and for [`GroupWatchdog`], never for correctness.
    Commit(Vec<(i32, i64)>),
}

/// Where to (re)start partitions, and the generation tag of what follows.
#[derive(Debug)]
struct Seek {
    gen: u64,
    offsets: Vec<(i32, Option<i64>)>,
}

struct Context {
    events: mpsc::Sender<Event>,
    topic: String,
    gen: AtomicU64,
    metrics: Arc<Metrics>,
}

/// Slots of the user-agent cache.
const CLIENT_CACHE_SLOTS: usize = 8192;

impl ClientContext for Context {
    /// librdkafka reports the end of a partition (which we asked for, see
    /// `enable.partition.eof`) through the error callback too; it is news,
    /// not an error. Everything else is logged as rdkafka's default does.
    fn error(&self, error: KafkaError, reason: &str) {
        // It comes as `Global(PartitionEOF)` from the error callback.
        if matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        ) {
            debug!("librdkafka: {error}: {reason}");
        } else {
            error!("librdkafka: {error}: {reason}");
        }
    }

    fn stats(&self, statistics: Statistics) {
        for topic in statistics.topics.values() {
            for (id, partition) in &topic.partitions {
                if *id >= 0 && partition.consumer_lag >= 0 {
                    self.metrics.lag(*id).set(partition.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let (reply, done) = oneshot::channel();
            let partitions = partitions_of(tpl);
            info!(
                ?partitions,
                "partitions revoked; flushing before giving them up"
            );
            if self
                .events
                .blocking_send(Event::Revoking { partitions, reply })
                .is_ok()
            {
                let _ = done.blocking_recv();
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let partitions = partitions_of(tpl);
                info!(?partitions, "partitions assigned; loading stored positions");
                let (reply, seek) = oneshot::channel();
                if self
                    .events
                    .blocking_send(Event::Assigned { partitions, reply })
                    .is_err()
                {
                    return;
                }
                let Ok(seek) = seek.blocking_recv() else {
                    return;
                };
                let tpl = self.offsets_tpl(&seek);
                if let Err(e) = consumer.assign(&tpl) {
                    error!("assigning partitions at their stored positions failed: {e}");
                }
                self.gen.store(seek.gen, Ordering::SeqCst);
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => warn!("rebalance error: {e}"),
        }
    }
}

impl Context {
    fn offsets_tpl(&self, seek: &Seek) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for &(partition, offset) in &seek.offsets {
            let offset = offset.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&self.topic, partition, offset)
                .expect("adding to a fresh list cannot fail");
        }
        tpl
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Handle to the running consumer; dropping it does not stop it, call
/// [`Consumer::stop`].
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    core: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops polling, lets the core flush what it has, and waits for both.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await?
                .ok();
        }
        self.core.await?
    }
}

/// Starts the consumer thread and the core.
pub fn start(
    config: &Config,
    shards: Arc<Vec<Shard>>,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Running> {
    let (events_tx, events_rx) = mpsc::channel(1024);
    let (command_tx, command_rx) = std::sync::mpsc::channel::<Command>();
    let context = Context {
        events: events_tx,
        topic: config.kafka.topic.clone(),
        gen: AtomicU64::new(0),
        metrics: metrics.clone(),
    };
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.bootstrap)
        .set("group.id", &config.kafka.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        .set("session.timeout.ms", "10000")
        // End-of-partition events say when a partition is fully consumed,
        // which is what `complete_until` rests on; statistics give the lag.
        .set("enable.partition.eof", "true")
        .set("statistics.interval.ms", "5000");
    for (key, value) in &config.kafka.librdkafka_options {
        client.set(key, value);
    }
    let consumer: BaseConsumer<Context> = client.create_with_context(context)?;
    consumer.subscribe(&[&config.kafka.topic])?;

    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn(move || poll_loop(consumer, command_rx, stop))?
    };
    let core = Core {
        topic: config.kafka.topic.clone(),
        states: shards.iter().map(|_| ShardState::default()).collect(),
        shards,
        assigned: BTreeSet::new(),
        progress: BTreeMap::new(),
        gen: 0,
        commands: command_tx,
        metrics,
        rollup: BatchRollup::new(config.shards.iter().map(|s| s.name.clone()), &config.rollup),
        decoder: Decoder::new(),
        flushing: None,
    };
    let interval = config.flush.interval();
    let core = tokio::spawn(core.run(events_rx, interval));
    Ok(Running {
        stop,
        thread: Some(thread),
        core,
    })
}

fn poll_loop(
    consumer: BaseConsumer<Context>,
    commands: std::sync::mpsc::Receiver<Command>,
    stop: Arc<AtomicBool>,
) {
    let mut watchdog = GroupWatchdog::default();
    while !stop.load(Ordering::SeqCst) {
        watchdog.check(&consumer);
        while let Ok(command) = commands.try_recv() {
            let context = consumer.context();
            match command {
                Command::Seek(seek) => {
                    let tpl = context.offsets_tpl(&seek);
                    match consumer.seek_partitions(tpl, Duration::from_secs(10)) {
                        Ok(_) => context.gen.store(seek.gen, Ordering::SeqCst),
                        Err(e) => error!("seeking back after a failed flush failed: {e}"),
                    }
                }
                Command::Commit(positions) => {
                    let offsets = positions.into_iter().map(|(p, o)| (p, Some(o))).collect();
                    let tpl = context.offsets_tpl(&Seek { gen: 0, offsets });
                    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                        debug!("committing offsets (a hint only) failed: {e}");
                    }
                }
            }
        }
        let message = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                let gen = consumer.context().gen.load(Ordering::SeqCst);
                if consumer
                    .context()
                    .events
                    .blocking_send(Event::Caught { gen, partition })
                    .is_err()
                {
                    break;
                }
                continue;
            }
            Some(Err(e)) => {
                warn!("kafka: {e}");
                continue;
            }
            Some(Ok(m)) => m,
        };
        let event = Event::Message {
            gen: consumer.context().gen.load(Ordering::SeqCst),
            partition: message.partition(),
            offset: message.offset(),
            edge: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            blob: message.payload().unwrap_or_default().to_vec(),
            timestamp: message
                .timestamp()
                .to_millis()
                .filter(|ms| *ms >= 0)
                .map(|ms| UNIX_EPOCH + Duration::from_millis(ms as u64)),
        };
        if consumer.context().events.blocking_send(event).is_err() {
            break;
        }
    }
    // Leaving the group triggers a final revoke, which the core answers
    // with a last flush.
    consumer.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && !consumer
            .assignment()
            .map(|a| a.count() == 0)
            .unwrap_or(true)
    {
        consumer.poll(Duration::from_millis(100));
    }
}

/// Rejoins a group that left partitions without a consumer.
///
/// When a member dies, a coordinator should notice its missed heartbeats and
/// rebalance; some Kafka-protocol brokers instead settle the group on the
/// assignments they stored, the dead member's partitions included (tansu
/// 0.6: a member joining while a dead leader is still counted gets nothing;
/// the survivor of a two-member group keeps only its own half), and those
/// partitions are never consumed again. So every member watches the group's
/// committed offsets (which every owner advances after each flush): if
/// partitions it does not own have messages beyond their committed offsets
/// and those offsets have not moved for [`Self::PATIENCE`] checks, while its
/// own partitions do move (or are caught up, or it owns none), nobody is
/// consuming them, and it leaves and rejoins to force a new generation. On
/// a healthy group this never fires: owned partitions with lag see their
/// commits move; and when a shard takes no writes, every member's commits
/// stall alike, so nobody rejoins for that.
#[derive(Default)]
struct GroupWatchdog {
    next_check: Option<Instant>,
    /// Committed offsets of lagging partitions at the last check.
    stalled: BTreeMap<i32, i64>,
    strikes: u32,
}

impl GroupWatchdog {
    const INTERVAL: Duration = Duration::from_secs(10);
    const PATIENCE: u32 = 3;

    fn check(&mut self, consumer: &BaseConsumer<Context>) {
        let now = Instant::now();
        if self.next_check.is_some_and(|at| now < at) {
            return;
        }
        self.next_check = Some(now + Self::INTERVAL);
        let Ok(owned) = consumer.assignment().map(|a| partitions_of(&a)) else {
            return;
        };
        let lagging = Self::lagging(consumer);
        let unmoved = |p: &i32| {
            lagging
                .get(p)
                .is_some_and(|o| self.stalled.get(p) == Some(o))
        };
        let orphans: Vec<i32> = lagging
            .keys()
            .filter(|p| !owned.contains(p))
            .copied()
            .collect();
        let own_flowing = owned.is_empty() || owned.iter().any(|p| !unmoved(p));
        let stuck = !orphans.is_empty() && orphans.iter().all(unmoved) && own_flowing;
        self.strikes = if stuck { self.strikes + 1 } else { 0 };
        self.stalled = lagging;
        if self.strikes >= Self::PATIENCE {
            warn!(
                partitions = ?orphans,
                "partitions have lag but no consumer in the group advances them; rejoining the group"
            );
            consumer.unsubscribe();
            if let Err(e) = consumer.subscribe(&[&consumer.context().topic]) {
                error!("resubscribing failed: {e}");
            }
            self.strikes = 0;
        }
    }

    /// Partitions with messages beyond the group's committed offset, and
    /// that offset (-1 when none is committed).
    fn lagging(consumer: &BaseConsumer<Context>) -> BTreeMap<i32, i64> {
        let topic = &consumer.context().topic;
        let timeout = Duration::from_secs(5);
        let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else {
            return BTreeMap::new();
        };
        let mut tpl = TopicPartitionList::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            tpl.add_partition(topic, partition.id());
        }
        let Ok(committed) = consumer.committed_offsets(tpl, timeout) else {
            return BTreeMap::new();
        };
        committed
            .elements()
            .iter()
            .filter_map(|e| {
                let (low, high) = consumer
                    .fetch_watermarks(topic, e.partition(), timeout)
                    .ok()?;
                let next = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => low,
                };
                (high > next).then(|| (e.partition(), e.offset().to_raw().unwrap_or(-1)))
            })
            .collect()
    }
}

/// What the core holds for one shard.
#[derive(Default)]
struct ShardState {
    /// Positions stored in the shard, as last read or written by us.
    stored: BTreeMap<i32, i64>,
    /// Positions of the flush in flight, if one is.
    storing: BTreeMap<i32, i64>,
    pending: Pending,
    windows: Windows,
}

impl ShardState {
    /// The offset from which this shard still needs messages of `partition`.
    fn next_needed(&self, partition: i32) -> Option<i64> {
        self.pending
            .positions
            .get(&partition)
            .or_else(|| self.storing.get(&partition))
            .or_else(|| self.stored.get(&partition))
            .copied()
    }
}

/// What one flush writes to one shard, owned by the flush task.
struct FlushJob {
    pending: Pending,
    windows: Vec<((String, u64), Window)>,
    /// The stored positions the flush compares-and-sets against.
    known: BTreeMap<i32, i64>,
    /// Partitions with nothing new, whose `complete_until` alone moves.
    idle: Vec<(i32, i64, SystemTime)>,
}

/// A flush task's answer: per shard, its job and how it went.
type FlushOutcome = Vec<(FlushJob, Result<u64, StoreError>)>;

struct Core {
    topic: String,
    shards: Arc<Vec<Shard>>,
    states: Vec<ShardState>,
    assigned: BTreeSet<i32>,
    /// How far each assigned partition has been read, for `complete_until`.
    progress: BTreeMap<i32, Progress>,
    gen: u64,
    commands: std::sync::mpsc::Sender<Command>,
    metrics: Arc<Metrics>,
    rollup: BatchRollup,
    /// Keeps its decompression buffer from one message to the next.
    decoder: Decoder,
    /// The flush in flight.
    flushing: Option<tokio::task::JoinHandle<FlushOutcome>>,
}

impl AsMut<Pending> for ShardState {
    fn as_mut(&mut self) -> &mut Pending {
        &mut self.pending
    }
}

/// What the core does with the records of one decoded batch, apart from
/// Kafka and the shards: route each record to the shard that owns its
/// zone, classify it (client class, threats), and add it to that shard's
/// [`Pending`] — or count it late; floods are known at the end of the batch
/// and counted then. Kept apart from [`Core`] so that the benchmark
/// (`benches/rollup.rs`) measures exactly this code.
pub struct BatchRollup {
    map: ShardMap,
    rules: Rules,
    /// User agent → client class: a few thousand agents make most traffic.
    classes: ClientCache,
    scratch: Scratch,
    zones: ZoneCache,
    /// Requests per (zone, client IP) in the batch being applied.
    flood_counts: foldhash::HashMap<(u64, IpAddr), u32>,
}

/// Zone → its shard and its key in the flood counts, remembered: both
/// depend on the zone alone, and placing a zone hashes it once per shard
/// (about 400 instructions a record with two shards). Forgotten whenever it
/// holds [`ZoneCache::MAX`] zones, so that ever new zones cannot grow it.
#[derive(Default)]
struct ZoneCache(foldhash::HashMap<Box<str>, (usize, u64)>);

impl ZoneCache {
    const MAX: usize = 4096;

    /// The shard of `zone` and its [`zone_key`].
    fn get(&mut self, map: &ShardMap, zone: &str) -> (usize, u64) {
        if let Some(&known) = self.0.get(zone) {
            return known;
        }
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        let placed = (map.shard_of(zone), zone_key(zone));
        self.0.insert(zone.into(), placed);
        placed
    }
}

impl BatchRollup {
    /// For the shards named `shards`, in shard order, with `config`'s rules.
    pub fn new(shards: impl IntoIterator<Item = String>, config: &RollupConfig) -> BatchRollup {
        BatchRollup {
            map: ShardMap::new(shards),
            rules: Rules::from(config),
            classes: ClientCache::new(CLIENT_CACHE_SLOTS),
            scratch: Scratch::default(),
            zones: ZoneCache::default(),
            flood_counts: Default::default(),
        }
    }

    /// Adds every record of `batch` whose shard is `wanted` to that shard's
    /// entry of `pendings` (indexed like the shards); `timestamp` is the
    /// Kafka message's, which decides lateness. Returns how many records
    /// were late (counted, not merged).
    pub fn add<P: AsMut<Pending>>(
        &mut self,
        batch: &DecodedBatch,
        wanted: &[bool],
        pendings: &mut [P],
        timestamp: Option<SystemTime>,
    ) -> u64 {
        let BatchRollup {
            map,
            rules,
            classes,
            scratch,
            zones,
            flood_counts,
        } = self;
        // Every record once; floods are known only at the end of the batch.
        flood_counts.clear();
        let mut late = 0u64;
        let facts_of = |record: &schemas::Record<'_>, shard: usize, classes: &mut ClientCache| {
            let minute = minute_of(record.timestamp_ns);
            let facts = wanted[shard].then(|| {
                let class = classes.client_class(record.user_agent);
                Facts {
                    minute,
                    class,
                    threats: classify_with_client(record, class),
                }
            });
            (minute, facts)
        };
        let result = batch.for_each(|record| {
            let (shard, zone) = zones.get(map, record.zone);
            if let Some(ip) = record.client_ip {
                *flood_counts.entry((zone, ip)).or_default() += 1;
            }
            let (minute, facts) = facts_of(record, shard, classes);
            let Some(facts) = facts else { return };
            let pending = pendings[shard].as_mut();
            if rules.is_late(minute, timestamp) {
                pending.add_late(minute);
                late += 1;
            } else {
                pending.add(record, &facts, scratch);
            }
        });
        debug_assert!(result.is_ok(), "decode already read every record");
        flood_counts.retain(|_, count| *count > rules.flood_threshold);
        if !flood_counts.is_empty() {
            let mut flood = Threats::default();
            flood.insert(Threat::Flood);
            let _ = batch.for_each(|record| {
                let Some(ip) = record.client_ip else { return };
                let (shard, zone) = zones.get(map, record.zone);
                if !flood_counts.contains_key(&(zone, ip)) {
                    return;
                }
                let (minute, facts) = facts_of(record, shard, classes);
                let Some(facts) = facts else { return };
                if !rules.is_late(minute, timestamp) {
                    pendings[shard]
                        .as_mut()
                        .add_threats(record, &facts, flood, scratch);
                }
            });
        }
        late
    }
}

/// How far one partition has been read.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    /// Kafka timestamp of the last message applied.
    last_message: Option<SystemTime>,
    /// When its end was reached, if no message came since.
    end_seen: Option<SystemTime>,
}

impl Progress {
    /// Up to when everything Kafka holds for the partition has been read.
    fn complete_until(&self) -> Option<SystemTime> {
        self.end_seen.or(self.last_message)
    }
}

/// The per-record rules that come from the configuration.
struct Rules {
    lateness: Duration,
    flood_threshold: u32,
}

impl From<&RollupConfig> for Rules {
    fn from(config: &RollupConfig) -> Self {
        Rules {
            lateness: config.lateness,
            flood_threshold: config.flood_threshold,
        }
    }
}

impl Rules {
    /// Whether a record of `minute` carried by a message of `timestamp` is
    /// too late to merge: its minute ended more than the lateness before
    /// Kafka took the message. Decided by Kafka's timestamp, not the clock,
    /// so a replay decides the same.
    fn is_late(&self, minute: Minute, timestamp: Option<SystemTime>) -> bool {
        let Some(timestamp) = timestamp else {
            return false;
        };
        minute_start(minute + 1) + self.lateness < timestamp
    }
}

impl Core {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        interval: Duration,
    ) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.handle(event).await,
                    None => break,
                },
                outcome = flushed(&mut self.flushing) => {
                    self.flushing = None;
                    self.finish_flush(outcome).await;
                }
                // With a flush still in flight, this tick's is skipped.
                _ = tick.tick() => if self.flushing.is_none() {
                    self.start_flush();
                },
            }
        }
        self.flush().await;
        Ok(())
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Message {
                gen,
                partition,
                offset,
                edge,
                blob,
                timestamp,
            } => {
                if gen == self.gen && self.assigned.contains(&partition) {
                    self.apply(partition, offset, &edge, &blob, timestamp);
                    let progress = self.progress.entry(partition).or_default();
                    progress.end_seen = None;
                    progress.last_message = timestamp.or(progress.last_message);
                }
            }
            Event::Caught { gen, partition } => {
                if gen == self.gen && self.assigned.contains(&partition) {
                    self.progress.entry(partition).or_default().end_seen = Some(SystemTime::now());
                }
            }
            Event::Assigned { partitions, reply } => {
                self.settle().await;
                self.assigned.extend(partitions);
                let seek = self.restart().await;
                let _ = reply.send(seek);
            }
            Event::Revoking { partitions, reply } => {
                self.flush().await;
                for p in &partitions {
                    self.assigned.remove(p);
                    self.progress.remove(p);
                }
                if self.states.iter().any(|s| !s.pending.is_empty()) {
                    // A shard could not take the flush, and what it holds
                    // mixes partitions: start over from what the shards hold.
                    warn!("flush before revocation incomplete; reloading from the shards");
                    let seek = self.restart().await;
                    let _ = self.commands.send(Command::Seek(seek));
                } else {
                    for state in &mut self.states {
                        state.stored.retain(|p, _| !partitions.contains(p));
                    }
                }
                let _ = reply.send(());
            }
        }
    }

    /// Applies one Kafka message to every shard that does not hold it yet.
    fn apply(
        &mut self,
        partition: i32,
        offset: i64,
        edge: &str,
        blob: &[u8],
        timestamp: Option<SystemTime>,
    ) {
        let batch = match self.decoder.decode(blob, &Limits::default()) {
            Ok(batch) => Some(batch),
            Err(e) => {
                // Ingest validates before producing, so this is a bug or a
                // foreign producer; skip the message, loudly.
                error!(partition, offset, edge, "undecodable batch skipped: {e}");
                self.metrics.batches_invalid.inc();
                None
            }
        };
        let mut wanted = vec![false; self.states.len()];
        for (shard, state) in self.states.iter_mut().enumerate() {
            if state
                .next_needed(partition)
                .is_some_and(|next| offset < next)
            {
                continue;
            }
            state.pending.positions.insert(partition, offset + 1);
            let Some(batch) = &batch else { continue };
            let id = batch.id();
            match state.windows.insert(edge, id.epoch, id.seq) {
                Seen::New => wanted[shard] = true,
                Seen::Duplicate | Seen::TooOld => {
                    debug!(edge, ?id, shard, "batch applied before; skipped");
                    self.metrics.batches_deduplicated.inc();
                }
            }
        }
        let Some(batch) = batch else { return };
        if !wanted.contains(&true) {
            return;
        }
        let late = self
            .rollup
            .add(&batch, &wanted, &mut self.states, timestamp);
        self.metrics.records_late.inc_by(late);
        self.metrics.records_consumed.inc_by(u64::from(batch.len()));
        self.metrics.batches_consumed.inc();
    }

    /// Writes every shard's pending data, each shard in its own
    /// transaction, and waits: the flush in flight first, then the rest.
    async fn flush(&mut self) {
        self.settle().await;
        self.start_flush();
        self.settle().await;
    }

    /// Waits for the flush in flight, if any, and takes in its outcome.
    async fn settle(&mut self) {
        if self.flushing.is_some() {
            let outcome = flushed(&mut self.flushing).await;
            self.flushing = None;
            self.finish_flush(outcome).await;
        }
    }

    /// Hands every shard's pending data to a flush task; the core goes on
    /// with empty pendings. Call only with no flush in flight.
    fn start_flush(&mut self) {
        assert!(self.flushing.is_none(), "one flush at a time");
        let fresh: BTreeMap<i32, SystemTime> = self
            .progress
            .iter()
            .filter_map(|(p, progress)| Some((*p, progress.complete_until()?)))
            .collect();
        let jobs: Vec<FlushJob> = self
            .states
            .iter_mut()
            .map(|state| {
                let pending = std::mem::take(&mut state.pending);
                state.storing = pending.positions.clone();
                FlushJob {
                    idle: fresh
                        .iter()
                        .filter(|(p, _)| !pending.positions.contains_key(p))
                        .filter_map(|(p, at)| Some((*p, *state.stored.get(p)?, *at)))
                        .collect(),
                    pending,
                    windows: state.windows.take_dirty(),
                    known: state.stored.clone(),
                }
            })
            .collect();
        let shards = self.shards.clone();
        let topic = self.topic.clone();
        let metrics = self.metrics.clone();
        self.flushing = Some(tokio::spawn(async move {
            let started = Instant::now();
            let outcome = futures::future::join_all(shards.iter().zip(jobs).map(|(shard, job)| {
                let (topic, fresh) = (&topic, &fresh);
                async move {
                    let result = async {
                        shard.touch(topic, &job.idle).await?;
                        if job.pending.is_empty() && job.windows.is_empty() {
                            return Ok(0);
                        }
                        shard
                            .flush(&Flush {
                                topic,
                                pending: &job.pending,
                                known: &job.known,
                                fresh,
                                windows: &job.windows,
                            })
                            .await
                    }
                    .await;
                    (job, result)
                }
            }))
            .await;
            metrics
                .flush_seconds
                .observe(started.elapsed().as_secs_f64());
            outcome
        }));
    }

    /// Takes in a finished flush: stored positions move where it
    /// succeeded; a shard that failed gets its rows and windows back,
    /// merged with what came meanwhile; a fenced shard restarts everything.
    async fn finish_flush(&mut self, outcome: FlushOutcome) {
        let mut fenced = false;
        for (state, (job, result)) in self.states.iter_mut().zip(outcome) {
            state.storing.clear();
            match result {
                Ok(rows) => {
                    self.metrics.rows_upserted.inc_by(rows);
                    state.stored.extend(job.pending.positions);
                }
                Err(e @ StoreError::Fenced { .. }) => {
                    warn!("{e}; reloading");
                    fenced = true;
                }
                Err(e) => {
                    // Kept; the next tick retries.
                    warn!("flush failed, will retry: {e}");
                    self.metrics.flush_errors.inc();
                    let newer = std::mem::replace(&mut state.pending, job.pending);
                    state.pending.merge(newer);
                    state
                        .windows
                        .restore_dirty(job.windows.into_iter().map(|(key, _)| key));
                }
            }
        }
        if fenced {
            let seek = self.restart().await;
            let _ = self.commands.send(Command::Seek(seek));
            return;
        }
        let committed: Vec<(i32, i64)> = self
            .assigned
            .iter()
            .filter_map(|&p| self.lowest_stored(p).map(|o| (p, o)))
            .collect();
        if !committed.is_empty() {
            let _ = self.commands.send(Command::Commit(committed));
        }
    }

    /// The lowest position any shard stored for `partition`: everything
    /// before it is in every shard. `None` if a shard has stored nothing.
    fn lowest_stored(&self, partition: i32) -> Option<i64> {
        self.states
            .iter()
            .map(|s| s.stored.get(&partition).copied())
            .min()
            .flatten()
    }

    /// Forgets everything not yet stored, reloads positions and identity
    /// windows from every shard, and says where each assigned partition must
    /// restart: the lowest position any shard stored (the beginning if one
    /// has none). Messages fetched before the seek carry an older generation
    /// and are ignored.
    async fn restart(&mut self) -> Seek {
        self.metrics.restarts.inc();
        let partitions: Vec<i32> = self.assigned.iter().copied().collect();
        let topic = &self.topic;
        let loaded = futures::future::join_all(self.shards.iter().map(|shard| {
            let partitions = &partitions;
            async move {
                let mut backoff = Duration::from_millis(200);
                loop {
                    let load = async {
                        Ok::<_, StoreError>((
                            shard.positions(topic, partitions).await?,
                            shard.windows().await?,
                        ))
                    };
                    match load.await {
                        Ok(loaded) => return loaded,
                        Err(e) => {
                            warn!("cannot load state, retrying in {backoff:?}: {e}");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            }
        }))
        .await;
        self.states = loaded
            .into_iter()
            .map(|(stored, windows)| ShardState {
                stored,
                storing: BTreeMap::new(),
                pending: Pending::default(),
                windows: Windows::from_stored(windows),
            })
            .collect();
        self.gen += 1;
        self.progress.clear();
        let offsets = partitions
            .iter()
            .map(|&p| (p, self.lowest_stored(p)))
            .collect();
        let seek = Seek {
            gen: self.gen,
            offsets,
        };
        info!(?seek, "resuming from the shards' stored positions");
        seek
    }
}

/// The outcome of the flush in `flushing`; never ready without one (nor
/// when the runtime cancelled the task, shutting down). A flush task that
/// panicked is a bug: the panic goes on here.
async fn flushed(flushing: &mut Option<tokio::task::JoinHandle<FlushOutcome>>) -> FlushOutcome {
    if let Some(task) = flushing {
        match task.await {
            Ok(outcome) => return outcome,
            Err(e) => {
                if let Ok(panic) = e.try_into_panic() {
                    std::panic::resume_unwind(panic);
                }
            }
        }
    }
    std::future::pending().await
}

/// A zone's key in the per-batch flood counts: its 64-bit hash, so the
/// counts need not borrow from the batch.
fn zone_key(zone: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(zone.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zone_cache_answers_as_placement_does_also_past_its_size() {
        let map = ShardMap::new(["a", "b", "c"].map(String::from));
        let mut cache = ZoneCache::default();
        // Twice round more zones than it holds: hits, misses and clears.
        for round in 0..2 {
            for i in 0..ZoneCache::MAX + 100 {
                let zone = format!("zone{i}.example");
                assert_eq!(
                    cache.get(&map, &zone),
                    (map.shard_of(&zone), zone_key(&zone)),
                    "round {round}, {zone}"
                );
                assert!(cache.0.len() <= ZoneCache::MAX);
            }
        }
    }
}
