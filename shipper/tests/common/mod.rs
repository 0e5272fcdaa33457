//! Helpers for the shipper's integration tests: a throw-away PKI made with
//! the `openssl` CLI (as `deploy/dev` makes its own), a fake ingest speaking
//! the real protocol over real TLS, and the dev stack's env file.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use schemas::tls::tokio_rustls::TlsAcceptor;
use schemas::tls::TlsFiles;
use schemas::wire::PROTOCOL_VERSION;
use schemas::{BatchId, Frame, FrameCodec, Limits};
use tokio_util::codec::Framed;

pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn rogue_ca(&self) -> PathBuf {
        self.dir.join("rogue-ca.pem")
    }
    pub fn client(&self) -> (PathBuf, PathBuf) {
        (self.dir.join("client.pem"), self.dir.join("client.key"))
    }
    pub fn server(&self) -> TlsFiles {
        TlsFiles {
            ca_cert: self.ca(),
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
        }
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the `openssl` CLI is needed for these tests (deploy/dev needs it too)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ca(dir: &Path, name: &str, cn: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-sha256",
            "-days",
            "30",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:0",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-addext",
            "subjectKeyIdentifier=hash",
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

fn leaf(dir: &Path, name: &str, cn: &str, ca: &str, ext: &str) {
    sign_leaf(
        dir,
        name,
        cn,
        &dir.join(format!("{ca}.pem")),
        &dir.join(format!("{ca}.key")),
        ext,
    );
}

/// `<dir>/<name>.pem` and `<dir>/<name>.key`: a fresh EC P-256 key and a
/// certificate for `CN=<cn>` signed by the CA at `ca_cert`/`ca_key`, with
/// the extensions `deploy/dev` gives its leaves plus `ext` (x509v3 config
/// lines). Returns (certificate, key).
pub fn sign_leaf(
    dir: &Path,
    name: &str,
    cn: &str,
    ca_cert: &Path,
    ca_key: &Path,
    ext: &str,
) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n{ext}\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &format!("{name}.key"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-sha256",
            "-key",
            &format!("{name}.key"),
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    let serial = format!("0x1{:015x}", rand::random::<u64>() >> 4);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "30",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &ca_cert.to_string_lossy(),
            "-CAkey",
            &ca_key.to_string_lossy(),
            "-set_serial",
            &serial,
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
    (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    )
}

/// A CA, an ingest certificate (localhost, 127.0.0.1), a shipper client
/// certificate (CN=edge-test-1), and an unrelated rogue CA.
pub fn make_pki(dir: &Path) -> Pki {
    ca(dir, "ca", "Test CA");
    ca(dir, "rogue-ca", "Rogue CA");
    leaf(
        dir,
        "server",
        "ingest",
        "ca",
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1",
    );
    leaf(
        dir,
        "client",
        "edge-test-1",
        "ca",
        "extendedKeyUsage=clientAuth\nsubjectAltName=DNS:edge-test-1",
    );
    Pki {
        dir: dir.to_owned(),
    }
}

/// What the fake ingest received, in arrival order.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: BatchId,
    pub paths: Vec<String>,
}

/// A fake ingest on 127.0.0.1: mutual TLS, Hello/Welcome, acks every valid batch.
pub struct FakeIngest {
    pub addr: std::net::SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    /// While true, batches are recorded but not answered (as if Kafka hung).
    pub withhold_acks: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIngest {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIngest {
    pub async fn start(server: &TlsFiles) -> FakeIngest {
        let acceptor = TlsAcceptor::from(server.server_config(false).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        let withhold_acks = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let withhold = withhold_acks.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let sink = sink.clone();
                let withhold = withhold.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut framed = Framed::new(tls, FrameCodec::default());
                    let Some(Ok(Frame::Hello { .. })) = framed.next().await else {
                        return;
                    };
                    let welcome = Frame::Welcome {
                        version: PROTOCOL_VERSION,
                        max_frame: 16 << 20,
                        window: 8,
                    };
                    if framed.send(welcome).await.is_err() {
                        return;
                    }
                    while let Some(Ok(frame)) = framed.next().await {
                        let reply = match frame {
                            Frame::Batch(blob) => {
                                match schemas::batch::decode(&blob, &Limits::default()) {
                                    Ok(batch) => {
                                        let mut paths = Vec::new();
                                        batch.for_each(|r| paths.push(r.path.to_owned())).unwrap();
                                        sink.lock().unwrap().push(Received {
                                            id: batch.id(),
                                            paths,
                                        });
                                        Frame::Ack(batch.id())
                                    }
                                    Err(e) => {
                                        let (id, _) = schemas::batch::peek(&blob).unwrap();
                                        Frame::Nack {
                                            id,
                                            retryable: false,
                                            reason: e.to_string(),
                                        }
                                    }
                                }
                            }
                            Frame::Ping(n) => Frame::Pong(n),
                            _ => return,
                        };
                        if withhold.load(std::sync::atomic::Ordering::SeqCst)
                            && !matches!(reply, Frame::Pong(_))
                        {
                            continue;
                        }
                        if framed.send(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeIngest {
            addr,
            received,
            withhold_acks,
            task,
        }
    }

    pub fn paths(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| r.paths.clone())
            .collect()
    }

    pub fn ids(&self) -> Vec<BatchId> {
        self.received.lock().unwrap().iter().map(|r| r.id).collect()
    }

    /// Waits until `n` records have arrived.
    pub async fn wait_for_records(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.paths().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {:?} arrived, wanted {n}",
                self.paths()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Reads the dev stack's env file (`KEY="value"` lines as `deploy/dev` writes
/// them) from `$SLUICE_DEV_ENV`.
pub fn dev_env() -> HashMap<String, String> {
    let path = std::env::var("SLUICE_DEV_ENV")
        .expect("SLUICE_DEV_ENV must name the dev stack's env file (./deploy/dev test sets it)");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut env = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        let mut unescaped = String::with_capacity(value.len());
        let mut chars = value.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => unescaped.extend(chars.next()),
                c => unescaped.push(c),
            }
        }
        env.insert(key.to_owned(), unescaped);
    }
    env
}

/// The dev stack's format (deploy/dev, `SLUICE_LOG_FORMAT`).
pub const DEV_FORMAT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $host $request_time $upstream_cache_status $request_length $scheme"#;

/// One line in the dev format, for `path`.
pub fn dev_line(path: &str) -> String {
    format!(
        r#"192.0.2.7 - - [22/Nov/2026:10:00:00 +0000] "GET {path} HTTP/1.1" 200 12 "-" "test agent (x)" shop.example 0.002 MISS 80 https"#
    ) + "\n"
}
