//! The renderings of a reconciliation documented in `docs/reconciliation.md`: the items as
//! CSV, the totals per UTC day, UTC month, provider, route and payer as CSV, and the run as
//! JSON. CSV is written by the `csv` crate (RFC 4180, CRLF).
//!
//! Must not: compute anything the report does not hold (totals are the matcher's).

use std::collections::BTreeMap;

use alloy_primitives::U256;
use serde_json::{Value, json};
use tollgate_metering::ReconItem;

use crate::matcher::{ReconBreakdown, ReconReport, ReconSums};
use crate::run::ReconcileOutcome;

/// The CSV columns, in order (see `docs/reconciliation.md`).
pub const CSV_COLUMNS: [&str; 15] = [
    "class",
    "chain_id",
    "asset",
    "payer",
    "pay_to",
    "chain_to",
    "nonce",
    "amount_ledger",
    "amount_chain",
    "tx_hash",
    "block_number",
    "log_index",
    "entry_id",
    "provider",
    "route",
];

fn item_fields(i: &ReconItem) -> [String; 15] {
    let opt = |v: Option<String>| v.unwrap_or_default();
    [
        i.class.as_str().to_owned(),
        i.chain_id.to_string(),
        format!("{:#x}", i.asset),
        format!("{:#x}", i.payer),
        format!("{:#x}", i.pay_to),
        opt(i.chain_to.map(|a| format!("{a:#x}"))),
        opt(i.nonce.map(|n| format!("{n:#x}"))),
        opt(i.amount_ledger.map(|a| a.to_string())),
        opt(i.amount_chain.map(|a| a.to_string())),
        opt(i.tx_hash.map(|h| format!("{h:#x}"))),
        opt(i.block_number.map(|n| n.to_string())),
        opt(i.log_index.map(|n| n.to_string())),
        opt(i.entry_id.as_ref().map(|id| id.to_string())),
        opt(i.provider.clone()),
        opt(i.route.clone()),
    ]
}

/// The report's items as CSV (RFC 4180: a header line, CRLF line ends, amounts as decimal
/// atomic units, empty fields for absent values).
pub fn render_csv(report: &ReconReport) -> String {
    csv_text(CSV_COLUMNS, report.items.iter().map(item_fields))
}

/// Writes a header and rows as RFC 4180 CSV: CRLF line ends, a field quoted (inner quotes
/// doubled) only when it holds a comma, a quote, CR or LF.
fn csv_text<const N: usize>(header: [&str; N], rows: impl Iterator<Item = [String; N]>) -> String {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(Vec::new());
    let written = w.write_record(header).and_then(|()| rows.into_iter().try_for_each(|row| w.write_record(&row)));
    // Neither can fail: the records all have N fields, and a `Vec` takes every byte it is
    // given. The fields are `String`s, so the bytes are UTF-8.
    let bytes = written.ok().and_then(|()| w.into_inner().ok()).unwrap_or_default();
    String::from_utf8(bytes).unwrap_or_default()
}

/// The columns of the totals CSV, in order (see `docs/reconciliation.md`).
pub const TOTALS_CSV_COLUMNS: [&str; 5] = ["group", "key", "expected", "matched", "outstanding"];

/// Every group of a breakdown as (group name, key, sums), in the documented order.
fn breakdown_rows(b: &ReconBreakdown) -> Vec<(&'static str, String, ReconSums)> {
    let rows = |group: &'static str, map: &BTreeMap<String, ReconSums>| {
        map.iter().map(move |(k, v)| (group, k.clone(), *v)).collect::<Vec<_>>()
    };
    let mut out = rows("day", &b.by_day);
    out.extend(rows("month", &b.by_month));
    out.extend(rows("provider", &b.by_provider));
    out.extend(rows("route", &b.by_route));
    out.extend(b.by_payer.iter().map(|(k, v)| ("payer", format!("{k:#x}"), *v)));
    out
}

/// The breakdown as CSV (RFC 4180, like [`render_csv`]): one row per UTC day, UTC month,
/// provider, route and payer, with expected, matched and outstanding amounts.
pub fn render_totals_csv(b: &ReconBreakdown) -> String {
    let rows = breakdown_rows(b).into_iter().map(|(group, key, sums)| {
        [group.to_owned(), key, sums.expected.to_string(), sums.matched.to_string(), sums.outstanding.to_string()]
    });
    csv_text(TOTALS_CSV_COLUMNS, rows)
}

fn sums_json<K: ToString>(map: impl IntoIterator<Item = (K, ReconSums)>) -> Value {
    map.into_iter()
        .map(|(k, v)| {
            let sums = json!({
                "expected": v.expected.to_string(),
                "matched": v.matched.to_string(),
                "outstanding": v.outstanding.to_string(),
            });
            (k.to_string(), sums)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The run as JSON: scope, cursor, counts, totals (decimal strings), tie-out and items, with
/// the item fields named as the CSV columns.
pub fn render_json(outcome: &ReconcileOutcome) -> Value {
    let r = &outcome.report;
    let t = &r.totals;
    let tie = r.tie_out(&outcome.scope.pay_to);
    let dec = |map: &std::collections::BTreeMap<String, U256>| -> Value {
        map.iter().map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect::<serde_json::Map<_, _>>().into()
    };
    json!({
        "run_id": outcome.run_id,
        "chain_id": outcome.scope.chain_id,
        "asset": format!("{:#x}", outcome.scope.asset),
        "pay_to": outcome.scope.pay_to.iter().map(|a| format!("{a:#x}")).collect::<Vec<_>>(),
        "from_block": outcome.scope.from_block,
        "to_block": outcome.scope.to_block,
        "cursor_block": outcome.cursor_block,
        "current_block": outcome.current_block,
        "reopened": outcome.reopened.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        "counts": t.counts.iter().map(|(c, n)| (c.as_str().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "totals": {
            "chain": t.chain_total.to_string(),
            "ledger": t.ledger_total.to_string(),
            "matched": t.matched_total.to_string(),
            "matched_by_provider": dec(&t.matched_by_provider),
            "matched_by_route": dec(&t.matched_by_route),
            "matched_by_payer": t.matched_by_payer.iter()
                .map(|(a, v)| (format!("{a:#x}"), Value::String(v.to_string())))
                .collect::<serde_json::Map<_, _>>(),
            "by_day": sums_json(outcome.breakdown.by_day.iter().map(|(k, v)| (k, *v))),
            "by_month": sums_json(outcome.breakdown.by_month.iter().map(|(k, v)| (k, *v))),
            "by_provider": sums_json(outcome.breakdown.by_provider.iter().map(|(k, v)| (k, *v))),
            "by_route": sums_json(outcome.breakdown.by_route.iter().map(|(k, v)| (k, *v))),
            "by_payer": sums_json(outcome.breakdown.by_payer.iter().map(|(k, v)| (format!("{k:#x}"), *v))),
        },
        "tie_out": {
            "chain_total": tie.chain_total.to_string(),
            "matched_total": tie.matched_total.to_string(),
            "explained_by_exceptions": tie.explained_chain.to_string(),
            "holds": tie.holds,
        },
        "items": r.items.iter().map(|i| {
            CSV_COLUMNS.iter().zip(item_fields(i)).map(|(k, v)| {
                let v = if v.is_empty() { Value::Null } else { Value::String(v) };
                ((*k).to_owned(), v)
            }).collect::<serde_json::Map<_, _>>()
        }).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use alloy_primitives::Address;

    use super::*;

    #[test]
    fn csv_quotes_per_rfc_4180() {
        // Goal: fields with commas, quotes or line breaks are quoted with inner quotes doubled; others are bare; lines end in CRLF.
        let row = ["plain", "a,b", "say \"hi\"", "two\r\nlines"].map(str::to_owned);
        let text = csv_text(["h1", "h2", "h3", "h4"], std::iter::once(row));
        assert_eq!(text, "h1,h2,h3,h4\r\nplain,\"a,b\",\"say \"\"hi\"\"\",\"two\r\nlines\"\r\n");
    }

    #[test]
    fn totals_csv_rows() {
        // Goal: the totals CSV has the documented header and one row per group key, days first, CRLF line ends.
        let sums = ReconSums { expected: U256::from(5u64), matched: U256::from(3u64), outstanding: U256::from(2u64) };
        let mut b = ReconBreakdown::default();
        b.by_day.insert("2026-01-01".to_owned(), sums);
        b.by_month.insert("2026-01".to_owned(), sums);
        b.by_route.insert("weather:/w,x".to_owned(), sums);
        b.by_payer.insert(Address::repeat_byte(0xab), sums);
        let csv = render_totals_csv(&b);
        let expected = format!(
            "group,key,expected,matched,outstanding\r\nday,2026-01-01,5,3,2\r\nmonth,2026-01,5,3,2\r\n\
             route,\"weather:/w,x\",5,3,2\r\npayer,{:#x},5,3,2\r\n",
            Address::repeat_byte(0xab)
        );
        assert_eq!(csv, expected);
    }
}
