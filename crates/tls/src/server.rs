//! Server-side TLS: a certificate that reloads from its files while the listener runs, and a
//! listener that completes handshakes off the accept loop.
//!
//! A reload swaps the certificate used by *new* handshakes; established connections keep
//! the session they negotiated and are never dropped. A reload that fails (a half-written
//! file, a key that does not match) keeps the previous certificate and is reported to the
//! caller. This module knows nothing of HTTP or of what is served.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::{TlsError, provider};

/// What identifies a version of a file without reading it: (modified, length, inode).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

/// A server certificate and key loaded from two PEM files, reloadable.
pub struct ServerCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamps: Mutex<(Stamp, Stamp)>,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is never printed; the paths are configuration, not secrets.
        f.debug_struct("ServerCert").field("cert", &self.cert_path).field("key", &self.key_path).finish()
    }
}

impl ServerCert {
    /// Loads the chain (leaf first) and its key; refuses a key that is not the leaf's.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerCert>, TlsError> {
        let stamps = (stamp(cert_path), stamp(key_path));
        let key = read_pair(cert_path, key_path)?;
        Ok(Arc::new(ServerCert {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            stamps: Mutex::new(stamps),
        }))
    }

    /// Reads both files again and, when they make a valid pair, serves them to new
    /// handshakes. On error the previous certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamps = (stamp(&self.cert_path), stamp(&self.key_path));
        let result = read_pair(&self.cert_path, &self.key_path);
        // Recorded either way: a bad pair is reported once, and retried when a file changes.
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = stamps;
        let key = result?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(key);
        Ok(())
    }

    /// Reloads when either file changed since the last load; `Ok(true)` when it did.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (stamp(&self.cert_path), stamp(&self.key_path));
        let changed = *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) != now;
        if !changed {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    /// The certificate file (for messages).
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// A rustls server configuration serving this certificate (HTTP/1.1 only, like the
    /// listeners behind it).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config { reason: e.to_string() })?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let pem =
        std::fs::read(cert_path).map_err(|e| TlsError::Read { path: cert_path.to_owned(), reason: e.to_string() })?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate { path: cert_path.to_owned(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: cert_path.to_owned() });
    }
    let key_pem =
        std::fs::read(key_path).map_err(|e| TlsError::Read { path: key_path.to_owned(), reason: e.to_string() })?;
    // The key's parse error is described by kind only: its Display could quote key material.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key block".to_owned(),
            _ => "malformed PEM".to_owned(),
        },
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            TlsError::Mismatch { cert: cert_path.to_owned(), key: key_path.to_owned(), reason: e.to_string() }
        }
        other => TlsError::BadKey { path: key_path.to_owned(), reason: other.to_string() },
    })
}

/// Polls the files of `certs` every `interval` and reloads those that changed; runs until
/// aborted. A failed reload is logged (the previous certificate keeps serving).
pub async fn watch_files(certs: Vec<Arc<ServerCert>>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for c in &certs {
            match c.reload_if_changed() {
                Ok(true) => tracing::info!(cert = %c.cert_path.display(), "TLS certificate reloaded (file changed)"),
                Ok(false) => {}
                Err(e) => tracing::warn!("TLS certificate not reloaded, the previous one keeps serving: {e}"),
            }
        }
    }
}

/// Accepted TLS connections. Handshakes run in their own tasks (at most `handshakes_max` at
/// once, each within `handshake_timeout`), so a slow or silent client never holds up the
/// accept loop; a failed handshake is logged at DEBUG and dropped.
pub struct TlsIncoming {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for TlsIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIncoming").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsIncoming {
    /// Starts accepting on `listener` (must be called inside a tokio runtime).
    pub fn new(
        listener: TcpListener,
        config: Arc<ServerConfig>,
        handshake_timeout: Duration,
        handshakes_max: usize,
    ) -> std::io::Result<TlsIncoming> {
        let local = listener.local_addr()?;
        let handshakes_max = handshakes_max.max(1);
        let (tx, rx) = mpsc::channel(handshakes_max);
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(handshakes_max));
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::debug!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            // The receiver is gone only when the server stopped; the
                            // connection is then closed by the drop, which is what stopping means.
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                    drop(permit);
                });
            }
        });
        Ok(TlsIncoming { rx, local, task })
    }

    /// The next connection whose handshake completed. Pending forever once the accept task
    /// has ended (it ends only when this value is dropped).
    pub async fn accept(&mut self) -> (TlsStream<TcpStream>, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
        let (c, k) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    fn leaf(s: &ServerCert) -> Vec<u8> {
        s.current.read().unwrap().cert[0].to_vec()
    }

    // Goal: a key that is not the certificate's is refused naming both files; a reload that
    // fails (half-written or mismatched files) keeps the previous certificate; a good one swaps
    // it, and `reload_if_changed` only reloads after a file changed.
    #[test]
    fn load_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (c1, k1) = pair(dir.path(), "a");
        let (c2, k2) = pair(dir.path(), "b");
        let err = ServerCert::load(&c1, &k2).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        let err = ServerCert::load(&c1, &c1).unwrap_err();
        assert!(matches!(err, TlsError::BadKey { .. }), "{err}");
        assert!(!err.to_string().contains("BEGIN"), "{err}");

        let served = ServerCert::load(&c1, &k1).unwrap();
        let first = leaf(&served);
        assert!(!served.reload_if_changed().unwrap(), "nothing changed");
        std::fs::copy(&c2, &c1).unwrap();
        assert!(served.reload_if_changed().is_err(), "new certificate with the old key");
        assert_eq!(leaf(&served), first, "the previous certificate keeps serving");
        std::fs::copy(&k2, &k1).unwrap();
        assert!(served.reload_if_changed().unwrap());
        assert_ne!(leaf(&served), first);
    }
}
