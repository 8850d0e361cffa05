//! The 402 challenge and the settlement receipt headers.
//!
//! One response serves both protocol versions: the v2 `PAYMENT-REQUIRED` header and a
//! v1-shaped JSON body (`accepts` with `maxAmountRequired`, `resource`, `description`,
//! `mimeType`). Offers on chains without a v1 name appear only in the header. The v2
//! challenge carries the `payment-identifier` extension and the route's `bazaar` declaration
//! (`crate::bazaar`) with this request's path parameters; the resource carries the
//! provider's `serviceName`, `tags` and `iconUrl`.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tollgate_x402::facilitator::SettleResponse;
use tollgate_x402::{encode_header, v1, v2};

use crate::config::ServerConfig;

/// The offers for one request, with the resource they sell.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// Our offers (verification is always against these).
    pub offers: Vec<v2::PaymentRequirements>,
    /// The resource.
    pub resource: v2::ResourceInfo,
    /// Whether the route requires the x402 `payment-identifier` extension (always offered).
    pub payment_id_required: bool,
    /// The route's `bazaar` declaration for this method (none for OPTIONS).
    pub bazaar: Option<Arc<serde_json::Value>>,
    /// This request's path parameter values, added to the declaration when a 402 is built.
    pub path_params: Vec<(String, String)>,
}

const EXPOSE: &str = "PAYMENT-REQUIRED, PAYMENT-RESPONSE, X-PAYMENT-RESPONSE";

impl Challenge {
    /// The v1 offers (those on chains the v1 clients know).
    pub fn v1_accepts(&self) -> Vec<v1::PaymentRequirements> {
        self.offers.iter().filter_map(|o| v1::PaymentRequirements::from_v2(o, &self.resource).ok()).collect()
    }

    /// The extensions this route offers: `payment-identifier` (x402 extension spec: `info`
    /// says whether it is required, `schema` validates the `info` a client echoes with its id)
    /// and `bazaar` (how to call the route, for catalogs).
    pub fn extensions(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert(
            "payment-identifier".to_owned(),
            json!({
                "info": { "required": self.payment_id_required },
                "schema": {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {
                        "required": { "type": "boolean" },
                        "id": { "type": "string", "minLength": 16, "maxLength": 128, "pattern": "^[a-zA-Z0-9_-]+$" }
                    },
                    "required": ["required"]
                }
            }),
        );
        if let Some(declared) = &self.bazaar {
            m.insert(crate::bazaar::BAZAAR.to_owned(), crate::bazaar::with_path_params(declared, &self.path_params));
        }
        m
    }

    /// A 402 with both versions' challenge; `code` says why.
    pub fn response(&self, code: &str, message: &str, mut headers: HeaderMap) -> Response {
        let v2_body = v2::PaymentRequired {
            x402_version: 2,
            error: Some(code.to_owned()),
            resource: self.resource.clone(),
            accepts: self.offers.clone(),
            extensions: Some(self.extensions()),
        };
        if let Some(v) = encode_header(&v2_body).ok().and_then(|s| HeaderValue::from_str(&s).ok()) {
            headers.insert(HeaderName::from_static("payment-required"), v);
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE));
        let body = json!({
            "x402Version": 1,
            "error": code,
            "message": message,
            "accepts": self.v1_accepts(),
        });
        (StatusCode::PAYMENT_REQUIRED, headers, axum::Json(body)).into_response()
    }
}

/// The base of resource URLs: the configured public URL, else the `Host` the agent used
/// (informational only: verification never depends on it), else the listen address.
pub fn public_base(server: &ServerConfig, headers: &HeaderMap) -> String {
    if let Some(u) = &server.public_url {
        return u.as_str().trim_end_matches('/').to_owned();
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| {
        !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    });
    // How the agent reached us: over TLS when this listener serves it.
    let scheme = if server.tls.is_some() { "https" } else { "http" };
    match host {
        Some(h) => format!("{scheme}://{h}"),
        None => format!("{scheme}://{}", server.listen),
    }
}

/// Adds the receipt as `PAYMENT-RESPONSE` (CAIP-2 network) and `X-PAYMENT-RESPONSE` (v1
/// network name, when the chain has one).
pub fn attach_receipt(headers: &mut HeaderMap, receipt: &SettleResponse) {
    if let Some(v) = encode_header(receipt).ok().and_then(|s| HeaderValue::from_str(&s).ok()) {
        headers.insert(HeaderName::from_static("payment-response"), v);
    }
    let v1_network = tollgate_x402::Network::parse(&receipt.network).ok().and_then(|n| n.v1_name());
    if let Some(name) = v1_network {
        let v1_receipt = SettleResponse { network: name.to_owned(), ..receipt.clone() };
        if let Some(v) = encode_header(&v1_receipt).ok().and_then(|s| HeaderValue::from_str(&s).ok()) {
            headers.insert(HeaderName::from_static("x-payment-response"), v);
        }
    }
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSE));
}
