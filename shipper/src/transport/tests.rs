//! The protocol over in-memory streams, with the test playing ingest.

use super::*;
use schemas::{BatchBuilder, BatchId, Record};
use std::sync::mpsc;
use tokio::io::DuplexStream;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const EPOCH: u64 = 77;

/// Hands the server end of every connection to the test.
struct FakeConnect {
    servers: UnboundedSender<DuplexStream>,
}

impl Connect for FakeConnect {
    type Stream = DuplexStream;
    async fn connect(&self, _endpoint: &str) -> Result<DuplexStream, TransportError> {
        let (client, server) = tokio::io::duplex(1 << 20);
        self.servers
            .send(server)
            .map_err(|_| TransportError::Closed)?;
        Ok(client)
    }
}

struct Harness {
    batches: UnboundedSender<Outgoing>,
    settled: mpsc::Receiver<Control>,
    servers: UnboundedReceiver<DuplexStream>,
    metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<()>,
}

fn harness(window: u32, ack_timeout: Duration) -> Harness {
    let (batches, input) = unbounded_channel();
    let (settled_tx, settled) = mpsc::channel();
    let (servers_tx, servers) = unbounded_channel();
    let metrics = Arc::new(Metrics::new());
    let settings = Settings {
        endpoints: vec!["a:1".into(), "b:2".into()],
        window,
        connect_timeout: Duration::from_secs(2),
        ack_timeout,
    };
    let transport = Transport::new(
        FakeConnect {
            servers: servers_tx,
        },
        settings,
        metrics.clone(),
        input,
        settled_tx,
    );
    let task = tokio::spawn(transport.run());
    Harness {
        batches,
        settled,
        servers,
        metrics,
        task,
    }
}

fn batch(seq: u64) -> Outgoing {
    let mut builder = BatchBuilder::new();
    builder.push(&Record {
        zone: "z.example",
        status: 200,
        ..Record::default()
    });
    let id = BatchId { epoch: EPOCH, seq };
    Outgoing {
        id,
        blob: builder.seal(id).into(),
        records: 1,
    }
}

type Server = Framed<DuplexStream, FrameCodec>;

impl Harness {
    /// Accepts the next connection and completes the handshake as ingest.
    async fn accept(&mut self, window: u32) -> Server {
        let stream = tokio::time::timeout(Duration::from_secs(5), self.servers.recv())
            .await
            .unwrap()
            .unwrap();
        let mut server = Framed::new(stream, FrameCodec::default());
        match server.next().await.unwrap().unwrap() {
            Frame::Hello {
                min_version,
                max_version,
                agent,
            } => {
                assert_eq!(
                    (min_version, max_version),
                    (PROTOCOL_VERSION, PROTOCOL_VERSION)
                );
                assert!(agent.starts_with("sluice-shipper/"), "{agent}");
            }
            other => panic!("expected Hello, got {other:?}"),
        }
        server
            .send(Frame::Welcome {
                version: PROTOCOL_VERSION,
                max_frame: 1 << 20,
                window,
            })
            .await
            .unwrap();
        server
    }

    async fn settled(&self) -> Control {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(msg) = self.settled.try_recv() {
                return msg;
            }
            assert!(std::time::Instant::now() < deadline, "no answer settled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The seq of the next batch the server receives.
async fn recv_seq(server: &mut Server) -> u64 {
    let frame = tokio::time::timeout(Duration::from_secs(5), server.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match frame {
        Frame::Batch(blob) => schemas::batch::peek(&blob).unwrap().0.seq,
        other => panic!("expected a batch, got {other:?}"),
    }
}

async fn nothing_more(server: &mut Server) {
    let got = tokio::time::timeout(Duration::from_millis(150), server.next()).await;
    assert!(got.is_err(), "unexpected frame {got:?}");
}

fn id(seq: u64) -> BatchId {
    BatchId { epoch: EPOCH, seq }
}

fn acked(seq: u64) -> Control {
    Control::Settled {
        id: id(seq),
        records: 1,
        outcome: Outcome::Acked,
    }
}

#[tokio::test]
async fn window_is_the_smaller_of_ours_and_the_servers() {
    let mut h = harness(8, Duration::from_secs(30));
    for seq in 1..=3 {
        h.batches.send(batch(seq)).unwrap();
    }
    let mut server = h.accept(2).await;
    assert_eq!(recv_seq(&mut server).await, 1);
    assert_eq!(recv_seq(&mut server).await, 2);
    nothing_more(&mut server).await;
    server.send(Frame::Ack(id(1))).await.unwrap();
    assert_eq!(h.settled().await, acked(1));
    assert_eq!(recv_seq(&mut server).await, 3);
    server.send(Frame::Ack(id(3))).await.unwrap();
    server.send(Frame::Ack(id(2))).await.unwrap();
    assert_eq!(h.settled().await, acked(3));
    assert_eq!(h.settled().await, acked(2));
    assert_eq!(h.metrics.batches_acked.get(), 3);
    assert_eq!(h.metrics.records_sent.get(), 3);
    assert_eq!(h.metrics.batches_sent.get(), 3);
    drop(h.batches);
    tokio::time::timeout(Duration::from_secs(5), h.task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn nacks_resend_or_reject() {
    let mut h = harness(4, Duration::from_secs(30));
    h.batches.send(batch(1)).unwrap();
    h.batches.send(batch(2)).unwrap();
    let mut server = h.accept(4).await;
    assert_eq!(recv_seq(&mut server).await, 1);
    assert_eq!(recv_seq(&mut server).await, 2);
    server
        .send(Frame::Nack {
            id: id(1),
            retryable: true,
            reason: "kafka busy".into(),
        })
        .await
        .unwrap();
    server
        .send(Frame::Nack {
            id: id(2),
            retryable: false,
            reason: "poison".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        h.settled().await,
        Control::Settled {
            id: id(2),
            records: 1,
            outcome: Outcome::Rejected {
                reason: "poison".into()
            }
        }
    );
    // Seq 1 comes again, same identity, after a short backoff.
    assert_eq!(recv_seq(&mut server).await, 1);
    server.send(Frame::Ack(id(1))).await.unwrap();
    assert_eq!(h.settled().await, acked(1));
    assert_eq!(h.metrics.batches_nacked(true).get(), 1);
    assert_eq!(h.metrics.batches_nacked(false).get(), 1);
    h.task.abort();
}

#[tokio::test]
async fn reconnect_resends_unanswered_batches_in_order() {
    let mut h = harness(4, Duration::from_secs(30));
    for seq in 1..=3 {
        h.batches.send(batch(seq)).unwrap();
    }
    let mut server = h.accept(4).await;
    for seq in 1..=3 {
        assert_eq!(recv_seq(&mut server).await, seq);
    }
    server.send(Frame::Ack(id(2))).await.unwrap();
    assert_eq!(h.settled().await, acked(2));
    drop(server);
    let mut server = h.accept(4).await;
    assert_eq!(recv_seq(&mut server).await, 1);
    assert_eq!(recv_seq(&mut server).await, 3);
    nothing_more(&mut server).await;
    assert!(h.metrics.reconnects.get() >= 1);
    h.task.abort();
}

#[tokio::test]
async fn silent_server_times_out_and_is_left() {
    let mut h = harness(4, Duration::from_millis(200));
    h.batches.send(batch(1)).unwrap();
    let mut server = h.accept(4).await;
    assert_eq!(recv_seq(&mut server).await, 1);
    // No answer: after ack_timeout the shipper reconnects and resends.
    let mut server2 = h.accept(4).await;
    assert_eq!(recv_seq(&mut server2).await, 1);
    server2.send(Frame::Ack(id(1))).await.unwrap();
    assert_eq!(h.settled().await, acked(1));
    drop(server);
    h.task.abort();
}

#[tokio::test]
async fn go_away_and_version_mismatch_are_errors() {
    let (client, server) = tokio::io::duplex(1 << 16);
    let ingest = tokio::spawn(async move {
        let mut server = Framed::new(server, FrameCodec::default());
        server.next().await.unwrap().unwrap();
        server
            .send(Frame::Welcome {
                version: PROTOCOL_VERSION + 1,
                max_frame: 1024,
                window: 1,
            })
            .await
            .unwrap();
        server
    });
    let err = handshake(client, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, TransportError::Version { .. }), "{err}");
    drop(ingest.await);

    let (client, server) = tokio::io::duplex(1 << 16);
    let ingest = tokio::spawn(async move {
        let mut server = Framed::new(server, FrameCodec::default());
        server.next().await.unwrap().unwrap();
        server.send(Frame::GoAway("draining".into())).await.unwrap();
        server
    });
    let err = handshake(client, Duration::from_secs(2)).await.unwrap_err();
    assert_eq!(err.to_string(), "ingest is going away: draining");
    drop(ingest.await);
}

#[test]
fn backoff_doubles_to_its_cap_with_jitter() {
    let mut b = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
    let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
    assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
    assert!(delays[1] >= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200));
    assert!(delays[9] >= Duration::from_secs(5) && delays[9] <= Duration::from_secs(10));
    b.reset();
    assert!(b.next_delay() <= Duration::from_millis(100));
    assert!(nack_retry_delay(1) <= NACK_RETRY_MIN);
    assert!(nack_retry_delay(30) <= NACK_RETRY_MAX);
}
