//! The admin API: its own listener (loopback by default), bearer tokens with roles, and every
//! control-plane operation. Documented in `docs/admin-api.md`; `GET /admin/openapi.json`
//! serves the OpenAPI document.
//!
//! Roles: **operator** (everything), **provider** (only its own endpoints, credentials,
//! wallet policies in its scope, revenue and audit), **finance** (read-only ledger, audit,
//! revenue and reconciliation). Tokens are 256-bit random values shown once; the database
//! keeps their SHA-256, compared in constant time; revocation is immediate.
//!
//! Every handler is decode → call the control plane (`tollgate_control::admin`, which holds
//! who may do what, the input rules and the writes) → encode. Every change is one database
//! transaction, bumps the change counter, and reloads this process's snapshot before
//! answering (`host`), so it applies on the next request here and, through the watcher,
//! within about a poll interval on every replica.
//!
//! Modules: `auth` (the bearer token into a `Principal`, body and query decoders), `host`
//! (what only the gateway judges for the control plane), `catalog` (tokens, providers,
//! endpoints, credentials, wallet policies, settings), `audit` (revenue, ledger entries,
//! the audit trail), `events` (one entry's event history), `recon` (reconciliation, the
//! finance endpoints). The web console's static files (`crate::console`) are served by the
//! same router under `/console/`; they call these routes like any client.
//!
//! Must not: hold a rule of the control plane, return a credential (uploads are write-only),
//! a token after its creation, or anything of another provider to a provider token; accept
//! unknown fields; turn an error into HTTP anywhere but `GatewayError::rescue`.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use serde::Serialize;
use tollgate_admin_api::{Operation, ROUTES, Route};
use tollgate_control::ControlError;
use tollgate_metering::{Actor, MeteringError, Role};

use crate::app::Gateway;
use crate::error::GatewayError;

mod audit;
mod auth;
mod catalog;
mod events;
mod host;
mod recon;

pub use auth::{AdminBody, Auth};
pub use tollgate_control::admin::tokens::{TOKEN_PREFIX, new_token};

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

impl From<ControlError> for AdminError {
    fn from(e: ControlError) -> Self {
        AdminError(match e {
            ControlError::Forbidden { action } => GatewayError::AdminForbidden { action },
            ControlError::Invalid { field, reason } => GatewayError::AdminInvalid { field, reason },
            ControlError::NotFound { what, key } => GatewayError::AdminNotFound { what, key },
            ControlError::Unavailable { what } => GatewayError::AdminUnavailable(what),
            ControlError::Store(m) => GatewayError::from(m),
            ControlError::Vault(v) => GatewayError::Internal(v.to_string()),
        })
    }
}

impl From<MeteringError> for AdminError {
    fn from(e: MeteringError) -> Self {
        AdminError::from(ControlError::from(e))
    }
}

type AdminResult = Result<Response, AdminError>;

fn ok<T: Serialize>(value: T) -> AdminResult {
    Ok((StatusCode::OK, [(header::CACHE_CONTROL, "no-store")], axum::Json(value)).into_response())
}

/// Creates a token for `role` without a caller (tests, and the first operator token):
/// shown once in the answer, stored as its hash.
pub async fn create_token_record(
    gw: &Gateway,
    role: Role,
    provider: Option<&str>,
    label: &str,
    actor: &Actor,
) -> Result<(tollgate_metering::AdminToken, String), AdminError> {
    Ok(tollgate_control::admin::tokens::create_record(gw, role, provider, label, actor).await?)
}

/// The admin router (mounted on its own listener by `serve_admin`): every route of the
/// contract's table, each with its handler.
pub fn router(gw: Arc<Gateway>) -> Router {
    ROUTES
        .iter()
        .fold(Router::new(), |r, route| r.route(route.path, handler(route)))
        .merge(crate::console::router())
        .fallback(not_found)
        .with_state(gw)
}

/// The handler of a route: an exhaustive match, so an operation without a handler does not
/// compile.
fn handler(route: &Route) -> MethodRouter<Arc<Gateway>> {
    let f = match route.method {
        tollgate_admin_api::Method::Get => MethodFilter::GET,
        tollgate_admin_api::Method::Put => MethodFilter::PUT,
        tollgate_admin_api::Method::Post => MethodFilter::POST,
        tollgate_admin_api::Method::Patch => MethodFilter::PATCH,
        tollgate_admin_api::Method::Delete => MethodFilter::DELETE,
    };
    match route.operation {
        Operation::Openapi => on(f, openapi),
        Operation::Metrics => on(f, metrics),
        Operation::Whoami => on(f, whoami),
        Operation::ListTokens => on(f, catalog::list_tokens),
        Operation::CreateToken => on(f, catalog::create_token),
        Operation::RevokeToken => on(f, catalog::revoke_token),
        Operation::ListProviders => on(f, catalog::list_providers),
        Operation::PutProvider => on(f, catalog::put_provider),
        Operation::DeleteProvider => on(f, catalog::delete_provider),
        Operation::ListEndpoints => on(f, catalog::list_endpoints),
        Operation::PutEndpoint => on(f, catalog::put_endpoint),
        Operation::PatchEndpoint => on(f, catalog::patch_endpoint),
        Operation::DeleteEndpoint => on(f, catalog::delete_endpoint),
        Operation::DisableEndpoint => on(f, catalog::disable_endpoint),
        Operation::EnableEndpoint => on(f, catalog::enable_endpoint),
        Operation::EndpointPrices => on(f, catalog::endpoint_prices),
        Operation::ListCredentials => on(f, catalog::list_credentials),
        Operation::UploadCredential => on(f, catalog::upload_credential),
        Operation::RevokeCredential => on(f, catalog::revoke_credential),
        Operation::Revenue => on(f, audit::revenue),
        Operation::ListWallets => on(f, catalog::list_wallets),
        Operation::PutWallet => on(f, catalog::put_wallet),
        Operation::RevokeWallet => on(f, catalog::revoke_wallet),
        Operation::ReinstateWallet => on(f, catalog::reinstate_wallet),
        Operation::GetSettings => on(f, catalog::get_settings),
        Operation::PutSettings => on(f, catalog::put_settings),
        Operation::AuditQuery => on(f, audit::audit_query),
        Operation::AuditExport => on(f, audit::audit_export),
        Operation::AuditVerify => on(f, audit::audit_verify),
        Operation::LedgerEntries => on(f, audit::ledger_entries),
        Operation::EntryEvents => on(f, events::entry_events),
        Operation::Reconcile => on(f, recon::reconcile),
        Operation::ReconRuns => on(f, recon::recon_runs),
        Operation::ReconExceptions => on(f, recon::recon_exceptions),
        Operation::ReconNotes => on(f, recon::recon_notes),
        Operation::AddReconNote => on(f, recon::add_recon_note),
    }
}

async fn not_found() -> Response {
    GatewayError::AdminNotFound { what: "admin route", key: "requested".to_owned() }.rescue(None)
}

/// Prometheus metrics (text format). Operators and finance only: the metrics name every
/// route and show the relayer's balance and the revenue flow, which a provider token must not
/// see for other providers. Prometheus sends the token with `authorization.credentials_file`.
async fn metrics(axum::extract::State(gw): axum::extract::State<Arc<Gateway>>, Auth(p): Auth) -> AdminResult {
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
    ok(tollgate_control::admin::tokens::whoami(&p))
}
