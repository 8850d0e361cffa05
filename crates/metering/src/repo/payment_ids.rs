//! `PaymentIds`: the x402 `payment-identifier` records (issue 19): a client's idempotency key,
//! scoped per payer and route, bound to the fingerprint of the payment it first came with,
//! the ledger entry that payment reserved, and the outcome the agent was told.
//!
//! A record's life: [`PaymentIds::claim`] (after the payment verified) → [`PaymentIds::attach_entry`]
//! (the reservation) → [`PaymentIds::record_outcome`] (the answer); or [`PaymentIds::release`]
//! when the call ended before anything was reserved. Expired records are deleted by
//! [`PaymentIds::purge_expired`]. Each write changes a column from NULL to a value at most once
//! (the schema's trigger holds it too).
//!
//! Must not: import another repository, parse the outcome (opaque JSON owned by the gateway),
//! or compute fingerprints (the gateway knows what a payment is).

use alloy_primitives::Address;

use crate::MeteringError;
use crate::checks::check_len;
use crate::db::codec::{Hex, Unsigned};
use crate::db::{Db, db_call};
use crate::types::{EntryId, LABEL_BYTES_MAX};

/// Shortest id the extension allows.
pub const PAYMENT_ID_CHARS_MIN: usize = 16;
/// Longest id the extension allows.
pub const PAYMENT_ID_CHARS_MAX: usize = 128;
/// Largest stored outcome (JSON text, the replayed body included as base64).
pub const PAYMENT_ID_OUTCOME_BYTES_MAX: usize = 2 * 1024 * 1024;

const SELECT: &str = "SELECT fingerprint, entry_id, outcome, created_unix_s, expires_unix_s FROM payment_ids \
     WHERE payer = $1 AND route = $2 AND id = $3 AND expires_unix_s > $4";

// Takes the id when it is free, expired, or claimed by the same payment and left unused (no
// entry) since before `$7` (a process that died between the claim and the reservation). A
// stale claim is still the id's binding to its payment: another payment with the same id is
// refused (409 at the gateway, as the extension says) until the record expires, so a stale
// claim is taken over only when the fingerprints are equal.
const CLAIM: &str = "INSERT INTO payment_ids (payer, route, id, fingerprint, entry_id, outcome, created_unix_s, \
     expires_unix_s) VALUES ($1, $2, $3, $4, NULL, NULL, $5, $6) \
     ON CONFLICT (payer, route, id) DO UPDATE SET fingerprint = excluded.fingerprint, entry_id = NULL, \
     outcome = NULL, created_unix_s = excluded.created_unix_s, expires_unix_s = excluded.expires_unix_s \
     WHERE payment_ids.expires_unix_s <= excluded.created_unix_s \
        OR (payment_ids.entry_id IS NULL AND payment_ids.created_unix_s <= $7 \
            AND payment_ids.fingerprint = excluded.fingerprint)";

const ATTACH: &str = "UPDATE payment_ids SET entry_id = $5 \
     WHERE payer = $1 AND route = $2 AND id = $3 AND fingerprint = $4 AND entry_id IS NULL";

const OUTCOME: &str = "UPDATE payment_ids SET outcome = $5 \
     WHERE payer = $1 AND route = $2 AND id = $3 AND fingerprint = $4 AND entry_id IS NOT NULL AND outcome IS NULL";

const RELEASE: &str = "DELETE FROM payment_ids \
     WHERE payer = $1 AND route = $2 AND id = $3 AND fingerprint = $4 AND entry_id IS NULL";

const PURGE: &str = "DELETE FROM payment_ids WHERE expires_unix_s <= $1";

/// Which record: the payer (as the payment names it), the route, the client's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIdKey {
    /// The payer the payment names (`authorization.from`).
    pub payer: Address,
    /// The route's name.
    pub route: String,
    /// The client's id (16–128 of `[A-Za-z0-9_-]`).
    pub id: String,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIdRecord {
    /// SHA-256 (hex) of the payment and request the id first came with.
    pub fingerprint: String,
    /// The ledger entry that payment reserved, once it did.
    pub entry_id: Option<EntryId>,
    /// What the agent was told (the gateway's JSON), once it was.
    pub outcome: Option<String>,
    /// When the id was claimed.
    pub created_unix_s: u64,
    /// When the record may be deleted.
    pub expires_unix_s: u64,
}

#[derive(sqlx::FromRow)]
struct Row {
    fingerprint: String,
    entry_id: Option<EntryId>,
    outcome: Option<String>,
    created_unix_s: Unsigned,
    expires_unix_s: Unsigned,
}

/// Whether `id` is a valid payment identifier: 16–128 characters of `[A-Za-z0-9_-]`.
pub fn payment_id_valid(id: &str) -> bool {
    (PAYMENT_ID_CHARS_MIN..=PAYMENT_ID_CHARS_MAX).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_key(key: &PaymentIdKey) -> Result<(), MeteringError> {
    if !payment_id_valid(&key.id) {
        return Err(MeteringError::InvalidValue {
            what: "payment id",
            reason: "must be 16 to 128 characters of A-Z, a-z, 0-9, '_' and '-'".to_owned(),
        });
    }
    if key.route.is_empty() {
        return Err(MeteringError::InvalidValue { what: "route", reason: "must not be empty".to_owned() });
    }
    check_len("route", &key.route, LABEL_BYTES_MAX)
}

fn check_fingerprint(fingerprint: &str) -> Result<(), MeteringError> {
    if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(MeteringError::InvalidValue {
            what: "payment id fingerprint",
            reason: "must be 64 lowercase hex digits".to_owned(),
        });
    }
    Ok(())
}

/// The payment-identifier repository. Cheap to clone; clones share the database handle.
#[derive(Debug, Clone)]
pub struct PaymentIds {
    db: Db,
}

impl PaymentIds {
    pub(crate) fn new(db: Db) -> PaymentIds {
        PaymentIds { db }
    }

    /// The record of `key`, unless there is none or it expired by `now_unix_s`.
    pub async fn get(&self, key: &PaymentIdKey, now_unix_s: u64) -> Result<Option<PaymentIdRecord>, MeteringError> {
        check_key(key)?;
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let row: Option<Row> = db_call!(
            self.db,
            "get_payment_id",
            read | pool | {
                sqlx::query_as(SELECT)
                    .bind(Hex(key.payer))
                    .bind(&key.route)
                    .bind(&key.id)
                    .bind(now)
                    .fetch_optional(pool)
            }
        )?;
        Ok(row.map(|r| PaymentIdRecord {
            fingerprint: r.fingerprint,
            entry_id: r.entry_id,
            outcome: r.outcome,
            created_unix_s: r.created_unix_s.get(),
            expires_unix_s: r.expires_unix_s.get(),
        }))
    }

    /// Claims `key` for the payment `fingerprint` until `now_unix_s + retention_s`: `true` when
    /// this call took it (free, expired, or claimed by the same fingerprint and never used since
    /// `stale_before_unix_s`), `false` when another call holds it or another payment is bound to
    /// it (a stale claim of another fingerprint is kept until it expires). Atomic on both engines (one upsert), so of two
    /// concurrent calls with the same id exactly one wins.
    pub async fn claim(
        &self,
        key: &PaymentIdKey,
        fingerprint: &str,
        now_unix_s: u64,
        retention_s: u64,
        stale_before_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        check_key(key)?;
        check_fingerprint(fingerprint)?;
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let expires = Unsigned::new("payment id expiry", now_unix_s.saturating_add(retention_s))?;
        let stale = Unsigned::new("stale_before_unix_s", stale_before_unix_s)?;
        let done = db_call!(
            self.db,
            "claim_payment_id",
            execute | pool | {
                sqlx::query(CLAIM)
                    .bind(Hex(key.payer))
                    .bind(&key.route)
                    .bind(&key.id)
                    .bind(fingerprint)
                    .bind(now)
                    .bind(expires)
                    .bind(stale)
            }
        )?;
        Ok(done == 1)
    }

    /// Binds the claimed id to the entry its payment reserved. `false` when the record is not
    /// this payment's claim any more (it cannot be: the claim is taken over only unused).
    pub async fn attach_entry(
        &self,
        key: &PaymentIdKey,
        fingerprint: &str,
        entry: &EntryId,
    ) -> Result<bool, MeteringError> {
        check_key(key)?;
        let done = db_call!(
            self.db,
            "attach_payment_id",
            execute | pool | {
                sqlx::query(ATTACH).bind(Hex(key.payer)).bind(&key.route).bind(&key.id).bind(fingerprint).bind(entry)
            }
        )?;
        Ok(done == 1)
    }

    /// Stores what the agent was told, once (`false` when an outcome is already stored or the
    /// record has no entry).
    pub async fn record_outcome(
        &self,
        key: &PaymentIdKey,
        fingerprint: &str,
        outcome: &str,
    ) -> Result<bool, MeteringError> {
        check_key(key)?;
        check_len("payment id outcome", outcome, PAYMENT_ID_OUTCOME_BYTES_MAX)?;
        let done = db_call!(
            self.db,
            "record_payment_id_outcome",
            execute | pool | {
                sqlx::query(OUTCOME).bind(Hex(key.payer)).bind(&key.route).bind(&key.id).bind(fingerprint).bind(outcome)
            }
        )?;
        Ok(done == 1)
    }

    /// Gives back a claim whose payment reserved nothing (refused before the reservation), so
    /// the same id and payment may be tried again. A record with an entry is never released.
    pub async fn release(&self, key: &PaymentIdKey, fingerprint: &str) -> Result<(), MeteringError> {
        check_key(key)?;
        db_call!(
            self.db,
            "release_payment_id",
            execute | pool | sqlx::query(RELEASE).bind(Hex(key.payer)).bind(&key.route).bind(&key.id).bind(fingerprint)
        )
        .map(drop)
    }

    /// Deletes the records expired by `now_unix_s`; returns how many.
    pub async fn purge_expired(&self, now_unix_s: u64) -> Result<u64, MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        db_call!(self.db, "purge_payment_ids", execute | pool | sqlx::query(PURGE).bind(now))
    }
}
