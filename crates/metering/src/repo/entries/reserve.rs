//! Reserving an entry: the payer's wallet policies (caps in the reservation's own
//! transaction), the insert whose UNIQUE key is the double-spend guard, and the duplicate's
//! answer. On SQLite a reservation without caps is committed in a group with other calls'
//! writes (`db::group`).
//!
//! Must not: decide a duplicate by a prior SELECT, or release the caller before its row is
//! durable.

use futures_util::future::BoxFuture;

use super::Entries;
use crate::MeteringError;
use crate::checks::check_len;
use crate::db::codec::{Hex, Unsigned};
use crate::db::group::statement_fn;
use crate::db::{Engine, db_call};
use crate::policy::{GLOBAL_SCOPE, LOCK_POLICIES_PG, PolicyCheckRow, SELECT_CAP_SPEND, SELECT_POLICY_CHECK};
use crate::policy::{check_cap, evaluate_policies};
use crate::repo::entry_row::SumRow;
use crate::types::{EntryId, LABEL_BYTES_MAX, NewEntry, PATH_BYTES_MAX, PAYMENT_BYTES_MAX};

// The AFTER INSERT trigger (migration 0006) appends the `reserved` event from `last_cause`.
const INSERT_ENTRY: &str = "INSERT INTO ledger_entries (id, chain_id, asset, payer, pay_to, nonce, amount, \
     valid_before_unix_s, provider, route, method, path, mode, state, payment, price_version, credential, \
     credential_version, created_unix_s, updated_unix_s, last_cause) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'reserved', $14, $16, $17, $18, $15, $15, \
     'reserved')";

/// `INSERT_ENTRY` with its binds, for the grouped SQLite path and `db_call!`'s bodies alike.
macro_rules! insert_entry {
    ($id:expr, $e:expr, $chain_id:expr, $payer:expr, $valid_before:expr, $now:expr, $price_version:expr, $credential_version:expr) => {{
        let e: &NewEntry = $e;
        sqlx::query(INSERT_ENTRY)
            .bind($id)
            .bind($chain_id)
            .bind(Hex(e.asset))
            .bind($payer)
            .bind(Hex(e.pay_to))
            .bind(Hex(e.nonce))
            .bind(e.amount)
            .bind($valid_before)
            .bind(&e.provider)
            .bind(&e.route)
            .bind(&e.method)
            .bind(&e.path)
            .bind(e.mode)
            .bind(&e.payment)
            .bind($now)
            .bind($price_version)
            .bind(e.credential.as_deref())
            .bind($credential_version)
    }};
}

impl Entries {
    /// Inserts the entry in state `reserved` plus its first event (cause `reserved`), in one
    /// transaction, and returns its new id.
    ///
    /// A second reservation of the same (chain, asset, payer, nonce) fails with
    /// [`MeteringError::DuplicateAuthorization`] naming the existing entry and its state. The
    /// duplicate is detected by the UNIQUE constraint at insert time (never by a prior SELECT),
    /// so the guard holds across processes sharing the database. The payer's wallet policies
    /// are checked first ([`MeteringError::PolicyDenied`]); caps in the same transaction.
    pub async fn reserve(&self, e: &NewEntry) -> Result<EntryId, MeteringError> {
        const OP: &str = "reserve";
        check_len("provider", &e.provider, LABEL_BYTES_MAX)?;
        check_len("route", &e.route, LABEL_BYTES_MAX)?;
        check_len("method", &e.method, LABEL_BYTES_MAX)?;
        check_len("path", &e.path, PATH_BYTES_MAX)?;
        check_len("payment", &e.payment, PAYMENT_BYTES_MAX)?;
        let chain_id = Unsigned::new("chain_id", e.chain_id)?;
        let valid_before = Unsigned::new("valid_before_unix_s", e.valid_before_unix_s)?;
        let now = Unsigned::new("now_unix_s", e.now_unix_s)?;
        let price_version = Unsigned::opt("price_version", e.price_version)?;
        let credential_version = Unsigned::opt("credential_version", e.credential_version)?;
        if let Some(c) = &e.credential {
            check_len("credential", c, LABEL_BYTES_MAX)?;
        }
        let payer = Hex(e.payer);
        let id = EntryId::random()?;
        let postgres = self.db.engine() == Engine::Postgres;

        // SQLite without caps: the policy read, then the insert committed in a group with
        // other calls' writes (one fsync for many). With caps, the check and the insert need
        // one transaction of their own (below).
        if let Some(group) = &self.db.group {
            let rows: Vec<PolicyCheckRow> = db_call!(
                self.db,
                OP,
                read | pool | sqlx::query_as(SELECT_POLICY_CHECK).bind(payer).bind(&e.provider).fetch_all(pool)
            )?;
            if !rows.iter().any(|r| r.daily_cap.is_some() || r.monthly_cap.is_some()) {
                evaluate_policies(&rows, &e.route, e.amount.get(), e.now_unix_s)
                    .map_err(MeteringError::PolicyDenied)?;
                let (new_id, e2) = (id.clone(), e.clone());
                let statement = statement_fn(move |conn| -> BoxFuture<'_, Result<bool, sqlx::Error>> {
                    Box::pin(async move {
                        let done = insert_entry!(
                            &new_id,
                            &e2,
                            chain_id,
                            payer,
                            valid_before,
                            now,
                            price_version,
                            credential_version
                        )
                        .execute(conn)
                        .await;
                        // A duplicate is detected by the UNIQUE key at insert time: `Ok(false)`
                        // (SQLite undoes the failed statement by itself).
                        match done {
                            Ok(_) => Ok(true),
                            Err(sqlx::Error::Database(ref db)) if db.is_unique_violation() => Ok(false),
                            Err(x) => Err(x),
                        }
                    })
                });
                let db = self.db.clone();
                let inserted = self.db.bounded(OP, group.run(OP, statement, move |x| db.error(OP, x))).await?;
                return self.reserved_or_duplicate(inserted, id, e).await;
            }
        }

        let inserted = db_call!(
            self.db,
            OP,
            gated | pool,
            begin,
            err | {
                let insert =
                    || insert_entry!(&id, e, chain_id, payer, valid_before, now, price_version, credential_version);
                // A duplicate is detected by the UNIQUE key at insert time: `Ok(false)`.
                let outcome = |r: Result<_, sqlx::Error>| match r {
                    Ok(_) => Ok(true),
                    Err(sqlx::Error::Database(ref db)) if db.is_unique_violation() => Ok(false),
                    Err(x) => Err(err(x)),
                };
                // The payer's policies (revocation, allowlist, scope, per-call maximum) are
                // read first. Without caps the reservation is then one statement (entry and
                // event, by trigger). A policy committed between the read and the insert
                // applies from the next call.
                let rows: Vec<PolicyCheckRow> = sqlx::query_as(SELECT_POLICY_CHECK)
                    .bind(payer)
                    .bind(&e.provider)
                    .fetch_all(pool)
                    .await
                    .map_err(err)?;
                if !rows.iter().any(|r| r.daily_cap.is_some() || r.monthly_cap.is_some()) {
                    evaluate_policies(&rows, &e.route, e.amount.get(), e.now_unix_s)
                        .map_err(MeteringError::PolicyDenied)?;
                    return outcome(insert().execute(pool).await);
                }
                // Caps: checked and reserved in one transaction so that concurrent calls and
                // replicas cannot overspend. SQLite holds its write lock (BEGIN IMMEDIATE);
                // PostgreSQL locks the payer's policy rows before the spend is summed.
                let mut tx = pool.begin_with(begin).await.map_err(err)?;
                if postgres {
                    sqlx::query(LOCK_POLICIES_PG).bind(payer).bind(&e.provider).execute(&mut *tx).await.map_err(err)?;
                }
                let rows: Vec<PolicyCheckRow> = sqlx::query_as(SELECT_POLICY_CHECK)
                    .bind(payer)
                    .bind(&e.provider)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(err)?;
                let caps = evaluate_policies(&rows, &e.route, e.amount.get(), e.now_unix_s)
                    .map_err(MeteringError::PolicyDenied)?;
                for cap in &caps {
                    let scope = (cap.scope != GLOBAL_SCOPE).then_some(cap.scope.as_str());
                    let spent: SumRow = sqlx::query_as(SELECT_CAP_SPEND)
                        .bind(payer)
                        .bind(Unsigned::new("since_unix_s", cap.since_unix_s)?)
                        .bind(scope)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(err)?;
                    check_cap(cap, spent.tally().amount, e.amount.get()).map_err(MeteringError::PolicyDenied)?;
                }
                let inserted = outcome(insert().execute(&mut *tx).await)?;
                if inserted {
                    tx.commit().await.map_err(err)?;
                } else {
                    // The transaction is dead on PostgreSQL; nothing was written. A failed
                    // rollback only means the connection is dropped, which sqlx handles.
                    let _ = tx.rollback().await;
                }
                Ok(inserted)
            }
        )?;
        self.reserved_or_duplicate(inserted, id, e).await
    }

    /// The new entry's id when `inserted`; otherwise the duplicate it ran into.
    async fn reserved_or_duplicate(&self, inserted: bool, id: EntryId, e: &NewEntry) -> Result<EntryId, MeteringError> {
        const OP: &str = "reserve";
        if inserted {
            return Ok(id);
        }
        // The conflicting row is committed (the insert waited for it), so this read sees it.
        match self.by_authorization(e.chain_id, e.asset, e.payer, e.nonce).await? {
            Some(existing) => {
                Err(MeteringError::DuplicateAuthorization { existing: existing.id, state: existing.state })
            }
            None => Err(MeteringError::Database {
                op: OP,
                reason: "unique violation on a fresh entry id (random id collision)".to_owned(),
                retryable: true,
            }),
        }
    }
}
