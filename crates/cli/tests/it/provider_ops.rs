//! The operator's day through the real binary: an admin change survives `tollgate serve`
//! restarting (and the file's differing value is reported at startup and by
//! `tollgate admin diff`), `tollgate admin` finds the API from the configuration file, and
//! relative paths in the file resolve against its folder.

use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::process::Command;
use tollgate_test_support::{ConfigBuilder, NetworkConfig, PgDatabase, ProviderConfig, RouteConfig, TestGateway};

use crate::admin::chain_id_rpc;

const RELAYER_ENV: &str = "PROVIDER_OPS_RELAYER_KEY";
const ROUTE: &str = "weather:/weather/{city}";

fn relayer_key() -> String {
    format!("{:#x}", tollgate_test_support::anvil_key(9).to_bytes())
}

/// `tollgate <args>` with `env`, in `cwd` when given; no admin URL or token inherited.
async fn tollgate(args: &[&str], env: &[(&str, &str)], cwd: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .args(args)
        .env(RELAYER_ENV, relayer_key())
        .env_remove("TOLLGATE_ADMIN_TOKEN")
        .env_remove("TOLLGATE_ADMIN_URL")
        .env_remove("TOLLGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    for (k, v) in env {
        command.env(k, v);
    }
    let child = command.spawn().unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap()
}

fn json(out: &Output, what: &str) -> Value {
    assert!(out.status.success(), "{what}: exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn the_endpoint(list: &Value) -> Value {
    list["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == ROUTE).cloned().expect("the endpoint is listed")
}

/// A configuration with one provider and one priced route, the ledger at `db_url`.
async fn write_config(path: &Path, db_url: &str) {
    let rpc = chain_id_rpc().await;
    let payee = tollgate_test_support::random_key().address();
    ConfigBuilder::new()
        .admin_listen()
        .allow_loopback_upstreams()
        .database(db_url)
        .set("control", "poll_interval_ms", 100u64)
        .relayer_env(RELAYER_ENV)
        .network(NetworkConfig::base(&rpc))
        .provider(
            ProviderConfig::new("weather", payee, "http://127.0.0.1:9")
                .route(RouteConfig::priced("/weather/{city}", "0.001").description("Weather")),
        )
        .write(path)
        .unwrap();
}

// Goal: a price changed with `tollgate admin endpoint set-price` is kept when `tollgate serve`
// restarts on the unchanged file (the description it did not name is kept too), the restart
// logs a WARN naming the route and the field, and `tollgate admin diff --config` lists the
// difference; `tollgate admin` reaches the API from `[admin] listen` of `--config` or
// TOLLGATE_CONFIG, and a connection failure names the URL and how to change it.
async fn admin_change_survives_restart(db_url: &str, dir: &Path) {
    let config = dir.join("tollgate.toml");
    write_config(&config, db_url).await;
    let cfg = config.to_str().unwrap();
    let created = json(&tollgate(&["admin", "bootstrap", "--config", cfg], &[], None).await, "bootstrap");
    let token = created["token"].as_str().unwrap().to_owned();
    let auth = [("TOLLGATE_ADMIN_TOKEN", token.as_str())];

    let log: Arc<Mutex<Vec<String>>> = Default::default();
    let env = [(RELAYER_ENV, relayer_key())];
    let mut gw = TestGateway::binary_logged(env!("CARGO_BIN_EXE_tollgate"), &config, &env, log.clone()).await.unwrap();
    let admin = gw.admin_url().unwrap().to_owned();

    let set = tollgate(&["admin", "--url", &admin, "endpoint", "set-price", ROUTE, "0.002"], &auth, None).await;
    assert_eq!(json(&set, "set-price")["new_price_version"], true);
    let list = tollgate(&["admin", "--url", &admin, "endpoint", "list", "weather"], &auth, None).await;
    let e = the_endpoint(&json(&list, "list"));
    assert_eq!((e["spec"]["price"].as_str(), e["spec"]["description"].as_str()), (Some("0.002"), Some("Weather")));

    gw.restart().await.unwrap();
    let admin = gw.admin_url().unwrap().to_owned();
    let list = tollgate(&["admin", "--url", &admin, "endpoint", "list", "weather"], &auth, None).await;
    let e = the_endpoint(&json(&list, "list after restart"));
    assert_eq!(e["spec"]["price"], "0.002", "the restart reverted the admin change: {e}");
    assert_eq!(e["prices"][0]["amount"], "2000");
    assert_eq!(e["spec"]["description"], "Weather");
    let warned =
        log.lock().unwrap().iter().any(|l| l.contains("WARN") && l.contains(ROUTE) && l.contains("field=price"));
    assert!(warned, "no startup WARN naming the route and field:\n{}", log.lock().unwrap().join("\n"));

    let diff = tollgate(&["admin", "--url", &admin, "diff", "--config", cfg], &auth, None).await;
    let diff = json(&diff, "diff");
    let d = diff["differences"].as_array().unwrap();
    assert_eq!(d.len(), 1, "{diff:#}");
    assert_eq!((d[0]["target"].as_str(), d[0]["field"].as_str()), (Some(ROUTE), Some("price")));
    assert_eq!((d[0]["file"].as_str(), d[0]["live"].as_str()), (Some("0.001"), Some("0.002")));

    // The API's address from a configuration file's [admin] listen: --config, then TOLLGATE_CONFIG.
    let port = admin.rsplit(':').next().unwrap().trim_end_matches('/');
    let cli_config = dir.join("cli.toml");
    std::fs::write(&cli_config, format!("[admin]\nlisten = \"0.0.0.0:{port}\"\n")).unwrap();
    let cli_cfg = cli_config.to_str().unwrap();
    let me = tollgate(&["admin", "--config", cli_cfg, "whoami"], &auth, None).await;
    assert_eq!(json(&me, "whoami --config")["role"], "operator");
    let by_env = [("TOLLGATE_ADMIN_TOKEN", token.as_str()), ("TOLLGATE_CONFIG", cli_cfg)];
    assert_eq!(json(&tollgate(&["admin", "whoami"], &by_env, None).await, "whoami by env")["role"], "operator");
    let dead = dir.join("dead.toml");
    std::fs::write(&dead, "[admin]\nlisten = \"127.0.0.1:9\"\n").unwrap();
    let out = tollgate(&["admin", "--config", dead.to_str().unwrap(), "whoami"], &auth, None).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    for needle in ["http://127.0.0.1:9", "[admin] listen in", "--url", "TOLLGATE_ADMIN_URL"] {
        assert!(stderr.contains(needle), "`{needle}` missing from: {stderr}");
    }
    gw.terminate(std::time::Duration::from_secs(10)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_change_survives_restart_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", dir.path().join("ledger.db").display());
    admin_change_survives_restart(&db, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_change_survives_restart_postgres() {
    let Some(pg) = PgDatabase::create("provider_ops").await else { return };
    let dir = tempfile::tempdir().unwrap();
    admin_change_survives_restart(&pg.url, dir.path()).await;
    pg.drop_now().await;
}

// Goal: relative paths in the file (the SQLite database, a secret file) resolve against the
// file's folder whatever the working directory; a ledger left at the same relative path from
// the working directory (where an older build put it) refuses the start, naming both paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relative_paths_resolve_against_the_config_folder() {
    let home = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = home.path().join("tollgate.toml");
    write_config(&config, "sqlite://ledger.db?mode=rwc").await;
    // The relayer key from a file named relatively, instead of the environment.
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(&format!("relayer_key_env = \"{RELAYER_ENV}\""), "relayer_key_file = \"relayer.key\"");
    assert!(text.contains("relayer_key_file"), "{text}");
    std::fs::write(&config, text).unwrap();
    let key = home.path().join("relayer.key");
    std::fs::write(&key, relayer_key()).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let cfg = config.to_str().unwrap();
    let out = tollgate(&["admin", "bootstrap", "--config", cfg], &[], Some(elsewhere.path())).await;
    json(&out, "bootstrap from another folder");
    assert!(home.path().join("ledger.db").exists(), "the ledger is beside the configuration file");
    assert!(!elsewhere.path().join("ledger.db").exists(), "nothing in the working directory");

    // A ledger only at the working directory's relative path: refused, both paths named.
    let moved = tempfile::tempdir().unwrap();
    let config2 = moved.path().join("tollgate.toml");
    std::fs::copy(&config, &config2).unwrap();
    std::fs::copy(&key, moved.path().join("relayer.key")).unwrap();
    let out = tollgate(&["admin", "bootstrap", "--config", config2.to_str().unwrap()], &[], Some(home.path())).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("database.url") && stderr.contains(&home.path().join("ledger.db").display().to_string()),
        "{stderr}"
    );
}
