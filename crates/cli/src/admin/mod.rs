//! `tollgate admin`: a client of the admin API (docs/admin-api.md) with one subcommand per
//! operation, plus two that open the database directly: `bootstrap` (the first operator token)
//! and `audit verify --config` (the audit hash chain, without a running gateway).
//!
//! Owns: where the admin token comes from (TOLLGATE_ADMIN_TOKEN or `--token-file`, never the
//! command line), how requests are built (path segments and query values percent-encoded, a
//! timeout on every request), and how an answer becomes output and an exit code (4xx → 3,
//! transport → 6, broken audit chain → 8).
//!
//! Must not: print a token other than the one a creation returns (once), take a secret from the
//! command line, or follow redirects (the token would go with them).
//!
//! Modules: `args` and `catalog_args` (the command line), `client` (the HTTP client),
//! `bodies` (request bodies and secrets), `output` (printing and exit codes), `offline` (the
//! database commands), `diff` (the file against the live catalog).

use std::io::Write;

use reqwest::Method;
use secrecy::ExposeSecret;
use serde_json::Value;
use tollgate_admin_api::types as api;

use crate::{EXIT_FAILURE, EXIT_OK, Failure};

mod args;
mod bodies;
mod catalog_args;
mod client;
mod diff;
mod offline;
mod output;

pub use args::AdminArgs;
use args::{
    AdminCommand, AuditCommand, CredentialCommand, EndpointCommand, LedgerCommand, ProviderCommand, ReconcileCommand,
    SettingsCommand, TokenCommand, WalletCommand,
};
use bodies::{endpoint_body, endpoint_patch, provider_body, read_secret, route_name, to_body};
use client::Api;
use offline::{bootstrap, verify_offline};
use output::{print_created, print_json, verdict};

/// The variable holding the admin API's base URL.
pub const URL_ENV: &str = "TOLLGATE_ADMIN_URL";
/// The variable holding the admin token.
pub const TOKEN_ENV: &str = "TOLLGATE_ADMIN_TOKEN";
/// The admin listener's default address.
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:8403";
/// Largest JSON answer read (an export is streamed, not held).
pub(crate) const ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest credential secret read from stdin or a file (the server's limit is 8192 bytes).
pub(crate) const SECRET_BYTES_MAX: u64 = 8192 + 2;
/// Largest token file.
pub(crate) const TOKEN_FILE_BYTES_MAX: u64 = 1024;

/// Shown under `tollgate admin --help`.
pub(crate) const ADMIN_HELP: &str = "\
Authentication: the token comes from TOLLGATE_ADMIN_TOKEN or --token-file PATH (never from the
command line). `tollgate admin bootstrap --config FILE` creates the first operator token.

Examples:
  tollgate admin bootstrap --config tollgate.toml --out ~/.tollgate/admin.token
  export TOLLGATE_ADMIN_TOKEN=$(cat ~/.tollgate/admin.token)
  tollgate admin whoami
  tollgate admin --url http://10.0.0.5:8403 endpoint list weather
  tollgate admin --config /etc/tollgate/tollgate.toml endpoint list weather

Where the admin API is: --url, else TOLLGATE_ADMIN_URL, else `[admin] listen` of the
configuration file (--config FILE or TOLLGATE_CONFIG), else http://127.0.0.1:8403.

Exit codes:
  0  success
  1  other failure (configuration, database, 5xx answer)
  2  usage: bad arguments, no token, unreadable token or secret file
  3  refused by the admin API (4xx: the code is printed, e.g. admin_forbidden)
  6  transport error (the admin API could not be reached or timed out)
  8  audit chain broken (audit verify)";

/// Runs an admin subcommand; returns the exit code.
pub async fn run(args: AdminArgs) -> Result<u8, Failure> {
    let conn = args.connection;
    match args.command {
        // The two commands that read the database never need a token or the API.
        AdminCommand::Bootstrap { label, out, force } => {
            let config = conn.config_file().ok_or_else(|| {
                Failure::usage(format!("bootstrap needs the configuration: --config FILE or {}", args::CONFIG_ENV))
            })?;
            return bootstrap(&config, &label, out.as_deref(), force).await;
        }
        AdminCommand::Audit(AuditCommand::Verify) if conn.config.is_some() => {
            return verify_offline(conn.config.as_deref().unwrap_or(std::path::Path::new(""))).await;
        }
        _ => {}
    }
    let api = Api::new(&conn)?;
    match args.command {
        AdminCommand::Bootstrap { .. } => Ok(EXIT_OK),
        AdminCommand::Diff => {
            let config = conn.config_file().ok_or_else(|| {
                Failure::usage(format!("diff needs the configuration: --config FILE or {}", args::CONFIG_ENV))
            })?;
            diff::run(&api, &config).await
        }
        AdminCommand::Whoami => api.show(Method::GET, &["whoami"], &[], None).await,
        AdminCommand::Openapi => api.show(Method::GET, &["openapi.json"], &[], None).await,
        AdminCommand::Token(cmd) => token(&api, cmd).await,
        AdminCommand::Provider(ProviderCommand::List) => api.show(Method::GET, &["providers"], &[], None).await,
        AdminCommand::Provider(ProviderCommand::Put(p)) => {
            let body = provider_body(&p)?;
            api.show(Method::PUT, &["providers", &p.id], &[], Some(body)).await
        }
        AdminCommand::Provider(ProviderCommand::Delete { id }) => {
            api.show(Method::DELETE, &["providers", &id], &[], None).await
        }
        AdminCommand::Endpoint(cmd) => endpoint(&api, cmd).await,
        AdminCommand::Credential(cmd) => credential(&api, cmd).await,
        AdminCommand::Wallet(cmd) => wallet(&api, cmd).await,
        AdminCommand::Settings(SettingsCommand::Show) => api.show(Method::GET, &["settings"], &[], None).await,
        AdminCommand::Allowlist { state } => {
            let body = to_body(&api::SettingsBody { allowlist_mode: state == "on" });
            api.show(Method::PUT, &["settings"], &[], body).await
        }
        AdminCommand::Audit(cmd) => audit(&api, cmd).await,
        AdminCommand::Revenue { provider, from_unix_s, to_unix_s } => {
            let query =
                [("from_unix_s", from_unix_s.map(|v| v.to_string())), ("to_unix_s", to_unix_s.map(|v| v.to_string()))];
            api.show(Method::GET, &["providers", &provider, "revenue"], &query, None).await
        }
        AdminCommand::Reconcile(cmd) => reconcile(&api, cmd).await,
        AdminCommand::Ledger(LedgerCommand::Entries {
            provider,
            payer,
            from_unix_s,
            to_unix_s,
            state,
            offset,
            limit,
        }) => {
            let query = [
                ("provider", provider),
                ("payer", payer),
                ("from_unix_s", from_unix_s.map(|v| v.to_string())),
                ("to_unix_s", to_unix_s.map(|v| v.to_string())),
                ("state", state),
                ("offset", offset.map(|v| v.to_string())),
                ("limit", limit.map(|v| v.to_string())),
            ];
            api.show(Method::GET, &["ledger", "entries"], &query, None).await
        }
        AdminCommand::Ledger(LedgerCommand::Events { id }) => {
            api.show(Method::GET, &["ledger", "entries", &id, "events"], &[], None).await
        }
    }
}

async fn reconcile(api: &Api, cmd: ReconcileCommand) -> Result<u8, Failure> {
    match cmd {
        ReconcileCommand::Run {
            network,
            from_block,
            to_block,
            from_time,
            to_time,
            resume,
            confirmations,
            chunk_blocks,
            csv,
        } => {
            let body = to_body(&api::ReconcileBody {
                network,
                from_block,
                to_block,
                from_time,
                to_time,
                resume,
                confirmations,
                chunk_blocks,
            });
            if csv {
                let query = [("format", Some("csv".to_owned()))];
                let resp = api.send(Method::POST, &["reconcile"], &query, body).await?;
                // Streamed: a large report is never cut short.
                let mut resp = resp;
                let mut out = crate::out::stdout();
                let fail = |e: std::io::Error| Failure::new(EXIT_FAILURE, format!("cannot write the CSV: {e}"));
                while let Some(chunk) = resp.chunk().await.map_err(|e| api.transport(e))? {
                    out.write_all(&chunk).map_err(fail)?;
                }
                out.flush().map_err(fail)?;
                return Ok(EXIT_OK);
            }
            api.show(Method::POST, &["reconcile"], &[], body).await
        }
        ReconcileCommand::Runs { network, limit } => {
            let query = [("network", network), ("limit", limit.map(|v| v.to_string()))];
            api.show(Method::GET, &["reconcile", "runs"], &query, None).await
        }
        ReconcileCommand::Exceptions { run } => {
            api.show(Method::GET, &["reconcile", "runs", &run.to_string(), "exceptions"], &[], None).await
        }
        ReconcileCommand::Notes { exception } => {
            api.show(Method::GET, &["reconcile", "exceptions", &exception.to_string(), "notes"], &[], None).await
        }
        ReconcileCommand::Note { exception, why } => {
            let body = to_body(&api::NoteBody { why });
            api.show(Method::POST, &["reconcile", "exceptions", &exception.to_string(), "notes"], &[], body).await
        }
    }
}

async fn token(api: &Api, cmd: TokenCommand) -> Result<u8, Failure> {
    match cmd {
        TokenCommand::Create { role, provider, label, out } => {
            let body = to_body(&api::NewToken { role, provider, label });
            let answer = api.json(Method::POST, &["tokens"], &[], body).await?;
            print_created(answer, out.as_deref())
        }
        TokenCommand::List => api.show(Method::GET, &["tokens"], &[], None).await,
        TokenCommand::Revoke { id } => api.show(Method::POST, &["tokens", &id, "revoke"], &[], None).await,
    }
}

async fn endpoint(api: &Api, cmd: EndpointCommand) -> Result<u8, Failure> {
    match cmd {
        EndpointCommand::List { provider } => {
            api.show(Method::GET, &["providers", &provider, "endpoints"], &[], None).await
        }
        EndpointCommand::Put(e) => {
            let body = endpoint_body(&e)?;
            api.show(Method::PUT, &["providers", &e.provider, "endpoints"], &[], Some(body)).await
        }
        EndpointCommand::Disable(r) => {
            let body = to_body(&api::EndpointPath { path: r.path });
            api.show(Method::POST, &["providers", &r.provider, "endpoints", "disable"], &[], body).await
        }
        EndpointCommand::Enable(r) => {
            let body = to_body(&api::EndpointPath { path: r.path });
            api.show(Method::POST, &["providers", &r.provider, "endpoints", "enable"], &[], body).await
        }
        EndpointCommand::Prices(r) => {
            let query = [("path", Some(r.path))];
            api.show(Method::GET, &["providers", &r.provider, "endpoints", "prices"], &query, None).await
        }
        EndpointCommand::SetPrice { route, price, atomic } => {
            let (provider, path) = route_name(&route)?;
            let patch = if atomic {
                api::EndpointPatch { path, price_atomic: Some(price), ..api::EndpointPatch::default() }
            } else {
                api::EndpointPatch { path, price: Some(price), ..api::EndpointPatch::default() }
            };
            api.show(Method::PATCH, &["providers", &provider, "endpoints"], &[], to_body(&patch)).await
        }
        EndpointCommand::Set(e) => {
            let (provider, patch) = endpoint_patch(&e)?;
            api.show(Method::PATCH, &["providers", &provider, "endpoints"], &[], to_body(&patch)).await
        }
        EndpointCommand::Delete { route } => {
            let (provider, path) = route_name(&route)?;
            let query = [("path", Some(path))];
            api.show(Method::DELETE, &["providers", &provider, "endpoints"], &query, None).await
        }
    }
}

async fn credential(api: &Api, cmd: CredentialCommand) -> Result<u8, Failure> {
    match cmd {
        CredentialCommand::List { provider } => {
            api.show(Method::GET, &["providers", &provider, "credentials"], &[], None).await
        }
        CredentialCommand::Rotate { provider, name, secret_file } => {
            let secret = read_secret(secret_file.as_deref())?;
            let body = to_body(&api::SecretBody { secret: secret.expose_secret().to_owned() });
            api.show(Method::POST, &["providers", &provider, "credentials", &name], &[], body).await
        }
        CredentialCommand::Revoke { provider, name, version } => {
            let version = version.to_string();
            let segments = ["providers", &provider, "credentials", &name, &version, "revoke"];
            api.show(Method::POST, &segments, &[], None).await
        }
    }
}

async fn wallet(api: &Api, cmd: WalletCommand) -> Result<u8, Failure> {
    match cmd {
        WalletCommand::List { scope, wallet } => {
            api.show(Method::GET, &["wallets"], &[("scope", scope), ("wallet", wallet)], None).await
        }
        WalletCommand::Set { wallet, scope, revoked, registered, endpoints, per_call_max, daily_cap, monthly_cap } => {
            let body = to_body(&api::WalletPolicyBody {
                revoked: Some(revoked),
                registered,
                endpoints,
                per_call_max,
                daily_cap,
                monthly_cap,
            });
            api.show(Method::PUT, &["wallets", &wallet], &[("scope", scope)], body).await
        }
        WalletCommand::Revoke(w) => {
            api.show(Method::POST, &["wallets", &w.wallet, "revoke"], &[("scope", w.scope)], None).await
        }
        WalletCommand::Reinstate(w) => {
            api.show(Method::POST, &["wallets", &w.wallet, "reinstate"], &[("scope", w.scope)], None).await
        }
    }
}

async fn audit(api: &Api, cmd: AuditCommand) -> Result<u8, Failure> {
    match cmd {
        AuditCommand::Query { filter, after_seq, limit } => {
            let mut query = filter.query();
            query.push(("after_seq", after_seq.map(|v| v.to_string())));
            query.push(("limit", limit.map(|v| v.to_string())));
            api.show(Method::GET, &["audit"], &query, None).await
        }
        AuditCommand::Export { filter, out } => api.export(&filter.query(), out.as_deref()).await,
        AuditCommand::Verify => {
            let answer = api.json(Method::GET, &["audit", "verify"], &[], None).await?;
            print_json(&answer);
            verdict(
                answer.get("intact").and_then(Value::as_bool).unwrap_or(false),
                answer.get("broken_at_seq").and_then(Value::as_u64),
                answer.get("problem").and_then(Value::as_str),
            )
        }
    }
}
