//! `GET /openapi.json`: an OpenAPI 3.1 document of the priced routes, generated from the live
//! snapshot, for agents that plan calls from a description. Each operation carries its price
//! (`x-x402`: the offers as the 402 makes them, each amount also in token units) beside the
//! route's parameters, body and response from its `discovery` configuration.
//!
//! A `{name}` segment is an OpenAPI path parameter; a trailing `*` (any remaining segments)
//! has no OpenAPI spelling, so the path is written as configured with `x-tollgate-wildcard`.
//! Must not: name a provider's upstream, credential or id (operation ids use the route's
//! pattern and method).

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value, json};

use crate::app::Gateway;
use crate::challenge::public_base;
use crate::control::RouteEntry;

use super::{json_answer, listed};

/// The price list of a route's offers, each amount also in the network's token units.
fn prices(gw: &Gateway, entry: &RouteEntry) -> Vec<Value> {
    entry
        .offers
        .iter()
        .map(|o| {
            let mut p = json!({
                "network": o.network.caip2(),
                "asset": format!("{:#x}", o.asset),
                "amount": o.amount.to_string(),
                "payTo": format!("{:#x}", o.pay_to),
            });
            if let (Some(n), Some(obj)) = (gw.config.network(o.network), p.as_object_mut()) {
                obj.insert("display".into(), n.units().label(o.amount.0).into());
            }
            p
        })
        .collect()
}

/// The media type of a bazaar `bodyType`.
fn body_media_type(body_type: &str) -> &'static str {
    match body_type {
        "form-data" => "multipart/form-data",
        "text" => "text/plain",
        _ => "application/json",
    }
}

/// One operation of `entry` for `method`.
fn operation(gw: &Gateway, entry: &RouteEntry, method: &str) -> Value {
    let route = &entry.route;
    let d = &route.discovery;
    let mut parameters: Vec<Value> = route
        .pattern
        .param_names()
        .map(|p| json!({ "name": p, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect();
    if let Some(props) = d.query_schema.as_ref().and_then(|s| s.get("properties")).and_then(Value::as_object) {
        let required: Vec<&str> = d
            .query_schema
            .as_ref()
            .and_then(|s| s.get("required"))
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, schema) in props {
            let mut p =
                json!({ "name": name, "in": "query", "required": required.contains(&name.as_str()), "schema": schema });
            if let (Some(ex), Some(obj)) = (d.query_example.as_ref().and_then(|q| q.get(name)), p.as_object_mut()) {
                obj.insert("example".into(), ex.clone());
            }
            parameters.push(p);
        }
    }
    let mut op = Map::new();
    op.insert("operationId".into(), format!("{} {}", method, route.pattern).into());
    op.insert("summary".into(), route.description.clone().into());
    if !entry.provider.service.tags.is_empty() {
        op.insert("tags".into(), entry.provider.service.tags.clone().into());
    }
    op.insert("parameters".into(), parameters.into());
    if matches!(method, "POST" | "PUT" | "PATCH") {
        let mut media = Map::new();
        media.insert("schema".into(), d.body_schema.clone().unwrap_or_else(|| json!({})));
        if let Some(ex) = &d.body_example {
            media.insert("example".into(), ex.clone());
        }
        op.insert(
            "requestBody".into(),
            json!({ "required": true, "content": { body_media_type(&d.body_type): media } }),
        );
    }
    let mut ok = Map::new();
    ok.insert("schema".into(), d.output_schema.clone().unwrap_or_else(|| json!({})));
    if let Some(ex) = &d.output_example {
        ok.insert("example".into(), ex.clone());
    }
    op.insert(
        "responses".into(),
        json!({
            "200": { "description": "The resource, paid; the PAYMENT-RESPONSE header carries the settlement receipt.",
                     "content": { route.mime_type.clone(): ok } },
            "402": { "description": "Payment required: the PAYMENT-REQUIRED header (x402 v2) carries the offers." }
        }),
    );
    op.insert(
        "x-x402".into(),
        json!({
            "accepts": entry.offers,
            "prices": prices(gw, entry),
            "settlement": route.settlement.as_str(),
        }),
    );
    if route.pattern.is_wildcard() {
        op.insert("x-tollgate-wildcard".into(), true.into());
    }
    Value::Object(op)
}

/// `GET /openapi.json`.
pub async fn openapi(State(gw): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    let snapshot = gw.live.get();
    let base = public_base(&gw.config.server, &headers);
    let mut paths = Map::new();
    for entry in listed(&snapshot) {
        let mut item = Map::new();
        for method in &entry.route.methods {
            item.insert(method.to_ascii_lowercase(), operation(&gw, entry, method));
        }
        paths.insert(entry.route.pattern.to_string(), Value::Object(item));
    }
    json_answer(&json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Priced routes",
            "version": snapshot.version.to_string(),
            "description": "Every route here is paid per call with x402 (see x-x402 on each operation).",
        },
        "servers": [{ "url": base }],
        "paths": paths,
    }))
}
