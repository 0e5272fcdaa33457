//! The Kafka sink against librdkafka's in-process mock cluster: the message
//! layout (value, key, headers) and the ACK/NACK that follow Kafka's
//! delivery report. No external broker needed. (The mock does not implement
//! CreateTopics, so only finding an existing topic is tested here; creation
//! is tested against the dev stack, see `dev_stack.rs`.)

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use ingest::config::KafkaSection;
use ingest::kafka::{ensure_topic, TopicStatus};
use ingest::{Gateway, KafkaSink, Metrics, Settings, Sink};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schemas::wire::PROTOCOL_VERSION;
use schemas::{BatchBuilder, BatchId, Frame, FrameCodec, Record};
use tokio::io::DuplexStream;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(20);

fn section(bootstrap: String, topic: &str, delivery_timeout_ms: u32) -> KafkaSection {
    KafkaSection {
        bootstrap,
        topic: topic.to_owned(),
        partitions: 2,
        replication_factor: 1,
        retention_hours: 1,
        delivery_timeout_ms,
    }
}

fn blob(seq: u64) -> bytes::Bytes {
    let mut builder = BatchBuilder::new();
    builder.push(&Record {
        zone: "shop.example",
        path: "/cart",
        status: 200,
        ..Record::default()
    });
    builder.push(&Record {
        zone: "blog.example",
        path: "/",
        status: 404,
        ..Record::default()
    });
    builder.seal(BatchId { epoch: 77, seq }).into()
}

async fn connect(sink: Arc<KafkaSink>, settings: Settings) -> Framed<DuplexStream, FrameCodec> {
    let gateway = Arc::new(Gateway::new(settings, sink, Arc::new(Metrics::new())));
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    tokio::spawn(async move {
        gateway
            .serve(theirs, "edge-mock".into(), CancellationToken::new())
            .await
    });
    let mut client = Framed::new(ours, FrameCodec::default());
    client
        .send(Frame::Hello {
            min_version: 1,
            max_version: PROTOCOL_VERSION,
            agent: "mock-test".into(),
        })
        .await
        .unwrap();
    assert!(matches!(
        client.next().await,
        Some(Ok(Frame::Welcome { .. }))
    ));
    client
}

async fn answer(client: &mut Framed<DuplexStream, FrameCodec>) -> Frame {
    tokio::time::timeout(PATIENCE, client.next())
        .await
        .expect("no answer in time")
        .expect("connection closed")
        .expect("bad frame")
}

#[tokio::test]
async fn an_acked_batch_is_one_kafka_message_laid_out_as_agreed() {
    let mock = MockCluster::new(1).unwrap();
    let kafka = section(mock.bootstrap_servers(), "sluice.layout", 10_000);
    mock.create_topic(&kafka.topic, kafka.partitions, 1)
        .unwrap();
    let sink = Arc::new(KafkaSink::new(&kafka, 1 << 20).unwrap());
    sink.probe().await.expect("metadata of an existing topic");

    let mut client = connect(sink, Settings::default()).await;
    let sent = blob(5);
    client.send(Frame::Batch(sent.clone())).await.unwrap();
    assert_eq!(
        answer(&mut client).await,
        Frame::Ack(BatchId { epoch: 77, seq: 5 })
    );

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("group.id", "ingest-test")
        .create()
        .unwrap();
    let mut partitions = TopicPartitionList::new();
    for p in 0..kafka.partitions {
        partitions
            .add_partition_offset(&kafka.topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&partitions).unwrap();
    let message = tokio::time::timeout(PATIENCE, consumer.recv())
        .await
        .expect("a message")
        .unwrap();

    assert_eq!(
        message.payload(),
        Some(&sent[..]),
        "value must be the blob as sent"
    );
    assert_eq!(message.key(), Some(&b"edge-mock"[..]));
    let headers: Vec<(String, String)> = message
        .headers()
        .expect("headers")
        .iter()
        .map(|h| {
            (
                h.key.to_owned(),
                String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    let expected = [
        (schemas::kafka::HEADER_FORMAT, "1"),
        (schemas::kafka::HEADER_EDGE, "edge-mock"),
        (schemas::kafka::HEADER_EPOCH, "77"),
        (schemas::kafka::HEADER_SEQ, "5"),
        (schemas::kafka::HEADER_RECORDS, "2"),
    ];
    for (key, value) in expected {
        assert!(
            headers.contains(&(key.to_owned(), value.to_owned())),
            "header {key}={value} missing from {headers:?}"
        );
    }
}

#[tokio::test]
async fn kafka_unreachable_gives_a_retryable_nack() {
    let mock = MockCluster::new(1).unwrap();
    let kafka = section(mock.bootstrap_servers(), "sluice.down", 1500);
    mock.create_topic(&kafka.topic, kafka.partitions, 1)
        .unwrap();
    let sink = Arc::new(KafkaSink::new(&kafka, 1 << 20).unwrap());
    let mut client = connect(sink, Settings::default()).await;

    mock.broker_down(1).unwrap();
    client.send(Frame::Batch(blob(6))).await.unwrap();
    match answer(&mut client).await {
        Frame::Nack {
            id,
            retryable: true,
            reason,
        } => {
            assert_eq!(id, BatchId { epoch: 77, seq: 6 });
            assert!(reason.contains("Kafka"), "{reason}");
        }
        other => panic!("expected a retryable Nack, got {other:?}"),
    }
}

#[tokio::test]
async fn probe_follows_the_broker() {
    let mock = MockCluster::new(1).unwrap();
    let kafka = section(mock.bootstrap_servers(), "sluice.probe", 5000);
    mock.create_topic(&kafka.topic, kafka.partitions, 1)
        .unwrap();
    let sink = KafkaSink::new(&kafka, 1 << 20).unwrap();
    sink.probe().await.expect("broker up");
    mock.broker_down(1).unwrap();
    let error = sink.probe().await.expect_err("broker down");
    assert!(error.to_string().contains("Kafka"), "{error}");
}

#[tokio::test]
async fn an_existing_topic_is_found_without_creating_it() {
    let mock = MockCluster::new(1).unwrap();
    let kafka = section(mock.bootstrap_servers(), "sluice.existing", 5000);
    mock.create_topic(&kafka.topic, kafka.partitions, 1)
        .unwrap();
    let status = ensure_topic(&kafka, 1 << 20).await.unwrap();
    assert_eq!(status, TopicStatus::AlreadyExisted);
}
