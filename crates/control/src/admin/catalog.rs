//! Providers and priced endpoints: the admin input turned into the stored spec, the rules of
//! who may write which endpoint, and the writes (one transaction each, in the store).
//!
//! Rules held here: providers are the operators'; a provider token writes only its own
//! provider's endpoints, inside the path prefix its operator gave it (`strip_prefix`, whole
//! segments), within the gateway's own limits; no endpoint takes a path the gateway serves
//! itself or one that overlaps another provider's endpoint (the first match would take the
//! other's callers, and their payments).
//!
//! Must not: build the configuration file's raw types (the admin input, the file's input and
//! the stored spec are separate types), or judge what only the gateway can (networks, the
//! SSRF guard): that is the [`Host`]'s.

use tollgate_admin_api::types as api;
use tollgate_metering::{Role, Source};

use super::{CheckedEndpoint, Host, value};
use crate::{ControlError, CredentialSpec, EndpointSpec, Principal, ProviderSpec};

/// Longest upstream timeout a provider token may set on its endpoints.
pub const PROVIDER_UPSTREAM_TIMEOUT_MAX_S: u64 = 300;
/// Largest `maxTimeoutSeconds` a provider token may offer.
pub const PROVIDER_MAX_TIMEOUT_SECONDS_MAX: u64 = 3600;
/// Paths the gateway serves itself; no endpoint may take them.
pub const RESERVED_PREFIXES: &[&str] = &["/receipts", "/healthz", "/readyz"];

/// Refuses paths the gateway serves itself.
pub fn reserved_path_check(path: &str) -> Result<(), String> {
    if RESERVED_PREFIXES.iter().any(|x| path == *x || path.starts_with(&format!("{x}/"))) {
        return Err(format!("path {path} is reserved by the gateway"));
    }
    Ok(())
}

/// The stored form of a provider set through the admin API.
pub fn provider_spec(id: &str, b: api::ProviderBody) -> ProviderSpec {
    ProviderSpec {
        id: id.to_owned(),
        pay_to: b.pay_to,
        upstream: b.upstream,
        strip_prefix: b.strip_prefix,
        credential: b.credential.map(|c| CredentialSpec {
            inject: c.inject,
            secret_env: c.secret_env,
            secret_file: c.secret_file.map(std::path::PathBuf::from),
            vault: c.vault,
            header: c.header,
            template: c.template,
            param: c.param,
            username: c.username,
        }),
        upstream_timeout_ms: b.upstream_timeout_ms,
        allow_insecure_http: b.allow_insecure_http,
    }
}

/// The stored form of an endpoint set through the admin API.
pub fn endpoint_spec(b: api::EndpointBody) -> EndpointSpec {
    EndpointSpec {
        path: b.path,
        methods: b.methods,
        price: b.price,
        price_atomic: b.price_atomic,
        networks: b.networks,
        description: b.description,
        mime_type: b.mime_type,
        settlement: b.settlement,
        max_timeout_seconds: b.max_timeout_seconds,
        upstream_timeout_ms: b.upstream_timeout_ms,
        body_bytes_max: b.body_bytes_max,
        charge_redirects: b.charge_redirects,
        allow_set_cookie: b.allow_set_cookie,
        payment_id_required: b.payment_id_required,
        replay_body_bytes_max: b.replay_body_bytes_max,
    }
}

/// Providers: all for operators, its own for a provider token.
pub async fn list_providers<H: Host>(host: &H, p: &Principal) -> Result<api::ProviderList, ControlError> {
    p.require(&[Role::Operator, Role::Provider], "list providers")?;
    let mut list = host.ledger().catalog().providers().await?;
    if p.role == Role::Provider {
        list.retain(|x| Some(&x.id) == p.provider.as_ref());
    }
    let providers = list
        .into_iter()
        .map(|r| api::Provider {
            spec: ProviderSpec::from_stored(&r.spec).map_or(serde_json::Value::Null, value),
            id: r.id,
            source: value(r.source),
            updated_unix_s: r.updated_unix_s,
        })
        .collect();
    Ok(api::ProviderList { providers })
}

/// Creates or changes a provider (operators only): checked by the host as the gateway would
/// serve it, then stored and applied.
pub async fn put_provider<H: Host>(
    host: &H,
    p: &Principal,
    id: String,
    input: impl FnOnce() -> Result<api::ProviderBody, ControlError>,
) -> Result<api::ProviderPut, H::Error> {
    p.require(&[Role::Operator], "create or change providers")?;
    let spec = provider_spec(&id, input()?);
    host.check_provider(&spec).await?;
    if spec.credential.as_ref().is_some_and(|c| c.vault.is_some()) && host.vault_key().is_none() {
        return Err(ControlError::Unavailable {
            what: "the vault has no master key (vault.master_key_env or vault.master_key_file)",
        }
        .into());
    }
    let ledger = host.ledger();
    ledger
        .catalog()
        .put_provider(&id, &spec.to_stored(), Source::Admin, &p.actor(), host.now_unix_s())
        .await
        .map_err(ControlError::from)?;
    host.applied().await?;
    Ok(api::ProviderPut { id, spec: value(spec) })
}

/// A provider's endpoints (operators, or the provider's own token).
pub async fn list_endpoints<H: Host>(host: &H, p: &Principal, id: &str) -> Result<api::EndpointList, ControlError> {
    p.require_provider(id, "read another provider's endpoints")?;
    let endpoints = host
        .ledger()
        .catalog()
        .endpoints(Some(id))
        .await?
        .into_iter()
        .map(|e| api::Endpoint {
            id: e.id,
            name: format!("{}:{}", e.provider, e.path),
            spec: EndpointSpec::from_stored(&e.spec).map_or(serde_json::Value::Null, value),
            enabled: e.enabled,
            source: value(e.source),
            price_version: e.price_version,
            prices: serde_json::from_str::<serde_json::Value>(&e.prices).unwrap_or(serde_json::Value::Null),
            updated_unix_s: e.updated_unix_s,
            path: e.path,
        })
        .collect();
    Ok(api::EndpointList { endpoints })
}

/// Creates or changes an endpoint of provider `id` (a changed price makes a new price
/// version).
pub async fn put_endpoint<H: Host>(
    host: &H,
    p: &Principal,
    id: String,
    input: impl FnOnce() -> Result<api::EndpointBody, ControlError>,
) -> Result<api::EndpointWrite, H::Error> {
    p.require_provider(&id, "change another provider's endpoints")?;
    let spec = endpoint_spec(input()?);
    if !host.can_settle() {
        return Err(ControlError::Unavailable {
            what: "no relayer key is configured (settlement.relayer_key_env or relayer_key_file): priced endpoints could not settle",
        }
        .into());
    }
    let checked = host.check_endpoint(&id, &spec)?;
    reserved_path_check(&spec.path).map_err(|r| ControlError::invalid("path", r))?;
    if p.role == Role::Provider {
        provider_may_write(&spec.path, &checked, host.body_bytes_max())?;
    }
    let catalog = host.ledger().catalog();
    for other in catalog.endpoints(None).await.map_err(ControlError::from)? {
        if other.provider != id && host.paths_overlap(&other.path, &spec.path) {
            return Err(ControlError::invalid("path", "overlaps an endpoint of another provider").into());
        }
    }
    let w = catalog
        .put_endpoint(
            &id,
            &spec.path,
            &spec.to_stored(),
            &checked.prices_stored,
            Source::Admin,
            &p.actor(),
            host.now_unix_s(),
        )
        .await
        .map_err(ControlError::from)?;
    host.applied().await?;
    Ok(api::EndpointWrite {
        name: format!("{id}:{}", spec.path),
        endpoint_id: w.endpoint_id,
        price_version: w.price_version,
        new_price_version: w.new_price_version,
    })
}

/// What a provider token may not do to its own endpoint: raise limits above the gateway's
/// own, or claim a path outside its prefix (whole segments), where callers of another
/// provider may be.
pub fn provider_may_write(path: &str, e: &CheckedEndpoint, gateway_body_bytes_max: u64) -> Result<(), ControlError> {
    if e.body_bytes_max > gateway_body_bytes_max {
        return Err(ControlError::invalid("body_bytes_max", format!("at most {gateway_body_bytes_max}")));
    }
    if e.upstream_timeout > std::time::Duration::from_secs(PROVIDER_UPSTREAM_TIMEOUT_MAX_S) {
        return Err(ControlError::invalid(
            "upstream_timeout_ms",
            format!("at most {PROVIDER_UPSTREAM_TIMEOUT_MAX_S} s"),
        ));
    }
    if e.max_timeout_seconds > PROVIDER_MAX_TIMEOUT_SECONDS_MAX {
        return Err(ControlError::invalid(
            "max_timeout_seconds",
            format!("at most {PROVIDER_MAX_TIMEOUT_SECONDS_MAX}"),
        ));
    }
    let inside = e
        .provider_strip_prefix
        .as_deref()
        .is_some_and(|prefix| path == prefix || path.starts_with(&format!("{}/", prefix.trim_end_matches('/'))));
    if !inside {
        return Err(ControlError::Forbidden {
            action: "create an endpoint outside its provider's path prefix (strip_prefix)",
        });
    }
    Ok(())
}

/// Enables or disables an endpoint of provider `id` (operators, or the provider's own token).
pub async fn set_enabled<H: Host>(
    host: &H,
    p: &Principal,
    id: String,
    enabled: bool,
    input: impl FnOnce() -> Result<api::EndpointPath, ControlError>,
) -> Result<api::EndpointEnabled, H::Error> {
    p.require_provider(&id, "change another provider's endpoints")?;
    let path = input()?.path;
    let catalog = host.ledger().catalog();
    let changed = catalog
        .set_endpoint_enabled(&id, &path, enabled, &p.actor(), host.now_unix_s())
        .await
        .map_err(ControlError::from)?;
    if !changed && !catalog.endpoints(Some(&id)).await.map_err(ControlError::from)?.iter().any(|e| e.path == path) {
        return Err(ControlError::NotFound { what: "endpoint", key: format!("{id}:{path}") }.into());
    }
    host.applied().await?;
    Ok(api::EndpointEnabled { name: format!("{id}:{path}"), enabled })
}

/// An endpoint's price versions (operators, finance, or the provider's own token).
pub async fn prices<H: Host>(
    host: &H,
    p: &Principal,
    id: &str,
    input: impl FnOnce() -> Result<api::EndpointPath, ControlError>,
) -> Result<api::PriceHistory, ControlError> {
    p.require_reader_of(id, "read another provider's prices")?;
    let path = input()?.path;
    let catalog = host.ledger().catalog();
    let e = catalog
        .endpoints(Some(id))
        .await?
        .into_iter()
        .find(|e| e.path == path)
        .ok_or_else(|| ControlError::NotFound { what: "endpoint", key: format!("{id}:{path}") })?;
    let versions = catalog
        .price_versions(e.id)
        .await?
        .into_iter()
        .map(|v| api::PriceVersion {
            price_version: v.id,
            created_unix_s: v.created_unix_s,
            prices: serde_json::from_str::<serde_json::Value>(&v.prices).unwrap_or(serde_json::Value::Null),
        })
        .collect();
    Ok(api::PriceHistory { name: format!("{id}:{path}"), current: e.price_version, versions })
}
