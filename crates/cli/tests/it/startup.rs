//! `tollgate serve` refusing or warning at startup, as a process: configuration errors that
//! must not print a secret, and settings that would weaken a guarantee.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::process::Command;

const RELAYER_HEX: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// A configuration on `rpc` with `settlement` and `extra` spliced in.
pub(crate) fn config(rpc: &str, db: &Path, settlement: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[database]
url = "sqlite://{}?mode=rwc"

[settlement]
{settlement}

[[networks]]
id = "eip155:8453"
rpc_url = "{rpc}"
asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
eip712_name = "USD Coin"
eip712_version = "2"
{extra}
"#,
        db.display()
    )
}

/// Runs `tollgate serve --config <text>` expecting it to exit with a failure; its stderr.
pub(crate) async fn refused(dir: &Path, text: &str) -> String {
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("TG_STARTUP_RELAYER_KEY", RELAYER_HEX)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out).await.expect("serve exits").unwrap();
    assert!(!out.status.success(), "serve started:\n{text}");
    String::from_utf8(out.stderr).unwrap()
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// Goal: `tollgate serve` reports a TOML error by key and position on one line, without the
// value or the source line: an unknown `relayer_key` holding the private key, and an unquoted
// RPC URL with its API key in the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_never_print_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let unknown = config("http://127.0.0.1:9", &db, &format!("relayer_key = \"{RELAYER_HEX}\""), "");
    let err = refused(dir.path(), &unknown).await;
    assert!(err.contains("settlement.relayer_key (line 9, column 1): unknown key"), "{err}");
    assert!(!err.contains(&RELAYER_HEX[2..]), "{err}");

    let unquoted = config("http://127.0.0.1:9", &db, "relayer_key_env = \"TG_STARTUP_RELAYER_KEY\"", "")
        .replace("rpc_url = \"http://127.0.0.1:9\"", "rpc_url = https://base.example/v2/RPCKEY4f8e2a");
    let err = refused(dir.path(), &unquoted).await;
    assert!(err.contains("networks.rpc_url (line 13, column"), "{err}");
    assert!(!err.contains("RPCKEY4f8e2a") && !err.contains("base.example"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!db.exists(), "nothing was opened");
}

// Goal: startup refuses an admin listener off loopback without the explicit opt-in, a
// world-writable relayer key file and an upstream at the RPC node, each naming the key and why;
// with a group-readable key file and the opt-in it starts, printing a WARNING for each, and
// creates the SQLite ledger (and its -wal/-shm) readable by its owner only.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_settings_are_refused_or_warned() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let rpc = crate::admin::chain_id_rpc().await;
    let key_file = dir.path().join("relayer.key");
    std::fs::write(&key_file, RELAYER_HEX).unwrap();
    let key_setting = format!("relayer_key_file = \"{}\"", key_file.display());
    chmod(&key_file, 0o600);

    let remote_admin = "\n[admin]\nlisten = \"0.0.0.0:0\"\n";
    let err = refused(dir.path(), &config(&rpc, &db, &key_setting, remote_admin)).await;
    assert!(err.contains("admin.listen: not a loopback address") && err.contains("allow_insecure_remote"), "{err}");

    chmod(&key_file, 0o666);
    let err = refused(dir.path(), &config(&rpc, &db, &key_setting, "")).await;
    assert!(err.contains("settlement.relayer_key_file") && err.contains("world-writable"), "{err}");
    assert!(!err.contains(&RELAYER_HEX[2..]), "{err}");

    chmod(&key_file, 0o600);
    let provider = format!(
        "\n[[providers]]\nid = \"loop\"\npay_to = \"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\"\nupstream = \"{rpc}\"\n"
    );
    let err = refused(dir.path(), &config(&rpc, &db, &key_setting, &provider)).await;
    assert!(err.contains("providers[0].upstream: points at the RPC node of networks[0]"), "{err}");
    assert!(!db.exists(), "refused before the ledger was opened");

    chmod(&key_file, 0o640);
    let text = config(&rpc, &db, &key_setting, &format!("{remote_admin}allow_insecure_remote = true\n"));
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    let log: Arc<Mutex<Vec<String>>> = Default::default();
    let served = crate::serve::spawn_serve_with_admin(&path, &[], log.clone()).await;
    assert!(served.admin_url.is_some());
    let lines = log.lock().unwrap().join("\n");
    assert!(lines.contains("WARNING settlement.relayer_key_file:") && lines.contains("mode 0640"), "{lines}");
    assert!(lines.contains("WARNING admin.listen:"), "{lines}");
    assert!(!lines.contains(&RELAYER_HEX[2..]), "{lines}");
    for name in ["ledger.db", "ledger.db-wal", "ledger.db-shm"] {
        let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name}");
    }
    drop(served);
}

/// Starts `tollgate serve` with `args` and returns its stderr up to its `listening on` line.
async fn startup_log(path: &Path, args: &[&str]) -> Vec<String> {
    use tokio::io::{AsyncBufReadExt as _, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--config"])
        .arg(path)
        .args(args)
        .env("TG_STARTUP_RELAYER_KEY", RELAYER_HEX)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("listening on ");
            seen.push(line);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("serve did not start: {seen:?}"));
    seen
}

// Goal: `[log] format = "json"` makes `tollgate serve` log one JSON object per line, and
// `--log-format text` overrides the file; with stderr a pipe (not a terminal) no line carries
// an ANSI colour escape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_json_or_text_without_colours() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let rpc = crate::admin::chain_id_rpc().await;
    let text = config(
        &rpc,
        &db,
        "relayer_key_env = \"TG_STARTUP_RELAYER_KEY\"",
        "\n[admin]\nenabled = false\n\n[log]\nformat = \"json\"\n",
    );
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, text).unwrap();

    let lines = startup_log(&path, &[]).await;
    let json: Vec<serde_json::Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let loaded = json.iter().find(|v| v["fields"]["message"] == "control plane loaded");
    let loaded = loaded.unwrap_or_else(|| panic!("no JSON log line: {lines:?}"));
    assert_eq!(loaded["level"], "INFO");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "{lines:?}");

    let lines = startup_log(&path, &["--log-format", "text"]).await;
    let loaded = lines.iter().find(|l| l.contains("control plane loaded")).expect("the line");
    assert!(serde_json::from_str::<serde_json::Value>(loaded).is_err(), "{loaded}");
    assert!(loaded.contains("INFO"), "{loaded}");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "{lines:?}");
}

// Goal: a provider in the file with a vault credential and no `[vault]` master key is refused
// at startup, naming the provider and the credential (it could never serve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_credential_without_master_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let provider = "\n[[providers]]\nid = \"weather\"\npay_to = \"0x209693Bc6afc0C5328bA36FaF03C514EF312287C\"\n\
                    upstream = \"http://127.0.0.1:8\"\ncredential = { inject = \"header\", vault = \"weather-key\" }\n";
    let text = config("http://127.0.0.1:9", &db, "relayer_key_env = \"TG_STARTUP_RELAYER_KEY\"", provider);
    let err = refused(dir.path(), &text).await;
    assert!(err.contains("providers[0].credential.vault"), "{err}");
    assert!(err.contains("provider `weather` credential `weather-key`") && err.contains("master key"), "{err}");
    assert!(!db.exists(), "refused before the ledger was opened");
}
