//! Unit tests of the admin operations' rules, on a SQLite store and a host whose own checks
//! pass (the gateway's HTTP tests cover the same routes end to end).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Duration;

use tollgate_admin_api::types as api;
use tollgate_metering::{Ledger, LedgerOptions, Role};

use super::{CheckedEndpoint, Host, catalog, credentials, tokens, views, wallets};
use crate::{ControlError, EndpointSpec, Principal, ProviderSpec, VaultKey};

const PAYEE: &str = "0x1111111111111111111111111111111111111111";
const WALLET: &str = "0x2222222222222222222222222222222222222222";

/// A host whose checks pass: every provider is served with `/weather` as its path prefix,
/// paths overlap when they are equal.
struct TestHost {
    ledger: Ledger,
    key: VaultKey,
    _dir: tempfile::TempDir,
}

impl Host for TestHost {
    type Error = ControlError;

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }
    fn now_unix_s(&self) -> u64 {
        1_800_000_000
    }
    fn vault_key(&self) -> Option<&VaultKey> {
        Some(&self.key)
    }
    fn can_settle(&self) -> bool {
        true
    }
    fn units(&self, _chain_id: Option<u64>) -> tollgate_metering::TokenUnits {
        tollgate_metering::TokenUnits::default()
    }

    fn body_bytes_max(&self) -> u64 {
        1_000_000
    }
    async fn check_provider(&self, _spec: &ProviderSpec) -> Result<(), ControlError> {
        Ok(())
    }
    fn check_endpoint(&self, _provider: &str, spec: &EndpointSpec) -> Result<CheckedEndpoint, ControlError> {
        Ok(CheckedEndpoint {
            body_bytes_max: spec.body_bytes_max.unwrap_or(1_000_000),
            upstream_timeout: Duration::from_millis(spec.upstream_timeout_ms.unwrap_or(10_000)),
            max_timeout_seconds: spec.max_timeout_seconds.unwrap_or(60),
            provider_strip_prefix: Some("/weather".to_owned()),
            prices_stored: r#"[{"network":"eip155:8453","amount":"1000"}]"#.to_owned(),
        })
    }
    fn paths_overlap(&self, a: &str, b: &str) -> bool {
        a == b
    }
    async fn applied(&self) -> Result<(), ControlError> {
        Ok(())
    }
}

async fn host() -> TestHost {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
    let opts = LedgerOptions {
        max_connections: 4,
        acquire_timeout_ms: 5_000,
        statement_timeout_ms: 5_000,
        migrate_timeout_ms: 30_000,
        sqlite_synchronous_full: false,
    };
    let ledger = Ledger::connect(&url, opts).await.unwrap();
    let host = TestHost { ledger, key: VaultKey(secrecy::SecretBox::new(Box::new([7; 32]))), _dir: dir };
    for id in ["weather", "other"] {
        catalog::put_provider(&host, &operator(), id.to_owned(), || Ok(provider_body())).await.unwrap();
    }
    host
}

fn who(role: Role, provider: Option<&str>) -> Principal {
    Principal { token_id: "ab".repeat(8), role, provider: provider.map(str::to_owned) }
}

fn operator() -> Principal {
    who(Role::Operator, None)
}

fn provider_body() -> api::ProviderBody {
    serde_json::from_value(serde_json::json!({ "pay_to": PAYEE, "upstream": "https://api.example.com" })).unwrap()
}

fn endpoint_body(path: &str) -> api::EndpointBody {
    serde_json::from_value(serde_json::json!({ "path": path, "price": "0.001" })).unwrap()
}

fn no_query() -> Result<api::ListQuery, ControlError> {
    Ok(api::ListQuery::default())
}

/// A decoder that must not be reached: the permission check comes first.
fn unreachable_input<T>() -> Result<T, ControlError> {
    Err(ControlError::invalid("never", "the input was read before the permission check"))
}

fn forbidden<T: std::fmt::Debug>(r: Result<T, ControlError>) -> bool {
    matches!(r, Err(ControlError::Forbidden { .. }))
}

fn invalid_field<T: std::fmt::Debug>(r: Result<T, ControlError>) -> String {
    match r {
        Err(ControlError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[tokio::test]
async fn a_provider_token_cannot_touch_another_providers_records() {
    // Goal: a provider token is refused on another provider's endpoints, credentials, prices, revenue, ledger and wallet scope, before its input is read; on its own it passes.
    let h = host().await;
    let p = who(Role::Provider, Some("weather"));
    let o = || "other".to_owned();
    assert!(forbidden(catalog::put_endpoint(&h, &p, o(), unreachable_input).await));
    assert!(forbidden(catalog::set_enabled(&h, &p, o(), false, unreachable_input).await));
    assert!(forbidden(catalog::list_endpoints(&h, &p, "other", unreachable_input).await));
    assert!(forbidden(catalog::patch_endpoint(&h, &p, o(), unreachable_input).await));
    assert!(forbidden(catalog::delete_endpoint(&h, &p, o(), unreachable_input).await));
    assert!(forbidden(catalog::delete_provider(&h, &p, "weather".into()).await));
    assert!(forbidden(catalog::prices(&h, &p, "other", unreachable_input).await));
    assert!(forbidden(credentials::upload(&h, &p, o(), "main".into(), unreachable_input).await));
    assert!(forbidden(credentials::revoke(&h, &p, o(), "main".into(), "1").await));
    assert!(forbidden(credentials::list(&h, &p, "other").await));
    assert!(forbidden(views::revenue(&h, &p, o(), unreachable_input).await));
    let other_ledger =
        || serde_json::from_value(serde_json::json!({ "provider": "other" })).map_err(|_| unreachable!());
    assert!(forbidden(views::ledger_entries(&h, &p, other_ledger).await));
    let other_scope = || Ok(api::ScopeQuery { scope: Some("other".to_owned()) });
    assert!(forbidden(wallets::put(&h, &p, WALLET, other_scope, unreachable_input).await));
    assert!(forbidden(wallets::set_revoked(&h, &p, WALLET, true, other_scope).await));
    // Its own provider: allowed.
    let w = catalog::put_endpoint(&h, &p, "weather".into(), || Ok(endpoint_body("/weather/now"))).await.unwrap();
    assert_eq!(w.name, "weather:/weather/now");
    assert_eq!(catalog::list_endpoints(&h, &p, "weather", no_query).await.unwrap().endpoints.len(), 1);
    let providers = catalog::list_providers(&h, &p, no_query).await.unwrap().providers;
    assert_eq!(providers.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), ["weather"]);
}

#[tokio::test]
async fn finance_reads_but_never_writes() {
    // Goal: every write is refused to a finance token before its input is read; its read-only views pass.
    let h = host().await;
    let f = who(Role::Finance, None);
    let w = || "weather".to_owned();
    assert!(forbidden(catalog::put_provider(&h, &f, w(), unreachable_input).await));
    assert!(forbidden(catalog::put_endpoint(&h, &f, w(), unreachable_input).await));
    assert!(forbidden(catalog::set_enabled(&h, &f, w(), true, unreachable_input).await));
    assert!(forbidden(catalog::patch_endpoint(&h, &f, w(), unreachable_input).await));
    assert!(forbidden(catalog::delete_endpoint(&h, &f, w(), unreachable_input).await));
    assert!(forbidden(catalog::delete_provider(&h, &f, w()).await));
    assert!(forbidden(credentials::upload(&h, &f, w(), "main".into(), unreachable_input).await));
    assert!(forbidden(credentials::revoke(&h, &f, w(), "main".into(), "1").await));
    assert!(forbidden(tokens::create(&h, &f, unreachable_input).await));
    assert!(forbidden(tokens::revoke(&h, &f, "ab".repeat(8)).await));
    assert!(forbidden(tokens::list(&h, &f).await));
    assert!(forbidden(wallets::put(&h, &f, WALLET, unreachable_input, unreachable_input).await));
    assert!(forbidden(wallets::set_revoked(&h, &f, WALLET, true, unreachable_input).await));
    assert!(forbidden(wallets::put_settings(&h, &f, unreachable_input).await));
    assert!(forbidden(wallets::settings(&h, &f).await));
    // Reads.
    assert!(
        catalog::prices(&h, &f, "weather", || Ok(api::EndpointPath { path: "/x".into() }))
            .await
            .is_err_and(|e| matches!(e, ControlError::NotFound { what: "endpoint", .. }))
    );
    assert!(views::revenue(&h, &f, w(), || Ok(api::RangeQuery { from_unix_s: None, to_unix_s: None })).await.is_ok());
    assert!(views::audit_verify(&h, &f).await.is_ok());
}

#[tokio::test]
async fn invalid_input_names_the_field() {
    // Goal: each input rule refuses with Invalid naming the offending field.
    let h = host().await;
    let op = operator();
    let token = |role: &str, provider: Option<&str>, label: Option<String>| {
        let b = api::NewToken { role: role.to_owned(), provider: provider.map(str::to_owned), label };
        move || Ok(b)
    };
    assert_eq!(invalid_field(tokens::create(&h, &op, token("root", None, None)).await), "role");
    assert_eq!(invalid_field(tokens::create(&h, &op, token("provider", None, None)).await), "provider");
    assert_eq!(invalid_field(tokens::create(&h, &op, token("finance", None, Some("x".repeat(129)))).await), "label");
    assert_eq!(invalid_field(tokens::revoke(&h, &op, "zz".into()).await), "id");
    let policy = |json: serde_json::Value| move || Ok(serde_json::from_value::<api::WalletPolicyBody>(json).unwrap());
    let global = || Ok(api::ScopeQuery { scope: None });
    let body = policy(serde_json::json!({ "registered": true, "per_call_max": "1.5" }));
    assert_eq!(invalid_field(wallets::put(&h, &op, WALLET, global, body).await), "per_call_max");
    let body = policy(serde_json::json!({ "registered": true }));
    assert_eq!(invalid_field(wallets::put(&h, &op, "0x12", global, body).await), "wallet");
    let body = policy(serde_json::json!({ "registered": true }));
    let nowhere = || Ok(api::ScopeQuery { scope: Some("nobody".into()) });
    assert_eq!(invalid_field(wallets::put(&h, &op, WALLET, nowhere, body).await), "scope");
    let body = policy(serde_json::json!({ "registered": true, "endpoints": ["other:/x"] }));
    let weather = || Ok(api::ScopeQuery { scope: Some("weather".into()) });
    assert_eq!(invalid_field(wallets::put(&h, &op, WALLET, weather, body).await), "endpoints");
    let secret = || Ok(api::SecretBody { secret: String::new() });
    assert_eq!(invalid_field(credentials::upload(&h, &op, "weather".into(), "main".into(), secret).await), "secret");
    let secret = || Ok(api::SecretBody { secret: "sk".into() });
    assert_eq!(invalid_field(credentials::upload(&h, &op, "weather".into(), "a b".into(), secret).await), "name");
    assert_eq!(invalid_field(credentials::revoke(&h, &op, "weather".into(), "main".into(), "x").await), "version");
    // A malformed secret body never echoes what was sent.
    let leaky = || Err(ControlError::invalid("secret", "invalid type: sk-live-123"));
    let e = credentials::upload(&h, &op, "weather".into(), "main".into(), leaky).await.unwrap_err();
    assert!(!e.to_string().contains("sk-live-123"), "{e}");
}

#[tokio::test]
async fn endpoint_rules_hold_for_provider_tokens_and_everyone() {
    // Goal: a provider token stays inside its path prefix and the gateway's limits; nobody takes a reserved path or another provider's path.
    let h = host().await;
    let p = who(Role::Provider, Some("weather"));
    let put = |who: Principal, provider: &'static str, body: api::EndpointBody| {
        let h = &h;
        async move { catalog::put_endpoint(h, &who, provider.to_owned(), move || Ok(body)).await }
    };
    assert!(forbidden(put(p.clone(), "weather", endpoint_body("/weatherman/x")).await));
    let mut big = endpoint_body("/weather/big");
    big.body_bytes_max = Some(2_000_000);
    assert_eq!(invalid_field(put(p.clone(), "weather", big).await), "body_bytes_max");
    let mut slow = endpoint_body("/weather/slow");
    slow.upstream_timeout_ms = Some(301_000);
    assert_eq!(invalid_field(put(p.clone(), "weather", slow).await), "upstream_timeout_ms");
    let mut long = endpoint_body("/weather/long");
    long.max_timeout_seconds = Some(3601);
    assert_eq!(invalid_field(put(p.clone(), "weather", long).await), "max_timeout_seconds");
    // Operators are not held to the prefix, but no one takes a reserved or another's path.
    assert_eq!(invalid_field(put(operator(), "weather", endpoint_body("/healthz")).await), "path");
    put(operator(), "other", endpoint_body("/weather/shared")).await.unwrap();
    assert_eq!(invalid_field(put(p.clone(), "weather", endpoint_body("/weather/shared")).await), "path");
    // An endpoint it has, outside its prefix (an operator made it): the provider may change it.
    put(operator(), "weather", endpoint_body("/outside")).await.unwrap();
    let mut repriced = endpoint_body("/outside");
    repriced.price = Some("0.002".into());
    put(p.clone(), "weather", repriced).await.unwrap();
    // Once deleted, it is a new endpoint again: outside the prefix, refused.
    let path = || Ok(api::EndpointPath { path: "/outside".into() });
    catalog::delete_endpoint(&h, &p, "weather".into(), path).await.unwrap();
    assert!(forbidden(put(p, "weather", endpoint_body("/outside")).await));
}

#[test]
fn scope_is_the_callers_own_unless_an_operator_chooses() {
    // Goal: operators choose a scope (default `*`), a provider token always gets its own (naming another is refused), finance none.
    let op = operator();
    assert_eq!(wallets::scope_for(&op, None, "x").unwrap(), "*");
    assert_eq!(wallets::scope_for(&op, Some("other".into()), "x").unwrap(), "other");
    let p = who(Role::Provider, Some("weather"));
    assert_eq!(wallets::scope_for(&p, None, "x").unwrap(), "weather");
    assert!(matches!(wallets::scope_for(&p, Some("other".into()), "x"), Err(ControlError::Forbidden { .. })));
    assert!(matches!(wallets::scope_for(&who(Role::Finance, None), None, "x"), Err(ControlError::Forbidden { .. })));
}

#[test]
fn a_patch_keeps_what_it_does_not_name() {
    // Goal: a patch replaces only the fields it names; a new price drops the other price form
    // and `free`, and `free = true` drops the price.
    let stored: EndpointSpec = serde_json::from_value(serde_json::json!({
        "path": "/weather/{city}", "price_atomic": "1000", "description": "Weather", "networks": ["eip155:8453"]
    }))
    .unwrap();
    let patch = |v: serde_json::Value| serde_json::from_value::<api::EndpointPatch>(v).unwrap();
    let p = catalog::patched(stored.clone(), patch(serde_json::json!({ "path": "/weather/{city}", "price": "0.002" })));
    assert_eq!((p.price.as_deref(), p.price_atomic.as_deref()), (Some("0.002"), None));
    assert_eq!(p.description.as_deref(), Some("Weather"));
    assert_eq!(p.networks, stored.networks);
    let d =
        catalog::patched(stored.clone(), patch(serde_json::json!({ "path": "/weather/{city}", "description": "Now" })));
    assert_eq!((d.description.as_deref(), d.price_atomic.as_deref()), (Some("Now"), Some("1000")));
    let f = catalog::patched(stored, patch(serde_json::json!({ "path": "/weather/{city}", "free": true })));
    assert_eq!((f.free, f.price_atomic), (Some(true), None));
}
