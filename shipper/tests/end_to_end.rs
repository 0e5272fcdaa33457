//! The whole shipper against a fake ingest over real mutual TLS on loopback:
//! tail → parse → batch → spool → transport → ack, a restart with a batch
//! left unanswered, and a server certificate that does not verify. Runs
//! offline (needs `openssl`).

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::{dev_line, make_pki, FakeIngest, DEV_FORMAT};
use shipper::config::{Config, TransportConfig};
use shipper::metrics::Metrics;
use shipper::spool::Spool;
use shipper::transport::{Connect, TlsConnect, TransportError};

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn config(dir: &Path, pki: &common::Pki, ingest: std::net::SocketAddr) -> Config {
    let (cert, key) = pki.client();
    let text = format!(
        r#"
[input]
paths = ["{dir}/*.log"]
log_format = '{DEV_FORMAT}'

[batch]
max_age_ms = 50

[spool]
dir = "{dir}/spool"

[transport]
endpoints = ["127.0.0.1:1", "{ingest}"]
server_name = "localhost"
ca_cert = "{ca}"
client_cert = "{cert}"
client_key = "{key}"
connect_timeout_ms = 2000

[metrics]
listen = "127.0.0.1:0"
"#,
        dir = dir.display(),
        ca = pki.ca().display(),
        cert = cert.display(),
        key = key.display(),
    );
    Config::parse(&text, Path::new("test.toml")).unwrap()
}

/// Runs the shipper until `stop` is notified; returns its result.
fn start(
    config: Config,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), shipper::RunError>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(shipper::run(config, async move {
        let _ = stopped.await;
    }));
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ships_lines_checkpoints_and_resumes_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(&tmp.path().join("pki").tap_create());
    let ingest = FakeIngest::start(&pki.server()).await;
    let log = tmp.path().join("access.log");
    append(
        &log,
        &format!(
            "{}{}this line is not nginx\n{}",
            dev_line("/a"),
            dev_line("/b"),
            dev_line("/c")
        ),
    );

    // The first endpoint refuses connections: failover to the second.
    let (stop, task) = start(config(tmp.path(), &pki, ingest.addr));
    ingest.wait_for_records(3).await;
    // Ingest receives the next batch but never answers (it hangs on Kafka).
    ingest.withhold_acks.store(true, Ordering::SeqCst);
    append(&log, &(dev_line("/d") + "partial line without newline"));
    ingest.wait_for_records(4).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ingest.paths(), ["/a", "/b", "/c", "/d"]);
    let unanswered = *ingest.ids().last().unwrap();

    // The spool holds the unanswered batch, and the position after its line.
    let spool_config = config(tmp.path(), &pki, ingest.addr).spool;
    let spool = Spool::open(&spool_config, Arc::new(Metrics::new())).unwrap();
    let complete =
        std::fs::metadata(&log).unwrap().len() - "partial line without newline".len() as u64;
    let offsets = &spool.recovered().offsets;
    assert_eq!(offsets.len(), 1);
    assert_eq!(offsets[0].offset, complete, "{offsets:?}");
    assert_eq!(spool.unsettled(), 1);
    assert_eq!(spool.next_id().seq, unanswered.seq + 1);
    drop(spool);
    let spool = tmp.path().join("spool");
    let dead = std::fs::read_to_string(spool.join("dead-letter.log")).unwrap();
    assert!(
        dead.contains("this line is not nginx") && dead.contains("\"reason\""),
        "{dead}"
    );

    // Restart, ingest answering again: the unanswered batch is sent again
    // with its identity, then only what is new, under higher seqs.
    ingest.withhold_acks.store(false, Ordering::SeqCst);
    append(&log, " completed\n");
    append(&log, &dev_line("/e"));
    let (stop, task) = start(config(tmp.path(), &pki, ingest.addr));
    ingest.wait_for_records(6).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let ids = ingest.ids();
    assert_eq!(ingest.paths(), ["/a", "/b", "/c", "/d", "/d", "/e"]);
    assert_eq!(
        ids[ids.len() - 2],
        unanswered,
        "resent with the same identity"
    );
    assert!(ids.iter().all(|id| id.epoch == ids[0].epoch));
    assert!(ids.last().unwrap().seq > unanswered.seq, "{ids:?}");
    // No line was ever sent under two identities (what lets the aggregator
    // count each once), and no identity with two contents.
    let received = ingest.received.lock().unwrap();
    let mut by_id = std::collections::HashMap::new();
    for r in received.iter() {
        assert_eq!(
            by_id.entry(r.id).or_insert(&r.paths),
            &&r.paths,
            "{:?}",
            r.id
        );
    }
    let mut paths: Vec<&String> = by_id.values().flat_map(|p| p.iter()).collect();
    paths.sort();
    assert_eq!(paths, ["/a", "/b", "/c", "/d", "/e"]);
    // The completed partial line was malformed ("partial line without newline completed").
    let dead = std::fs::read_to_string(spool.join("dead-letter.log")).unwrap();
    assert!(
        dead.contains("partial line without newline completed"),
        "{dead}"
    );
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let ingest = FakeIngest::start(&pki.server()).await;
    let (cert, key) = pki.client();
    let transport = TransportConfig {
        endpoints: vec![ingest.addr.to_string()],
        server_name: "localhost".into(),
        ca_cert: pki.rogue_ca(),
        client_cert: cert,
        client_key: key,
        window: 4,
        connect_timeout_ms: 5000,
        ack_timeout_ms: 5000,
    };
    let connector = TlsConnect::new(&transport).unwrap();
    let Err(err) = connector.connect(&ingest.addr.to_string()).await else {
        panic!("the server certificate must not verify against the rogue CA");
    };
    let text = err.to_string();
    assert!(matches!(err, TransportError::Tls { .. }), "{text}");
    assert!(err.needs_attention());
    assert!(
        text.contains("invalid peer certificate") && text.contains("UnknownIssuer"),
        "{text}"
    );
    assert!(text.contains(&ingest.addr.to_string()), "{text}");
}

trait TapCreate {
    fn tap_create(self) -> Self;
}

impl TapCreate for std::path::PathBuf {
    fn tap_create(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}
