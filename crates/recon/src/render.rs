//! The renderings of a reconciliation documented in `docs/reconciliation.md`: the items as
//! CSV, the totals per UTC day, UTC month, provider, route and payer as CSV, and the run as
//! JSON. CSV is written by the `csv` crate (RFC 4180, CRLF). Every amount is written by
//! [`TokenUnits`]: token units (`0.028`) with the atomic integer beside it (`28000`), never hex.
//!
//! Must not: compute anything the report does not hold (totals are the matcher's).

use std::collections::BTreeMap;

use alloy_primitives::U256;
use serde_json::{Map, Value, json};
use tollgate_metering::{ReconItem, TokenUnits};

use crate::matcher::{ReconBreakdown, ReconReport, ReconSums};
use crate::run::ReconcileOutcome;
use crate::times::rfc3339_utc;

/// The CSV columns, in order (see `docs/reconciliation.md`).
pub const CSV_COLUMNS: [&str; 19] = [
    "class",
    "block_time",
    "chain_id",
    "asset",
    "symbol",
    "payer",
    "pay_to",
    "chain_to",
    "nonce",
    "amount_ledger",
    "amount_ledger_atomic",
    "amount_chain",
    "amount_chain_atomic",
    "tx_hash",
    "block_number",
    "log_index",
    "entry_id",
    "provider",
    "route",
];

fn item_fields(i: &ReconItem, units: &TokenUnits) -> [String; 19] {
    let opt = |v: Option<String>| v.unwrap_or_default();
    let ledger = i.amount_ledger.map(U256::from);
    [
        i.class.as_str().to_owned(),
        opt(i.block_time_unix_s.map(rfc3339_utc)),
        i.chain_id.to_string(),
        format!("{:#x}", i.asset),
        units.symbol.clone(),
        format!("{:#x}", i.payer),
        format!("{:#x}", i.pay_to),
        opt(i.chain_to.map(|a| format!("{a:#x}"))),
        opt(i.nonce.map(|n| format!("{n:#x}"))),
        opt(ledger.map(|a| units.human(a))),
        opt(ledger.map(|a| a.to_string())),
        opt(i.amount_chain.map(|a| units.human(a))),
        opt(i.amount_chain.map(|a| a.to_string())),
        opt(i.tx_hash.map(|h| format!("{h:#x}"))),
        opt(i.block_number.map(|n| n.to_string())),
        opt(i.log_index.map(|n| n.to_string())),
        opt(i.entry_id.as_ref().map(|id| id.to_string())),
        opt(i.provider.clone()),
        opt(i.route.clone()),
    ]
}

/// The report's items as CSV (RFC 4180: a header line, CRLF line ends, the block time in RFC
/// 3339 UTC, amounts in token units with the atomic integer beside them, empty fields for
/// absent values).
pub fn render_csv(report: &ReconReport, units: &TokenUnits) -> String {
    csv_text(CSV_COLUMNS, report.items.iter().map(|i| item_fields(i, units)))
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
pub const TOTALS_CSV_COLUMNS: [&str; 9] = [
    "group",
    "key",
    "symbol",
    "expected",
    "expected_atomic",
    "matched",
    "matched_atomic",
    "outstanding",
    "outstanding_atomic",
];

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
/// provider, route and payer, with expected, matched and outstanding amounts (token units,
/// each with its atomic integer beside it).
pub fn render_totals_csv(b: &ReconBreakdown, units: &TokenUnits) -> String {
    let rows = breakdown_rows(b).into_iter().map(|(group, key, sums)| {
        [
            group.to_owned(),
            key,
            units.symbol.clone(),
            units.human(sums.expected),
            sums.expected.to_string(),
            units.human(sums.matched),
            sums.matched.to_string(),
            units.human(sums.outstanding),
            sums.outstanding.to_string(),
        ]
    });
    csv_text(TOTALS_CSV_COLUMNS, rows)
}

/// One group's sums as JSON: `expected`, `matched`, `outstanding`, each with its `_atomic`.
fn sums_value(v: ReconSums, units: &TokenUnits) -> Value {
    let mut o = Map::new();
    units.put(&mut o, "expected", Some(v.expected));
    units.put(&mut o, "matched", Some(v.matched));
    units.put(&mut o, "outstanding", Some(v.outstanding));
    Value::Object(o)
}

fn sums_json<K: ToString>(map: impl IntoIterator<Item = (K, ReconSums)>, units: &TokenUnits) -> Value {
    map.into_iter().map(|(k, v)| (k.to_string(), sums_value(v, units))).collect::<Map<_, _>>().into()
}

/// The breakdown as JSON: per UTC day, UTC month, provider, route and payer (the totals CSV's
/// rows), with the symbol.
pub fn render_totals_json(b: &ReconBreakdown, units: &TokenUnits) -> Value {
    json!({
        "symbol": units.symbol,
        "decimals": units.decimals,
        "by_day": sums_json(b.by_day.iter().map(|(k, v)| (k, *v)), units),
        "by_month": sums_json(b.by_month.iter().map(|(k, v)| (k, *v)), units),
        "by_provider": sums_json(b.by_provider.iter().map(|(k, v)| (k, *v)), units),
        "by_route": sums_json(b.by_route.iter().map(|(k, v)| (k, *v)), units),
        "by_payer": sums_json(b.by_payer.iter().map(|(k, v)| (format!("{k:#x}"), *v)), units),
    })
}

/// The run as JSON: scope, cursor, counts, totals and tie-out (token units, each with its
/// `_atomic` integer), and items with the fields named as the CSV columns.
pub fn render_json(outcome: &ReconcileOutcome, units: &TokenUnits) -> Value {
    let r = &outcome.report;
    let t = &r.totals;
    let tie = r.tie_out(&outcome.scope.pay_to);
    let amounts = |map: &mut Map<String, Value>, entries: Vec<(String, U256)>| {
        for (k, v) in entries {
            units.put(map, &k, Some(v));
        }
    };
    let by = |map: &BTreeMap<String, U256>| {
        let mut o = Map::new();
        amounts(&mut o, map.iter().map(|(k, v)| (k.clone(), *v)).collect());
        Value::Object(o)
    };
    let mut totals = Map::new();
    amounts(
        &mut totals,
        vec![
            ("chain".to_owned(), t.chain_total),
            ("ledger".to_owned(), t.ledger_total),
            ("matched".to_owned(), t.matched_total),
        ],
    );
    totals.insert("matched_by_provider".to_owned(), by(&t.matched_by_provider));
    totals.insert("matched_by_route".to_owned(), by(&t.matched_by_route));
    let by_payer: BTreeMap<String, U256> = t.matched_by_payer.iter().map(|(a, v)| (format!("{a:#x}"), *v)).collect();
    totals.insert("matched_by_payer".to_owned(), by(&by_payer));
    if let Value::Object(periods) = render_totals_json(&outcome.breakdown, units) {
        totals.extend(periods.into_iter().filter(|(k, _)| k.starts_with("by_")));
    }
    let mut tie_out = Map::new();
    amounts(
        &mut tie_out,
        vec![
            ("chain_total".to_owned(), tie.chain_total),
            ("matched_total".to_owned(), tie.matched_total),
            ("explained_by_exceptions".to_owned(), tie.explained_chain),
        ],
    );
    tie_out.insert("holds".to_owned(), Value::Bool(tie.holds));
    json!({
        "run_id": outcome.run_id,
        "chain_id": outcome.scope.chain_id,
        "asset": format!("{:#x}", outcome.scope.asset),
        "symbol": units.symbol,
        "decimals": units.decimals,
        "pay_to": outcome.scope.pay_to.iter().map(|a| format!("{a:#x}")).collect::<Vec<_>>(),
        "from_block": outcome.scope.from_block,
        "to_block": outcome.scope.to_block,
        "cursor_block": outcome.cursor_block,
        "current_block": outcome.current_block,
        "reopened": outcome.reopened.iter().map(|id| id.to_string()).collect::<Vec<_>>(),
        "counts": t.counts.iter().map(|(c, n)| (c.as_str().to_owned(), json!(n))).collect::<Map<_, _>>(),
        "totals": totals,
        "tie_out": tie_out,
        "items": r.items.iter().map(|i| {
            CSV_COLUMNS.iter().zip(item_fields(i, units)).map(|(k, v)| {
                let v = if v.is_empty() { Value::Null } else { Value::String(v) };
                ((*k).to_owned(), v)
            }).collect::<Map<_, _>>()
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
        // Goal: the totals CSV has the documented header and one row per group key, days first, CRLF line ends, amounts in token units with the atomic integer beside them.
        let sums = ReconSums {
            expected: U256::from(5_000_000u64),
            matched: U256::from(3_000u64),
            outstanding: U256::from(4_997_000u64),
        };
        let mut b = ReconBreakdown::default();
        b.by_day.insert("2026-01-01".to_owned(), sums);
        b.by_month.insert("2026-01".to_owned(), sums);
        b.by_route.insert("weather:/w,x".to_owned(), sums);
        b.by_payer.insert(Address::repeat_byte(0xab), sums);
        let csv = render_totals_csv(&b, &TokenUnits::default());
        let expected = format!(
            "group,key,symbol,expected,expected_atomic,matched,matched_atomic,outstanding,outstanding_atomic\r\n\
             day,2026-01-01,USDC,{s}\r\nmonth,2026-01,USDC,{s}\r\nroute,\"weather:/w,x\",USDC,{s}\r\npayer,{:#x},USDC,{s}\r\n",
            Address::repeat_byte(0xab),
            s = "5,5000000,0.003,3000,4.997,4997000",
        );
        assert_eq!(csv, expected);
    }
}
