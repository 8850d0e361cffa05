//! The control plane's rules, apart from any transport.
//!
//! Owns: the stored form of providers and endpoints ([`spec`]: a pinned, versioned JSON
//! format, separate from the configuration file's raw types and from the admin API's bodies),
//! the credential vault's cryptography ([`vault`]), and who may do what ([`principal`]: the
//! caller of an admin operation and the checks of its role and provider scope), and the admin
//! operations themselves ([`admin`]: each checked against a `Principal`, its input judged by
//! the control plane's rules, its writes made through `tollgate-metering`'s repositories,
//! failing with [`ControlError`]), and what differs between the file's catalog and the live
//! one ([`diff`]).
//!
//! Must not: know HTTP (no status codes, no axum), read the configuration file or the
//! environment, or log or return a secret except as `SecretString`.

pub mod admin;
pub mod diff;
mod error;
pub mod principal;
pub mod spec;
pub mod vault;

pub use error::ControlError;
pub use principal::Principal;
pub use spec::{CredentialSpec, DiscoverySpec, EndpointSpec, ProviderSpec, SpecError};
pub use vault::{VaultError, VaultKey};
