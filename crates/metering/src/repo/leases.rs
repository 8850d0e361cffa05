//! `Leases`: named, expiring locks in the database that let one process at a time act for a
//! shared resource (a relayer key's nonce sequence, the recovery sweep), across replicas.
//!
//! Must not: import another repository, or decide what a lease protects (callers name it).

use crate::MeteringError;
use crate::checks::check_len;
use crate::db::codec::Unsigned;
use crate::db::{Db, db_call};
use crate::types::LABEL_BYTES_MAX;

const UPSERT_LEASE: &str = "INSERT INTO leases (name, holder, expires_unix_s) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_unix_s = excluded.expires_unix_s \
     WHERE leases.holder = excluded.holder OR leases.expires_unix_s <= $4";

const DELETE_LEASE: &str = "DELETE FROM leases WHERE name = $1 AND holder = $2";

/// The leases repository. Cheap to clone; clones share the database handle.
#[derive(Debug, Clone)]
pub struct Leases {
    db: Db,
}

impl Leases {
    pub(crate) fn new(db: Db) -> Leases {
        Leases { db }
    }

    /// Whether leases are needed at all: the database can be shared by several processes
    /// (PostgreSQL, gateway replicas). An embedded SQLite database serves one gateway process,
    /// which needs none. Callers ask this instead of checking the engine.
    pub fn needed(&self) -> bool {
        self.db.engine() == crate::db::Engine::Postgres
    }

    /// Takes or renews the lease `name` for `holder` until `now_unix_s + ttl_s`. Succeeds
    /// (`true`) if the lease is free, expired, or already held by `holder`; `false` if another
    /// holder has it. Atomic on both engines (one upsert), so two processes cannot both win.
    pub async fn try_acquire(
        &self,
        name: &str,
        holder: &str,
        ttl_s: u64,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        check_lease_names(name, holder)?;
        if ttl_s == 0 {
            return Err(MeteringError::InvalidValue { what: "lease ttl", reason: "must be at least 1 s".to_owned() });
        }
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let expires = Unsigned::new("lease expiry", now_unix_s.saturating_add(ttl_s))?;
        let done = db_call!(
            self.db,
            "try_lease",
            execute | pool | { sqlx::query(UPSERT_LEASE).bind(name).bind(holder).bind(expires).bind(now) }
        )?;
        Ok(done == 1)
    }

    /// Releases the lease if `holder` has it; otherwise does nothing.
    pub async fn release(&self, name: &str, holder: &str) -> Result<(), MeteringError> {
        check_lease_names(name, holder)?;
        db_call!(self.db, "release_lease", execute | pool | sqlx::query(DELETE_LEASE).bind(name).bind(holder)).map(drop)
    }
}

fn check_lease_names(name: &str, holder: &str) -> Result<(), MeteringError> {
    for (what, value) in [("lease name", name), ("lease holder", holder)] {
        if value.is_empty() {
            return Err(MeteringError::InvalidValue { what, reason: "must not be empty".to_owned() });
        }
        check_len(what, value, LABEL_BYTES_MAX)?;
    }
    Ok(())
}
