//! The pure matcher: on-chain transfers against the ledger's entries, to the atomic unit,
//! with the totals that must tie out and the breakdown per UTC day, UTC month, provider,
//! route and payer.
//!
//! Owns: the input shape of on-chain transfers ([`ChainTransfer`], produced by `logs`), the
//! join by (payer, nonce) cross-checked by transaction, amount, payee and block hash, the
//! totals, the tie-out and the breakdown.
//!
//! Must not: do IO, read a chain (the caller reads logs and block hashes and passes them in),
//! reach the database or know HTTP. Amounts are never floats.

use std::collections::{BTreeMap, HashMap};

use alloy_primitives::{Address, B256, U256};
use serde::Serialize;
use tollgate_metering::{Entry, EntryState, NewReconRun, ReconClass, ReconItem, ReconScope};

/// One `Transfer` log of the asset, joined with the `AuthorizationUsed` log of the same
/// transaction when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTransfer {
    /// The transaction.
    pub tx_hash: B256,
    /// The `Transfer` log's index in its block.
    pub log_index: u64,
    /// Its block.
    pub block_number: u64,
    /// Its block's hash.
    pub block_hash: B256,
    /// `Transfer.from`.
    pub from: Address,
    /// `Transfer.to`.
    pub to: Address,
    /// `Transfer.value`.
    pub value: U256,
    /// The nonce of the `AuthorizationUsed` log (same transaction, authorizer = `from`), if any.
    pub authorization_nonce: Option<B256>,
}

/// Sums of one report; amounts in atomic units.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconTotals {
    /// Items per class (every class present, zero included).
    pub counts: BTreeMap<ReconClass, u64>,
    /// Sum of every on-chain transfer to a payee of ours in the report.
    pub chain_total: U256,
    /// Sum of every ledger entry in the report.
    pub ledger_total: U256,
    /// Sum of matched items (ledger and chain agree).
    pub matched_total: U256,
    /// Matched sums per provider.
    pub matched_by_provider: BTreeMap<String, U256>,
    /// Matched sums per route (the ledger's route name, `provider:pattern`).
    pub matched_by_route: BTreeMap<String, U256>,
    /// Matched sums per payer wallet.
    pub matched_by_payer: BTreeMap<Address, U256>,
}

/// The classified items and their totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReconReport {
    /// Every item, in a stable order (class, block, log index, entry).
    pub items: Vec<ReconItem>,
    /// The totals.
    pub totals: ReconTotals,
}

/// The tie-out: the matched ledger sum equals the on-chain sum to our payees, or the difference
/// is exactly the sum of the exceptions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TieOut {
    /// Sum of on-chain transfers to our payees.
    pub chain_total: U256,
    /// Sum of matched items.
    pub matched_total: U256,
    /// On-chain amounts (to our payees) of the exceptions.
    pub explained_chain: U256,
    /// Whether `matched_total + explained_chain == chain_total`.
    pub holds: bool,
}

/// Whether an entry says money moved on chain.
fn claims_settlement(state: EntryState) -> bool {
    matches!(state, EntryState::Settling | EntryState::Settled | EntryState::RefundOwed)
}

fn confirmed(block_number: u64, current_block: u64, confirmations_min: u64) -> bool {
    block_number <= current_block && current_block - block_number + 1 >= confirmations_min
}

/// Classifies `entries` against `transfers`.
///
/// `entries` are the ledger's entries in scope (any state: an entry that says no money moved
/// but whose authorization is on chain is reported as `onchain_missing_in_ledger`; entries of
/// other states without a transfer are not reported). `transfers` are the asset's transfers to
/// our payees in the range, plus any transfer of an entry's recorded transaction.
/// `block_hash_at(n)` is the chain's current hash of block `n` (`None` if unknown or absent).
pub fn reconcile(
    scope: &ReconScope,
    entries: &[Entry],
    transfers: &[ChainTransfer],
    current_block: u64,
    confirmations_min: u64,
    block_hash_at: &dyn Fn(u64) -> Option<B256>,
) -> ReconReport {
    let mut by_authorization: HashMap<(Address, B256), usize> = HashMap::new();
    for (i, t) in transfers.iter().enumerate() {
        if let Some(nonce) = t.authorization_nonce {
            // An authorization is used at most once, so a key appears at most once on one chain.
            by_authorization.entry((t.from, nonce)).or_insert(i);
        }
    }
    let mut used = vec![false; transfers.len()];
    let mut items = Vec::new();
    let item = |class, e: Option<&Entry>, t: Option<&ChainTransfer>| {
        let pay_to = e.map(|e| e.pay_to).or(t.map(|t| t.to)).unwrap_or_default();
        ReconItem {
            class,
            chain_id: scope.chain_id,
            asset: scope.asset,
            payer: e.map(|e| e.payer).or(t.map(|t| t.from)).unwrap_or_default(),
            pay_to,
            chain_to: t.map(|t| t.to).filter(|to| *to != pay_to),
            nonce: e.map(|e| e.nonce).or(t.and_then(|t| t.authorization_nonce)),
            amount_ledger: e.map(|e| e.amount.get()),
            amount_chain: t.map(|t| t.value),
            tx_hash: t.map(|t| t.tx_hash).or(e.and_then(|e| e.tx_hash)),
            block_number: t.map(|t| t.block_number).or(e.and_then(|e| e.block_number)),
            log_index: t.map(|t| t.log_index).or(e.and_then(|e| e.log_index)),
            entry_id: e.map(|e| e.id.clone()),
            provider: e.map(|e| e.provider.clone()),
            route: e.map(|e| e.route.clone()),
            ledger_state: e.map(|e| e.state),
            block_time_unix_s: None,
        }
    };

    for e in entries {
        let found = by_authorization.get(&(e.payer, e.nonce)).copied();
        let t = found.and_then(|i| transfers.get(i));
        if let Some(i) = found
            && let Some(slot) = used.get_mut(i)
        {
            *slot = true;
        }
        let class = match t {
            Some(t) if !claims_settlement(e.state) => {
                // The chain moved money the ledger says did not move (voided, failed, or
                // never forwarded): someone else settled it.
                if confirmed(t.block_number, current_block, confirmations_min) {
                    ReconClass::OnchainMissingInLedger
                } else {
                    ReconClass::Unconfirmed
                }
            }
            Some(t) => {
                let recorded_elsewhere = e.block_hash.is_some_and(|h| h != t.block_hash);
                if !confirmed(t.block_number, current_block, confirmations_min) {
                    ReconClass::Unconfirmed
                } else if recorded_elsewhere {
                    // Re-included in another block than the one recorded: the recorded one is gone.
                    ReconClass::Reorged
                } else if t.to != e.pay_to {
                    ReconClass::PayeeMismatch
                } else if t.value != U256::from(e.amount.get()) {
                    ReconClass::AmountMismatch
                } else {
                    ReconClass::Matched
                }
            }
            None if !claims_settlement(e.state) => continue,
            None => match (e.block_number, e.block_hash) {
                (Some(n), Some(h)) if block_hash_at(n).is_some_and(|now| now != h) => ReconClass::Reorged,
                (Some(n), _) if !confirmed(n, current_block, confirmations_min) => ReconClass::Unconfirmed,
                (Some(_), _) => ReconClass::LedgerSettledMissingOnchain,
                // Settling: the receipt is not recorded yet.
                (None, _) => ReconClass::Unconfirmed,
            },
        };
        items.push(item(class, Some(e), t));
    }
    for (t, _) in transfers.iter().zip(&used).filter(|(_, used)| !**used) {
        if !scope.pay_to.contains(&t.to) {
            continue;
        }
        let class = if confirmed(t.block_number, current_block, confirmations_min) {
            ReconClass::OnchainMissingInLedger
        } else {
            ReconClass::Unconfirmed
        };
        items.push(item(class, None, Some(t)));
    }
    items.sort_by(|a, b| {
        (a.class, a.block_number, a.log_index, &a.entry_id).cmp(&(b.class, b.block_number, b.log_index, &b.entry_id))
    });
    let totals = totals_of(scope, transfers, &items);
    ReconReport { items, totals }
}

fn totals_of(scope: &ReconScope, transfers: &[ChainTransfer], items: &[ReconItem]) -> ReconTotals {
    let mut totals =
        ReconTotals { counts: ReconClass::ALL.into_iter().map(|c| (c, 0)).collect(), ..Default::default() };
    totals.chain_total = transfers.iter().filter(|t| scope.pay_to.contains(&t.to)).map(|t| t.value).sum();
    totals.ledger_total = items.iter().filter_map(|i| i.amount_ledger).map(U256::from).sum();
    for i in items {
        *totals.counts.entry(i.class).or_insert(0) += 1;
        if i.class == ReconClass::Matched {
            let amount = i.amount_chain.unwrap_or_default();
            totals.matched_total += amount;
            *totals.matched_by_provider.entry(i.provider.clone().unwrap_or_default()).or_default() += amount;
            *totals.matched_by_route.entry(i.route.clone().unwrap_or_default()).or_default() += amount;
            *totals.matched_by_payer.entry(i.payer).or_default() += amount;
        }
    }
    totals
}

impl ReconReport {
    /// The tie-out of this report: every on-chain transfer to our payees is either matched or
    /// an exception, counted once.
    pub fn tie_out(&self, pay_to: &[Address]) -> TieOut {
        let explained_chain: U256 = self
            .items
            .iter()
            .filter(|i| i.class != ReconClass::Matched)
            .filter(|i| pay_to.contains(&i.chain_to.unwrap_or(i.pay_to)))
            .filter_map(|i| i.amount_chain)
            .sum();
        let matched_total = self.totals.matched_total;
        let chain_total = self.totals.chain_total;
        TieOut {
            chain_total,
            matched_total,
            explained_chain,
            holds: matched_total.checked_add(explained_chain) == Some(chain_total),
        }
    }

    /// The items that are not `matched`.
    pub fn exceptions(&self) -> impl Iterator<Item = &ReconItem> {
        self.items.iter().filter(|i| i.class != ReconClass::Matched)
    }

    /// The run to record for this report (the store keeps its counts, totals, tie-out and
    /// exceptions).
    pub fn new_run<'a>(
        &'a self,
        scope: &'a ReconScope,
        cursor_block: Option<u64>,
        started_unix_s: u64,
        finished_unix_s: u64,
    ) -> NewReconRun<'a> {
        NewReconRun {
            scope,
            cursor_block,
            started_unix_s,
            finished_unix_s,
            counts: &self.totals.counts,
            chain_total: self.totals.chain_total,
            ledger_total: self.totals.ledger_total,
            matched_total: self.totals.matched_total,
            tie_out_holds: self.tie_out(&scope.pay_to).holds,
            exceptions: self.exceptions().collect(),
        }
    }
}

/// Sums of one group of a report, in atomic units. `expected = matched + outstanding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReconSums {
    /// Ledger amounts of the items whose entry says money moved (`settling`, `settled`,
    /// `refund_owed`): what the ledger expects to find on chain.
    pub expected: U256,
    /// The part of `expected` that is matched on chain.
    pub matched: U256,
    /// The part of `expected` that is not (yet) matched: unconfirmed, missing on chain,
    /// mismatched or reorged.
    pub outstanding: U256,
}

/// A report's sums grouped by UTC period and by who. Amounts on chain that no entry expects
/// (`onchain_missing_in_ledger`) are exceptions of the report, not part of these sums.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReconBreakdown {
    /// Per UTC day (`YYYY-MM-DD`, or [`PERIOD_UNKNOWN`]).
    pub by_day: BTreeMap<String, ReconSums>,
    /// Per UTC month (`YYYY-MM`, or [`PERIOD_UNKNOWN`]).
    pub by_month: BTreeMap<String, ReconSums>,
    /// Per provider.
    pub by_provider: BTreeMap<String, ReconSums>,
    /// Per route (`provider:pattern`).
    pub by_route: BTreeMap<String, ReconSums>,
    /// Per payer wallet.
    pub by_payer: BTreeMap<Address, ReconSums>,
}

/// The period of an item whose time is not known.
pub const PERIOD_UNKNOWN: &str = "unknown";

/// Groups the expected items of a report (those whose entry says money moved) by UTC day,
/// UTC month, provider, route and payer. `time_of` gives an item's time (unix seconds); the
/// caller chooses it (the gateway uses the block's timestamp, else the entry's creation).
pub fn breakdown(items: &[ReconItem], time_of: &dyn Fn(&ReconItem) -> Option<u64>) -> ReconBreakdown {
    let mut out = ReconBreakdown::default();
    for i in items {
        if !i.ledger_state.is_some_and(claims_settlement) {
            continue;
        }
        let amount = U256::from(i.amount_ledger.unwrap_or(0));
        let matched = i.class == ReconClass::Matched;
        let add = |sums: &mut ReconSums| {
            sums.expected += amount;
            if matched {
                sums.matched += amount;
            } else {
                sums.outstanding += amount;
            }
        };
        let time = time_of(i);
        add(out.by_day.entry(time.map_or_else(|| PERIOD_UNKNOWN.to_owned(), utc_day)).or_default());
        add(out.by_month.entry(time.map_or_else(|| PERIOD_UNKNOWN.to_owned(), utc_month)).or_default());
        add(out.by_provider.entry(i.provider.clone().unwrap_or_default()).or_default());
        add(out.by_route.entry(i.route.clone().unwrap_or_default()).or_default());
        add(out.by_payer.entry(i.payer).or_default());
    }
    out
}

/// The UTC calendar date of `unix_s` (`None` past year 9999, which no block reaches).
fn utc_date(unix_s: u64) -> Option<time::Date> {
    let s = i64::try_from(unix_s).ok()?;
    time::OffsetDateTime::from_unix_timestamp(s).ok().map(|t| t.date())
}

/// The UTC day of `unix_s` as `YYYY-MM-DD` ([`PERIOD_UNKNOWN`] past year 9999).
pub fn utc_day(unix_s: u64) -> String {
    utc_date(unix_s).map_or_else(
        || PERIOD_UNKNOWN.to_owned(),
        |d| format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
    )
}

/// The UTC month of `unix_s` as `YYYY-MM` ([`PERIOD_UNKNOWN`] past year 9999).
pub fn utc_month(unix_s: u64) -> String {
    utc_date(unix_s)
        .map_or_else(|| PERIOD_UNKNOWN.to_owned(), |d| format!("{:04}-{:02}", d.year(), u8::from(d.month())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_metering::{AtomicAmount, SettlementMode};

    const PAY_TO: Address = Address::repeat_byte(0xB2);
    const PAYER: Address = Address::repeat_byte(0xA1);
    const ASSET: Address = Address::repeat_byte(0x83);

    fn scope() -> ReconScope {
        ReconScope { chain_id: 8453, asset: ASSET, pay_to: vec![PAY_TO], from_block: 0, to_block: 100 }
    }

    fn h(n: u8) -> B256 {
        B256::repeat_byte(n)
    }

    /// Block `n`'s hash on the canonical chain of these tests.
    fn block_hash(n: u64) -> B256 {
        B256::from(U256::from(0xb10c_0000_u64 + n))
    }

    fn entry(n: u8, state: EntryState, amount: u64, block: Option<u64>) -> Entry {
        Entry {
            id: format!("{:032x}", n).parse().unwrap(),
            chain_id: 8453,
            asset: ASSET,
            payer: PAYER,
            pay_to: PAY_TO,
            nonce: h(n),
            amount: AtomicAmount::new(amount).unwrap(),
            valid_before_unix_s: 10,
            provider: "weather".to_owned(),
            route: "weather:/w".to_owned(),
            method: "GET".to_owned(),
            path: "/w".to_owned(),
            mode: SettlementMode::After,
            state,
            tx_hash: Some(h(0x70 + n)),
            block_number: block,
            block_hash: block.map(block_hash),
            log_index: block.map(|_| 1),
            upstream_status: Some(200),
            reason: None,
            payment: "{}".to_owned(),
            price_version: None,
            credential: None,
            credential_version: None,
            created_unix_s: 1,
            updated_unix_s: 1,
        }
    }

    fn transfer(n: u8, to: Address, value: u64, block: u64, nonce: Option<B256>) -> ChainTransfer {
        ChainTransfer {
            tx_hash: h(0x70 + n),
            log_index: 1,
            block_number: block,
            block_hash: block_hash(block),
            from: PAYER,
            to,
            value: U256::from(value),
            authorization_nonce: nonce,
        }
    }

    fn run(entries: &[Entry], transfers: &[ChainTransfer]) -> ReconReport {
        reconcile(&scope(), entries, transfers, 100, 5, &|n| Some(block_hash(n)))
    }

    fn classes(r: &ReconReport) -> Vec<ReconClass> {
        r.items.iter().map(|i| i.class).collect()
    }

    #[test]
    fn matched_and_tie_out() {
        // Goal: a settled entry and its transfer match; the tie-out holds with no exception.
        let r = run(&[entry(1, EntryState::Settled, 1_000, Some(10))], &[transfer(1, PAY_TO, 1_000, 10, Some(h(1)))]);
        assert_eq!(classes(&r), [ReconClass::Matched]);
        assert_eq!(r.totals.matched_total, U256::from(1_000));
        assert_eq!(r.totals.matched_by_payer[&PAYER], U256::from(1_000));
        assert_eq!(r.totals.counts[&ReconClass::Matched], 1);
        let tie = r.tie_out(&[PAY_TO]);
        assert!(tie.holds && tie.explained_chain.is_zero(), "{tie:?}");
    }

    #[test]
    fn ledger_settled_missing_onchain() {
        // Goal: a confirmed settled entry without its transfer is reported; nothing on chain to tie out.
        let r = run(&[entry(1, EntryState::Settled, 1_000, Some(10))], &[]);
        assert_eq!(classes(&r), [ReconClass::LedgerSettledMissingOnchain]);
        assert!(r.tie_out(&[PAY_TO]).holds);
    }

    #[test]
    fn onchain_missing_in_ledger() {
        // Goal: an authorization nobody recorded, a plain transfer, and an authorization the ledger voided are all onchain_missing_in_ledger and explain the whole chain total.
        let voided = entry(3, EntryState::Voided, 1_000, None);
        let r = run(
            std::slice::from_ref(&voided),
            &[
                transfer(1, PAY_TO, 7, 10, Some(h(1))),
                transfer(2, PAY_TO, 9, 11, None),
                transfer(3, PAY_TO, 1_000, 12, Some(h(3))),
            ],
        );
        assert_eq!(classes(&r), [ReconClass::OnchainMissingInLedger; 3]);
        assert_eq!(r.items.iter().filter(|i| i.entry_id.as_ref() == Some(&voided.id)).count(), 1);
        let tie = r.tie_out(&[PAY_TO]);
        assert!(tie.holds && tie.matched_total.is_zero() && tie.explained_chain == U256::from(1_016), "{tie:?}");
    }

    #[test]
    fn amount_and_payee_mismatch() {
        // Goal: the same authorization with another amount or another payee is flagged, with both sides' values.
        let other = Address::repeat_byte(0xEE);
        let r = run(
            &[entry(1, EntryState::Settled, 1_000, Some(10)), entry(2, EntryState::Settled, 1_000, Some(10))],
            &[transfer(1, PAY_TO, 999, 10, Some(h(1))), transfer(2, other, 1_000, 10, Some(h(2)))],
        );
        assert_eq!(classes(&r), [ReconClass::AmountMismatch, ReconClass::PayeeMismatch]);
        assert_eq!(r.items[0].amount_chain, Some(U256::from(999)));
        assert_eq!(r.items[0].amount_ledger, Some(1_000));
        assert_eq!(r.items[1].chain_to, Some(other));
        // The mismatched transfer to us is explained; the one to `other` is not ours to tie out.
        let tie = r.tie_out(&[PAY_TO]);
        assert!(tie.holds && tie.chain_total == U256::from(999), "{tie:?}");
    }

    #[test]
    fn unconfirmed() {
        // Goal: transfers and settlements with fewer confirmations than required, and settling entries without a receipt, are unconfirmed.
        let r = run(
            &[entry(1, EntryState::Settled, 1_000, Some(97)), entry(2, EntryState::Settling, 5, None)],
            &[transfer(1, PAY_TO, 1_000, 97, Some(h(1))), transfer(3, PAY_TO, 4, 99, None)],
        );
        assert_eq!(classes(&r), [ReconClass::Unconfirmed; 3]);
        // 96 has exactly 5 confirmations at block 100.
        let r = run(&[entry(1, EntryState::Settled, 1_000, Some(96))], &[transfer(1, PAY_TO, 1_000, 96, Some(h(1)))]);
        assert_eq!(classes(&r), [ReconClass::Matched]);
    }

    #[test]
    fn reorged() {
        // Goal: a recorded block hash that is no longer canonical is reorged, whether the transfer vanished or was re-included elsewhere.
        let mut gone = entry(1, EntryState::Settled, 1_000, Some(10));
        gone.block_hash = Some(h(0xdd));
        let mut moved = entry(2, EntryState::Settled, 1_000, Some(10));
        moved.block_hash = Some(h(0xde));
        let r = run(&[gone, moved], &[transfer(2, PAY_TO, 1_000, 12, Some(h(2)))]);
        assert_eq!(classes(&r), [ReconClass::Reorged; 2]);
        assert!(r.tie_out(&[PAY_TO]).holds);
    }

    #[test]
    fn breakdown_by_period_and_who() {
        // Goal: expected = matched + outstanding per UTC day, month, provider, route and payer; chain-only items and entries that say no money moved are not expected; an item without a time is in the unknown period.
        let stranger = transfer(9, PAY_TO, 5, 30, None);
        let r = run(
            &[
                entry(1, EntryState::Settled, 1_000, Some(10)),
                entry(2, EntryState::Settled, 300, Some(20)),
                entry(3, EntryState::Settling, 40, None),
                entry(4, EntryState::Voided, 7, None),
            ],
            &[transfer(1, PAY_TO, 1_000, 10, Some(h(1))), transfer(4, PAY_TO, 7, 12, Some(h(4))), stranger],
        );
        // Block 10 on 2024-02-29 (leap day) 23:59:59, block 20 on 2024-03-01 00:00:00.
        let time_of = |i: &ReconItem| match i.block_number {
            Some(10) => Some(1_709_251_199),
            Some(20) => Some(1_709_251_200),
            _ => None,
        };
        let b = breakdown(&r.items, &time_of);
        let sums = |e: u64, m: u64, o: u64| ReconSums {
            expected: U256::from(e),
            matched: U256::from(m),
            outstanding: U256::from(o),
        };
        assert_eq!(b.by_day["2024-02-29"], sums(1_000, 1_000, 0));
        assert_eq!(b.by_day["2024-03-01"], sums(300, 0, 300));
        assert_eq!(b.by_day[PERIOD_UNKNOWN], sums(40, 0, 40));
        assert_eq!(b.by_day.len(), 3);
        assert_eq!(b.by_month["2024-02"], sums(1_000, 1_000, 0));
        assert_eq!(b.by_month["2024-03"], sums(300, 0, 300));
        assert_eq!(b.by_provider["weather"], sums(1_340, 1_000, 340));
        assert_eq!(b.by_route["weather:/w"], sums(1_340, 1_000, 340));
        assert_eq!(b.by_payer[&PAYER], sums(1_340, 1_000, 340));
    }

    #[test]
    fn utc_calendar() {
        // Goal: UTC days and months are labelled correctly across leap days, month and year ends.
        assert_eq!(utc_day(0), "1970-01-01");
        assert_eq!(utc_day(951_782_400), "2000-02-29");
        assert_eq!(utc_day(1_709_251_199), "2024-02-29");
        assert_eq!(utc_day(1_709_251_200), "2024-03-01");
        assert_eq!(utc_day(1_735_689_599), "2024-12-31");
        assert_eq!(utc_month(1_735_689_599), "2024-12");
        assert_eq!(utc_month(1_735_689_600), "2025-01");
        assert_eq!(utc_day(u64::MAX), PERIOD_UNKNOWN);
    }
}
