//! TLS for every connection tollgate makes or accepts, on one stack: rustls with the `ring`
//! provider.
//!
//! This crate owns:
//! - the trusted roots: the Mozilla set compiled in (`webpki-roots`) plus an optional PEM file
//!   of extra CAs ([`ClientTls`]), and the `reqwest` client builders made from them, so the
//!   gateway's upstream and RPC clients, the client SDK and the CLI trust the same roots;
//! - how a failed handshake is told ([`tls_failure`]): the host and the reason, never a URL
//!   (hosted RPC URLs and query-injected credentials carry secrets in the URL);
//! - server certificates that reload from their files without a restart
//!   ([`ServerCert`]), and a listener that completes handshakes off the accept loop
//!   ([`TlsIncoming`]).
//!
//! It must not know HTTP routes, status codes, configuration files or the environment: paths
//! and limits arrive by value. No process-wide crypto provider is assumed: every
//! configuration names [`provider`] itself.

mod client;
mod error;
mod server;

pub use client::{ClientTls, provider};
pub use error::{TlsError, TlsFailure, tls_failure};
pub use server::{ServerCert, TlsIncoming, watch_files};
