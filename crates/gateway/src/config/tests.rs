//! Tests of the whole `config`: files through `Config::parse` (and `Config::load`), checked by
//! the typed values they give or the error they print.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tollgate_metering::SettlementMode;

use super::{Config, ConfigError, ReconciliationConfig, ServerLimits};

const GOOD: &str = r#"
[settlement]
relayer_key_env = "KEY"

[[networks]]
id = "eip155:8453"
rpc_url = "http://127.0.0.1:8545"
asset = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
eip712_name = "USD Coin"
eip712_version = "2"

[[providers]]
id = "weather"
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
upstream = "http://127.0.0.1:9000"
credential = { inject = "header", secret_env = "API" }

[[providers.routes]]
path = "/weather/{city}"
price = "0.001"
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "KEY" => Some("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80".to_owned()),
        "API" => Some("sk-secret-value".to_owned()),
        _ => None,
    }
}

fn error_of(text: &str) -> String {
    match Config::parse(text, &env) {
        Ok(_) => panic!("config accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

// Goal: a good file parses into the typed values, with the human price converted.
#[test]
fn good_config_parses() {
    let c = Config::parse(GOOD, &env).unwrap();
    assert_eq!(c.providers[0].routes[0].prices[0].1.get(), 1_000);
    assert_eq!(c.providers[0].routes[0].settlement, SettlementMode::After);
    assert!(c.settlement.relayer_key.is_some());
    assert!(!format!("{c:?}").contains("sk-secret-value"), "secrets are redacted in Debug");
}

// Goal: a price of zero (human or atomic) or `free = true` makes a free route with no prices,
// and a file whose only routes are free needs no relayer key.
#[test]
fn zero_price_or_free_makes_a_free_route() {
    for free in ["price = \"0\"", "price = \"0.000\"", "price_atomic = \"0\"", "free = true"] {
        let c = Config::parse(&GOOD.replace("price = \"0.001\"", free), &env).unwrap();
        let route = &c.providers[0].routes[0];
        assert!(route.free && route.prices.is_empty(), "{free}");
        let keyless = GOOD.replace("price = \"0.001\"", free).replace("relayer_key_env = \"KEY\"\n", "");
        assert!(Config::parse(&keyless, &env).is_ok(), "{free}: a free-only file needs no relayer key");
    }
    assert!(!Config::parse(GOOD, &env).unwrap().providers[0].routes[0].free);
}

// Goal: each kind of bad value is refused with the offending key named and no secret shown.
#[test]
fn bad_values_name_their_key() {
    let cases = [
        (GOOD.replace("price = \"0.001\"", "price = \"-1\""), "providers[0].routes[0].price"),
        (GOOD.replace("price = \"0.001\"", "price = \"0.0000001\""), "providers[0].routes[0].price"),
        (GOOD.replace("price = \"0.001\"", "price = \"0.001\"\nfree = true"), "providers[0].routes[0].free"),
        // A zero in one of two prices must not make a priced route free (forwarded unpaid).
        (GOOD.replace("price = \"0.001\"", "price = \"0.001\"\nprice_atomic = \"0\""), "providers[0].routes[0].price"),
        (GOOD.replace("price = \"0.001\"", "price = \"0\"\nprice_atomic = \"1000\""), "providers[0].routes[0].price"),
        (GOOD.replace("price = \"0.001\"", "price = \"0\"\nfree = false"), "providers[0].routes[0].free"),
        (GOOD.replace("price = \"0.001\"", "price_atomic = \"1e3\""), "providers[0].routes[0].price_atomic"),
        (GOOD.replace("0x209693Bc6afc0C5328bA36FaF03C514EF312287C", "0x1234"), "providers[0].pay_to"),
        (
            GOOD.replace("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
            "networks[0].asset",
        ),
        (GOOD.replace("eip155:8453", "solana:mainnet"), "networks[0].id"),
        (GOOD.replace("secret_env = \"API\"", "secret_env = \"MISSING\""), "providers[0].credential"),
        (GOOD.replace("inject = \"header\"", "inject = \"cookie\""), "providers[0].credential.inject"),
        (GOOD.replace("path = \"/weather/{city}\"", "path = \"/weather/../x\""), "providers[0].routes[0].path"),
        (GOOD.replace("upstream = \"http://127.0.0.1:9000\"", "upstream = \"ftp://x\""), "providers[0].upstream"),
        (GOOD.replace("relayer_key_env = \"KEY\"", "relayer_key_env = \"API\""), "settlement.relayer_key"),
        (GOOD.replace("relayer_key_env = \"KEY\"", ""), "settlement.relayer_key"),
    ];
    for (text, key) in cases {
        let err = error_of(&text);
        assert!(err.contains(key), "{key}: {err}");
        assert!(!err.contains("sk-secret-value"), "{err}");
    }
}

// Goal: the listener limits in [server] have their documented defaults, parse when given,
// and a value out of range, a header cap below the payment header or an unknown key is
// refused naming the key.
#[test]
fn server_limits() {
    let c = Config::parse(GOOD, &env).unwrap();
    assert_eq!(c.server.limits, ServerLimits::default());
    assert_eq!(c.server.limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.limits.keep_alive_timeout, Some(Duration::from_secs(75)));
    let text = format!(
        "[server]\nconnections_max = 64\nheader_read_timeout_ms = 500\nkeep_alive_timeout_ms = 0\n\
         request_timeout_ms = 2000\nconcurrency_max = 8\nheader_bytes_max = 20000\nheaders_count_max = 20\n\
         uri_bytes_max = 1024\nunpaid_per_ip_per_s = 0\nunpaid_per_ip_burst = 3\n{GOOD}"
    );
    let l = Config::parse(&text, &env).unwrap().server.limits;
    assert_eq!(
        l,
        ServerLimits {
            connections_max: 64,
            header_read_timeout: Duration::from_millis(500),
            keep_alive_timeout: None,
            request_timeout: Duration::from_secs(2),
            concurrency_max: 8,
            header_bytes_max: 20_000,
            headers_count_max: 20,
            uri_bytes_max: 1024,
            unpaid_per_ip_per_s: 0,
            unpaid_per_ip_burst: 3,
        }
    );
    for (line, key) in [
        ("connections_max = 0", "server.connections_max"),
        ("header_read_timeout_ms = 10", "server.header_read_timeout_ms"),
        ("concurrency_max = 0", "server.concurrency_max"),
        ("headers_count_max = 2", "server.headers_count_max"),
        ("uri_bytes_max = 100000", "server.uri_bytes_max"),
        ("unpaid_per_ip_burst = 0", "server.unpaid_per_ip_burst"),
        ("header_bytes_max = 8192", "server.header_bytes_max"),
        ("connection_max = 5", "connection_max"),
    ] {
        let err = error_of(&format!("[server]\n{line}\n{GOOD}"));
        assert!(err.contains(key), "{line}: {err}");
    }
}

// Goal: [reconciliation] is optional (job disabled, documented defaults), parses its keys, and refuses zeros and unknown keys by name.
#[test]
fn reconciliation_section() {
    let c = Config::parse(GOOD, &env).unwrap();
    assert_eq!(
        c.reconciliation,
        ReconciliationConfig {
            interval: None,
            confirmations: 10,
            chunk_blocks: 2_000,
            start_block: 0,
            run_blocks_max: 100_000,
            lease_ttl_s: 300,
        }
    );
    let text = format!(
        "{GOOD}\n[reconciliation]\ninterval_s = 60\nconfirmations = 3\nchunk_blocks = 500\nstart_block = 7\n\
         run_blocks_max = 9000\nlease_ttl_s = 30\n"
    );
    let r = Config::parse(&text, &env).unwrap().reconciliation;
    assert_eq!(r.interval, Some(Duration::from_secs(60)));
    assert_eq!(
        (r.confirmations, r.chunk_blocks, r.start_block, r.run_blocks_max, r.lease_ttl_s),
        (3, 500, 7, 9_000, 30)
    );
    for key in ["interval_s", "confirmations", "chunk_blocks", "run_blocks_max", "lease_ttl_s"] {
        let err = error_of(&format!("{GOOD}\n[reconciliation]\n{key} = 0\n"));
        assert!(err.contains(&format!("reconciliation.{key}")), "{err}");
    }
    let err = error_of(&format!("{GOOD}\n[reconciliation]\nintervall_s = 5\n"));
    assert!(err.contains("intervall_s"), "{err}");
}

// Goal: the deferred worker's and audit writer's tuning keys have their documented defaults, parse, and are held to their bounds.
#[test]
fn deferred_and_audit_tuning() {
    let c = Config::parse(GOOD, &env).unwrap();
    assert_eq!(c.settlement.deferred_concurrency, 32);
    assert_eq!(c.settlement.deferred_receipt_poll_interval, Duration::from_millis(250));
    assert_eq!(c.settlement.fee_cache, Duration::from_millis(1_000));
    assert_eq!(c.control.audit_batch, Duration::from_millis(50));
    let text = GOOD.replace(
        "relayer_key_env = \"KEY\"",
        "relayer_key_env = \"KEY\"\ndeferred_concurrency = 4\ndeferred_receipt_poll_interval_ms = 100",
    ) + "\n[control]\naudit_batch_ms = 0\n";
    let c = Config::parse(&text, &env).unwrap();
    assert_eq!(c.settlement.deferred_concurrency, 4);
    assert_eq!(c.settlement.deferred_receipt_poll_interval, Duration::from_millis(100));
    assert_eq!(c.control.audit_batch, Duration::ZERO, "0 appends each batch as soon as it is drained");
    let text = GOOD.replace(
        "relayer_key_env = \"KEY\"",
        "relayer_key_env = \"KEY\"\ndeferred_concurrency = 0\ndeferred_receipt_poll_interval_ms = 0",
    ) + "\n[control]\naudit_batch_ms = 60000\n";
    let c = Config::parse(&text, &env).unwrap();
    assert_eq!(c.settlement.deferred_concurrency, 1, "zero would stall the worker");
    assert_eq!(c.settlement.deferred_receipt_poll_interval, Duration::from_millis(1));
    assert_eq!(c.control.audit_batch, Duration::from_secs(1), "records wait in memory at most a second");
}

// Goal: the forwarding keys default to the safe side (forwarded headers on, redirects not
// charged, cookies dropped) and parse when set.
#[test]
fn forwarding_keys() {
    let c = Config::parse(GOOD, &env).unwrap();
    assert!(c.server.forwarded_headers);
    let route = &c.providers[0].routes[0];
    assert!(!route.charge_redirects && !route.allow_set_cookie);
    let text = format!("[server]\nforwarded_headers = false\n{GOOD}")
        .replace("price = \"0.001\"", "price = \"0.001\"\ncharge_redirects = true\nallow_set_cookie = true");
    let c = Config::parse(&text, &env).unwrap();
    assert!(!c.server.forwarded_headers);
    let route = &c.providers[0].routes[0];
    assert!(route.charge_redirects && route.allow_set_cookie);
}

// Goal: unknown keys are refused, naming the key.
#[test]
fn unknown_keys_are_refused() {
    let err = error_of(&GOOD.replace("price = \"0.001\"", "price = \"0.001\"\nprize = 1"));
    assert!(err.contains("prize"), "{err}");
    let err = error_of(&format!("{GOOD}\n[serverr]\nlisten = \"x\""));
    assert!(err.contains("serverr"), "{err}");
}

const RELAYER_HEX: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// Parses `text`, expecting a `ConfigError::Parse`; returns its parts and its message.
fn parse_error_of(text: &str) -> (Option<String>, Option<usize>, Option<usize>, String) {
    match Config::parse(text, &env) {
        Ok(_) => panic!("config accepted:\n{text}"),
        Err(e @ ConfigError::Parse { .. }) => {
            let message = e.to_string();
            let ConfigError::Parse { key, line, column, .. } = e else { unreachable!() };
            (key, line, column, message)
        }
        Err(e) => panic!("not a parse error: {e}"),
    }
}

// Goal: a TOML error names the key and its line and column and never prints the value or
// the source line, whatever the error's shape: an unknown key holding the relayer key, an
// unquoted URL with an API key, a value of the wrong type, an unterminated string, a
// duplicate key, a secret pasted on its own line, an unknown key inside an inline table,
// and an unknown key that looks like a secret itself.
#[test]
fn toml_errors_never_quote_the_file() {
    let at = |needle: &str, text: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    // (file, secret, expected key, expected line)
    let unknown = GOOD
        .replace("relayer_key_env = \"KEY\"", &format!("relayer_key_env = \"KEY\"\nrelayer_key = \"{RELAYER_HEX}\""));
    let unquoted =
        GOOD.replace("rpc_url = \"http://127.0.0.1:8545\"", "rpc_url = https://rpc.example/v2/UNQUOTEDKEY77");
    let wrong_type = format!("{GOOD}\n[database]\nmax_connections = \"pw-WRONGTYPE-9\"\n");
    let unterminated = GOOD.replace("relayer_key_env = \"KEY\"", &format!("relayer_key_env = \"{RELAYER_HEX}"));
    let duplicate =
        format!("{GOOD}\n[database]\nurl = \"postgres://u:DUPPW@h/db\"\nurl = \"postgres://u:DUPPW@h/db\"\n");
    let own_line = GOOD.replace("relayer_key_env = \"KEY\"", &format!("relayer_key_env = \"KEY\"\n{RELAYER_HEX}"));
    let inline = GOOD.replace("secret_env = \"API\"", "secret = \"sk-INLINESECRET\"");
    let secret_key =
        GOOD.replace("relayer_key_env = \"KEY\"", "relayer_key_env = \"KEY\"\nsk_live_51HqLyjWDarjtT1zdp7dc = true");
    let cases: [(&str, &str, Option<&str>, usize); 8] = [
        (&unknown, RELAYER_HEX, Some("settlement.relayer_key"), at("relayer_key =", &unknown)),
        (&unquoted, "UNQUOTEDKEY77", Some("networks.rpc_url"), at("rpc_url", &unquoted)),
        (&wrong_type, "WRONGTYPE", Some("database.max_connections"), at("max_connections", &wrong_type)),
        (&unterminated, &RELAYER_HEX[2..], Some("settlement.relayer_key_env"), at("relayer_key_env", &unterminated)),
        (&duplicate, "DUPPW", Some("database.url"), duplicate.lines().count()),
        (&own_line, &RELAYER_HEX[2..], None, at(&RELAYER_HEX[2..], &own_line)),
        (&inline, "INLINESECRET", Some("providers[0].credential.secret"), at("INLINESECRET", &inline)),
        (&secret_key, "51HqLyjWDarjtT1zdp7dc", Some("settlement.<key not shown>"), at("sk_live", &secret_key)),
    ];
    for (text, secret, key, line) in cases {
        let (k, l, c, message) = parse_error_of(text);
        assert!(!message.contains(secret), "the value is printed: {message}");
        assert!(!message.contains('\n'), "one line, no excerpt: {message}");
        assert_eq!(k.as_deref(), key, "{message}");
        assert_eq!(l, Some(line), "{message}");
        assert!(c.is_some(), "{message}");
        assert!(message.contains(&format!("line {line}, column ")), "{message}");
    }
    // The unknown key's message still helps: it lists the keys that are allowed there.
    let (_, _, c, message) = parse_error_of(&unknown);
    assert_eq!(c, Some(1));
    assert!(message.contains("unknown key") && message.contains("relayer_key_file"), "{message}");
    let (_, _, _, message) = parse_error_of(&wrong_type);
    assert!(message.contains("invalid type; expected u32"), "{message}");
    let (_, _, _, message) = parse_error_of(&unquoted);
    assert!(message.contains("TOML syntax: string values must be quoted"), "{message}");
}

// Goal: no validation error repeats the value it refuses (some are secrets, and an error is
// printed to a terminal and collected in logs): each names the key and says what is wrong.
#[test]
fn invalid_values_are_not_repeated() {
    let cases = [
        (GOOD.replace("price = \"0.001\"", "price = \"SECRETa\""), "providers[0].routes[0].price"),
        (GOOD.replace("price = \"0.001\"", "price_atomic = \"SECRETb\""), "providers[0].routes[0].price_atomic"),
        (
            GOOD.replace("price = \"0.001\"", "price = \"1\"\nsettlement = \"SECRETc\""),
            "providers[0].routes[0].settlement",
        ),
        (GOOD.replace("price = \"0.001\"", "price = \"1\"\nmethods = [\"SECRETd\"]"), "providers[0].routes[0].methods"),
        (
            GOOD.replace("price = \"0.001\"", "price = \"1\"\nnetworks = [\"SECRETe\"]"),
            "providers[0].routes[0].networks",
        ),
        (GOOD.replace("path = \"/weather/{city}\"", "path = \"/SECRETf/{bad name}\""), "providers[0].routes[0].path"),
        (GOOD.replace("inject = \"header\"", "inject = \"SECRETg\""), "providers[0].credential.inject"),
        (GOOD.replace("eip155:8453", "SECRETh"), "networks[0].id"),
        (GOOD.replace("http://127.0.0.1:8545", "http://[SECRETi/x"), "networks[0].rpc_url"),
        (GOOD.replace("http://127.0.0.1:9000", "https://svc:SECRETj@api.example"), "providers[0].upstream"),
        (GOOD.replace("http://127.0.0.1:9000", "https://api.example/?api_key=SECRETk"), "providers[0].upstream"),
        (format!("{GOOD}\n[server]\npublic_url = \"https://u:SECRETl@gw.example\"\n"), "server.public_url"),
        (format!("{GOOD}\n[database]\nurl = \"mysql://u:SECRETm@h/db\"\n"), "database.url"),
        (format!("{GOOD}\n[database]\nsqlite_durability = \"SECRETn\"\n"), "database.sqlite_durability"),
        (format!("{GOOD}\n[vault]\nmaster_key_env = \"API\"\n"), "vault.master_key"),
    ];
    for (text, key) in cases {
        let err = error_of(&text);
        assert!(err.starts_with(key), "{key}: {err}");
        assert!(!err.contains("SECRET") && !err.contains("sk-secret-value"), "{err}");
    }
}

fn config_at(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// Goal: a secret file anyone can write is refused (naming the key and the mode); one others
// can read is accepted with a warning naming the key; a private one gives no warning; and a
// world-writable configuration file is refused too.
#[cfg(unix)]
#[test]
fn secret_file_modes() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("relayer.key");
    std::fs::write(&key_file, RELAYER_HEX).unwrap();
    let text = GOOD.replace("relayer_key_env = \"KEY\"", &format!("relayer_key_file = \"{}\"", key_file.display()));
    chmod(&key_file, 0o600);
    assert!(Config::parse(&text, &env).unwrap().warnings.is_empty());
    chmod(&key_file, 0o640);
    let w = Config::parse(&text, &env).unwrap().warnings;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].key, "settlement.relayer_key_file");
    assert!(w[0].reason.contains("0640") && !w[0].reason.contains(&RELAYER_HEX[2..]), "{}", w[0]);
    chmod(&key_file, 0o606);
    let err = error_of(&text);
    assert!(err.starts_with("settlement.relayer_key_file") && err.contains("world-writable"), "{err}");
    assert!(!err.contains(&RELAYER_HEX[2..]));

    let secret = dir.path().join("api.secret");
    std::fs::write(&secret, "sk-secret-value").unwrap();
    chmod(&secret, 0o666);
    let text = GOOD.replace("secret_env = \"API\"", &format!("secret_file = \"{}\"", secret.display()));
    let err = error_of(&text);
    assert!(err.starts_with("providers[0].credential.secret_file") && err.contains("world-writable"), "{err}");

    let (_dir, path) = config_at(GOOD);
    chmod(&path, 0o666);
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("world-writable"), "{err}");
}

// Goal: an admin listener off loopback is refused (the admin API has no TLS) unless
// admin.allow_insecure_remote opts in, which is then warned about; loopback needs nothing.
#[test]
fn admin_listener_off_loopback() {
    for listen in ["127.0.0.1:8403", "[::1]:8403"] {
        let c = Config::parse(&format!("{GOOD}\n[admin]\nlisten = \"{listen}\"\n"), &env).unwrap();
        assert!(c.warnings.is_empty(), "{listen}");
    }
    for listen in ["0.0.0.0:8403", "192.168.1.10:8403", "[::]:8403"] {
        let err = error_of(&format!("{GOOD}\n[admin]\nlisten = \"{listen}\"\n"));
        assert!(err.starts_with("admin.listen") && err.contains("no TLS"), "{err}");
        assert!(err.contains("allow_insecure_remote"), "the error says how to opt in: {err}");
    }
    let c = Config::parse(&format!("{GOOD}\n[admin]\nlisten = \"0.0.0.0:8403\"\nallow_insecure_remote = true\n"), &env)
        .unwrap();
    assert!(c.admin.allow_insecure_remote);
    assert_eq!(c.warnings.len(), 1);
    assert_eq!(c.warnings[0].key, "admin.listen");
    let c = Config::parse(&format!("{GOOD}\n[admin]\nlisten = \"0.0.0.0:8403\"\nenabled = false\n"), &env).unwrap();
    assert!(c.warnings.is_empty(), "a disabled admin API listens nowhere");
}

// Goal: `http://` to a host that is not loopback is refused for an RPC URL and an upstream,
// naming the key and the opt-out, and accepted with `allow_insecure_http = true` on that
// entry; loopback (127.0.0.0/8, ::1, localhost) and https need nothing.
#[test]
fn plain_http_off_loopback_needs_the_opt_out() {
    let rpc = GOOD.replace("http://127.0.0.1:8545", "http://rpc.internal:8545/v2/KEYabc");
    let err = error_of(&rpc);
    assert!(err.starts_with("networks[0].rpc_url: http:// to a host that is not loopback"), "{err}");
    assert!(err.contains("allow_insecure_http") && !err.contains("KEYabc"), "{err}");
    let allowed = rpc.replace("eip712_version = \"2\"", "eip712_version = \"2\"\nallow_insecure_http = true");
    assert!(Config::parse(&allowed, &env).is_ok());
    let up = GOOD.replace("http://127.0.0.1:9000", "http://api.example");
    let err = error_of(&up);
    assert!(err.starts_with("providers[0].upstream: http:// to a host that is not loopback"), "{err}");
    let allowed = up
        .replace("upstream = \"http://api.example\"", "upstream = \"http://api.example\"\nallow_insecure_http = true");
    assert!(Config::parse(&allowed, &env).is_ok());
    for fine in ["http://localhost:9000", "http://127.0.0.9:9000", "http://[::1]:9000", "https://api.example"] {
        assert!(Config::parse(&GOOD.replace("http://127.0.0.1:9000", fine), &env).is_ok(), "{fine}");
    }
}

// Goal: a TLS listener needs both files; a missing or mismatched file is refused naming the
// key; an admin listener off loopback that serves TLS needs no insecure opt-in.
#[test]
fn listener_tls_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.pem");
    let err = error_of(&format!("{GOOD}\n[server]\ntls_cert_file = \"{}\"\n", missing.display()));
    assert!(err.starts_with("server.tls_key_file: missing"), "{err}");
    let key = dir.path().join("key.pem");
    let err = error_of(&format!(
        "{GOOD}\n[admin]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        missing.display(),
        key.display()
    ));
    assert!(err.starts_with("admin.tls_cert_file: cannot read"), "{err}");
    let err = error_of(&format!("{GOOD}\n[tls]\nextra_ca_file = \"{}\"\n", missing.display()));
    assert!(err.starts_with("tls.extra_ca_file: cannot read"), "{err}");
}

// Goal: an upstream at the RPC node's, the admin listener's or the gateway's own host and port
// is refused with the reason, comparing localhost, loopback and unspecified addresses.
#[test]
fn upstream_must_be_a_third_party() {
    let with_upstream = |upstream: &str, extra: &str| {
        // allow_insecure_http: these cases are about where the upstream points, not the scheme.
        GOOD.replace(
            "upstream = \"http://127.0.0.1:9000\"",
            &format!("upstream = \"{upstream}\"\nallow_insecure_http = true"),
        ) + extra
    };
    let cases = [
        (with_upstream("http://127.0.0.1:8545", ""), "RPC node of networks[0]"),
        (with_upstream("http://localhost:8545/x", ""), "RPC node of networks[0]"),
        (with_upstream("http://127.0.0.1:8403", ""), "admin listener"),
        (with_upstream("http://localhost:8402", ""), "own listener"),
        (with_upstream("http://127.0.0.1:7000", "\n[server]\nlisten = \"0.0.0.0:7000\"\n"), "own listener"),
        (
            with_upstream(
                "http://10.0.0.5:9100",
                "\n[admin]\nlisten = \"10.0.0.5:9100\"\nallow_insecure_remote = true\n",
            ),
            "admin listener",
        ),
    ];
    for (text, needle) in cases {
        let err = error_of(&text);
        assert!(err.starts_with("providers[0].upstream: points at the") && err.contains(needle), "{err}");
    }
    let rpc = GOOD.replace("http://127.0.0.1:8545", "https://rpc.example/v2/KEY");
    let err = error_of(&rpc.replace("http://127.0.0.1:9000", "https://RPC.example"));
    assert!(err.contains("RPC node") && !err.contains("KEY"), "{err}");
    for fine in ["http://127.0.0.1:8546", "https://rpc.example:8545", "http://127.0.0.2:8402"] {
        assert!(Config::parse(&with_upstream(fine, ""), &env).is_ok(), "{fine}");
    }
    let c = Config::parse(&with_upstream("http://127.0.0.1:8403", "\n[admin]\nenabled = false\n"), &env);
    assert!(c.is_ok(), "the admin listener is not open");
}

// Goal: `settlement_wait` parses its three forms on an `after` route (default `included`),
// `finality_confirmations` defaults to 10, and a bad wait, a wait on another mode or a depth
// of 0 is refused naming its key.
#[test]
fn settlement_wait_and_finality_depth() {
    use super::SettlementWait;
    let c = Config::parse(GOOD, &env).unwrap();
    assert_eq!(c.providers[0].routes[0].settlement_wait, SettlementWait::Included);
    assert_eq!(c.networks[0].finality_confirmations, 10);
    let route = |line: &str| GOOD.replace("price = \"0.001\"", &format!("price = \"0.001\"\n{line}"));
    for (line, wait) in [
        ("settlement_wait = \"submitted\"", SettlementWait::Submitted),
        ("settlement_wait = \"included\"", SettlementWait::Included),
        ("settlement_wait = \"confirmations:3\"", SettlementWait::Confirmations(3)),
    ] {
        let c = Config::parse(&route(line), &env).unwrap();
        assert_eq!(c.providers[0].routes[0].settlement_wait, wait, "{line}");
        assert_eq!(SettlementWait::Confirmations(3).as_config(), "confirmations:3");
    }
    let depth = GOOD.replace("eip712_version = \"2\"", "eip712_version = \"2\"\nfinality_confirmations = 64");
    assert_eq!(Config::parse(&depth, &env).unwrap().networks[0].finality_confirmations, 64);
    let key = "providers[0].routes[0].settlement_wait";
    for bad in [
        route("settlement_wait = \"mined\""),
        route("settlement_wait = \"confirmations:0\""),
        route("settlement_wait = \"confirmations:x\""),
        route("settlement_wait = \"confirmations:1001\""),
        route("settlement_wait = \"submitted\"\nsettlement = \"deferred\""),
        route("settlement_wait = \"confirmations:2\"\nsettlement = \"before\""),
    ] {
        let err = error_of(&bad);
        assert!(err.contains(key), "{err}");
    }
    // `included` is what every mode does: allowed anywhere.
    assert!(Config::parse(&route("settlement_wait = \"included\"\nsettlement = \"before\""), &env).is_ok());
    let err = error_of(&GOOD.replace("eip712_version = \"2\"", "eip712_version = \"2\"\nfinality_confirmations = 0"));
    assert!(err.contains("networks[0].finality_confirmations"), "{err}");
}

// Goal: a provider's service description and a route's discovery table parse into their typed
// values (body type defaulting to json); each value the bazaar extension's rules refuse, an
// oversized table and an unknown discovery key are refused naming the key, never the value.
#[test]
fn discovery_keys() {
    let provider_end = GOOD.find("\n[[providers.routes]]").unwrap();
    let with = |provider: &str, route: &str| {
        format!("{}\n{provider}\n{}\n{route}\n", &GOOD[..provider_end], &GOOD[provider_end..])
    };
    let text = with(
        "service_name = \"Weather Co\"\ntags = [\"weather\", \"forecast\"]\nicon_url = \"https://cdn.example.com/i.png\"",
        "discovery = { query_example = { units = \"metric\" }, output_example = { temp = 1 } }",
    );
    let c = Config::parse(&text, &env).unwrap();
    let p = &c.providers[0];
    assert_eq!(p.service.name.as_deref(), Some("Weather Co"));
    assert_eq!(p.service.tags, vec!["weather".to_owned(), "forecast".to_owned()]);
    let d = &p.routes[0].discovery;
    assert_eq!(d.query_example, Some(serde_json::json!({ "units": "metric" })));
    assert_eq!(d.body_type, "json");
    assert_eq!(Config::parse(GOOD, &env).unwrap().providers[0].routes[0].discovery.body_type, "json");
    let long = "x".repeat(33);
    let big = "y".repeat(4100);
    for (provider, route, key) in [
        (format!("service_name = \"{long}\""), String::new(), "providers[0].service_name"),
        ("service_name = \"caf\u{e9}\"".to_owned(), String::new(), "providers[0].service_name"),
        ("tags = [\"a\", \"b\", \"c\", \"d\", \"e\", \"f\"]".to_owned(), String::new(), "providers[0].tags"),
        ("tags = [\"Geo\", \"geo\"]".to_owned(), String::new(), "providers[0].tags"),
        ("tags = [\"\"]".to_owned(), String::new(), "providers[0].tags"),
        ("icon_url = \"ftp://cdn.example.com/i.png\"".to_owned(), String::new(), "providers[0].icon_url"),
        ("icon_url = \"https://u:p@cdn.example.com/i.png\"".to_owned(), String::new(), "providers[0].icon_url"),
        ("icon_url = \"https://127.0.0.1/i.png\"".to_owned(), String::new(), "providers[0].icon_url"),
        ("icon_url = \"https://2130706433/i.png\"".to_owned(), String::new(), "providers[0].icon_url"),
        ("icon_url = \"https://localhost/i.png\"".to_owned(), String::new(), "providers[0].icon_url"),
        ("icon_url = \"/relative.png\"".to_owned(), String::new(), "providers[0].icon_url"),
        (String::new(), "discovery = { body_type = \"xml\" }".to_owned(), "discovery.body_type"),
        (String::new(), "discovery = { query_schema = \"a string\" }".to_owned(), "discovery.query_schema"),
        (String::new(), "discovery = { query_example = { n = 1 } }".to_owned(), "discovery.query_example"),
        (String::new(), format!("discovery = {{ output_example = \"{big}\" }}"), "routes[0].discovery"),
    ] {
        let e = error_of(&with(&provider, &route));
        assert!(e.contains(key), "{provider} {route}: {e}");
        assert!(!e.contains("xml") && !e.contains(&long) && !e.contains("2130706433"), "{e}");
    }
    let e = error_of(&with("", "discovery = { query_exmaple = { a = \"b\" } }"));
    assert!(e.contains("query_exmaple"), "{e}");
}
