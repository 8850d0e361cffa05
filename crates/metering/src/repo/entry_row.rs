//! How a `ledger_entries` row is read: its column list, the row type the drivers decode
//! (typed through `db::codec`) and the split amount sums. Shared by the repositories that
//! read entries (`entries`, `spend`, `recon`).
//!
//! Must not: run a statement.

use alloy_primitives::{Address, B256};

use crate::MeteringError;
use crate::db::codec::{Hex, Unsigned};
use crate::types::{AtomicAmount, Entry, EntryId, EntryState, SettlementMode, Tally};

/// The column list of `ledger_entries`, in [`EntryRow`]'s order.
macro_rules! entry_columns {
    () => {
        "id, chain_id, asset, payer, pay_to, nonce, amount, valid_before_unix_s, provider, route, method, path, \
         mode, state, tx_hash, block_number, block_hash, log_index, upstream_status, reason, payment, \
         price_version, credential, credential_version, created_unix_s, updated_unix_s"
    };
}
pub(crate) use entry_columns;

/// Sums split into high and low 32-bit halves: each partial sum fits a signed 64-bit integer for
/// billions of rows, where SQLite's SUM would fail on overflow and PostgreSQL's returns NUMERIC.
macro_rules! amount_sums {
    () => {
        "CAST(COALESCE(SUM(amount / 4294967296), 0) AS BIGINT) AS hi, \
         CAST(COALESCE(SUM(amount % 4294967296), 0) AS BIGINT) AS lo"
    };
}
pub(crate) use amount_sums;

/// A `ledger_entries` row as the drivers decode it.
#[derive(sqlx::FromRow)]
pub(crate) struct EntryRow {
    id: EntryId,
    chain_id: Unsigned,
    asset: Hex<Address>,
    payer: Hex<Address>,
    pay_to: Hex<Address>,
    nonce: Hex<B256>,
    amount: AtomicAmount,
    valid_before_unix_s: Unsigned,
    provider: String,
    route: String,
    method: String,
    path: String,
    mode: SettlementMode,
    state: EntryState,
    tx_hash: Option<Hex<B256>>,
    block_number: Option<Unsigned>,
    block_hash: Option<Hex<B256>>,
    log_index: Option<Unsigned>,
    upstream_status: Option<Unsigned>,
    reason: Option<String>,
    payment: String,
    price_version: Option<Unsigned>,
    credential: Option<String>,
    credential_version: Option<Unsigned>,
    created_unix_s: Unsigned,
    updated_unix_s: Unsigned,
}

impl EntryRow {
    pub(crate) fn into_entry(self) -> Result<Entry, MeteringError> {
        let upstream_status = self
            .upstream_status
            .map(|v| {
                u16::try_from(v.get()).map_err(|_| MeteringError::corrupt("upstream_status", "not an HTTP status"))
            })
            .transpose()?;
        Ok(Entry {
            id: self.id,
            chain_id: self.chain_id.get(),
            asset: self.asset.0,
            payer: self.payer.0,
            pay_to: self.pay_to.0,
            nonce: self.nonce.0,
            amount: self.amount,
            valid_before_unix_s: self.valid_before_unix_s.get(),
            provider: self.provider,
            route: self.route,
            method: self.method,
            path: self.path,
            mode: self.mode,
            state: self.state,
            tx_hash: self.tx_hash.map(|h| h.0),
            block_number: self.block_number.map(Unsigned::get),
            block_hash: self.block_hash.map(|h| h.0),
            log_index: self.log_index.map(Unsigned::get),
            upstream_status,
            reason: self.reason,
            payment: self.payment,
            price_version: self.price_version.map(Unsigned::get),
            credential: self.credential,
            credential_version: self.credential_version.map(Unsigned::get),
            created_unix_s: self.created_unix_s.get(),
            updated_unix_s: self.updated_unix_s.get(),
        })
    }
}

/// Decodes rows into entries.
pub(crate) fn entries(rows: Vec<EntryRow>) -> Result<Vec<Entry>, MeteringError> {
    rows.into_iter().map(EntryRow::into_entry).collect()
}

/// One `SELECT COUNT(*) AS n, hi, lo` row of a spend query ([`amount_sums!`]).
#[derive(sqlx::FromRow)]
pub(crate) struct SumRow {
    pub(crate) n: Unsigned,
    pub(crate) hi: Unsigned,
    pub(crate) lo: Unsigned,
}

impl SumRow {
    pub(crate) fn tally(&self) -> Tally {
        Tally { count: self.n.get(), amount: (u128::from(self.hi.get()) << 32) + u128::from(self.lo.get()) }
    }
}
