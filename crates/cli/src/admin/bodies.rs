//! Request bodies from the flags, built from `tollgate-admin-api`'s types (`--spec-json` and
//! `--credential-json` pass through as given, for the gateway to judge), and secrets read
//! from a file or stdin.
//!
//! Must not: validate beyond the JSON shape (the gateway judges and names the field), or echo
//! a secret.

use std::io::Read;
use std::path::Path;

use secrecy::SecretString;
use serde_json::Value;
use tollgate_admin_api::types as api;

use super::SECRET_BYTES_MAX;
use super::args::{EndpointPut, EndpointSet, ProviderPut};
use crate::Failure;

/// A request body of the contract as JSON (the contract's types serialise infallibly).
pub(super) fn to_body<T: serde::Serialize>(body: &T) -> Option<Value> {
    serde_json::to_value(body).ok()
}

pub(super) fn parse_json_object(flag: &str, text: &str) -> Result<Value, Failure> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Failure::usage(format!("{flag}: expected a JSON object"))),
        Err(e) => Err(Failure::usage(format!("{flag}: not JSON: {e}"))),
    }
}

/// The provider body from the flags. `--credential-json` is passed through as given, so the
/// gateway judges it (and names an unknown field) like any other body.
pub(super) fn provider_body(p: &ProviderPut) -> Result<Value, Failure> {
    let credential = match &p.vault {
        Some(vault) if p.credential_json.is_none() => Some(api::CredentialBody {
            inject: p.inject.clone().unwrap_or_else(|| "header".to_owned()),
            vault: Some(vault.clone()),
            header: p.header.clone(),
            template: p.template.clone(),
            param: p.param.clone(),
            username: p.username.clone(),
            ..api::CredentialBody::default()
        }),
        _ => None,
    };
    let mut body = to_body(&api::ProviderBody {
        pay_to: p.pay_to.clone(),
        upstream: p.upstream.clone(),
        strip_prefix: p.strip_prefix.clone(),
        credential,
        upstream_timeout_ms: p.upstream_timeout_ms,
        ..api::ProviderBody::default()
    })
    .unwrap_or_default();
    if let (Some(text), Some(obj)) = (&p.credential_json, body.as_object_mut()) {
        obj.insert("credential".to_owned(), parse_json_object("--credential-json", text)?);
    }
    Ok(body)
}

pub(super) fn endpoint_body(e: &EndpointPut) -> Result<Value, Failure> {
    if let Some(text) = &e.spec_json {
        return parse_json_object("--spec-json", text);
    }
    // clap requires --path unless --spec-json is given.
    let path = e.path.clone().ok_or_else(|| Failure::usage("--path is required"))?;
    Ok(to_body(&api::EndpointBody {
        path,
        price: e.price.clone(),
        price_atomic: e.price_atomic.clone(),
        methods: e.methods.clone(),
        networks: e.networks.clone(),
        settlement: e.settlement.clone(),
        description: e.description.clone(),
        mime_type: e.mime_type.clone(),
        max_timeout_seconds: e.max_timeout_seconds,
        upstream_timeout_ms: e.upstream_timeout_ms,
        body_bytes_max: e.body_bytes_max,
        ..api::EndpointBody::default()
    })
    .unwrap_or_default())
}

/// A secret from a file or stdin, with one trailing newline removed; never echoed.
pub(super) fn read_secret(file: Option<&Path>) -> Result<SecretString, Failure> {
    let mut raw = String::new();
    let read = match file {
        Some(path) => std::fs::File::open(path).and_then(|f| f.take(SECRET_BYTES_MAX + 1).read_to_string(&mut raw)),
        None => std::io::stdin().lock().take(SECRET_BYTES_MAX + 1).read_to_string(&mut raw),
    };
    let source = file.map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
    read.map_err(|e| Failure::usage(format!("cannot read the secret from {source}: {e}")))?;
    if raw.len() as u64 > SECRET_BYTES_MAX {
        return Err(Failure::usage(format!("the secret from {source} is longer than 8192 bytes")));
    }
    let trimmed = raw.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&raw);
    if trimmed.is_empty() {
        return Err(Failure::usage(format!("the secret from {source} is empty")));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

/// `PROVIDER:PATH` (an endpoint's name, as `endpoint list` shows it) into its two parts.
pub(super) fn route_name(route: &str) -> Result<(String, String), Failure> {
    match route.split_once(':') {
        Some((provider, path)) if !provider.is_empty() && path.starts_with('/') => {
            Ok((provider.to_owned(), path.to_owned()))
        }
        _ => Err(Failure::usage(format!(
            "`{route}`: expected PROVIDER:PATH, e.g. 'weather:/weather/{{city}}' (as `endpoint list` names it)"
        ))),
    }
}

/// The PATCH body of `endpoint set`: only the flags given.
pub(super) fn endpoint_patch(e: &EndpointSet) -> Result<(String, api::EndpointPatch), Failure> {
    let (provider, path) = route_name(&e.route)?;
    let enabled = if e.enable {
        Some(true)
    } else if e.disable {
        Some(false)
    } else {
        None
    };
    let patch = api::EndpointPatch {
        path,
        methods: e.methods.clone(),
        price: e.price.clone(),
        price_atomic: e.price_atomic.clone(),
        free: e.free.then_some(true),
        networks: e.networks.clone(),
        description: e.description.clone(),
        mime_type: e.mime_type.clone(),
        settlement: e.settlement.clone(),
        max_timeout_seconds: e.max_timeout_seconds,
        upstream_timeout_ms: e.upstream_timeout_ms,
        body_bytes_max: e.body_bytes_max,
        charge_redirects: None,
        allow_set_cookie: None,
        payment_id_required: None,
        replay_body_bytes_max: None,
        settlement_wait: None,
        discovery: None,
        enabled,
    };
    Ok((provider, patch))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    // Goal: the provider body carries a vault credential built from flags, defaulting to a
    // header injection, and only the fields given.
    #[test]
    fn provider_body_from_flags() {
        let p = ProviderPut {
            id: "w".into(),
            pay_to: "0x1".into(),
            upstream: "http://u".into(),
            strip_prefix: None,
            upstream_timeout_ms: Some(5),
            credential_json: None,
            vault: Some("k".into()),
            inject: None,
            header: Some("X-Key".into()),
            template: None,
            param: None,
            username: None,
        };
        assert_eq!(
            provider_body(&p).unwrap(),
            json!({"pay_to": "0x1", "upstream": "http://u", "upstream_timeout_ms": 5,
                   "credential": {"inject": "header", "vault": "k", "header": "X-Key"}})
        );
    }
}
