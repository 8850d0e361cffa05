//! `ReconStore`: the reconciliation's storage. The entries to check against the chain (those
//! that say money moved), and the record of runs: their counts and totals, their exceptions
//! (items not matched), resolution notes on exceptions, and the cursor to resume from.
//!
//! The matching itself is pure and lives elsewhere (`crate::reconcile` for now); this stores
//! its inputs and outputs. Runs and exceptions are written in one transaction; notes are
//! append-only (the schema refuses edits and deletes).
//!
//! Must not: reach a chain, decide a match, or import another repository.

use alloy_primitives::{Address, B256, U256};

use crate::MeteringError;
use crate::checks::check_len;
use crate::db::codec::{Hex, Unsigned};
use crate::db::{Db, db_call};
use crate::reconcile::{NewReconRun, ReconClass, ReconException, ReconItem, ReconNote, ReconRun};
use crate::repo::entry_row::{entries, entry_columns};
use crate::types::{Entry, EntryId, LABEL_BYTES_MAX, REASON_BYTES_MAX};

const SELECT_SETTLED: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE chain_id = $1 AND asset = $2 AND pay_to = $3 AND (state = 'settling' ",
    "OR (state IN ('settled', 'refund_owed') AND ($4 IS NULL OR block_number >= $4) ",
    "AND ($5 IS NULL OR block_number <= $5))) ",
    // COALESCE: the engines sort NULLs differently, and the order must be the same on both.
    "ORDER BY COALESCE(block_number, -1), COALESCE(log_index, -1), id LIMIT $6"
);

const INSERT_RUN: &str = "INSERT INTO recon_runs (chain_id, asset, from_block, to_block, cursor_block, \
     started_unix_s, finished_unix_s, n_matched, n_ledger_settled_missing_onchain, n_onchain_missing_in_ledger, \
     n_amount_mismatch, n_payee_mismatch, n_unconfirmed, n_reorged, chain_total, ledger_total, matched_total, \
     tie_out_holds) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) \
     RETURNING id";

const SELECT_RUNS: &str = "SELECT id, chain_id, asset, from_block, to_block, cursor_block, started_unix_s, \
     finished_unix_s, n_matched, n_ledger_settled_missing_onchain, n_onchain_missing_in_ledger, n_amount_mismatch, \
     n_payee_mismatch, n_unconfirmed, n_reorged, chain_total, ledger_total, matched_total, tie_out_holds \
     FROM recon_runs WHERE chain_id = $1 AND asset = $2 ORDER BY id LIMIT $3";

const SELECT_CURSOR: &str = "SELECT MAX(cursor_block) FROM recon_runs WHERE chain_id = $1 AND asset = $2";

const INSERT_EXCEPTION: &str = "INSERT INTO recon_exceptions (run_id, class, payer, pay_to, chain_to, nonce, \
     tx_hash, block_number, log_index, entry_id, amount_ledger, amount_chain) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const SELECT_EXCEPTIONS: &str = "SELECT e.id, e.run_id, r.chain_id, e.class, e.payer, e.pay_to, e.chain_to, e.nonce, \
     e.tx_hash, e.block_number, e.log_index, e.entry_id, e.amount_ledger, e.amount_chain \
     FROM recon_exceptions e JOIN recon_runs r ON r.id = e.run_id WHERE e.run_id = $1 ORDER BY e.id";

const INSERT_NOTE: &str =
    "INSERT INTO recon_notes (exception_id, who, why, at_unix_s) VALUES ($1, $2, $3, $4) RETURNING id";

const SELECT_NOTES: &str =
    "SELECT id, exception_id, who, why, at_unix_s FROM recon_notes WHERE exception_id = $1 ORDER BY id";

/// A `recon_runs` row as the drivers decode it.
#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    chain_id: Unsigned,
    asset: Hex<Address>,
    from_block: Unsigned,
    to_block: Unsigned,
    cursor_block: Option<Unsigned>,
    started_unix_s: Unsigned,
    finished_unix_s: Unsigned,
    n_matched: Unsigned,
    n_ledger_settled_missing_onchain: Unsigned,
    n_onchain_missing_in_ledger: Unsigned,
    n_amount_mismatch: Unsigned,
    n_payee_mismatch: Unsigned,
    n_unconfirmed: Unsigned,
    n_reorged: Unsigned,
    chain_total: String,
    ledger_total: String,
    matched_total: String,
    tie_out_holds: i64,
}

/// A `recon_exceptions` row as the drivers decode it: its ids and the item's columns.
#[derive(sqlx::FromRow)]
struct ExceptionRow {
    id: i64,
    run_id: i64,
    chain_id: Unsigned,
    #[sqlx(flatten)]
    item: ExceptionColumns,
}

/// The stored form of one exception's item: what `record_run` writes from a [`ReconItem`] and
/// `exceptions` reads back (after the row's `id`, `run_id` and its run's `chain_id`).
#[derive(sqlx::FromRow)]
struct ExceptionColumns {
    class: String,
    payer: Hex<Address>,
    pay_to: Hex<Address>,
    chain_to: Option<Hex<Address>>,
    nonce: Option<Hex<B256>>,
    tx_hash: Option<Hex<B256>>,
    block_number: Option<Unsigned>,
    log_index: Option<Unsigned>,
    entry_id: Option<EntryId>,
    amount_ledger: Option<String>,
    amount_chain: Option<String>,
}

fn decimal_column(column: &'static str, value: &str) -> Result<U256, MeteringError> {
    U256::from_str_radix(value, 10).map_err(|e| MeteringError::corrupt(column, e))
}

impl RunRow {
    fn into_run(self) -> Result<ReconRun, MeteringError> {
        let counts = [
            self.n_matched,
            self.n_ledger_settled_missing_onchain,
            self.n_onchain_missing_in_ledger,
            self.n_amount_mismatch,
            self.n_payee_mismatch,
            self.n_unconfirmed,
            self.n_reorged,
        ];
        Ok(ReconRun {
            id: self.id,
            chain_id: self.chain_id.get(),
            asset: self.asset.0,
            from_block: self.from_block.get(),
            to_block: self.to_block.get(),
            cursor_block: self.cursor_block.map(Unsigned::get),
            started_unix_s: self.started_unix_s.get(),
            finished_unix_s: self.finished_unix_s.get(),
            counts: ReconClass::ALL.into_iter().zip(counts.map(Unsigned::get)).collect(),
            chain_total: decimal_column("chain_total", &self.chain_total)?,
            ledger_total: decimal_column("ledger_total", &self.ledger_total)?,
            matched_total: decimal_column("matched_total", &self.matched_total)?,
            tie_out_holds: self.tie_out_holds == 1,
        })
    }
}

impl ExceptionRow {
    fn into_exception(self) -> Result<ReconException, MeteringError> {
        let item = self.item;
        Ok(ReconException {
            id: self.id,
            run_id: self.run_id,
            chain_id: self.chain_id.get(),
            class: item.class.parse().map_err(|e| MeteringError::corrupt("class", e))?,
            payer: item.payer.0,
            pay_to: item.pay_to.0,
            chain_to: item.chain_to.map(|h| h.0),
            nonce: item.nonce.map(|h| h.0),
            tx_hash: item.tx_hash.map(|h| h.0),
            block_number: item.block_number.map(Unsigned::get),
            log_index: item.log_index.map(Unsigned::get),
            entry_id: item.entry_id,
            amount_ledger: item
                .amount_ledger
                .as_deref()
                .map(|v| v.parse().map_err(|e| MeteringError::corrupt("amount_ledger", e)))
                .transpose()?,
            amount_chain: item.amount_chain.as_deref().map(|v| decimal_column("amount_chain", v)).transpose()?,
        })
    }
}

impl ExceptionColumns {
    fn of(i: &ReconItem) -> Result<ExceptionColumns, MeteringError> {
        Ok(ExceptionColumns {
            class: i.class.as_str().to_owned(),
            payer: Hex(i.payer),
            pay_to: Hex(i.pay_to),
            chain_to: i.chain_to.map(Hex),
            nonce: i.nonce.map(Hex),
            tx_hash: i.tx_hash.map(Hex),
            block_number: Unsigned::opt("block_number", i.block_number)?,
            log_index: Unsigned::opt("log_index", i.log_index)?,
            entry_id: i.entry_id.clone(),
            amount_ledger: i.amount_ledger.map(|v| v.to_string()),
            amount_chain: i.amount_chain.map(|v| v.to_string()),
        })
    }
}

/// The reconciliation store. Cheap to clone; clones share the database handle.
#[derive(Debug, Clone)]
pub struct ReconStore {
    db: Db,
}

impl ReconStore {
    pub(crate) fn new(db: Db) -> ReconStore {
        ReconStore { db }
    }

    /// Entries of (chain, asset) paid to `pay_to` that say money moved: `settled` and
    /// `refund_owed` with their block in `[from_block, to_block]` (either bound optional), and
    /// every `settling` entry (no block yet). Ordered by block, log index, id; at most `limit`
    /// (a caller that needs them all treats `limit` rows as "maybe more").
    pub async fn settled_entries(
        &self,
        chain_id: u64,
        asset: Address,
        pay_to: Address,
        from_block: Option<u64>,
        to_block: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        let chain_id = Unsigned::new("chain_id", chain_id)?;
        let from = Unsigned::opt("from_block", from_block)?;
        let to = Unsigned::opt("to_block", to_block)?;
        let rows = db_call!(
            self.db,
            "settled_entries",
            read | pool | {
                sqlx::query_as(SELECT_SETTLED)
                    .bind(chain_id)
                    .bind(Hex(asset))
                    .bind(Hex(pay_to))
                    .bind(from)
                    .bind(to)
                    .bind(Unsigned::of_u32(limit))
                    .fetch_all(pool)
            }
        )?;
        entries(rows)
    }

    /// Records a reconciliation run with its counts, totals and every exception (item not
    /// matched), in one transaction; returns the run's id.
    pub async fn record_run(&self, run: &NewReconRun<'_>) -> Result<i64, MeteringError> {
        let scope = run.scope;
        let chain_id = Unsigned::new("chain_id", scope.chain_id)?;
        let from = Unsigned::new("from_block", scope.from_block)?;
        let to = Unsigned::new("to_block", scope.to_block)?;
        let cursor = Unsigned::opt("cursor_block", run.cursor_block)?;
        let started = Unsigned::new("started_unix_s", run.started_unix_s)?;
        let finished = Unsigned::new("finished_unix_s", run.finished_unix_s)?;
        let mut counts = Vec::with_capacity(ReconClass::ALL.len());
        for class in ReconClass::ALL {
            counts.push(Unsigned::new("count", run.counts.get(&class).copied().unwrap_or(0))?);
        }
        let holds = i64::from(run.tie_out_holds);
        let exceptions = run.exceptions.iter().map(|i| ExceptionColumns::of(i)).collect::<Result<Vec<_>, _>>()?;
        db_call!(
            self.db,
            "record_recon_run",
            tx | tx,
            err | {
                let mut insert = sqlx::query_scalar(INSERT_RUN)
                    .bind(chain_id)
                    .bind(Hex(scope.asset))
                    .bind(from)
                    .bind(to)
                    .bind(cursor)
                    .bind(started)
                    .bind(finished);
                for n in &counts {
                    insert = insert.bind(*n);
                }
                let id: i64 = insert
                    .bind(run.chain_total.to_string())
                    .bind(run.ledger_total.to_string())
                    .bind(run.matched_total.to_string())
                    .bind(holds)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(err)?;
                for x in &exceptions {
                    sqlx::query(INSERT_EXCEPTION)
                        .bind(id)
                        .bind(x.class.as_str())
                        .bind(x.payer)
                        .bind(x.pay_to)
                        .bind(x.chain_to)
                        .bind(x.nonce)
                        .bind(x.tx_hash)
                        .bind(x.block_number)
                        .bind(x.log_index)
                        .bind(x.entry_id.as_ref())
                        .bind(x.amount_ledger.as_deref())
                        .bind(x.amount_chain.as_deref())
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                }
                tx.commit().await.map_err(err)?;
                Ok(id)
            }
        )
    }

    /// The recorded runs of (chain, asset), oldest first, at most `limit`.
    pub async fn runs(&self, chain_id: u64, asset: Address, limit: u32) -> Result<Vec<ReconRun>, MeteringError> {
        let chain_id = Unsigned::new("chain_id", chain_id)?;
        let rows: Vec<RunRow> = db_call!(
            self.db,
            "recon_runs",
            read | pool | {
                sqlx::query_as(SELECT_RUNS)
                    .bind(chain_id)
                    .bind(Hex(asset))
                    .bind(Unsigned::of_u32(limit))
                    .fetch_all(pool)
            }
        )?;
        rows.into_iter().map(RunRow::into_run).collect()
    }

    /// The cursor to resume (chain, asset) from: the highest `cursor_block` of its recorded
    /// runs (the last block fully reconciled), or `None` when no run has one.
    pub async fn cursor(&self, chain_id: u64, asset: Address) -> Result<Option<u64>, MeteringError> {
        let chain_id = Unsigned::new("chain_id", chain_id)?;
        let cursor: Option<i64> = db_call!(
            self.db,
            "recon_cursor",
            read | pool | { sqlx::query_scalar(SELECT_CURSOR).bind(chain_id).bind(Hex(asset)).fetch_one(pool) }
        )?;
        cursor
            .map(|c| {
                u64::try_from(c).map_err(|_| MeteringError::InvalidValue {
                    what: "recon_runs.cursor_block",
                    reason: format!("negative: {c}"),
                })
            })
            .transpose()
    }

    /// The exceptions recorded with a run, in recording order.
    pub async fn exceptions(&self, run_id: i64) -> Result<Vec<ReconException>, MeteringError> {
        let rows: Vec<ExceptionRow> = db_call!(
            self.db,
            "recon_exceptions",
            read | pool | { sqlx::query_as(SELECT_EXCEPTIONS).bind(run_id).fetch_all(pool) }
        )?;
        rows.into_iter().map(ExceptionRow::into_exception).collect()
    }

    /// Appends a resolution note to an exception (`who`: 1 to 256 bytes; `why`: 1 to 2048);
    /// returns the note's id. Notes are never edited or deleted (the schema refuses).
    pub async fn add_note(
        &self,
        exception_id: i64,
        who: &str,
        why: &str,
        now_unix_s: u64,
    ) -> Result<i64, MeteringError> {
        for (what, value, max) in [("note author", who, LABEL_BYTES_MAX), ("note", why, REASON_BYTES_MAX)] {
            if value.is_empty() {
                return Err(MeteringError::InvalidValue { what, reason: "must not be empty".to_owned() });
            }
            check_len(what, value, max)?;
        }
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        db_call!(
            self.db,
            "add_recon_note",
            write | pool | {
                sqlx::query_scalar(INSERT_NOTE).bind(exception_id).bind(who).bind(why).bind(now).fetch_one(pool)
            }
        )
    }

    /// An exception's notes, oldest first.
    pub async fn notes(&self, exception_id: i64) -> Result<Vec<ReconNote>, MeteringError> {
        let rows: Vec<(i64, i64, String, String, Unsigned)> = db_call!(
            self.db,
            "recon_notes",
            read | pool | { sqlx::query_as(SELECT_NOTES).bind(exception_id).fetch_all(pool) }
        )?;
        Ok(rows
            .into_iter()
            .map(|(id, exception_id, who, why, at)| ReconNote { id, exception_id, who, why, at_unix_s: at.get() })
            .collect())
    }
}
