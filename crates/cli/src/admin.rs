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

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tollgate_admin_api::types as api;
use tollgate_gateway::Config;
use tollgate_metering::{Actor, Ledger, LedgerOptions, Role, token_hash};

use crate::{EXIT_AUDIT_BROKEN, EXIT_FAILURE, EXIT_OK, EXIT_REFUSED, EXIT_TRANSPORT, Failure};

/// The variable holding the admin API's base URL.
pub const URL_ENV: &str = "TOLLGATE_ADMIN_URL";
/// The variable holding the admin token.
pub const TOKEN_ENV: &str = "TOLLGATE_ADMIN_TOKEN";
/// The admin listener's default address.
const DEFAULT_URL: &str = "http://127.0.0.1:8403";
/// Largest JSON answer read (an export is streamed, not held).
const ANSWER_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest credential secret read from stdin or a file (the server's limit is 8192 bytes).
const SECRET_BYTES_MAX: u64 = 8192 + 2;
/// Largest token file.
const TOKEN_FILE_BYTES_MAX: u64 = 1024;

/// Shown under `tollgate admin --help`.
const ADMIN_HELP: &str = "\
Authentication: the token comes from TOLLGATE_ADMIN_TOKEN or --token-file PATH (never from the
command line). `tollgate admin bootstrap --config FILE` creates the first operator token.

Examples:
  tollgate admin bootstrap --config tollgate.toml --out ~/.tollgate/admin.token
  export TOLLGATE_ADMIN_TOKEN=$(cat ~/.tollgate/admin.token)
  tollgate admin whoami
  tollgate admin --url http://10.0.0.5:8403 endpoint list weather

Exit codes:
  0  success
  1  other failure (configuration, database, 5xx answer)
  2  usage: bad arguments, no token, unreadable token or secret file
  3  refused by the admin API (4xx: the code is printed, e.g. admin_forbidden)
  6  transport error (the admin API could not be reached or timed out)
  8  audit chain broken (audit verify)";

/// Where the admin API is and how to authenticate (global to every subcommand).
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// Base URL of the admin API (http or https) [env: TOLLGATE_ADMIN_URL] [default: http://127.0.0.1:8403].
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// Read the admin token from this file instead of TOLLGATE_ADMIN_TOKEN.
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Timeout of each request (connection, answer and body), in milliseconds.
    #[arg(long, global = true, value_name = "MS", default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// PEM file of extra CA certificates trusted for an https admin API, beside the built-in
    /// Mozilla roots [env: TOLLGATE_CA_FILE].
    #[arg(long, global = true, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

/// `tollgate admin` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = ADMIN_HELP)]
pub struct AdminArgs {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// Show the token's id, role and provider.
    #[command(after_help = "Example:\n  tollgate admin whoami")]
    Whoami,
    /// Create the first operator token by writing to the database directly (no API call).
    ///
    /// Opens the database named by the configuration (migrating it if needed), stores the
    /// token's SHA-256 and prints the token once. Refuses when an unrevoked operator token
    /// exists, unless --force (e.g. the only operator token was lost).
    #[command(after_help = "Examples:\n  tollgate admin bootstrap --config tollgate.toml --label ops \
                            --out ~/.tollgate/admin.token\n  \
                            TOLLGATE_ADMIN_TOKEN=$(tollgate admin bootstrap --config tollgate.toml | jq -r .token)")]
    Bootstrap {
        /// The gateway's configuration file (its [database] is used).
        #[arg(long, short)]
        config: PathBuf,
        /// A label for the token.
        #[arg(long, default_value = "bootstrap")]
        label: String,
        /// Write the token to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Create a token even when an operator token exists.
        #[arg(long)]
        force: bool,
    },
    /// Admin tokens: create (shown once), list, revoke.
    #[command(subcommand, after_help = TOKEN_HELP)]
    Token(TokenCommand),
    /// Providers: list, create or replace.
    #[command(subcommand, after_help = PROVIDER_HELP)]
    Provider(ProviderCommand),
    /// A provider's endpoints: list, create or change (prices get a new version), disable,
    /// enable, price history.
    #[command(subcommand, after_help = ENDPOINT_HELP)]
    Endpoint(EndpointCommand),
    /// A provider's vault credentials: list versions, rotate (upload), revoke a version.
    #[command(subcommand, after_help = CREDENTIAL_HELP)]
    Credential(CredentialCommand),
    /// Wallet policies: list, set, revoke, reinstate.
    #[command(subcommand, after_help = WALLET_HELP)]
    Wallet(WalletCommand),
    /// Global settings.
    #[command(subcommand, after_help = "Example:\n  tollgate admin settings show")]
    Settings(SettingsCommand),
    /// Turn allowlist mode on (only registered wallets may pay) or off.
    #[command(after_help = "Examples:\n  tollgate admin allowlist on\n  tollgate admin allowlist off")]
    Allowlist {
        /// `on` or `off`.
        #[arg(value_parser = ["on", "off"])]
        state: String,
    },
    /// The audit trail: query, export as JSON lines, verify the hash chain.
    #[command(subcommand, after_help = AUDIT_HELP)]
    Audit(AuditCommand),
    /// A provider's revenue by endpoint and ledger state (entries reserved in [from, to)).
    #[command(after_help = "Examples:\n  tollgate admin revenue weather\n  \
                            tollgate admin revenue weather --from-unix-s 1767225600 --to-unix-s 1769904000")]
    Revenue {
        /// The provider id.
        provider: String,
        /// From (inclusive, unix seconds).
        #[arg(long, value_name = "S")]
        from_unix_s: Option<u64>,
        /// To (exclusive, unix seconds).
        #[arg(long, value_name = "S")]
        to_unix_s: Option<u64>,
    },
    /// Ledger entries (read-only; the signed payment is not shown).
    #[command(subcommand, after_help = "Example:\n  tollgate admin ledger entries --provider weather --limit 20")]
    Ledger(LedgerCommand),
    /// Reconciliation over the API (finance, operator): run, list runs, exceptions, notes.
    #[command(subcommand, after_help = RECONCILE_HELP)]
    Reconcile(ReconcileCommand),
    /// Print the admin API's OpenAPI 3.1 document.
    #[command(after_help = "Example:\n  tollgate admin openapi > tollgate-admin.openapi.json")]
    Openapi,
}

const RECONCILE_HELP: &str = "\
Examples:
  tollgate admin reconcile run --from-block 100 --to-block 200 --confirmations 3
  tollgate admin reconcile run --from-time 2026-11-01T00:00:00Z --to-time 2026-12-01T00:00:00Z
  tollgate admin reconcile run --resume --csv > items.csv
  tollgate admin reconcile runs
  tollgate admin reconcile exceptions 7
  tollgate admin reconcile note 12 --why 'plain transfer: customer top-up, booked by hand'
  tollgate admin reconcile notes 12";

#[derive(Debug, clap::Subcommand)]
enum ReconcileCommand {
    /// Run a reconciliation on the gateway and record it (the report as JSON, or --csv items).
    #[command(after_help = RECONCILE_HELP)]
    Run {
        /// Network (CAIP-2); required when several are configured.
        #[arg(long, value_name = "CAIP2")]
        network: Option<String>,
        /// First block, inclusive (with --to-block).
        #[arg(long, value_name = "N", requires = "to_block", conflicts_with_all = ["from_time", "resume"])]
        from_block: Option<u64>,
        /// Last block, inclusive.
        #[arg(long, value_name = "N", requires = "from_block")]
        to_block: Option<u64>,
        /// Start time, inclusive: RFC 3339 or unix seconds (with --to-time).
        #[arg(long, value_name = "TIME", requires = "to_time", conflicts_with = "resume")]
        from_time: Option<String>,
        /// End time, exclusive.
        #[arg(long, value_name = "TIME", requires = "from_time")]
        to_time: Option<String>,
        /// From the stored cursor + 1 to the chain head.
        #[arg(long)]
        resume: bool,
        /// Confirmations a transfer needs.
        #[arg(long, value_name = "N")]
        confirmations: Option<u64>,
        /// Blocks per eth_getLogs call.
        #[arg(long, value_name = "N")]
        chunk_blocks: Option<u64>,
        /// Print the items as CSV (RFC 4180) instead of the JSON report.
        #[arg(long)]
        csv: bool,
    },
    /// Recorded runs of a network.
    #[command(after_help = "Example:\n  tollgate admin reconcile runs --network eip155:8453 --limit 20")]
    Runs {
        /// Network (CAIP-2); required when several are configured.
        #[arg(long, value_name = "CAIP2")]
        network: Option<String>,
        /// Most runs listed [default: 100].
        #[arg(long)]
        limit: Option<u32>,
    },
    /// A run's exceptions.
    #[command(after_help = "Example:\n  tollgate admin reconcile exceptions 7")]
    Exceptions {
        /// The run id.
        run: i64,
    },
    /// An exception's resolution notes.
    #[command(after_help = "Example:\n  tollgate admin reconcile notes 12")]
    Notes {
        /// The exception id.
        exception: i64,
    },
    /// Append a resolution note to an exception (notes are never edited; the author is your token).
    #[command(after_help = "Example:\n  tollgate admin reconcile note 12 --why 'refunded by hand, ticket 4411'")]
    Note {
        /// The exception id.
        exception: i64,
        /// Why it is resolved.
        #[arg(long)]
        why: String,
    },
}

const TOKEN_HELP: &str = "\
Examples:
  tollgate admin token create --role operator --label alice
  tollgate admin token create --role provider --provider weather --out weather.token
  tollgate admin token create --role finance --label accounting
  tollgate admin token list
  tollgate admin token revoke 3f2a9c0d1e4b5a67";

#[derive(Debug, clap::Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once (or written to --out) and only its hash is stored.
    #[command(after_help = "Examples:\n  tollgate admin token create --role finance --label accounting\n  \
                            tollgate admin token create --role provider --provider weather --out weather.token")]
    Create {
        /// operator, provider or finance.
        #[arg(long, value_parser = ["operator", "provider", "finance"])]
        role: String,
        /// The provider of a provider token (required for them, refused for the others).
        #[arg(long, value_name = "ID")]
        provider: Option<String>,
        /// Free text (at most 128 bytes).
        #[arg(long)]
        label: Option<String>,
        /// Write the token to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List token records (never the tokens).
    #[command(after_help = "Example:\n  tollgate admin token list")]
    List,
    /// Revoke a token by id (immediate).
    #[command(after_help = "Example:\n  tollgate admin token revoke 3f2a9c0d1e4b5a67")]
    Revoke {
        /// The token's id (from `token list`).
        id: String,
    },
}

const PROVIDER_HELP: &str = "\
Examples:
  tollgate admin provider list
  tollgate admin provider put weather --pay-to 0x209693Bc6afc0C5328bA36FaF03C514EF312287C \\
      --upstream https://api.weather.example --vault weather-key";

#[derive(Debug, clap::Subcommand)]
enum ProviderCommand {
    /// List providers (a provider token sees its own).
    #[command(after_help = "Example:\n  tollgate admin provider list")]
    List,
    /// Create or replace a provider (the whole spec; its endpoints are kept).
    ///
    /// The upstream credential comes from the vault: `--vault NAME` with the injection flags,
    /// or `--credential-json` (the `credential` object of docs/configuration.md with `vault`).
    #[command(after_help = "Examples:\n  tollgate admin provider put weather \
                            --pay-to 0x209693Bc6afc0C5328bA36FaF03C514EF312287C \\\n      \
                            --upstream https://api.weather.example --strip-prefix /weather --vault weather-key\n  \
                            tollgate admin provider put maps --pay-to 0x209693Bc6afc0C5328bA36FaF03C514EF312287C \\\n      \
                            --upstream http://10.0.0.7:9000 --credential-json '{\"inject\":\"query\",\"param\":\"key\",\"vault\":\"maps\"}'")]
    Put(Box<ProviderPut>),
}

#[derive(Debug, clap::Args)]
struct ProviderPut {
    /// The provider id (letters, digits, '-' and '_').
    id: String,
    /// The payee address.
    #[arg(long, value_name = "ADDRESS")]
    pay_to: String,
    /// The upstream base URL.
    #[arg(long, value_name = "URL")]
    upstream: String,
    /// Prefix removed from the gateway path before forwarding.
    #[arg(long, value_name = "PATH")]
    strip_prefix: Option<String>,
    /// Default upstream timeout of its endpoints.
    #[arg(long, value_name = "MS")]
    upstream_timeout_ms: Option<u64>,
    /// The credential as JSON (`vault` names the secret).
    #[arg(long, value_name = "JSON", conflicts_with_all = ["vault", "inject", "header", "template", "param", "username"])]
    credential_json: Option<String>,
    /// Inject the latest unrevoked version of this vault credential.
    #[arg(long, value_name = "NAME")]
    vault: Option<String>,
    /// How the credential is injected: header, query or basic [default: header].
    #[arg(long, value_parser = ["header", "query", "basic"], requires = "vault")]
    inject: Option<String>,
    /// Header name (inject header) [default: Authorization].
    #[arg(long, requires = "vault")]
    header: Option<String>,
    /// Header value template with {secret} (inject header) [default: "Bearer {secret}"].
    #[arg(long, requires = "vault")]
    template: Option<String>,
    /// Query parameter (inject query).
    #[arg(long, requires = "vault")]
    param: Option<String>,
    /// Basic-auth user (inject basic).
    #[arg(long, requires = "vault")]
    username: Option<String>,
}

const ENDPOINT_HELP: &str = "\
Examples:
  tollgate admin endpoint list weather
  tollgate admin endpoint put weather --path '/weather/{city}' --price 0.001
  tollgate admin endpoint prices weather --path '/weather/{city}'
  tollgate admin endpoint disable weather --path '/weather/{city}'";

#[derive(Debug, clap::Subcommand)]
enum EndpointCommand {
    /// List a provider's endpoints with their current prices.
    #[command(after_help = "Example:\n  tollgate admin endpoint list weather")]
    List {
        /// The provider id.
        provider: String,
    },
    /// Create or replace an endpoint; a changed price creates a new price version.
    #[command(after_help = "Examples:\n  tollgate admin endpoint put weather --path '/weather/{city}' --price 0.001 \
                            --description 'Current weather'\n  \
                            tollgate admin endpoint put weather --path /forecast --price-atomic 2500 --methods GET,POST \
                            --settlement deferred\n  \
                            tollgate admin endpoint put weather --spec-json '{\"path\":\"/alerts\",\"price\":\"0.01\"}'")]
    Put(Box<EndpointPut>),
    /// Stop serving an endpoint (its prices and history are kept).
    #[command(after_help = "Example:\n  tollgate admin endpoint disable weather --path '/weather/{city}'")]
    Disable(EndpointRef),
    /// Serve a disabled endpoint again.
    #[command(after_help = "Example:\n  tollgate admin endpoint enable weather --path '/weather/{city}'")]
    Enable(EndpointRef),
    /// An endpoint's price versions (ledger entries record the version they were charged at).
    #[command(after_help = "Example:\n  tollgate admin endpoint prices weather --path '/weather/{city}'")]
    Prices(EndpointRef),
}

#[derive(Debug, clap::Args)]
struct EndpointRef {
    /// The provider id.
    provider: String,
    /// The endpoint's path pattern, as written when it was put.
    #[arg(long)]
    path: String,
}

#[derive(Debug, clap::Args)]
struct EndpointPut {
    /// The provider id.
    provider: String,
    /// The path pattern (`/exact`, `/{param}` segments, trailing `/*`).
    #[arg(long, required_unless_present = "spec_json")]
    path: Option<String>,
    /// Human price in token units (`0.001`).
    #[arg(long, conflicts_with = "price_atomic")]
    price: Option<String>,
    /// Price in atomic units (`1000`).
    #[arg(long, value_name = "N")]
    price_atomic: Option<String>,
    /// Allowed methods, comma-separated [default: GET].
    #[arg(long, value_delimiter = ',')]
    methods: Option<Vec<String>>,
    /// Accepted networks (CAIP-2), comma-separated [default: every configured network].
    #[arg(long, value_delimiter = ',')]
    networks: Option<Vec<String>>,
    /// after, before or deferred [default: after].
    #[arg(long, value_parser = ["after", "before", "deferred"])]
    settlement: Option<String>,
    /// Shown in the 402 challenge.
    #[arg(long)]
    description: Option<String>,
    /// Response media type [default: application/json].
    #[arg(long)]
    mime_type: Option<String>,
    /// `maxTimeoutSeconds` offered [default: 60].
    #[arg(long, value_name = "S")]
    max_timeout_seconds: Option<u64>,
    /// Upstream timeout [default: the provider's].
    #[arg(long, value_name = "MS")]
    upstream_timeout_ms: Option<u64>,
    /// Request body cap [default: server.body_bytes_max].
    #[arg(long, value_name = "BYTES")]
    body_bytes_max: Option<u64>,
    /// The whole endpoint as JSON (the keys of [[providers.routes]]), instead of the flags.
    #[arg(long, value_name = "JSON", conflicts_with_all = [
        "path", "price", "price_atomic", "methods", "networks", "settlement", "description",
        "mime_type", "max_timeout_seconds", "upstream_timeout_ms", "body_bytes_max",
    ])]
    spec_json: Option<String>,
}

const CREDENTIAL_HELP: &str = "\
Examples:
  tollgate admin credential list weather
  printf %s \"$NEW_KEY\" | tollgate admin credential rotate weather weather-key
  tollgate admin credential rotate weather weather-key --secret-file /run/secrets/weather
  tollgate admin credential revoke weather weather-key 1";

#[derive(Debug, clap::Subcommand)]
enum CredentialCommand {
    /// List credential versions (metadata only: secrets are write-only).
    #[command(after_help = "Example:\n  tollgate admin credential list weather")]
    List {
        /// The provider id.
        provider: String,
    },
    /// Upload a new version of a vault credential; it serves from the next request on.
    ///
    /// The secret is read from stdin (one trailing newline removed) or from --secret-file;
    /// never from the command line. It is encrypted by the gateway and never shown again.
    #[command(
        after_help = "Examples:\n  printf %s \"$NEW_KEY\" | tollgate admin credential rotate weather weather-key\n  \
                            tollgate admin credential rotate weather weather-key --secret-file /run/secrets/weather"
    )]
    Rotate {
        /// The provider id.
        provider: String,
        /// The credential name (as in the provider's `vault`).
        name: String,
        /// Read the secret from this file instead of stdin.
        #[arg(long, value_name = "PATH")]
        secret_file: Option<PathBuf>,
    },
    /// Revoke one version; the latest unrevoked version serves from the next request on.
    #[command(after_help = "Example:\n  tollgate admin credential revoke weather weather-key 1")]
    Revoke {
        /// The provider id.
        provider: String,
        /// The credential name.
        name: String,
        /// The version (from `credential list`).
        version: u64,
    },
}

const WALLET_HELP: &str = "\
Examples:
  tollgate admin wallet list --scope weather
  tollgate admin wallet set 0x90F79bf6EB2c4f870365E785982E1f101E93b906 --registered --daily-cap 5000000
  tollgate admin wallet revoke 0x90F79bf6EB2c4f870365E785982E1f101E93b906
  tollgate admin wallet reinstate 0x90F79bf6EB2c4f870365E785982E1f101E93b906";

#[derive(Debug, clap::Subcommand)]
enum WalletCommand {
    /// List wallet policies, optionally of one scope and/or one wallet.
    #[command(after_help = "Example:\n  tollgate admin wallet list --scope '*' \
                            --wallet 0x90F79bf6EB2c4f870365E785982E1f101E93b906")]
    List {
        /// `*` (every provider) or a provider id.
        #[arg(long)]
        scope: Option<String>,
        /// One wallet.
        #[arg(long, value_name = "ADDRESS")]
        wallet: Option<String>,
    },
    /// Set (replace) a wallet's policy in a scope. Amounts are atomic units; caps are per
    /// UTC day and UTC calendar month, summed over every asset.
    #[command(
        after_help = "Examples:\n  tollgate admin wallet set 0x90F79bf6EB2c4f870365E785982E1f101E93b906 --registered \
                            --per-call-max 10000 --daily-cap 5000000 --monthly-cap 100000000\n  \
                            tollgate admin wallet set 0x90F79bf6EB2c4f870365E785982E1f101E93b906 --scope weather \
                            --endpoints 'weather:/weather/{city}'"
    )]
    Set {
        /// The wallet address.
        wallet: String,
        /// `*` (every provider, the operator's default) or a provider id (a provider token's
        /// only scope).
        #[arg(long)]
        scope: Option<String>,
        /// Deny the wallet outright.
        #[arg(long)]
        revoked: bool,
        /// Register the wallet (what allowlist mode requires).
        #[arg(long)]
        registered: bool,
        /// Allowed endpoints (`provider:path`), comma-separated [default: all].
        #[arg(long, value_delimiter = ',', value_name = "NAMES")]
        endpoints: Option<Vec<String>>,
        /// Largest amount per call (atomic units).
        #[arg(long, value_name = "N")]
        per_call_max: Option<String>,
        /// Largest spend per UTC day (atomic units).
        #[arg(long, value_name = "N")]
        daily_cap: Option<String>,
        /// Largest spend per UTC calendar month (atomic units).
        #[arg(long, value_name = "N")]
        monthly_cap: Option<String>,
    },
    /// Deny a wallet in a scope (its other policy fields are kept).
    #[command(
        after_help = "Example:\n  tollgate admin wallet revoke 0x90F79bf6EB2c4f870365E785982E1f101E93b906 --scope weather"
    )]
    Revoke(WalletRef),
    /// Lift a revocation.
    #[command(after_help = "Example:\n  tollgate admin wallet reinstate 0x90F79bf6EB2c4f870365E785982E1f101E93b906")]
    Reinstate(WalletRef),
}

#[derive(Debug, clap::Args)]
struct WalletRef {
    /// The wallet address.
    wallet: String,
    /// `*` or a provider id [default: `*` for operators, the token's provider otherwise].
    #[arg(long)]
    scope: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum SettingsCommand {
    /// Show allowlist mode and the control plane's change counter.
    #[command(after_help = "Example:\n  tollgate admin settings show")]
    Show,
}

const AUDIT_HELP: &str = "\
Examples:
  tollgate admin audit query --wallet 0x90F79bf6EB2c4f870365E785982E1f101E93b906 --decision denied
  tollgate admin audit export --provider weather > audit.jsonl
  tollgate admin audit verify
  tollgate admin audit verify --config tollgate.toml";

#[derive(Debug, clap::Subcommand)]
enum AuditCommand {
    /// One page of audit records (by sequence number); `next_after_seq` continues.
    #[command(after_help = "Examples:\n  tollgate admin audit query --provider weather --limit 50\n  \
                            tollgate admin audit query --after-seq 50 --limit 50")]
    Query {
        #[command(flatten)]
        filter: AuditFilter,
        /// Records after this sequence number.
        #[arg(long, value_name = "SEQ")]
        after_seq: Option<u64>,
        /// Page size (1 to 1000) [default: 100].
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Every matching record as JSON lines on stdout (or --out).
    #[command(after_help = "Example:\n  tollgate admin audit export --from-unix-ms 1767225600000 > audit.jsonl")]
    Export {
        #[command(flatten)]
        filter: AuditFilter,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verify the hash chain: through the API, or with --config straight from the database.
    /// Exit code 8 when the chain is broken (the first broken sequence number is printed).
    #[command(after_help = "Examples:\n  tollgate admin audit verify\n  \
                            tollgate admin audit verify --config tollgate.toml")]
    Verify {
        /// Read the database of this configuration file instead of calling the API.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct AuditFilter {
    /// Payer wallet.
    #[arg(long, value_name = "ADDRESS")]
    wallet: Option<String>,
    /// Endpoint name (`provider:path`).
    #[arg(long, value_name = "NAME")]
    endpoint: Option<String>,
    /// Provider id.
    #[arg(long, value_name = "ID")]
    provider: Option<String>,
    /// From (inclusive, unix milliseconds).
    #[arg(long, value_name = "MS")]
    from_unix_ms: Option<u64>,
    /// To (exclusive, unix milliseconds).
    #[arg(long, value_name = "MS")]
    to_unix_ms: Option<u64>,
    /// accepted or denied.
    #[arg(long, value_parser = ["accepted", "denied"])]
    decision: Option<String>,
}

impl AuditFilter {
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("wallet", self.wallet.clone()),
            ("endpoint", self.endpoint.clone()),
            ("provider", self.provider.clone()),
            ("from_unix_ms", self.from_unix_ms.map(|v| v.to_string())),
            ("to_unix_ms", self.to_unix_ms.map(|v| v.to_string())),
            ("decision", self.decision.clone()),
        ]
    }
}

#[derive(Debug, clap::Subcommand)]
enum LedgerCommand {
    /// Ledger entries, oldest first, with paging (a provider token sees its own).
    #[command(
        after_help = "Example:\n  tollgate admin ledger entries --payer 0x90F79bf6EB2c4f870365E785982E1f101E93b906 \
                            --from-unix-s 1767225600 --limit 20"
    )]
    Entries {
        /// Provider id.
        #[arg(long, value_name = "ID")]
        provider: Option<String>,
        /// Payer wallet.
        #[arg(long, value_name = "ADDRESS")]
        payer: Option<String>,
        /// From (inclusive, unix seconds).
        #[arg(long, value_name = "S")]
        from_unix_s: Option<u64>,
        /// To (exclusive, unix seconds).
        #[arg(long, value_name = "S")]
        to_unix_s: Option<u64>,
        /// Entries to skip.
        #[arg(long)]
        offset: Option<u64>,
        /// Page size [default: 100].
        #[arg(long)]
        limit: Option<u32>,
    },
}

// ---------------------------------------------------------------------------------------
// Running.

/// Runs an admin subcommand; returns the exit code.
pub async fn run(args: AdminArgs) -> Result<u8, Failure> {
    let conn = args.connection;
    match args.command {
        // The two commands that read the database never need a token or the API.
        AdminCommand::Bootstrap { config, label, out, force } => {
            return bootstrap(&config, &label, out.as_deref(), force).await;
        }
        AdminCommand::Audit(AuditCommand::Verify { config: Some(config) }) => return verify_offline(&config).await,
        _ => {}
    }
    let api = Api::new(&conn)?;
    match args.command {
        AdminCommand::Bootstrap { .. } => Ok(EXIT_OK),
        AdminCommand::Whoami => api.show(Method::GET, &["whoami"], &[], None).await,
        AdminCommand::Openapi => api.show(Method::GET, &["openapi.json"], &[], None).await,
        AdminCommand::Token(cmd) => token(&api, cmd).await,
        AdminCommand::Provider(ProviderCommand::List) => api.show(Method::GET, &["providers"], &[], None).await,
        AdminCommand::Provider(ProviderCommand::Put(p)) => {
            let body = provider_body(&p)?;
            api.show(Method::PUT, &["providers", &p.id], &[], Some(body)).await
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
        AdminCommand::Ledger(LedgerCommand::Entries { provider, payer, from_unix_s, to_unix_s, offset, limit }) => {
            let query = [
                ("provider", provider),
                ("payer", payer),
                ("from_unix_s", from_unix_s.map(|v| v.to_string())),
                ("to_unix_s", to_unix_s.map(|v| v.to_string())),
                ("offset", offset.map(|v| v.to_string())),
                ("limit", limit.map(|v| v.to_string())),
            ];
            api.show(Method::GET, &["ledger", "entries"], &query, None).await
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
                let mut out = std::io::stdout().lock();
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
        AuditCommand::Verify { config: Some(config) } => verify_offline(&config).await,
        AuditCommand::Verify { config: None } => {
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

/// Exit 0 when the chain is intact, else 8 with the first broken sequence number.
fn verdict(intact: bool, broken_at_seq: Option<u64>, problem: Option<&str>) -> Result<u8, Failure> {
    if intact {
        return Ok(EXIT_OK);
    }
    let seq = broken_at_seq.map_or_else(|| "?".to_owned(), |s| s.to_string());
    Err(Failure::new(
        EXIT_AUDIT_BROKEN,
        format!("audit chain broken at seq {seq}: {}", problem.unwrap_or("unknown problem")),
    ))
}

// ---------------------------------------------------------------------------------------
// Request bodies.

/// A request body of the contract as JSON (the contract's types serialise infallibly).
fn to_body<T: serde::Serialize>(body: &T) -> Option<Value> {
    serde_json::to_value(body).ok()
}

fn parse_json_object(flag: &str, text: &str) -> Result<Value, Failure> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Failure::usage(format!("{flag}: expected a JSON object"))),
        Err(e) => Err(Failure::usage(format!("{flag}: not JSON: {e}"))),
    }
}

/// The provider body from the flags. `--credential-json` is passed through as given, so the
/// gateway judges it (and names an unknown field) like any other body.
fn provider_body(p: &ProviderPut) -> Result<Value, Failure> {
    let credential = match &p.vault {
        Some(vault) if p.credential_json.is_none() => Some(api::CredentialBody {
            inject: p.inject.clone().unwrap_or_else(|| "header".to_owned()),
            vault: Some(vault.clone()),
            header: p.header.clone(),
            template: p.template.clone(),
            param: p.param.clone(),
            username: p.username.clone(),
            ..api::CredentialBody::default()
        }),
        _ => None,
    };
    let mut body = to_body(&api::ProviderBody {
        pay_to: p.pay_to.clone(),
        upstream: p.upstream.clone(),
        strip_prefix: p.strip_prefix.clone(),
        credential,
        upstream_timeout_ms: p.upstream_timeout_ms,
        allow_insecure_http: None,
    })
    .unwrap_or_default();
    if let (Some(text), Some(obj)) = (&p.credential_json, body.as_object_mut()) {
        obj.insert("credential".to_owned(), parse_json_object("--credential-json", text)?);
    }
    Ok(body)
}

fn endpoint_body(e: &EndpointPut) -> Result<Value, Failure> {
    if let Some(text) = &e.spec_json {
        return parse_json_object("--spec-json", text);
    }
    // clap requires --path unless --spec-json is given.
    let path = e.path.clone().ok_or_else(|| Failure::usage("--path is required"))?;
    Ok(to_body(&api::EndpointBody {
        path,
        price: e.price.clone(),
        price_atomic: e.price_atomic.clone(),
        methods: e.methods.clone(),
        networks: e.networks.clone(),
        settlement: e.settlement.clone(),
        description: e.description.clone(),
        mime_type: e.mime_type.clone(),
        max_timeout_seconds: e.max_timeout_seconds,
        upstream_timeout_ms: e.upstream_timeout_ms,
        body_bytes_max: e.body_bytes_max,
        ..api::EndpointBody::default()
    })
    .unwrap_or_default())
}

/// A secret from a file or stdin, with one trailing newline removed; never echoed.
fn read_secret(file: Option<&Path>) -> Result<SecretString, Failure> {
    let mut raw = String::new();
    let read = match file {
        Some(path) => std::fs::File::open(path).and_then(|f| f.take(SECRET_BYTES_MAX + 1).read_to_string(&mut raw)),
        None => std::io::stdin().lock().take(SECRET_BYTES_MAX + 1).read_to_string(&mut raw),
    };
    let source = file.map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
    read.map_err(|e| Failure::usage(format!("cannot read the secret from {source}: {e}")))?;
    if raw.len() as u64 > SECRET_BYTES_MAX {
        return Err(Failure::usage(format!("the secret from {source} is longer than 8192 bytes")));
    }
    let trimmed = raw.strip_suffix('\n').map(|s| s.strip_suffix('\r').unwrap_or(s)).unwrap_or(&raw);
    if trimmed.is_empty() {
        return Err(Failure::usage(format!("the secret from {source} is empty")));
    }
    Ok(SecretString::from(trimmed.to_owned()))
}

// ---------------------------------------------------------------------------------------
// Output.

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// Prints a creation answer holding a token, or writes the token to a new 0600 file and
/// prints the rest.
fn print_created(mut answer: Value, out: Option<&Path>) -> Result<u8, Failure> {
    if let Some(path) = out {
        let token = answer
            .as_object_mut()
            .and_then(|o| o.remove("token"))
            .and_then(|t| t.as_str().map(str::to_owned))
            .ok_or_else(|| Failure::new(EXIT_FAILURE, "the answer holds no token"))?;
        write_new_private(path, &format!("{token}\n"))?;
        if let Some(o) = answer.as_object_mut() {
            o.insert("token_file".to_owned(), Value::String(path.display().to_string()));
        }
    }
    print_json(&answer);
    Ok(EXIT_OK)
}

fn write_new_private(path: &Path, text: &str) -> Result<(), Failure> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let fail = |e: std::io::Error| Failure::new(EXIT_FAILURE, format!("cannot write {}: {e}", path.display()));
    let mut file = opts.open(path).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

// ---------------------------------------------------------------------------------------
// The HTTP client.

/// The admin API at one base URL, with the caller's token.
struct Api {
    http: reqwest::Client,
    base: Url,
    token: SecretString,
}

impl Api {
    fn new(conn: &Connection) -> Result<Api, Failure> {
        let url = match &conn.url {
            Some(u) => u.clone(),
            None => std::env::var(URL_ENV).ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.to_owned()),
        };
        let base = Url::parse(&url).map_err(|e| Failure::usage(format!("--url `{url}`: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Failure::usage(format!("--url `{url}`: expected an http:// or https:// URL")));
        }
        let token = load_token(conn.token_file.as_deref())?;
        let timeout = Duration::from_millis(conn.timeout_ms.max(1));
        let http = crate::args::client_tls(conn.ca_file.as_deref())?
            .reqwest_builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot build the HTTP client: {e}")))?;
        Ok(Api { http, base, token })
    }

    /// `/admin/<segments...>?<query>`, each segment and value percent-encoded.
    fn url(&self, segments: &[&str], query: &[(&str, Option<String>)]) -> Result<Url, Failure> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.path_segments_mut()
            .map_err(|()| Failure::usage(format!("--url `{}` cannot be a base URL", self.base)))?
            .pop_if_empty()
            .push("admin")
            .extend(segments);
        let present: Vec<(&str, &String)> = query.iter().filter_map(|(k, v)| v.as_ref().map(|v| (*k, v))).collect();
        if !present.is_empty() {
            url.query_pairs_mut().extend_pairs(present);
        }
        Ok(url)
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, Option<String>)],
        body: Option<Value>,
    ) -> Result<reqwest::Response, Failure> {
        let url = self.url(segments, query)?;
        let mut bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.token.expose_secret()))
            .map_err(|_| Failure::usage("the admin token contains characters a header cannot carry"))?;
        bearer.set_sensitive(true);
        let mut request = self.http.request(method, url).header(reqwest::header::AUTHORIZATION, bearer);
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = read_capped(response, ANSWER_BYTES_MAX).await.map_err(|e| self.transport(e))?;
        Err(refusal(status, &bytes))
    }

    fn transport(&self, e: reqwest::Error) -> Failure {
        if let Some(tls) = tollgate_tls::tls_failure(&e) {
            return Failure::new(EXIT_TRANSPORT, format!("request to the admin API failed: {tls}"));
        }
        let what = if e.is_timeout() { "timed out" } else { "failed" };
        Failure::new(EXIT_TRANSPORT, format!("request to the admin API at {} {what}: {}", self.base, e.without_url()))
    }

    /// The answer as JSON.
    async fn json(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, Option<String>)],
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let response = self.send(method, segments, query, body).await?;
        let bytes = read_capped(response, ANSWER_BYTES_MAX).await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::new(EXIT_FAILURE, format!("the admin API answered with invalid JSON: {e}")))
    }

    /// Sends and prints the JSON answer.
    async fn show(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, Option<String>)],
        body: Option<Value>,
    ) -> Result<u8, Failure> {
        print_json(&self.json(method, segments, query, body).await?);
        Ok(EXIT_OK)
    }

    /// Streams the audit export (JSON lines) to stdout or a new file.
    async fn export(&self, query: &[(&str, Option<String>)], out: Option<&Path>) -> Result<u8, Failure> {
        let mut response = self.send(Method::GET, &["audit", "export"], query, None).await?;
        let mut sink: Box<dyn Write> = match out {
            Some(path) => Box::new(
                std::fs::File::create_new(path)
                    .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot create {}: {e}", path.display())))?,
            ),
            None => Box::new(std::io::stdout().lock()),
        };
        let fail = |e: std::io::Error| Failure::new(EXIT_FAILURE, format!("cannot write the export: {e}"));
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            sink.write_all(&chunk).map_err(fail)?;
        }
        sink.flush().map_err(fail)?;
        Ok(EXIT_OK)
    }
}

/// Reads a body of at most `cap` bytes; a larger one is cut at the cap (then fails to parse as
/// JSON, or is an error message shown cut). Large answers (CSV, JSON lines) are streamed instead.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > cap {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A non-2xx answer: one line with the server's code (4xx → exit 3, else 1).
fn refusal(status: StatusCode, body: &[u8]) -> Failure {
    let exit = if status.is_client_error() { EXIT_REFUSED } else { EXIT_FAILURE };
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
    let message = error.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("");
    match code {
        Some(code) => Failure::new(exit, format!("{code}: {message} (HTTP {})", status.as_u16())),
        None => Failure::new(exit, format!("the admin API answered HTTP {status}")),
    }
}

/// The token from `--token-file` or TOLLGATE_ADMIN_TOKEN (trimmed, non-empty).
fn load_token(file: Option<&Path>) -> Result<SecretString, Failure> {
    let raw = match file {
        Some(path) => {
            let mut s = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(TOKEN_FILE_BYTES_MAX).read_to_string(&mut s))
                .map_err(|e| Failure::usage(format!("cannot read the token file {}: {e}", path.display())))?;
            s
        }
        None => std::env::var(TOKEN_ENV).map_err(|_| {
            Failure::usage(format!(
                "set {TOKEN_ENV} or pass --token-file PATH (create the first token with \
                 `tollgate admin bootstrap --config FILE`)"
            ))
        })?,
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err(Failure::usage("the admin token is empty"));
    }
    Ok(SecretString::from(token.to_owned()))
}

// ---------------------------------------------------------------------------------------
// Straight to the database.

async fn open_ledger(path: &Path) -> Result<Ledger, Failure> {
    let config = Config::load(path).map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    let db = &config.database;
    let opts = LedgerOptions {
        max_connections: db.max_connections.min(2),
        statement_timeout_ms: db.statement_timeout_ms,
        sqlite_synchronous_full: db.sqlite_synchronous_full,
        ..LedgerOptions::default()
    };
    Ledger::connect(db.url.expose_secret(), opts)
        .await
        .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot open the database: {e}")))
}

async fn bootstrap(config: &Path, label: &str, out: Option<&Path>, force: bool) -> Result<u8, Failure> {
    if label.len() > 128 {
        return Err(Failure::usage("--label: at most 128 bytes"));
    }
    let ledger = open_ledger(config).await?;
    let created = async {
        let db_fail = |e: tollgate_metering::MeteringError| Failure::new(EXIT_FAILURE, e);
        let existing = ledger.tokens().list().await.map_err(db_fail)?;
        if let Some(t) = existing.iter().find(|t| t.role == Role::Operator && t.revoked_unix_s.is_none())
            && !force
        {
            return Err(Failure::new(
                EXIT_FAILURE,
                format!(
                    "an operator token exists already (id {}): create more with `tollgate admin token create`, \
                     or pass --force",
                    t.id
                ),
            ));
        }
        let token = tollgate_gateway::admin::new_token();
        let now_unix_s =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let record = ledger
            .tokens()
            .create(Role::Operator, None, &token_hash(&token), label, &Actor("cli:bootstrap".to_owned()), now_unix_s)
            .await
            .map_err(db_fail)?;
        Ok(json!({ "token": token, "record": record }))
    }
    .await;
    ledger.close().await;
    print_created(created?, out)
}

async fn verify_offline(config: &Path) -> Result<u8, Failure> {
    let ledger = open_ledger(config).await?;
    let verified = ledger.audit().verify().await;
    ledger.close().await;
    let v = verified.map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    print_json(&serde_json::to_value(&v).unwrap_or(Value::Null));
    verdict(v.intact, v.broken_at_seq, v.problem.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(base: &str) -> Api {
        let http = tollgate_tls::ClientTls::new(None).unwrap().reqwest_builder().build().unwrap();
        Api { http, base: Url::parse(base).unwrap(), token: SecretString::from("t") }
    }

    // Goal: path segments and query values are percent-encoded under /admin, absent query
    // values are left out, and a base URL with a path prefix keeps it.
    #[test]
    fn urls_encode_segments_and_values() {
        let a = api("http://127.0.0.1:8403");
        let u = a.url(&["providers", "we/ird id", "endpoints", "prices"], &[("path", Some("/w/{city}".into()))]);
        assert_eq!(
            u.unwrap().as_str(),
            "http://127.0.0.1:8403/admin/providers/we%2Fird%20id/endpoints/prices?path=%2Fw%2F%7Bcity%7D"
        );
        let u = a.url(&["wallets"], &[("scope", None), ("wallet", None)]).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8403/admin/wallets");
        let u = api("http://gw.internal/tollgate/").url(&["whoami"], &[]).unwrap();
        assert_eq!(u.as_str(), "http://gw.internal/tollgate/admin/whoami");
    }

    // Goal: a server error becomes one line with its code; 4xx exits 3, 5xx exits 1.
    #[test]
    fn refusals_carry_the_code() {
        let body = br#"{"error":{"code":"admin_forbidden","message":"this token may not x","retrySafe":false}}"#;
        let f = refusal(StatusCode::FORBIDDEN, body);
        assert_eq!((f.code, f.message.as_str()), (EXIT_REFUSED, "admin_forbidden: this token may not x (HTTP 403)"));
        assert_eq!(refusal(StatusCode::INTERNAL_SERVER_ERROR, b"oops").code, EXIT_FAILURE);
    }

    // Goal: the provider body carries a vault credential built from flags, defaulting to a
    // header injection, and only the fields given.
    #[test]
    fn provider_body_from_flags() {
        let p = ProviderPut {
            id: "w".into(),
            pay_to: "0x1".into(),
            upstream: "http://u".into(),
            strip_prefix: None,
            upstream_timeout_ms: Some(5),
            credential_json: None,
            vault: Some("k".into()),
            inject: None,
            header: Some("X-Key".into()),
            template: None,
            param: None,
            username: None,
        };
        assert_eq!(
            provider_body(&p).unwrap(),
            json!({"pay_to": "0x1", "upstream": "http://u", "upstream_timeout_ms": 5,
                   "credential": {"inject": "header", "vault": "k", "header": "X-Key"}})
        );
    }
}
