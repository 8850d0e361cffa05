//! What goes wrong with TLS, said without secrets: configuration errors name the file, and a
//! failed handshake names the host and the reason, never the URL (an RPC URL's path or a
//! query-injected credential would be printed with it).

use std::error::Error as StdError;
use std::fmt;
use std::path::PathBuf;

use rustls::CertificateError;

/// A certificate, key or CA file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// The file holds no PEM certificate.
    #[error("{path}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the file is malformed.
    #[error("{path}: not a usable certificate: {reason}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the file's bytes).
        reason: String,
    },
    /// The key file holds no usable private key.
    #[error("{path}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {reason}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key).
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the private key in {key} does not belong to the certificate in {cert}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The rustls configuration could not be built.
    #[error("TLS configuration: {reason}")]
    Config {
        /// What rustls said.
        reason: String,
    },
}

/// A failed TLS handshake, as it may be logged and shown: the host and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFailure {
    /// `host` or `host:port` of the peer, when the error carried a URL.
    pub host: Option<String>,
    /// Why, in words (unknown issuer, wrong host name, expired, not TLS at all...).
    pub reason: String,
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Some(h) => write!(f, "TLS handshake with {h} failed: {}", self.reason),
            None => write!(f, "TLS handshake failed: {}", self.reason),
        }
    }
}

/// Finds a TLS failure anywhere in `err`'s chain (a `reqwest` error, an alloy transport error
/// around one, an `io::Error` around a rustls error). `None` when the error is not about TLS.
pub fn tls_failure(err: &(dyn StdError + 'static)) -> Option<TlsFailure> {
    let mut host = None;
    let mut reason = None;
    // `io::Error::source` skips the error it wraps, so wrapped errors are walked explicitly.
    let mut stack: Vec<&(dyn StdError + 'static)> = vec![err];
    let mut seen = 0usize;
    while let Some(e) = stack.pop() {
        seen += 1;
        if seen > 64 {
            break;
        }
        if let Some(r) = e.downcast_ref::<reqwest::Error>()
            && host.is_none()
        {
            host = r.url().and_then(host_of);
        }
        if let Some(t) = e.downcast_ref::<rustls::Error>()
            && reason.is_none()
        {
            reason = Some(describe(t));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            stack.push(inner);
        }
        if let Some(s) = e.source() {
            stack.push(s);
        }
    }
    reason.map(|reason| TlsFailure { host, reason })
}

/// `host` or `host:port`: what a URL may show without its path, query or user info.
fn host_of(u: &reqwest::Url) -> Option<String> {
    let h = u.host_str()?;
    Some(match u.port() {
        Some(p) => format!("{h}:{p}"),
        None => h.to_owned(),
    })
}

fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => "certificate not issued by a trusted CA (unknown issuer); for a \
                                                private CA, configure its certificate as an extra CA file"
                .to_owned(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate not valid for this host name".to_owned()
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate expired".to_owned(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "certificate not yet valid".to_owned()
            }
            CertificateError::Revoked => "certificate revoked".to_owned(),
            CertificateError::BadSignature => "bad certificate signature".to_owned(),
            CertificateError::BadEncoding => "malformed certificate".to_owned(),
            other => format!("invalid certificate ({other:?})"),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "the peer did not answer in TLS (plain HTTP on this port?)".to_owned()
        }
        rustls::Error::AlertReceived(alert) => format!("the peer refused the handshake ({alert:?})"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: an error without a TLS cause is not reported as one; a rustls error wrapped in an
    // `io::Error` (as tokio-rustls reports it) is found and worded.
    #[test]
    fn finds_rustls_errors_through_io_errors() {
        let plain = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(tls_failure(&plain), None);
        let wrapped = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let found = tls_failure(&wrapped).unwrap();
        assert_eq!(found.host, None);
        assert!(found.to_string().starts_with("TLS handshake failed: certificate not issued by a trusted CA"));
        let expired = rustls::Error::InvalidCertificate(CertificateError::Expired);
        assert_eq!(tls_failure(&expired).unwrap().reason, "certificate expired");
    }
}
