//! Real processes for the gateway tests: a private tansu broker, the
//! `ingest` binary under test, a throw-away PKI, and a shipper-side client
//! speaking the wire protocol over mutual TLS.
//!
//! Each test builds its own set in a temporary directory, on free loopback
//! ports, so these tests neither need nor disturb the dev stack; they only
//! need the `tansu` binary that `./deploy/dev` installs. Every process is
//! killed when its handle drops, so a failing test leaves nothing behind.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use schemas::tls::tokio_rustls::client::TlsStream;
use schemas::tls::tokio_rustls::rustls::pki_types::ServerName;
use schemas::tls::tokio_rustls::TlsConnector;
use schemas::tls::TlsFiles;
use schemas::wire::PROTOCOL_VERSION;
use schemas::{BatchBuilder, BatchId, Frame, FrameCodec, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

mod tansu;
pub use tansu::{free_port, wait_for, Broker};

/// Partitions of the topic each test's ingest creates.
const TEST_PARTITIONS: i32 = 2;
/// How long a process may take to come up, or an answer to arrive.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Sends `signal` (e.g. "TERM", "KILL") to a process.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

// ---------------------------------------------------------------------------
// PKI

/// A CA in `dir` with an ingest certificate for 127.0.0.1, and client
/// certificates on demand: from this CA or a stranger's, valid or expired.
pub struct Pki {
    pub dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    pub server: TlsFiles,
}

/// When a certificate is valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    Current,
    Expired,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        let (ca, ca_key) = self_signed_ca("Gateway Test CA");
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        let mut pki = Pki {
            dir: dir.to_owned(),
            ca,
            ca_key,
            server: TlsFiles {
                ca_cert: dir.join("ca.pem"),
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
        };
        let (cert, key) = pki.leaf(
            "server",
            "ingest",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            Validity::Current,
        );
        pki.server.cert = cert;
        pki.server.key = key;
        pki
    }

    /// Client files for `CN=<edge>`, signed by this CA.
    pub fn client(&self, edge: &str, validity: Validity) -> TlsFiles {
        let (cert, key) = self.leaf(
            edge,
            edge,
            &[edge],
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        );
        TlsFiles {
            ca_cert: self.server.ca_cert.clone(),
            cert,
            key,
        }
    }

    /// Client files for `CN=<edge>` from a CA ingest has never heard of.
    pub fn stranger(&self, edge: &str) -> TlsFiles {
        let (ca, ca_key) = self_signed_ca("Stranger CA");
        let (cert, key) = sign(
            &self.dir,
            &format!("stranger-{edge}"),
            edge,
            &[edge],
            ExtendedKeyUsagePurpose::ClientAuth,
            Validity::Current,
            &ca,
            &ca_key,
        );
        TlsFiles {
            ca_cert: self.server.ca_cert.clone(),
            cert,
            key,
        }
    }

    fn leaf(
        &self,
        name: &str,
        cn: &str,
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> (PathBuf, PathBuf) {
        sign(
            &self.dir,
            name,
            cn,
            sans,
            usage,
            validity,
            &self.ca,
            &self.ca_key,
        )
    }
}

fn self_signed_ca(cn: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    (params.self_signed(&key).unwrap(), key)
}

#[allow(clippy::too_many_arguments)]
fn sign(
    dir: &Path,
    name: &str,
    cn: &str,
    sans: &[&str],
    usage: ExtendedKeyUsagePurpose,
    validity: Validity,
    ca: &rcgen::Certificate,
    ca_key: &KeyPair,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = sans
        .iter()
        .map(|san| match san.parse() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName((*san).try_into().unwrap()),
        })
        .collect();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![usage];
    if let Validity::Expired = validity {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

// ---------------------------------------------------------------------------
// The broker (started and restarted by `tansu.rs`)

impl Broker {
    /// Every message of the `partitions` partitions of `topic`, from the
    /// beginning, as (edge, identity); waits until at least `at_least`
    /// arrived, then for quiet.
    pub fn batches(&self, topic: &str, at_least: usize) -> Vec<(String, BatchId)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "gateway-test")
            .set("enable.auto.commit", "false")
            .create()
            .expect("a Kafka consumer");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..TEST_PARTITIONS {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).expect("assign");
        let mut found = Vec::new();
        let deadline = Instant::now() + PATIENCE;
        let mut quiet_since = Instant::now();
        while Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(message)) => {
                    quiet_since = Instant::now();
                    let headers = message.headers().expect("sluice headers");
                    let header = |name: &str| -> String {
                        let header = headers
                            .iter()
                            .find(|h| h.key == name)
                            .unwrap_or_else(|| panic!("header {name} missing"));
                        String::from_utf8(header.value.unwrap_or_default().to_vec()).unwrap()
                    };
                    let id = BatchId {
                        epoch: header(schemas::kafka::HEADER_EPOCH).parse().unwrap(),
                        seq: header(schemas::kafka::HEADER_SEQ).parse().unwrap(),
                    };
                    found.push((header(schemas::kafka::HEADER_EDGE), id));
                }
                Some(Err(error)) => panic!("consuming {topic}: {error}"),
                None if found.len() >= at_least
                    && quiet_since.elapsed() > Duration::from_secs(3) =>
                {
                    break
                }
                None => {}
            }
        }
        found
    }
}

// ---------------------------------------------------------------------------
// Ingest

/// The `ingest` binary of this build, running with its log in a file.
pub struct Ingest {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub topic: String,
    log: PathBuf,
}

impl Ingest {
    /// Starts ingest with `extra` TOML appended to the top level (keys
    /// before any section) and `tls_extra` to `[tls]`; waits until it
    /// listens.
    pub fn start(dir: &Path, pki: &Pki, broker: &Broker, extra: &str, tls_extra: &str) -> Ingest {
        Ingest::start_on(dir, pki, broker, free_port(), extra, tls_extra)
    }

    pub fn start_on(
        dir: &Path,
        pki: &Pki,
        broker: &Broker,
        port: u16,
        extra: &str,
        tls_extra: &str,
    ) -> Ingest {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let topic = "gateway.test".to_owned();
        let config = dir.join(format!("ingest-{port}.toml"));
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\nmetrics_listen = \"{metrics_addr}\"\n{extra}\n\
                 [tls]\nca_cert = {ca:?}\nserver_cert = {cert:?}\nserver_key = {key:?}\n{tls_extra}\n\
                 [kafka]\nbootstrap = \"{bootstrap}\"\ntopic = \"{topic}\"\npartitions = {TEST_PARTITIONS}\n\
                 delivery_timeout_ms = 3000\n",
                ca = pki.server.ca_cert,
                cert = pki.server.cert,
                key = pki.server.key,
                bootstrap = broker.bootstrap(),
            ),
        )
        .unwrap();
        let log = dir.join(format!("ingest-{port}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_ingest"))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting ingest");
        let mut ingest = Ingest {
            child: Some(child),
            addr,
            metrics_addr,
            topic,
            log,
        };
        wait_for("ingest to listen", PATIENCE, || {
            if let Some(status) = ingest.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("ingest exited with {status}:\n{}", ingest.log());
            }
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        ingest
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("ingest is running").id()
    }

    /// Everything ingest logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until ingest's log holds a line containing every one of `words`.
    pub fn wait_for_log(&self, words: &[&str]) -> String {
        wait_for(&format!("{words:?} in ingest's log"), PATIENCE, || {
            self.log()
                .lines()
                .find(|line| words.iter().all(|w| line.contains(w)))
                .map(str::to_owned)
        })
    }

    /// `VmRSS` and `VmHWM` (peak) in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} missing from /proc status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// `GET path` on the metrics listener: (status, body).
    pub async fn http(&self, path: &str) -> (u16, String) {
        http_get(&self.metrics_addr.to_string(), path).await
    }

    /// The value of one exact series (name with labels) from `/metrics`,
    /// 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.http("/metrics").await;
        body.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |v| v.trim().parse().unwrap())
    }

    /// SIGTERM, then waits up to `patience` for the exit.
    pub fn terminate(&mut self, patience: Duration) -> (ExitStatus, Duration) {
        let started = Instant::now();
        signal(self.pid(), "TERM");
        let child = self.child.as_mut().unwrap();
        let status = wait_for("ingest to exit after SIGTERM", patience, || {
            child.try_wait().unwrap()
        });
        self.child = None;
        (status, started.elapsed())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plain HTTP/1.0 `GET path` to `host:port`: (status, body).
pub async fn http_get(host: &str, path: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| panic!("connecting to {host}: {e}"));
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

// ---------------------------------------------------------------------------
// The shipper's side

pub type Connection = Framed<TlsStream<TcpStream>, FrameCodec>;

/// Opens a mutual-TLS connection to `addr` with the client `files`. With
/// TLS 1.3 a refused client certificate may only show on the first read.
pub async fn connect(addr: SocketAddr, files: &TlsFiles) -> std::io::Result<Connection> {
    let config = files.client_config().map_err(std::io::Error::other)?;
    connect_with(addr, config).await
}

/// Like [`connect`], without a client certificate.
pub async fn connect_anonymous(addr: SocketAddr, ca_cert: &Path) -> std::io::Result<Connection> {
    use schemas::tls::tokio_rustls::rustls::{ClientConfig, RootCertStore};
    let mut roots = RootCertStore::empty();
    let pem = std::fs::read(ca_cert)?;
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).map_err(std::io::Error::other)?;
    }
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    connect_with(addr, std::sync::Arc::new(config)).await
}

fn rustls_pemfile_certs(
    pem: &[u8],
) -> Vec<schemas::tls::tokio_rustls::rustls::pki_types::CertificateDer<'static>> {
    use schemas::tls::tokio_rustls::rustls::pki_types::pem::PemObject;
    schemas::tls::tokio_rustls::rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

async fn connect_with(
    addr: SocketAddr,
    config: std::sync::Arc<schemas::tls::tokio_rustls::rustls::ClientConfig>,
) -> std::io::Result<Connection> {
    let name = ServerName::from(addr.ip());
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(Framed::new(tls, FrameCodec::default()))
}

/// The next frame from ingest: `None` when the connection ended (cleanly or
/// not), panics if nothing comes within [`PATIENCE`].
pub async fn next_frame(conn: &mut Connection) -> Option<Frame> {
    match tokio::time::timeout(PATIENCE, conn.next()).await {
        Ok(Some(Ok(frame))) => Some(frame),
        Ok(Some(Err(_)) | None) => None,
        Err(_) => panic!("ingest sent nothing for {} s", PATIENCE.as_secs()),
    }
}

/// Sends `Hello` and returns ingest's answer (`None` if it closed).
pub async fn hello(conn: &mut Connection, min_version: u16, max_version: u16) -> Option<Frame> {
    let hello = Frame::Hello {
        min_version,
        max_version,
        agent: "gateway-test".to_owned(),
    };
    conn.send(hello).await.ok()?;
    next_frame(conn).await
}

/// Connects with `files` and completes the handshake; panics otherwise.
pub async fn shipper(addr: SocketAddr, files: &TlsFiles) -> Connection {
    let mut conn = connect(addr, files).await.expect("TLS to ingest");
    match hello(&mut conn, PROTOCOL_VERSION, PROTOCOL_VERSION).await {
        Some(Frame::Welcome { .. }) => conn,
        other => panic!("expected Welcome, got {other:?}"),
    }
}

/// A valid batch of `records` small records.
pub fn batch(id: BatchId, records: usize) -> Bytes {
    let mut builder = BatchBuilder::new();
    for i in 0..records {
        builder.push(&Record {
            timestamp_ns: 1_700_000_000_000_000_000 + i as i64,
            zone: "gateway-test.example",
            host: "gateway-test.example",
            path: "/gateway/test",
            status: 200,
            response_bytes: i as u64,
            user_agent: "gateway test",
            ..Record::default()
        });
    }
    builder.seal(id).into()
}

/// A blob built by hand from the documented layout (`schemas::batch`): any
/// header values, any payload, a correct CRC unless `crc` overrides it.
pub fn raw_blob(
    version: u8,
    id: BatchId,
    count: u32,
    claimed_raw_len: u32,
    payload: &[u8],
) -> Bytes {
    let mut header = Vec::with_capacity(36);
    header.extend_from_slice(b"SLCB");
    header.extend_from_slice(&[version, 0, 0, 0]);
    header.extend_from_slice(&id.epoch.to_be_bytes());
    header.extend_from_slice(&id.seq.to_be_bytes());
    header.extend_from_slice(&count.to_be_bytes());
    header.extend_from_slice(&claimed_raw_len.to_be_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header), payload);
    header.extend_from_slice(&crc.to_be_bytes());
    header.extend_from_slice(&lz4_flex::block::compress(payload));
    header.into()
}

/// Counts the answers per kind.
#[derive(Debug, Default)]
pub struct Answers {
    pub acked: Vec<BatchId>,
    pub nacked: Vec<(BatchId, bool, String)>,
    pub goaway: Option<String>,
}

impl Answers {
    pub fn record(&mut self, frame: Frame) {
        match frame {
            Frame::Ack(id) => self.acked.push(id),
            Frame::Nack {
                id,
                retryable,
                reason,
            } => self.nacked.push((id, retryable, reason)),
            Frame::GoAway(reason) => self.goaway = Some(reason),
            Frame::Pong(_) => {}
            other => panic!("unexpected frame from ingest: {other:?}"),
        }
    }
}

/// Per-key counts, for "exactly once" checks.
pub fn tally<K: std::hash::Hash + Eq>(items: impl IntoIterator<Item = K>) -> HashMap<K, usize> {
    let mut counts = HashMap::new();
    for item in items {
        *counts.entry(item).or_default() += 1;
    }
    counts
}
