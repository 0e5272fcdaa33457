//! The shipper protocol of one connection, driven over an in-memory pipe
//! with a fake sink the test confirms or fails by hand. No TLS, no Kafka.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{FutureExt, SinkExt, StreamExt};
use ingest::{Closed, ConnectionError, Gateway, Metrics, Settings, Sink, SinkError, ValidBatch};
use schemas::wire::PROTOCOL_VERSION;
use schemas::{BatchBuilder, BatchId, Frame, FrameCodec, Record};
use tokio::io::{AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::{Encoder, Framed};
use tokio_util::sync::CancellationToken;

const EDGE: &str = "edge-test";
const PATIENCE: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

type Confirm = oneshot::Sender<Result<(), SinkError>>;

/// A sink that hands every batch to the test and resolves when the test
/// says so.
struct FakeSink {
    deliveries: mpsc::UnboundedSender<(ValidBatch, Confirm)>,
}

impl Sink for FakeSink {
    fn deliver(&self, batch: ValidBatch) -> BoxFuture<'static, Result<(), SinkError>> {
        let (confirm, confirmed) = oneshot::channel();
        let _ = self.deliveries.send((batch, confirm));
        async move {
            confirmed
                .await
                .unwrap_or_else(|_| Err(SinkError("fake sink dropped".into())))
        }
        .boxed()
    }

    fn probe(&self) -> BoxFuture<'static, Result<(), SinkError>> {
        async { Ok(()) }.boxed()
    }
}

struct Stack {
    gateway: Arc<Gateway>,
    deliveries: mpsc::UnboundedReceiver<(ValidBatch, Confirm)>,
    shutdown: CancellationToken,
}

impl Stack {
    fn new(settings: Settings) -> Stack {
        let (tx, deliveries) = mpsc::unbounded_channel();
        let sink = Arc::new(FakeSink { deliveries: tx });
        let gateway = Arc::new(Gateway::new(settings, sink, Arc::new(Metrics::new())));
        Stack {
            gateway,
            deliveries,
            shutdown: CancellationToken::new(),
        }
    }

    /// Opens a connection; returns the shipper's end.
    fn connect(&self) -> Client {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let gateway = self.gateway.clone();
        let shutdown = self.shutdown.clone();
        let task = tokio::spawn(async move { gateway.serve(theirs, EDGE.into(), shutdown).await });
        Client {
            framed: Framed::new(ours, FrameCodec::default()),
            task,
        }
    }

    async fn next_delivery(&mut self) -> (ValidBatch, Confirm) {
        tokio::time::timeout(PATIENCE, self.deliveries.recv())
            .await
            .expect("the sink got no batch in time")
            .expect("sink channel open")
    }

    async fn no_delivery(&mut self) {
        if let Ok(Some((batch, _))) = tokio::time::timeout(QUIET, self.deliveries.recv()).await {
            panic!("the sink got {:?} but should not have", batch.id);
        }
    }

    fn metrics(&self) -> String {
        self.gateway.metrics().encode()
    }
}

struct Client {
    framed: Framed<DuplexStream, FrameCodec>,
    task: JoinHandle<Result<Closed, ConnectionError>>,
}

impl Client {
    async fn send(&mut self, frame: Frame) {
        self.framed.send(frame).await.expect("send");
    }

    async fn recv(&mut self) -> Frame {
        tokio::time::timeout(PATIENCE, self.framed.next())
            .await
            .expect("no frame from ingest in time")
            .expect("ingest closed the connection")
            .expect("undecodable frame from ingest")
    }

    async fn quiet(&mut self) {
        if let Ok(frame) = tokio::time::timeout(QUIET, self.framed.next()).await {
            panic!("expected silence, got {frame:?}");
        }
    }

    async fn hello(&mut self) -> Frame {
        self.send(hello(PROTOCOL_VERSION, PROTOCOL_VERSION)).await;
        self.recv().await
    }

    /// Expects the connection to end now; returns how ingest saw it.
    async fn closed(mut self) -> Closed {
        let end = tokio::time::timeout(PATIENCE, self.framed.next())
            .await
            .expect("still open");
        assert!(end.is_none(), "expected the end of the stream, got {end:?}");
        self.task
            .await
            .expect("task")
            .expect("connection ended in error")
    }
}

fn hello(min_version: u16, max_version: u16) -> Frame {
    Frame::Hello {
        min_version,
        max_version,
        agent: "protocol-test".to_owned(),
    }
}

fn id(seq: u64) -> BatchId {
    BatchId { epoch: 0x5eed, seq }
}

/// A valid blob of `records` records, each carrying `pad` bytes that LZ4
/// cannot shrink much.
fn blob(seq: u64, records: usize, pad: usize) -> Bytes {
    let mut builder = BatchBuilder::new();
    let mut state = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let noise: String = (0..pad)
        .map(|_| {
            // xorshift: printable noise LZ4 cannot compress much
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect();
    for i in 0..records {
        builder.push(&Record {
            zone: "shop.example",
            path: "/",
            status: 200,
            user_agent: &noise,
            response_bytes: i as u64,
            ..Record::default()
        });
    }
    builder.seal(id(seq)).into()
}

fn small_settings() -> Settings {
    Settings {
        window: 8,
        ..Settings::default()
    }
}

#[tokio::test]
async fn welcome_announces_version_window_and_max_frame() {
    let stack = Stack::new(Settings {
        window: 5,
        max_frame_bytes: 1 << 20,
        ..Settings::default()
    });
    let mut client = stack.connect();
    assert_eq!(
        client.hello().await,
        Frame::Welcome {
            version: PROTOCOL_VERSION,
            max_frame: 1 << 20,
            window: 5
        }
    );
}

#[tokio::test]
async fn valid_batch_is_acked_only_after_the_sink_confirms() {
    let mut stack = Stack::new(small_settings());
    let mut client = stack.connect();
    client.hello().await;
    let sent = blob(1, 3, 10);
    client.send(Frame::Batch(sent.clone())).await;

    let (batch, confirm) = stack.next_delivery().await;
    assert_eq!(
        batch.blob, sent,
        "the sink must get the blob exactly as sent"
    );
    assert_eq!(&*batch.edge, EDGE);
    assert_eq!(batch.id, id(1));
    assert_eq!(batch.records, 3);
    client.quiet().await;

    confirm.send(Ok(())).unwrap();
    assert_eq!(client.recv().await, Frame::Ack(id(1)));
    let metrics = stack.metrics();
    assert!(
        metrics.contains("sluice_ingest_batches_accepted_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_ingest_records_accepted_total 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_ingest_inflight_bytes 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn sink_error_gives_a_retryable_nack() {
    let mut stack = Stack::new(small_settings());
    let mut client = stack.connect();
    client.hello().await;
    client.send(Frame::Batch(blob(7, 1, 0))).await;
    let (_, confirm) = stack.next_delivery().await;
    confirm
        .send(Err(SinkError("broker on fire".to_owned())))
        .unwrap();
    assert_eq!(
        client.recv().await,
        Frame::Nack {
            id: id(7),
            retryable: true,
            reason: "broker on fire".to_owned()
        }
    );
    assert!(stack
        .metrics()
        .contains("sluice_ingest_kafka_errors_total 1"));
}

#[tokio::test]
async fn a_delivery_that_never_resolves_is_nacked_as_retryable() {
    let mut stack = Stack::new(Settings {
        delivery_timeout: Duration::from_millis(200),
        ..small_settings()
    });
    let mut client = stack.connect();
    client.hello().await;
    client.send(Frame::Batch(blob(2, 1, 0))).await;
    let (_, _confirm_never) = stack.next_delivery().await;
    match client.recv().await {
        Frame::Nack {
            id: nacked,
            retryable: true,
            reason,
        } => {
            assert_eq!(nacked, id(2));
            assert!(reason.contains("did not confirm"), "{reason}");
        }
        other => panic!("expected a retryable Nack, got {other:?}"),
    }
}

#[tokio::test]
async fn corrupt_blob_is_nacked_not_retryable_and_never_reaches_the_sink() {
    let mut stack = Stack::new(small_settings());
    let mut client = stack.connect();
    client.hello().await;

    // A flipped bit in the LZ4 block: the header still parses, the CRC fails.
    let mut corrupt = BytesMut::from(&blob(9, 4, 50)[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x01;
    client.send(Frame::Batch(corrupt.freeze())).await;
    match client.recv().await {
        Frame::Nack {
            id: nacked,
            retryable: false,
            reason,
        } => {
            assert_eq!(nacked, id(9), "the identity comes from the header");
            assert!(!reason.is_empty());
        }
        other => panic!("expected a non-retryable Nack, got {other:?}"),
    }

    // Not even a header: NACKed under identity 0/0.
    client.send(Frame::Batch(Bytes::from(vec![0xAB; 64]))).await;
    match client.recv().await {
        Frame::Nack {
            id: nacked,
            retryable: false,
            reason,
        } => {
            assert_eq!(nacked, BatchId { epoch: 0, seq: 0 });
            assert!(reason.contains("magic"), "{reason}");
        }
        other => panic!("expected a non-retryable Nack, got {other:?}"),
    }
    stack.no_delivery().await;
    let metrics = stack.metrics();
    assert!(
        metrics.contains(
            "sluice_ingest_batches_rejected_total{edge=\"edge-test\",reason=\"bad_magic\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_ingest_inflight_bytes 0"),
        "{metrics}"
    );

    // The connection is still good for valid batches.
    client.send(Frame::Batch(blob(10, 1, 0))).await;
    let (_, confirm) = stack.next_delivery().await;
    confirm.send(Ok(())).unwrap();
    assert_eq!(client.recv().await, Frame::Ack(id(10)));
}

#[tokio::test]
async fn hello_without_our_version_gets_goaway() {
    let stack = Stack::new(small_settings());
    let mut client = stack.connect();
    client
        .send(hello(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3))
        .await;
    match client.recv().await {
        Frame::GoAway(reason) => assert!(reason.contains("version"), "{reason}"),
        other => panic!("expected GoAway, got {other:?}"),
    }
    assert!(matches!(client.closed().await, Closed::Refused(_)));
}

#[tokio::test]
async fn a_batch_before_hello_gets_goaway() {
    let mut stack = Stack::new(small_settings());
    let mut client = stack.connect();
    client.send(Frame::Batch(blob(1, 1, 0))).await;
    match client.recv().await {
        Frame::GoAway(reason) => assert!(reason.contains("Hello"), "{reason}"),
        other => panic!("expected GoAway, got {other:?}"),
    }
    client.closed().await;
    stack.no_delivery().await;
}

#[tokio::test]
async fn ping_gets_pong() {
    let stack = Stack::new(small_settings());
    let mut client = stack.connect();
    client.hello().await;
    client.send(Frame::Ping(42)).await;
    assert_eq!(client.recv().await, Frame::Pong(42));
}

#[tokio::test]
async fn batches_are_pipelined_and_answered_in_completion_order() {
    let mut stack = Stack::new(small_settings());
    let mut client = stack.connect();
    client.hello().await;
    for seq in 1..=3 {
        client.send(Frame::Batch(blob(seq, 1, 0))).await;
    }
    let mut pending = Vec::new();
    for _ in 1..=3 {
        pending.push(stack.next_delivery().await);
    }
    // All three are with the sink at once; confirm them backwards.
    while let Some((batch, confirm)) = pending.pop() {
        confirm.send(Ok(())).unwrap();
        assert_eq!(client.recv().await, Frame::Ack(batch.id));
    }
}

#[tokio::test]
async fn no_more_than_window_deliveries_in_flight() {
    let mut stack = Stack::new(Settings {
        window: 2,
        ..Settings::default()
    });
    let mut client = stack.connect();
    client.hello().await;
    for seq in 1..=3 {
        client.send(Frame::Batch(blob(seq, 1, 0))).await;
    }
    // Batches are validated concurrently, so either may reach the sink first.
    let (first, confirm) = stack.next_delivery().await;
    let (_second, _unconfirmed) = stack.next_delivery().await;
    stack.no_delivery().await;
    confirm.send(Ok(())).unwrap();
    assert_eq!(client.recv().await, Frame::Ack(first.id));
    let (third, _) = stack.next_delivery().await;
    assert_eq!(third.id, id(3));
}

#[tokio::test]
async fn reading_pauses_at_the_connection_byte_budget() {
    let blobs: Vec<Bytes> = (1..=3).map(|seq| blob(seq, 4, 1000)).collect();
    let largest = blobs.iter().map(|b| b.len() as u64).max().unwrap();
    // Room for any one batch plus the start of a second, not for three: the
    // second is read, the third waits until either of the first two is
    // answered.
    let mut stack = Stack::new(Settings {
        max_inflight_bytes_per_connection: largest + 1,
        ..small_settings()
    });
    let mut client = stack.connect();
    client.hello().await;
    for blob in blobs {
        client.send(Frame::Batch(blob)).await;
    }
    // Batches are validated concurrently, so either may reach the sink first.
    let (first, confirm) = stack.next_delivery().await;
    let (_second, _unconfirmed) = stack.next_delivery().await;
    stack.no_delivery().await;
    confirm.send(Ok(())).unwrap();
    assert_eq!(client.recv().await, Frame::Ack(first.id));
    let (third, _) = stack.next_delivery().await;
    assert_eq!(third.id, id(3));
}

#[tokio::test]
async fn pings_are_answered_while_the_window_is_full() {
    let mut stack = Stack::new(Settings {
        window: 1,
        ..Settings::default()
    });
    let mut client = stack.connect();
    client.hello().await;
    client.send(Frame::Batch(blob(1, 1, 0))).await;
    let (_, confirm) = stack.next_delivery().await;
    client.send(Frame::Ping(7)).await;
    assert_eq!(client.recv().await, Frame::Pong(7));
    confirm.send(Ok(())).unwrap();
    assert_eq!(client.recv().await, Frame::Ack(id(1)));
}

#[tokio::test]
async fn pings_are_answered_while_the_byte_budget_is_full() {
    let one = blob(1, 4, 1000);
    let mut stack = Stack::new(Settings {
        max_inflight_bytes_per_connection: one.len() as u64,
        ..small_settings()
    });
    let mut client = stack.connect();
    client.hello().await;
    client.send(Frame::Batch(one)).await;
    let (_, confirm) = stack.next_delivery().await;
    client.send(Frame::Ping(8)).await;
    assert_eq!(client.recv().await, Frame::Pong(8));
    // The next batch is read and parked: nothing behind it is answered
    // until it is admitted.
    client.send(Frame::Batch(blob(2, 4, 1000))).await;
    client.send(Frame::Ping(9)).await;
    stack.no_delivery().await;
    client.quiet().await;
    confirm.send(Ok(())).unwrap();
    assert_eq!(client.recv().await, Frame::Ack(id(1)));
    let (second, _) = stack.next_delivery().await;
    assert_eq!(second.id, id(2));
    assert_eq!(client.recv().await, Frame::Pong(9));
}

#[tokio::test]
async fn a_silent_shipper_is_closed_after_the_idle_timeout() {
    let stack = Stack::new(Settings {
        idle_timeout: Duration::from_millis(400),
        ..small_settings()
    });
    let mut client = stack.connect();
    client.hello().await;
    // Pings keep it open well past the timeout...
    for nonce in 0..6 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.send(Frame::Ping(nonce)).await;
        assert_eq!(client.recv().await, Frame::Pong(nonce));
    }
    // ...silence closes it.
    match client.recv().await {
        Frame::GoAway(reason) => assert!(reason.contains("nothing received"), "{reason}"),
        other => panic!("expected GoAway, got {other:?}"),
    }
    assert_eq!(client.closed().await, Closed::Idle);
}

#[tokio::test]
async fn the_global_byte_budget_holds_back_other_connections() {
    let first_blob = blob(1, 4, 1000);
    let mut stack = Stack::new(Settings {
        max_inflight_bytes_total: first_blob.len() as u64 + 100,
        ..small_settings()
    });
    let mut a = stack.connect();
    let mut b = stack.connect();
    a.hello().await;
    b.hello().await;
    a.send(Frame::Batch(first_blob)).await;
    let (held, confirm_a) = stack.next_delivery().await;
    assert_eq!(held.id, id(1));

    b.send(Frame::Batch(blob(2, 4, 1000))).await;
    stack.no_delivery().await;
    assert!(stack
        .metrics()
        .contains(&format!("sluice_ingest_inflight_bytes {}", held.blob.len())));

    confirm_a.send(Ok(())).unwrap();
    assert_eq!(a.recv().await, Frame::Ack(id(1)));
    let (released, confirm_b) = stack.next_delivery().await;
    assert_eq!(released.id, id(2));
    confirm_b.send(Ok(())).unwrap();
    assert_eq!(b.recv().await, Frame::Ack(id(2)));
}

#[tokio::test]
async fn undecodable_frame_ends_the_connection_after_answering_what_was_read() {
    let mut stack = Stack::new(small_settings());
    let mut client = stack.connect();
    client.hello().await;
    client.send(Frame::Batch(blob(1, 1, 0))).await;
    let (_, confirm) = stack.next_delivery().await;

    // A Ping whose CRC is wrong.
    let mut raw = BytesMut::new();
    FrameCodec::default()
        .encode(Frame::Ping(1), &mut raw)
        .unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0xFF;
    client.framed.get_mut().write_all(&raw).await.unwrap();

    client.quiet().await;
    confirm.send(Ok(())).unwrap();
    assert_eq!(client.recv().await, Frame::Ack(id(1)));
    match client.recv().await {
        Frame::GoAway(reason) => assert!(reason.contains("CRC"), "{reason}"),
        other => panic!("expected GoAway, got {other:?}"),
    }
    assert!(matches!(client.closed().await, Closed::ProtocolError(_)));
    let metrics = stack.metrics();
    assert!(
        metrics.contains("sluice_ingest_frame_errors_total{edge=\"edge-test\",reason=\"crc\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn other_connections_survive_a_broken_one() {
    let mut stack = Stack::new(small_settings());
    let mut bad = stack.connect();
    let mut good = stack.connect();
    bad.hello().await;
    good.hello().await;
    bad.framed
        .get_mut()
        .write_all(&[0, 0, 0, 5, 99, 0, 0, 0, 0])
        .await
        .unwrap();
    assert!(matches!(bad.recv().await, Frame::GoAway(_)));

    good.send(Frame::Batch(blob(1, 1, 0))).await;
    let (_, confirm) = stack.next_delivery().await;
    confirm.send(Ok(())).unwrap();
    assert_eq!(good.recv().await, Frame::Ack(id(1)));
}

#[tokio::test]
async fn shutdown_answers_batches_in_flight_then_says_goaway() {
    let mut stack = Stack::new(small_settings());
    let mut client = stack.connect();
    client.hello().await;
    client.send(Frame::Batch(blob(1, 1, 0))).await;
    let (_, confirm) = stack.next_delivery().await;

    stack.shutdown.cancel();
    client.quiet().await;
    confirm.send(Ok(())).unwrap();
    assert_eq!(client.recv().await, Frame::Ack(id(1)));
    assert_eq!(
        client.recv().await,
        Frame::GoAway("shutting down".to_owned())
    );
    assert_eq!(client.closed().await, Closed::Shutdown);
}

#[tokio::test]
async fn shutdown_nacks_what_the_sink_does_not_confirm_by_the_drain_deadline() {
    let mut stack = Stack::new(Settings {
        drain_timeout: Duration::from_millis(200),
        ..small_settings()
    });
    let mut client = stack.connect();
    client.hello().await;
    client.send(Frame::Batch(blob(1, 1, 0))).await;
    let (_, _never) = stack.next_delivery().await;

    stack.shutdown.cancel();
    assert!(matches!(
        client.recv().await,
        Frame::Nack { id: nacked, retryable: true, .. } if nacked == id(1)
    ));
    assert_eq!(
        client.recv().await,
        Frame::GoAway("shutting down".to_owned())
    );
    assert_eq!(client.closed().await, Closed::Shutdown);
}

#[tokio::test]
async fn peer_goaway_is_honoured_after_answering() {
    let mut stack = Stack::new(small_settings());
    let mut client = stack.connect();
    client.hello().await;
    client.send(Frame::Batch(blob(1, 1, 0))).await;
    client.send(Frame::GoAway("bye".to_owned())).await;
    let (_, confirm) = stack.next_delivery().await;
    confirm.send(Ok(())).unwrap();
    assert_eq!(client.recv().await, Frame::Ack(id(1)));
    assert_eq!(client.closed().await, Closed::PeerGoAway("bye".to_owned()));
}
