//! `tollgate call` and `tollgate wallet` as processes: output, exit codes, key files, help.

use std::path::Path;
use std::process::Stdio;

use tollgate_test_support::{Deployment, TestChain, random_key};

use crate::harness::{Harness, PRICE};

/// Runs `tollgate` with `TOLLGATE_HOME` set to `home` and no inherited key; returns the exit
/// code, stdout and stderr.
pub async fn tollgate(home: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env_remove("TOLLGATE_KEY")
        .env_remove("TOLLGATE_KEYSTORE_PASSWORD")
        .env("TOLLGATE_HOME", home)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

fn hex_key(k: &alloy::signers::local::PrivateKeySigner) -> String {
    format!("{:#x}", k.to_bytes())
}

// Goal: `tollgate call` pays a route: exit 0, the upstream body on stdout, the payment
// (amount, transaction, payer, network, state) on stderr, the record in TOLLGATE_HOME.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_pays_and_reports() {
    let h = Harness::start(3600).await;
    let payer = h.funded_payer(1_000_000).await;
    let home = tempfile::tempdir().unwrap();
    let key = hex_key(&payer);
    let url = format!("{}/weather/paris", h.url);

    let (code, out, err) =
        tollgate(home.path(), &["call", "--key-env", "AGENT_KEY", &url], &[("AGENT_KEY", &key)]).await;

    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"city\":\"paris\""), "{out}");
    assert!(err.contains("payment 0.001 USDC (1000 atomic)"), "{err}");
    assert!(err.contains("state paid") && err.contains("tx 0x") && err.contains("on eip155:8453"), "{err}");
    assert!(err.contains(&payer.address().to_string()), "{err}");
    assert!(!err.contains(key.trim_start_matches("0x")) && !out.contains(key.trim_start_matches("0x")));
    let store = tollgate_client::SpendStore::open(home.path().join("spend.json")).unwrap();
    assert_eq!(store.records().unwrap().len(), 1);
    assert_eq!(h.payee_balance().await, alloy_primitives::U256::from(PRICE));
}

// Goal: each outcome of `tollgate call` has its exit code: 3 refused by the gateway, 4
// refused by a local budget, 5 no acceptable requirement, 6 transport error, 7 upstream
// non-2xx after payment handling, 2 usage (no key, bad amount).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_exit_codes() {
    let h = Harness::start(3600).await;
    let funded = hex_key(&h.funded_payer(1_000_000).await);
    let broke = hex_key(&random_key());
    let home = tempfile::tempdir().unwrap();
    let weather = format!("{}/weather/x", h.url);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/weather/x", l.local_addr().unwrap())
    };
    let fail = format!("{}/fail", h.url);
    let sepolia_only = "eip155:84532:0x036CbD53842c5426634e7929541eC2318f3dCF7e";
    let cases: Vec<(Vec<&str>, &str, i32, &str)> = vec![
        (vec!["call", &weather], &broke, 3, "invalid_exact_evm_insufficient_balance"),
        (vec!["call", "--budget", "0.000999", &weather], &funded, 4, "total budget exceeded"),
        (vec!["call", "--max-per-call", "999atomic", &weather], &funded, 4, "max-per-call exceeded"),
        (vec!["call", "--allow", sepolia_only, &weather], &funded, 5, "no acceptable payment requirement"),
        (vec!["call", "--retries", "0", &closed], &funded, 6, "transport error"),
        (vec!["call", &fail], &funded, 7, "HTTP 500"),
        (vec!["call", "--budget", "lots", &weather], &funded, 2, "expected an amount in USDC like"),
    ];
    for (args, key, expected, needle) in cases {
        let (code, _out, err) = tollgate(home.path(), &args, &[("TOLLGATE_KEY", key)]).await;
        assert_eq!(code, expected, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        if expected != 2 {
            let lines = err.lines().filter(|l| l.starts_with("tollgate: ") && !l.starts_with("tollgate: payment 0"));
            assert_eq!(lines.count(), 1, "one readable error line: {err}");
        }
    }
    let (code, _, err) = tollgate(home.path(), &["call", &weather], &[]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("TOLLGATE_KEY is not set"), "{err}");
}

// Goal: `wallet new` writes a 0600 key (hex or encrypted keystore) without printing it,
// `wallet address` reads it back to the same address, and wrong or missing inputs are
// usage errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_new_and_address_round_trip() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("agent.key");
    let f = file.to_str().unwrap();
    let (code, out, err) = tollgate(home.path(), &["wallet", "new", "--out", f], &[]).await;
    assert_eq!(code, 0, "{err}");
    let address = out.trim().to_owned();
    assert!(address.starts_with("0x") && address.len() == 42, "{out}");
    let key = std::fs::read_to_string(&file).unwrap();
    assert!(!out.contains(key.trim()) && !err.contains(key.trim()), "the key is not printed");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let (code, out, _) = tollgate(home.path(), &["wallet", "address", "--key-file", f], &[]).await;
    assert_eq!((code, out.trim()), (0, address.as_str()));
    let (code, _, err) = tollgate(home.path(), &["wallet", "new", "--out", f], &[]).await;
    assert_eq!(code, 2, "never overwrites: {err}");

    let ks = home.path().join("agent.json");
    let k = ks.to_str().unwrap();
    let pw = [("TOLLGATE_KEYSTORE_PASSWORD", "s3cret")];
    let (code, out, err) = tollgate(home.path(), &["wallet", "new", "--keystore", k], &pw).await;
    assert_eq!(code, 0, "{err}");
    let ks_address = out.trim().to_owned();
    let (code, out, _) = tollgate(home.path(), &["wallet", "address", "--keystore", k], &pw).await;
    assert_eq!((code, out.trim()), (0, ks_address.as_str()));
    let wrong = [("TOLLGATE_KEYSTORE_PASSWORD", "nope")];
    let (code, _, err) = tollgate(home.path(), &["wallet", "address", "--keystore", k], &wrong).await;
    assert_eq!(code, 2);
    assert!(err.contains("wrong password"), "{err}");

    let (code, out, _) = tollgate(home.path(), &["wallet", "new", "--print-key"], &[]).await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2);
    let key_file = home.path().join("printed.key");
    std::fs::write(&key_file, lines[1]).unwrap();
    let (_, out, _) =
        tollgate(home.path(), &["wallet", "address", "--key-file", key_file.to_str().unwrap()], &[]).await;
    assert_eq!(out.trim(), lines[0]);
    let (code, _, err) = tollgate(home.path(), &["wallet", "new"], &[]).await;
    assert_eq!(code, 2, "{err}");
}

// Goal: `wallet balance` reads the token balance through an eth_call (USDC defaults by
// chain id, or an explicit asset and network).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_balance_reads_the_token() {
    let chain = TestChain::start(Deployment::BaseUsdc).await.unwrap();
    let owner = random_key();
    chain.mint(owner.address(), 1_234_567).await.unwrap();
    let home = tempfile::tempdir().unwrap();
    let key = hex_key(&owner);
    let env = [("TOLLGATE_KEY", key.as_str())];
    let (code, out, err) = tollgate(home.path(), &["wallet", "balance", "--rpc", &chain.anvil.url], &env).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "1234567");
    assert!(err.contains("1.234567 USDC"), "{err}");
    let token = chain.token.to_string();
    let other = random_key().address().to_string();
    let args = [
        "wallet",
        "balance",
        "--rpc",
        &chain.anvil.url,
        "--network",
        "eip155:8453",
        "--asset",
        &token,
        "--address",
        &other,
    ];
    let (code, out, _) = tollgate(home.path(), &args, &[]).await;
    assert_eq!((code, out.trim()), (0, "0"));
    let (code, _, err) = tollgate(home.path(), &["wallet", "balance", "--rpc", "http://127.0.0.1:1"], &env).await;
    assert_eq!(code, 6, "{err}");
}

// Goal: every command's --help shows an example, and `call --help` lists the exit codes.
#[tokio::test]
async fn help_texts_have_examples() {
    let home = tempfile::tempdir().unwrap();
    for cmd in [
        vec![],
        vec!["serve"],
        vec!["call"],
        vec!["wallet"],
        vec!["wallet", "new"],
        vec!["wallet", "address"],
        vec!["wallet", "balance"],
    ] {
        let mut args = cmd.clone();
        args.push("--help");
        let (code, out, _) = tollgate(home.path(), &args, &[]).await;
        assert_eq!(code, 0, "{cmd:?}");
        assert!(out.contains("Example"), "{cmd:?} --help has no example:\n{out}");
    }
    let (_, out, _) = tollgate(home.path(), &["call", "--help"], &[]).await;
    for code in ["3  payment refused", "4  payment refused locally", "5  no acceptable", "6  transport", "7  non-2xx"] {
        assert!(out.contains(code), "{code} missing from:\n{out}");
    }
}
