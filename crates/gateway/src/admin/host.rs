//! The gateway as the control plane's host: what only the gateway can judge for an admin
//! operation — a provider or endpoint as it would be served (the configuration's validators,
//! its networks and limits), the SSRF guard after DNS, the relayer and the vault key — and
//! reloading this process's snapshot after a change.
//!
//! Must not: hold a rule of who may do what, or decide what is written (`tollgate_control::admin`).

use tollgate_control::admin::{CheckedEndpoint, Host};
use tollgate_control::{ControlError, EndpointSpec, ProviderSpec, VaultKey};
use tollgate_metering::Ledger;

use super::AdminError;
use crate::app::Gateway;
use crate::config::ConfigError;
use crate::control::{self, prices_json, serve_provider, serve_route};
use crate::error::GatewayError;
use crate::routes::PathPattern;

/// A validation error of the configuration's rules, naming the field without the key's prefix
/// (`provider.upstream` → `upstream`).
fn config_error(e: ConfigError) -> ControlError {
    match e {
        ConfigError::Invalid { key, reason } => {
            let field = key.split_once('.').map(|(_, f)| f.to_owned()).unwrap_or(key);
            ControlError::invalid(field, reason)
        }
        other => ControlError::invalid("body", other.to_string()),
    }
}

impl Host for Gateway {
    type Error = AdminError;

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn now_unix_s(&self) -> u64 {
        self.clock.now_unix_s()
    }

    fn vault_key(&self) -> Option<&VaultKey> {
        self.config.vault_key.as_ref()
    }

    fn can_settle(&self) -> bool {
        !self.settlers.is_empty()
    }

    fn units(&self, chain_id: Option<u64>) -> tollgate_metering::TokenUnits {
        self.config.units(chain_id)
    }

    fn body_bytes_max(&self) -> u64 {
        self.config.server.body_bytes_max
    }

    async fn check_provider(&self, spec: &ProviderSpec) -> Result<(), AdminError> {
        // The same validation as the file's, except that secrets must come from the vault.
        let built = serve_provider("provider", spec.clone()).map_err(config_error)?;
        // Checked after DNS resolution here, and again at every connection (`crate::ssrf`).
        self.upstream_guard
            .check_store(&self.config, &built.upstream)
            .await
            .map_err(|r| AdminError(GatewayError::AdminUpstreamRefused(r)))
    }

    fn check_endpoint(&self, provider: &str, spec: &EndpointSpec) -> Result<CheckedEndpoint, AdminError> {
        let snapshot = self.live.get();
        let served = snapshot
            .providers
            .iter()
            .find(|x| x.id == provider)
            .ok_or_else(|| ControlError::NotFound { what: "provider", key: provider.to_owned() })?;
        let route = serve_route("endpoint", spec.clone(), served, &self.config).map_err(config_error)?;
        Ok(CheckedEndpoint {
            body_bytes_max: route.body_bytes_max,
            upstream_timeout: route.upstream_timeout,
            max_timeout_seconds: route.max_timeout_seconds,
            provider_strip_prefix: served.strip_prefix.clone(),
            prices_stored: prices_json(&route.prices),
        })
    }

    fn paths_overlap(&self, a: &str, b: &str) -> bool {
        match (PathPattern::parse(a), PathPattern::parse(b)) {
            (Ok(a), Ok(b)) => a.overlaps(&b),
            _ => false,
        }
    }

    async fn applied(&self) -> Result<(), AdminError> {
        control::refresh(self, true).await?;
        Ok(())
    }
}
