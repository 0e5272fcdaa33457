//! A private tansu broker for one test, and the two helpers it needs: a
//! free loopback port, and waiting for a condition.
//!
//! Shared by ingest's tests (through `support/mod.rs`) and the aggregator's
//! (its `tests/harness` includes this file by path), so both start, kill and
//! restart a broker the same way. The broker keeps its data in sqlite in its
//! own directory, so it survives a restart; its log goes to `tansu.log`
//! there. Only the `tansu` binary that `./deploy/dev` installs is needed.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const NEEDS_TANSU: &str = "needs the tansu broker binary (./deploy/dev test installs it)";
/// How long the broker may take to come up.
const BROKER_PATIENCE: Duration = Duration::from_secs(60);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after
/// `patience` naming `what`.
pub fn wait_for<T>(what: &str, patience: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + patience;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `tansu` binary: on PATH or where `cargo install` puts it.
fn tansu_bin() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("tansu"))
            .find(|bin| bin.is_file())
    });
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    on_path
        .or_else(|| cargo_home.map(|home| home.join("bin/tansu")))
        .filter(|bin| bin.is_file())
        .expect(NEEDS_TANSU)
}

/// A private tansu broker with sqlite storage in its own directory: it can
/// be stopped and started again with its data.
pub struct Broker {
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker with its data in `<dir>/broker`, on a free port.
    pub fn start(dir: &Path) -> Broker {
        let dir = dir.join("broker");
        std::fs::create_dir_all(&dir).unwrap();
        let mut broker = Broker {
            dir,
            port: free_port(),
            child: None,
        };
        broker.resume();
        broker
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's process id, while it runs (the benchmark reads its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
    }

    /// Kills the broker at once (no clean shutdown: an outage).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same port and data, and waits until
    /// it accepts connections.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "the broker is already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let child = Command::new(tansu_bin())
            .args(["broker", "--cluster-id", "sluice-test"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            // tansu resolves sqlite://FILE against its working directory.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(NEEDS_TANSU);
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        wait_for("tansu to listen", BROKER_PATIENCE, || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
