//! TLS of the control API: the server side ([`ServerTls`], rustls on ring)
//! and the client side of requests between nodes ([`peer_client_config`]).
//!
//! * **Certificates** come from two PEM files, `tls_cert` (the chain, leaf
//!   first) and `tls_key` (PKCS#8, PKCS#1 or SEC1). Loading checks that the
//!   key belongs to the leaf, so a half-renewed pair is refused instead of
//!   failing every handshake.
//! * **Reload** ([`ServerTls::reload`], on SIGHUP in the binary): the pair is
//!   read again and swapped in under a lock the handshake resolver reads;
//!   connections already open keep their session, new handshakes get the new
//!   certificate. A pair that does not load leaves the old one serving and is
//!   logged and counted (`sfu_tls_reloads_total{result="failed"}`).
//! * **Protocols**: TLS 1.3 and 1.2 (rustls' safe defaults), ALPN `h2` and
//!   `http/1.1`; the HTTP server picks hyper's HTTP/2 or HTTP/1.1 connection
//!   from what ALPN agreed ([`Negotiated`]).
//! * **Handshakes** run on the connection's task within the HTTP header
//!   timeout; a client that sends plain HTTP or garbage fails the handshake
//!   and is counted (`sfu_tls_handshake_failures_total`), nothing else.
//! * **Peers**: when the node serves TLS, its `control_url` defaults to
//!   `https://` and requests passed between nodes go over TLS too, verified
//!   against the public web roots plus the CAs of `tls_ca` (a private CA of
//!   the cluster's nodes).
//!
//! Nothing here panics on file contents: every failure is a [`TlsError`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM section.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The key and the certificate do not belong together, or rustls
    /// refused them.
    #[error("{0}")]
    Pair(String),
}

fn file_error(path: &Path, why: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// Reads a PEM certificate chain (at least one certificate).
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if chain.is_empty() {
        return Err(file_error(path, "no CERTIFICATE section"));
    }
    Ok(chain)
}

/// Reads a certificate chain and its private key and checks they match.
fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain = read_chain(cert)?;
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| file_error(key, format!("unsupported private key: {e}")))?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match().map_err(|e| {
        TlsError::Pair(format!(
            "{} does not hold the key of {}: {e}",
            key.display(),
            cert.display()
        ))
    })?;
    Ok(pair)
}

/// The certificate handshakes get: the current pair, swapped by reloads.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self.0.read().unwrap_or_else(PoisonError::into_inner),
        ))
    }
}

/// Counters of the TLS server, for `/metrics`.
#[derive(Debug, Default)]
pub struct TlsStats {
    /// Handshakes completed.
    pub handshakes: AtomicU64,
    /// Handshakes that failed (not TLS, no common parameters, timeout).
    pub handshake_failures: AtomicU64,
    /// Reloads that swapped the certificate.
    pub reloads_ok: AtomicU64,
    /// Reloads refused (the old certificate kept serving).
    pub reloads_failed: AtomicU64,
}

/// The control API's TLS server: a rustls configuration whose certificate
/// [`ServerTls::reload`] replaces.
#[derive(Debug)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<Current>,
    config: Arc<ServerConfig>,
    /// Counters, rendered by [`crate::metrics`].
    pub stats: TlsStats,
}

/// The HTTP protocol ALPN agreed on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    /// `h2`.
    Http2,
    /// `http/1.1`, or no ALPN (HTTP/1.1 then).
    Http1,
}

impl ServerTls {
    /// Loads the pair `cert`/`key` and builds the server configuration.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let pair = load_pair(cert, key)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(pair))));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&current) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current,
            config: Arc::new(config),
            stats: TlsStats::default(),
        })
    }

    /// Reads the pair again; on success new handshakes get it, otherwise
    /// the old pair keeps serving and the error is returned.
    pub fn reload(&self) -> Result<(), TlsError> {
        match load_pair(&self.cert, &self.key) {
            Ok(pair) => {
                *self
                    .current
                    .0
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
                self.stats.reloads_ok.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.stats.reloads_failed.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// An acceptor for one connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// What ALPN agreed on `conn`.
pub fn negotiated(conn: &rustls::ServerConnection) -> Negotiated {
    match conn.alpn_protocol() {
        Some(b"h2") => Negotiated::Http2,
        _ => Negotiated::Http1,
    }
}

/// The client configuration of requests to peer nodes: the public web
/// roots plus the certificates of `ca` (PEM); no ALPN (the connector of
/// [`crate::cluster::proxy::Proxy`] sets the protocols it speaks).
pub fn peer_client_config(ca: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca {
        for cert in read_chain(path)? {
            roots
                .add(cert)
                .map_err(|e| file_error(path, format!("not a CA certificate: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("sfu-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    fn write_pair(d: &Path, prefix: &str) -> (PathBuf, PathBuf) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (cert, key) = (
            d.join(format!("{prefix}.crt")),
            d.join(format!("{prefix}.key")),
        );
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.key_pair.serialize_pem()).unwrap();
        (cert, key)
    }

    fn leaf(tls: &ServerTls) -> Vec<u8> {
        tls.current.0.read().unwrap().cert[0].to_vec()
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let d = dir("mismatch");
        let (cert_a, _) = write_pair(&d.0, "a");
        let (_, key_b) = write_pair(&d.0, "b");
        let err = ServerTls::load(&cert_a, &key_b).unwrap_err();
        assert!(matches!(err, TlsError::Pair(_)), "{err}");
    }

    #[test]
    fn garbage_and_missing_files_are_errors() {
        let d = dir("garbage");
        let (cert, key) = write_pair(&d.0, "a");
        let junk = d.0.join("junk.pem");
        std::fs::write(&junk, b"\x00\xffnot pem at all-----BEGIN").unwrap();
        assert!(ServerTls::load(&junk, &key).is_err());
        assert!(ServerTls::load(&cert, &junk).is_err());
        assert!(ServerTls::load(&d.0.join("absent"), &key).is_err());
        assert!(peer_client_config(Some(&junk)).is_err());
        let client = peer_client_config(Some(&cert)).unwrap();
        // hyper-rustls refuses (panics on) a config with ALPN set.
        assert!(client.alpn_protocols.is_empty());
    }

    #[test]
    fn reload_swaps_the_pair_and_a_bad_pair_keeps_the_old_one() {
        let d = dir("reload");
        let (cert, key) = write_pair(&d.0, "live");
        let tls = ServerTls::load(&cert, &key).unwrap();
        let first = leaf(&tls);
        let (cert2, key2) = write_pair(&d.0, "next");
        std::fs::rename(&cert2, &cert).unwrap();
        // Half renewed: the new certificate with the old key.
        assert!(tls.reload().is_err());
        assert_eq!(leaf(&tls), first);
        std::fs::rename(&key2, &key).unwrap();
        tls.reload().unwrap();
        assert_ne!(leaf(&tls), first);
        assert_eq!(tls.stats.reloads_ok.load(Ordering::Relaxed), 1);
        assert_eq!(tls.stats.reloads_failed.load(Ordering::Relaxed), 1);
    }
}
