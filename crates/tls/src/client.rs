//! Client-side TLS: which certificate authorities are trusted, and the `reqwest` clients
//! built on them. Owns no connection and reads no environment: the extra CA file's path
//! arrives by value.
//!
//! The roots are the Mozilla set compiled into the binary (`webpki-roots`), not the host's
//! store: the gateway then trusts the same authorities on every host and in a minimal
//! container image without `ca-certificates`, and an update is a rebuild, reviewed like any
//! other dependency change. A private CA is added with an extra PEM file, on top of the
//! Mozilla set.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, LazyLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

use crate::TlsError;

// rustls 0.23.48 deprecated `ring`'s provider because `ring` lacks the post-quantum hybrid key
// exchange (X25519MLKEM768): handshakes use X25519 / P-256 / P-384. Chosen anyway for the
// build (seconds, against minutes of C for aws-lc-sys on two cores); moving to aws-lc-rs is a
// feature switch in the workspace's [workspace.dependencies] and this one line.
#[allow(deprecated)]
static PROVIDER: LazyLock<Arc<CryptoProvider>> = LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));

/// The one crypto provider (rustls on `ring`), named explicitly by every configuration so
/// nothing depends on a process-wide default.
pub fn provider() -> Arc<CryptoProvider> {
    PROVIDER.clone()
}

/// The trusted roots and the rustls client configuration made from them. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    extra_cas: usize,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls").field("roots", &"webpki-roots").field("extra_cas", &self.extra_cas).finish()
    }
}

impl ClientTls {
    /// The Mozilla roots, plus every certificate in `extra_ca_file` (PEM) when given.
    pub fn new(extra_ca_file: Option<&Path>) -> Result<Self, TlsError> {
        let extra = match extra_ca_file {
            None => Vec::new(),
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| TlsError::Read { path: path.to_owned(), reason: e.to_string() })?;
                let certs = CertificateDer::pem_slice_iter(&pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsError::BadCertificate { path: path.to_owned(), reason: e.to_string() })?;
                if certs.is_empty() {
                    return Err(TlsError::NoCertificate { path: path.to_owned() });
                }
                for c in &certs {
                    // Checked one by one so a bad file is refused at startup, not ignored.
                    let mut probe = RootCertStore::empty();
                    probe
                        .add(c.clone())
                        .map_err(|e| TlsError::BadCertificate { path: path.to_owned(), reason: e.to_string() })?;
                }
                certs
            }
        };
        Self::with_extra(extra)
    }

    /// The Mozilla roots plus `extra` (DER certificates already read).
    pub fn with_extra(extra: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let extra_cas = extra.len();
        for c in extra {
            roots.add(c).map_err(|e| TlsError::Config { reason: format!("extra CA: {e}") })?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config { reason: e.to_string() })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls { config: Arc::new(config), extra_cas })
    }

    /// The rustls configuration (for connectors other than `reqwest`).
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// A `reqwest` client builder that trusts these roots. The only way tollgate builds a
    /// `reqwest` client: `reqwest::Client::new()` would look for a process-wide crypto
    /// provider, and none is installed.
    #[allow(clippy::disallowed_methods)] // this is the one place allowed to call it
    pub fn reqwest_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder().tls_backend_preconfigured((*self.config).clone())
    }
}
