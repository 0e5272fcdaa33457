//! The Kafka side of ingest: topic creation at startup and the producer
//! behind the [`Sink`] trait.
//!
//! In: validated batches ([`ValidBatch`]). Out: one Kafka message per batch,
//! laid out as `schemas::kafka` describes — value = the blob as received
//! (never re-encoded), key = edge id (an edge's batches stay ordered in one
//! partition), headers repeating format version and identity.
//!
//! Guarantees: the producer runs with `acks=all` and idempotence, so a
//! delivery report of success means the batch is on every in-sync replica
//! exactly once; `message.timeout.ms` bounds how long a batch may wait for
//! that report. Nothing here depends on a particular broker implementation.
//!
//! A producer whose messages time out, or that librdkafka declares fatally
//! failed, is replaced by a new one: the old one's unconfirmed messages are
//! purged (their batches NACKed as retryable, so shippers resend them) and
//! the new one starts with a fresh producer id. No idempotence state from
//! before an outage is carried past it, which is what librdkafka asks for
//! after a fatal error and spares brokers the epoch-bump path (tansu 0.6
//! cannot take it).
//!
//! All librdkafka calls that block (metadata, flush, destroying a producer)
//! run on the blocking pool, never on the runtime's threads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{Client, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, ClientContext};

use crate::config::KafkaSection;
use crate::sink::{Sink, SinkError, ValidBatch};

/// Room for the key, the headers and the record framing around a blob.
const MESSAGE_OVERHEAD: u32 = 64 << 10;
/// How long one metadata request for `/ready` may take (the producer is
/// connected already).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one metadata or CreateTopics request at startup may take
/// (through a fresh connection).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why Kafka could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("creating the Kafka {what} for {bootstrap}: {error}")]
    Client {
        what: &'static str,
        bootstrap: String,
        error: KafkaError,
    },
    #[error("creating topic {topic} on {bootstrap}: {reason}")]
    CreateTopic {
        topic: String,
        bootstrap: String,
        reason: String,
    },
}

/// What [`ensure_topic`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicStatus {
    Created,
    AlreadyExisted,
}

fn client_config(kafka: &KafkaSection) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap)
        .set("client.id", "sluice-ingest")
        // Never let a metadata request or a produce create the topic with
        // the broker's defaults: ingest creates it explicitly, and a topic
        // that vanished is an incident to surface, not to paper over.
        .set("allow.auto.create.topics", "false");
    config
}

/// Blocking: the number of partitions the brokers know `topic` to have, or
/// `None` if it does not exist.
fn topic_partitions<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<usize>, String> {
    let metadata = client
        .fetch_metadata(Some(topic), Timeout::After(timeout))
        .map_err(|e| format!("Kafka metadata: {e}"))?;
    let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    match found.error().map(RDKafkaErrorCode::from) {
        None if found.partitions().is_empty() => Ok(None),
        None => Ok(Some(found.partitions().len())),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(None),
        Some(code) => Err(format!("Kafka topic {topic}: {code}")),
    }
}

/// Creates the topic with the configured partitions, replication factor and
/// retention, unless it exists (whatever its settings: they are then the
/// operator's business, and ingest needs no right to create topics). One
/// attempt; the caller decides about retries.
pub async fn ensure_topic(
    kafka: &KafkaSection,
    max_frame_bytes: u32,
) -> Result<TopicStatus, KafkaSetupError> {
    let admin: AdminClient<DefaultClientContext> =
        client_config(kafka)
            .create()
            .map_err(|error| KafkaSetupError::Client {
                what: "admin client",
                bootstrap: kafka.bootstrap.clone(),
                error,
            })?;
    let failed = |reason: String| KafkaSetupError::CreateTopic {
        topic: kafka.topic.clone(),
        bootstrap: kafka.bootstrap.clone(),
        reason,
    };

    let admin = Arc::new(admin);
    let existing = {
        let (admin, topic) = (admin.clone(), kafka.topic.clone());
        tokio::task::spawn_blocking(move || topic_partitions(admin.inner(), &topic, ADMIN_TIMEOUT))
            .await
            .map_err(|e| failed(format!("metadata task failed: {e}")))?
            .map_err(&failed)?
    };
    if existing.is_some() {
        return Ok(TopicStatus::AlreadyExisted);
    }

    let retention = kafka.retention_ms().to_string();
    // Kafka's default (1 MB) would refuse large batches.
    let max_message = (max_frame_bytes + MESSAGE_OVERHEAD).to_string();
    let topic = NewTopic::new(
        &kafka.topic,
        kafka.partitions,
        TopicReplication::Fixed(kafka.replication_factor),
    )
    .set("retention.ms", &retention)
    .set("max.message.bytes", &max_message);
    let options = AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .map_err(|e| failed(e.to_string()))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(TopicStatus::Created),
        // Another ingest instance was quicker.
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => Ok(TopicStatus::AlreadyExisted),
        Some(Err((_, code))) => Err(failed(code.to_string())),
        None => Err(failed("the broker returned no result".to_owned())),
    }
}

/// The production [`Sink`]: one `FutureProducer` shared by all connections,
/// replaced when it fails (see the module doc).
#[derive(Clone)]
pub struct KafkaSink {
    inner: Arc<SinkInner>,
}

struct SinkInner {
    config: ClientConfig,
    bootstrap: String,
    topic: Arc<str>,
    /// The producer in use and its generation (bumped on every replacement).
    current: Mutex<(u64, FutureProducer)>,
    /// `message.timeout.ms` plus [`REPORT_GRACE`].
    report_timeout: Duration,
}

/// How long past `message.timeout.ms` a delivery report may be late before
/// the sink gives up on it (and on its producer). Below the connection's own
/// safety net.
const REPORT_GRACE: Duration = Duration::from_secs(2);

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.inner.topic)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// Creates the producer. Does not contact the brokers yet.
    pub fn new(kafka: &KafkaSection, max_frame_bytes: u32) -> Result<KafkaSink, KafkaSetupError> {
        let mut config = client_config(kafka);
        config
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // Blobs are LZ4 already.
            .set("compression.type", "none")
            .set("linger.ms", "5")
            .set("message.timeout.ms", kafka.delivery_timeout_ms.to_string())
            .set(
                "message.max.bytes",
                (max_frame_bytes + MESSAGE_OVERHEAD).to_string(),
            );
        let producer = create_producer(&config, &kafka.bootstrap)?;
        Ok(KafkaSink {
            inner: Arc::new(SinkInner {
                config,
                bootstrap: kafka.bootstrap.clone(),
                topic: kafka.topic.as_str().into(),
                current: Mutex::new((0, producer)),
                report_timeout: kafka.delivery_timeout() + REPORT_GRACE,
            }),
        })
    }

    /// The producer in use, with its generation.
    fn producer(&self) -> (u64, FutureProducer) {
        let current = self.inner.current.lock().expect("producer lock poisoned");
        (current.0, current.1.clone())
    }

    /// Waits (on the blocking pool) until every queued message got its
    /// delivery report, or `timeout` passed.
    pub async fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let (_, producer) = self.producer();
        tokio::task::spawn_blocking(move || producer.flush(Timeout::After(timeout)))
            .await
            .unwrap_or_else(|_| Err(KafkaError::Canceled))
    }

    /// Messages not yet confirmed by the brokers.
    pub fn in_flight(&self) -> i32 {
        self.producer().1.in_flight_count()
    }
}

impl SinkInner {
    /// After a delivery of producer `generation` failed: replaces that
    /// producer if the message `timed_out` (librdkafka would bump the
    /// idempotent epoch) or the producer failed fatally, unless another
    /// delivery replaced it already. The old producer is destroyed on the
    /// blocking pool.
    fn after_failure(&self, generation: u64, timed_out: bool, error: &str) {
        let mut current = self.current.lock().expect("producer lock poisoned");
        if current.0 != generation || !(timed_out || current.1.client().fatal_error().is_some()) {
            return;
        }
        let producer = match create_producer(&self.config, &self.bootstrap) {
            Ok(producer) => producer,
            Err(error) => {
                tracing::error!(%error, "cannot create a new Kafka producer; keeping the old one");
                return;
            }
        };
        let old = std::mem::replace(&mut *current, (generation + 1, producer));
        drop(current);
        tracing::warn!(
            %error,
            generation = generation + 1,
            "replaced the Kafka producer; its unconfirmed batches are NACKed for resending"
        );
        tokio::task::spawn_blocking(move || drop(old));
    }
}

fn create_producer(
    config: &ClientConfig,
    bootstrap: &str,
) -> Result<FutureProducer, KafkaSetupError> {
    config.create().map_err(|error| KafkaSetupError::Client {
        what: "producer",
        bootstrap: bootstrap.to_owned(),
        error,
    })
}

/// The headers of `schemas::kafka`, values as decimal or plain text.
fn headers(batch: &ValidBatch) -> OwnedHeaders {
    schemas::kafka::headers(&batch.edge, batch.id, batch.records)
        .iter()
        .fold(
            OwnedHeaders::new_with_capacity(5),
            |headers, (key, value)| {
                headers.insert(Header {
                    key,
                    value: Some(value.as_bytes()),
                })
            },
        )
}

fn delivery_error(error: &KafkaError) -> SinkError {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::QueueFull) => {
            SinkError("ingest overloaded: Kafka producer queue is full".to_owned())
        }
        Some(RDKafkaErrorCode::MessageTimedOut) => {
            SinkError(format!("Kafka did not confirm the batch in time: {error}"))
        }
        _ => SinkError(format!("Kafka: {error}")),
    }
}

impl Sink for KafkaSink {
    fn deliver(&self, batch: ValidBatch) -> BoxFuture<'static, Result<(), SinkError>> {
        let inner = self.inner.clone();
        async move {
            let (generation, producer) = {
                let current = inner.current.lock().expect("producer lock poisoned");
                (current.0, current.1.clone())
            };
            let record = FutureRecord::to(&inner.topic)
                .key(&*batch.edge)
                .payload(&batch.blob[..])
                .headers(headers(&batch));
            // librdkafka copies the message; release ours now rather than
            // when the report arrives. A full queue is overload: no waiting,
            // the shipper retries the NACKed batch.
            let report = producer
                .send_result(record)
                .map_err(|(error, _)| delivery_error(&error));
            drop(batch);
            // Only the sink holds producers for long, so that a replaced one
            // is destroyed on the blocking pool, not here.
            drop(producer);
            match tokio::time::timeout(inner.report_timeout, report?).await {
                Ok(Ok(Ok(_delivery))) => Ok(()),
                Ok(Ok(Err((error, _message)))) => {
                    let timed_out =
                        error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageTimedOut);
                    inner.after_failure(generation, timed_out, &error.to_string());
                    Err(delivery_error(&error))
                }
                Ok(Err(_canceled)) => Err(SinkError("Kafka producer closed".to_owned())),
                // librdkafka may hold a message past message.timeout.ms
                // while its broker is away.
                Err(_elapsed) => {
                    let reason = "no delivery report within message.timeout.ms";
                    inner.after_failure(generation, true, reason);
                    Err(SinkError(format!("Kafka: {reason}")))
                }
            }
        }
        .boxed()
    }

    fn probe(&self) -> BoxFuture<'static, Result<(), SinkError>> {
        let (_, producer) = self.producer();
        let topic = self.inner.topic.clone();
        async move {
            let partitions = tokio::task::spawn_blocking(move || {
                topic_partitions(producer.client(), &topic, PROBE_TIMEOUT).and_then(|partitions| {
                    partitions.ok_or_else(|| format!("Kafka topic {topic} does not exist"))
                })
            })
            .await
            .map_err(|e| SinkError(format!("Kafka metadata task failed: {e}")))?
            .map_err(SinkError)?;
            tracing::trace!(partitions, "Kafka probe");
            Ok(())
        }
        .boxed()
    }
}
