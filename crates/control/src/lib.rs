//! The control plane's rules, apart from any transport.
//!
//! Owns: the stored form of providers and endpoints ([`spec`]: a pinned, versioned JSON
//! format, separate from the configuration file's raw types and from the admin API's bodies),
//! the credential vault's cryptography ([`vault`]), and who may do what ([`principal`]: the
//! caller of an admin operation and the checks of its role and provider scope).
//!
//! Must not: know HTTP (no status codes, no axum), read the configuration file or the
//! environment, or log or return a secret except as `SecretString`.

pub mod principal;
pub mod spec;
pub mod vault;

pub use principal::Principal;
pub use spec::{CredentialSpec, EndpointSpec, ProviderSpec, SpecError};
pub use vault::{VaultError, VaultKey};

/// Why an admin operation was refused by the control plane's rules.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The caller's role or provider scope does not allow the action.
    #[error("this token may not {action}")]
    Forbidden {
        /// What was refused, in words (`list tokens`).
        action: &'static str,
    },
}
