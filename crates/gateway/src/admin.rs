//! The admin API: its own listener (loopback by default), bearer tokens with roles, and every
//! control-plane operation. Documented in `docs/admin-api.md`; `GET /admin/openapi.json`
//! serves the OpenAPI document.
//!
//! Roles: **operator** (everything), **provider** (only its own endpoints, credentials,
//! wallet policies in its scope, revenue and audit), **finance** (read-only ledger, audit,
//! revenue and reconciliation). Tokens are 256-bit random values shown once; the database
//! keeps their SHA-256, compared in constant time; revocation is immediate.
//!
//! Every change is one database transaction (nothing partially applied), bumps the change
//! counter, and reloads this process's snapshot before answering, so it applies on the next
//! request here and, through the watcher, within about a poll interval on every replica.
//!
//! Must not: return a credential (uploads are write-only), a token after its creation, or
//! anything of another provider to a provider token; accept unknown fields.

use std::sync::Arc;

use alloy_primitives::Address;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use secrecy::SecretString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tollgate_admin_api::types as api;
use tollgate_admin_api::{Operation, ROUTES, Route};
use tollgate_control::{ControlError, EndpointSpec, Principal, ProviderSpec, vault};
use tollgate_metering::{
    Actor, AuditQuery, Decision, GLOBAL_SCOPE, MeteringError, Role, Source, WalletPolicy, token_hash,
};

use crate::app::Gateway;
use crate::config::{RawCredential, RawProvider, RawRoute, build_provider, build_route};
use crate::control::{self, endpoint_spec, prices_json, provider_spec, reserved_path_check};
use crate::error::GatewayError;
use crate::routes::PathPattern;
use tollgate_recon::{
    ReconcileError, parse_time, reconcile_range, reconcile_resume, reconcile_times, render_csv, render_json,
};

/// Longest upstream timeout a provider token may set on its endpoints.
const PROVIDER_UPSTREAM_TIMEOUT_MAX_S: u64 = 300;
/// Largest `maxTimeoutSeconds` a provider token may offer.
const PROVIDER_MAX_TIMEOUT_SECONDS_MAX: u64 = 3600;

/// Prefix of admin tokens (so a leaked one is recognisable by secret scanners).
pub const TOKEN_PREFIX: &str = "tgadm_";

/// A fresh admin token: the prefix and 32 random bytes in hex.
pub fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// An error of the admin API, rendered by the gateway's one mapping.
#[derive(Debug)]
pub struct AdminError(GatewayError);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        self.0.rescue(None)
    }
}

impl From<GatewayError> for AdminError {
    fn from(e: GatewayError) -> Self {
        AdminError(e)
    }
}

impl From<MeteringError> for AdminError {
    fn from(e: MeteringError) -> Self {
        AdminError(match e {
            MeteringError::UnknownRecord { what, key } => GatewayError::AdminNotFound { what, key },
            MeteringError::InvalidValue { what, reason } => {
                GatewayError::AdminInvalid { field: what.to_owned(), reason }
            }
            MeteringError::OutOfRange { field, .. } => {
                GatewayError::AdminInvalid { field: field.to_owned(), reason: "out of range".to_owned() }
            }
            MeteringError::TooLong { field, max_bytes, .. } => {
                GatewayError::AdminInvalid { field: field.to_owned(), reason: format!("at most {max_bytes} bytes") }
            }
            other => GatewayError::from(other),
        })
    }
}

type AdminResult = Result<Response, AdminError>;

fn invalid(field: &str, reason: impl Into<String>) -> AdminError {
    AdminError(GatewayError::AdminInvalid { field: field.to_owned(), reason: reason.into() })
}

fn forbidden(action: &'static str) -> AdminError {
    AdminError(GatewayError::AdminForbidden { action })
}

fn ok<T: Serialize>(value: T) -> AdminResult {
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], axum::Json(value)).into_response())
}

/// A value as JSON (records of the ledger inside the contract's envelopes).
fn value<T: Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn values<T: Serialize>(list: Vec<T>) -> Vec<serde_json::Value> {
    list.into_iter().map(value).collect()
}

/// The caller, authenticated from the bearer token; the rules of what it may do are
/// `tollgate_control::Principal`'s.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

impl From<ControlError> for AdminError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Forbidden { action } => forbidden(action),
        }
    }
}

impl FromRequestParts<Arc<Gateway>> for Auth {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let unauthorized = || AdminError(GatewayError::AdminUnauthorized);
        let value = parts.headers.get(header::AUTHORIZATION).ok_or_else(unauthorized)?;
        let token = value.to_str().ok().and_then(bearer_token).ok_or_else(unauthorized)?;
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 256 {
            return Err(unauthorized());
        }
        let hash = token_hash(token);
        let record = gw.ledger.tokens().by_hash(&hash).await?.ok_or_else(unauthorized)?;
        // The lookup is by hash already; compare again in constant time so that no code path
        // branches on a partial match of secret material.
        if !bool::from(record.token_hash.as_bytes().ct_eq(hash.as_bytes())) || record.revoked_unix_s.is_some() {
            return Err(unauthorized());
        }
        Ok(Auth(Principal { token_id: record.id, role: record.role, provider: record.provider }))
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is case-insensitive
/// (RFC 9110 §11.1: `bearer`, `BEARER`), separated from the token by spaces or tabs.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once([' ', '\t'])?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A request body, at most `admin.body_bytes_max` bytes; parsed by the handler *after* the
/// permission check, so a caller without the right learns nothing from body errors.
pub struct AdminBody(Bytes);

impl FromRequest<Arc<Gateway>> for AdminBody {
    type Rejection = AdminError;

    async fn from_request(req: Request, gw: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let cap = gw.config.admin.body_bytes_max;
        let bytes = Bytes::from_request(req, gw)
            .await
            .map_err(|_| invalid("body", format!("larger than {cap} bytes or unreadable")))?;
        if bytes.len() > cap {
            return Err(invalid("body", format!("larger than {cap} bytes")));
        }
        Ok(AdminBody(bytes))
    }
}

impl AdminBody {
    /// The body as `T`: unknown fields refused, errors naming the field (400).
    fn json<T: DeserializeOwned>(&self) -> Result<T, AdminError> {
        let value: serde_json::Value =
            serde_json::from_slice(&self.0).map_err(|e| invalid("body", format!("not JSON: {e}")))?;
        if let Some(field) = control_character_at(&value, String::new()) {
            return Err(invalid(if field.is_empty() { "body" } else { &field }, "contains a control character"));
        }
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            invalid(&field, e.into_inner().to_string())
        })
    }
}

/// The path of the first string (or key) holding a control character, if any: such text is
/// refused everywhere (PostgreSQL cannot even store NUL).
fn control_character_at(v: &serde_json::Value, path: String) -> Option<String> {
    let bad = |s: &str| s.chars().any(char::is_control);
    match v {
        serde_json::Value::String(s) if bad(s) => Some(path),
        serde_json::Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, x)| control_character_at(x, format!("{path}[{i}]")))
        }
        serde_json::Value::Object(map) => map.iter().find_map(|(k, x)| {
            let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
            if bad(k) { Some(p) } else { control_character_at(x, p) }
        }),
        _ => None,
    }
}

/// The query string as `T` (unknown parameters refused), parsed after the permission check.
fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, AdminError> {
    let q = uri.query().unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).map_err(|e| invalid("query", e.to_string()))?;
    if let Some((k, _)) = pairs.iter().find(|(k, v)| k.chars().chain(v.chars()).any(char::is_control)) {
        return Err(invalid(k, "contains a control character"));
    }
    serde_urlencoded::from_str(q).map_err(|e| {
        let message = e.to_string();
        // Name the parameter when the decoder says which one (`unknown field `x``).
        let field = message
            .split_once("field `")
            .and_then(|(_, rest)| rest.split_once('`'))
            .map(|(name, _)| name.to_owned())
            .unwrap_or_else(|| "query".to_owned());
        invalid(&field, message)
    })
}

fn now(gw: &Gateway) -> u64 {
    gw.clock.now_unix_s()
}

async fn applied(gw: &Gateway) -> Result<(), AdminError> {
    control::refresh(gw, true).await?;
    Ok(())
}

fn parse_wallet(field: &str, s: &str) -> Result<Address, AdminError> {
    crate::config::address(field, s).map_err(config_error)
}

fn parse_atomic(field: &str, s: &Option<String>) -> Result<Option<u64>, AdminError> {
    match s {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => v
            .parse::<u64>()
            .ok()
            .filter(|n| i64::try_from(*n).is_ok())
            .map(Some)
            .ok_or_else(|| invalid(field, "too large")),
        Some(v) => Err(invalid(field, format!("`{v}` is not a whole number of atomic units"))),
    }
}

// ---------------------------------------------------------------------------------------
// Router.

/// The admin router (mounted on its own listener by `serve_admin`): every route of the
/// contract's table, each with its handler.
pub fn router(gw: Arc<Gateway>) -> Router {
    ROUTES.iter().fold(Router::new(), |r, route| r.route(route.path, handler(route))).fallback(not_found).with_state(gw)
}

/// The handler of a route: an exhaustive match, so an operation without a handler does not
/// compile.
fn handler(route: &Route) -> MethodRouter<Arc<Gateway>> {
    let f = match route.method {
        tollgate_admin_api::Method::Get => MethodFilter::GET,
        tollgate_admin_api::Method::Put => MethodFilter::PUT,
        tollgate_admin_api::Method::Post => MethodFilter::POST,
    };
    match route.operation {
        Operation::Openapi => on(f, openapi),
        Operation::Metrics => on(f, metrics),
        Operation::Whoami => on(f, whoami),
        Operation::ListTokens => on(f, list_tokens),
        Operation::CreateToken => on(f, create_token),
        Operation::RevokeToken => on(f, revoke_token),
        Operation::ListProviders => on(f, list_providers),
        Operation::PutProvider => on(f, put_provider),
        Operation::ListEndpoints => on(f, list_endpoints),
        Operation::PutEndpoint => on(f, put_endpoint),
        Operation::DisableEndpoint => on(f, disable_endpoint),
        Operation::EnableEndpoint => on(f, enable_endpoint),
        Operation::EndpointPrices => on(f, endpoint_prices),
        Operation::ListCredentials => on(f, list_credentials),
        Operation::UploadCredential => on(f, upload_credential),
        Operation::RevokeCredential => on(f, revoke_credential),
        Operation::Revenue => on(f, revenue),
        Operation::ListWallets => on(f, list_wallets),
        Operation::PutWallet => on(f, put_wallet),
        Operation::RevokeWallet => on(f, revoke_wallet),
        Operation::ReinstateWallet => on(f, reinstate_wallet),
        Operation::GetSettings => on(f, get_settings),
        Operation::PutSettings => on(f, put_settings),
        Operation::AuditQuery => on(f, audit_query),
        Operation::AuditExport => on(f, audit_export),
        Operation::AuditVerify => on(f, audit_verify),
        Operation::LedgerEntries => on(f, ledger_entries),
        Operation::Reconcile => on(f, reconcile),
        Operation::ReconRuns => on(f, recon_runs),
        Operation::ReconExceptions => on(f, recon_exceptions),
        Operation::ReconNotes => on(f, recon_notes),
        Operation::AddReconNote => on(f, add_recon_note),
    }
}

async fn not_found() -> Response {
    GatewayError::AdminNotFound { what: "admin route", key: "requested".to_owned() }.rescue(None)
}

/// Prometheus metrics (text format). Operators and finance only: the metrics name every
/// route and show the relayer's balance and the revenue flow, which a provider token must not
/// see for other providers. Prometheus sends the token with `authorization.credentials_file`.
async fn metrics(State(gw): State<Arc<Gateway>>, Auth(p): Auth) -> AdminResult {
    p.require(&[Role::Operator, Role::Finance], "read metrics")?;
    let text = crate::metrics::render(&gw).await;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response())
}

/// The OpenAPI document, generated from the contract once per process.
async fn openapi(_p: Auth) -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let text = DOCUMENT.get_or_init(|| tollgate_admin_api::openapi::document().to_string());
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], text.as_str())
        .into_response()
}

async fn whoami(Auth(p): Auth) -> AdminResult {
    ok(api::Whoami { token_id: p.token_id, role: p.role.as_str().to_owned(), provider: p.provider })
}

// --- tokens -------------------------------------------------------------------------------

async fn list_tokens(State(gw): State<Arc<Gateway>>, Auth(p): Auth) -> AdminResult {
    p.require(&[Role::Operator], "list tokens")?;
    ok(api::TokenList { tokens: values(gw.ledger.tokens().list().await?) })
}

/// Creates a token: shown once in the response, stored as its hash.
pub async fn create_token_record(
    gw: &Gateway,
    role: Role,
    provider: Option<&str>,
    label: &str,
    actor: &Actor,
) -> Result<(tollgate_metering::AdminToken, String), AdminError> {
    if let Some(id) = provider
        && !gw.ledger.catalog().providers().await?.iter().any(|x| x.id == id)
    {
        return Err(AdminError(GatewayError::AdminNotFound { what: "provider", key: id.to_owned() }));
    }
    let token = new_token();
    let record = gw.ledger.tokens().create(role, provider, &token_hash(&token), label, actor, now(gw)).await?;
    Ok((record, token))
}

async fn create_token(State(gw): State<Arc<Gateway>>, Auth(p): Auth, body: AdminBody) -> AdminResult {
    p.require(&[Role::Operator], "create tokens")?;
    let b: api::NewToken = body.json()?;
    let role = Role::parse(&b.role).ok_or_else(|| invalid("role", "expected operator, provider or finance"))?;
    if (role == Role::Provider) != b.provider.is_some() {
        return Err(invalid("provider", "required for provider tokens and only for them"));
    }
    let label = b.label.unwrap_or_default();
    if label.len() > 128 {
        return Err(invalid("label", "at most 128 bytes"));
    }
    let (record, token) = create_token_record(&gw, role, b.provider.as_deref(), &label, &p.actor()).await?;
    ok(api::CreatedToken { token, record: value(record) })
}

async fn revoke_token(State(gw): State<Arc<Gateway>>, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    p.require(&[Role::Operator], "revoke tokens")?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid("id", "expected a token id (16 hex digits)"));
    }
    let revoked = gw.ledger.tokens().revoke(&id, &p.actor(), now(&gw)).await?;
    if !revoked && !gw.ledger.tokens().list().await?.iter().any(|t| t.id == id) {
        return Err(AdminError(GatewayError::AdminNotFound { what: "token", key: id }));
    }
    ok(api::TokenRevoked { id, revoked: true })
}

// --- providers and endpoints --------------------------------------------------------------

/// A provider body in the form the file's validation reads.
fn raw_provider(id: &str, b: api::ProviderBody) -> RawProvider {
    RawProvider {
        id: id.to_owned(),
        pay_to: b.pay_to,
        upstream: b.upstream,
        strip_prefix: b.strip_prefix,
        credential: b.credential.map(|c| RawCredential {
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
        routes: Vec::new(),
    }
}

/// An endpoint body in the form the file's validation reads.
fn raw_route(b: api::EndpointBody) -> RawRoute {
    RawRoute {
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
    }
}

async fn list_providers(State(gw): State<Arc<Gateway>>, Auth(p): Auth) -> AdminResult {
    p.require(&[Role::Operator, Role::Provider], "list providers")?;
    let mut list = gw.ledger.catalog().providers().await?;
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
    ok(api::ProviderList { providers })
}

async fn put_provider(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: AdminBody,
) -> AdminResult {
    p.require(&[Role::Operator], "create or change providers")?;
    let raw = raw_provider(&id, body.json()?);
    // The same validation as the file, except that secrets must come from the vault.
    let built = build_provider("provider", &raw, &|_| None, false).map_err(config_error)?;
    // Checked after DNS resolution here, and again at every connection (`crate::ssrf`).
    gw.upstream_guard
        .check_store(&gw.config, &built.upstream)
        .await
        .map_err(|r| AdminError(GatewayError::AdminUpstreamRefused(r)))?;
    if raw.credential.as_ref().is_some_and(|c| c.vault.is_some()) && gw.config.vault_key.is_none() {
        return Err(AdminError(GatewayError::AdminUnavailable(
            "the vault has no master key (vault.master_key_env or vault.master_key_file)",
        )));
    }
    let spec = provider_spec(&raw);
    gw.ledger.catalog().put_provider(&id, &spec.to_stored(), Source::Admin, &p.actor(), now(&gw)).await?;
    applied(&gw).await?;
    ok(api::ProviderPut { id, spec: value(spec) })
}

fn config_error(e: crate::config::ConfigError) -> AdminError {
    match e {
        crate::config::ConfigError::Invalid { key, reason } => {
            let field = key.split_once('.').map(|(_, f)| f.to_owned()).unwrap_or(key);
            invalid(&field, reason)
        }
        other => invalid("body", other.to_string()),
    }
}

async fn list_endpoints(State(gw): State<Arc<Gateway>>, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    p.require_provider(&id, "read another provider's endpoints")?;
    let endpoints = gw
        .ledger
        .catalog()
        .endpoints(Some(&id))
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
    ok(api::EndpointList { endpoints })
}

async fn put_endpoint(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: AdminBody,
) -> AdminResult {
    p.require_provider(&id, "change another provider's endpoints")?;
    let raw = raw_route(body.json()?);
    if gw.settlers.is_empty() {
        return Err(AdminError(GatewayError::AdminUnavailable(
            "no relayer key is configured (settlement.relayer_key_env or relayer_key_file): priced endpoints could not settle",
        )));
    }
    let snapshot = gw.live.get();
    let provider = snapshot
        .providers
        .iter()
        .find(|x| x.id == id)
        .ok_or_else(|| AdminError(GatewayError::AdminNotFound { what: "provider", key: id.clone() }))?;
    let route =
        build_route("endpoint", &raw, provider, &gw.config.networks, &gw.config.server).map_err(config_error)?;
    reserved_path_check(&raw.path).map_err(|r| invalid("path", r))?;
    // A provider token works inside the path prefix its operator gave it (`strip_prefix`),
    // whole segments only: it cannot claim paths that callers of another provider use.
    if p.role == Role::Provider {
        // Limits a provider may not raise for itself: the gateway's own.
        if route.body_bytes_max > gw.config.server.body_bytes_max {
            return Err(invalid("body_bytes_max", format!("at most {}", gw.config.server.body_bytes_max)));
        }
        if route.upstream_timeout > std::time::Duration::from_secs(PROVIDER_UPSTREAM_TIMEOUT_MAX_S) {
            return Err(invalid("upstream_timeout_ms", format!("at most {} s", PROVIDER_UPSTREAM_TIMEOUT_MAX_S)));
        }
        if route.max_timeout_seconds > PROVIDER_MAX_TIMEOUT_SECONDS_MAX {
            return Err(invalid("max_timeout_seconds", format!("at most {PROVIDER_MAX_TIMEOUT_SECONDS_MAX}")));
        }
        let inside = provider.strip_prefix.as_deref().is_some_and(|prefix| {
            raw.path == prefix || raw.path.starts_with(&format!("{}/", prefix.trim_end_matches('/')))
        });
        if !inside {
            return Err(forbidden("create an endpoint outside its provider's path prefix (strip_prefix)"));
        }
    }
    // No endpoint may overlap another provider's (enabled or not): the first match would take
    // the other's callers, and their payments.
    for other in gw.ledger.catalog().endpoints(None).await? {
        if other.provider == id {
            continue;
        }
        if PathPattern::parse(&other.path).is_ok_and(|o| o.overlaps(&route.pattern)) {
            return Err(invalid("path", "overlaps an endpoint of another provider"));
        }
    }
    let spec = endpoint_spec(&raw).to_stored();
    let w = gw
        .ledger
        .catalog()
        .put_endpoint(&id, &raw.path, &spec, &prices_json(&route.prices), Source::Admin, &p.actor(), now(&gw))
        .await?;
    applied(&gw).await?;
    ok(api::EndpointWrite {
        name: format!("{id}:{}", raw.path),
        endpoint_id: w.endpoint_id,
        price_version: w.price_version,
        new_price_version: w.new_price_version,
    })
}

async fn set_enabled(gw: &Gateway, p: &Principal, id: &str, path: &str, enabled: bool) -> AdminResult {
    p.require_provider(id, "change another provider's endpoints")?;
    let changed = gw.ledger.catalog().set_endpoint_enabled(id, path, enabled, &p.actor(), now(gw)).await?;
    if !changed && !gw.ledger.catalog().endpoints(Some(id)).await?.iter().any(|e| e.path == path) {
        return Err(AdminError(GatewayError::AdminNotFound { what: "endpoint", key: format!("{id}:{path}") }));
    }
    applied(gw).await?;
    ok(api::EndpointEnabled { name: format!("{id}:{path}"), enabled })
}

async fn disable_endpoint(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: AdminBody,
) -> AdminResult {
    p.require_provider(&id, "change another provider's endpoints")?;
    let b: api::EndpointPath = body.json()?;
    set_enabled(&gw, &p, &id, &b.path, false).await
}

async fn enable_endpoint(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: AdminBody,
) -> AdminResult {
    p.require_provider(&id, "change another provider's endpoints")?;
    let b: api::EndpointPath = body.json()?;
    set_enabled(&gw, &p, &id, &b.path, true).await
}

async fn endpoint_prices(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path(id): Path<String>,
    uri: Uri,
) -> AdminResult {
    p.require_reader_of(&id, "read another provider's prices")?;
    let q: api::EndpointPath = query(&uri)?;
    let e =
        gw.ledger.catalog().endpoints(Some(&id)).await?.into_iter().find(|e| e.path == q.path).ok_or_else(|| {
            AdminError(GatewayError::AdminNotFound { what: "endpoint", key: format!("{id}:{}", q.path) })
        })?;
    let versions = gw
        .ledger
        .catalog()
        .price_versions(e.id)
        .await?
        .into_iter()
        .map(|v| api::PriceVersion {
            price_version: v.id,
            created_unix_s: v.created_unix_s,
            prices: serde_json::from_str::<serde_json::Value>(&v.prices).unwrap_or(serde_json::Value::Null),
        })
        .collect();
    ok(api::PriceHistory { name: format!("{id}:{}", q.path), current: e.price_version, versions })
}

// --- credentials --------------------------------------------------------------------------

async fn list_credentials(State(gw): State<Arc<Gateway>>, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    p.require_provider(&id, "read another provider's credentials")?;
    // Metadata only: CredentialVersion skips nonce and ciphertext when serialized.
    ok(api::CredentialList { credentials: values(gw.ledger.catalog().credential_versions(Some(&id)).await?) })
}

async fn upload_credential(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path((id, name)): Path<(String, String)>,
    body: AdminBody,
) -> AdminResult {
    p.require_provider(&id, "change another provider's credentials")?;
    // Never echo what was sent: a malformed secret field may be the secret itself.
    let b: api::SecretBody =
        body.json().map_err(|_| invalid("secret", "expected {\"secret\": \"...\"} with a string"))?;
    let secret = SecretString::from(b.secret);
    let key = gw.config.vault_key.as_ref().ok_or(GatewayError::AdminUnavailable(
        "the vault has no master key (vault.master_key_env or vault.master_key_file)",
    ))?;
    vault::check_vault_name(&name).map_err(|reason| invalid("name", reason))?;
    vault::check_secret(&secret).map_err(|reason| invalid("secret", reason))?;
    let (nonce, ct) = vault::seal(key, &id, &name, &secret).map_err(|e| GatewayError::Internal(e.to_string()))?;
    let version = gw.ledger.catalog().add_credential_version(&id, &name, &nonce, &ct, &p.actor(), now(&gw)).await?;
    applied(&gw).await?;
    ok(api::CredentialUploaded { provider: id, name, version })
}

async fn revoke_credential(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path((id, name, version)): Path<(String, String, String)>,
) -> AdminResult {
    p.require_provider(&id, "change another provider's credentials")?;
    let version: u64 = version.parse().map_err(|_| invalid("version", "expected a version number"))?;
    let revoked = gw.ledger.catalog().revoke_credential_version(&id, &name, version, &p.actor(), now(&gw)).await?;
    if !revoked
        && !gw
            .ledger
            .catalog()
            .credential_versions(Some(&id))
            .await?
            .iter()
            .any(|v| v.name == name && v.version == version)
    {
        return Err(AdminError(GatewayError::AdminNotFound {
            what: "credential version",
            key: format!("{id}/{name}/{version}"),
        }));
    }
    applied(&gw).await?;
    ok(api::CredentialRevoked { provider: id, name, version, revoked: true })
}

// --- revenue, ledger ------------------------------------------------------------------------

async fn revenue(State(gw): State<Arc<Gateway>>, Auth(p): Auth, Path(id): Path<String>, uri: Uri) -> AdminResult {
    p.require_reader_of(&id, "read another provider's revenue")?;
    let q: api::RangeQuery = query(&uri)?;
    let (from, to) = (q.from_unix_s.unwrap_or(0), q.to_unix_s.unwrap_or(i64::MAX as u64));
    let lines = values(gw.ledger.spend().revenue(&id, from, to).await?);
    ok(api::Revenue { provider: id, from_unix_s: from, to_unix_s: to, lines })
}

async fn ledger_entries(State(gw): State<Arc<Gateway>>, Auth(p): Auth, uri: Uri) -> AdminResult {
    let q: api::EntriesQuery = query(&uri)?;
    let provider = match p.role {
        Role::Operator | Role::Finance => q.provider,
        Role::Provider => {
            if q.provider.is_some() && q.provider != p.provider {
                return Err(forbidden("read another provider's ledger"));
            }
            p.provider.clone()
        }
    };
    let payer = q.payer.as_deref().map(|w| parse_wallet("payer", w)).transpose()?;
    let entries = gw
        .ledger
        .entries()
        .page(
            provider.as_deref(),
            payer,
            q.from_unix_s.unwrap_or(0),
            q.to_unix_s.unwrap_or(i64::MAX as u64),
            q.offset.unwrap_or(0),
            q.limit.unwrap_or(100),
        )
        .await?;
    // The stored payment (signature included) is not part of the view.
    let entries = entries
        .into_iter()
        .map(|e| {
            let mut v = serde_json::to_value(&e).unwrap_or(serde_json::Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.remove("payment");
            }
            v
        })
        .collect();
    ok(api::LedgerEntries { entries })
}

// --- wallets ------------------------------------------------------------------------------

/// The scope a caller acts in: operators choose (default `*`); a provider token always acts
/// in its own provider's scope.
fn scope_for(p: &Principal, asked: Option<String>, action: &'static str) -> Result<String, AdminError> {
    match p.role {
        Role::Operator => Ok(asked.unwrap_or_else(|| GLOBAL_SCOPE.to_owned())),
        Role::Provider => {
            let own = p.provider.clone().ok_or_else(|| forbidden(action))?;
            match asked {
                Some(s) if s != own => Err(forbidden(action)),
                _ => Ok(own),
            }
        }
        Role::Finance => Err(forbidden(action)),
    }
}

async fn check_scope_exists(gw: &Gateway, scope: &str) -> Result<(), AdminError> {
    if scope != GLOBAL_SCOPE && !gw.ledger.catalog().providers().await?.iter().any(|x| x.id == scope) {
        return Err(invalid("scope", format!("`{scope}` is neither `*` nor a provider")));
    }
    Ok(())
}

async fn list_wallets(State(gw): State<Arc<Gateway>>, Auth(p): Auth, uri: Uri) -> AdminResult {
    p.require(&[Role::Operator, Role::Provider], "read wallet policies")?;
    let q: api::WalletsQuery = query(&uri)?;
    let scope = match p.role {
        Role::Operator => q.scope,
        _ => Some(scope_for(&p, q.scope, "read wallet policies")?),
    };
    let wallet = q.wallet.as_deref().map(|w| parse_wallet("wallet", w)).transpose()?;
    ok(api::WalletPolicyList { policies: values(gw.ledger.policies().list(scope.as_deref(), wallet).await?) })
}

async fn put_wallet(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path(wallet): Path<String>,
    uri: Uri,
    body: AdminBody,
) -> AdminResult {
    p.require(&[Role::Operator, Role::Provider], "set wallet policies")?;
    let q: api::ScopeQuery = query(&uri)?;
    let scope = scope_for(&p, q.scope, "set wallet policies")?;
    let b: api::WalletPolicyBody = body.json()?;
    check_scope_exists(&gw, &scope).await?;
    let wallet = parse_wallet("wallet", &wallet)?;
    if let Some(list) = &b.endpoints {
        if list.len() > 1000 {
            return Err(invalid("endpoints", "at most 1000 endpoints"));
        }
        if scope != GLOBAL_SCOPE
            && let Some(other) = list.iter().find(|e| !e.starts_with(&format!("{scope}:")))
        {
            return Err(invalid("endpoints", format!("`{other}` is not an endpoint of provider {scope}")));
        }
    }
    let revoked = match b.revoked {
        Some(r) => r,
        None => gw.ledger.policies().list(Some(&scope), Some(wallet)).await?.first().is_some_and(|x| x.revoked),
    };
    let policy = WalletPolicy {
        scope,
        wallet,
        revoked,
        registered: b.registered,
        endpoints: b.endpoints,
        per_call_max: parse_atomic("per_call_max", &b.per_call_max)?,
        daily_cap: parse_atomic("daily_cap", &b.daily_cap)?,
        monthly_cap: parse_atomic("monthly_cap", &b.monthly_cap)?,
        updated_unix_s: now(&gw),
    };
    gw.ledger.policies().put(&policy, &p.actor()).await?;
    ok(api::WalletPolicySet { policy: value(policy) })
}

async fn set_revoked(gw: &Gateway, p: &Principal, wallet: &str, scope: Option<String>, revoked: bool) -> AdminResult {
    let scope = scope_for(p, scope, "revoke or reinstate wallets")?;
    check_scope_exists(gw, &scope).await?;
    let wallet = parse_wallet("wallet", wallet)?;
    gw.ledger.policies().set_revoked(&scope, wallet, revoked, &p.actor(), now(gw)).await?;
    ok(api::WalletRevoked { scope, wallet: format!("{wallet:#x}"), revoked })
}

async fn revoke_wallet(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path(wallet): Path<String>,
    uri: Uri,
) -> AdminResult {
    p.require(&[Role::Operator, Role::Provider], "revoke wallets")?;
    let q: api::ScopeQuery = query(&uri)?;
    set_revoked(&gw, &p, &wallet, q.scope, true).await
}

async fn reinstate_wallet(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path(wallet): Path<String>,
    uri: Uri,
) -> AdminResult {
    p.require(&[Role::Operator, Role::Provider], "reinstate wallets")?;
    let q: api::ScopeQuery = query(&uri)?;
    set_revoked(&gw, &p, &wallet, q.scope, false).await
}

// --- settings -----------------------------------------------------------------------------

async fn get_settings(State(gw): State<Arc<Gateway>>, Auth(p): Auth) -> AdminResult {
    p.require(&[Role::Operator], "read settings")?;
    let s = gw.ledger.settings().state().await?;
    ok(api::Settings { allowlist_mode: s.allowlist_mode, version: s.version })
}

async fn put_settings(State(gw): State<Arc<Gateway>>, Auth(p): Auth, body: AdminBody) -> AdminResult {
    p.require(&[Role::Operator], "change settings")?;
    let b: api::SettingsBody = body.json()?;
    gw.ledger.settings().set_allowlist_mode(b.allowlist_mode, &p.actor(), now(&gw)).await?;
    ok(api::SettingsSet { allowlist_mode: b.allowlist_mode })
}

// --- audit --------------------------------------------------------------------------------

fn audit_filter(p: &Principal, q: api::AuditParams) -> Result<AuditQuery, AdminError> {
    let provider = match p.role {
        Role::Operator | Role::Finance => q.provider,
        Role::Provider => {
            if q.provider.is_some() && q.provider != p.provider {
                return Err(forbidden("read another provider's audit trail"));
            }
            p.provider.clone()
        }
    };
    Ok(AuditQuery {
        wallet: q.wallet.as_deref().map(|w| parse_wallet("wallet", w)).transpose()?,
        endpoint: q.endpoint,
        provider,
        from_unix_ms: q.from_unix_ms,
        to_unix_ms: q.to_unix_ms,
        decision: q
            .decision
            .as_deref()
            .map(|d| Decision::parse(d).ok_or_else(|| invalid("decision", "expected accepted or denied")))
            .transpose()?,
        after_seq: q.after_seq,
        limit: q.limit.unwrap_or(100).clamp(1, 1000),
    })
}

async fn audit_query(State(gw): State<Arc<Gateway>>, Auth(p): Auth, uri: Uri) -> AdminResult {
    let q: api::AuditParams = query(&uri)?;
    let filter = audit_filter(&p, q)?;
    let records = gw.ledger.audit().query(&filter).await?;
    let next = if records.len() == filter.limit as usize { records.last().map(|r| r.seq) } else { None };
    ok(api::AuditPage { records: values(records), next_after_seq: next })
}

/// JSON lines, every matching record, streamed page by page (1,000 records a page, at most
/// 1,000 pages): memory stays at one page whatever the size of the trail.
async fn audit_export(State(gw): State<Arc<Gateway>>, Auth(p): Auth, uri: Uri) -> AdminResult {
    let q: api::AuditParams = query(&uri)?;
    let mut filter = audit_filter(&p, q)?;
    filter.limit = 1000;
    // The first page is read here, so that a failing database is an error status, not a cut body.
    let first = gw.ledger.audit().query(&filter).await?;
    let pages = futures_util::stream::unfold((gw, filter, Some(first), 0u32), |(gw, mut filter, page, n)| async move {
        let page = match page {
            Some(p) => p,
            None if n >= 1000 => return None,
            None => match gw.ledger.audit().query(&filter).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(error = %e, "audit export cut short");
                    return None;
                }
            },
        };
        if page.is_empty() {
            return None;
        }
        let mut chunk = String::new();
        for r in &page {
            if let Ok(line) = serde_json::to_string(r) {
                chunk.push_str(&line);
                chunk.push('\n');
            }
        }
        let full = page.len() == 1000;
        filter.after_seq = page.last().map(|r| r.seq);
        let next = if full { None } else { Some(Vec::new()) };
        Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (gw, filter, next, n + 1)))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson"), (header::CACHE_CONTROL, "no-store")],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
}

async fn audit_verify(State(gw): State<Arc<Gateway>>, Auth(p): Auth) -> AdminResult {
    p.require(&[Role::Operator, Role::Finance], "verify the audit chain")?;
    ok(gw.ledger.audit().verify().await?)
}

// --- reconciliation (finance) -----------------------------------------------------------

fn network_of(gw: &Gateway, asked: Option<&str>) -> Result<tollgate_x402::Network, AdminError> {
    match (asked, gw.config.networks.as_slice()) {
        (Some(n), _) => {
            let n = tollgate_x402::Network::parse(n).map_err(|e| invalid("network", e.to_string()))?;
            gw.config.network(n).map(|c| c.network).ok_or_else(|| invalid("network", format!("{n} is not configured")))
        }
        (None, [only]) => Ok(only.network),
        (None, _) => Err(invalid("network", "required: several networks are configured")),
    }
}

fn recon_error(e: ReconcileError) -> AdminError {
    match e {
        ReconcileError::Chain(v) => AdminError(GatewayError::Verify(v)),
        ReconcileError::Ledger(m) => AdminError(GatewayError::from(m)),
        other => invalid("range", other.to_string()),
    }
}

/// Runs a reconciliation (blocks, times, or resume from the cursor), records it, and answers
/// with the report as JSON, or its items as CSV with `?format=csv`.
async fn reconcile(State(gw): State<Arc<Gateway>>, Auth(p): Auth, uri: Uri, body: AdminBody) -> AdminResult {
    p.require(&[Role::Operator, Role::Finance], "run reconciliations")?;
    let f: api::FormatQuery = query(&uri)?;
    let csv = match f.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(invalid("format", format!("`{other}`: expected json or csv"))),
    };
    let b: api::ReconcileBody = body.json()?;
    let network = network_of(&gw, b.network.as_deref())?;
    let mut opts = crate::reconcile::options(&gw.config.reconciliation);
    let recon = crate::reconcile::reconciler(&gw);
    if let Some(c) = b.confirmations {
        opts.confirmations_min = c.max(1);
    }
    if let Some(c) = b.chunk_blocks {
        opts.chunk_blocks = c.clamp(1, 100_000);
    }
    let outcome = match (b.from_block, b.to_block, b.from_time, b.to_time, b.resume) {
        (Some(from), Some(to), None, None, false) => reconcile_range(&recon, network, from, to, opts).await,
        (None, None, Some(from), Some(to), false) => {
            let from = parse_time(&from).map_err(|e| invalid("from_time", e))?;
            let to = parse_time(&to).map_err(|e| invalid("to_time", e))?;
            reconcile_times(&recon, network, from, to, opts).await
        }
        (None, None, None, None, true) => {
            let c = &gw.config.reconciliation;
            match reconcile_resume(&recon, network, c.start_block, c.run_blocks_max, opts).await {
                Ok(Some(o)) => Ok(o),
                Ok(None) => return ok(serde_json::json!({ "run": null, "reason": "no new block since the last run" })),
                Err(e) => Err(e),
            }
        }
        _ => {
            return Err(invalid("range", "give from_block and to_block, or from_time and to_time, or resume: true"));
        }
    }
    .map_err(recon_error)?;
    if csv {
        let text = render_csv(&outcome.report);
        return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/csv"), (header::CACHE_CONTROL, "no-store")], text)
            .into_response());
    }
    ok(render_json(&outcome))
}

async fn recon_runs(State(gw): State<Arc<Gateway>>, Auth(p): Auth, uri: Uri) -> AdminResult {
    p.require(&[Role::Operator, Role::Finance], "read reconciliation runs")?;
    let q: api::RunsQuery = query(&uri)?;
    let network = network_of(&gw, q.network.as_deref())?;
    let asset = gw.config.network(network).map(|n| n.asset).ok_or_else(|| invalid("network", "not configured"))?;
    let runs = gw.ledger.recon().runs(network.chain_id, asset, q.limit.unwrap_or(100).clamp(1, 1000)).await?;
    ok(api::ReconRuns { network: network.caip2(), runs: values(runs) })
}

async fn recon_exceptions(State(gw): State<Arc<Gateway>>, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    p.require(&[Role::Operator, Role::Finance], "read reconciliation exceptions")?;
    let id: i64 = id.parse().map_err(|_| invalid("id", "expected a run id"))?;
    ok(api::ReconExceptions { run_id: id, exceptions: values(gw.ledger.recon().exceptions(id).await?) })
}

async fn recon_notes(State(gw): State<Arc<Gateway>>, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    p.require(&[Role::Operator, Role::Finance], "read reconciliation notes")?;
    let id: i64 = id.parse().map_err(|_| invalid("id", "expected an exception id"))?;
    ok(api::ReconNotes { exception_id: id, notes: values(gw.ledger.recon().notes(id).await?) })
}

/// Appends a resolution note (who = the token) to an exception; notes are never edited.
async fn add_recon_note(
    State(gw): State<Arc<Gateway>>,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: AdminBody,
) -> AdminResult {
    p.require(&[Role::Operator, Role::Finance], "annotate reconciliation exceptions")?;
    let b: api::NoteBody = body.json()?;
    let id: i64 = id.parse().map_err(|_| invalid("id", "expected an exception id"))?;
    if b.why.trim().is_empty() {
        return Err(invalid("why", "must not be empty"));
    }
    let who = p.actor().0;
    let note_id = gw.ledger.recon().add_note(id, &who, &b.why, now(&gw)).await.map_err(|e| match e {
        // A foreign-key failure: no such exception.
        MeteringError::Database { retryable: false, .. } => {
            AdminError(GatewayError::AdminNotFound { what: "reconciliation exception", key: id.to_string() })
        }
        other => AdminError::from(other),
    })?;
    ok(api::NoteAdded { exception_id: id, note_id, who })
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    // Goal: the Authorization scheme is matched case-insensitively (RFC 9110), and anything that
    // is not a bearer credential with a token is refused.
    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for v in ["Bearer tgadm_x", "bearer tgadm_x", "BEARER tgadm_x", "bEaReR\ttgadm_x", "Bearer   tgadm_x  "] {
            assert_eq!(bearer_token(v), Some("tgadm_x"), "{v:?}");
        }
        for v in ["Basic tgadm_x", "Bearer", "Bearer ", "Bearertgadm_x", "Token tgadm_x", ""] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }
}
