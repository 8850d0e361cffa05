//! Handlers of tokens, providers, endpoints, credentials, wallet policies and settings: each
//! decodes its path, query and body on the control plane's demand, calls
//! `tollgate_control::admin`, and answers 200 with the contract's type.
//!
//! Must not: check a role or scope, or validate an input itself (the control plane does).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::Uri;
use tollgate_control::admin::{catalog, credentials, tokens, wallets};

use super::auth::{AdminBody, Auth, query};
use super::{AdminResult, ok};
use crate::app::Gateway;

type Gw = State<Arc<Gateway>>;

pub(super) async fn list_tokens(State(gw): Gw, Auth(p): Auth) -> AdminResult {
    ok(tokens::list(&*gw, &p).await?)
}

pub(super) async fn create_token(State(gw): Gw, Auth(p): Auth, body: AdminBody) -> AdminResult {
    ok(tokens::create(&*gw, &p, || body.json()).await?)
}

pub(super) async fn revoke_token(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    ok(tokens::revoke(&*gw, &p, id).await?)
}

pub(super) async fn list_providers(State(gw): Gw, Auth(p): Auth, uri: Uri) -> AdminResult {
    ok(catalog::list_providers(&*gw, &p, || query(&uri)).await?)
}

pub(super) async fn delete_provider(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    ok(catalog::delete_provider(&*gw, &p, id).await?)
}

pub(super) async fn put_provider(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>, body: AdminBody) -> AdminResult {
    ok(catalog::put_provider(&*gw, &p, id, || body.json()).await?)
}

pub(super) async fn list_endpoints(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>, uri: Uri) -> AdminResult {
    ok(catalog::list_endpoints(&*gw, &p, &id, || query(&uri)).await?)
}

pub(super) async fn patch_endpoint(
    State(gw): Gw,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: AdminBody,
) -> AdminResult {
    ok(catalog::patch_endpoint(&*gw, &p, id, || body.json()).await?)
}

pub(super) async fn delete_endpoint(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>, uri: Uri) -> AdminResult {
    ok(catalog::delete_endpoint(&*gw, &p, id, || query(&uri)).await?)
}

pub(super) async fn put_endpoint(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>, body: AdminBody) -> AdminResult {
    ok(catalog::put_endpoint(&*gw, &p, id, || body.json()).await?)
}

pub(super) async fn disable_endpoint(
    State(gw): Gw,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: AdminBody,
) -> AdminResult {
    ok(catalog::set_enabled(&*gw, &p, id, false, || body.json()).await?)
}

pub(super) async fn enable_endpoint(
    State(gw): Gw,
    Auth(p): Auth,
    Path(id): Path<String>,
    body: AdminBody,
) -> AdminResult {
    ok(catalog::set_enabled(&*gw, &p, id, true, || body.json()).await?)
}

pub(super) async fn endpoint_prices(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>, uri: Uri) -> AdminResult {
    ok(catalog::prices(&*gw, &p, &id, || query(&uri)).await?)
}

pub(super) async fn list_credentials(State(gw): Gw, Auth(p): Auth, Path(id): Path<String>) -> AdminResult {
    ok(credentials::list(&*gw, &p, &id).await?)
}

pub(super) async fn upload_credential(
    State(gw): Gw,
    Auth(p): Auth,
    Path((id, name)): Path<(String, String)>,
    body: AdminBody,
) -> AdminResult {
    ok(credentials::upload(&*gw, &p, id, name, || body.json()).await?)
}

pub(super) async fn revoke_credential(
    State(gw): Gw,
    Auth(p): Auth,
    Path((id, name, version)): Path<(String, String, String)>,
) -> AdminResult {
    ok(credentials::revoke(&*gw, &p, id, name, &version).await?)
}

pub(super) async fn list_wallets(State(gw): Gw, Auth(p): Auth, uri: Uri) -> AdminResult {
    ok(wallets::list(&*gw, &p, || query(&uri)).await?)
}

pub(super) async fn put_wallet(
    State(gw): Gw,
    Auth(p): Auth,
    Path(wallet): Path<String>,
    uri: Uri,
    body: AdminBody,
) -> AdminResult {
    ok(wallets::put(&*gw, &p, &wallet, || query(&uri), || body.json()).await?)
}

pub(super) async fn revoke_wallet(State(gw): Gw, Auth(p): Auth, Path(wallet): Path<String>, uri: Uri) -> AdminResult {
    ok(wallets::set_revoked(&*gw, &p, &wallet, true, || query(&uri)).await?)
}

pub(super) async fn reinstate_wallet(
    State(gw): Gw,
    Auth(p): Auth,
    Path(wallet): Path<String>,
    uri: Uri,
) -> AdminResult {
    ok(wallets::set_revoked(&*gw, &p, &wallet, false, || query(&uri)).await?)
}

pub(super) async fn get_settings(State(gw): Gw, Auth(p): Auth) -> AdminResult {
    ok(wallets::settings(&*gw, &p).await?)
}

pub(super) async fn put_settings(State(gw): Gw, Auth(p): Auth, body: AdminBody) -> AdminResult {
    ok(wallets::put_settings(&*gw, &p, || body.json()).await?)
}
