//! The admin API's transport side of a request: the bearer token authenticated into a
//! `tollgate_control::Principal`, the body read within its cap, and the body and query
//! decoders the control plane's operations call after their permission check.
//!
//! Must not: decide what a caller may do (that is `tollgate_control::admin`'s), or decode an
//! input before the operation asks for it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Uri, header};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;
use tollgate_control::admin::tokens::TOKEN_PREFIX;
use tollgate_control::{ControlError, Principal};
use tollgate_metering::token_hash;

use super::AdminError;
use crate::app::Gateway;
use crate::error::GatewayError;

/// The caller, authenticated from the bearer token; the rules of what it may do are
/// `tollgate_control::Principal`'s.
#[derive(Debug, Clone)]
pub struct Auth(pub Principal);

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

fn invalid(field: &str, reason: impl Into<String>) -> ControlError {
    ControlError::invalid(field, reason)
}

/// A request body, at most `admin.body_bytes_max` bytes; decoded only when the operation asks
/// (after its permission check), so a caller without the right learns nothing from body errors.
pub struct AdminBody(Bytes);

impl FromRequest<Arc<Gateway>> for AdminBody {
    type Rejection = AdminError;

    async fn from_request(req: Request, gw: &Arc<Gateway>) -> Result<Self, Self::Rejection> {
        let cap = gw.config.admin.body_bytes_max;
        let bytes = Bytes::from_request(req, gw)
            .await
            .map_err(|_| invalid("body", format!("larger than {cap} bytes or unreadable")))?;
        if bytes.len() > cap {
            return Err(invalid("body", format!("larger than {cap} bytes")).into());
        }
        Ok(AdminBody(bytes))
    }
}

impl AdminBody {
    /// The body as `T`: unknown fields refused, errors naming the field.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ControlError> {
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

/// The query string as `T` (unknown parameters refused), decoded when the operation asks.
pub fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ControlError> {
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
