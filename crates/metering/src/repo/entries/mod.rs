//! `Entries`: the life of a ledger entry. Reserve (with the payer's wallet policies checked in
//! the same transaction), move through the states (`forwarded`, `settling`, `settled`,
//! `voided`, ...), note and reopen, and read entries and their events back.
//!
//! Owns the double-spend guard's use (a duplicate authorization is detected by the UNIQUE key
//! at insert time, never by a prior SELECT), the conditional UPDATE that makes each transition
//! a claim, and the statements' SQL. The events are appended by the schema's triggers
//! (migration 0006) from `last_cause` / `last_detail`.
//!
//! Must not: parse the payment it stores, know HTTP or a chain, or import another repository
//! (the policy rules come from `crate::policy`, the row shape from `entry_row`).

mod reserve;

use alloy_primitives::{Address, B256};
use futures_util::future::BoxFuture;

use crate::MeteringError;
use crate::checks::{check_cause, check_len};
use crate::db::codec::{Hex, Unsigned};
use crate::db::group::statement_fn;
use crate::db::{Db, db_call};
use crate::repo::entry_row::{EntryRow, entries, entry_columns};
use crate::types::{
    DETAIL_BYTES_MAX, Entry, EntryFilter, EntryId, EntryState, Event, LABEL_BYTES_MAX, REASON_BYTES_MAX, Transition,
};

/// Most entries one [`Entries::claim_batch`] claims (the verifier's batch bound).
pub const CLAIM_BATCH_MAX: usize = 256;

const SELECT_STATE: &str = "SELECT state, tx_hash FROM ledger_entries WHERE id = $1";

// One statement per transition: the AFTER UPDATE trigger (migration 0006) appends the event
// from `last_cause` / `last_detail`. The last condition refuses `settling -> settling` with the
// transaction already recorded (a replacement must record a new hash).
const UPDATE_ENTRY: &str = concat!(
    "UPDATE ledger_entries SET state = $1, upstream_status = COALESCE($2, upstream_status), ",
    "tx_hash = COALESCE($3, tx_hash), block_number = COALESCE($4, block_number), ",
    "block_hash = COALESCE($5, block_hash), log_index = COALESCE($6, log_index), reason = COALESCE($7, reason), ",
    "updated_unix_s = $8, last_cause = $11, last_detail = $12 WHERE id = $9 AND state = $10 ",
    "AND NOT ($1 = 'settling' AND state = 'settling' AND tx_hash IS NOT DISTINCT FROM $3) RETURNING ",
    entry_columns!()
);

/// A note on a `settling` entry: an event that keeps the state (see [`Entries::note_settling`]).
const NOTE_SETTLING: &str = "INSERT INTO ledger_events (entry_id, from_state, to_state, cause, detail, tx_hash, at_unix_s) \
     SELECT id, 'settling', 'settling', $2, NULL, NULL, $3 FROM ledger_entries WHERE id = $1 AND state = 'settling'";

const REOPEN_REORGED: &str = "UPDATE ledger_entries SET state = 'settling', block_number = NULL, block_hash = NULL, \
     log_index = NULL, updated_unix_s = $1, last_cause = 'reorged', last_detail = $4 \
     WHERE id = $2 AND state = 'settled' AND block_hash = $3";

const SELECT_ENTRY: &str = concat!("SELECT ", entry_columns!(), " FROM ledger_entries WHERE id = $1");

const SELECT_BY_AUTHORIZATION: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE chain_id = $1 AND asset = $2 AND payer = $3 AND nonce = $4"
);

const SELECT_EVENTS: &str = "SELECT id, entry_id, from_state, to_state, cause, detail, tx_hash, at_unix_s \
     FROM ledger_events WHERE entry_id = $1 ORDER BY id";

// The state list must match the partial index ledger_entries_unfinished for it to be used.
const SELECT_UNFINISHED: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE state IN ('reserved', 'forwarded', 'settling') AND updated_unix_s <= $1 ",
    "ORDER BY updated_unix_s, id LIMIT $2"
);

const SELECT_DEFERRED: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE mode = 'deferred' AND state = 'forwarded' ORDER BY valid_before_unix_s, id LIMIT $1"
);

const SELECT_OF_PAYER: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE chain_id = $1 AND asset = $2 AND payer = $3 ORDER BY created_unix_s, id LIMIT $4"
);

const SELECT_PAGE: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries WHERE ($1 IS NULL OR provider = $1) AND ($2 IS NULL OR payer = $2) ",
    "AND created_unix_s >= $3 AND created_unix_s < $4 AND ($7 IS NULL OR state = $7) ",
    "ORDER BY created_unix_s, id LIMIT $5 OFFSET $6"
);

const SELECT_WITHOUT_AUDIT: &str = concat!(
    "SELECT ",
    entry_columns!(),
    " FROM ledger_entries e WHERE e.updated_unix_s >= $1 AND e.updated_unix_s < $2 ",
    "AND e.state IN ('settled', 'voided', 'settle_failed', 'refund_owed') ",
    "AND e.created_unix_s * 1000 >= (SELECT COALESCE(MIN(at_unix_ms), 9223372036854775807) FROM audit_log) ",
    "AND NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.entry_id = e.id) ORDER BY e.updated_unix_s, e.id LIMIT $3"
);

/// A `ledger_events` row as the drivers decode it.
#[derive(sqlx::FromRow)]
struct EventRow {
    id: i64,
    entry_id: EntryId,
    from_state: Option<EntryState>,
    to_state: EntryState,
    cause: String,
    detail: Option<String>,
    tx_hash: Option<Hex<B256>>,
    at_unix_s: Unsigned,
}

impl EventRow {
    fn into_event(self) -> Event {
        Event {
            id: self.id,
            entry_id: self.entry_id,
            from_state: self.from_state,
            to_state: self.to_state,
            cause: self.cause,
            detail: self.detail,
            tx_hash: self.tx_hash.map(|h| h.0),
            at_unix_s: self.at_unix_s.get(),
        }
    }
}

/// `UPDATE_ENTRY` with its binds, for whichever engine the call site runs on (the grouped
/// SQLite path and `db_call!`'s per-engine bodies).
macro_rules! update_entry {
    ($to:expr, $columns:expr, $now:expr, $id:expr, $from:expr, $cause:expr, $detail:expr) => {{
        let columns: &TransitionColumns = $columns;
        sqlx::query_as(UPDATE_ENTRY)
            .bind($to)
            .bind(columns.upstream_status)
            .bind(columns.tx_hash)
            .bind(columns.block_number)
            .bind(columns.block_hash)
            .bind(columns.log_index)
            .bind(columns.reason.as_deref())
            .bind($now)
            .bind($id)
            .bind($from)
            .bind($cause)
            .bind($detail)
    }};
}

/// The columns a transition writes, in stored form.
#[derive(Clone)]
struct TransitionColumns {
    upstream_status: Option<Unsigned>,
    tx_hash: Option<Hex<B256>>,
    block_number: Option<Unsigned>,
    block_hash: Option<Hex<B256>>,
    log_index: Option<Unsigned>,
    reason: Option<String>,
}

impl TransitionColumns {
    /// The columns of `t`, after checking the cause and detail that go with it.
    fn checked(t: &Transition, cause: &str, detail: Option<&str>) -> Result<TransitionColumns, MeteringError> {
        check_cause(cause)?;
        if let Some(detail) = detail {
            check_len("detail", detail, DETAIL_BYTES_MAX)?;
        }
        let mut columns = TransitionColumns {
            upstream_status: None,
            tx_hash: t.tx_hash().map(Hex),
            block_number: None,
            block_hash: None,
            log_index: None,
            reason: None,
        };
        match t {
            Transition::Forwarded { upstream_status } => {
                if let Some(status) = upstream_status {
                    if !(100..=999).contains(status) {
                        return Err(MeteringError::InvalidValue {
                            what: "upstream_status",
                            reason: format!("{status} is not an HTTP status code"),
                        });
                    }
                    columns.upstream_status = Some(Unsigned::new("upstream_status", u64::from(*status))?);
                }
            }
            Transition::Settling { .. } => {}
            Transition::Settled { block_number, block_hash, log_index, .. } => {
                columns.block_number = Some(Unsigned::new("block_number", *block_number)?);
                columns.block_hash = Some(Hex(*block_hash));
                columns.log_index = Some(Unsigned::new("log_index", *log_index)?);
            }
            Transition::SettleFailed { reason } | Transition::Voided { reason } | Transition::RefundOwed { reason } => {
                check_len("reason", reason, REASON_BYTES_MAX)?;
                columns.reason = Some(reason.clone());
            }
        }
        Ok(columns)
    }
}

/// The entries repository. Cheap to clone; clones share the database handle.
#[derive(Debug, Clone)]
pub struct Entries {
    db: Db,
}

impl Entries {
    pub(crate) fn new(db: Db) -> Entries {
        Entries { db }
    }

    /// Applies a transition and (by trigger) appends its event (`cause`, `detail` JSON, and the
    /// transaction hash the transition records), and returns the updated entry.
    ///
    /// The UPDATE is conditional on the state read just before (`WHERE id = ? AND state = ?`),
    /// so of two processes racing on one entry only one wins; the other gets
    /// [`MeteringError::StaleState`]. A transition the current state does not allow is
    /// [`MeteringError::IllegalTransition`]; `settling -> settling` with the hash already
    /// recorded is [`MeteringError::NotAReplacement`]; an unknown id is
    /// [`MeteringError::NotFound`]. `cause` is 1 to 64 characters of `[a-z0-9_]`.
    pub async fn transition(
        &self,
        id: &EntryId,
        t: Transition,
        cause: &str,
        detail: Option<&str>,
        now_unix_s: u64,
    ) -> Result<Entry, MeteringError> {
        let columns = TransitionColumns::checked(&t, cause, detail)?;
        let (from, current_tx_hash) = self.current_state(id).await?;
        let to = t.to_state();
        if !from.can_go_to(to) {
            return Err(MeteringError::IllegalTransition { id: id.clone(), from, to });
        }
        if let (EntryState::Settling, Transition::Settling { tx_hash }) = (from, &t)
            && current_tx_hash == columns.tx_hash
        {
            return Err(MeteringError::NotAReplacement { id: id.clone(), tx_hash: *tx_hash });
        }
        match self.update_if(id, from, to, &columns, cause, detail, now_unix_s).await? {
            Some(row) => row.into_entry(),
            // Another writer moved the entry after our read. Report what it is now.
            None => {
                let (found, _) = self.current_state(id).await?;
                Err(MeteringError::StaleState { id: id.clone(), expected: from, found })
            }
        }
    }

    /// Applies `t` only if the entry is in state `expected`: `Ok(true)` when applied,
    /// `Ok(false)` when the entry is in another state (including a racer having moved it
    /// first, or the same transaction hash already recorded). This is the claim primitive:
    /// of several workers calling it with the same `expected`, exactly one gets `true`. One
    /// conditional statement: the state change and (by trigger) its event.
    pub async fn transition_from(
        &self,
        id: &EntryId,
        expected: EntryState,
        t: Transition,
        cause: &str,
        detail: Option<&str>,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        let columns = TransitionColumns::checked(&t, cause, detail)?;
        let to = t.to_state();
        if !expected.can_go_to(to) {
            // Illegal from `expected`: an error if the entry is there, a lost race otherwise.
            let (from, _) = self.current_state(id).await?;
            return if from == expected {
                Err(MeteringError::IllegalTransition { id: id.clone(), from, to })
            } else {
                Ok(false)
            };
        }
        if self.update_if(id, expected, to, &columns, cause, detail, now_unix_s).await?.is_some() {
            return Ok(true);
        }
        // Not applied: another state (a racer won) or the same transaction already recorded;
        // `NotFound` if there is no such entry.
        self.current_state(id).await.map(|_| false)
    }

    /// Claims every entry of `ids`, each in state `expected`, for one batch settlement
    /// transaction `tx_hash`: `expected → settling(tx_hash)` on all of them in one database
    /// transaction, or on none. `Ok(true)`: every entry now names the transaction, each with
    /// its own event (`cause`, `detail`); `Ok(false)`: one of them was not in `expected` (a
    /// racer claimed it, it was settled or voided meanwhile), and nothing was written. The
    /// claim-before-broadcast rule holds per entry: when this returns `true` the hash is
    /// durable on each of them. `ids` holds 1 to [`CLAIM_BATCH_MAX`] distinct entries.
    pub async fn claim_batch(
        &self,
        ids: &[EntryId],
        expected: EntryState,
        tx_hash: B256,
        cause: &str,
        detail: Option<&str>,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        let t = Transition::Settling { tx_hash };
        let columns = TransitionColumns::checked(&t, cause, detail)?;
        let distinct: std::collections::HashSet<&EntryId> = ids.iter().collect();
        if ids.is_empty() || ids.len() > CLAIM_BATCH_MAX || distinct.len() != ids.len() {
            return Err(MeteringError::InvalidValue {
                what: "ids",
                reason: format!("a batch claim names 1 to {CLAIM_BATCH_MAX} distinct entries, not {}", ids.len()),
            });
        }
        let to = EntryState::Settling;
        if !expected.can_go_to(to) {
            return Err(MeteringError::InvalidValue {
                what: "expected",
                reason: format!("no claim from {expected:?}"),
            });
        }
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let columns = &columns;
        // Rows are locked in one order (by id) whatever order the caller gave: two batch
        // claims over the same entries then wait for each other instead of deadlocking
        // (PostgreSQL found one when two claims listed the entries in opposite orders).
        let mut ordered: Vec<&EntryId> = ids.iter().collect();
        ordered.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let claimed: bool = db_call!(
            self.db,
            "claim_batch",
            tx | tx,
            err | {
                let mut all = true;
                for id in &ordered {
                    let row: Option<EntryRow> = update_entry!(to, columns, now, id, expected, cause, detail)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(err)?;
                    if row.is_none() {
                        all = false;
                        break;
                    }
                }
                if all {
                    tx.commit().await.map_err(err)?;
                } else {
                    // Not one of the entries keeps the claim: the batch is sent whole or not.
                    tx.rollback().await.map_err(err)?;
                }
                Ok(all)
            }
        )?;
        if !claimed {
            // An unknown id is an error, not a lost race.
            for id in ids {
                self.current_state(id).await?;
            }
        }
        Ok(claimed)
    }

    /// Records a landed settlement and, in the same database transaction, the refund its payer
    /// is owed: `settling → settled` (`settled`, a [`Transition::Settled`]) then `settled →
    /// refund_owed(owed_reason)`, each with its event and `cause`, or nothing. For the recovery
    /// sweep, which finds settlements whose agent was never answered or whose live process
    /// noted a refund due: as two writes, a crash between them would leave the entry `settled`
    /// and the refund forgotten. `Ok(false)`: the entry was not `settling` (another writer
    /// recorded it first) and nothing was written; `NotFound` for an unknown id.
    pub async fn settle_owing(
        &self,
        id: &EntryId,
        settled: &Transition,
        owed_reason: &str,
        cause: &str,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        if settled.to_state() != EntryState::Settled {
            return Err(MeteringError::InvalidValue {
                what: "settled",
                reason: format!("a settlement, not a move to {}", settled.to_state()),
            });
        }
        let first = TransitionColumns::checked(settled, cause, None)?;
        let second =
            TransitionColumns::checked(&Transition::RefundOwed { reason: owed_reason.to_owned() }, cause, None)?;
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let (first, second) = (&first, &second);
        let detail: Option<&str> = None;
        let applied: Option<bool> = db_call!(
            self.db,
            "settle_owing",
            tx | tx,
            err | {
                // The second step is impossible to miss inside the transaction (the row is
                // locked and ours since the first): `None` then, an error, never read as
                // another writer's win; nothing is written either way.
                for (step, (to, columns, from)) in [
                    (EntryState::Settled, first, EntryState::Settling),
                    (EntryState::RefundOwed, second, EntryState::Settled),
                ]
                .into_iter()
                .enumerate()
                {
                    let row: Option<EntryRow> = update_entry!(to, columns, now, id, from, cause, detail)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(err)?;
                    if row.is_none() {
                        tx.rollback().await.map_err(err)?;
                        return Ok((step == 0).then_some(false));
                    }
                }
                tx.commit().await.map_err(err)?;
                Ok(Some(true))
            }
        )?;
        let Some(applied) = applied else {
            return Err(MeteringError::Corrupt {
                column: "state".to_owned(),
                reason: format!("entry {id} left `settled` within its own transaction"),
            });
        };
        if !applied {
            self.current_state(id).await?;
        }
        Ok(applied)
    }

    /// The entry's state and transaction hash, or `NotFound`.
    async fn current_state(&self, id: &EntryId) -> Result<(EntryState, Option<Hex<B256>>), MeteringError> {
        let found: Option<(EntryState, Option<Hex<B256>>)> =
            db_call!(self.db, "transition", read | pool | sqlx::query_as(SELECT_STATE).bind(id).fetch_optional(pool))?;
        found.ok_or_else(|| MeteringError::NotFound { id: id.clone() })
    }

    /// The one conditional UPDATE of a transition (`UPDATE_ENTRY`): the updated row, or `None`
    /// when the entry is not in `from` (or the replacement hash is already recorded).
    #[allow(clippy::too_many_arguments)]
    async fn update_if(
        &self,
        id: &EntryId,
        from: EntryState,
        to: EntryState,
        columns: &TransitionColumns,
        cause: &str,
        detail: Option<&str>,
        now_unix_s: u64,
    ) -> Result<Option<EntryRow>, MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        if let Some(group) = &self.db.group {
            const OP: &str = "transition";
            let (id, columns, cause, detail) =
                (id.clone(), columns.clone(), cause.to_owned(), detail.map(str::to_owned));
            let db = self.db.clone();
            let statement = statement_fn(move |conn| -> BoxFuture<'_, Result<Option<EntryRow>, sqlx::Error>> {
                Box::pin(async move {
                    update_entry!(to, &columns, now, &id, from, &cause, detail.as_deref()).fetch_optional(conn).await
                })
            });
            return self.db.bounded(OP, group.run(OP, statement, move |e| db.error(OP, e))).await;
        }
        db_call!(
            self.db,
            "transition",
            write | pool | update_entry!(to, columns, now, id, from, cause, detail).fetch_optional(pool)
        )
    }

    /// Appends a note to a `settling` entry's history without changing its state (an event
    /// `settling → settling` with no transaction): that the agent was answered while the
    /// settlement was still pending, so the response was delivered. The recovery sweep reads
    /// it to tell a delivered `after` call from one whose process died before answering.
    /// `Ok(false)` when the entry is not `settling`.
    pub async fn note_settling(&self, id: &EntryId, cause: &str, now_unix_s: u64) -> Result<bool, MeteringError> {
        check_len("cause", cause, LABEL_BYTES_MAX)?;
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        if let Some(group) = &self.db.group {
            const OP: &str = "note_settling";
            let (id, cause) = (id.clone(), cause.to_owned());
            let db = self.db.clone();
            let statement = statement_fn(move |conn| -> BoxFuture<'_, Result<u64, sqlx::Error>> {
                Box::pin(async move {
                    sqlx::query(NOTE_SETTLING)
                        .bind(&id)
                        .bind(&cause)
                        .bind(now)
                        .execute(conn)
                        .await
                        .map(|d| d.rows_affected())
                })
            });
            let done = self.db.bounded(OP, group.run(OP, statement, move |e| db.error(OP, e))).await?;
            return Ok(done == 1);
        }
        let done = db_call!(
            self.db,
            "note_settling",
            execute | pool | { sqlx::query(NOTE_SETTLING).bind(id).bind(cause).bind(now) }
        )?;
        Ok(done == 1)
    }

    /// A settled entry whose recorded block is no longer the chain's (a reorg) goes back to
    /// `settling` with its block, block hash and log index cleared, keeping its transaction,
    /// so that the receipt is checked again (where the transaction landed now, if anywhere).
    /// Conditional on the entry still being `settled` in `recorded_block_hash`: `false` when
    /// it moved meanwhile. The event (cause `reorged`) keeps the old block in its detail.
    pub async fn reopen_reorged(
        &self,
        id: &EntryId,
        recorded_block_hash: B256,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let recorded = Hex(recorded_block_hash);
        let detail = format!("{{\"reorged_block_hash\":\"{}\"}}", recorded.text());
        let done = db_call!(
            self.db,
            "reopen_reorged",
            execute | pool | { sqlx::query(REOPEN_REORGED).bind(now).bind(id).bind(recorded).bind(&detail) }
        )?;
        Ok(done == 1)
    }

    /// The entry with this id.
    pub async fn get(&self, id: &EntryId) -> Result<Option<Entry>, MeteringError> {
        let row: Option<EntryRow> =
            db_call!(self.db, "entry", read | pool | sqlx::query_as(SELECT_ENTRY).bind(id).fetch_optional(pool))?;
        row.map(EntryRow::into_entry).transpose()
    }

    /// The entry that reserved this authorization, if any.
    pub async fn by_authorization(
        &self,
        chain_id: u64,
        asset: Address,
        payer: Address,
        nonce: B256,
    ) -> Result<Option<Entry>, MeteringError> {
        let chain_id = Unsigned::new("chain_id", chain_id)?;
        let row: Option<EntryRow> = db_call!(
            self.db,
            "entry_by_authorization",
            read | pool | {
                sqlx::query_as(SELECT_BY_AUTHORIZATION)
                    .bind(chain_id)
                    .bind(Hex(asset))
                    .bind(Hex(payer))
                    .bind(Hex(nonce))
                    .fetch_optional(pool)
            }
        )?;
        row.map(EntryRow::into_entry).transpose()
    }

    /// The entry's events, oldest first (the reservation is the first).
    pub async fn events(&self, id: &EntryId) -> Result<Vec<Event>, MeteringError> {
        let rows: Vec<EventRow> =
            db_call!(self.db, "events", read | pool | sqlx::query_as(SELECT_EVENTS).bind(id).fetch_all(pool))?;
        Ok(rows.into_iter().map(EventRow::into_event).collect())
    }

    /// Entries in `reserved`, `forwarded` or `settling` last updated at or before
    /// `updated_before_unix_s`, oldest update first, at most `limit` (recovery's work list).
    pub async fn unfinished(&self, updated_before_unix_s: u64, limit: u32) -> Result<Vec<Entry>, MeteringError> {
        let before = Unsigned::new("updated_before_unix_s", updated_before_unix_s)?;
        let rows = db_call!(
            self.db,
            "unfinished",
            read | pool | {
                sqlx::query_as(SELECT_UNFINISHED).bind(before).bind(Unsigned::of_u32(limit)).fetch_all(pool)
            }
        )?;
        entries(rows)
    }

    /// Entries of mode `deferred` in state `forwarded`, earliest `validBefore` first, at most
    /// `limit`: the durable truth of the settlement queue.
    pub async fn deferred_backlog(&self, limit: u32) -> Result<Vec<Entry>, MeteringError> {
        let rows = db_call!(
            self.db,
            "deferred_backlog",
            read | pool | { sqlx::query_as(SELECT_DEFERRED).bind(Unsigned::of_u32(limit)).fetch_all(pool) }
        )?;
        entries(rows)
    }

    /// A payer's entries on (chain, asset), oldest first, at most `limit`.
    pub async fn of_payer(
        &self,
        chain_id: u64,
        asset: Address,
        payer: Address,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        let chain_id = Unsigned::new("chain_id", chain_id)?;
        let rows = db_call!(
            self.db,
            "entries_of_payer",
            read | pool | {
                sqlx::query_as(SELECT_OF_PAYER)
                    .bind(chain_id)
                    .bind(Hex(asset))
                    .bind(Hex(payer))
                    .bind(Unsigned::of_u32(limit))
                    .fetch_all(pool)
            }
        )?;
        entries(rows)
    }

    /// The entries `filter` selects, in reservation order, `limit` at most after skipping
    /// `offset` (read-only views for finance).
    pub async fn page(&self, filter: &EntryFilter, offset: u64, limit: u32) -> Result<Vec<Entry>, MeteringError> {
        let (from, to) =
            (Unsigned::new("from_unix_s", filter.from_unix_s)?, Unsigned::new("to_unix_s", filter.to_unix_s)?);
        let (provider, payer, state) = (filter.provider.as_deref(), filter.payer, filter.state);
        let offset = Unsigned::new("offset", offset)?;
        let rows = db_call!(
            self.db,
            "entries_page",
            read | pool | {
                sqlx::query_as(SELECT_PAGE)
                    .bind(provider)
                    .bind(payer.map(Hex))
                    .bind(from)
                    .bind(to)
                    .bind(Unsigned::of_u32(limit.clamp(1, 1000)))
                    .bind(offset)
                    .bind(state)
                    .fetch_all(pool)
            }
        )?;
        entries(rows)
    }

    /// Entries that ended (settled, voided, failed, refund owed) in `[since, before)` and have no
    /// audit record: their record was still queued when the process that served them died.
    /// Only entries reserved since the first audit record count (older ones predate the audit
    /// trail). Oldest first, at most `limit`.
    pub async fn without_audit(
        &self,
        since_unix_s: u64,
        before_unix_s: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        let since = Unsigned::new("since_unix_s", since_unix_s)?;
        let before = Unsigned::new("before_unix_s", before_unix_s)?;
        let rows = db_call!(
            self.db,
            "entries_without_audit",
            read | pool | {
                sqlx::query_as(SELECT_WITHOUT_AUDIT)
                    .bind(since)
                    .bind(before)
                    .bind(Unsigned::of_u32(limit.clamp(1, 10_000)))
                    .fetch_all(pool)
            }
        )?;
        entries(rows)
    }
}
