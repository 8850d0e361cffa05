//! The `tollgate` binary: `serve` runs the gateway from a configuration file; `reconcile`
//! checks its settlements against the chain; `admin` drives the admin API (and bootstraps its
//! first token); `call` and `wallet` are the agent's side (on `tollgate-client`).
//!
//! This file owns argument parsing, the exit codes and the one-line error report; each
//! command lives in its own module. Errors are printed as one readable line (no
//! backtrace) and exit with the code of their kind (see [`EXIT_CODES`]).

/// `eprintln!` that never panics on a closed stderr (see [`out`]).
macro_rules! say {
    ($($arg:tt)*) => { $crate::out::say(format_args!($($arg)*)) };
}

mod admin;
mod args;
mod call;
mod history;
mod out;
mod reconcile;
mod serve;
mod wallet;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The exit codes, as shown in `--help`.
const EXIT_CODES: &str = "\
Exit codes:
  0  success (2xx answer)
  1  other failure (spending record, malformed challenge, configuration)
  2  usage: bad arguments, missing or unreadable key
  3  payment refused by the server (e.g. invalid_exact_evm_insufficient_balance)
  4  payment refused locally by a spend limit (nothing signed, nothing sent)
  5  no acceptable payment requirement (network/asset not allowed)
  6  transport error, or payment outcome unknown after a lost response
  7  non-2xx answer after payment handling (nothing charged unless a receipt says so)
  8  audit chain broken (tollgate admin audit verify)";

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: other failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: usage.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: refused by the server.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: refused by a local spend limit.
pub const EXIT_BUDGET: u8 = 4;
/// Exit code: no acceptable requirement.
pub const EXIT_NO_REQUIREMENT: u8 = 5;
/// Exit code: transport error or outcome unknown.
pub const EXIT_TRANSPORT: u8 = 6;
/// Exit code: non-2xx answer.
pub const EXIT_HTTP_STATUS: u8 = 7;
/// Exit code: the audit hash chain is broken.
pub const EXIT_AUDIT_BROKEN: u8 = 8;

/// Tollgate: a pay-per-call gateway for AI agents (x402, USDC, EIP-3009).
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about, after_help = top_help())]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Command,
}

fn top_help() -> String {
    format!(
        "\
Examples:
  tollgate serve --config tollgate.toml
  tollgate wallet new --out agent.key
  tollgate call --key-file agent.key --budget 0.50 http://gateway:8080/weather/paris
  tollgate admin bootstrap --config tollgate.toml --out admin.token
  TOLLGATE_ADMIN_TOKEN=$(cat admin.token) tollgate admin endpoint list weather

{EXIT_CODES}"
    )
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve {
        /// The configuration file (see docs/configuration.md).
        #[arg(long, short)]
        config: std::path::PathBuf,
        /// Log line format: text or json (default: `[log] format` in the file, else text).
        #[arg(long, value_parser = ["text", "json"])]
        log_format: Option<String>,
    },
    /// Call a URL, paying its x402 challenge within your spend limits.
    ///
    /// Prints the response body to stdout and the payment (amount, transaction, payer,
    /// network, state) to stderr. Every signed authorization is recorded in the spending
    /// record before it is sent; budgets count everything signed or in doubt, across runs.
    #[command(after_help = call::help())]
    Call(Box<call::CallArgs>),
    /// Reconcile on-chain settlement against the ledger over a block range, a time range, or
    /// from the last run's cursor to the chain head.
    ///
    /// Records the run in the ledger, prints a summary to stderr, and writes CSV or JSON
    /// (columns in docs/reconciliation.md).
    #[command(after_help = RECONCILE_EXAMPLES)]
    Reconcile(reconcile::ReconcileArgs),
    /// Create a wallet, show its address, its token balance or its spending history.
    #[command(subcommand, after_help = wallet::help())]
    Wallet(wallet::WalletCommand),
    /// Drive the admin API: tokens, providers, endpoints and prices, vault credentials,
    /// wallet policies, settings, audit trail, revenue and ledger (docs/admin-api.md).
    ///
    /// The token comes from TOLLGATE_ADMIN_TOKEN or --token-file; the URL from --url or
    /// TOLLGATE_ADMIN_URL (default http://127.0.0.1:8403). Answers print as JSON on stdout.
    Admin(admin::AdminArgs),
}

// Examples live in `after_help` strings, never in doc comments: clap joins a doc comment's
// lines into one paragraph, which ran the example commands together.
const SERVE_EXAMPLES: &str = "\
Example:
  TOLLGATE_RELAYER_KEY=0x... WEATHER_API_KEY=... tollgate serve --config tollgate.toml";

const RECONCILE_EXAMPLES: &str = "\
Examples:
  tollgate reconcile --config tollgate.toml --from-block 100 --to-block 200 --csv run.csv
  tollgate reconcile --config tollgate.toml --from-time 2026-01-01T00:00:00Z \\
      --to-time 2026-02-01T00:00:00Z --totals-csv january.csv
  tollgate reconcile --config tollgate.toml --resume --json";

/// A failed command: its exit code and one line for stderr.
#[derive(Debug)]
pub struct Failure {
    /// The exit code.
    pub code: u8,
    /// The message (no key material, ever).
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl std::fmt::Display) -> Failure {
        Failure { code, message: message.to_string() }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl std::fmt::Display) -> Failure {
        Failure::new(EXIT_USAGE, message)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::new(EXIT_FAILURE, format!("{e:#}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sets up its log once it has read the file's `[log] format`.
    if !matches!(cli.command, Command::Serve { .. }) {
        init_log(cli.log_level, tollgate_gateway::config::LogFormat::Text);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            say!("tollgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, cli.log_level)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            say!("tollgate: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Logs to stderr, in `format`; colours only when stderr is a terminal (never in files,
/// journald or a container's log).
pub fn init_log(level: tracing::Level, format: tollgate_gateway::config::LogFormat) {
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt().with_max_level(level).with_target(false).with_writer(std::io::stderr);
    match format {
        tollgate_gateway::config::LogFormat::Json => builder.json().with_current_span(false).init(),
        tollgate_gateway::config::LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

async fn run(command: Command, log_level: tracing::Level) -> Result<u8, Failure> {
    match command {
        Command::Serve { config, log_format } => {
            serve::serve(config, log_format.as_deref(), log_level).await.map(|()| EXIT_OK).map_err(Failure::from)
        }
        Command::Call(args) => call::run(*args).await,
        Command::Wallet(cmd) => wallet::run(cmd).await,
        Command::Reconcile(args) => reconcile::run(args).await,
        Command::Admin(args) => admin::run(args).await,
    }
}
