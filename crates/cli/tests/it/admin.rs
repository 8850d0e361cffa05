//! `tollgate admin` as a process, against a real `tollgate serve` on SQLite (its admin API on
//! port 0), and the OpenAPI document against the admin router's route list.

use std::path::PathBuf;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;
use tollgate_metering::{Decision, Ledger, LedgerOptions, NewAuditRecord};
use tollgate_test_support::{ConfigBuilder, MockUpstream, NetworkConfig, Reply, TestGateway};

const VAULT_ENV: &str = "TG_ADMIN_TEST_VAULT_KEY";
const VAULT_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const PAY_TO: &str = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C";
const WALLET: &str = "0x90f79bf6eb2c4f870365e785982e1f101e93b906";
const SECRET: &str = "sk-admin-cli-test-secret-7f3e";

/// A JSON-RPC stub that only answers `eth_chainId` (Base, 8453): enough for the gateway to
/// start with a network configured, which endpoint prices need.
pub(crate) async fn chain_id_rpc() -> String {
    let reply = Reply::with(|req| {
        let Ok(call) = serde_json::from_slice::<Value>(&req.body) else {
            return Reply::text(400, "not JSON");
        };
        Reply::json(200, &json!({ "jsonrpc": "2.0", "id": call["id"].clone(), "result": "0x2105" }))
    });
    MockUpstream::answering(reply).await.unwrap().detach()
}

/// A gateway with its admin API, and the operator token made by `tollgate admin bootstrap`.
struct Fixture {
    dir: tempfile::TempDir,
    config: PathBuf,
    db_url: String,
    admin_url: String,
    operator: String,
    _gateway: TestGateway,
    log: Arc<Mutex<Vec<String>>>,
}

impl Fixture {
    async fn start() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
        let config = dir.path().join("tollgate.toml");
        let rpc = chain_id_rpc().await;
        ConfigBuilder::new()
            .admin_listen()
            // The test upstreams are on loopback, which the SSRF guard refuses unless allowed.
            .allow_loopback_upstreams()
            .database(&db_url)
            .vault_env(VAULT_ENV)
            .set("control", "poll_interval_ms", 100u64)
            .relayer_env("ADMIN_TEST_RELAYER_KEY")
            .network(NetworkConfig::base(&rpc))
            .write(&config)
            .unwrap();
        // The first token is made before the gateway ever ran: bootstrap migrates the database.
        let out =
            run_cli(&["admin", "bootstrap", "--config", config.to_str().unwrap(), "--label", "first"], &[], None).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        let operator = created["token"].as_str().unwrap().to_owned();
        assert!(operator.starts_with("tgadm_") && operator.len() == 6 + 64, "{operator}");
        assert_eq!(created["record"]["role"], "operator");

        let log: Arc<Mutex<Vec<String>>> = Default::default();
        let relayer = format!("{:#x}", tollgate_test_support::anvil_key(9).to_bytes());
        let env = [(VAULT_ENV, VAULT_KEY.to_owned()), ("ADMIN_TEST_RELAYER_KEY", relayer)];
        let served = crate::serve::spawn_serve_with_admin(&config, &env, log.clone()).await;
        let admin_url = served.admin_url.expect("admin API line");
        Fixture { dir, config, db_url, admin_url, operator, _gateway: served.gateway, log }
    }

    /// `tollgate admin --url <admin> <args>` with `token` in TOLLGATE_ADMIN_TOKEN.
    async fn cli(&self, token: &str, args: &[&str]) -> Output {
        self.cli_stdin(token, args, None).await
    }

    async fn cli_stdin(&self, token: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let full = [&["admin", "--url", &self.admin_url][..], args].concat();
        run_cli(&full, &[("TOLLGATE_ADMIN_TOKEN", token)], stdin).await
    }

    /// Runs and expects success; returns the JSON printed.
    async fn ok(&self, token: &str, args: &[&str]) -> Value {
        let out = self.cli(token, args).await;
        assert!(
            out.status.success(),
            "{args:?}: exit {:?}: {}\ngateway log:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr),
            self.log.lock().unwrap().join("\n")
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Runs and expects exit `code` with `needle` on stderr.
    async fn fails(&self, token: &str, args: &[&str], code: i32, needle: &str) -> Output {
        let out = self.cli(token, args).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: expected `{needle}` in: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        out
    }

    async fn provider(&self, id: &str) {
        self.ok(&self.operator, &["provider", "put", id, "--pay-to", PAY_TO, "--upstream", "http://127.0.0.1:9"]).await;
    }

    async fn token(&self, role: &str, provider: Option<&str>) -> String {
        let mut args = vec!["token", "create", "--role", role, "--label", "test"];
        if let Some(p) = provider {
            args.extend(["--provider", p]);
        }
        let created = self.ok(&self.operator, &args).await;
        created["token"].as_str().unwrap().to_owned()
    }
}

async fn run_cli(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .args(args)
        .env(VAULT_ENV, VAULT_KEY)
        .env("ADMIN_TEST_RELAYER_KEY", format!("{:#x}", tollgate_test_support::anvil_key(9).to_bytes()))
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_ADMIN_URL");
    for (k, v) in env {
        command.env(k, v);
    }
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap()
}

// Goal: `bootstrap` makes a working operator token (whoami), refuses a second one without
// --force, and the operator creates provider and finance tokens (shown once, listed without
// the token), revokes one (then refused, exit 3 admin_unauthorized); no token is a usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_whoami_and_token_lifecycle() {
    let f = Fixture::start().await;
    let me = f.ok(&f.operator, &["whoami"]).await;
    assert_eq!(me["role"], "operator");

    let config = f.config.to_str().unwrap();
    let again = run_cli(&["admin", "bootstrap", "--config", config], &[], None).await;
    assert_eq!(again.status.code(), Some(1), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let file = f.dir.path().join("second.token");
    let forced =
        run_cli(&["admin", "bootstrap", "--config", config, "--force", "--out", file.to_str().unwrap()], &[], None)
            .await;
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    let forced: Value = serde_json::from_slice(&forced.stdout).unwrap();
    assert!(forced.get("token").is_none(), "written to the file, not printed: {forced}");
    let second = std::fs::read_to_string(&file).unwrap();
    let by_file = f.cli("", &["--token-file", file.to_str().unwrap(), "whoami"]).await;
    assert!(by_file.status.success(), "{}", String::from_utf8_lossy(&by_file.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&by_file.stdout).unwrap()["token_id"], forced["record"]["id"]);

    f.provider("weather").await;
    let provider = f.token("provider", Some("weather")).await;
    let finance = f.token("finance", None).await;
    let me = f.ok(&provider, &["whoami"]).await;
    assert_eq!((me["role"].as_str(), me["provider"].as_str()), (Some("provider"), Some("weather")));
    assert_eq!(f.ok(&finance, &["whoami"]).await["role"], "finance");
    f.fails(&f.operator, &["token", "create", "--role", "provider"], 3, "invalid_request: provider").await;

    let list = f.ok(&f.operator, &["token", "list"]).await;
    let text = list.to_string();
    assert_eq!(list["tokens"].as_array().unwrap().len(), 4, "{list:#}");
    for secret in [&f.operator, &provider, &finance, second.trim()] {
        assert!(!text.contains(secret.trim_start_matches("tgadm_")), "token listed: {text}");
    }
    let finance_id = f.ok(&finance, &["whoami"]).await["token_id"].as_str().unwrap().to_owned();
    let revoked = f.ok(&f.operator, &["token", "revoke", &finance_id]).await;
    assert_eq!(revoked["revoked"], true);
    f.fails(&finance, &["whoami"], 3, "admin_unauthorized").await;
    f.fails(&f.operator, &["token", "revoke", "0000000000000000"], 3, "not_found").await;
    f.fails(&provider, &["token", "list"], 3, "admin_forbidden").await;

    let no_token = run_cli(&["admin", "--url", &f.admin_url, "whoami"], &[], None).await;
    assert_eq!(no_token.status.code(), Some(2), "{}", String::from_utf8_lossy(&no_token.stderr));
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("TOLLGATE_ADMIN_TOKEN"));
    let unreachable =
        run_cli(&["admin", "--url", "http://127.0.0.1:9", "whoami"], &[("TOLLGATE_ADMIN_TOKEN", "x")], None).await;
    assert_eq!(unreachable.status.code(), Some(6), "{}", String::from_utf8_lossy(&unreachable.stderr));
}

// Goal: provider put → endpoint put → a price change makes a second price version (listed by
// `endpoint prices`, the newest current), an unchanged put makes none; disable/enable show in
// `endpoint list`; an unknown field of --spec-json is refused naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_prices_are_versioned() {
    let f = Fixture::start().await;
    f.provider("weather").await;
    let providers = f.ok(&f.operator, &["provider", "list"]).await;
    assert_eq!(providers["providers"][0]["id"], "weather", "{providers:#}");
    let path = "/weather/{city}";
    let put = |price: &'static str| {
        let f = &f;
        async move {
            f.ok(&f.operator, &["endpoint", "put", "weather", "--path", path, "--price", price, "--description", "d"])
                .await
        }
    };
    let first = put("0.001").await;
    assert_eq!(first["new_price_version"], true, "{first:#}");
    let same = put("0.001").await;
    assert_eq!((same["new_price_version"].as_bool(), &same["price_version"]), (Some(false), &first["price_version"]));
    let second = put("0.002").await;
    assert_eq!(second["new_price_version"], true);
    assert_ne!(second["price_version"], first["price_version"]);

    let prices = f.ok(&f.operator, &["endpoint", "prices", "weather", "--path", path]).await;
    let versions = prices["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{prices:#}");
    assert_eq!(prices["current"], second["price_version"]);
    assert!(prices.to_string().contains("2000"), "atomic price of 0.002: {prices:#}");

    let disabled = f.ok(&f.operator, &["endpoint", "disable", "weather", "--path", path]).await;
    assert_eq!(disabled["enabled"], false);
    let list = f.ok(&f.operator, &["endpoint", "list", "weather"]).await;
    assert_eq!(list["endpoints"][0]["enabled"], false, "{list:#}");
    f.ok(&f.operator, &["endpoint", "enable", "weather", "--path", path]).await;
    let list = f.ok(&f.operator, &["endpoint", "list", "weather"]).await;
    assert_eq!(list["endpoints"][0]["enabled"], true);
    f.fails(&f.operator, &["endpoint", "disable", "weather", "--path", "/nope"], 3, "not_found").await;

    let spec = r#"{"path":"/alerts","price":"0.01","prize":1}"#;
    f.fails(&f.operator, &["endpoint", "put", "weather", "--spec-json", spec], 3, "invalid_request: prize").await;
    let spec = r#"{"path":"/alerts","price_atomic":"5000","methods":["GET","POST"]}"#;
    f.ok(&f.operator, &["endpoint", "put", "weather", "--spec-json", spec]).await;
    f.fails(&f.operator, &["endpoint", "put", "weather", "--path", "/x", "--price=-1"], 3, "invalid_request: price")
        .await;
}

// Goal: `credential rotate` reads the secret from stdin (or --secret-file), `credential list`
// shows the versions without any secret material, and `credential revoke` marks one revoked;
// the secret never appears in any output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_rotation_from_stdin() {
    let f = Fixture::start().await;
    let upstream = "http://127.0.0.1:9";
    f.ok(&f.operator, &["provider", "put", "weather", "--pay-to", PAY_TO, "--upstream", upstream, "--vault", "key"])
        .await;
    let out = f.cli_stdin(&f.operator, &["credential", "rotate", "weather", "key"], Some(&format!("{SECRET}\n"))).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v1: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v1["version"], 1);
    let file = f.dir.path().join("secret");
    std::fs::write(&file, format!("{SECRET}-2")).unwrap();
    let v2 =
        f.ok(&f.operator, &["credential", "rotate", "weather", "key", "--secret-file", file.to_str().unwrap()]).await;
    assert_eq!(v2["version"], 2);
    let empty = f.cli_stdin(&f.operator, &["credential", "rotate", "weather", "key"], Some("\n")).await;
    assert_eq!(empty.status.code(), Some(2), "{}", String::from_utf8_lossy(&empty.stderr));

    let revoked = f.ok(&f.operator, &["credential", "revoke", "weather", "key", "1"]).await;
    assert_eq!(revoked["revoked"], true);
    let list = f.ok(&f.operator, &["credential", "list", "weather"]).await;
    let versions = list["credentials"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{list:#}");
    for v in versions {
        assert_eq!(v["name"], "key");
        assert!(v.get("ciphertext").is_none() && v.get("nonce").is_none() && v.get("secret").is_none(), "{v}");
    }
    let revoked_of = |n: u64| versions.iter().find(|v| v["version"] == n).unwrap()["revoked_unix_s"].is_null();
    assert!(!revoked_of(1) && revoked_of(2), "version 1 revoked, 2 live: {list:#}");
    f.fails(&f.operator, &["credential", "revoke", "weather", "key", "9"], 3, "not_found").await;
    assert!(!list.to_string().contains(SECRET));
    assert!(!String::from_utf8_lossy(&out.stderr).contains(SECRET));
}

// Goal: `wallet set` stores a policy (caps typed in USDC, or atomic units with the `atomic`
// suffix, stored atomic; endpoints; registered), `wallet revoke`/`reinstate` flip only
// `revoked`, `wallet list` filters by scope and wallet; a bad address is refused (exit 3,
// invalid_request) and a cap that is neither USDC nor suffixed atomic units is a usage error
// (exit 2) naming both forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_policies_set_revoke_reinstate() {
    let f = Fixture::start().await;
    f.provider("weather").await;
    let set = f
        .ok(
            &f.operator,
            &[
                "wallet",
                "set",
                WALLET,
                "--registered",
                "--endpoints",
                "weather:/a,weather:/b",
                "--per-call-max",
                "0.01",
                "--daily-cap",
                "50000atomic",
                "--monthly-cap",
                "0.9",
            ],
        )
        .await;
    assert_eq!(set["policy"]["scope"], "*", "{set:#}");
    f.ok(&f.operator, &["wallet", "set", WALLET, "--scope", "weather", "--daily-cap", "7"]).await;
    let global = f.ok(&f.operator, &["wallet", "list", "--scope", "*", "--wallet", WALLET]).await;
    let p = &global["policies"][0];
    assert_eq!(global["policies"].as_array().unwrap().len(), 1, "{global:#}");
    assert_eq!((p["registered"].as_bool(), p["revoked"].as_bool()), (Some(true), Some(false)));
    assert_eq!(
        (p["per_call_max"].as_u64(), p["daily_cap"].as_u64(), p["monthly_cap"].as_u64()),
        (Some(10_000), Some(50_000), Some(900_000))
    );
    assert_eq!(p["endpoints"], json!(["weather:/a", "weather:/b"]));
    assert_eq!(f.ok(&f.operator, &["wallet", "list"]).await["policies"].as_array().unwrap().len(), 2);

    assert_eq!(f.ok(&f.operator, &["wallet", "revoke", WALLET]).await["revoked"], true);
    let p = f.ok(&f.operator, &["wallet", "list", "--scope", "*"]).await["policies"][0].clone();
    assert_eq!((p["revoked"].as_bool(), p["daily_cap"].as_u64()), (Some(true), Some(50_000)), "{p:#}");
    let scoped = f.ok(&f.operator, &["wallet", "list", "--scope", "weather"]).await;
    assert_eq!(scoped["policies"][0]["revoked"], false, "another scope is untouched");
    assert_eq!(f.ok(&f.operator, &["wallet", "reinstate", WALLET]).await["revoked"], false);
    let p = f.ok(&f.operator, &["wallet", "list", "--scope", "*"]).await["policies"][0].clone();
    assert_eq!(p["revoked"], false);

    f.fails(&f.operator, &["wallet", "set", "0x1234"], 3, "invalid_request: wallet").await;
    for bad in ["0.0000001", "5e3", "1.5atomic"] {
        let out = f.cli(&f.operator, &["wallet", "set", WALLET, "--daily-cap", bad]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("like 0.013") && stderr.contains("13000atomic"), "{bad}: {stderr}");
    }
    f.fails(&f.operator, &["wallet", "revoke", WALLET, "--scope", "nobody"], 3, "invalid_request: scope").await;
}

// Goal: `allowlist on|off` flips the setting `settings show` reports (and bumps the change
// counter); finance may not change it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_on_and_off() {
    let f = Fixture::start().await;
    let before = f.ok(&f.operator, &["settings", "show"]).await;
    assert_eq!(before["allowlist_mode"], false);
    assert_eq!(f.ok(&f.operator, &["allowlist", "on"]).await["allowlist_mode"], true);
    let on = f.ok(&f.operator, &["settings", "show"]).await;
    assert_eq!(on["allowlist_mode"], true);
    assert!(on["version"].as_u64() > before["version"].as_u64(), "{before} → {on}");
    f.ok(&f.operator, &["allowlist", "off"]).await;
    assert_eq!(f.ok(&f.operator, &["settings", "show"]).await["allowlist_mode"], false);
    let finance = f.token("finance", None).await;
    f.fails(&finance, &["allowlist", "on"], 3, "admin_forbidden").await;
    let bad = f.cli(&f.operator, &["allowlist", "maybe"]).await;
    assert_eq!(bad.status.code(), Some(2));
}

fn audit_record(i: u64, provider: &str, decision: Decision) -> NewAuditRecord {
    NewAuditRecord {
        at_unix_ms: 1_767_225_600_000 + i,
        wallet: Some(WALLET.parse().unwrap()),
        provider: Some(provider.to_owned()),
        endpoint: Some(format!("{provider}:/x")),
        method: "GET".to_owned(),
        path: "/x".to_owned(),
        price_version: Some(1),
        decision,
        reason: if decision == Decision::Accepted { "ok".to_owned() } else { "wallet_revoked".to_owned() },
        credential: None,
        credential_version: None,
        upstream_status: Some(200),
        latency_ms: 3,
        entry_id: None,
        tx_hash: None,
    }
}

// Goal: audit records appended to the chain are paged by `audit query` (next_after_seq),
// filtered, exported as JSON lines, and verified intact (API and --config); after a row is
// edited in the database (its no-update trigger dropped) both verifications exit 8 naming the
// broken sequence number. Finance may read and verify; revenue and ledger entries answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_query_export_and_verify() {
    let f = Fixture::start().await;
    let ledger = Ledger::connect(&f.db_url, LedgerOptions::default()).await.unwrap();
    let records = [
        audit_record(1, "weather", Decision::Accepted),
        audit_record(2, "maps", Decision::Denied),
        audit_record(3, "weather", Decision::Accepted),
    ];
    assert_eq!(ledger.audit().append(&records).await.unwrap(), 3);
    ledger.close().await;
    let finance = f.token("finance", None).await;

    let page = f.ok(&finance, &["audit", "query", "--limit", "2"]).await;
    assert_eq!(page["records"].as_array().unwrap().len(), 2, "{page:#}");
    assert_eq!(page["next_after_seq"], 2);
    let rest = f.ok(&finance, &["audit", "query", "--after-seq", "2"]).await;
    assert_eq!(rest["records"][0]["seq"], 3);
    assert!(rest["next_after_seq"].is_null());
    let denied = f.ok(&f.operator, &["audit", "query", "--decision", "denied", "--wallet", WALLET]).await;
    assert_eq!(denied["records"].as_array().unwrap().len(), 1);
    assert_eq!(denied["records"][0]["reason"], "wallet_revoked");

    let out = f.cli(&f.operator, &["audit", "export", "--provider", "weather"]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(lines[1]["prev_hash"].as_str().unwrap().len(), 64);
    let file = f.dir.path().join("audit.jsonl");
    f.ok(&f.operator, &["audit", "query", "--limit", "1"]).await;
    let out = f.cli(&f.operator, &["audit", "export", "--out", file.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3);

    let verified = f.ok(&finance, &["audit", "verify"]).await;
    assert_eq!((verified["intact"].as_bool(), verified["records"].as_u64()), (Some(true), Some(3)));
    let config = f.config.to_str().unwrap();
    let offline = run_cli(&["admin", "audit", "verify", "--config", config], &[], None).await;
    assert!(offline.status.success(), "{}", String::from_utf8_lossy(&offline.stderr));

    f.provider("weather").await;
    let revenue = f.ok(&finance, &["revenue", "weather", "--from-unix-s", "0", "--to-unix-s", "4000000000"]).await;
    assert_eq!(revenue["lines"], json!([]));
    // One time convention: RFC 3339 or unix seconds, the same instant either way.
    let rfc = f.ok(&finance, &["revenue", "weather", "--from", "2026-01-01T00:00:00Z", "--to", "4000000000"]).await;
    assert_eq!((rfc["from_unix_s"].as_u64(), rfc["to_unix_s"].as_u64()), (Some(1_767_225_600), Some(4_000_000_000)));
    let audit = f.ok(&finance, &["audit", "query", "--from", "1970-01-01T00:00:00Z", "--to", "4000000000"]).await;
    assert_eq!(audit["records"].as_array().unwrap().len(), 3, "{audit}");
    let none = f.ok(&finance, &["audit", "query", "--from", "2100-01-01T00:00:00Z"]).await;
    assert_eq!(none["records"], json!([]), "{none}");
    let entries = f.ok(&finance, &["ledger", "entries", "--provider", "weather", "--limit", "5"]).await;
    assert_eq!(entries["entries"], json!([]));
    let owed = f.ok(&finance, &["ledger", "entries", "--state", "refund_owed", "--from", "2026-01-01T00:00:00Z"]).await;
    assert_eq!(owed["entries"], json!([]));
    f.fails(&finance, &["ledger", "entries", "--state", "owed"], 3, "invalid_request: state").await;

    // Tamper: an edit needs the trigger gone first (as an attacker with the file would).
    let pool = sqlx::SqlitePool::connect(&f.db_url).await.unwrap();
    sqlx::query("DROP TRIGGER audit_log_no_update").execute(&pool).await.unwrap();
    sqlx::query("UPDATE audit_log SET reason = 'ok' WHERE seq = 2").execute(&pool).await.unwrap();
    pool.close().await;
    let offline = run_cli(&["admin", "audit", "verify", "--config", config], &[], None).await;
    let stderr = String::from_utf8_lossy(&offline.stderr);
    assert_eq!(offline.status.code(), Some(8), "{stderr}");
    assert!(stderr.contains("audit chain broken at seq 2"), "{stderr}");
    let report: Value = serde_json::from_slice(&offline.stdout).unwrap();
    assert_eq!((report["intact"].as_bool(), report["broken_at_seq"].as_u64()), (Some(false), Some(2)));
    f.fails(&f.operator, &["audit", "verify"], 8, "audit chain broken at seq 2").await;
}

// Goal: a provider token works on its own provider and is refused (exit 3, admin_forbidden)
// on another provider's endpoints, credentials, revenue and wallet scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_token_is_confined_to_its_provider() {
    let f = Fixture::start().await;
    // A provider token adds endpoints only under the path prefix its operator gave it.
    let put =
        ["provider", "put", "weather", "--pay-to", PAY_TO, "--upstream", "http://127.0.0.1:9", "--strip-prefix", "/w"];
    f.ok(&f.operator, &put).await;
    f.provider("maps").await;
    let weather = f.token("provider", Some("weather")).await;
    f.ok(&weather, &["endpoint", "put", "weather", "--path", "/w", "--price-atomic", "1000"]).await;
    let own = f.ok(&weather, &["provider", "list"]).await;
    assert_eq!(own["providers"].as_array().unwrap().len(), 1, "sees only its own: {own:#}");
    let forbidden = [
        vec!["endpoint", "put", "maps", "--path", "/m", "--price-atomic", "1000"],
        vec!["endpoint", "list", "maps"],
        vec!["endpoint", "disable", "maps", "--path", "/m"],
        vec!["credential", "list", "maps"],
        vec!["revenue", "maps"],
        vec!["wallet", "set", WALLET, "--scope", "maps"],
        vec!["provider", "put", "weather", "--pay-to", PAY_TO, "--upstream", "http://127.0.0.1:9"],
    ];
    for args in forbidden {
        f.fails(&weather, &args, 3, "admin_forbidden").await;
    }
    let scoped = f.ok(&weather, &["wallet", "set", WALLET, "--daily-cap", "5"]).await;
    assert_eq!(scoped["policy"]["scope"], "weather", "a provider token acts in its own scope");
}

/// The subcommands listed under a `--help` output's `Commands:` heading (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

// Goal: `--help` of `tollgate admin` and of every subcommand under it, at every depth, shows an
// example invocation of `tollgate admin`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_subcommand_help_has_an_example() {
    let mut queue: Vec<Vec<String>> = vec![vec!["admin".to_owned()]];
    let mut seen = 0;
    while let Some(path) = queue.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).chain(["--help"]).collect();
        let out = run_cli(&args, &[], None).await;
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{path:?}");
        assert!(help.contains("Example") && help.contains("  tollgate admin "), "{path:?} has no example:\n{help}");
        for sub in subcommands(&help) {
            queue.push([path.clone(), vec![sub]].concat());
        }
        seen += 1;
    }
    // admin, its 15 commands and the 32 below the groups.
    assert_eq!(seen, 48, "walked {seen} help pages");
}

// Goal: the OpenAPI document served at /admin/openapi.json lists exactly the admin router's
// routes (paths and methods), each with roles, the bearer scheme, its path parameters, the error
// responses and closed request bodies; `tollgate admin openapi` prints the same document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_routes() {
    let doc: Value = tollgate_admin_api::openapi::document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            documented.push((method.to_ascii_uppercase(), path.clone()));
            let what = format!("{method} {path}");
            let roles = op["x-roles"].as_array().unwrap_or_else(|| panic!("{what}: no x-roles"));
            assert!(!roles.is_empty(), "{what}");
            assert!(op["responses"]["401"].is_object(), "{what}: no 401 response");
            // Every route but these two refuses some role or another provider's records.
            let any_token = ["/admin/whoami", "/admin/openapi.json"].contains(&path.as_str());
            assert_eq!(op["responses"]["403"].is_object(), !any_token, "{what}: 403 response");
            assert!(op["responses"]["200"].is_object(), "{what}: no 200 response");
            if let Some(body) = op.get("requestBody") {
                let schema = &body["content"]["application/json"]["schema"];
                let schema = match schema["$ref"].as_str() {
                    Some(r) => &doc["components"]["schemas"][r.trim_start_matches("#/components/schemas/")],
                    None => schema,
                };
                assert_eq!(schema["additionalProperties"], false, "{what}: request body not closed");
            }
            for name in path.split('{').skip(1).map(|s| s.split('}').next().unwrap()) {
                let params = [op["parameters"].as_array(), item["parameters"].as_array()];
                let declared = params.iter().flatten().flat_map(|a| a.iter()).any(|p| {
                    let p = match p["$ref"].as_str() {
                        Some(r) => &doc["components"]["parameters"][r.trim_start_matches("#/components/parameters/")],
                        None => p,
                    };
                    p["name"] == name && p["in"] == "path"
                });
                assert!(declared, "{what}: path parameter {name} undeclared");
            }
        }
    }
    let mut routes: Vec<(String, String)> =
        tollgate_admin_api::ROUTES.iter().map(|r| (r.method.as_str().to_owned(), r.path.to_owned())).collect();
    documented.sort();
    routes.sort();
    assert_eq!(documented, routes);
    let schema = |r: &Value| {
        let name = r["$ref"].as_str().unwrap().trim_start_matches("#/components/schemas/").to_owned();
        doc["components"]["schemas"][name].clone()
    };
    let detail = schema(&doc["components"]["schemas"]["Error"]["properties"]["error"]);
    let codes = schema(&detail["properties"]["code"])["enum"].as_array().unwrap().clone();
    for code in
        ["admin_unauthorized", "admin_forbidden", "invalid_request", "upstream_refused", "not_found", "not_configured"]
    {
        assert!(codes.iter().any(|c| c == code), "error code {code} undocumented");
    }

    let f = Fixture::start().await;
    let served = f.ok(&f.operator, &["openapi"]).await;
    assert_eq!(served, doc);
}

// Goal: an unknown query parameter is refused like an unknown body field: 400 in the error
// envelope with code invalid_request, naming the parameter (not axum's plain-text rejection).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameter_is_refused_by_name() {
    let f = Fixture::start().await;
    let resp = tollgate_test_support::http()
        .get(format!("{}/admin/wallets?scope=*&bogus=1", f.admin_url))
        .header("authorization", format!("Bearer {}", f.operator))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("bogus: unknown field"), "{body}");
}
