//! `Audit`: the hash-chained audit log of paid-call attempts. Append in order, query by
//! filters, and verify the whole chain.
//!
//! Owns the chain's rules: records are chained under a lock on `audit_head` (`FOR UPDATE` on
//! PostgreSQL; SQLite's write lock), so replicas appending at once still produce one chain;
//! each record's hash covers the previous hash and every field ([`audit_hash`]).
//!
//! Must not: import another repository, or know HTTP (the reason codes are opaque text).

use alloy_primitives::Address;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::MeteringError;
use crate::db::codec::{Hex, Unsigned};
use crate::db::{Db, Engine, db_call};

const AUDIT_COLUMNS: &str = "seq, at_unix_ms, wallet, provider, endpoint, method, path, price_version, decision, \
     reason, credential, credential_version, upstream_status, latency_ms, entry_id, tx_hash, prev_hash, hash";

const INSERT_AUDIT: &str = "INSERT INTO audit_log (seq, at_unix_ms, wallet, provider, endpoint, method, path, \
     price_version, decision, reason, credential, credential_version, upstream_status, latency_ms, entry_id, \
     tx_hash, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
     $17, $18)";

/// Accepted or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// The payment was accepted (the call was forwarded or settled).
    Accepted,
    /// The attempt was refused.
    Denied,
}

impl Decision {
    fn as_str(self) -> &'static str {
        match self {
            Decision::Accepted => "accepted",
            Decision::Denied => "denied",
        }
    }
    /// Parses `accepted` / `denied`.
    pub fn parse(s: &str) -> Option<Decision> {
        match s {
            "accepted" => Some(Decision::Accepted),
            "denied" => Some(Decision::Denied),
            _ => None,
        }
    }
}

/// One paid-call attempt to audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewAuditRecord {
    /// When the attempt finished (ms).
    pub at_unix_ms: u64,
    /// The payer, when the payment decoded.
    pub wallet: Option<Address>,
    /// The provider.
    pub provider: Option<String>,
    /// The endpoint name.
    pub endpoint: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Price version quoted.
    pub price_version: Option<u64>,
    /// Accepted or denied.
    pub decision: Decision,
    /// Stable reason code (`ok` when accepted and served).
    pub reason: String,
    /// Credential id that served the call.
    pub credential: Option<String>,
    /// Its version.
    pub credential_version: Option<u64>,
    /// Upstream status.
    pub upstream_status: Option<u16>,
    /// Time spent in the gateway.
    pub latency_ms: u64,
    /// Ledger entry id.
    pub entry_id: Option<String>,
    /// Settlement transaction.
    pub tx_hash: Option<String>,
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// Position in the chain (1, 2, ...).
    pub seq: u64,
    /// The record.
    #[serde(flatten)]
    pub record: NewAuditRecord,
    /// The previous record's hash (zeros for the first).
    pub prev_hash: String,
    /// SHA-256 over the previous hash and this record.
    pub hash: String,
}

/// Filters of an audit query; all optional. Pages by `after_seq`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Payer.
    pub wallet: Option<Address>,
    /// Endpoint name.
    pub endpoint: Option<String>,
    /// Provider.
    pub provider: Option<String>,
    /// From (inclusive, ms).
    pub from_unix_ms: Option<u64>,
    /// To (exclusive, ms).
    pub to_unix_ms: Option<u64>,
    /// Decision.
    pub decision: Option<Decision>,
    /// Records after this sequence number.
    pub after_seq: Option<u64>,
    /// Page size (capped at 1000).
    pub limit: u32,
}

/// What [`Audit::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditVerification {
    /// Records checked.
    pub records: u64,
    /// The chain is intact.
    pub intact: bool,
    /// The first record where it breaks.
    pub broken_at_seq: Option<u64>,
    /// What is wrong there.
    pub problem: Option<String>,
}

const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hash of an audit record: SHA-256 over the previous hash and a canonical JSON array of
/// the sequence number and every field, in a fixed order.
pub fn audit_hash(seq: u64, r: &NewAuditRecord, prev_hash: &str) -> String {
    let canonical = serde_json::json!([
        seq,
        r.at_unix_ms,
        r.wallet.map(|w| Hex(w).text()),
        r.provider,
        r.endpoint,
        r.method,
        r.path,
        r.price_version,
        r.decision.as_str(),
        r.reason,
        r.credential,
        r.credential_version,
        r.upstream_status,
        r.latency_ms,
        r.entry_id,
        r.tx_hash,
    ]);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: Unsigned,
    at_unix_ms: Unsigned,
    wallet: Option<Hex<Address>>,
    provider: Option<String>,
    endpoint: Option<String>,
    method: String,
    path: String,
    price_version: Option<Unsigned>,
    decision: String,
    reason: String,
    credential: Option<String>,
    credential_version: Option<Unsigned>,
    upstream_status: Option<Unsigned>,
    latency_ms: Unsigned,
    entry_id: Option<String>,
    tx_hash: Option<String>,
    prev_hash: String,
    hash: String,
}

impl AuditRow {
    fn into_record(self) -> Result<AuditRecord, MeteringError> {
        Ok(AuditRecord {
            seq: self.seq.get(),
            record: NewAuditRecord {
                at_unix_ms: self.at_unix_ms.get(),
                wallet: self.wallet.map(|w| w.0),
                provider: self.provider,
                endpoint: self.endpoint,
                method: self.method,
                path: self.path,
                price_version: self.price_version.map(Unsigned::get),
                decision: Decision::parse(&self.decision)
                    .ok_or_else(|| MeteringError::corrupt("decision", &self.decision))?,
                reason: self.reason,
                credential: self.credential,
                credential_version: self.credential_version.map(Unsigned::get),
                upstream_status: self
                    .upstream_status
                    .map(|v| u16::try_from(v.get()))
                    .transpose()
                    .map_err(|_| MeteringError::corrupt("upstream_status", "range"))?,
                latency_ms: self.latency_ms.get(),
                entry_id: self.entry_id,
                tx_hash: self.tx_hash,
            },
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

/// The audit log repository. Cheap to clone; clones share the database handle.
#[derive(Debug, Clone)]
pub struct Audit {
    db: Db,
}

impl Audit {
    pub(crate) fn new(db: Db) -> Audit {
        Audit { db }
    }

    /// Appends audit records to the chain, in order, and returns the last sequence number.
    pub async fn append(&self, records: &[NewAuditRecord]) -> Result<u64, MeteringError> {
        let lock = match self.db.engine() {
            Engine::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
            Engine::Sqlite => "SELECT seq, hash FROM audit_head WHERE id = 1",
        };
        let last: Unsigned = db_call!(
            self.db,
            "append_audit",
            tx | tx,
            err | {
                let (mut seq, mut prev): (Unsigned, String) =
                    sqlx::query_as(lock).fetch_one(&mut *tx).await.map_err(err)?;
                for r in records {
                    seq = Unsigned::new("seq", seq.get() + 1)?;
                    let hash = audit_hash(seq.get(), r, &prev);
                    sqlx::query(INSERT_AUDIT)
                        .bind(seq)
                        .bind(Unsigned::new("at_unix_ms", r.at_unix_ms)?)
                        .bind(r.wallet.map(Hex))
                        .bind(r.provider.as_deref())
                        .bind(r.endpoint.as_deref())
                        .bind(&r.method)
                        .bind(&r.path)
                        .bind(Unsigned::opt("price_version", r.price_version)?)
                        .bind(r.decision.as_str())
                        .bind(&r.reason)
                        .bind(r.credential.as_deref())
                        .bind(Unsigned::opt("credential_version", r.credential_version)?)
                        .bind(r.upstream_status.map(i64::from))
                        .bind(Unsigned::new("latency_ms", r.latency_ms)?)
                        .bind(r.entry_id.as_deref())
                        .bind(r.tx_hash.as_deref())
                        .bind(&prev)
                        .bind(&hash)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?;
                    prev = hash;
                }
                sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(&prev)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                tx.commit().await.map_err(err)?;
                Ok(seq)
            }
        )?;
        Ok(last.get())
    }

    /// Audit records matching the query, by sequence number.
    pub async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, MeteringError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE ($1 IS NULL OR wallet = $1) \
             AND ($2 IS NULL OR endpoint = $2) AND ($3 IS NULL OR provider = $3) \
             AND ($4 IS NULL OR at_unix_ms >= $4) AND ($5 IS NULL OR at_unix_ms < $5) \
             AND ($6 IS NULL OR decision = $6) AND seq > $7 ORDER BY seq LIMIT $8"
        );
        let from = Unsigned::opt("from_unix_ms", q.from_unix_ms)?;
        let to = Unsigned::opt("to_unix_ms", q.to_unix_ms)?;
        let after = Unsigned::new("after_seq", q.after_seq.unwrap_or(0))?;
        let limit = Unsigned::of_u32(q.limit.clamp(1, 1000));
        let rows: Vec<AuditRow> = db_call!(
            self.db,
            "audit",
            read | pool | {
                sqlx::query_as(&sql)
                    .bind(q.wallet.map(Hex))
                    .bind(q.endpoint.as_deref())
                    .bind(q.provider.as_deref())
                    .bind(from)
                    .bind(to)
                    .bind(q.decision.map(Decision::as_str))
                    .bind(after)
                    .bind(limit)
                    .fetch_all(pool)
            }
        )?;
        rows.into_iter().map(AuditRow::into_record).collect()
    }

    /// Walks the whole audit chain: sequence numbers without gaps, each record's `prev_hash`
    /// equal to the previous record's hash, each hash recomputed, and the head matching the
    /// last record (a deleted tail). Reports the first break.
    pub async fn verify(&self) -> Result<AuditVerification, MeteringError> {
        const OP: &str = "verify_audit";
        const PAGE: u32 = 1000;
        let broken = |records: u64, seq: u64, problem: String| AuditVerification {
            records,
            intact: false,
            broken_at_seq: Some(seq),
            problem: Some(problem),
        };
        // The head first: records appended while the walk runs are beyond it and not judged.
        let (head_seq, head_hash): (Unsigned, String) = db_call!(
            self.db,
            OP,
            read | pool | { sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(pool) }
        )?;
        let head_seq = head_seq.get();
        let sql = format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2");
        let mut expected_seq: u64 = 1;
        let mut prev = ZERO_HASH.to_owned();
        let mut records: u64 = 0;
        while expected_seq <= head_seq {
            let after = Unsigned::new("seq", expected_seq - 1)?;
            let head = Unsigned::new("seq", head_seq)?;
            let rows: Vec<AuditRow> = db_call!(
                self.db,
                OP,
                read | pool | {
                    sqlx::query_as(&sql).bind(after).bind(Unsigned::of_u32(PAGE)).bind(head).fetch_all(pool)
                }
            )?;
            let n = rows.len();
            for row in rows {
                let r = row.into_record()?;
                records += 1;
                if r.seq != expected_seq {
                    return Ok(broken(records, expected_seq, format!("record {expected_seq} is missing")));
                }
                if r.prev_hash != prev {
                    return Ok(broken(records, r.seq, "does not link to the previous record".to_owned()));
                }
                if audit_hash(r.seq, &r.record, &prev) != r.hash {
                    return Ok(broken(records, r.seq, "content does not match its hash (edited)".to_owned()));
                }
                prev = r.hash;
                expected_seq += 1;
            }
            if n < usize::try_from(PAGE).unwrap_or(usize::MAX) {
                break;
            }
        }
        if head_seq != expected_seq - 1 || head_hash != prev {
            return Ok(broken(
                records,
                expected_seq,
                format!("the chain ends at {} but its head says {head_seq} (records deleted)", expected_seq - 1),
            ));
        }
        Ok(AuditVerification { records, intact: true, broken_at_seq: None, problem: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_hash_covers_every_field_and_the_link() {
        // Goal: the sequence number, the previous hash and every field change the hash.
        let r = NewAuditRecord {
            at_unix_ms: 1,
            wallet: None,
            provider: Some("p".into()),
            endpoint: Some("p:/x".into()),
            method: "GET".into(),
            path: "/x".into(),
            price_version: Some(1),
            decision: Decision::Accepted,
            reason: "ok".into(),
            credential: None,
            credential_version: None,
            upstream_status: Some(200),
            latency_ms: 3,
            entry_id: None,
            tx_hash: None,
        };
        let h = audit_hash(1, &r, ZERO_HASH);
        assert_ne!(h, audit_hash(2, &r, ZERO_HASH));
        assert_ne!(h, audit_hash(1, &r, &"1".repeat(64)));
        let mut edited = r.clone();
        edited.upstream_status = Some(500);
        assert_ne!(h, audit_hash(1, &edited, ZERO_HASH));
    }
}
