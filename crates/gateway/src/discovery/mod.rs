//! Discovery on the public listener: what an agent or a catalog can learn about the priced
//! routes without paying. `GET /discovery/resources` (x402 v2 §8: filters `type`, `payTo`,
//! `scheme`, `network`, `extensions`; `limit` 1–100, default 20, larger values capped at 100;
//! `offset`), `GET /.well-known/x402.json` (every priced route with its offers and its
//! bazaar input/output) and `GET /openapi.json` (`openapi`: an OpenAPI 3.1 document of the
//! priced routes, each operation with its price).
//!
//! Everything is read from the live snapshot (`crate::control`) at each request, so an admin
//! change (a price, an endpoint disabled or deleted) shows on the next call, on every
//! replica once its snapshot reloads. Free routes are not listed: they are not for sale.
//!
//! Must not: read the database or the chain (the snapshot holds all it says), or name a
//! provider's upstream, credential or id: an item is built only from the offers, the
//! route's public fields and the provider's `service` description.

mod openapi;

use std::sync::Arc;

use alloy_primitives::Address;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tollgate_x402::Network;
use tollgate_x402::facilitator::{DiscoveryItem, DiscoveryList, Pagination};

use crate::app::Gateway;
use crate::challenge::public_base;
use crate::control::{RouteEntry, Snapshot};
use crate::error::GatewayError;

pub use openapi::openapi;

/// Page size when `limit` is not given (x402 v2 §8).
pub const LIMIT_DEFAULT: u64 = 20;
/// Largest page: a larger `limit` is served as this one, and `pagination.limit` says so.
pub const LIMIT_MAX: u64 = 100;

/// The routes discovery lists: enabled (the snapshot holds no other), priced, with offers.
pub(crate) fn listed(snapshot: &Snapshot) -> impl Iterator<Item = &Arc<RouteEntry>> {
    snapshot.routes.iter().filter(|e| !e.route.free && !e.offers.is_empty())
}

/// The filters and page of a `/discovery/resources` request.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Query {
    kind: Option<String>,
    pay_to: Option<Address>,
    scheme: Option<String>,
    network: Option<Network>,
    extensions: Vec<String>,
    limit: u64,
    offset: u64,
}

fn bad(param: &'static str, reason: &'static str) -> GatewayError {
    GatewayError::DiscoveryQueryInvalid { param, reason }
}

/// A name of the extension or scheme kind: 1 to 64 of `[A-Za-z0-9_-]`.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Parses the query string. Unknown or repeated parameters are refused, like unknown keys
/// everywhere else: a filter we silently ignored would answer a question not asked.
fn parse_query(raw: Option<&str>) -> Result<Query, GatewayError> {
    let mut q = Query {
        kind: None,
        pay_to: None,
        scheme: None,
        network: None,
        extensions: Vec::new(),
        limit: LIMIT_DEFAULT,
        offset: 0,
    };
    let mut seen: Vec<&'static str> = Vec::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(&v.replace('+', " ")).decode_utf8_lossy().into_owned();
        let name: &'static str = match k {
            "type" => "type",
            "payTo" => "payTo",
            "scheme" => "scheme",
            "network" => "network",
            "extensions" => "extensions",
            "limit" => "limit",
            "offset" => "offset",
            _ => {
                return Err(bad(
                    "query",
                    "unknown parameter (expected type, payTo, scheme, network, extensions, limit, offset)",
                ));
            }
        };
        if seen.contains(&name) {
            return Err(bad(name, "given more than once"));
        }
        seen.push(name);
        match name {
            "type" => {
                if !matches!(v.as_str(), "http" | "mcp") {
                    return Err(bad("type", "expected http or mcp"));
                }
                q.kind = Some(v);
            }
            "payTo" => {
                let hex_ok = v.len() == 42 && v.starts_with("0x");
                q.pay_to = Some(
                    v.parse::<Address>()
                        .ok()
                        .filter(|_| hex_ok)
                        .ok_or_else(|| bad("payTo", "expected 0x and 40 hex digits"))?,
                );
            }
            "scheme" => {
                if !is_name(&v) {
                    return Err(bad("scheme", "expected a scheme name such as exact"));
                }
                q.scheme = Some(v);
            }
            "network" => {
                q.network =
                    Some(Network::parse(&v).map_err(|_| bad("network", "expected a CAIP-2 id such as eip155:8453"))?);
            }
            "extensions" => {
                let names: Vec<String> = v.split(',').map(str::to_owned).collect();
                if names.len() > 8 || !names.iter().all(|n| is_name(n)) {
                    return Err(bad("extensions", "expected up to 8 extension names, separated by commas"));
                }
                q.extensions = names;
            }
            "limit" => {
                let n: u64 = v.parse().map_err(|_| bad("limit", "expected a whole number from 1 to 100"))?;
                if n == 0 {
                    return Err(bad("limit", "expected a whole number from 1 to 100"));
                }
                q.limit = n.min(LIMIT_MAX);
            }
            _ => {
                q.offset = v.parse().map_err(|_| bad("offset", "expected a whole number"))?;
            }
        }
    }
    Ok(q)
}

/// The extensions a listed route declares.
fn declared_extensions(entry: &RouteEntry) -> Vec<&'static str> {
    let mut names = vec!["payment-identifier"];
    if !entry.bazaar.is_empty() {
        names.push(crate::bazaar::BAZAAR);
    }
    names
}

fn matches(q: &Query, entry: &RouteEntry) -> bool {
    let offers = &entry.offers;
    q.kind.as_deref().is_none_or(|k| k == "http")
        && q.pay_to.is_none_or(|a| offers.iter().any(|o| o.pay_to == a))
        && q.scheme.as_deref().is_none_or(|s| offers.iter().any(|o| o.scheme == s))
        && q.network.is_none_or(|n| offers.iter().any(|o| o.network == n))
        && q.extensions.iter().all(|x| declared_extensions(entry).contains(&x.as_str()))
}

/// The route's URL as agents call it, its parameters as `{name}` (a URI template), a
/// trailing `*` kept.
pub(crate) fn resource_url(base: &str, entry: &RouteEntry) -> String {
    format!("{base}{}", entry.route.pattern)
}

/// The declaration a listing shows: the route's primary method's (GET when it has one).
pub(crate) fn primary_declaration(entry: &RouteEntry) -> Option<Arc<Value>> {
    crate::bazaar::primary_method(&entry.route).and_then(|m| entry.bazaar_for(m))
}

/// The public description of a route: what its 402 says besides the offers.
fn description(entry: &RouteEntry) -> Map<String, Value> {
    let route = &entry.route;
    let mut m = Map::new();
    m.insert("description".into(), route.description.clone().into());
    m.insert("mimeType".into(), route.mime_type.clone().into());
    m.insert("methods".into(), route.methods.iter().cloned().collect::<Vec<_>>().into());
    m.insert("settlement".into(), route.settlement.as_str().into());
    let service = &entry.provider.service;
    if let Some(n) = &service.name {
        m.insert("serviceName".into(), n.clone().into());
    }
    if !service.tags.is_empty() {
        m.insert("tags".into(), service.tags.clone().into());
    }
    if let Some(i) = &service.icon_url {
        m.insert("iconUrl".into(), i.clone().into());
    }
    m
}

fn item(base: &str, entry: &RouteEntry) -> DiscoveryItem {
    let mut metadata = description(entry);
    if let Some(d) = primary_declaration(entry) {
        metadata.insert("extensions".into(), json!({ crate::bazaar::BAZAAR: *d }));
    }
    DiscoveryItem {
        resource: resource_url(base, entry),
        kind: "http".to_owned(),
        x402_version: 2,
        accepts: entry.offers.clone(),
        last_updated: tollgate_recon::rfc3339_utc(entry.updated_unix_s),
        metadata: Some(Value::Object(metadata)),
    }
}

/// A public, read-only JSON answer: any origin may read it (catalogs run in browsers), and a
/// cache must ask again, so an admin change is seen on the next call.
pub(crate) fn json_answer(body: &Value) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    (StatusCode::OK, headers, axum::Json(body)).into_response()
}

/// `GET /discovery/resources`: the priced routes, filtered and paged, in match order.
pub async fn resources(State(gw): State<Arc<Gateway>>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    let q = match parse_query(raw.as_deref()) {
        Ok(q) => q,
        Err(e) => return e.rescue(None),
    };
    let snapshot = gw.live.get();
    let base = public_base(&gw.config.server, &headers);
    let selected: Vec<&Arc<RouteEntry>> = listed(&snapshot).filter(|e| matches(&q, e)).collect();
    let total = selected.len() as u64;
    let items = selected
        .into_iter()
        .skip(usize::try_from(q.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(q.limit).unwrap_or(usize::MAX))
        .map(|e| item(&base, e))
        .collect();
    let list =
        DiscoveryList { x402_version: 2, items, pagination: Pagination { limit: q.limit, offset: q.offset, total } };
    match serde_json::to_value(&list) {
        Ok(v) => json_answer(&v),
        Err(e) => GatewayError::Internal(format!("discovery list: {e}")).rescue(None),
    }
}

/// `GET /.well-known/x402.json`: the origin's manifest, every priced route with its offers
/// and how to call it (the live 402 stays authoritative).
pub async fn well_known(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let snapshot = gw.live.get();
    let base = public_base(&gw.config.server, &headers);
    let items: Vec<Value> = listed(&snapshot)
        .map(|e| {
            let mut m = Map::new();
            m.insert("resource".into(), resource_url(&base, e).into());
            m.insert("type".into(), "http".into());
            m.insert("x402Version".into(), 2.into());
            m.insert("accepts".into(), serde_json::to_value(&e.offers).unwrap_or(Value::Null));
            m.insert("lastUpdated".into(), tollgate_recon::rfc3339_utc(e.updated_unix_s).into());
            if let Some(d) = primary_declaration(e) {
                for key in ["input", "output"] {
                    if let Some(v) = d.pointer(&format!("/info/{key}")) {
                        m.insert(key.into(), v.clone());
                    }
                }
                if let Some(t) = d.get("routeTemplate") {
                    m.insert("routeTemplate".into(), t.clone());
                }
            }
            m.extend(description(e));
            Value::Object(m)
        })
        .collect();
    json_answer(&json!({
        "x402Version": 2,
        "discovery": format!("{base}/discovery/resources"),
        "openapi": format!("{base}/openapi.json"),
        "items": items,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: every parameter is parsed and checked; a large limit is capped, a zero one, an
    // unknown or repeated parameter, or a malformed value is refused naming the parameter.
    #[test]
    fn query_parsing() {
        let q = parse_query(Some(
            "type=http&payTo=0x00000000000000000000000000000000000000aa&scheme=exact&network=eip155%3A8453&extensions=bazaar,payment-identifier&limit=500&offset=3",
        ))
        .unwrap();
        assert_eq!(q.limit, LIMIT_MAX);
        assert_eq!(q.offset, 3);
        assert_eq!(q.network, Some(Network::new(8453)));
        assert_eq!(q.extensions, vec!["bazaar".to_owned(), "payment-identifier".to_owned()]);
        assert_eq!(parse_query(None).unwrap().limit, LIMIT_DEFAULT);
        for (raw, param) in [
            ("limit=0", "limit"),
            ("limit=-1", "limit"),
            ("limit=ten", "limit"),
            ("offset=x", "offset"),
            ("type=ftp", "type"),
            ("payTo=0x12", "payTo"),
            ("network=mars", "network"),
            ("scheme=ex%20act", "scheme"),
            ("extensions=", "extensions"),
            ("limit=1&limit=2", "limit"),
            ("metadata[provider]=x", "query"),
        ] {
            match parse_query(Some(raw)) {
                Err(GatewayError::DiscoveryQueryInvalid { param: p, .. }) => assert_eq!(p, param, "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }
}
