//! Mutual TLS for the shipper ⇄ ingest link, configured once for both ends.
//!
//! In: PEM files — a CA bundle, a certificate chain, a PKCS#8/PKCS#1/SEC1 key.
//! Out: rustls configs for [`tokio_rustls`], and the edge identity of a
//! connected shipper.
//!
//! Guarantees: the client speaks TLS 1.3 only and verifies the server against
//! the configured CA (never the system store); the server *requires* a client
//! certificate chaining to its CA, TLS 1.3 unless 1.2 is explicitly allowed.
//! The edge identity is read from the verified leaf certificate (its Common
//! Name, else its first DNS name) — never from anything the client says.
//! Every failure names the file or the reason.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

pub use tokio_rustls;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {reason}")]
    Pem { path: PathBuf, reason: String },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("CA file {path}: {reason}")]
    BadCa { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("client verifier: {0}")]
    Verifier(String),
    #[error("peer presented no certificate")]
    NoPeerCertificate,
    #[error("peer certificate cannot be parsed: {0}")]
    BadPeerCertificate(String),
    #[error("peer certificate has neither a Common Name nor a DNS name")]
    NoIdentity,
}

/// The three files one end of the link needs.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// CA bundle the *peer* must chain to.
    pub ca_cert: PathBuf,
    /// Our certificate chain, leaf first.
    pub cert: PathBuf,
    /// Our private key.
    pub key: PathBuf,
}

fn pem_error(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |e| TlsError::Pem {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error(path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(path))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(roots))
}

impl TlsFiles {
    fn chain_and_key(
        &self,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(pem_error(&self.key))?;
        Ok((load_certs(&self.cert)?, key))
    }

    /// The shipper's side: TLS 1.3, server verified against `ca_cert`,
    /// presenting `cert` as the client certificate.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, TlsError> {
        let (chain, key) = self.chain_and_key()?;
        let config = ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS13])
            .with_root_certificates(load_roots(&self.ca_cert)?)
            .with_client_auth_cert(chain, key)?;
        Ok(Arc::new(config))
    }

    /// Ingest's side: a client certificate chaining to `ca_cert` is required.
    pub fn server_config(&self, allow_tls12: bool) -> Result<Arc<ServerConfig>, TlsError> {
        let (chain, key) = self.chain_and_key()?;
        let verifier = WebPkiClientVerifier::builder(load_roots(&self.ca_cert)?)
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let versions: &[&rustls::SupportedProtocolVersion] = if allow_tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let config = ServerConfig::builder_with_protocol_versions(versions)
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(Arc::new(config))
    }
}

/// The edge identity in a verified peer certificate chain: the leaf's Common
/// Name, or its first DNS subject alternative name.
pub fn peer_identity(chain: Option<&[CertificateDer<'_>]>) -> Result<String, TlsError> {
    let leaf = chain
        .and_then(|c| c.first())
        .ok_or(TlsError::NoPeerCertificate)?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    if let Some(cn) = cert.subject().iter_common_name().next() {
        let cn = cn
            .as_str()
            .map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
        if !cn.is_empty() {
            return Ok(cn.to_owned());
        }
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::BadPeerCertificate(e.to_string()))?;
    san.and_then(|ext| {
        ext.value.general_names.iter().find_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
            _ => None,
        })
    })
    .ok_or(TlsError::NoIdentity)
}
