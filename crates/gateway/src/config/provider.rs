//! A provider and its priced routes, raw to typed: `build_provider`, `build_route` and the
//! credential's injection and secret source.
//!
//! Shared by the file (`build`), the control plane's stored providers (`crate::control`) and
//! the admin API (`crate::admin`), so an upstream is judged by one set of rules whatever its
//! origin. Reads a static secret only when the caller allows it (the file); must not import
//! `build`.

use std::collections::BTreeSet;
use std::time::Duration;

use tollgate_control::vault::check_vault_name;
use tollgate_metering::{AtomicAmount, SettlementMode};
use tollgate_x402::Network;

use super::checks::check_plain_http;
use super::discovery::{route_discovery, service_info};
use super::error::{BAD_PATH_PATTERN, ConfigError, UNKNOWN_NETWORK, invalid};
use super::raw::{RawCredential, RawProvider, RawRoute};
use super::sections::{
    Credential, Injection, NetworkConfig, ProviderConfig, RouteConfig, SecretSource, ServerConfig, SettlementWait,
};
use super::values::{address, base_url, ms, parse_human_amount, secret_from};
use crate::routes::PathPattern;

/// Validates a provider (without its routes). `static_secrets`: whether the credential may be
/// read from the environment or a file (the file may; the admin API may only name a vault
/// credential).
pub fn build_provider(
    pkey: &str,
    p: &RawProvider,
    env: &dyn Fn(&str) -> Option<String>,
    static_secrets: bool,
) -> Result<ProviderConfig, ConfigError> {
    let key = |k: &str| format!("{pkey}.{k}");
    if p.id.is_empty() || p.id.len() > 64 || !p.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(key("id"), "use 1 to 64 letters, digits, '-' and '_'"));
    }
    let credential = match &p.credential {
        None => None,
        Some(c) => Some(credential(&key("credential"), c.clone(), env, static_secrets)?),
    };
    let upstream = base_url(&key("upstream"), &p.upstream)?;
    check_plain_http(&key("upstream"), &upstream, p.allow_insecure_http.unwrap_or(false))?;
    Ok(ProviderConfig {
        id: p.id.clone(),
        pay_to: address(&key("pay_to"), &p.pay_to)?,
        upstream,
        strip_prefix: p.strip_prefix.clone(),
        credential,
        default_upstream_timeout: ms(p.upstream_timeout_ms, 10_000),
        routes: Vec::new(),
        guarded: false,
        service: service_info(&key, p)?,
    })
}

/// Validates one route of `provider`.
pub fn build_route(
    rkey: &str,
    r: &RawRoute,
    provider: &ProviderConfig,
    networks: &[NetworkConfig],
    server: &ServerConfig,
) -> Result<RouteConfig, ConfigError> {
    let key = |k: &str| format!("{rkey}.{k}");
    let pattern = PathPattern::parse(&r.path).map_err(|_| invalid(key("path"), BAD_PATH_PATTERN))?;
    // The endpoint's name (`provider:path`) is what the ledger records; it must fit there.
    if provider.id.len() + 1 + r.path.len() > tollgate_metering::LABEL_BYTES_MAX {
        return Err(invalid(
            key("path"),
            format!(
                "too long (the provider id, `:` and the path are at most {} bytes)",
                tollgate_metering::LABEL_BYTES_MAX
            ),
        ));
    }
    if let Some(prefix) = &provider.strip_prefix
        && !r.path.starts_with(prefix.as_str())
    {
        return Err(invalid(key("path"), "does not start with the provider's strip_prefix"));
    }
    let methods: BTreeSet<String> = r
        .methods
        .clone()
        .unwrap_or_else(|| vec!["GET".to_owned()])
        .into_iter()
        .map(|m| m.to_ascii_uppercase())
        .collect();
    for m in &methods {
        if !matches!(m.as_str(), "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS") {
            return Err(invalid(
                key("methods"),
                "unknown method; expected GET, POST, PUT, PATCH, DELETE, HEAD or OPTIONS",
            ));
        }
    }
    if methods.is_empty() {
        return Err(invalid(key("methods"), "at least one method"));
    }
    let route_networks: Vec<&NetworkConfig> = match &r.networks {
        None => networks.iter().collect(),
        Some(ids) => {
            let mut out = Vec::new();
            for id in ids {
                let n = Network::parse(id).map_err(|_| invalid(key("networks"), UNKNOWN_NETWORK))?;
                let cfg = networks
                    .iter()
                    .find(|c| c.network == n)
                    .ok_or_else(|| invalid(key("networks"), format!("{n} is not configured under [[networks]]")))?;
                out.push(cfg);
            }
            out
        }
    };
    let free = route_is_free(&key, r)?;
    if route_networks.is_empty() && !free {
        return Err(invalid(key("networks"), "no network to accept payment on"));
    }
    let mut prices = Vec::new();
    for n in route_networks.into_iter().filter(|_| !free) {
        let atomic = match (&r.price, &r.price_atomic) {
            (Some(_), Some(_)) => return Err(invalid(key("price"), "give either price or price_atomic")),
            (Some(h), None) => parse_human_amount(h, n.decimals).map_err(|e| invalid(key("price"), e))?,
            (None, Some(a)) => {
                if a.is_empty() || !a.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(key("price_atomic"), "not a whole number"));
                }
                a.parse::<u64>().map_err(|_| invalid(key("price_atomic"), "too large"))?
            }
            (None, None) => return Err(invalid(key("price"), "missing (price or price_atomic)")),
        };
        let amount = AtomicAmount::new(atomic)
            .ok_or_else(|| invalid(key("price"), "must be greater than zero and below 2^63"))?;
        prices.push((n.network, amount));
    }
    let settlement = match r.settlement.as_deref().unwrap_or("after") {
        "after" => SettlementMode::After,
        "before" => SettlementMode::Before,
        "deferred" => SettlementMode::Deferred,
        _ => return Err(invalid(key("settlement"), "expected after, before or deferred")),
    };
    let settlement_wait = settlement_wait(&key("settlement_wait"), r.settlement_wait.as_deref(), settlement)?;
    Ok(RouteConfig {
        pattern,
        methods,
        prices,
        free,
        description: r.description.clone().unwrap_or_default(),
        mime_type: r.mime_type.clone().unwrap_or_else(|| "application/json".to_owned()),
        settlement,
        settlement_wait,
        max_timeout_seconds: r.max_timeout_seconds.unwrap_or(60),
        upstream_timeout: r.upstream_timeout_ms.map(Duration::from_millis).unwrap_or(provider.default_upstream_timeout),
        body_bytes_max: r.body_bytes_max.unwrap_or(server.body_bytes_max),
        charge_redirects: r.charge_redirects.unwrap_or(false),
        allow_set_cookie: r.allow_set_cookie.unwrap_or(false),
        payment_id_required: r.payment_id_required.unwrap_or(false),
        replay_body_bytes_max: match r.replay_body_bytes_max.unwrap_or(0) {
            b @ 0..=1_048_576 => b,
            _ => return Err(invalid(key("replay_body_bytes_max"), "at most 1048576 bytes")),
        },
        discovery: route_discovery(&key, r.discovery.as_ref())?,
    })
}

/// Most confirmations `settlement_wait = "confirmations:N"` may ask for: the wait is bounded
/// by the receipt timeout anyway, and a depth beyond this is a typo, not a policy.
const SETTLEMENT_WAIT_CONFIRMATIONS_MAX: u64 = 1_000;

/// `settlement_wait`: `submitted`, `included` (the default) or `confirmations:N`; only an
/// `after` route chooses (a `before` route's answer follows its settlement anyway, a deferred
/// route answers before settling).
fn settlement_wait(key: &str, v: Option<&str>, mode: SettlementMode) -> Result<SettlementWait, ConfigError> {
    let wait = match v {
        None | Some("included") => SettlementWait::Included,
        Some("submitted") => SettlementWait::Submitted,
        Some(s) if let Some(n) = s.strip_prefix("confirmations:") => match n.parse::<u64>() {
            Ok(n @ 1..=SETTLEMENT_WAIT_CONFIRMATIONS_MAX) => SettlementWait::Confirmations(n),
            _ => {
                return Err(invalid(
                    key,
                    format!("confirmations:N wants N from 1 to {SETTLEMENT_WAIT_CONFIRMATIONS_MAX}"),
                ));
            }
        },
        Some(_) => return Err(invalid(key, "expected submitted, included or confirmations:N")),
    };
    if wait != SettlementWait::Included && mode != SettlementMode::After {
        return Err(invalid(key, "only a route with settlement = \"after\" chooses when it answers"));
    }
    Ok(wait)
}

/// Whether a route is free: `free = true` (then without a price), or a price of zero.
fn route_is_free(key: &dyn Fn(&str) -> String, r: &RawRoute) -> Result<bool, ConfigError> {
    // "0", "0.0", "000": digits, at most one point, every digit zero.
    let zero = |s: &Option<String>| {
        s.as_deref().is_some_and(|v| {
            v.bytes().any(|b| b == b'0')
                && v.bytes().all(|b| b == b'0' || b == b'.')
                && v.bytes().filter(|b| *b == b'.').count() <= 1
        })
    };
    // Both prices is refused before anything else: a zero in one of them must not make a
    // route free that the other prices (the route would be forwarded unpaid).
    if r.price.is_some() && r.price_atomic.is_some() {
        return Err(invalid(key("price"), "give either price or price_atomic"));
    }
    let zero_price = zero(&r.price) || zero(&r.price_atomic);
    match r.free {
        Some(true) if r.price.is_some() || r.price_atomic.is_some() => {
            Err(invalid(key("free"), "a free route has no price (remove price/price_atomic, or free)"))
        }
        Some(true) => Ok(true),
        Some(false) if zero_price => {
            Err(invalid(key("free"), "free = false with a price of zero: give a price above zero, or remove free"))
        }
        _ => Ok(zero_price),
    }
}

fn credential(
    key: &str,
    c: RawCredential,
    env: &dyn Fn(&str) -> Option<String>,
    static_secrets: bool,
) -> Result<Credential, ConfigError> {
    let secret = match (&c.vault, c.secret_env.is_some() || c.secret_file.is_some()) {
        (Some(_), true) => return Err(invalid(key, "give either vault or secret_env/secret_file")),
        (Some(name), false) => {
            check_vault_name(name).map_err(|reason| invalid(format!("{key}.vault"), reason))?;
            SecretSource::Vault { name: name.clone() }
        }
        (None, _) if !static_secrets => {
            return Err(invalid(format!("{key}.vault"), "required: over the admin API secrets come from the vault"));
        }
        (None, _) => {
            let (secret, source) = secret_from(key, c.secret_env.as_deref(), c.secret_file.as_deref(), env)?
                .ok_or_else(|| invalid(key, "vault, secret_env or secret_file is required"))?;
            SecretSource::Static { secret, source }
        }
    };
    let unexpected = |field: &str, present: bool| {
        if present {
            Err(invalid(format!("{key}.{field}"), format!("not used with inject = \"{}\"", c.inject)))
        } else {
            Ok(())
        }
    };
    let injection = match c.inject.as_str() {
        "header" => {
            unexpected("param", c.param.is_some())?;
            unexpected("username", c.username.is_some())?;
            let name_s = c.header.as_deref().unwrap_or("Authorization");
            let name = reqwest::header::HeaderName::from_bytes(name_s.as_bytes())
                .map_err(|_| invalid(format!("{key}.header"), "not a valid header name"))?;
            let template = c.template.unwrap_or_else(|| "Bearer {secret}".to_owned());
            if !template.contains("{secret}") {
                return Err(invalid(format!("{key}.template"), "must contain {secret}"));
            }
            Injection::Header { name, template }
        }
        "query" => {
            unexpected("header", c.header.is_some())?;
            unexpected("template", c.template.is_some())?;
            unexpected("username", c.username.is_some())?;
            Injection::Query { param: c.param.ok_or_else(|| invalid(format!("{key}.param"), "missing"))? }
        }
        "basic" => {
            unexpected("header", c.header.is_some())?;
            unexpected("template", c.template.is_some())?;
            unexpected("param", c.param.is_some())?;
            Injection::Basic { username: c.username.ok_or_else(|| invalid(format!("{key}.username"), "missing"))? }
        }
        _ => return Err(invalid(format!("{key}.inject"), "expected header, query or basic")),
    };
    Ok(Credential { injection, secret })
}
