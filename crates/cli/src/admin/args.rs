//! The `tollgate admin` command line: global connection flags, every subcommand and its
//! flags, with the help text and examples clap prints.
//!
//! Must not: take a token or a secret as an argument (they come from the environment, a file
//! or stdin), or send anything (`client` does).

use std::path::PathBuf;

use tollgate_recon::parse_time;

use super::ADMIN_HELP;
use super::catalog_args::{ENDPOINT_HELP, PROVIDER_HELP};
pub(crate) use super::catalog_args::{EndpointCommand, EndpointPut, EndpointSet, ProviderCommand, ProviderPut};

/// An amount an operator typed (USDC by default, atomic units with the suffix `atomic`: one
/// convention, `tollgate_metering::TokenUnits::parse`) as the admin API takes it: atomic units
/// as a decimal string.
fn atomic_amount(s: &str) -> Result<String, String> {
    tollgate_metering::TokenUnits::default().parse(s).map(|a| a.to_string())
}

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
    /// The gateway's configuration file [env: TOLLGATE_CONFIG]: its `[admin] listen` is the
    /// API's address unless --url or TOLLGATE_ADMIN_URL says otherwise; `bootstrap` and
    /// `diff` read it; `audit verify --config` reads its database instead of calling the API.
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The variable naming the configuration file when --config is not given.
pub(crate) const CONFIG_ENV: &str = "TOLLGATE_CONFIG";

impl Connection {
    /// The configuration file: --config, else TOLLGATE_CONFIG.
    pub(crate) fn config_file(&self) -> Option<PathBuf> {
        self.config.clone().or_else(|| std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()).map(PathBuf::from))
    }
}

/// `tollgate admin` arguments.
#[derive(Debug, clap::Args)]
#[command(after_help = ADMIN_HELP)]
pub struct AdminArgs {
    #[command(flatten)]
    pub(crate) connection: Connection,
    #[command(subcommand)]
    pub(crate) command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum AdminCommand {
    /// Show the token's id, role and provider.
    #[command(after_help = "Example:\n  tollgate admin whoami")]
    Whoami,
    /// Create the first operator token by writing to the database directly (no API call).
    ///
    /// Opens the database named by the configuration (--config FILE or TOLLGATE_CONFIG;
    /// migrating it if needed), stores the
    /// token's SHA-256 and prints the token once. Refuses when an unrevoked operator token
    /// exists, unless --force (e.g. the only operator token was lost).
    #[command(after_help = "Examples:\n  tollgate admin bootstrap --config tollgate.toml --label ops \
                            --out ~/.tollgate/admin.token\n  \
                            TOLLGATE_ADMIN_TOKEN=$(tollgate admin bootstrap --config tollgate.toml | jq -r .token)")]
    Bootstrap {
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
                            tollgate admin revenue weather --from 2026-01-01T00:00:00Z --to 2026-02-01T00:00:00Z")]
    Revenue {
        /// The provider id.
        provider: String,
        /// From, inclusive: RFC 3339 (2026-01-01T00:00:00Z) or unix seconds.
        #[arg(long = "from", alias = "from-unix-s", value_name = "TIME", value_parser = parse_time)]
        from_unix_s: Option<u64>,
        /// To, exclusive: RFC 3339 or unix seconds.
        #[arg(long = "to", alias = "to-unix-s", value_name = "TIME", value_parser = parse_time)]
        to_unix_s: Option<u64>,
    },
    /// Ledger entries (read-only; the signed payment is not shown).
    #[command(subcommand, after_help = "Example:\n  tollgate admin ledger entries --provider weather --limit 20")]
    Ledger(LedgerCommand),
    /// Reconciliation over the API (finance, operator): run, list runs, exceptions, notes.
    #[command(subcommand, after_help = RECONCILE_HELP)]
    Reconcile(ReconcileCommand),
    /// Compare the configuration file's providers and endpoints with the live ones.
    ///
    /// Lists, as JSON, every field where the file (--config FILE or TOLLGATE_CONFIG) and a
    /// live record differ: records changed through the admin API keep their change at a
    /// restart, and `tollgate serve` warns about the same differences when it starts.
    #[command(after_help = "Example:\n  tollgate admin diff --config tollgate.toml")]
    Diff,
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
pub(crate) enum ReconcileCommand {
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
pub(crate) enum TokenCommand {
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

const CREDENTIAL_HELP: &str = "\
Examples:
  tollgate admin credential list weather
  printf %s \"$NEW_KEY\" | tollgate admin credential rotate weather weather-key
  tollgate admin credential rotate weather weather-key --secret-file /run/secrets/weather
  tollgate admin credential revoke weather weather-key 1";

#[derive(Debug, clap::Subcommand)]
pub(crate) enum CredentialCommand {
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
pub(crate) enum WalletCommand {
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
    /// Set (replace) a wallet's policy in a scope. Amounts are USDC (`0.013`, up to 6
    /// decimals) or atomic units with the suffix `atomic` (`13000atomic`); caps are per UTC day
    /// and UTC calendar month, summed over every asset.
    #[command(
        after_help = "Examples:\n  tollgate admin wallet set 0x90F79bf6EB2c4f870365E785982E1f101E93b906 --registered \
                            --per-call-max 0.01 --daily-cap 5 --monthly-cap 100\n  \
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
        /// Largest amount per call (USDC like 0.01, or atomic units like 10000atomic).
        #[arg(long, value_name = "AMOUNT", value_parser = atomic_amount)]
        per_call_max: Option<String>,
        /// Largest spend per UTC day (USDC like 0.013, or atomic units like 13000atomic).
        #[arg(long, value_name = "AMOUNT", value_parser = atomic_amount)]
        daily_cap: Option<String>,
        /// Largest spend per UTC calendar month (USDC, or atomic units with the suffix).
        #[arg(long, value_name = "AMOUNT", value_parser = atomic_amount)]
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
pub(crate) struct WalletRef {
    /// The wallet address.
    pub(crate) wallet: String,
    /// `*` or a provider id [default: `*` for operators, the token's provider otherwise].
    #[arg(long)]
    pub(crate) scope: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum SettingsCommand {
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
pub(crate) enum AuditCommand {
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
    #[command(after_help = "Example:\n  tollgate admin audit export --from 2026-01-01T00:00:00Z > audit.jsonl")]
    Export {
        #[command(flatten)]
        filter: AuditFilter,
        /// Write to this file instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verify the hash chain: through the API, or with --config FILE (the flag, not
    /// TOLLGATE_CONFIG) straight from the database.
    /// Exit code 8 when the chain is broken (the first broken sequence number is printed).
    #[command(after_help = "Examples:\n  tollgate admin audit verify\n  \
                            tollgate admin audit verify --config tollgate.toml")]
    Verify,
}

#[derive(Debug, clap::Args)]
pub(crate) struct AuditFilter {
    /// Payer wallet.
    #[arg(long, value_name = "ADDRESS")]
    pub(crate) wallet: Option<String>,
    /// Endpoint name (`provider:path`).
    #[arg(long, value_name = "NAME")]
    pub(crate) endpoint: Option<String>,
    /// Provider id.
    #[arg(long, value_name = "ID")]
    pub(crate) provider: Option<String>,
    /// From, inclusive: RFC 3339 (2026-01-01T00:00:00Z) or unix seconds.
    #[arg(long = "from", value_name = "TIME", value_parser = parse_time)]
    pub(crate) from_unix_s: Option<u64>,
    /// To, exclusive: RFC 3339 or unix seconds.
    #[arg(long = "to", value_name = "TIME", value_parser = parse_time)]
    pub(crate) to_unix_s: Option<u64>,
    /// accepted or denied.
    #[arg(long, value_parser = ["accepted", "denied"])]
    pub(crate) decision: Option<String>,
}

impl AuditFilter {
    pub(crate) fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("wallet", self.wallet.clone()),
            ("endpoint", self.endpoint.clone()),
            ("provider", self.provider.clone()),
            ("from_unix_ms", self.from_unix_s.map(|v| v.saturating_mul(1000).to_string())),
            ("to_unix_ms", self.to_unix_s.map(|v| v.saturating_mul(1000).to_string())),
            ("decision", self.decision.clone()),
        ]
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum LedgerCommand {
    /// Ledger entries, oldest first, with paging (a provider token sees its own).
    #[command(
        after_help = "Example:\n  tollgate admin ledger entries --payer 0x90F79bf6EB2c4f870365E785982E1f101E93b906 \
                            --from 2026-01-01T00:00:00Z --limit 20"
    )]
    Entries {
        /// Provider id.
        #[arg(long, value_name = "ID")]
        provider: Option<String>,
        /// Payer wallet.
        #[arg(long, value_name = "ADDRESS")]
        payer: Option<String>,
        /// From, inclusive: RFC 3339 (2026-01-01T00:00:00Z) or unix seconds.
        #[arg(long = "from", alias = "from-unix-s", value_name = "TIME", value_parser = parse_time)]
        from_unix_s: Option<u64>,
        /// To, exclusive: RFC 3339 or unix seconds.
        #[arg(long = "to", alias = "to-unix-s", value_name = "TIME", value_parser = parse_time)]
        to_unix_s: Option<u64>,
        /// One ledger state (`refund_owed` lists the refunds owed).
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// Entries to skip.
        #[arg(long)]
        offset: Option<u64>,
        /// Page size [default: 100].
        #[arg(long)]
        limit: Option<u32>,
    },
    /// One entry's event history, oldest first (a provider token: its own entries).
    #[command(after_help = "Example:\n  tollgate admin ledger events 0123456789abcdef0123456789abcdef")]
    Events {
        /// The entry id (32 hex digits).
        #[arg(value_name = "ENTRY_ID")]
        id: String,
    },
}
