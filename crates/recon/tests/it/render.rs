//! The documented renderings (docs/reconciliation.md), byte for byte.

use alloy_primitives::{Address, B256, U256};
use tollgate_metering::{EntryState, ReconClass, ReconItem, TokenUnits};
use tollgate_recon::{CSV_COLUMNS, ReconReport, ReconTotals, render_csv};

/// One item with every column set, and one with only the chain's side; the route holds a
/// comma and a quote, so it is quoted.
fn report() -> ReconReport {
    let full = ReconItem {
        class: ReconClass::PayeeMismatch,
        chain_id: 8453,
        asset: Address::repeat_byte(0x83),
        payer: Address::repeat_byte(0xa1),
        pay_to: Address::repeat_byte(0xb2),
        chain_to: Some(Address::repeat_byte(0xee)),
        nonce: Some(B256::repeat_byte(0x01)),
        amount_ledger: Some(1_000),
        amount_chain: Some(U256::from(u128::MAX) * U256::from(3u8)),
        tx_hash: Some(B256::repeat_byte(0x70)),
        block_number: Some(12),
        log_index: Some(3),
        entry_id: Some(format!("{:032x}", 7).parse().unwrap()),
        provider: Some("weather".to_owned()),
        route: Some("weather:/w/{a,\"b\"}".to_owned()),
        ledger_state: Some(EntryState::Settled),
        block_time_unix_s: Some(1_767_225_612),
    };
    let stranger = ReconItem {
        class: ReconClass::OnchainMissingInLedger,
        chain_to: None,
        nonce: None,
        amount_ledger: None,
        amount_chain: Some(U256::from(7u64)),
        entry_id: None,
        provider: None,
        route: None,
        ledger_state: None,
        block_time_unix_s: None,
        ..full.clone()
    };
    ReconReport { items: vec![full, stranger], totals: ReconTotals::default() }
}

#[test]
fn items_csv_is_the_documented_bytes() {
    // Goal: the items CSV has the 19 documented columns in order, CRLF line ends, the block time in RFC 3339 UTC, lower-case 0x-hex, amounts in token units with the atomic integer beside them (beyond 64 bits, never hex), empty absent fields, and RFC 4180 quoting — byte for byte.
    let a = |b: u8| format!("{:#x}", Address::repeat_byte(b));
    let h = |b: u8| format!("{:#x}", B256::repeat_byte(b));
    let big = (U256::from(u128::MAX) * U256::from(3u8)).to_string();
    let (whole, frac) = big.split_at(big.len() - 6);
    let big_human = format!("{whole}.{}", frac.trim_end_matches('0'));
    let id = format!("{:032x}", 7);
    let expected = format!(
        "class,block_time,chain_id,asset,symbol,payer,pay_to,chain_to,nonce,amount_ledger,amount_ledger_atomic,\
         amount_chain,amount_chain_atomic,tx_hash,block_number,log_index,entry_id,provider,route\r\n\
         payee_mismatch,2026-01-01T00:00:12Z,8453,{asset},USDC,{payer},{pay_to},{other},{nonce},0.001,1000,\
         {big_human},{big},{tx},12,3,{id},weather,\"weather:/w/{{a,\"\"b\"\"}}\"\r\n\
         onchain_missing_in_ledger,,8453,{asset},USDC,{payer},{pay_to},,,,,0.000007,7,{tx},12,3,,,\r\n",
        asset = a(0x83),
        payer = a(0xa1),
        pay_to = a(0xb2),
        other = a(0xee),
        nonce = h(0x01),
        tx = h(0x70),
    );
    assert_eq!(render_csv(&report(), &TokenUnits::default()), expected);
    assert_eq!(CSV_COLUMNS.join(","), expected.split("\r\n").next().unwrap());
}
