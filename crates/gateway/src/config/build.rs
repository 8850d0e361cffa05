//! The raw file to the typed `Config`, section by section, with every default.
//!
//! Calls `checks` for the refusals and warnings, `provider` for each provider and its routes
//! and `values` for single values. Reads the secrets the file names (relayer key, vault master
//! key, credentials) once, into redacted types. Nothing in `config` imports this module but
//! `Config::parse`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use tollgate_tls::{ClientTls, ServerCert};
use tollgate_x402::Network;

use super::checks::{check_admin_listener, check_plain_http, check_secret_files, check_upstream};
use super::error::{ConfigError, UNKNOWN_NETWORK, invalid};
use super::provider::{build_provider, build_route};
use super::raw::{RawConfig, RawReconciliation, RawServer};
use super::sections::{
    AdminConfig, Config, ControlConfig, Credential, DatabaseConfig, DeferredOverflow, LogConfig, LogFormat,
    NetworkConfig, ProviderConfig, ReconciliationConfig, SecretSource, ServerConfig, ServerLimits, SettlementConfig,
    TlsConfig, VerificationConfig,
};
use super::upstream_allow::AllowEntry;
use super::values::{address, base_url, ms, parse_master_key, secret_from, url};

/// `[[networks]] finality_confirmations` when unset: the same depth as `[reconciliation]
/// confirmations`' default, so that what `/receipts` calls final is what reconciliation
/// counts as matched.
const FINALITY_CONFIRMATIONS_DEFAULT: u64 = 10;

/// The typed configuration of `raw`, resolving `*_env` keys through `env`.
pub(super) fn build(raw: RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let mut warnings = check_secret_files(&raw)?;
    let listen_s = raw.server.listen.as_deref().unwrap_or("127.0.0.1:8402");
    let listen: SocketAddr = listen_s.parse().map_err(|_| invalid("server.listen", "expected host:port"))?;
    let public_url = match &raw.server.public_url {
        Some(u) => Some(base_url("server.public_url", u)?),
        None => None,
    };
    let server = ServerConfig {
        listen,
        public_url,
        body_bytes_max: raw.server.body_bytes_max.unwrap_or(1024 * 1024),
        response_bytes_max: raw.server.response_bytes_max.unwrap_or(16 * 1024 * 1024),
        payment_header_bytes_max: usize::try_from(raw.server.payment_header_bytes_max.unwrap_or(16 * 1024))
            .map_err(|_| invalid("server.payment_header_bytes_max", "too large"))?,
        payment_id_retention: match raw.server.payment_id_retention_s.unwrap_or(86_400) {
            s @ 60..=31_536_000 => Duration::from_secs(s),
            _ => return Err(invalid("server.payment_id_retention_s", "expected 60 to 31536000 seconds")),
        },
        forwarded_headers: raw.server.forwarded_headers.unwrap_or(true),
        tls: server_cert("server", raw.server.tls_cert_file.as_deref(), raw.server.tls_key_file.as_deref())?,
        limits: ServerLimits::default(),
    };
    let server = ServerConfig { limits: server_limits(&raw.server, server.payment_header_bytes_max)?, ..server };
    let tls = TlsConfig {
        client: ClientTls::new(raw.tls.extra_ca_file.as_deref())
            .map_err(|e| invalid("tls.extra_ca_file", e.to_string()))?,
        cert_reload_interval: match raw.tls.cert_reload_interval_ms.unwrap_or(5_000) {
            0 => None,
            v => Some(Duration::from_millis(v.max(100))),
        },
    };

    let db_url = match (raw.database.url, raw.database.url_env.as_deref()) {
        (Some(_), Some(_)) => return Err(invalid("database", "give either url or url_env, not both")),
        (Some(u), None) => u,
        (None, Some(name)) => env(name).ok_or_else(|| invalid("database.url_env", format!("{name} is not set")))?,
        (None, None) => super::paths::DEFAULT_SQLITE_URL.to_owned(),
    };
    if !(db_url.starts_with("sqlite:") || db_url.starts_with("postgres://") || db_url.starts_with("postgresql://")) {
        return Err(invalid("database.url", "expected a sqlite: or postgres:// URL"));
    }
    let database = DatabaseConfig {
        url: SecretString::from(db_url),
        max_connections: raw.database.max_connections.unwrap_or(8),
        statement_timeout_ms: raw.database.statement_timeout_ms.unwrap_or(5_000),
        sqlite_synchronous_full: match raw.database.sqlite_durability.as_deref().unwrap_or("full") {
            "full" => true,
            "normal" => false,
            _ => return Err(invalid("database.sqlite_durability", "expected full or normal")),
        },
    };

    let verification = VerificationConfig {
        valid_before_buffer_s: raw.verification.valid_before_buffer_s.unwrap_or(6),
        validity_window_max_s: raw.verification.validity_window_max_s,
        balance_cache_ttl_ms: raw.verification.balance_cache_ttl_ms.unwrap_or(2_000),
    };

    let s = raw.settlement;
    let relayer_key =
        secret_from("settlement.relayer_key", s.relayer_key_env.as_deref(), s.relayer_key_file.as_deref(), env)?
            .map(|(k, _)| k);
    if let Some(k) = &relayer_key {
        k.expose_secret()
            .trim_start_matches("0x")
            .parse::<alloy::signers::local::PrivateKeySigner>()
            .map_err(|_| invalid("settlement.relayer_key", "not a valid secp256k1 private key (32 bytes hex)"))?;
    }
    let settlement = SettlementConfig {
        relayer_key,
        receipt_poll_interval: ms(s.receipt_poll_interval_ms, 250),
        fee_cache: ms(s.fee_cache_ms, 1_000),
        receipt_timeout: ms(s.receipt_timeout_ms, 30_000),
        recovery_interval: ms(s.recovery_interval_ms, 5_000),
        recovery_grace_s: s.recovery_grace_s.unwrap_or(120),
        deferred_queue_capacity: s.deferred_queue_capacity.unwrap_or(1024).max(1),
        deferred_attempts_max: s.deferred_attempts_max.unwrap_or(8).max(1),
        deferred_concurrency: s.deferred_concurrency.unwrap_or(32).clamp(1, 1024),
        deferred_receipt_poll_interval: ms(s.deferred_receipt_poll_interval_ms.map(|v| v.max(1)), 250),
        deferred_admission_margin_s: s.deferred_admission_margin_s.unwrap_or(30),
        deferred_backlog_horizon_s: s.deferred_backlog_horizon_s.unwrap_or(60).max(1),
        deferred_overflow: match s.deferred_overflow.as_deref() {
            None | Some("after") => DeferredOverflow::After,
            Some("reject") => DeferredOverflow::Reject,
            Some(_) => return Err(invalid("settlement.deferred_overflow", "expected after or reject")),
        },
        deferred_payer_exposure_max_atomic: match s.deferred_payer_exposure_max_atomic.as_deref() {
            None => None,
            Some(v) => Some(v.parse::<u128>().map_err(|_| {
                invalid("settlement.deferred_payer_exposure_max_atomic", "expected a decimal integer (atomic units)")
            })?),
        },
        relayer_lease_wait: ms(s.relayer_lease_wait_ms, 10_000),
        relayer_lease_ttl_s: s.relayer_lease_ttl_s.unwrap_or(10).max(1),
        gas_warn_wei: s.gas_warn_wei.unwrap_or(1_000_000_000_000_000),
        // At least 100 ms: each check is a few RPC calls and a database read.
        health_interval: ms(s.health_interval_ms.map(|v| v.max(100)), 2_000),
        ready_settlements_min: s.ready_settlements_min.unwrap_or(10).max(1),
        gas_per_settlement: s.gas_per_settlement.unwrap_or(90_000).max(21_000),
    };

    let mut networks: Vec<NetworkConfig> = Vec::new();
    for (i, n) in raw.networks.into_iter().enumerate() {
        let key = |k: &str| format!("networks[{i}].{k}");
        let network = Network::parse(&n.id).map_err(|_| invalid(key("id"), UNKNOWN_NETWORK))?;
        if networks.iter().any(|m| m.network == network) {
            return Err(invalid(key("id"), format!("{network} is configured twice")));
        }
        let rpc_url = match (n.rpc_url, n.rpc_url_env.as_deref()) {
            (Some(_), Some(_)) => return Err(invalid(key("rpc_url"), "give either rpc_url or rpc_url_env, not both")),
            (Some(u), None) => u,
            (None, Some(name)) => env(name).ok_or_else(|| invalid(key("rpc_url_env"), format!("{name} is not set")))?,
            (None, None) => return Err(invalid(key("rpc_url"), "missing")),
        };
        let parsed = url(&key("rpc_url"), &rpc_url)?;
        check_plain_http(&key("rpc_url"), &parsed, n.allow_insecure_http.unwrap_or(false))?;
        networks.push(NetworkConfig {
            network,
            rpc_url: SecretString::from(rpc_url),
            asset: address(&key("asset"), &n.asset)?,
            eip712_name: n.eip712_name,
            eip712_version: n.eip712_version,
            decimals: n.decimals.unwrap_or(6),
            symbol: match n.symbol {
                None => "USDC".to_owned(),
                Some(s) if !s.is_empty() && s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric()) => s,
                Some(_) => return Err(invalid(key("symbol"), "1 to 16 ASCII letters or digits")),
            },
            rpc_timeout: ms(n.rpc_timeout_ms, 5_000),
            finality_confirmations: match n.finality_confirmations {
                Some(0) => return Err(invalid(key("finality_confirmations"), "must be at least 1")),
                v => v.unwrap_or(FINALITY_CONFIRMATIONS_DEFAULT),
            },
        });
    }

    let mut providers: Vec<ProviderConfig> = Vec::new();
    for (pi, p) in raw.providers.iter().enumerate() {
        let pkey = format!("providers[{pi}]");
        if providers.iter().any(|q| q.id == p.id) {
            return Err(invalid(format!("{pkey}.id"), "an earlier provider has the same id"));
        }
        let mut provider = build_provider(&pkey, p, env, true)?;
        for (ri, r) in p.routes.iter().enumerate() {
            let route = build_route(&format!("{pkey}.routes[{ri}]"), r, &provider, &networks, &server)?;
            provider.routes.push(route);
        }
        providers.push(provider);
    }
    if settlement.relayer_key.is_none() && providers.iter().any(|p| p.routes.iter().any(|r| !r.free)) {
        // Without a relayer every paid call would be verified, forwarded and then fail to
        // settle: refuse to start instead.
        return Err(invalid(
            "settlement.relayer_key",
            "required (relayer_key_env or relayer_key_file) when routes are priced",
        ));
    }
    let admin = AdminConfig {
        enabled: raw.admin.enabled.unwrap_or(true),
        listen: raw
            .admin
            .listen
            .as_deref()
            .unwrap_or("127.0.0.1:8403")
            .parse()
            .map_err(|_| invalid("admin.listen", "expected host:port"))?,
        body_bytes_max: raw.admin.body_bytes_max.unwrap_or(64 * 1024),
        allow_insecure_remote: raw.admin.allow_insecure_remote.unwrap_or(false),
        tls: server_cert("admin", raw.admin.tls_cert_file.as_deref(), raw.admin.tls_key_file.as_deref())?,
        upstream_allow: raw
            .admin
            .upstream_allow
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, e)| AllowEntry::parse(e).map_err(|r| invalid(format!("admin.upstream_allow[{i}]"), r)))
            .collect::<Result<_, _>>()?,
    };
    if let Some(w) = check_admin_listener(&admin)? {
        warnings.push(w);
    }
    for (pi, p) in providers.iter().enumerate() {
        check_upstream(&format!("providers[{pi}].upstream"), &p.upstream, &server, &admin, &networks)?;
    }
    let vault_key = match secret_from(
        "vault.master_key",
        raw.vault.master_key_env.as_deref(),
        raw.vault.master_key_file.as_deref(),
        env,
    )? {
        None => None,
        Some((key, _)) => Some(parse_master_key(key.expose_secret()).map_err(|r| invalid("vault.master_key", r))?),
    };
    // A vault credential named in the file cannot ever serve without the master key: refuse
    // now, naming the provider and the credential, rather than answer 503 at every call.
    // (A credential with no uploaded version yet is legitimate at startup: it is uploaded
    // through the admin API; `/readyz` reports it until then.)
    if vault_key.is_none() {
        for (pi, p) in providers.iter().enumerate() {
            if let Some(Credential { secret: SecretSource::Vault { name }, .. }) = &p.credential {
                return Err(invalid(
                    format!("providers[{pi}].credential.vault"),
                    format!(
                        "provider `{}` credential `{name}` is a vault credential, but [vault] has no master key \
                         (master_key_env or master_key_file)",
                        p.id
                    ),
                ));
            }
        }
    }
    let log = LogConfig {
        format: match raw.log.format.as_deref() {
            None => LogFormat::Text,
            Some(f) => f.parse().map_err(|r| invalid("log.format", r))?,
        },
    };
    let control = ControlConfig {
        // At least 10 ms: the poll is a database read.
        poll_interval: ms(raw.control.poll_interval_ms.map(|v| v.max(10)), 250),
        audit_queue_capacity: raw.control.audit_queue_capacity.unwrap_or(4096).max(1),
        // At most a second: records wait in memory this long, and a crash loses the waiting.
        audit_batch: ms(raw.control.audit_batch_ms.map(|v| v.min(1_000)), 50),
    };
    Ok(Config {
        server,
        database,
        verification,
        settlement,
        networks,
        providers,
        raw_providers: raw.providers,
        admin,
        vault_key,
        control,
        tls,
        reconciliation: reconciliation(raw.reconciliation)?,
        log,
        warnings,
    })
}

/// `[server]`'s listener limits, each within a range that keeps the listener usable.
fn server_limits(raw: &RawServer, payment_header_bytes_max: usize) -> Result<ServerLimits, ConfigError> {
    let d = ServerLimits::default();
    let within = |key: &str, v: Option<u64>, default: u64, lo: u64, hi: u64| -> Result<u64, ConfigError> {
        match v {
            None => Ok(default),
            Some(v) if (lo..=hi).contains(&v) => Ok(v),
            Some(_) => Err(invalid(format!("server.{key}"), format!("must be between {lo} and {hi}"))),
        }
    };
    let size = |key: &str, v: Option<usize>, default: usize, lo: usize, hi: usize| {
        let wide = |v: usize| u64::try_from(v).unwrap_or(u64::MAX);
        within(key, v.map(wide), wide(default), wide(lo), wide(hi)).map(|v| usize::try_from(v).unwrap_or(usize::MAX))
    };
    let millis = |key: &str, v: Option<u64>, default: Duration, lo: u64, hi: u64| {
        within(key, v, u64::try_from(default.as_millis()).unwrap_or(u64::MAX), lo, hi).map(Duration::from_millis)
    };
    let header_bytes_max = size("header_bytes_max", raw.header_bytes_max, d.header_bytes_max, 4 * 1024, 1024 * 1024)?;
    // The payment header travels among the headers: a cap below it would refuse every payment.
    if header_bytes_max < payment_header_bytes_max.saturating_add(1024) {
        return Err(invalid(
            "server.header_bytes_max",
            "must leave room for the payment header (payment_header_bytes_max plus 1024)",
        ));
    }
    let keep_alive_ms = within(
        "keep_alive_timeout_ms",
        raw.keep_alive_timeout_ms,
        d.keep_alive_timeout.map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        0,
        3_600_000,
    )?;
    let unpaid_per_ip_per_s = within("unpaid_per_ip_per_s", raw.unpaid_per_ip_per_s.map(u64::from), 10, 0, 1_000_000)?;
    let unpaid_per_ip_burst = within("unpaid_per_ip_burst", raw.unpaid_per_ip_burst.map(u64::from), 50, 1, 1_000_000)?;
    Ok(ServerLimits {
        connections_max: size("connections_max", raw.connections_max, d.connections_max, 1, 1_000_000)?,
        header_read_timeout: millis(
            "header_read_timeout_ms",
            raw.header_read_timeout_ms,
            d.header_read_timeout,
            100,
            300_000,
        )?,
        keep_alive_timeout: (keep_alive_ms > 0).then(|| Duration::from_millis(keep_alive_ms)),
        request_timeout: millis("request_timeout_ms", raw.request_timeout_ms, d.request_timeout, 100, 3_600_000)?,
        concurrency_max: size("concurrency_max", raw.concurrency_max, d.concurrency_max, 1, 1_000_000)?,
        header_bytes_max,
        headers_count_max: size("headers_count_max", raw.headers_count_max, d.headers_count_max, 8, 1000)?,
        uri_bytes_max: size("uri_bytes_max", raw.uri_bytes_max, d.uri_bytes_max, 256, 65_000)?,
        unpaid_per_ip_per_s: u32::try_from(unpaid_per_ip_per_s).unwrap_or(u32::MAX),
        unpaid_per_ip_burst: u32::try_from(unpaid_per_ip_burst).unwrap_or(u32::MAX),
    })
}

/// A listener's certificate: both files or neither, loaded now so a bad file is refused at
/// startup with the key named.
fn server_cert(section: &str, cert: Option<&Path>, key: Option<&Path>) -> Result<Option<Arc<ServerCert>>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(format!("{section}.tls_key_file"), "missing (tls_cert_file is set)")),
        (None, Some(_)) => Err(invalid(format!("{section}.tls_cert_file"), "missing (tls_key_file is set)")),
        (Some(c), Some(k)) => ServerCert::load(c, k).map(Some).map_err(|e| {
            let key = match e {
                tollgate_tls::TlsError::BadKey { .. } => "tls_key_file",
                tollgate_tls::TlsError::Read { ref path, .. } if path == k => "tls_key_file",
                _ => "tls_cert_file",
            };
            invalid(format!("{section}.{key}"), e.to_string())
        }),
    }
}

fn reconciliation(r: RawReconciliation) -> Result<ReconciliationConfig, ConfigError> {
    let at_least_1 = |key: &str, v: Option<u64>, default: u64| match v {
        Some(0) => Err(invalid(format!("reconciliation.{key}"), "must be at least 1")),
        v => Ok(v.unwrap_or(default)),
    };
    Ok(ReconciliationConfig {
        interval: r.interval_s.map(|s| at_least_1("interval_s", Some(s), 1).map(Duration::from_secs)).transpose()?,
        confirmations: at_least_1("confirmations", r.confirmations, 10)?,
        chunk_blocks: at_least_1("chunk_blocks", r.chunk_blocks, 2_000)?,
        start_block: r.start_block.unwrap_or(0),
        run_blocks_max: at_least_1("run_blocks_max", r.run_blocks_max, 100_000)?,
        lease_ttl_s: at_least_1("lease_ttl_s", r.lease_ttl_s, 300)?,
    })
}
