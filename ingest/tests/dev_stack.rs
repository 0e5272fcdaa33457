//! Against the running dev stack (`./deploy/dev up`; `./deploy/dev test`
//! runs these). The stack is described by the env file named by
//! `SLUICE_DEV_ENV` (`KEY="value"` lines, see design §8).
//!
//! What is checked: a shipper with the dev client certificate gets a valid
//! batch ACKed (so Kafka confirmed it) and a corrupt one NACKed as not
//! retryable; a certificate from another CA never gets past TLS; `/ready`
//! and `/metrics` answer; the topic ingest created is found again.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use ingest::config::KafkaSection;
use ingest::kafka::{ensure_topic, TopicStatus};
use schemas::tls::tokio_rustls::rustls::pki_types::ServerName;
use schemas::tls::tokio_rustls::{client::TlsStream, TlsConnector};
use schemas::tls::TlsFiles;
use schemas::wire::PROTOCOL_VERSION;
use schemas::{BatchBuilder, BatchId, Frame, FrameCodec, Record};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const NEEDS_STACK: &str = "needs the dev stack (./deploy/dev test)";
const PATIENCE: Duration = Duration::from_secs(45);

/// The dev stack's env file: `KEY="value"` lines, shell-quoted.
struct DevEnv(HashMap<String, String>);

impl DevEnv {
    fn load() -> DevEnv {
        let path = std::env::var("SLUICE_DEV_ENV").expect(
            "SLUICE_DEV_ENV must name the dev stack's env file (./deploy/dev up writes it)",
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        let mut vars = HashMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            vars.insert(key.to_owned(), unquote(value));
        }
        DevEnv(vars)
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the dev env file"))
    }

    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.get(key))
    }
}

/// `"a\"b"` → `a"b`; bare values are taken as they are.
fn unquote(value: &str) -> String {
    let Some(inner) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
        return value.to_owned();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(escaped) = chars.next() {
                out.push(escaped);
            }
        } else {
            out.push(c);
        }
    }
    out
}

type Shipper = Framed<TlsStream<TcpStream>, FrameCodec>;

async fn connect(env: &DevEnv, cert: &str, key: &str) -> std::io::Result<Shipper> {
    let files = TlsFiles {
        ca_cert: env.path("DEV_CA_CERT"),
        cert: env.path(cert),
        key: env.path(key),
    };
    let config = files.client_config().map_err(std::io::Error::other)?;
    let addr = env.get("INGEST_ADDR");
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(host, _)| host)
        .trim_matches(['[', ']']);
    let name = ServerName::try_from(host.to_owned()).map_err(std::io::Error::other)?;
    let tcp = TcpStream::connect(addr).await?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(Framed::new(tls, FrameCodec::default()))
}

async fn recv(shipper: &mut Shipper) -> Frame {
    tokio::time::timeout(PATIENCE, shipper.next())
        .await
        .expect("no frame from ingest in time")
        .expect("ingest closed the connection")
        .expect("undecodable frame from ingest")
}

async fn hello(shipper: &mut Shipper) -> Frame {
    let hello = Frame::Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        agent: "ingest dev-stack test".to_owned(),
    };
    shipper.send(hello).await.expect("send Hello");
    recv(shipper).await
}

fn batch(id: BatchId) -> Bytes {
    let mut builder = BatchBuilder::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    for path in ["/", "/ingest-dev-stack-test"] {
        builder.push(&Record {
            timestamp_ns: now,
            zone: "ingest-test.example",
            host: "ingest-test.example",
            path,
            status: 200,
            user_agent: "ingest dev-stack test",
            ..Record::default()
        });
    }
    builder.seal(id).into()
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn valid_batch_is_acked_and_corrupt_batch_is_nacked() {
    let env = DevEnv::load();
    let mut shipper = connect(&env, "DEV_CLIENT_CERT", "DEV_CLIENT_KEY")
        .await
        .expect(NEEDS_STACK);
    match hello(&mut shipper).await {
        Frame::Welcome {
            version, window, ..
        } => {
            assert_eq!(version, PROTOCOL_VERSION);
            assert!(window >= 1);
        }
        other => panic!("expected Welcome, got {other:?}"),
    }

    let epoch: u64 = rand::random();
    let good = BatchId { epoch, seq: 1 };
    shipper.send(Frame::Batch(batch(good))).await.unwrap();
    assert_eq!(recv(&mut shipper).await, Frame::Ack(good));

    let bad = BatchId { epoch, seq: 2 };
    let mut corrupt = BytesMut::from(&batch(bad)[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x5A;
    shipper.send(Frame::Batch(corrupt.freeze())).await.unwrap();
    match recv(&mut shipper).await {
        Frame::Nack {
            id,
            retryable: false,
            ..
        } => assert_eq!(id, bad),
        other => panic!("expected a non-retryable Nack, got {other:?}"),
    }
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn a_certificate_from_another_ca_never_gets_past_tls() {
    let env = DevEnv::load();
    // TLS 1.3 lets the client finish its side before the server has checked
    // the client certificate, so the refusal may only show on first read.
    let mut shipper = match connect(&env, "ROGUE_CLIENT_CERT", "ROGUE_CLIENT_KEY").await {
        Err(_refused) => return,
        Ok(shipper) => shipper,
    };
    let hello = Frame::Hello {
        min_version: PROTOCOL_VERSION,
        max_version: PROTOCOL_VERSION,
        agent: "rogue".to_owned(),
    };
    let _ = shipper.send(hello).await;
    match tokio::time::timeout(PATIENCE, shipper.next()).await {
        Ok(None | Some(Err(_))) => {}
        Ok(Some(Ok(frame))) => panic!("a rogue client got a frame from ingest: {frame:?}"),
        Err(_) => panic!("ingest neither refused nor answered the rogue client"),
    }
}

/// `GET path` on `base` (`http://host:port`): status code and body.
async fn http_get(base: &str, path: &str) -> (u16, String) {
    let host = base
        .strip_prefix("http://")
        .expect("http:// URL")
        .trim_end_matches('/');
    support::http_get(host, path).await
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn health_ready_and_metrics_are_served() {
    let env = DevEnv::load();
    let base = env.get("INGEST_METRICS_URL");
    assert_eq!(http_get(base, "/health").await.0, 200);
    let (status, body) = http_get(base, "/ready").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(base, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "sluice_ingest_connections_total",
        "sluice_ingest_batches_accepted_total",
        "sluice_ingest_kafka_delivery_seconds_bucket",
        "sluice_ingest_inflight_bytes",
    ] {
        assert!(body.contains(name), "{name} missing from /metrics:\n{body}");
    }
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn the_topic_ingest_created_is_found_again() {
    let env = DevEnv::load();
    let kafka = KafkaSection {
        bootstrap: env.get("KAFKA_BOOTSTRAP").to_owned(),
        topic: env.get("KAFKA_TOPIC").to_owned(),
        ..KafkaSection::default()
    };
    let status = ensure_topic(&kafka, 16 << 20).await.expect(NEEDS_STACK);
    assert_eq!(status, TopicStatus::AlreadyExisted);
}
