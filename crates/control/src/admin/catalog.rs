//! Providers and priced endpoints: the admin input turned into the stored spec, the rules of
//! who may write which endpoint, and the writes (one transaction each, in the store).
//!
//! Rules held here: providers are the operators'; a provider token writes only its own
//! provider's endpoints, within the gateway's own limits, and creates new ones only inside the
//! path prefix its operator gave it (`strip_prefix`, whole segments) — changing one it has
//! (price, description, networks, enablement) needs no prefix; no endpoint takes a path the
//! gateway serves itself or one that overlaps another provider's live endpoint (the first
//! match would take the other's callers, and their payments). A PATCH changes only the fields
//! it names. Deleting is soft: rows, price versions and ledger references stay.
//!
//! Must not: build the configuration file's raw types (the admin input, the file's input and
//! the stored spec are separate types), or judge what only the gateway can (networks, the
//! SSRF guard): that is the [`Host`]'s.

use tollgate_admin_api::types as api;
use tollgate_metering::{Role, Source};

use super::{CheckedEndpoint, Host, value};
use crate::{ControlError, CredentialSpec, DiscoverySpec, EndpointSpec, Principal, ProviderSpec};

/// Longest upstream timeout a provider token may set on its endpoints.
pub const PROVIDER_UPSTREAM_TIMEOUT_MAX_S: u64 = 300;
/// Largest `maxTimeoutSeconds` a provider token may offer.
pub const PROVIDER_MAX_TIMEOUT_SECONDS_MAX: u64 = 3600;
/// Paths the gateway serves itself; no endpoint may take them.
pub const RESERVED_PREFIXES: &[&str] =
    &["/receipts", "/healthz", "/readyz", "/discovery", "/.well-known", "/openapi.json"];

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
        service_name: b.service_name,
        tags: b.tags,
        icon_url: b.icon_url,
    }
}

/// The stored form of an endpoint's discovery descriptions.
fn discovery_spec(d: api::DiscoveryBody) -> DiscoverySpec {
    DiscoverySpec {
        query_example: d.query_example,
        query_schema: d.query_schema,
        body_type: d.body_type,
        body_example: d.body_example,
        body_schema: d.body_schema,
        output_example: d.output_example,
        output_schema: d.output_schema,
    }
}

/// The stored form of an endpoint set through the admin API.
pub fn endpoint_spec(b: api::EndpointBody) -> EndpointSpec {
    EndpointSpec {
        path: b.path,
        methods: b.methods,
        price: b.price,
        price_atomic: b.price_atomic,
        free: b.free,
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
        settlement_wait: b.settlement_wait,
        discovery: b.discovery.map(discovery_spec),
    }
}

/// Providers: all for operators, its own for a provider token; deleted ones only when asked.
pub async fn list_providers<H: Host>(
    host: &H,
    p: &Principal,
    input: impl FnOnce() -> Result<api::ListQuery, ControlError>,
) -> Result<api::ProviderList, ControlError> {
    p.require(&[Role::Operator, Role::Provider], "list providers")?;
    let include_deleted = input()?.include_deleted.unwrap_or(false);
    let mut list = host.ledger().catalog().providers().await?;
    if p.role == Role::Provider {
        list.retain(|x| Some(&x.id) == p.provider.as_ref());
    }
    list.retain(|x| include_deleted || x.deleted_unix_s.is_none());
    let providers = list
        .into_iter()
        .map(|r| api::Provider {
            spec: ProviderSpec::from_stored(&r.spec).map_or(serde_json::Value::Null, value),
            id: r.id,
            source: value(r.source),
            updated_unix_s: r.updated_unix_s,
            deleted_unix_s: r.deleted_unix_s,
        })
        .collect();
    Ok(api::ProviderList { providers })
}

/// Deletes a provider and its endpoints, softly (operators only): not served from the next
/// request, never removed (ledger entries, price versions and the audit trail name them).
pub async fn delete_provider<H: Host>(host: &H, p: &Principal, id: String) -> Result<api::Deleted, H::Error> {
    p.require(&[Role::Operator], "delete providers")?;
    let now = host.now_unix_s();
    let done = host.ledger().catalog().delete_provider(&id, &p.actor(), now).await.map_err(ControlError::from)?;
    if !done {
        return Err(ControlError::NotFound { what: "provider", key: id }.into());
    }
    host.applied().await?;
    Ok(api::Deleted { name: id, deleted_unix_s: now })
}

/// A live provider, or `NotFound` (unknown and deleted providers alike).
async fn live_provider<H: Host>(host: &H, id: &str) -> Result<(), ControlError> {
    let providers = host.ledger().catalog().providers().await?;
    if providers.iter().any(|x| x.id == id && x.deleted_unix_s.is_none()) {
        Ok(())
    } else {
        Err(ControlError::NotFound { what: "provider", key: id.to_owned() })
    }
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

/// A provider's endpoints (operators, or the provider's own token); 404 for a provider that
/// does not exist or is deleted; deleted endpoints only when asked.
pub async fn list_endpoints<H: Host>(
    host: &H,
    p: &Principal,
    id: &str,
    input: impl FnOnce() -> Result<api::ListQuery, ControlError>,
) -> Result<api::EndpointList, ControlError> {
    p.require_provider(id, "read another provider's endpoints")?;
    let include_deleted = input()?.include_deleted.unwrap_or(false);
    live_provider(host, id).await?;
    let endpoints = host
        .ledger()
        .catalog()
        .endpoints(Some(id))
        .await?
        .into_iter()
        .filter(|e| include_deleted || e.deleted_unix_s.is_none())
        .map(|e| api::Endpoint {
            id: e.id,
            name: format!("{}:{}", e.provider, e.path),
            spec: EndpointSpec::from_stored(&e.spec).map_or(serde_json::Value::Null, value),
            enabled: e.enabled,
            source: value(e.source),
            price_version: e.price_version,
            prices: serde_json::from_str::<serde_json::Value>(&e.prices).unwrap_or(serde_json::Value::Null),
            updated_unix_s: e.updated_unix_s,
            deleted_unix_s: e.deleted_unix_s,
            path: e.path,
        })
        .collect();
    Ok(api::EndpointList { endpoints })
}

/// Creates or replaces an endpoint of provider `id` (a changed price makes a new price
/// version); it is served from the next request.
pub async fn put_endpoint<H: Host>(
    host: &H,
    p: &Principal,
    id: String,
    input: impl FnOnce() -> Result<api::EndpointBody, ControlError>,
) -> Result<api::EndpointWrite, H::Error> {
    p.require_provider(&id, "change another provider's endpoints")?;
    let spec = endpoint_spec(input()?);
    write_endpoint(host, p, id, spec, true).await
}

/// Changes the fields of an endpoint of provider `id` that the patch names, keeping the
/// others (and its enablement, unless the patch names it).
pub async fn patch_endpoint<H: Host>(
    host: &H,
    p: &Principal,
    id: String,
    input: impl FnOnce() -> Result<api::EndpointPatch, ControlError>,
) -> Result<api::EndpointWrite, H::Error> {
    p.require_provider(&id, "change another provider's endpoints")?;
    let patch = input()?;
    let current = host
        .ledger()
        .catalog()
        .endpoints(Some(&id))
        .await
        .map_err(ControlError::from)?
        .into_iter()
        .find(|e| e.path == patch.path && e.deleted_unix_s.is_none())
        .ok_or_else(|| ControlError::NotFound { what: "endpoint", key: format!("{id}:{}", patch.path) })?;
    let stored = EndpointSpec::from_stored(&current.spec)
        .map_err(|e| ControlError::invalid("path", format!("the stored endpoint does not read ({e}); PUT it whole")))?;
    let enabled = patch.enabled.unwrap_or(current.enabled);
    write_endpoint(host, p, id, patched(stored, patch), enabled).await
}

/// `spec` with the fields `patch` names replaced. One price: a new `price` drops a stored
/// `price_atomic` and `free`, and so on.
pub fn patched(mut spec: EndpointSpec, patch: api::EndpointPatch) -> EndpointSpec {
    if patch.price.is_some() || patch.price_atomic.is_some() || patch.free == Some(true) {
        spec.price = patch.price;
        spec.price_atomic = patch.price_atomic;
        spec.free = patch.free;
    } else if patch.free == Some(false) {
        spec.free = None;
    }
    fn keep<T>(slot: &mut Option<T>, new: Option<T>) {
        if new.is_some() {
            *slot = new;
        }
    }
    keep(&mut spec.methods, patch.methods);
    keep(&mut spec.networks, patch.networks);
    keep(&mut spec.description, patch.description);
    keep(&mut spec.mime_type, patch.mime_type);
    keep(&mut spec.settlement, patch.settlement);
    keep(&mut spec.max_timeout_seconds, patch.max_timeout_seconds);
    keep(&mut spec.upstream_timeout_ms, patch.upstream_timeout_ms);
    keep(&mut spec.body_bytes_max, patch.body_bytes_max);
    keep(&mut spec.charge_redirects, patch.charge_redirects);
    keep(&mut spec.allow_set_cookie, patch.allow_set_cookie);
    keep(&mut spec.settlement_wait, patch.settlement_wait);
    keep(&mut spec.payment_id_required, patch.payment_id_required);
    keep(&mut spec.replay_body_bytes_max, patch.replay_body_bytes_max);
    keep(&mut spec.discovery, patch.discovery.map(discovery_spec));
    spec
}

/// The rules every endpoint write passes (PUT and PATCH alike), then the write.
async fn write_endpoint<H: Host>(
    host: &H,
    p: &Principal,
    id: String,
    spec: EndpointSpec,
    enabled: bool,
) -> Result<api::EndpointWrite, H::Error> {
    if spec.free != Some(true) && !host.can_settle() {
        return Err(ControlError::Unavailable {
            what: "no relayer key is configured (settlement.relayer_key_env or relayer_key_file): priced endpoints could not settle",
        }
        .into());
    }
    let checked = host.check_endpoint(&id, &spec)?;
    reserved_path_check(&spec.path).map_err(|r| ControlError::invalid("path", r))?;
    let catalog = host.ledger().catalog();
    let all = catalog.endpoints(None).await.map_err(ControlError::from)?;
    if p.role == Role::Provider {
        // Its own live endpoint may be changed whatever its path; a new one (or one deleted
        // before) must lie inside the provider's path prefix.
        let exists = all.iter().any(|e| e.provider == id && e.path == spec.path && e.deleted_unix_s.is_none());
        provider_may_write(&spec.path, &checked, host.body_bytes_max(), exists)?;
    }
    for other in all.iter().filter(|e| e.deleted_unix_s.is_none()) {
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
            enabled,
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

/// Deletes an endpoint of provider `id`, softly (operators, or the provider's own token): not
/// served from the next request (404), its row and price versions kept.
pub async fn delete_endpoint<H: Host>(
    host: &H,
    p: &Principal,
    id: String,
    input: impl FnOnce() -> Result<api::EndpointPath, ControlError>,
) -> Result<api::Deleted, H::Error> {
    p.require_provider(&id, "delete another provider's endpoints")?;
    let path = input()?.path;
    let now = host.now_unix_s();
    let name = format!("{id}:{path}");
    if !host.ledger().catalog().delete_endpoint(&id, &path, &p.actor(), now).await.map_err(ControlError::from)? {
        return Err(ControlError::NotFound { what: "endpoint", key: name }.into());
    }
    host.applied().await?;
    Ok(api::Deleted { name, deleted_unix_s: now })
}

/// What a provider token may not do to its own endpoint: raise limits above the gateway's
/// own, or create one (`exists` false) outside its prefix (whole segments), where callers of
/// another provider may be. Changing an endpoint it has (price, description, networks,
/// enablement) needs no prefix.
pub fn provider_may_write(
    path: &str,
    e: &CheckedEndpoint,
    gateway_body_bytes_max: u64,
    exists: bool,
) -> Result<(), ControlError> {
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
    if exists {
        return Ok(());
    }
    match e.provider_strip_prefix.as_deref() {
        None => Err(ControlError::Forbidden {
            action: "create a new endpoint: its provider has no path prefix (strip_prefix) to create endpoints \
                     under; an operator creates it, then this token may change it",
        }),
        Some(prefix) if path == prefix || path.starts_with(&format!("{}/", prefix.trim_end_matches('/'))) => Ok(()),
        Some(_) => Err(ControlError::Forbidden {
            action: "create an endpoint outside its provider's path prefix (strip_prefix)",
        }),
    }
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
        .set_endpoint_enabled(&id, &path, enabled, Source::Admin, &p.actor(), host.now_unix_s())
        .await
        .map_err(ControlError::from)?;
    let live = |e: &tollgate_metering::EndpointRecord| e.path == path && e.deleted_unix_s.is_none();
    if !changed && !catalog.endpoints(Some(&id)).await.map_err(ControlError::from)?.iter().any(live) {
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
