//! The gateway's configuration: a TOML file parsed once at startup into typed values.
//!
//! Unknown keys are refused, and every error names the offending key
//! (`providers[0].routes[1].price: ...`). Secrets (upstream credentials, the relayer key,
//! RPC URLs given by environment) are read here, once, into redacted types; they are never
//! printed. Every key is documented in `docs/configuration.md`.
//!
//! This file owns the entry points (`Config::load`, `Config::parse`) and the public paths:
//! every item the rest of the gateway uses is re-exported here as `crate::config::X`. The
//! parts, each importing only the ones before it (none imports this file):
//! - `error`: `ConfigError` and how it is printed;
//! - `toml_error`: TOML and serde errors rebuilt from their span, never quoting the file;
//! - `raw`: the file as written (serde, unknown keys refused);
//! - `paths`: relative paths resolved against the file's folder;
//! - `upstream_allow`: `[admin] upstream_allow` entries (read by `crate::ssrf`);
//! - `sections`: the typed `Config` and its sections;
//! - `values`: one value to its type (durations, secrets, addresses, URLs, amounts);
//! - `checks`: startup refusals and warnings;
//! - `discovery`: a provider's public description and a route's input/output descriptions
//!   (the x402 bazaar extension's rules);
//! - `provider`: a provider and its routes, for the file, the control plane and the admin API;
//! - `build`: the raw file to `Config`.

use std::path::Path;

mod build;
mod checks;
mod discovery;
mod error;
mod paths;
mod provider;
mod raw;
mod sections;
mod toml_error;
mod upstream_allow;
mod values;

pub use checks::{UpstreamConflict, check_upstream, upstream_conflict};
pub use error::ConfigError;
pub use provider::{build_provider, build_route};
pub use raw::{RawCredential, RawDiscovery, RawProvider, RawRoute};
pub use sections::{
    AdminConfig, Config, ConfigWarning, ControlConfig, Credential, DatabaseConfig, DeferredOverflow, Injection,
    LogConfig, LogFormat, NetworkConfig, ProviderConfig, ReconciliationConfig, RouteConfig, RouteDiscovery,
    SecretSource, ServerConfig, ServerLimits, ServiceInfo, SettlementConfig, SettlementWait, TlsConfig,
    VerificationConfig,
};
pub use tollgate_control::VaultKey;
pub use upstream_allow::AllowEntry;
pub(crate) use upstream_allow::normal_host;
pub use values::parse_human_amount;

use checks::file_mode;
use raw::RawConfig;
use tollgate_x402::Network;

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        // Whoever can write the file chooses the payee and the upstreams.
        if let Some(mode) = file_mode(path)
            && mode & 0o002 != 0
        {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                reason: format!("the file is world-writable (mode {:04o}); chmod o-w", mode & 0o7777),
            });
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), reason: e.to_string() })?;
        Self::parse_at(&text, &|name| std::env::var(name).ok(), Some(&folder_of(path)?))
    }

    /// Parses configuration text, resolving `*_env` keys through `env`; relative paths stay
    /// relative to the working directory (see [`Config::parse_at`]).
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Self::parse_at(text, env, None)
    }

    /// Parses configuration text whose relative paths (secret, key and certificate files, the
    /// SQLite database) resolve against `folder`, the configuration file's folder.
    pub fn parse_at(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        folder: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let mut raw: RawConfig = toml_error::from_str(text)?;
        if let Some(folder) = folder {
            paths::resolve(&mut raw, folder)?;
        }
        build::build(raw, env)
    }

    /// The providers of a file as written (relative paths resolved against its folder), read
    /// without building the rest of the file, so no secret is needed: what
    /// `tollgate admin diff` compares with the live catalog.
    pub fn raw_providers_at(path: &Path) -> Result<Vec<RawProvider>, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), reason: e.to_string() })?;
        let mut raw: RawConfig = toml_error::from_str(&text)?;
        paths::resolve(&mut raw, &folder_of(path)?)?;
        Ok(raw.providers)
    }

    /// The admin API's base URL a file configures (`[admin] listen`, `https` when the admin
    /// listener has a certificate; an unspecified address becomes loopback), read without
    /// building the rest of the file (no secret is needed). `None` when the admin API is off.
    pub fn admin_url(path: &Path) -> Result<Option<String>, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_owned(), reason: e.to_string() })?;
        let raw: RawConfig = toml_error::from_str(&text)?;
        if raw.admin.enabled == Some(false) {
            return Ok(None);
        }
        let listen = raw.admin.listen.as_deref().unwrap_or("127.0.0.1:8403");
        let mut addr: std::net::SocketAddr =
            listen.parse().map_err(|_| error::invalid("admin.listen", "expected host:port"))?;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let scheme = if raw.admin.tls_cert_file.is_some() { "https" } else { "http" };
        Ok(Some(format!("{scheme}://{addr}")))
    }

    /// The network entry for `network`.
    pub fn network(&self, network: Network) -> Option<&NetworkConfig> {
        self.networks.iter().find(|n| n.network == network)
    }

    /// How amounts on `chain_id` are shown and typed (the first network's when `None` or
    /// not configured: totals over every network, such as revenue, assume one token).
    pub fn units(&self, chain_id: Option<u64>) -> tollgate_metering::TokenUnits {
        let by_chain = chain_id.and_then(|c| self.networks.iter().find(|n| n.network.chain_id == c));
        by_chain.or(self.networks.first()).map(NetworkConfig::units).unwrap_or_default()
    }
}

/// The absolute folder of the configuration file.
fn folder_of(path: &Path) -> Result<std::path::PathBuf, ConfigError> {
    let absolute =
        std::path::absolute(path).map_err(|e| ConfigError::Read { path: path.to_owned(), reason: e.to_string() })?;
    Ok(absolute.parent().map(Path::to_path_buf).unwrap_or(absolute))
}

#[cfg(test)]
mod tests;
