//! The live control plane: the route table and the decrypted credentials, rebuilt from the
//! database whenever it changes, and the audit writer.
//!
//! Owns: seeding the database from the TOML file at startup (the file seeds what the
//! database lacks and keeps what it owns; an admin change is never reverted, a difference is
//! logged — see [`seed`]); building a [`Snapshot`]
//! (providers, priced endpoints with their current price version, the latest unrevoked vault
//! version of every credential) and swapping it in atomically; watching for changes made by
//! any process (PostgreSQL `NOTIFY`, plus a poll of the change counter on every engine, so a
//! change reaches every replica within about one poll interval); the bounded audit queue and
//! its writer, which appends records to the hash chain in batches.
//!
//! Must not: serve a half-built table (a snapshot is built completely, then swapped), log a
//! secret, or stop serving because one stored record became invalid (that endpoint is left
//! out and the error logged).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use secrecy::SecretString;
use tokio::sync::mpsc;
use tokio_util::task::{TaskTracker, task_tracker::TaskTrackerToken};
use tollgate_metering::{Actor, AtomicAmount, Ledger, MeteringError, NewAuditRecord, Source};
use tollgate_x402::{DecimalU256, Network, v2};

use tollgate_control::admin::catalog::reserved_path_check;
use tollgate_control::diff::{self, Difference, LiveEndpoint, LiveProvider};
use tollgate_control::{CredentialSpec, DiscoverySpec, EndpointSpec, ProviderSpec, vault};

use crate::config::{
    Config, ConfigError, NetworkConfig, ProviderConfig, RawCredential, RawDiscovery, RawProvider, RawRoute,
    RouteConfig, build_provider, build_route,
};

/// One priced endpoint, ready to match and quote.
#[derive(Debug)]
pub struct RouteEntry {
    /// Its provider.
    pub provider: Arc<ProviderConfig>,
    /// The route.
    pub route: RouteConfig,
    /// Our offers for it, one per accepted network.
    pub offers: Vec<v2::PaymentRequirements>,
    /// Stable name for the ledger and policies: `provider:path-pattern`.
    pub name: String,
    /// The price version these offers quote.
    pub price_version: Option<u64>,
    /// When the endpoint's record last changed (discovery's `lastUpdated`).
    pub updated_unix_s: u64,
    /// Its x402 `bazaar` declaration per method (`crate::bazaar`), built once here so a 402
    /// only adds the request's path parameters.
    pub bazaar: Vec<(String, Arc<serde_json::Value>)>,
}

impl RouteEntry {
    /// The `bazaar` declaration for `method`, if the extension can describe it.
    pub fn bazaar_for(&self, method: &str) -> Option<Arc<serde_json::Value>> {
        self.bazaar.iter().find(|(m, _)| m == method).map(|(_, d)| d.clone())
    }
}

/// A vault credential's current version, decrypted.
#[derive(Clone)]
pub struct LiveSecret {
    /// Its version.
    pub version: u64,
    /// The secret.
    pub secret: SecretString,
}

impl std::fmt::Debug for LiveSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSecret").field("version", &self.version).finish_non_exhaustive()
    }
}

/// Everything a request reads from the control plane, consistent at one change counter.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The change counter this snapshot reflects.
    pub version: u64,
    /// Providers by id.
    pub providers: Vec<Arc<ProviderConfig>>,
    /// Endpoints in match order.
    pub routes: Vec<Arc<RouteEntry>>,
    /// Latest unrevoked vault version per (provider, name).
    pub secrets: HashMap<(String, String), LiveSecret>,
}

/// The route table and secrets in use, swapped whole on change (read without a lock on every
/// request), with the flag of the first load and the lock that keeps reloads one at a time.
#[derive(Debug, Default)]
pub struct Live {
    current: ArcSwap<Snapshot>,
    loaded: AtomicBool,
    reload_lock: tokio::sync::Mutex<()>,
}

impl Live {
    /// The snapshot in use.
    pub fn get(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Whether a snapshot has been loaded from the database yet.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn set(&self, s: Snapshot) {
        self.current.store(Arc::new(s));
        self.loaded.store(true, Ordering::Release);
    }
}

/// What the control plane needs from its host (the gateway): its snapshot holder, the
/// configuration and the ledger. A trait, so that this module does not import the gateway's
/// state and the gateway's state may import this module.
pub trait ControlHost: Send + Sync + 'static {
    /// The snapshot holder.
    fn live(&self) -> &Live;
    /// The configuration.
    fn config(&self) -> &Config;
    /// The ledger.
    fn ledger(&self) -> &Ledger;
}

/// Why seeding the control plane from the file failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The ledger refused or failed.
    #[error("database: {0}")]
    Database(#[from] MeteringError),
    /// The file names a path the gateway serves itself.
    #[error("{0}")]
    Config(String),
}

/// A route's prices as stored in a price version: `[{"network": "eip155:8453", "amount": "1000"}]`.
pub fn prices_json(prices: &[(Network, AtomicAmount)]) -> String {
    let list: Vec<serde_json::Value> = prices
        .iter()
        .map(|(n, a)| serde_json::json!({ "network": n.caip2(), "amount": a.get().to_string() }))
        .collect();
    serde_json::Value::Array(list).to_string()
}

fn parse_prices(text: &str) -> Option<Vec<(Network, AtomicAmount)>> {
    let list: Vec<serde_json::Value> = serde_json::from_str(text).ok()?;
    list.iter()
        .map(|v| {
            let network = Network::parse(v.get("network")?.as_str()?).ok()?;
            let amount = AtomicAmount::new(v.get("amount")?.as_str()?.parse().ok()?)?;
            Some((network, amount))
        })
        .collect()
}

/// The stored form of a provider of the file or the admin API (its routes are stored apart).
pub fn provider_spec(raw: &RawProvider) -> ProviderSpec {
    ProviderSpec {
        id: raw.id.clone(),
        pay_to: raw.pay_to.clone(),
        upstream: raw.upstream.clone(),
        strip_prefix: raw.strip_prefix.clone(),
        credential: raw.credential.clone().map(|c| CredentialSpec {
            inject: c.inject,
            secret_env: c.secret_env,
            secret_file: c.secret_file,
            vault: c.vault,
            header: c.header,
            template: c.template,
            param: c.param,
            username: c.username,
        }),
        upstream_timeout_ms: raw.upstream_timeout_ms,
        allow_insecure_http: raw.allow_insecure_http,
        service_name: raw.service_name.clone(),
        tags: raw.tags.clone(),
        icon_url: raw.icon_url.clone(),
    }
}

/// A stored provider in the form the file's validation reads.
pub fn raw_provider(spec: ProviderSpec) -> RawProvider {
    RawProvider {
        id: spec.id,
        pay_to: spec.pay_to,
        upstream: spec.upstream,
        strip_prefix: spec.strip_prefix,
        credential: spec.credential.map(|c| RawCredential {
            inject: c.inject,
            secret_env: c.secret_env,
            secret_file: c.secret_file,
            vault: c.vault,
            header: c.header,
            template: c.template,
            param: c.param,
            username: c.username,
        }),
        upstream_timeout_ms: spec.upstream_timeout_ms,
        allow_insecure_http: spec.allow_insecure_http,
        service_name: spec.service_name,
        tags: spec.tags,
        icon_url: spec.icon_url,
        routes: Vec::new(),
    }
}

/// The stored form of a route.
pub fn endpoint_spec(r: &RawRoute) -> EndpointSpec {
    let r = r.clone();
    EndpointSpec {
        path: r.path,
        methods: r.methods,
        price: r.price,
        price_atomic: r.price_atomic,
        free: r.free,
        networks: r.networks,
        description: r.description,
        mime_type: r.mime_type,
        settlement: r.settlement,
        max_timeout_seconds: r.max_timeout_seconds,
        upstream_timeout_ms: r.upstream_timeout_ms,
        body_bytes_max: r.body_bytes_max,
        charge_redirects: r.charge_redirects,
        allow_set_cookie: r.allow_set_cookie,
        payment_id_required: r.payment_id_required,
        replay_body_bytes_max: r.replay_body_bytes_max,
        settlement_wait: r.settlement_wait,
        discovery: r.discovery.map(|d| DiscoverySpec {
            query_example: d.query_example,
            query_schema: d.query_schema,
            body_type: d.body_type,
            body_example: d.body_example,
            body_schema: d.body_schema,
            output_example: d.output_example,
            output_schema: d.output_schema,
        }),
    }
}

/// A stored endpoint in the form the file's validation reads.
pub fn raw_route(e: EndpointSpec) -> RawRoute {
    RawRoute {
        path: e.path,
        methods: e.methods,
        price: e.price,
        price_atomic: e.price_atomic,
        free: e.free,
        networks: e.networks,
        description: e.description,
        mime_type: e.mime_type,
        settlement: e.settlement,
        max_timeout_seconds: e.max_timeout_seconds,
        upstream_timeout_ms: e.upstream_timeout_ms,
        body_bytes_max: e.body_bytes_max,
        charge_redirects: e.charge_redirects,
        allow_set_cookie: e.allow_set_cookie,
        payment_id_required: e.payment_id_required,
        replay_body_bytes_max: e.replay_body_bytes_max,
        settlement_wait: e.settlement_wait,
        discovery: e.discovery.map(|d| RawDiscovery {
            query_example: d.query_example,
            query_schema: d.query_schema,
            body_type: d.body_type,
            body_example: d.body_example,
            body_schema: d.body_schema,
            output_example: d.output_example,
            output_schema: d.output_schema,
        }),
    }
}

/// A stored (or admin-set) provider validated into the form the gateway serves, by the file's
/// rules, with secrets only from the vault. The file's validator reads its raw types, so the
/// spec is converted here, in this one place.
pub fn serve_provider(key: &str, spec: ProviderSpec) -> Result<ProviderConfig, ConfigError> {
    build_provider(key, &raw_provider(spec), &|_| None, false)
}

/// A stored (or admin-set) endpoint of `provider` validated into the route the gateway
/// serves, by the file's rules (networks and limits from `config`).
pub fn serve_route(
    key: &str,
    spec: EndpointSpec,
    provider: &ProviderConfig,
    config: &Config,
) -> Result<RouteConfig, ConfigError> {
    build_route(key, &raw_route(spec), provider, &config.networks, &config.server)
}

/// Seeds providers and endpoints from the file, by one rule: **the file seeds what the
/// database does not have, and keeps in step what it owns** (`source = config`: created or
/// updated, a changed price making a new price version; its endpoints no longer in the file
/// disabled). A record changed through the admin API (its source is then `admin`: a price,
/// a description, enabled or disabled, deleted) is never overwritten: a restart never reverts
/// an admin change. Every field where the file and such a record differ is logged at WARN,
/// naming the record and the field (the same comparison as `tollgate admin diff`); the
/// differences are returned.
pub async fn seed(config: &Config, ledger: &Ledger, now_unix_s: u64) -> Result<Vec<Difference>, SeedError> {
    let actor = Actor("config".to_owned());
    let db = SeedError::Database;
    let catalog = ledger.catalog();
    let providers = catalog.providers().await.map_err(db)?;
    for (raw, typed) in config.raw_providers.iter().zip(&config.providers) {
        let owned = |source: Source, deleted: Option<u64>| source == Source::Config && deleted.is_none();
        let known = providers.iter().find(|p| p.id == raw.id);
        if known.is_some_and(|p| p.deleted_unix_s.is_some()) {
            // Deleted through the admin API: its endpoints stay deleted too.
            continue;
        }
        if known.is_none_or(|p| owned(p.source, p.deleted_unix_s)) {
            let spec = provider_spec(raw).to_stored();
            catalog.put_provider(&raw.id, &spec, Source::Config, &actor, now_unix_s).await.map_err(db)?;
        }
        let endpoints = catalog.endpoints(Some(&raw.id)).await.map_err(db)?;
        for (r, route) in raw.routes.iter().zip(&typed.routes) {
            reserved_path_check(&r.path).map_err(SeedError::Config)?;
            let known = endpoints.iter().find(|e| e.path == r.path);
            if known.is_some_and(|e| !owned(e.source, e.deleted_unix_s)) {
                continue;
            }
            let spec = endpoint_spec(r).to_stored();
            let prices = prices_json(&route.prices);
            catalog
                .put_endpoint(&raw.id, &r.path, &spec, &prices, true, Source::Config, &actor, now_unix_s)
                .await
                .map_err(db)?;
        }
        for e in endpoints {
            if owned(e.source, e.deleted_unix_s) && e.enabled && !raw.routes.iter().any(|r| r.path == e.path) {
                catalog
                    .set_endpoint_enabled(&raw.id, &e.path, false, Source::Config, &actor, now_unix_s)
                    .await
                    .map_err(db)?;
            }
        }
    }
    let differences = file_diff(config, ledger).await.map_err(db)?;
    for d in &differences {
        tracing::warn!(
            record = %d.target,
            field = %d.field,
            file = %d.file,
            live = %d.live,
            "the configuration file differs from a record changed through the admin API; the admin change is kept \
             (`tollgate admin diff --config FILE` lists every difference)"
        );
    }
    Ok(differences)
}

/// A file's catalog in its stored form: each provider with its routes.
pub fn file_catalog(providers: &[RawProvider]) -> Vec<(ProviderSpec, Vec<EndpointSpec>)> {
    providers.iter().map(|p| (provider_spec(p), p.routes.iter().map(endpoint_spec).collect())).collect()
}

/// Every difference between the file's catalog and the database's.
pub async fn file_diff(config: &Config, ledger: &Ledger) -> Result<Vec<Difference>, MeteringError> {
    let catalog = ledger.catalog();
    let mut live = BTreeMap::new();
    for p in catalog.providers().await? {
        live.insert(
            p.id.clone(),
            LiveProvider {
                spec: ProviderSpec::from_stored(&p.spec).ok(),
                deleted: p.deleted_unix_s.is_some(),
                endpoints: BTreeMap::new(),
            },
        );
    }
    for e in catalog.endpoints(None).await? {
        if let Some(p) = live.get_mut(&e.provider) {
            let spec = EndpointSpec::from_stored(&e.spec).ok();
            p.endpoints.insert(e.path, LiveEndpoint { spec, enabled: e.enabled, deleted: e.deleted_unix_s.is_some() });
        }
    }
    Ok(diff::catalog(&file_catalog(&config.raw_providers), &live))
}

/// Builds a snapshot from the database. Records that no longer validate (a network removed
/// from the file, an environment variable gone) are left out and logged.
pub async fn load(config: &Config, ledger: &Ledger) -> Result<Snapshot, MeteringError> {
    let state = ledger.settings().state().await?;
    // Secrets from the environment or a file were read once, with the file; they are taken
    // from the loaded configuration, never re-read here.
    let no_env = |_: &str| None;
    let mut providers: Vec<Arc<ProviderConfig>> = Vec::new();
    for rec in ledger.catalog().providers().await? {
        if rec.deleted_unix_s.is_some() {
            continue;
        }
        let mut raw = match ProviderSpec::from_stored(&rec.spec) {
            Ok(spec) => raw_provider(spec),
            Err(e) => {
                tracing::error!(provider = %rec.id, error = %e, "stored provider does not parse; left out");
                continue;
            }
        };
        let static_credential = match &raw.credential {
            Some(c) if c.vault.is_none() => {
                match config.providers.iter().find(|p| p.id == rec.id).and_then(|p| p.credential.clone()) {
                    Some(c) => Some(c),
                    None => {
                        tracing::error!(provider = %rec.id, "stored provider names a file secret the file no longer has; left out");
                        continue;
                    }
                }
            }
            _ => None,
        };
        if static_credential.is_some() {
            raw.credential = None;
        }
        match build_provider(&format!("provider {}", rec.id), &raw, &no_env, false) {
            Ok(mut p) => {
                if static_credential.is_some() {
                    p.credential = static_credential;
                }
                p.guarded = rec.source == Source::Admin;
                providers.push(Arc::new(p));
            }
            Err(e) => tracing::error!(provider = %rec.id, error = %e, "stored provider is invalid; left out"),
        }
    }
    let mut routes = Vec::new();
    for e in ledger.catalog().endpoints(None).await? {
        if !e.enabled || e.deleted_unix_s.is_some() {
            continue;
        }
        let Some(provider) = providers.iter().find(|p| p.id == e.provider) else { continue };
        let entry = EndpointSpec::from_stored(&e.spec)
            .map_err(|x| x.to_string())
            .and_then(|spec| {
                serve_route(&format!("endpoint {}:{}", e.provider, e.path), spec, provider, config)
                    .map_err(|x| x.to_string())
            })
            .and_then(|mut route| {
                route.prices = parse_prices(&e.prices).ok_or("stored prices do not parse")?;
                Ok(route)
            })
            .and_then(|route| route_entry(config, provider.clone(), route, Some(e.price_version), e.updated_unix_s));
        match entry {
            Ok(entry) => routes.push(Arc::new(entry)),
            Err(reason) => {
                tracing::error!(endpoint = %format!("{}:{}", e.provider, e.path), %reason, "stored endpoint is invalid; left out");
            }
        }
    }
    let mut secrets = HashMap::new();
    if let Some(key) = &config.vault_key {
        for v in ledger.catalog().credential_versions(None).await? {
            if v.revoked_unix_s.is_some() {
                continue;
            }
            match vault::open(key, &v.provider, &v.name, v.version, &v.nonce, &v.ciphertext) {
                // Ordered by version: the last unrevoked one wins.
                Ok(secret) => {
                    secrets.insert((v.provider.clone(), v.name.clone()), LiveSecret { version: v.version, secret });
                }
                Err(e) => tracing::error!(error = %e, "credential version left out"),
            }
        }
    }
    Ok(Snapshot { version: state.version, providers, routes, secrets })
}

fn route_entry(
    config: &Config,
    provider: Arc<ProviderConfig>,
    route: RouteConfig,
    price_version: Option<u64>,
    updated_unix_s: u64,
) -> Result<RouteEntry, String> {
    let path = route.pattern.to_string();
    reserved_path_check(&path)?;
    let mut offers = Vec::new();
    for (network, amount) in &route.prices {
        let n: &NetworkConfig = config.network(*network).ok_or_else(|| format!("network {network} not configured"))?;
        let mut extra = serde_json::Map::new();
        extra.insert("name".into(), n.eip712_name.clone().into());
        extra.insert("version".into(), n.eip712_version.clone().into());
        // x402 §6.1: a flow other than the default `authorization` is named in the offer.
        // `before` settles before the upstream runs: the spec's `upfront` flow.
        if route.settlement == tollgate_metering::SettlementMode::Before {
            extra.insert(tollgate_x402::PAYMENT_FLOW.into(), "upfront".into());
        }
        offers.push(v2::PaymentRequirements {
            scheme: tollgate_x402::SCHEME_EXACT.to_owned(),
            network: *network,
            amount: DecimalU256::from(amount.get()),
            asset: n.asset,
            pay_to: provider.pay_to,
            max_timeout_seconds: route.max_timeout_seconds,
            extra,
        });
    }
    let name = format!("{}:{}", provider.id, path);
    let bazaar = route
        .methods
        .iter()
        .filter_map(|m| crate::bazaar::declaration(&route, m).map(|d| (m.clone(), Arc::new(d))))
        .collect();
    Ok(RouteEntry { provider, route, offers, name, price_version, updated_unix_s, bazaar })
}

/// Reloads the snapshot if the change counter moved (or `force`). Returns whether it did.
pub async fn refresh<H: ControlHost>(host: &H, force: bool) -> Result<bool, MeteringError> {
    let live = host.live();
    let _guard = live.reload_lock.lock().await;
    let version = host.ledger().settings().state().await?.version;
    if !force && version == live.get().version && live.is_loaded() {
        return Ok(false);
    }
    let snapshot = load(host.config(), host.ledger()).await?;
    tracing::info!(version = snapshot.version, routes = snapshot.routes.len(), "control plane loaded");
    live.set(snapshot);
    Ok(true)
}

/// Keeps the snapshot current: woken by PostgreSQL notifications, and polls the change
/// counter every `control.poll_interval` (the fallback, and SQLite's only way).
pub async fn watch<H: ControlHost>(gw: Arc<H>) {
    let mut listener = match gw.ledger().settings().listener().await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "control-plane notifications unavailable; polling only");
            None
        }
    };
    let poll = gw.config().control.poll_interval;
    let mut ticks: u64 = 0;
    loop {
        ticks = ticks.wrapping_add(1);
        // A broken notification stream is re-opened now and then (polling covers the gap).
        if listener.is_none() && ticks.is_multiple_of(40) {
            listener = gw.ledger().settings().listener().await.ok().flatten();
        }
        match listener.as_mut() {
            Some(l) => {
                tokio::select! {
                    r = l.recv() => if let Err(e) = r {
                        tracing::warn!(error = %e, "control-plane notification stream broke; polling only");
                        listener = None;
                    },
                    () = tokio::time::sleep(poll) => {}
                }
            }
            None => tokio::time::sleep(poll).await,
        }
        if let Err(e) = refresh(&*gw, false).await {
            tracing::warn!(error = %e, "control-plane refresh failed; keeping the current table");
        }
    }
}

/// An audit record on its way to the writer. It holds a token of the tracker of records
/// queued and not yet committed (`Gateway::audit_pending`) until the writer has committed it
/// (or it is dropped unsent), so shutdown can wait for the queue and `/metrics` can count it.
#[derive(Debug)]
pub struct QueuedAudit {
    record: NewAuditRecord,
    _pending: TaskTrackerToken,
}

impl QueuedAudit {
    /// `record`, counted in `pending` from now on.
    pub fn new(record: NewAuditRecord, pending: &TaskTracker) -> QueuedAudit {
        QueuedAudit { record, _pending: pending.token() }
    }

    /// The record.
    pub fn record(&self) -> &NewAuditRecord {
        &self.record
    }
}

/// The audit writer: gathers records for up to `batch_window` after the first one arrives (at
/// most 256), appends each batch to the chain in one transaction, and retries a failed batch
/// with backoff (records are not dropped while the process lives). Gathering keeps the
/// writer's commits few under load, so that it seldom holds the ledger's write lock when a
/// paid call needs it. A batch's tokens are released once it is committed.
pub async fn audit_writer(ledger: Ledger, mut rx: mpsc::Receiver<QueuedAudit>, batch_window: Duration) {
    const BATCH_MAX: usize = 256;
    let mut queued = Vec::with_capacity(BATCH_MAX);
    loop {
        if rx.recv_many(&mut queued, BATCH_MAX).await == 0 {
            return;
        }
        let deadline = tokio::time::Instant::now() + batch_window;
        while queued.len() < BATCH_MAX {
            let room = BATCH_MAX - queued.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut queued, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let (batch, committed): (Vec<NewAuditRecord>, Vec<TaskTrackerToken>) =
            queued.drain(..).map(|q| (q.record, q._pending)).unzip();
        let mut delay = Duration::from_millis(50);
        while let Err(e) = ledger.audit().append(&batch).await {
            tracing::error!(error = %e, records = batch.len(), "audit append failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        drop(committed);
    }
}
