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
//!
//! Each repository is also a cheap, cloneable value, so a service that needs one concern can
//! hold that repository alone (`ledger.entries().clone()`).
//!
//! Must not: hold SQL (the repositories own it) or know HTTP.

use std::fmt;

use crate::MeteringError;
// For the forwarding methods below (removed once the callers use the repositories).
use crate::db::{Db, Engine, LedgerOptions};
use crate::repo::audit::Audit;
use crate::repo::catalog::Catalog;
use crate::repo::entries::Entries;
use crate::repo::leases::Leases;
use crate::repo::policies::Policies;
use crate::repo::recon::ReconStore;
use crate::repo::settings::Settings;
use crate::repo::spend::Spend;
use crate::repo::tokens::Tokens;
use crate::{
    Actor, AdminToken, AuditVerification, ControlListener, ControlState, CredentialVersion, EndpointRecord,
    EndpointWrite, Entry, EntryId, EntryState, Event, NewAuditRecord, NewEntry, NewReconRun, PriceVersion,
    ProviderRecord, ReconException, ReconNote, ReconRun, RevenueLine, Role, Source, StateCounts, Transition,
    WalletPolicy,
};
use alloy_primitives::{Address, B256};

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

/// The ledger's methods before the repositories, each forwarding to its new path, so that the
/// callers move in a commit of their own. Removed with that commit.
#[allow(missing_docs)]
impl Ledger {
    /// Moved: `spend().state_counts`.
    pub async fn state_counts(&self) -> Result<StateCounts, MeteringError> {
        self.spend.state_counts().await
    }

    /// Moved: `entries().reserve`.
    pub async fn reserve(&self, e: &NewEntry) -> Result<EntryId, MeteringError> {
        self.entries.reserve(e).await
    }

    /// Moved: `entries().transition`.
    pub async fn transition(
        &self,
        id: &EntryId,
        t: Transition,
        cause: &str,
        detail: Option<&str>,
        now_unix_s: u64,
    ) -> Result<Entry, MeteringError> {
        self.entries.transition(id, t, cause, detail, now_unix_s).await
    }

    /// Moved: `entries().transition_from`.
    pub async fn transition_from(
        &self,
        id: &EntryId,
        expected: EntryState,
        t: Transition,
        cause: &str,
        detail: Option<&str>,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        self.entries.transition_from(id, expected, t, cause, detail, now_unix_s).await
    }

    /// Moved: `entries().note_settling`.
    pub async fn note_settling(&self, id: &EntryId, cause: &str, now_unix_s: u64) -> Result<bool, MeteringError> {
        self.entries.note_settling(id, cause, now_unix_s).await
    }

    /// Moved: `entries().reopen_reorged`.
    pub async fn reopen_reorged(
        &self,
        id: &EntryId,
        recorded_block_hash: B256,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        self.entries.reopen_reorged(id, recorded_block_hash, now_unix_s).await
    }

    /// Moved: `entries().get`.
    pub async fn entry(&self, id: &EntryId) -> Result<Option<Entry>, MeteringError> {
        self.entries.get(id).await
    }

    /// Moved: `entries().by_authorization`.
    pub async fn entry_by_authorization(
        &self,
        chain_id: u64,
        asset: Address,
        payer: Address,
        nonce: B256,
    ) -> Result<Option<Entry>, MeteringError> {
        self.entries.by_authorization(chain_id, asset, payer, nonce).await
    }

    /// Moved: `entries().events`.
    pub async fn events(&self, id: &EntryId) -> Result<Vec<Event>, MeteringError> {
        self.entries.events(id).await
    }

    /// Moved: `entries().unfinished`.
    pub async fn unfinished(&self, updated_before_unix_s: u64, limit: u32) -> Result<Vec<Entry>, MeteringError> {
        self.entries.unfinished(updated_before_unix_s, limit).await
    }

    /// Moved: `entries().deferred_backlog`.
    pub async fn deferred_backlog(&self, limit: u32) -> Result<Vec<Entry>, MeteringError> {
        self.entries.deferred_backlog(limit).await
    }

    /// Moved: `entries().of_payer`.
    pub async fn entries_of_payer(
        &self,
        chain_id: u64,
        asset: Address,
        payer: Address,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        self.entries.of_payer(chain_id, asset, payer, limit).await
    }

    /// Moved: `entries().page`.
    pub async fn entries_page(
        &self,
        provider: Option<&str>,
        payer: Option<Address>,
        from_unix_s: u64,
        to_unix_s: u64,
        offset: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        self.entries.page(provider, payer, from_unix_s, to_unix_s, offset, limit).await
    }

    /// Moved: `entries().without_audit`.
    pub async fn entries_without_audit(
        &self,
        since_unix_s: u64,
        before_unix_s: u64,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        self.entries.without_audit(since_unix_s, before_unix_s, limit).await
    }

    /// Moved: `spend().pending`.
    pub async fn pending_spend(&self, chain_id: u64, asset: Address, payer: Address) -> Result<u128, MeteringError> {
        self.spend.pending(chain_id, asset, payer).await
    }

    /// Moved: `leases().try_acquire`.
    pub async fn try_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_s: u64,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        self.leases.try_acquire(name, holder, ttl_s, now_unix_s).await
    }

    /// Moved: `leases().release`.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), MeteringError> {
        self.leases.release(name, holder).await
    }

    /// Moved: `recon().settled_entries`.
    pub async fn settled_entries(
        &self,
        chain_id: u64,
        asset: Address,
        pay_to: Address,
        from_block: Option<u64>,
        to_block: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Entry>, MeteringError> {
        self.recon.settled_entries(chain_id, asset, pay_to, from_block, to_block, limit).await
    }

    /// Moved: `recon().record_run`.
    pub async fn record_recon_run(&self, run: &NewReconRun<'_>) -> Result<i64, MeteringError> {
        self.recon.record_run(run).await
    }

    /// Moved: `recon().runs`.
    pub async fn recon_runs(&self, chain_id: u64, asset: Address, limit: u32) -> Result<Vec<ReconRun>, MeteringError> {
        self.recon.runs(chain_id, asset, limit).await
    }

    /// Moved: `recon().cursor`.
    pub async fn recon_cursor(&self, chain_id: u64, asset: Address) -> Result<Option<u64>, MeteringError> {
        self.recon.cursor(chain_id, asset).await
    }

    /// Moved: `recon().exceptions`.
    pub async fn recon_exceptions(&self, run_id: i64) -> Result<Vec<ReconException>, MeteringError> {
        self.recon.exceptions(run_id).await
    }

    /// Moved: `recon().add_note`.
    pub async fn add_recon_note(
        &self,
        exception_id: i64,
        who: &str,
        why: &str,
        now_unix_s: u64,
    ) -> Result<i64, MeteringError> {
        self.recon.add_note(exception_id, who, why, now_unix_s).await
    }

    /// Moved: `recon().notes`.
    pub async fn recon_notes(&self, exception_id: i64) -> Result<Vec<ReconNote>, MeteringError> {
        self.recon.notes(exception_id).await
    }

    /// Moved: `settings().listener`.
    pub async fn control_listener(&self) -> Result<Option<ControlListener>, MeteringError> {
        self.settings.listener().await
    }

    /// Moved: `tokens().create`.
    pub async fn create_admin_token(
        &self,
        role: Role,
        provider: Option<&str>,
        token_hash_hex: &str,
        label: &str,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<AdminToken, MeteringError> {
        self.tokens.create(role, provider, token_hash_hex, label, actor, now_unix_s).await
    }

    /// Moved: `tokens().by_hash`.
    pub async fn admin_token_by_hash(&self, token_hash_hex: &str) -> Result<Option<AdminToken>, MeteringError> {
        self.tokens.by_hash(token_hash_hex).await
    }

    /// Moved: `tokens().list`.
    pub async fn admin_tokens(&self) -> Result<Vec<AdminToken>, MeteringError> {
        self.tokens.list().await
    }

    /// Moved: `tokens().revoke`.
    pub async fn revoke_admin_token(&self, id: &str, actor: &Actor, now_unix_s: u64) -> Result<bool, MeteringError> {
        self.tokens.revoke(id, actor, now_unix_s).await
    }

    /// Moved: `catalog().put_provider`.
    pub async fn put_provider(
        &self,
        id: &str,
        spec: &str,
        source: Source,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<(), MeteringError> {
        self.catalog.put_provider(id, spec, source, actor, now_unix_s).await
    }

    /// Moved: `catalog().providers`.
    pub async fn providers(&self) -> Result<Vec<ProviderRecord>, MeteringError> {
        self.catalog.providers().await
    }

    /// Moved: `catalog().put_endpoint`.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_endpoint(
        &self,
        provider: &str,
        path: &str,
        spec: &str,
        prices: &str,
        source: Source,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<EndpointWrite, MeteringError> {
        self.catalog.put_endpoint(provider, path, spec, prices, source, actor, now_unix_s).await
    }

    /// Moved: `catalog().set_endpoint_enabled`.
    pub async fn set_endpoint_enabled(
        &self,
        provider: &str,
        path: &str,
        enabled: bool,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        self.catalog.set_endpoint_enabled(provider, path, enabled, actor, now_unix_s).await
    }

    /// Moved: `catalog().endpoints`.
    pub async fn endpoints(&self, provider: Option<&str>) -> Result<Vec<EndpointRecord>, MeteringError> {
        self.catalog.endpoints(provider).await
    }

    /// Moved: `catalog().price_versions`.
    pub async fn price_versions(&self, endpoint_id: u64) -> Result<Vec<PriceVersion>, MeteringError> {
        self.catalog.price_versions(endpoint_id).await
    }

    /// Moved: `catalog().add_credential_version`.
    pub async fn add_credential_version(
        &self,
        provider: &str,
        name: &str,
        nonce_hex: &str,
        ciphertext_hex: &str,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<u64, MeteringError> {
        self.catalog.add_credential_version(provider, name, nonce_hex, ciphertext_hex, actor, now_unix_s).await
    }

    /// Moved: `catalog().revoke_credential_version`.
    pub async fn revoke_credential_version(
        &self,
        provider: &str,
        name: &str,
        version: u64,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        self.catalog.revoke_credential_version(provider, name, version, actor, now_unix_s).await
    }

    /// Moved: `catalog().credential_versions`.
    pub async fn credential_versions(&self, provider: Option<&str>) -> Result<Vec<CredentialVersion>, MeteringError> {
        self.catalog.credential_versions(provider).await
    }

    /// Moved: `policies().put`.
    pub async fn put_wallet_policy(&self, p: &WalletPolicy, actor: &Actor) -> Result<(), MeteringError> {
        self.policies.put(p, actor).await
    }

    /// Moved: `policies().set_revoked`.
    pub async fn set_wallet_revoked(
        &self,
        scope: &str,
        wallet: Address,
        revoked: bool,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<(), MeteringError> {
        self.policies.set_revoked(scope, wallet, revoked, actor, now_unix_s).await
    }

    /// Moved: `spend().revenue`.
    pub async fn revenue(
        &self,
        provider: &str,
        from_unix_s: u64,
        to_unix_s: u64,
    ) -> Result<Vec<RevenueLine>, MeteringError> {
        self.spend.revenue(provider, from_unix_s, to_unix_s).await
    }

    /// Moved: `policies().list`.
    pub async fn wallet_policies(
        &self,
        scope: Option<&str>,
        wallet: Option<Address>,
    ) -> Result<Vec<WalletPolicy>, MeteringError> {
        self.policies.list(scope, wallet).await
    }

    /// Moved: `settings().set_allowlist_mode`.
    pub async fn set_allowlist_mode(&self, on: bool, actor: &Actor, now_unix_s: u64) -> Result<(), MeteringError> {
        self.settings.set_allowlist_mode(on, actor, now_unix_s).await
    }

    /// Moved: `settings().state`.
    pub async fn control_state(&self) -> Result<ControlState, MeteringError> {
        self.settings.state().await
    }

    /// Moved: `audit().append`.
    pub async fn append_audit(&self, records: &[NewAuditRecord]) -> Result<u64, MeteringError> {
        self.audit.append(records).await
    }

    /// Moved: `audit().verify`.
    pub async fn verify_audit(&self) -> Result<AuditVerification, MeteringError> {
        self.audit.verify().await
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
