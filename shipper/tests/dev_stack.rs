//! Against the running dev stack (`./deploy/dev up`; `./deploy/dev test` runs
//! these with `SLUICE_DEV_ENV` set). Ignored in a plain `cargo nextest run`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use futures::SinkExt;
use futures::StreamExt;
use schemas::{BatchBuilder, BatchId, Frame, Record};
use shipper::config::TransportConfig;
use shipper::transport::{handshake, Connect, TlsConnect, TransportError};

fn transport(
    env: &std::collections::HashMap<String, String>,
    ca_key: &str,
) -> (TransportConfig, String) {
    let var = |k: &str| {
        env.get(k)
            .cloned()
            .unwrap_or_else(|| panic!("{k} missing from the dev env file"))
    };
    let addr = var("INGEST_ADDR");
    let config = TransportConfig {
        endpoints: vec![addr.clone()],
        server_name: "localhost".into(),
        ca_cert: PathBuf::from(var(ca_key)),
        client_cert: PathBuf::from(var("DEV_CLIENT_CERT")),
        client_key: PathBuf::from(var("DEV_CLIENT_KEY")),
        window: 4,
        connect_timeout_ms: 5000,
        ack_timeout_ms: 30_000,
    };
    (config, addr)
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn ingest_with_a_rogue_ca_fails_certificate_verification() {
    let env = common::dev_env();
    let (config, addr) = transport(&env, "ROGUE_CA_CERT");
    let connector =
        TlsConnect::new(&config).expect("the rogue CA and the dev client identity load");
    let Err(err) = connector.connect(&addr).await else {
        panic!("ingest's certificate must not verify against the rogue CA");
    };
    let text = err.to_string();
    assert!(
        matches!(err, TransportError::Tls { .. }),
        "not a TLS error: {text}"
    );
    assert!(
        text.contains("invalid peer certificate"),
        "the rustls reason is not surfaced: {text}"
    );
}

#[tokio::test]
#[ignore = "needs the dev stack (./deploy/dev test)"]
async fn ingest_acks_a_batch_from_the_dev_identity() {
    let env = common::dev_env();
    let (config, addr) = transport(&env, "DEV_CA_CERT");
    let connector = TlsConnect::new(&config).unwrap();
    let stream = connector.connect(&addr).await.unwrap();
    let (mut framed, welcome) = handshake(stream, Duration::from_secs(5)).await.unwrap();
    assert!(welcome.window >= 1);
    let id = BatchId {
        epoch: rand_epoch(),
        seq: 1,
    };
    let mut builder = BatchBuilder::new();
    builder.push(&Record {
        timestamp_ns: 1_795_341_600_000_000_000,
        zone: "shipper-test.example",
        host: "shipper-test.example",
        path: "/dev-stack-test",
        status: 200,
        ..Record::default()
    });
    framed
        .send(Frame::Batch(builder.seal(id).into()))
        .await
        .unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(30), framed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(answer, Frame::Ack(id));
}

fn rand_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}
