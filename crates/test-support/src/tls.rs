//! [`TestCa`]: a certificate authority made at test time (rcgen), the server certificates it
//! issues as PEM files, and the client and server TLS configurations that trust it; plus
//! [`http`], the plain `reqwest` client for tests (the Mozilla roots only, like production).
//!
//! Owns its temporary directory and nothing else. Keys are generated per run and never
//! leave the directory; nothing here is meant to be secure beyond a test.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::CertificateDer;
use tollgate_tls::{ClientTls, ServerCert};

/// A `reqwest` client builder with the production roots (no test CA), for tests that talk
/// plain HTTP to fixtures or must see a certificate refused.
pub fn http_builder() -> reqwest::ClientBuilder {
    ClientTls::new(None).expect("the Mozilla roots").reqwest_builder()
}

/// A `reqwest` client with the production roots.
pub fn http() -> reqwest::Client {
    http_builder().build().expect("reqwest client")
}

/// A test certificate authority with files in its own temporary directory.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
    ca_file: PathBuf,
    issued: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").field("ca_file", &self.ca_file).finish()
    }
}

/// A server certificate issued by a [`TestCa`]: the PEM files of the chain and the key.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate (leaf only; the CA is the client's root).
    pub cert_file: PathBuf,
    /// Its PKCS#8 private key.
    pub key_file: PathBuf,
    /// The certificate's PEM text.
    pub cert_pem: String,
    /// The key's PEM text.
    pub key_pem: String,
}

impl TestCa {
    /// A fresh CA ("tollgate test CA <n>"), its certificate written to `ca.pem`.
    pub fn new() -> anyhow::Result<TestCa> {
        let dir = tempfile::Builder::new().prefix("tollgate-ca-").tempdir().context("temporary directory")?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "tollgate test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, issuer.pem())?;
        Ok(TestCa { issuer, dir, ca_file, issued: Default::default() })
    }

    /// The CA certificate's PEM file (what `[tls] extra_ca_file` or `sslrootcert` names).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses), written to
    /// `<n>.crt` / `<n>.key` in the CA's directory.
    pub fn issue(&self, names: &[&str]) -> anyhow::Result<IssuedCert> {
        let n = self.issued.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let cert_file = self.dir.path().join(format!("server{n}.crt"));
        let key_file = self.dir.path().join(format!("server{n}.key"));
        self.issue_to(names, &cert_file, &key_file)
    }

    /// Issues a server certificate for `names` into the given files (replacing them: how a
    /// test renews a certificate in place).
    pub fn issue_to(&self, names: &[&str], cert_file: &Path, key_file: &Path) -> anyhow::Result<IssuedCert> {
        let mut params = CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
        let serial = rand_serial();
        params.distinguished_name.push(DnType::CommonName, format!("tollgate test server {serial}"));
        params.serial_number = Some(serial.to_be_bytes().to_vec().into());
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        // Written to temporary names and renamed: a watcher never sees half a file.
        write_atomic(key_file, key_pem.as_bytes())?;
        write_atomic(cert_file, cert_pem.as_bytes())?;
        Ok(IssuedCert { cert_file: cert_file.to_owned(), key_file: key_file.to_owned(), cert_pem, key_pem })
    }

    /// Client TLS trusting the Mozilla roots and this CA.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls::with_extra(vec![self.ca_der()]).expect("client TLS with the test CA")
    }

    /// A `reqwest` client that trusts this CA.
    pub fn http(&self) -> reqwest::Client {
        self.client_tls().reqwest_builder().build().expect("reqwest client")
    }

    /// A server configuration serving a fresh certificate for `names`.
    pub fn server_config(&self, names: &[&str]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let issued = self.issue(names)?;
        let cert = ServerCert::load(&issued.cert_file, &issued.key_file)?;
        Ok(cert.server_config()?)
    }
}

fn rand_serial() -> u64 {
    u64::from_be_bytes(alloy_primitives::B256::random().0[..8].try_into().expect("8 bytes"))
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
