//! `Ledger`: the handle the rest of tollgate holds. It connects (and migrates) one database
//! and hands out its repositories, one per concern, all sharing the same [`crate::db`] handle:
//!
//! | accessor | repository | concern |
//! | --- | --- | --- |
//! | [`Ledger::entries`] | [`Entries`] | reserve (wallet policies checked in its transaction), transitions, notes, reads |
//! | [`Ledger::spend`] | [`Spend`] | pending and settled spend, revenue, entries per state |
//! | [`Ledger::leases`] | [`Leases`] | one process at a time per named resource |
//! | [`Ledger::policies`] | [`Policies`] | wallet policies as stored |
//! | [`Ledger::catalog`] | [`Catalog`] | providers, endpoints, price versions, credential ciphertexts |
//! | [`Ledger::tokens`] | [`Tokens`] | admin token hashes |
//! | [`Ledger::audit`] | [`Audit`] | the hash-chained audit log |
//! | [`Ledger::recon`] | [`ReconStore`] | reconciliation inputs, runs, exceptions, notes, cursor |
//! | [`Ledger::settings`] | [`Settings`] | allowlist mode, the change counter, change notifications |
//! | [`Ledger::payment_ids`] | [`PaymentIds`] | x402 payment identifiers: claims, entries, outcomes |
//!
//! Each repository is also a cheap, cloneable value, so a service that needs one concern can
//! hold that repository alone (`ledger.entries().clone()`).
//!
//! Must not: hold SQL (the repositories own it) or know HTTP.

use std::fmt;

use crate::MeteringError;
use crate::db::{Db, Engine, LedgerOptions};
use crate::repo::audit::Audit;
use crate::repo::catalog::Catalog;
use crate::repo::entries::Entries;
use crate::repo::leases::Leases;
use crate::repo::payment_ids::PaymentIds;
use crate::repo::policies::Policies;
use crate::repo::recon::ReconStore;
use crate::repo::settings::Settings;
use crate::repo::spend::Spend;
use crate::repo::tokens::Tokens;

/// The ledger: a handle on the database and its repositories. Cheap to clone; clones share the
/// pool.
#[derive(Clone)]
pub struct Ledger {
    db: Db,
    entries: Entries,
    spend: Spend,
    leases: Leases,
    policies: Policies,
    catalog: Catalog,
    tokens: Tokens,
    audit: Audit,
    recon: ReconStore,
    settings: Settings,
    payment_ids: PaymentIds,
}

impl fmt::Debug for Ledger {
    // By hand: one line, not nine copies of the database handle.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger").field("db", &self.db).finish_non_exhaustive()
    }
}

impl Ledger {
    /// Connects to the database the URL names and applies the migrations (idempotent: a second
    /// connect to a migrated database changes nothing).
    ///
    /// SQLite runs in WAL mode with `synchronous = FULL` by default (a reservation must survive
    /// a power cut: it is the record that money may move; see
    /// [`LedgerOptions::sqlite_synchronous_full`]), foreign keys on and `busy_timeout` set to
    /// `statement_timeout_ms`. An in-memory SQLite database lives in one connection, never
    /// recycled. PostgreSQL connections get `statement_timeout` at startup.
    pub async fn connect(url: &str, opts: LedgerOptions) -> Result<Ledger, MeteringError> {
        let db = Db::connect(url, opts).await?;
        Ok(Ledger {
            entries: Entries::new(db.clone()),
            spend: Spend::new(db.clone()),
            leases: Leases::new(db.clone()),
            policies: Policies::new(db.clone()),
            catalog: Catalog::new(db.clone()),
            tokens: Tokens::new(db.clone()),
            audit: Audit::new(db.clone()),
            recon: ReconStore::new(db.clone()),
            settings: Settings::new(db.clone()),
            payment_ids: PaymentIds::new(db.clone()),
            db,
        })
    }

    /// Readiness: the database answers and its schema is the one this build migrates to
    /// (the newest embedded migration is applied). Returns the applied schema version.
    pub async fn schema_check(&self) -> Result<i64, MeteringError> {
        self.db.schema_check().await
    }

    /// The engine behind this ledger.
    pub fn engine(&self) -> Engine {
        self.db.engine()
    }

    /// Closes the pools: waits for calls in progress, then closes every connection. Calls after
    /// this fail, through every repository.
    pub async fn close(&self) {
        self.db.close().await
    }

    /// x402 payment identifiers (idempotent paid calls).
    pub fn payment_ids(&self) -> &PaymentIds {
        &self.payment_ids
    }

    /// Ledger entries: reserve, transitions, notes, reads.
    pub fn entries(&self) -> &Entries {
        &self.entries
    }

    /// Spend totals, revenue and entries per state.
    pub fn spend(&self) -> &Spend {
        &self.spend
    }

    /// Leases.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    /// Wallet policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Providers, endpoints, prices and credentials.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Admin tokens.
    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The audit log.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The reconciliation store.
    pub fn recon(&self) -> &ReconStore {
        &self.recon
    }

    /// Allowlist mode, the change counter and change notifications.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use alloy_primitives::{Address, B256};

    use super::*;
    use crate::types::{AtomicAmount, EntryState, NewEntry};

    #[tokio::test]
    async fn in_memory_sqlite_is_one_database() {
        // Goal: `sqlite::memory:` gives one migrated database that every call sees, even with a larger pool asked for.
        let opts = LedgerOptions { max_connections: 4, ..LedgerOptions::default() };
        let ledger = Ledger::connect("sqlite::memory:", opts).await.unwrap();
        let entry = NewEntry {
            chain_id: 1,
            asset: Address::repeat_byte(1),
            payer: Address::repeat_byte(2),
            pay_to: Address::repeat_byte(3),
            nonce: B256::repeat_byte(4),
            amount: AtomicAmount::new(5).unwrap(),
            valid_before_unix_s: 10,
            provider: "p".to_owned(),
            route: "r".to_owned(),
            method: "GET".to_owned(),
            path: "/".to_owned(),
            mode: crate::SettlementMode::After,
            payment: "{}".to_owned(),
            price_version: None,
            credential: None,
            credential_version: None,
            now_unix_s: 1,
        };
        let (a, b) = tokio::join!(
            ledger.entries().reserve(&entry),
            ledger.entries().by_authorization(1, entry.asset, entry.payer, entry.nonce)
        );
        let id = a.unwrap();
        assert!(b.unwrap().is_none_or(|e| e.id == id));
        assert_eq!(ledger.entries().get(&id).await.unwrap().unwrap().state, EntryState::Reserved);
        assert!(matches!(ledger.entries().reserve(&entry).await, Err(MeteringError::DuplicateAuthorization { .. })));
    }
}
