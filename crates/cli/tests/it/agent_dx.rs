//! The agent developer's CLI through the real binary: wallet-policy refusals, `call --json`,
//! `--dry-run`, per-day budgets, `wallet history`, closed pipes, help layout, and the gateway's
//! log of an unpaid request.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use tollgate_client::Clock as _;
use tollgate_client::{RecordState, SpendStore, utc_day};
use tollgate_metering::Actor;
use tollgate_test_support::{
    ConfigBuilder, Deployment, NetworkConfig, ProviderConfig, RouteConfig, TestChain, anvil_key, random_key, sqlite_url,
};

use crate::agent::tollgate;
use crate::harness::{Harness, PRICE, lossy_proxy};

fn hex_key(k: &alloy::signers::local::PrivateKeySigner) -> String {
    format!("{:#x}", k.to_bytes())
}

fn records(home: &Path) -> Vec<tollgate_client::PaymentRecord> {
    let path = home.join("spend.json");
    if !path.exists() {
        return Vec::new();
    }
    SpendStore::open(path).unwrap().records().unwrap()
}

/// The last line of `stderr` parsed as JSON.
fn last_json(stderr: &str) -> Value {
    let line = stderr.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

// Goal: a refusal by the gateway's wallet policy (here a revoked wallet) exits 3 like every
// other server refusal, with the server's code and message on stderr in one line; the record is
// `refused` (not counted) and nothing reached the upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_wallet_policy_refusal_exits_3() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let home = tempfile::tempdir().unwrap();
    let key = hex_key(&payer);
    let env = [("TOLLGATE_KEY", key.as_str())];
    let url = format!("{}/weather/paris", h.url);
    h.gateway
        .ledger
        .policies()
        .set_revoked("*", payer.address(), true, &Actor("test".into()), tollgate_client::SystemClock.now_unix_s())
        .await
        .unwrap();
    let calls = h.upstream.calls.load(std::sync::atomic::Ordering::SeqCst);

    let (code, out, err) = tollgate(home.path(), &["call", &url], &env).await;

    assert_eq!(code, 3, "{err}");
    assert!(err.contains("payment refused by the server: wallet_revoked: wallet revoked"), "{err}");
    assert!(err.contains("(HTTP 403)"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("tollgate: ")).count(), 1, "one line: {err}");
    assert!(out.is_empty(), "{out}");
    let recorded = records(home.path());
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].state, RecordState::Refused);
    assert_eq!(recorded[0].reason.as_deref(), Some("wallet_revoked"));
    assert_eq!(h.upstream.calls.load(std::sync::atomic::Ordering::SeqCst), calls);
    assert_eq!(h.payee_balance().await, alloy_primitives::U256::ZERO);
}

// Goal: `call --json` reports the outcome as one JSON object on stderr (status, headers,
// receipt, charged amount, transaction and entry id, matching the gateway's ledger), and
// `--json-out FILE` writes the same kind of object for a refused call, whose exit code it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_json_reports_the_payment() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let home = tempfile::tempdir().unwrap();
    let key = hex_key(&payer);
    let env = [("TOLLGATE_KEY", key.as_str())];
    let url = format!("{}/weather/paris", h.url);

    let (code, out, err) = tollgate(home.path(), &["call", "--json", &url], &env).await;

    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"city\":\"paris\""), "the body still goes to stdout: {out}");
    assert!(!err.contains("tollgate: payment"), "the JSON replaces the payment line: {err}");
    let v = last_json(&err);
    let entry = h.wait_terminal(payer.address()).await.remove(0);
    let tx = format!("{:#x}", entry.tx_hash.unwrap());
    assert_eq!(v["status"], 200, "{v}");
    assert_eq!(v["exitCode"], 0, "{v}");
    assert_eq!(v["url"], url);
    assert_eq!(v["charged"]["atomic"], PRICE.to_string(), "{v}");
    assert_eq!(v["charged"]["amount"], "0.001", "{v}");
    assert_eq!(v["charged"]["symbol"], "USDC", "{v}");
    assert_eq!(v["transaction"], tx, "{v}");
    assert_eq!(v["receipt"]["success"], true, "{v}");
    assert_eq!(v["receipt"]["transaction"], tx, "{v}");
    assert_eq!(v["entryId"], entry.id.to_string(), "{v}");
    assert_eq!(v["payment"]["state"], "paid", "{v}");
    assert_eq!(v["payment"]["payer"], format!("{:#x}", payer.address()), "{v}");
    assert!(v["headers"]["payment-response"].is_string(), "{v}");
    assert!(v["error"].is_null(), "{v}");
    assert!(!err.contains(key.trim_start_matches("0x")), "no key in the report");

    let file = home.path().join("call.json");
    let f = file.to_str().unwrap();
    let (code, _, err) = tollgate(home.path(), &["call", "--budget", "0.0015", "--json-out", f, &url], &env).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("total budget exceeded"), "the line still goes to stderr: {err}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(v["exitCode"], 4, "{v}");
    assert!(v.get("charged").is_some_and(|c| c.is_null()), "nothing signed: charged is null, and present: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("total budget exceeded"), "{v}");
}

// Goal: `--dry-run` fetches the 402 and prints what would be paid, signing, recording and
// sending nothing (no record, no upstream call, no transfer); a spend limit it would break
// exits 4 as the real call would; `--json` gives the same as an object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_dry_run_signs_nothing() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let home = tempfile::tempdir().unwrap();
    let key = hex_key(&payer);
    let env = [("TOLLGATE_KEY", key.as_str())];
    let url = format!("{}/weather/paris", h.url);

    let (code, out, err) = tollgate(home.path(), &["call", "--dry-run", &url], &env).await;

    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would pay 0.001 USDC (1000 atomic)"), "{out}");
    assert!(out.contains(&h.payee.to_string()) && out.contains("eip155:8453"), "{out}");
    assert!(out.contains("nothing signed"), "{out}");
    let (code, _, err) = tollgate(home.path(), &["call", "--dry-run", "--max-per-call", "0.0005", &url], &env).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("max-per-call exceeded"), "{err}");
    let (code, _, err) = tollgate(home.path(), &["call", "--dry-run", "--json", &url], &env).await;
    assert_eq!(code, 0, "{err}");
    let v = last_json(&err);
    assert_eq!(v["dryRun"], true, "{v}");
    assert_eq!(v["status"], 402, "{v}");
    assert_eq!(v["wouldPay"]["price"]["atomic"], "1000", "{v}");
    assert_eq!(v["wouldPay"]["payTo"], format!("{:#x}", h.payee), "{v}");
    assert!(v["charged"].is_null(), "{v}");

    assert!(records(home.path()).is_empty(), "nothing recorded");
    assert_eq!(h.upstream.calls.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing forwarded");
    assert!(h.entries(payer.address()).await.is_empty(), "nothing reserved");
    assert_eq!(h.payee_balance().await, alloy_primitives::U256::ZERO);
}

// Goal: the per-day budgets (`--daily-budget`, `--host-daily-budget`) hold across separate runs
// of the binary (they are computed from the persisted record): the host's day budget stops a
// second call to one host but not a call to another host, and the day budget stops the next
// call to any host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daily_budgets_hold_across_runs() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let (proxy, _) = lossy_proxy(h.addr()).await;
    let home = tempfile::tempdir().unwrap();
    let key = hex_key(&payer);
    let env = [("TOLLGATE_KEY", key.as_str())];
    let direct = format!("{}/weather/paris", h.url);
    let other_host = format!("{proxy}/weather/oslo");
    let host_daily = ["call", "--host-daily-budget", "0.0015"];

    let (code, _, err) = tollgate(home.path(), &[&host_daily[..], &[&direct]].concat(), &env).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = tollgate(home.path(), &[&host_daily[..], &[&direct]].concat(), &env).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains(&format!("daily budget (UTC day) for host {} exceeded", h.addr())), "{err}");
    let (code, _, err) = tollgate(home.path(), &[&host_daily[..], &[&other_host]].concat(), &env).await;
    assert_eq!(code, 0, "another host has its own day budget: {err}");
    let (code, _, err) = tollgate(home.path(), &["call", "--daily-budget", "0.0025", &direct], &env).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("daily budget (UTC day) exceeded: 2000 already counted"), "{err}");
    assert_eq!(records(home.path()).len(), 2, "nothing signed when a budget refuses");
}

// Goal: `wallet history` lists the spending record newest first, with the totals the budgets
// count per host and per UTC day (a failed, uncharged call is listed but not counted), and
// `--json` gives the same without any signed payment header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_history_newest_first_with_totals() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let (proxy, _) = lossy_proxy(h.addr()).await;
    let home = tempfile::tempdir().unwrap();
    let key = hex_key(&payer);
    let env = [("TOLLGATE_KEY", key.as_str())];
    for url in [format!("{}/weather/paris", h.url), format!("{}/fail", h.url), format!("{proxy}/weather/oslo")] {
        let (code, _, err) = tollgate(home.path(), &["call", &url], &env).await;
        assert!(code == 0 || code == 7, "{err}");
    }
    let proxy_host = proxy.trim_start_matches("http://").to_owned();
    let today = utc_day(tollgate_client::SystemClock.now_unix_s());

    let (code, out, err) = tollgate(home.path(), &["wallet", "history"], &[]).await;

    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("/weather/oslo") && lines[0].contains("paid"), "newest first: {out}");
    assert!(lines[1].contains("/fail") && lines[1].contains("failed"), "{out}");
    assert!(lines[2].contains("/weather/paris") && lines[2].contains(" tx 0x"), "{out}");
    assert!(out.contains(&format!("  {}  0.001 USDC (1000 atomic)", h.addr())), "{out}");
    assert!(out.contains(&format!("  {proxy_host}  0.001 USDC (1000 atomic)")), "{out}");
    assert!(out.contains(&format!("  {today}  0.002 USDC (2000 atomic)")), "{out}");
    assert!(out.contains("total: 0.002 USDC (2000 atomic); 0 unresolved"), "{out}");

    let (code, out, _) = tollgate(home.path(), &["wallet", "history", "--json", "--limit", "1"], &[]).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["records"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["records"][0]["state"], "paid", "{v}");
    assert_eq!(v["totals"]["total"]["atomic"], "2000", "{v}");
    assert_eq!(v["totals"]["perDay"][&today]["atomic"], "2000", "{v}");
    assert_eq!(v["totals"]["perHost"][&proxy_host]["amount"], "0.001", "{v}");
    let stored = records(home.path());
    assert!(stored.iter().all(|r| !out.contains(&r.header)), "no signed payment header printed");

    let empty = tempfile::tempdir().unwrap();
    let (code, _, err) = tollgate(empty.path(), &["wallet", "history"], &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no spending record"), "{err}");
}

/// A stdout whose reader is already gone: every write fails with EPIPE.
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    Stdio::from(writer)
}

/// Runs `tollgate` with stdout (and, with `close_stderr`, stderr) a closed pipe; returns the
/// exit code and stderr.
async fn into_closed_pipe(home: &Path, args: &[&str], env: &[(&str, &str)], close_stderr: bool) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command.args(args).env_remove("TOLLGATE_KEY").env("TOLLGATE_HOME", home).envs(env.iter().copied());
    command.stdin(Stdio::null()).stdout(closed_pipe());
    command.stderr(if close_stderr { closed_pipe() } else { Stdio::piped() });
    // `spawn`, not `output`: tokio's `output` replaces stdout and stderr with fresh pipes.
    let out = command.spawn().unwrap().wait_with_output().await.unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

// Goal: no command panics on a closed pipe (`tollgate … | head`): the wallet commands, a paid
// call (whose payment line still reaches stderr), the history, and `admin openapi` through the
// real admin API exit with their usual code; with stderr closed too, nothing panics either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_pipes_never_panic() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let home = tempfile::tempdir().unwrap();
    let key = hex_key(&payer);
    let env = [("TOLLGATE_KEY", key.as_str())];
    let url = format!("{}/weather/paris", h.url);

    let (code, err) = into_closed_pipe(home.path(), &["call", &url], &env, false).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("state paid"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for args in
        [vec!["wallet", "address"], vec!["wallet", "new", "--print-key"], vec!["wallet", "history"], vec!["--help"]]
    {
        for close_stderr in [false, true] {
            let (code, err) = into_closed_pipe(home.path(), &args, &env, close_stderr).await;
            assert_eq!(code, 0, "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{args:?}: {err}");
        }
    }
    // A failing command with both streams closed keeps its exit code.
    let (code, _) = into_closed_pipe(home.path(), &["call", "--budget", "0.0001", &url], &env, true).await;
    assert_eq!(code, 4);

    let served = ServedBinary::start(&["--log-level", "info"]).await;
    let token_env = [("TOLLGATE_ADMIN_TOKEN", served.token.as_str())];
    let args = ["admin", "--url", &served.admin_url, "openapi"];
    let (code, err) = into_closed_pipe(home.path(), &args, &token_env, false).await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

// Goal: every agent-side and serve/reconcile `--help` shows its examples one per line (clap
// used to join a doc comment's example lines into one paragraph).
#[tokio::test]
async fn help_examples_render_one_per_line() {
    let home = tempfile::tempdir().unwrap();
    for cmd in [
        vec![],
        vec!["serve"],
        vec!["reconcile"],
        vec!["call"],
        vec!["wallet"],
        vec!["wallet", "history"],
        vec!["admin"],
    ] {
        let args = [&cmd[..], &["--help"]].concat();
        let (code, out, _) = tollgate(home.path(), &args, &[]).await;
        assert_eq!(code, 0, "{cmd:?}");
        for line in out.lines() {
            assert!(line.matches("tollgate ").count() <= 1, "{cmd:?}: examples run together: {line}");
        }
    }
    let (_, out, _) = tollgate(home.path(), &["reconcile", "--help"], &[]).await;
    for example in [
        "  tollgate reconcile --config tollgate.toml --from-block 100 --to-block 200 --csv run.csv",
        "  tollgate reconcile --config tollgate.toml --resume --json",
    ] {
        assert!(out.lines().any(|l| l == example), "`{example}` not on its own line:\n{out}");
    }
}

/// `tollgate serve` as a process on a real chain, with its admin API and an operator token,
/// its stderr (a pipe) read line by line.
struct ServedBinary {
    url: String,
    admin_url: String,
    token: String,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    _child: tokio::process::Child,
    _chain: TestChain,
    _dir: tempfile::TempDir,
}

impl ServedBinary {
    async fn start(args: &[&str]) -> ServedBinary {
        let dir = tempfile::tempdir().unwrap();
        let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
        let config = dir.path().join("tollgate.toml");
        ConfigBuilder::new()
            .admin_listen()
            .allow_loopback_upstreams()
            .database(&sqlite_url(dir.path()))
            .relayer_env("DX_RELAYER_KEY")
            .network(NetworkConfig::base(&chain.anvil.url))
            .provider(
                ProviderConfig::new("weather", random_key().address(), "http://127.0.0.1:9")
                    .route(RouteConfig::new("/weather/{city}", PRICE)),
            )
            .write(&config)
            .unwrap();
        let c = config.to_str().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["admin", "bootstrap", "--config", c, "--label", "dx"])
            .env("DX_RELAYER_KEY", hex_key(&anvil_key(9)))
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        let token = created["token"].as_str().unwrap().to_owned();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "--config", c])
            .args(args)
            .env("DX_RELAYER_KEY", hex_key(&anvil_key(9)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut url, mut admin_url) = (None, None);
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            while url.is_none() {
                let line = lines.next_line().await.unwrap().unwrap_or_else(|| panic!("serve exited: {seen:?}"));
                let addr = |l: &str| l.split_whitespace().find(|w| w.starts_with("http")).map(str::to_owned);
                if line.contains("admin API on") {
                    admin_url = addr(&line);
                } else if line.contains("listening on") {
                    url = addr(&line);
                }
                seen.push(line);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("serve did not start: {seen:?}"));
        assert!(seen.iter().all(|l| !l.contains('\u{1b}')), "no ANSI escape in a piped log: {seen:?}");
        ServedBinary {
            url: url.unwrap(),
            admin_url: admin_url.expect("admin API line"),
            token,
            lines,
            _child: child,
            _chain: chain,
            _dir: dir,
        }
    }

    /// Reads log lines until one contains `needle` (bounded); returns every line read.
    async fn read_until(&mut self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                let done = line.contains(needle);
                seen.push(line);
                if done {
                    return;
                }
            }
        })
        .await;
        assert!(found.is_ok(), "no `{needle}` in the log: {seen:?}");
        seen
    }
}

// Goal: the gateway logs a 402 to an unpaid request at DEBUG as "challenge issued", never as
// "request refused"; a real refusal (a malformed payment) is still logged at INFO as "request
// refused"; a log written to a pipe carries no ANSI colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaid_request_logs_challenge_issued_at_debug() {
    let mut served = ServedBinary::start(&["--log-level", "debug"]).await;
    let http = tollgate_test_support::http();
    let resp = http.get(format!("{}/weather/paris", served.url)).send().await.unwrap();
    assert_eq!(resp.status(), 402);
    let lines = served.read_until("challenge issued").await;
    let issued = lines.last().unwrap();
    assert!(issued.contains("DEBUG") && issued.contains("payment_required"), "{issued}");
    assert!(lines.iter().all(|l| !l.contains("request refused")), "{lines:?}");

    let resp = http.get(format!("{}/weather/paris", served.url)).header("payment-signature", "%%%").send().await;
    assert_eq!(resp.unwrap().status(), 400);
    let more = served.read_until("request refused").await;
    assert!(more.last().unwrap().contains("INFO"), "{more:?}");
    let all = [lines, more].concat();
    assert!(all.iter().all(|l| !l.contains('\u{1b}')), "no ANSI escape in a piped log: {all:?}");
}

// Goal: the walkthrough in docs/agents.md (wallet → fund → call → history) runs as written
// against a local chain and gateway (only the gateway URL, the RPC URL and the home folder are
// substituted), so the page cannot drift from the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_agents_walkthrough_runs() {
    let h = Harness::start(3600).await;
    let home = tempfile::tempdir().unwrap();
    let page = std::fs::read_to_string(tollgate_test_support::workspace_root().join("docs/agents.md")).unwrap();
    let mut commands: Vec<String> = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in page.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh" && !in_sh;
            continue;
        }
        if !in_sh {
            continue;
        }
        pending.push_str(line.trim_end_matches('\\'));
        if !line.ends_with('\\') {
            commands.push(std::mem::take(&mut pending));
        }
    }
    let walkthrough: Vec<&String> =
        commands.iter().filter(|c| c.starts_with("tollgate ") || c.starts_with("# fund")).collect();
    assert!(walkthrough.len() >= 5, "{walkthrough:?}");
    let home_dir = format!("{}/", home.path().display());
    let mut address = String::new();
    let mut ran = Vec::new();
    for command in walkthrough {
        if command.starts_with("# fund") {
            h.chain.mint(address.parse().unwrap(), 1_000_000).await.unwrap();
            continue;
        }
        let command = command.split("  #").next().unwrap();
        let command = command
            .replace("~/.tollgate/", &home_dir)
            .replace("https://sepolia.base.org", &h.chain.anvil.url)
            .replace("https://gateway.example", &h.url);
        let args: Vec<&str> = command.split_whitespace().skip(1).collect();
        let (code, out, err) = tollgate(home.path(), &args, &[]).await;
        assert_eq!(code, 0, "`{command}`: {err}");
        if args.starts_with(&["wallet", "new"]) {
            address = out.trim().to_owned();
        }
        ran.push((args.join(" "), out));
    }
    let output = |prefix: &str| ran.iter().find(|(a, _)| a.starts_with(prefix)).map(|(_, o)| o.clone()).unwrap();
    assert!(output("call").contains("\"city\":\"paris\""), "{ran:?}");
    assert!(output("wallet history").contains("paid"), "{ran:?}");
    assert_eq!(h.payee_balance().await, alloy_primitives::U256::from(PRICE));
}
