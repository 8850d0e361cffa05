//! `ConfigBuilder`: the text it builds is valid TOML with the tables, networks, providers and
//! routes asked for, in the documented order.

use alloy_primitives::Address;
use tollgate_test_support::{ConfigBuilder, NetworkConfig, ProviderConfig, RouteConfig};

// Goal: every builder call lands where the gateway reads it — keys in their tables (set
// twice: the last value wins, unset: gone), networks and providers as arrays of tables with
// routes under their provider, strings escaped, raw lines and tails verbatim.
#[test]
fn builds_the_tables_asked_for() {
    let payee = Address::repeat_byte(0x11);
    let text = ConfigBuilder::new()
        .public_url("http://gateway.test")
        .database("sqlite://x.db?mode=rwc")
        .relayer_env("R")
        .set("settlement", "receipt_timeout_ms", 5u64)
        .set("settlement", "receipt_timeout_ms", 10_000u64)
        .set("settlement", "recovery_grace_s", 1u64)
        .unset("settlement", "recovery_grace_s")
        .lines("server", "body_bytes_max = 4096")
        .allow_loopback_upstreams()
        .vault_env("V")
        .network(NetworkConfig::base("http://127.0.0.1:8545"))
        .provider(
            ProviderConfig::new("weather", payee, "http://127.0.0.1:9")
                .credential_header("K")
                .upstream_timeout_ms(1000)
                .route(RouteConfig::new("/weather/{city}", 1000).description("say \"hi\""))
                .route(RouteConfig::new("/echo", 5).methods(&["POST"]).settlement("deferred")),
        )
        .provider(ProviderConfig::new("other", payee, "http://127.0.0.1:10").credential_vault("main"))
        .raw("[reconciliation]\ninterval_s = 60")
        .build();
    let doc: toml::Table = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(doc["server"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(doc["server"]["body_bytes_max"].as_integer(), Some(4096));
    assert_eq!(doc["settlement"]["receipt_timeout_ms"].as_integer(), Some(10_000));
    assert!(doc["settlement"].get("recovery_grace_s").is_none());
    assert_eq!(doc["admin"]["upstream_allow"].as_array().unwrap().len(), 1);
    assert_eq!(doc["networks"][0]["id"].as_str(), Some("eip155:8453"));
    let providers = doc["providers"].as_array().unwrap();
    assert_eq!(providers.len(), 2);
    assert_eq!(providers[0]["credential"]["secret_env"].as_str(), Some("K"));
    assert_eq!(providers[0]["routes"][0]["description"].as_str(), Some("say \"hi\""));
    assert_eq!(providers[0]["routes"][0]["price_atomic"].as_str(), Some("1000"));
    assert_eq!(providers[0]["routes"][1]["methods"][0].as_str(), Some("POST"));
    assert_eq!(providers[1]["credential"]["vault"].as_str(), Some("main"));
    assert_eq!(doc["reconciliation"]["interval_s"].as_integer(), Some(60));
    // The fixed table order: [server] before [admin] before [database] ... before arrays.
    let at = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle} in\n{text}"));
    assert!(at("[server]") < at("[admin]") && at("[admin]") < at("[database]"));
    assert!(at("[vault]\nmaster_key_env = \"V\"\n") < at("[settlement]"));
    assert!(at("[settlement]") < at("[[networks]]") && at("[[networks]]") < at("[[providers]]"));
}
