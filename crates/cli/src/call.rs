//! `tollgate call`: one paid HTTP call through `tollgate-client`. The body goes to stdout,
//! the payment to stderr (a line, or with `--json` one JSON object), the outcome to the exit
//! code. `--dry-run` fetches the challenge and says what would be paid, signing nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy_primitives::U256;
use serde_json::{Value, json};
use tollgate_client::{
    AllowedAsset, ClientConfig, HeaderMap, HeaderName, HeaderValue, Method, Paid, PayingClient, PaymentRecord, Quote,
    RecordState, USDC_BASE, USDC_BASE_SEPOLIA,
};

use crate::args::{KeyArgs, TlsArgs, client_failure, parse_allow, parse_amount, parse_header, store_path, usdc};
use crate::{
    EXIT_BUDGET, EXIT_CODES, EXIT_HTTP_STATUS, EXIT_NO_REQUIREMENT, EXIT_OK, EXIT_REFUSED, EXIT_USAGE, Failure,
};

/// Examples and exit codes shown under `tollgate call --help`.
pub fn help() -> String {
    format!(
        "\
Amounts are USDC (`0.05` = 5 cents, up to 6 decimals) or atomic units with the suffix
`atomic` (`50000atomic`). Budgets count every payment signed, sent, paid or in doubt, in the
spending record (default $TOLLGATE_HOME/spend.json, else ~/.tollgate/spend.json), across runs.

The per-day budgets count the current UTC day (by when each authorization was signed).
`tollgate wallet history` shows the record with totals per host and per day.

Examples:
  TOLLGATE_KEY=0x... tollgate call http://127.0.0.1:8080/weather/paris
  tollgate call --key-file agent.key --dry-run http://127.0.0.1:8080/weather/paris
  tollgate call --key-file agent.key --daily-budget 2 --host-daily-budget 0.5 --json-out call.json \\
      http://gw:8080/weather/paris
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
    /// Budget for the current UTC day, across hosts [default: none].
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount)]
    pub daily_budget: Option<U256>,
    /// Budget per host:port for the current UTC day [default: none].
    #[arg(long, value_name = "AMOUNT", value_parser = parse_amount)]
    pub host_daily_budget: Option<U256>,
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
    /// Report the outcome (status, headers, receipt, charged amount, transaction, entry id,
    /// error) as one JSON object on stderr instead of the payment line.
    #[arg(long)]
    pub json: bool,
    /// Write that JSON object to this file (the payment line still goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
    /// Fetch the 402 and print what would be paid (stdout), checking the spend limits; sign
    /// and send nothing. Exits as the call would before signing (0, 4 or 5).
    #[arg(long)]
    pub dry_run: bool,
}

/// Runs the call; returns the exit code.
pub async fn run(args: CallArgs) -> Result<u8, Failure> {
    let sink = JsonSink { stderr: args.json, file: args.json_out.clone() };
    let base = json!({ "method": args.method.to_ascii_uppercase(), "url": args.url, "dryRun": args.dry_run });
    match call(&args).await {
        Ok(Done::Paid(paid, code)) => {
            if sink.enabled() {
                sink.write(merge(base, paid_json(&paid, code)))?;
            }
            if !sink.stderr {
                report(&paid);
                if code == EXIT_HTTP_STATUS {
                    say!("tollgate: HTTP {}", paid.status);
                }
            }
            // The body after the report: a closed stdout (`| head`) must not hide the payment.
            crate::out::print_bytes(&paid.body)?;
            Ok(code)
        }
        Ok(Done::Quoted(quote)) => {
            crate::out::print_line(quote_line(&quote, &args))?;
            if sink.enabled() {
                sink.write(merge(base, quote_json(&quote)))?;
            }
            Ok(EXIT_OK)
        }
        Err(f) if sink.enabled() => {
            // `charged` is null only where nothing can have been charged: nothing signed
            // (usage, budget, no acceptable offer) or the server refused the payment. Any other
            // failure may follow a payment (a lost answer, a body over the cap after a paid
            // answer): "unknown", and `wallet history` holds the record to check.
            let charged = match f.code {
                EXIT_USAGE | EXIT_REFUSED | EXIT_BUDGET | EXIT_NO_REQUIREMENT => Value::Null,
                _ => Value::String("unknown".to_owned()),
            };
            let error = json!({ "exitCode": f.code, "charged": charged, "error": { "message": f.message } });
            sink.write(merge(base, error))?;
            if sink.stderr { Ok(f.code) } else { Err(f) }
        }
        Err(f) => Err(f),
    }
}

/// How a call ended short of an error.
enum Done {
    /// Answered (paid or free), with the exit code.
    Paid(Box<Paid>, u8),
    /// `--dry-run`.
    Quoted(Quote),
}

async fn call(args: &CallArgs) -> Result<Done, Failure> {
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
    config.limits.daily_budget_atomic = args.daily_budget;
    config.limits.per_host_daily_budget_atomic = args.host_daily_budget;
    config.request_timeout = Duration::from_secs(args.timeout.max(1));
    config.retries = args.retries;
    config.tls = Some(args.tls.client_tls()?);
    let client = PayingClient::new(config).map_err(client_failure)?;

    let open = client.resume().await.map_err(client_failure)?;
    if !open.is_empty() {
        say!(
            "tollgate: {} earlier payment(s) left unresolved by an interrupted run are counted against budgets \
             (see {})",
            open.len(),
            client.store().path().display()
        );
    }
    if args.dry_run {
        let quote = client.quote(method, &args.url, headers, body).await.map_err(client_failure)?;
        return Ok(Done::Quoted(quote));
    }
    let paid = client.send(method, &args.url, headers, body).await.map_err(client_failure)?;
    let code = if paid.status.is_success() { EXIT_OK } else { EXIT_HTTP_STATUS };
    Ok(Done::Paid(Box::new(paid), code))
}

/// Where `--json` / `--json-out` send the object.
struct JsonSink {
    stderr: bool,
    file: Option<PathBuf>,
}

impl JsonSink {
    fn enabled(&self) -> bool {
        self.stderr || self.file.is_some()
    }

    fn write(&self, v: Value) -> Result<(), Failure> {
        let line = v.to_string();
        if self.stderr {
            say!("{line}");
        }
        if let Some(path) = &self.file {
            write_file(path, &line)?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, line: &str) -> Result<(), Failure> {
    std::fs::write(path, format!("{line}\n"))
        .map_err(|e| Failure::usage(format!("--json-out {}: cannot write: {e}", path.display())))
}

fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// An amount as the CLI shows it: USDC with 6 places, and the atomic integer beside it.
fn amount_json(atomic: U256, asset: alloy_primitives::Address) -> Value {
    let usdc_asset = asset == USDC_BASE || asset == USDC_BASE_SEPOLIA;
    json!({
        "amount": usdc(atomic),
        "atomic": atomic.to_string(),
        "symbol": if usdc_asset { Value::from("USDC") } else { Value::Null },
    })
}

fn paid_json(paid: &Paid, code: u8) -> Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &paid.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers.entry(name.as_str().to_owned()).and_modify(|v| *v = format!("{v}, {value}")).or_insert(value);
    }
    let header = |name: &str| paid.headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    json!({
        "exitCode": code,
        "status": paid.status.as_u16(),
        "headers": headers,
        "receipt": paid.receipt,
        "charged": paid.payment.as_ref().filter(|p| p.state.counts()).map(|p| amount_json(p.amount.0, p.asset)),
        "transaction": paid.payment.as_ref().and_then(|p| p.transaction.clone()),
        "entryId": header("tollgate-receipt"),
        "payment": paid.payment.as_ref().map(payment_json),
        "error": Value::Null,
    })
}

fn payment_json(p: &PaymentRecord) -> Value {
    json!({
        "state": p.state,
        "nonce": p.nonce,
        "payer": p.payer,
        "payTo": p.pay_to,
        "network": p.network,
        "asset": p.asset,
        "price": amount_json(p.amount.0, p.asset),
        "reason": p.reason,
    })
}

fn quote_json(q: &Quote) -> Value {
    let would_pay = q.would_pay.as_ref().map(|w| {
        json!({
            "price": amount_json(w.amount_atomic, w.asset),
            "network": w.network,
            "asset": w.asset,
            "payTo": w.pay_to,
            "x402Version": w.x402_version,
            "host": w.host,
        })
    });
    json!({ "exitCode": EXIT_OK, "status": q.status.as_u16(), "wouldPay": would_pay, "charged": Value::Null, "error": Value::Null })
}

fn quote_line(q: &Quote, args: &CallArgs) -> String {
    let target = format!("{} {}", args.method.to_ascii_uppercase(), args.url);
    match &q.would_pay {
        Some(w) => format!(
            "would pay {} USDC ({} atomic) to {} on {} (asset {}, x402 v{}) for {target}; within every spend \
             limit; nothing signed",
            usdc(w.amount_atomic),
            w.amount_atomic,
            w.pay_to,
            w.network,
            w.asset,
            w.x402_version,
        ),
        None => format!("no payment asked for {target} (HTTP {}); nothing signed", q.status.as_u16()),
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
    say!(
        "tollgate: payment {} USDC ({} atomic) to {} on {}: tx {tx}, payer {}, state {state}{reason}",
        usdc(p.amount.0),
        p.amount,
        p.pay_to,
        p.network,
        p.payer,
    );
}
