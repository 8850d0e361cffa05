//! Phase 1: the route, by path then method, with the credential that will serve it. Builds
//! the call's context ([`PaidCall`]).
//!
//! Must not: quote, charge or forward anything (an unknown path is 404, never 402).

use axum::body::Body;
use axum::http::request::Parts;

use super::call::{PaidCall, Served, Trail};
use crate::app::Gateway;
use crate::challenge::Challenge;
use crate::config::SecretSource;
use crate::control::{RouteEntry, Snapshot};
use crate::error::GatewayError;
use crate::routes::{check_request_path, check_target_length};

/// Phase 1: the route, by path then method. Unknown paths are 404, never 402.
pub(super) fn match_route(gw: &Gateway, parts: Parts, body: Body) -> Result<PaidCall, GatewayError> {
    let path = parts.uri.path();
    check_target_length(path, parts.uri.query())
        .map_err(|t| GatewayError::UriTooLong { part: t.part, limit_bytes: t.limit_bytes })?;
    check_request_path(path).map_err(|reason| GatewayError::PathRefused { reason })?;
    let snapshot = gw.live.get();
    let mut method_mismatch = false;
    for entry in &snapshot.routes {
        let route = &entry.route;
        if !route.pattern.matches(path) {
            continue;
        }
        if !route.methods.contains(parts.method.as_str()) {
            method_mismatch = true;
            continue;
        }
        let resource =
            crate::bazaar::resource_info(&entry.provider, route, format!("{}{}", public_base(gw, &parts), path));
        let bazaar = entry.bazaar_for(parts.method.as_str());
        // Path parameters only matter to a 402's declaration; most routes have none.
        let path_params = if bazaar.is_some() { route.pattern.params(path) } else { Vec::new() };
        let credential = served_credential(&snapshot, entry)?;
        return Ok(PaidCall {
            endpoint: entry.clone(),
            credential,
            challenge: Challenge {
                offers: entry.offers.clone(),
                resource,
                payment_id_required: route.payment_id_required,
                bazaar,
                path_params,
            },
            parts,
            body,
            payment: None,
            entry_id: None,
            payment_id: None,
            trail: Trail::default(),
        });
    }
    Err(if method_mismatch { GatewayError::MethodNotAllowed } else { GatewayError::RouteNotFound })
}

/// The provider's credential as of this request: a file/environment secret, or the vault's
/// latest unrevoked version. A vault credential with no usable version refuses the call
/// before anything is quoted or charged.
fn served_credential(snapshot: &Snapshot, entry: &RouteEntry) -> Result<Option<Served>, GatewayError> {
    let Some(c) = &entry.provider.credential else { return Ok(None) };
    Ok(Some(match &c.secret {
        SecretSource::Static { secret, source } => {
            Served { injection: c.injection.clone(), secret: secret.clone(), id: source.clone(), version: None }
        }
        SecretSource::Vault { name } => {
            let live = snapshot
                .secrets
                .get(&(entry.provider.id.clone(), name.clone()))
                .ok_or(GatewayError::CredentialUnavailable)?;
            Served {
                injection: c.injection.clone(),
                secret: live.secret.clone(),
                id: format!("vault:{name}"),
                version: Some(live.version),
            }
        }
    }))
}

/// The base of resource URLs (`crate::challenge::public_base`).
pub(super) fn public_base(gw: &Gateway, parts: &Parts) -> String {
    crate::challenge::public_base(&gw.config.server, &parts.headers)
}
