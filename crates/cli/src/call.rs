//! `tollgate call`: one paid HTTP call through `tollgate-client`. The body goes to stdout,
//! the payment to stderr, the outcome to the exit code.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use alloy_primitives::U256;
use tollgate_client::{
    AllowedAsset, ClientConfig, HeaderMap, HeaderName, HeaderValue, Method, Paid, PayingClient, RecordState,
};

use crate::args::{KeyArgs, TlsArgs, client_failure, parse_allow, parse_amount, parse_header, store_path, usdc};
use crate::{EXIT_CODES, EXIT_FAILURE, EXIT_HTTP_STATUS, EXIT_OK, Failure};

/// Examples and exit codes shown under `tollgate call --help`.
pub fn help() -> String {
    format!(
        "\
Amounts are USDC (`0.05` = 5 cents, up to 6 decimals) or atomic units with the suffix
`atomic` (`50000atomic`). Budgets count every payment signed, sent, paid or in doubt, in the
spending record (default $TOLLGATE_HOME/spend.json, else ~/.tollgate/spend.json), across runs.

Examples:
  TOLLGATE_KEY=0x... tollgate call http://127.0.0.1:8080/weather/paris
  tollgate call --key-file agent.key --max-per-call 0.01 --budget 1 --host-budget 0.25 \\
      -X POST -H 'Content-Type: application/json' -d '{{\"q\":\"paris\"}}' http://gw:8080/search
  TOLLGATE_KEYSTORE_PASSWORD=... tollgate call --keystore agent.json \\
      --allow eip155:84532:0x036CbD53842c5426634e7929541eC2318f3dCF7e http://gw:8080/weather/oslo

{EXIT_CODES}"
    )
}

/// `tollgate call` arguments.
#[derive(Debug, clap::Args)]
pub struct CallArgs {
    /// The URL (http or https).
    pub url: String,
    /// HTTP method.
    #[arg(short = 'X', long = "request", value_name = "METHOD", default_value = "GET")]
    pub method: String,
    /// Request body; `@FILE` reads it from a file.
    #[arg(short = 'd', long = "data", value_name = "BODY")]
    pub data: Option<String>,
    /// Request header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header", value_name = "HEADER", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
    #[command(flatten)]
    pub key: KeyArgs,
    /// Largest single payment.
    #[arg(long, value_name = "AMOUNT", default_value = "1", value_parser = parse_amount)]
    pub max_per_call: U256,
    /// Total budget over everything in the spending record [default: none].
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount)]
    pub budget: Option<U256>,
    /// Budget per host:port [default: none].
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount)]
    pub host_budget: Option<U256>,
    /// Acceptable `eip155:<chain id>:0x<asset>` (repeatable) [default: USDC on Base and Base Sepolia].
    #[arg(long = "allow", value_name = "NETWORK:ASSET", value_parser = parse_allow)]
    pub allow: Vec<AllowedAsset>,
    /// The spending record file.
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Whole-request timeout, seconds (a paid call includes the server's settlement).
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
    /// Re-sends after a transport error (always with the same payment).
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
}

/// Runs the call; returns the exit code.
pub async fn run(args: CallArgs) -> Result<u8, Failure> {
    let method = Method::from_bytes(args.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| Failure::usage(format!("invalid method `{}`", args.method)))?;
    let body = match &args.data {
        Some(d) if d.starts_with('@') => {
            let path = d.trim_start_matches('@');
            std::fs::read(path).map_err(|e| Failure::usage(format!("cannot read body file {path}: {e}")))?
        }
        Some(d) => d.clone().into_bytes(),
        None => Vec::new(),
    };
    let mut headers = HeaderMap::new();
    for (name, value) in args.headers.iter().cloned() {
        headers.append(name, value);
    }
    let signer = args.key.load()?;
    let mut config = ClientConfig::new(signer, store_path(args.store.clone())?);
    if !args.allow.is_empty() {
        config.allow = args.allow.clone();
    }
    config.limits.max_per_call_atomic = Some(args.max_per_call);
    config.limits.total_budget_atomic = args.budget;
    config.limits.per_host_budget_atomic = args.host_budget;
    config.request_timeout = Duration::from_secs(args.timeout.max(1));
    config.retries = args.retries;
    config.tls = Some(args.tls.client_tls()?);
    let client = PayingClient::new(config).map_err(client_failure)?;

    let open = client.resume().await.map_err(client_failure)?;
    if !open.is_empty() {
        eprintln!(
            "tollgate: {} earlier payment(s) left unresolved by an interrupted run are counted against budgets \
             (see {})",
            open.len(),
            client.store().path().display()
        );
    }
    let paid = client.send(method, &args.url, headers, body).await.map_err(client_failure)?;
    report(&paid);
    let mut out = std::io::stdout().lock();
    out.write_all(&paid.body).and_then(|()| out.flush()).map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    if paid.status.is_success() {
        Ok(EXIT_OK)
    } else {
        eprintln!("tollgate: HTTP {}", paid.status);
        Ok(EXIT_HTTP_STATUS)
    }
}

/// The payment, on stderr.
fn report(paid: &Paid) {
    let Some(p) = &paid.payment else { return };
    let state = match p.state {
        RecordState::Paid => "paid",
        RecordState::PaidPending => "paid_pending",
        RecordState::Failed => "failed (not charged)",
        RecordState::Refused => "refused",
        RecordState::Signed | RecordState::Sent => "sent",
    };
    let tx = p.transaction.as_deref().unwrap_or("none");
    let reason = p.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
    eprintln!(
        "tollgate: payment {} USDC ({} atomic) to {} on {}: tx {tx}, payer {}, state {state}{reason}",
        usdc(p.amount.0),
        p.amount,
        p.pay_to,
        p.network,
        p.payer,
    );
}
