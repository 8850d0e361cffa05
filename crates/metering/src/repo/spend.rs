//! `Spend`: totals over ledger entries. A payer's pending and settled spend (balances), a
//! provider's revenue by endpoint and state, and entries per state for the metrics exporter.
//!
//! Owns the split-sum SQL (`amount_sums!`), which keeps every partial sum in a signed 64-bit
//! integer on both engines.
//!
//! Must not: write, or import another repository.

use alloy_primitives::Address;
use serde::Serialize;

use crate::MeteringError;
use crate::db::codec::{Hex, Unsigned};
use crate::db::{Db, db_call};
use crate::repo::entry_row::{SumRow, amount_sums};
use crate::types::{EntryState, SpendQuery, SpendTotals, StateCounts};

const SELECT_PENDING_SPEND: &str = concat!(
    "SELECT COUNT(*) AS n, ",
    amount_sums!(),
    " FROM ledger_entries WHERE chain_id = $1 AND asset = $2 AND payer = $3 ",
    "AND state IN ('reserved', 'forwarded', 'settling')"
);

const SELECT_SPEND: &str = concat!(
    "SELECT state, COUNT(*) AS n, ",
    amount_sums!(),
    " FROM ledger_entries WHERE chain_id = $1 AND asset = $2 AND payer = $3 ",
    "AND ($4 IS NULL OR provider = $4) AND ($5 IS NULL OR route = $5) ",
    "AND ($6 IS NULL OR created_unix_s >= $6) AND ($7 IS NULL OR created_unix_s < $7) ",
    "AND state IN ('reserved', 'forwarded', 'settling', 'settled', 'refund_owed') GROUP BY state"
);

const SELECT_REVENUE: &str = concat!(
    "SELECT route, state, COUNT(*) AS n, ",
    amount_sums!(),
    " FROM ledger_entries WHERE provider = $1 AND created_unix_s >= $2 AND created_unix_s < $3 ",
    "GROUP BY route, state ORDER BY route, state"
);

/// One line of a provider's revenue report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevenueLine {
    /// Endpoint name.
    pub endpoint: String,
    /// Ledger state (`settled` is revenue; `reserved`..`settling` is pending; the rest is not).
    pub state: String,
    /// Entries.
    pub count: u64,
    /// Sum in atomic units (decimal string).
    pub amount: String,
}

/// One row of a grouped spend query.
#[derive(sqlx::FromRow)]
struct GroupRow {
    #[sqlx(default)]
    route: Option<String>,
    state: EntryState,
    #[sqlx(flatten)]
    sum: SumRow,
}

/// The spend repository. Cheap to clone; clones share the database handle.
#[derive(Debug, Clone)]
pub struct Spend {
    db: Db,
}

impl Spend {
    pub(crate) fn new(db: Db) -> Spend {
        Spend { db }
    }

    /// Sum of the amounts of this payer's entries on (chain, asset) in `reserved`, `forwarded`
    /// or `settling`: money that may still move.
    pub async fn pending(&self, chain_id: u64, asset: Address, payer: Address) -> Result<u128, MeteringError> {
        let chain_id = Unsigned::new("chain_id", chain_id)?;
        let row: SumRow = db_call!(
            self.db,
            "pending_spend",
            read | pool | {
                sqlx::query_as(SELECT_PENDING_SPEND).bind(chain_id).bind(Hex(asset)).bind(Hex(payer)).fetch_one(pool)
            }
        )?;
        Ok(row.tally().amount)
    }

    /// A payer's spend on (chain, asset): counts and amounts of settled, pending (reserved,
    /// forwarded, settling) and refund-owed entries, optionally only of one provider, one route
    /// and entries created in `[created_from_unix_s, created_before_unix_s)`.
    pub async fn totals(&self, q: &SpendQuery) -> Result<SpendTotals, MeteringError> {
        let chain_id = Unsigned::new("chain_id", q.chain_id)?;
        let from = Unsigned::opt("created_from_unix_s", q.created_from_unix_s)?;
        let before = Unsigned::opt("created_before_unix_s", q.created_before_unix_s)?;
        let rows: Vec<GroupRow> = db_call!(
            self.db,
            "spend",
            read | pool | {
                sqlx::query_as(SELECT_SPEND)
                    .bind(chain_id)
                    .bind(Hex(q.asset))
                    .bind(Hex(q.payer))
                    .bind(q.provider.as_deref())
                    .bind(q.route.as_deref())
                    .bind(from)
                    .bind(before)
                    .fetch_all(pool)
            }
        )?;
        let mut totals = SpendTotals::default();
        for row in rows {
            let tally = row.sum.tally();
            let bucket = match row.state {
                EntryState::Settled => &mut totals.settled,
                EntryState::RefundOwed => &mut totals.refund_owed,
                EntryState::Reserved | EntryState::Forwarded | EntryState::Settling => &mut totals.pending,
                EntryState::SettleFailed | EntryState::Voided => continue,
            };
            bucket.count += tally.count;
            bucket.amount += tally.amount;
        }
        Ok(totals)
    }

    /// A provider's revenue by endpoint and state, for entries reserved in `[from, to)`.
    pub async fn revenue(
        &self,
        provider: &str,
        from_unix_s: u64,
        to_unix_s: u64,
    ) -> Result<Vec<RevenueLine>, MeteringError> {
        let (from, to) = (Unsigned::new("from_unix_s", from_unix_s)?, Unsigned::new("to_unix_s", to_unix_s)?);
        let rows: Vec<GroupRow> = db_call!(
            self.db,
            "revenue",
            read | pool | { sqlx::query_as(SELECT_REVENUE).bind(provider).bind(from).bind(to).fetch_all(pool) }
        )?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let tally = row.sum.tally();
                RevenueLine {
                    endpoint: row.route.unwrap_or_default(),
                    state: row.state.as_str().to_owned(),
                    count: tally.count,
                    amount: tally.amount.to_string(),
                }
            })
            .collect())
    }

    /// Entries per state, and the creation time of the oldest deferred entry not yet settled
    /// (`forwarded` or `settling`), for the metrics exporter. One scan of the entries table:
    /// call it every few seconds at most.
    pub async fn state_counts(&self) -> Result<StateCounts, MeteringError> {
        const OP: &str = "state_counts";
        let rows: Vec<(String, i64)> = db_call!(
            self.db,
            OP,
            read | pool | {
                sqlx::query_as("SELECT state, COUNT(*) FROM ledger_entries GROUP BY state").fetch_all(pool)
            }
        )?;
        let oldest: Option<i64> = db_call!(
            self.db,
            OP,
            read | pool | {
                sqlx::query_scalar(
                    "SELECT MIN(created_unix_s) FROM ledger_entries \
                 WHERE mode = 'deferred' AND state IN ('forwarded', 'settling')",
                )
                .fetch_one(pool)
            }
        )?;
        let mut counts = StateCounts::default();
        for (state, n) in rows {
            if let Ok(state) = state.parse::<EntryState>() {
                counts.by_state.push((state, u64::try_from(n).unwrap_or(0)));
            }
        }
        counts.oldest_unsettled_deferred_unix_s = oldest.and_then(|t| u64::try_from(t).ok());
        Ok(counts)
    }
}
