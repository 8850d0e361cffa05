//! `tollgate wallet history`: the spending record read back, newest first, with the totals
//! the budgets count per host and per UTC day. Reads the store only: no key, no network.
//!
//! Must not: print a record's signed payment header (until it expires, anyone holding it
//! could submit it to the chain).

use std::path::PathBuf;

use serde_json::{Value, json};
use tollgate_client::{PaymentRecord, RecordState, SpendStore, Spent, USDC_BASE, USDC_BASE_SEPOLIA};

use crate::args::{client_failure, store_path, usdc};
use crate::out::print_line;
use crate::{EXIT_OK, Failure};

/// `tollgate wallet history` arguments.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The spending record file [default: $TOLLGATE_HOME/spend.json, else ~/.tollgate/spend.json].
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Show at most this many records (the totals always cover the whole record).
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// `2026-12-07T20:31:02Z` (RFC 3339, UTC).
fn rfc3339(unix_s: u64) -> String {
    i64::try_from(unix_s).ok().and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok()).map_or_else(
        || unix_s.to_string(),
        |t| format!("{}T{:02}:{:02}:{:02}Z", t.date(), t.hour(), t.minute(), t.second()),
    )
}

fn state(s: RecordState) -> &'static str {
    match s {
        RecordState::Signed => "signed",
        RecordState::Sent => "sent",
        RecordState::Paid => "paid",
        RecordState::PaidPending => "paid_pending",
        RecordState::Refused => "refused",
        RecordState::Failed => "failed",
    }
}

fn amount(atomic: alloy_primitives::U256) -> Value {
    json!({ "amount": usdc(atomic), "atomic": atomic.to_string(), "symbol": "USDC" })
}

fn record_json(r: &PaymentRecord) -> Value {
    let usdc_asset = r.asset == USDC_BASE || r.asset == USDC_BASE_SEPOLIA;
    json!({
        "createdAt": rfc3339(r.created_unix_s),
        "createdUnixS": r.created_unix_s,
        "updatedUnixS": r.updated_unix_s,
        "state": state(r.state),
        "counted": r.state.counts(),
        "price": { "amount": usdc(r.amount.0), "atomic": r.amount.to_string(),
                   "symbol": if usdc_asset { Value::from("USDC") } else { Value::Null } },
        "method": r.method,
        "url": r.url,
        "host": r.host,
        "network": r.network,
        "asset": r.asset,
        "payTo": r.pay_to,
        "payer": r.payer,
        "nonce": r.nonce,
        "transaction": r.transaction,
        "reason": r.reason,
        "httpStatus": r.http_status,
    })
}

/// Prints the history; returns the exit code.
pub fn run(args: HistoryArgs) -> Result<u8, Failure> {
    let path = store_path(args.store)?;
    if !path.exists() {
        return Err(Failure::usage(format!("no spending record at {} (pass --store PATH)", path.display())));
    }
    let store = SpendStore::open(&path).map_err(client_failure)?;
    let records = store.records().map_err(client_failure)?;
    let spent = Spent::of(&records);
    // Newest first; the file is in signing order, so reversing keeps ties in a stable order.
    let mut newest: Vec<&PaymentRecord> = records.iter().rev().collect();
    newest.sort_by_key(|r| std::cmp::Reverse(r.created_unix_s));
    newest.truncate(args.limit.unwrap_or(usize::MAX));
    if args.json {
        let per_host: serde_json::Map<String, Value> =
            spent.per_host_atomic.iter().map(|(h, a)| (h.clone(), amount(*a))).collect();
        let per_day: serde_json::Map<String, Value> =
            spent.per_day_atomic.iter().rev().map(|(d, a)| (d.clone(), amount(*a))).collect();
        let v = json!({
            "store": path.display().to_string(),
            "records": newest.iter().map(|r| record_json(r)).collect::<Vec<_>>(),
            "totals": { "total": amount(spent.total_atomic), "perHost": per_host, "perDay": per_day,
                        "unresolved": spent.unresolved },
        });
        print_line(serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string()))?;
        return Ok(EXIT_OK);
    }
    let mut out = String::new();
    for r in &newest {
        let tx = r.transaction.as_deref().map(|t| format!("  tx {t}")).unwrap_or_default();
        let reason = r.reason.as_deref().map(|t| format!("  ({t})")).unwrap_or_default();
        out.push_str(&format!(
            "{}  {:<12}  {} USDC  {}  {} {}{tx}{reason}\n",
            rfc3339(r.created_unix_s),
            state(r.state),
            usdc(r.amount.0),
            r.host,
            r.method,
            r.url,
        ));
    }
    if records.is_empty() {
        out.push_str("no payments recorded\n");
    }
    out.push_str("\nCounted against budgets (signed, sent, paid, paid_pending):\nper host:\n");
    for (host, a) in &spent.per_host_atomic {
        out.push_str(&format!("  {host}  {} USDC ({a} atomic)\n", usdc(*a)));
    }
    out.push_str("per UTC day:\n");
    for (day, a) in spent.per_day_atomic.iter().rev() {
        out.push_str(&format!("  {day}  {} USDC ({a} atomic)\n", usdc(*a)));
    }
    out.push_str(&format!(
        "total: {} USDC ({} atomic); {} unresolved",
        usdc(spent.total_atomic),
        spent.total_atomic,
        spent.unresolved
    ));
    print_line(out)?;
    Ok(EXIT_OK)
}
