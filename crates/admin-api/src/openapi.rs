//! The OpenAPI document, generated: schemas from the types (utoipa), paths from the route
//! table. Served by the gateway at `GET /admin/openapi.json` and printed by
//! `tollgate admin openapi`.

use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use crate::routes::{Answer, ROUTES, Role, Route};
use crate::types::*;

#[derive(OpenApi)]
#[openapi(components(schemas(
    Error,
    ErrorDetail,
    ErrorCode,
    Whoami,
    NewToken,
    CreatedToken,
    TokenList,
    TokenRevoked,
    ProviderBody,
    CredentialBody,
    Provider,
    ProviderList,
    ProviderPut,
    EndpointBody,
    Price,
    Endpoint,
    EndpointList,
    EndpointWrite,
    EndpointPath,
    EndpointEnabled,
    EndpointPatch,
    Deleted,
    PriceVersion,
    PriceHistory,
    SecretBody,
    CredentialList,
    CredentialUploaded,
    CredentialRevoked,
    Revenue,
    LedgerEntries,
    EntryEvents,
    WalletPolicyBody,
    WalletPolicyList,
    WalletPolicySet,
    WalletRevoked,
    Settings,
    SettingsBody,
    SettingsSet,
    AuditPage,
    ReconcileBody,
    ReconRuns,
    ReconExceptions,
    ReconNotes,
    NoteBody,
    NoteAdded,
)))]
struct Schemas;

const DESCRIPTION: &str = "The control plane of a tollgate gateway, on its own listener (`[admin] listen`, default \
127.0.0.1:8403). Every request needs `Authorization: Bearer tgadm_<64 hex>`; roles: operator (everything), provider \
(its own provider's endpoints, credentials, wallet scope, revenue, audit and ledger), finance (read-only ledger, \
audit, revenue and price history). JSON bodies and query strings refuse unknown fields (400 invalid_request naming \
the field); bodies are capped at `[admin] body_bytes_max`. Every answer carries `Cache-Control: no-store`. Roles \
per operation are in `x-roles`. Generated from the route table of `tollgate-admin-api`; see docs/admin-api.md.";

fn error_response(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Invalid",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "NotConfigured",
        503 => "Unavailable",
        _ => return None,
    })
}

/// The component parameter of a path segment `{name}` of `path`.
fn path_parameter(path: &str, name: &str) -> Value {
    let (component, schema, description) = match name {
        "id" if path.starts_with("/admin/providers/") => {
            ("ProviderId", json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}), "provider id")
        }
        "id" if path.starts_with("/admin/tokens/") => {
            ("TokenId", json!({"type": "string", "pattern": "^[0-9a-f]{16}$"}), "token id (from GET /admin/tokens)")
        }
        "id" if path.starts_with("/admin/reconcile/runs/") => {
            ("RunId", json!({"type": "integer", "minimum": 1}), "reconciliation run id")
        }
        "id" => ("ExceptionId", json!({"type": "integer", "minimum": 1}), "reconciliation exception id"),
        "name" => ("CredentialName", json!({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}), "credential name"),
        "version" => ("CredentialVersion", json!({"type": "integer", "minimum": 1}), "credential version"),
        _ => ("Wallet", json!({"type": "string", "pattern": "^0x[0-9a-fA-F]{40}$"}), "wallet address"),
    };
    json!({ component: { "name": name, "in": "path", "required": true, "schema": schema, "description": description } })
}

fn path_names(path: &str) -> impl Iterator<Item = &str> {
    path.split('{').skip(1).filter_map(|s| s.split_once('}').map(|(name, _)| name))
}

fn reference(kind: &str, name: &str) -> Value {
    json!({ "$ref": format!("#/components/{kind}/{name}") })
}

fn operation(route: &Route) -> Value {
    let roles: Vec<&str> = route.roles.iter().map(|r| r.as_str()).collect();
    let roles_text: Vec<&str> = route
        .roles
        .iter()
        .map(|r| if *r == Role::Provider { "provider (own provider only)" } else { r.as_str() })
        .collect();
    let mut description = String::new();
    if !route.notes.is_empty() {
        description.push_str(route.notes);
        description.push_str("\n\n");
    }
    description.push_str(&format!("Roles: {}.\n\nCLI: {}", roles_text.join(", "), route.cli));
    let mut parameters: Vec<Value> = Vec::new();
    for name in path_names(route.path) {
        if let Some((component, _)) = path_parameter(route.path, name).as_object().and_then(|m| m.iter().next()) {
            parameters.push(reference("parameters", component));
        }
    }
    if let Some(query) = route.query {
        parameters.extend(query().iter().filter_map(|p| serde_json::to_value(p).ok()));
    }
    let json_of =
        |schema: Value| json!({ "description": "OK", "content": { "application/json": { "schema": schema } } });
    let ok = match route.answer {
        Answer::Json(name) => json_of(reference("schemas", &name())),
        Answer::Document => json_of(json!({ "type": "object", "description": "This document." })),
        Answer::Verification => json_of(json!({
            "type": "object",
            "description": "The chain's verdict: `intact`, the records checked and the first break, if any. 200 even when broken.",
        })),
        Answer::ReportOrCsv => json!({ "description": "OK", "content": {
            "application/json": { "schema": { "type": "object", "description": "The run, its totals and its items (docs/reconciliation.md)." } },
            "text/csv": { "schema": { "type": "string", "description": "RFC 4180, columns in docs/reconciliation.md" } },
        } }),
        Answer::Text(content_type) => {
            json!({ "description": "OK", "content": { content_type: { "schema": { "type": "string" } } } })
        }
    };
    let mut responses = Map::new();
    responses.insert("200".to_owned(), ok);
    for status in route.errors {
        if let Some(name) = error_response(*status) {
            responses.insert(status.to_string(), reference("responses", name));
        }
    }
    let mut op = json!({
        "operationId": format!("{:?}", route.operation),
        "summary": route.summary,
        "description": description,
        "x-roles": roles,
        "security": [{ "bearer": [] }],
        "responses": responses,
    });
    if let Some(map) = op.as_object_mut() {
        if !parameters.is_empty() {
            map.insert("parameters".to_owned(), Value::Array(parameters));
        }
        if let Some(body) = route.body {
            map.insert(
                "requestBody".to_owned(),
                json!({ "required": true, "content": { "application/json": { "schema": reference("schemas", &body()) } } }),
            );
        }
    }
    op
}

/// The whole document (OpenAPI 3.1).
pub fn document() -> Value {
    let mut paths = Map::new();
    let mut parameters = Map::new();
    for route in ROUTES {
        let item = paths.entry(route.path.to_owned()).or_insert_with(|| json!({}));
        if let Some(item) = item.as_object_mut() {
            item.insert(route.method.as_str().to_ascii_lowercase(), operation(route));
        }
        for name in path_names(route.path) {
            if let Some(p) = path_parameter(route.path, name).as_object() {
                parameters.extend(p.clone());
            }
        }
    }
    let schemas = serde_json::to_value(Schemas::openapi())
        .ok()
        .and_then(|v| v.pointer("/components/schemas").cloned())
        .unwrap_or_else(|| json!({}));
    let error = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": reference("schemas", "Error") } } });
    json!({
        "openapi": "3.1.0",
        "info": { "title": "tollgate admin API", "version": env!("CARGO_PKG_VERSION"), "description": DESCRIPTION },
        "servers": [{ "url": "http://127.0.0.1:8403" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "An admin token: tgadm_ followed by 64 hex digits." }
            },
            "schemas": schemas,
            "parameters": parameters,
            "responses": {
                "Invalid": error("A field of the body, query or path is invalid or unknown; the message names it (`invalid_request`), or the SSRF guard refuses an upstream (`upstream_refused`)"),
                "Unauthorized": error("No bearer token, or an unknown or revoked one (`admin_unauthorized`)"),
                "Forbidden": error("The token's role or provider may not do this (`admin_forbidden`)"),
                "NotFound": error("No such record (`not_found`)"),
                "NotConfigured": error("The vault has no master key, or no relayer key is configured for priced endpoints (`not_configured`)"),
                "Unavailable": error("The database is unavailable; retry (`ledger_unavailable`)"),
            },
        },
    })
}
