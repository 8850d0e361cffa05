//! Reading a 402: the challenge (v2 `PAYMENT-REQUIRED` header, preferred; else the v1 JSON
//! body), the choice of an offer, the payment header for it, the reason of a refusal, and
//! the receipt of a paid response.
//!
//! Must not do IO or sign anything. Offers are parsed one by one, so an offer on a network
//! or in a shape we do not know (another chain family, a future scheme) is skipped instead
//! of making the whole challenge unreadable.

use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::Value;
use tollgate_x402::facilitator::SettleResponse;
use tollgate_x402::{
    ExactEvmPayload, PAYMENT_HEADER_BYTES_MAX, PaymentPayload, SCHEME_EXACT, decode_header, encode_header, v1, v2,
};

use crate::config::AllowedAsset;
use crate::error::{ClientError, Offered};

/// The challenge, whichever version carried it.
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    pub version: u8,
    /// v2: the resource the server names (echoed in the payment).
    pub resource: Option<v2::ResourceInfo>,
    /// Every offer we could parse, in the server's order (v1 offers converted to the v2 shape).
    pub offers: Vec<v2::PaymentRequirements>,
    /// Every offer as written, for error reports.
    pub offered: Vec<Offered>,
    /// The challenge's `error` field.
    pub error: Option<String>,
    /// v2: the server's `extensions["payment-identifier"]`, echoed with our id.
    pub payment_id_extension: Option<Value>,
}

/// Both versions' outer fields; `accepts` is parsed item by item.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    x402_version: u64,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    resource: Option<Value>,
    #[serde(default)]
    accepts: Vec<Value>,
    #[serde(default)]
    extensions: Option<serde_json::Map<String, Value>>,
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.chars().take(80).collect(),
        Some(other) => other.to_string().chars().take(80).collect(),
        None => String::new(),
    }
}

/// The x402 extension that carries the client's idempotency key.
pub(crate) const PAYMENT_IDENTIFIER: &str = "payment-identifier";

impl Challenge {
    /// `extensions` of a v2 payment: `payment-identifier` with `info.id`.
    fn payment_id_extensions(&self, payment_id: &str) -> serde_json::Map<String, Value> {
        let mut ext = match &self.payment_id_extension {
            Some(Value::Object(m)) => m.clone(),
            _ => serde_json::Map::new(),
        };
        let required = ext.get("info").and_then(|i| i.get("required")).and_then(Value::as_bool).unwrap_or(false);
        ext.insert("info".to_owned(), serde_json::json!({ "required": required, "id": payment_id }));
        let mut out = serde_json::Map::new();
        out.insert(PAYMENT_IDENTIFIER.to_owned(), Value::Object(ext));
        out
    }

    /// Reads a 402's challenge: the v2 header if present, else the v1 body.
    pub fn from_response(headers: &HeaderMap, body: &[u8]) -> Result<Challenge, ClientError> {
        if let Some(h) = headers.get("payment-required") {
            let raw: Raw = decode_header(h.as_bytes(), PAYMENT_HEADER_BYTES_MAX)
                .map_err(|e| ClientError::Protocol { reason: format!("PAYMENT-REQUIRED header: {e}") })?;
            return Self::from_raw(raw, 2);
        }
        let raw: Raw = serde_json::from_slice(body).map_err(|e| ClientError::Protocol {
            reason: format!("402 without a PAYMENT-REQUIRED header and without a v1 JSON body: {e}"),
        })?;
        Self::from_raw(raw, 1)
    }

    fn from_raw(raw: Raw, expected: u8) -> Result<Challenge, ClientError> {
        if raw.x402_version != u64::from(expected) {
            return Err(ClientError::Protocol {
                reason: format!("x402Version {} where version {expected} was expected", raw.x402_version),
            });
        }
        let offered = raw
            .accepts
            .iter()
            .map(|v| Offered {
                scheme: text(v, "scheme"),
                network: text(v, "network"),
                asset: text(v, "asset"),
                amount: if expected == 1 { text(v, "maxAmountRequired") } else { text(v, "amount") },
            })
            .collect();
        let offers = raw
            .accepts
            .into_iter()
            .filter_map(|v| match expected {
                1 => serde_json::from_value::<v1::PaymentRequirements>(v).ok().map(|o| o.to_v2()),
                _ => serde_json::from_value::<v2::PaymentRequirements>(v).ok(),
            })
            .collect();
        let resource = match expected {
            1 => None,
            _ => raw.resource.and_then(|v| serde_json::from_value(v).ok()),
        };
        let error = raw.error.and_then(|e| e.as_str().map(str::to_owned)).filter(|e| !e.is_empty());
        let payment_id_extension = match expected {
            1 => None,
            _ => raw.extensions.and_then(|mut e| e.remove(PAYMENT_IDENTIFIER)).filter(Value::is_object),
        };
        Ok(Challenge { version: expected, resource, offers, offered, error, payment_id_extension })
    }

    /// The first offer (server's order) with scheme `exact`, on an allowed pair, with an
    /// EIP-712 domain to sign under.
    pub fn choose(&self, allow: &[AllowedAsset]) -> Result<&v2::PaymentRequirements, ClientError> {
        self.offers
            .iter()
            .find(|o| {
                o.scheme == SCHEME_EXACT
                    && o.eip712_name_version().is_some()
                    && allow.iter().any(|a| a.network == o.network && a.asset == o.asset)
            })
            .ok_or_else(|| ClientError::NoAcceptableRequirement { offered: self.offered.clone() })
    }

    /// The header (name as sent on the wire, value) paying `offer` with `exact`. A v2 payment
    /// carries `payment_id` in the x402 `payment-identifier` extension (the server's
    /// declaration echoed, `info.id` added; sent even when the server declared nothing, which
    /// such a server ignores), so a re-sent header is recognised as the same payment.
    pub fn payment_header(
        &self,
        offer: &v2::PaymentRequirements,
        exact: ExactEvmPayload,
        payment_id: &str,
    ) -> Result<(&'static str, String), ClientError> {
        let (name, payload) = match self.version {
            1 => (
                tollgate_x402::headers::X_PAYMENT,
                PaymentPayload::V1(v1::PaymentPayload {
                    x402_version: v1::VERSION,
                    scheme: offer.scheme.clone(),
                    network: offer.network,
                    payload: exact,
                }),
            ),
            _ => (
                tollgate_x402::headers::PAYMENT_SIGNATURE,
                PaymentPayload::V2(v2::PaymentPayload {
                    x402_version: v2::VERSION,
                    resource: self.resource.clone(),
                    accepted: offer.clone(),
                    payload: exact,
                    extensions: Some(self.payment_id_extensions(payment_id)),
                }),
            ),
        };
        let value = encode_header(&payload).map_err(|e| ClientError::Protocol { reason: e.to_string() })?;
        Ok((name, value))
    }
}

/// Why a 402 refused our payment: the challenge's `error` (v2 header, then v1 body), else
/// the receipt's `errorReason`, else a generic code.
pub(crate) fn refusal_reason(headers: &HeaderMap, body: &[u8]) -> String {
    if let Ok(c) = Challenge::from_response(headers, body)
        && let Some(e) = c.error
    {
        return e;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body)
        && let Some(e) = v.get("error").and_then(Value::as_str)
    {
        return e.chars().take(120).collect();
    }
    receipt(headers).and_then(|r| r.error_reason).unwrap_or_else(|| "payment_required".to_owned())
}

/// Refusals that a *new* authorization can cure: the settlement failed without charging,
/// the offer changed under us, the window or nonce of this one authorization is unusable.
/// Anything about the wallet itself (balance, signature, domain, network) would fail again.
pub(crate) fn fresh_authorization_may_help(reason: &str) -> bool {
    matches!(
        reason,
        "settlement_failed"
            | "accepted_requirement_mismatch"
            | "invalid_exact_evm_payload_authorization_value_mismatch"
            | "invalid_exact_evm_payload_authorization_valid_before"
            | "invalid_exact_evm_payload_authorization_valid_after"
            | "invalid_exact_evm_nonce_already_used"
    )
}

/// The settlement receipt: `PAYMENT-RESPONSE` (v2), else `X-PAYMENT-RESPONSE` (v1).
pub(crate) fn receipt(headers: &HeaderMap) -> Option<SettleResponse> {
    ["payment-response", "x-payment-response"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .find_map(|v| decode_header::<SettleResponse>(v.as_bytes(), PAYMENT_HEADER_BYTES_MAX).ok())
}

/// A tollgate error body `{"error":{"code":…,"message":…}}`: its code and message (cut to a
/// readable length). `None` for any other body.
pub(crate) fn error_body(body: &[u8]) -> Option<(String, String)> {
    let v = serde_json::from_slice::<Value>(body).ok()?;
    let e = v.get("error")?;
    let code = e.get("code")?.as_str()?.chars().take(80).collect();
    let message = e.get("message").and_then(Value::as_str).unwrap_or_default().chars().take(300).collect();
    Some((code, message))
}

/// Whether a 409 is the server saying "this authorization is being processed right now".
pub(crate) fn is_in_flight(body: &[u8]) -> bool {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.get("code")).and_then(Value::as_str).map(str::to_owned))
        .is_some_and(|c| c == "payment_in_flight")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn v2_offer(network: &str, asset: &str) -> Value {
        serde_json::json!({
            "scheme": "exact", "network": network, "amount": "1000", "asset": asset,
            "payTo": "0x00000000000000000000000000000000000000aa", "maxTimeoutSeconds": 60,
            "extra": {"name": "USD Coin", "version": "2"}
        })
    }

    // Goal: an unknown network in `accepts` is skipped (and reported), the first allowed
    // offer wins, and nothing allowed gives NoAcceptableRequirement listing the offers.
    #[test]
    fn skips_unknown_offers_and_picks_first_allowed() {
        let usdc = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913";
        let body = serde_json::json!({
            "x402Version": 2, "resource": {"url": "http://x/y"},
            "accepts": [
                v2_offer("solana:5eykt4UsFv8P8NJdTREpY1vzqKqZKvdp", "EPjFWdd5"),
                v2_offer("eip155:1", usdc),
                v2_offer("eip155:8453", usdc),
            ]
        });
        let mut headers = HeaderMap::new();
        headers.insert("payment-required", HeaderValue::from_str(&encode_header(&body).unwrap()).unwrap());
        let c = Challenge::from_response(&headers, b"").unwrap();
        assert_eq!(c.offers.len(), 2);
        assert_eq!(c.offered.len(), 3);
        let chosen = c.choose(&AllowedAsset::usdc_defaults()).unwrap();
        assert_eq!(chosen.network, tollgate_x402::Network::BASE);
        match c.choose(&[]) {
            Err(ClientError::NoAcceptableRequirement { offered }) => assert_eq!(offered.len(), 3),
            other => panic!("{other:?}"),
        }
    }

    // Goal: without the header, the v1 body is read and the payment goes in X-PAYMENT with
    // the v1 network name; garbage is a Protocol error.
    #[test]
    fn reads_v1_body_and_rejects_garbage() {
        let body = serde_json::json!({
            "x402Version": 1, "error": "payment_required",
            "accepts": [{
                "scheme": "exact", "network": "base", "maxAmountRequired": "1000",
                "resource": "http://x/y", "description": "", "mimeType": "",
                "payTo": "0x00000000000000000000000000000000000000aa", "maxTimeoutSeconds": 60,
                "asset": "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913",
                "extra": {"name": "USD Coin", "version": "2"}
            }]
        });
        let c = Challenge::from_response(&HeaderMap::new(), body.to_string().as_bytes()).unwrap();
        assert_eq!(c.version, 1);
        let offer = c.choose(&AllowedAsset::usdc_defaults()).unwrap().clone();
        let signer = alloy::signers::local::PrivateKeySigner::random();
        let exact = crate::sign::sign_exact(&signer, &offer, 100, crate::sign::random_nonce().unwrap()).unwrap();
        let (name, value) = c.payment_header(&offer, exact, "pay_0123456789abcdef").unwrap();
        assert_eq!(name, "X-PAYMENT");
        let decoded = PaymentPayload::from_header(value.as_bytes(), PAYMENT_HEADER_BYTES_MAX).unwrap();
        assert_eq!(decoded.version(), 1);
        assert!(matches!(Challenge::from_response(&HeaderMap::new(), b"<html>"), Err(ClientError::Protocol { .. })));
        assert_eq!(refusal_reason(&HeaderMap::new(), body.to_string().as_bytes()), "payment_required");
    }
}
