//! The x402 `bazaar` extension a priced route declares in its 402s, and the resource
//! description (`serviceName`, `tags`, `iconUrl`) that goes with it: built from the route's
//! and its provider's configuration, once per route and method when the snapshot is built
//! (`crate::control`), so a 402 only adds the request's path parameters.
//!
//! The declaration follows the extension's specification: `info.input` (`type: "http"`, the
//! method, query parameters for GET/HEAD/DELETE, `bodyType` and `body` for POST/PUT/PATCH),
//! `info.output` when the route gives an example, `schema` (JSON Schema draft 2020-12
//! validating `info`, with the route's own query and body schemas inside), and
//! `routeTemplate` (`/weather/:city`) for a pattern with parameters.
//!
//! Must not: read anything but the typed configuration (no IO, no snapshot, no request),
//! or name a provider's upstream or credential: only the fields listed above leave here.

use serde_json::{Map, Value, json};
use tollgate_x402::v2;

use crate::config::{ProviderConfig, RouteConfig};

/// The extension's name in `extensions`.
pub const BAZAAR: &str = "bazaar";

/// Methods whose input is query parameters, and those whose input is a body (the extension
/// knows no others: an OPTIONS route declares nothing).
const QUERY_METHODS: [&str; 3] = ["GET", "HEAD", "DELETE"];
const BODY_METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];

/// The declaration of `route` for `method`, without path parameter values; `None` for a
/// method the extension cannot describe.
pub fn declaration(route: &RouteConfig, method: &str) -> Option<Value> {
    let d = &route.discovery;
    let is_body = BODY_METHODS.contains(&method);
    if !is_body && !QUERY_METHODS.contains(&method) {
        return None;
    }
    let mut input = Map::new();
    input.insert("type".into(), "http".into());
    input.insert("method".into(), method.into());
    if let Some(q) = &d.query_example {
        input.insert("queryParams".into(), q.clone());
    }
    let mut input_props = Map::new();
    input_props.insert("type".into(), json!({ "type": "string", "const": "http" }));
    let methods: &[&str] = if is_body { &BODY_METHODS } else { &QUERY_METHODS };
    input_props.insert("method".into(), json!({ "type": "string", "enum": methods }));
    let query_schema = d
        .query_schema
        .clone()
        .unwrap_or_else(|| json!({ "type": "object", "additionalProperties": { "type": "string" } }));
    input_props.insert("queryParams".into(), query_schema);
    input_props.insert("headers".into(), json!({ "type": "object", "additionalProperties": { "type": "string" } }));
    let mut required = vec!["type", "method"];
    if is_body {
        input.insert("bodyType".into(), d.body_type.clone().into());
        let empty = if d.body_type == "text" { json!("") } else { json!({}) };
        input.insert("body".into(), d.body_example.clone().unwrap_or(empty));
        input_props.insert("bodyType".into(), json!({ "type": "string", "enum": ["json", "form-data", "text"] }));
        input_props.insert("body".into(), d.body_schema.clone().unwrap_or_else(|| json!({})));
        required.extend(["bodyType", "body"]);
    }
    let params: Vec<&str> = route.pattern.param_names().collect();
    if !params.is_empty() {
        let props: Map<String, Value> = params.iter().map(|p| ((*p).to_owned(), json!({ "type": "string" }))).collect();
        input_props.insert(
            "pathParams".into(),
            json!({ "type": "object", "properties": props, "required": params, "additionalProperties": false }),
        );
    }
    let mut info = Map::new();
    info.insert("input".into(), Value::Object(input));
    let output_schema = d.output_schema.clone().unwrap_or_else(|| json!({}));
    if let Some(example) = &d.output_example {
        info.insert("output".into(), json!({ "type": output_type(&route.mime_type), "example": example }));
    }
    let mut ext = Map::new();
    ext.insert("info".into(), Value::Object(info));
    ext.insert(
        "schema".into(),
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {
                "input": {
                    "type": "object",
                    "properties": input_props,
                    "required": required,
                    "additionalProperties": false
                },
                "output": {
                    "type": "object",
                    "properties": { "type": { "type": "string" }, "example": output_schema },
                    "required": ["type"]
                }
            },
            "required": ["input"]
        }),
    );
    if let Some(template) = route.pattern.route_template() {
        ext.insert("routeTemplate".into(), template.into());
    }
    Some(Value::Object(ext))
}

/// The declaration with this request's path parameter values (`info.input.pathParams`).
pub fn with_path_params(declaration: &Value, params: &[(String, String)]) -> Value {
    let mut out = declaration.clone();
    if params.is_empty() {
        return out;
    }
    let values: Map<String, Value> = params.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    if let Some(input) = out.pointer_mut("/info/input").and_then(Value::as_object_mut) {
        input.insert("pathParams".into(), Value::Object(values));
    }
    out
}

/// The bazaar output `type` for a response media type.
fn output_type(mime_type: &str) -> &'static str {
    if mime_type.contains("json") { "json" } else { "text" }
}

/// What the payment is for: the route's URL, description and media type, with the
/// provider's service name, tags and icon.
pub fn resource_info(provider: &ProviderConfig, route: &RouteConfig, url: String) -> v2::ResourceInfo {
    v2::ResourceInfo {
        url,
        description: Some(route.description.clone()),
        mime_type: Some(route.mime_type.clone()),
        service_name: provider.service.name.clone(),
        tags: provider.service.tags.clone(),
        icon_url: provider.service.icon_url.clone(),
    }
}

/// The method a listing describes a route by: GET when it has it, else the first the
/// extension can describe (`None`: only OPTIONS).
pub fn primary_method(route: &RouteConfig) -> Option<&str> {
    let ordered = QUERY_METHODS.iter().chain(BODY_METHODS.iter());
    ordered.copied().find(|m| route.methods.contains(*m))
}
