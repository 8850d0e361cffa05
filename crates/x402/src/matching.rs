//! Which of our offers does a payment take up?
//!
//! The rule (x402 notes §2): a v2 `accepted` echo must equal one offer on `scheme`,
//! `network`, `amount`, `asset`, `payTo` and `maxTimeoutSeconds` (addresses compare as
//! bytes, so letter case does not matter), and its `extra` must contain the offer's
//! `extra`. The payment flow (`extra.paymentFlow`, absent = `authorization`) must be the
//! offer's: a client that echoes another flow is refused as `paymentFlow`. A v1 payment names only scheme and network, so it takes the first offer on that
//! network. Whatever matched, the caller verifies against *our* offer, never the echo.

use serde_json::{Map, Value};

use crate::{MatchError, PAYMENT_FLOW, PaymentPayload, SCHEME_EXACT, v2};

/// Finds the offer in `offered` that `payment` takes up.
pub fn find_offer<'a>(
    offered: &'a [v2::PaymentRequirements],
    payment: &PaymentPayload,
) -> Result<&'a v2::PaymentRequirements, MatchError> {
    if payment.scheme() != SCHEME_EXACT {
        return Err(MatchError::UnsupportedScheme { scheme: payment.scheme().chars().take(32).collect() });
    }
    let network = payment.network();
    let mut on_network = offered.iter().filter(|o| o.network == network && o.scheme == SCHEME_EXACT).peekable();
    if on_network.peek().is_none() {
        return Err(MatchError::NetworkNotOffered { network: network.caip2() });
    }
    let accepted = match payment {
        PaymentPayload::V1(_) => {
            return on_network.next().ok_or(MatchError::NetworkNotOffered { network: network.caip2() });
        }
        PaymentPayload::V2(p) => &p.accepted,
    };
    let mut first_difference = "network";
    for (i, offer) in on_network.enumerate() {
        match difference(offer, accepted) {
            None => return Ok(offer),
            Some(field) if i == 0 => first_difference = field,
            Some(_) => {}
        }
    }
    Err(MatchError::AcceptedMismatch { field: first_difference })
}

/// The first field (wire name) where `accepted` fails to echo `offer`, if any.
fn difference(offer: &v2::PaymentRequirements, accepted: &v2::PaymentRequirements) -> Option<&'static str> {
    if offer.scheme != accepted.scheme {
        Some("scheme")
    } else if offer.amount != accepted.amount {
        Some("amount")
    } else if offer.asset != accepted.asset {
        Some("asset")
    } else if offer.pay_to != accepted.pay_to {
        Some("payTo")
    } else if offer.max_timeout_seconds != accepted.max_timeout_seconds {
        Some("maxTimeoutSeconds")
    } else if flow(&accepted.extra) != flow(&offer.extra) {
        Some(PAYMENT_FLOW)
    } else if !contains(&accepted.extra, &offer.extra) {
        Some("extra")
    } else {
        None
    }
}

/// The payment flow (x402 §6.1) an offer or an echo names; absent is the default
/// `authorization`. A value that is not a string is compared as it is (and so differs).
fn flow(extra: &Map<String, Value>) -> Value {
    extra.get(PAYMENT_FLOW).cloned().unwrap_or_else(|| Value::String("authorization".to_owned()))
}

fn contains(outer: &Map<String, Value>, inner: &Map<String, Value>) -> bool {
    inner.iter().all(|(k, v)| outer.get(k) == Some(v))
}
