//! The TLS listener: accepts shipper connections and runs each in its own
//! task.
//!
//! In: TCP connections. Out: authenticated connections handed to
//! [`Gateway::serve`], one task each.
//!
//! A connection is served only if its client certificate chains to the
//! configured CA (rustls verifies it during the handshake) and, when an
//! allow-list is configured, its edge id is on it; the edge id is always
//! taken from the certificate (`schemas::tls::peer_identity`). A failed
//! handshake is logged with the peer address and counted; a refused edge
//! gets a `GoAway` naming the reason. Nothing a connection does can stop the
//! accept loop or another connection: every error ends in a log line.
//!
//! On shutdown, [`Server::run`] stops accepting, lets every connection drain
//! (see [`crate::connection`]) and returns when the last one has closed.

use std::collections::HashSet;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::connection::{Closed, ConnectionError, Gateway};
use crate::metrics::Metrics;

/// Longest a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the loop
/// does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
#[error("listening on {addr}: {error}")]
pub struct BindError {
    pub addr: SocketAddr,
    pub error: std::io::Error,
}

/// Which edges may connect.
#[derive(Debug, Clone, Default)]
pub struct EdgePolicy {
    allowed: HashSet<String>,
}

impl EdgePolicy {
    /// `allowed` empty: every edge with a valid certificate.
    pub fn new(allowed: impl IntoIterator<Item = String>) -> EdgePolicy {
        EdgePolicy {
            allowed: allowed.into_iter().collect(),
        }
    }

    pub fn allows(&self, edge: &str) -> bool {
        self.allowed.is_empty() || self.allowed.contains(edge)
    }
}

/// A bound listener, ready to [`run`](Server::run).
pub struct Server {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    edges: Arc<EdgePolicy>,
    gateway: Arc<Gateway>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("edges", &self.edges)
            .finish_non_exhaustive()
    }
}

impl Server {
    pub async fn bind(
        addr: SocketAddr,
        tls: Arc<ServerConfig>,
        edges: EdgePolicy,
        gateway: Arc<Gateway>,
    ) -> Result<Server, BindError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|error| BindError { addr, error })?;
        Ok(Server {
            listener,
            acceptor: TlsAcceptor::from(tls),
            edges: Arc::new(edges),
            gateway,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts connections until `shutdown`, then waits for every connection
    /// to finish its drain.
    pub async fn run(self, shutdown: CancellationToken) {
        let connections = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((tcp, peer)) => {
                    let span = info_span!("connection", %peer, edge = tracing::field::Empty);
                    let task = handle(
                        tcp,
                        self.acceptor.clone(),
                        self.edges.clone(),
                        self.gateway.clone(),
                        shutdown.clone(),
                    );
                    connections.spawn(task.instrument(span));
                }
                Err(error) => {
                    warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
        drop(self.listener);
        connections.close();
        info!(
            connections = connections.len(),
            "stopped accepting; waiting for connections to drain"
        );
        connections.wait().await;
    }
}

/// Decrements the active-connections gauge however the task ends.
struct ActiveConnection(Arc<Metrics>);

impl ActiveConnection {
    fn open(metrics: &Arc<Metrics>) -> ActiveConnection {
        metrics.connection_opened();
        ActiveConnection(metrics.clone())
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}

/// One connection, from TCP to close. Logs instead of returning errors.
async fn handle(
    tcp: TcpStream,
    acceptor: TlsAcceptor,
    edges: Arc<EdgePolicy>,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
) {
    let metrics = gateway.metrics().clone();
    let _active = ActiveConnection::open(&metrics);
    if let Err(error) = tcp.set_nodelay(true) {
        debug!(%error, "cannot set TCP_NODELAY");
    }
    let handshake = tokio::select! {
        () = shutdown.cancelled() => return,
        handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)) => handshake,
    };
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            let reason = handshake_failure(&error);
            metrics.tls_handshake_failed(reason);
            warn!(%error, reason, "TLS handshake failed");
            return;
        }
        Err(_) => {
            metrics.tls_handshake_failed("timeout");
            warn!(
                "TLS handshake did not finish within {} s",
                TLS_HANDSHAKE_TIMEOUT.as_secs()
            );
            return;
        }
    };
    let edge = match schemas::tls::peer_identity(tls.get_ref().1.peer_certificates()) {
        Ok(edge) => edge,
        Err(error) => {
            metrics.handshake_rejected("", "no_identity");
            warn!(%error, "client certificate carries no usable edge identity");
            let reason = format!("no edge identity in the client certificate: {error}");
            if let Err(error) = gateway.refuse(tls, &reason).await {
                debug!(%error, "could not send GoAway");
            }
            return;
        }
    };
    tracing::Span::current().record("edge", edge.as_str());
    if !edges.allows(&edge) {
        metrics.handshake_rejected(&edge, "edge_not_allowed");
        warn!("edge is not in tls.allowed_edges; refusing it");
        if let Err(error) = gateway
            .refuse(tls, &format!("edge {edge} is not allowed"))
            .await
        {
            debug!(%error, "could not send GoAway");
        }
        return;
    }
    debug!("TLS established");
    match gateway.serve(tls, edge.into(), shutdown).await {
        Ok(
            closed @ (Closed::PeerClosed | Closed::PeerGoAway(_) | Closed::Shutdown | Closed::Idle),
        ) => {
            info!("connection {closed}");
        }
        Ok(closed @ (Closed::Refused(_) | Closed::ProtocolError(_))) => {
            warn!("connection {closed}");
        }
        // A shipper that restarts or loses its network drops the connection
        // without a goodbye; it resends what was unanswered.
        Err(ConnectionError::Io(error))
            if matches!(
                error.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ) =>
        {
            info!(%error, "connection dropped by the shipper");
        }
        Err(error) => warn!(%error, "connection ended"),
    }
}

/// The metric label of a failed TLS handshake. tokio-rustls reports
/// rustls's own error inside the `io::Error`.
fn handshake_failure(error: &std::io::Error) -> &'static str {
    use tokio_rustls::rustls::{CertificateError, Error};
    let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return match error.kind() {
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset => "closed",
            _ => "io",
        };
    };
    match tls {
        Error::NoCertificatesPresented => "no_certificate",
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown_issuer",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired",
        Error::InvalidCertificate(
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. },
        ) => "not_yet_valid",
        Error::InvalidCertificate(_) => "bad_certificate",
        Error::PeerIncompatible(_) => "incompatible",
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => "not_tls",
        _ => "tls_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_allow_list_allows_every_edge() {
        assert!(EdgePolicy::new(Vec::new()).allows("edge-1"));
        let policy = EdgePolicy::new(["edge-1".to_owned()]);
        assert!(policy.allows("edge-1"));
        assert!(!policy.allows("edge-2"));
        assert!(!policy.allows("EDGE-1"));
    }
}
