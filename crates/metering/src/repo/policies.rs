//! `Policies`: wallet policies as stored (per scope: `*` or a provider). Revocation,
//! registration, endpoint scope, per-call maximum, daily and monthly caps.
//!
//! The rules that apply them are in `crate::policy`, and they run inside the reservation's
//! transaction (`repo::entries`), not here: this repository only writes and lists policies.
//! Every change is recorded with [`record_change!`].
//!
//! Must not: import a repository other than `settings`, or know HTTP.

use alloy_primitives::Address;
use serde::Serialize;

use crate::MeteringError;
use crate::db::codec::{Hex, Unsigned};
use crate::db::{Db, db_call};
use crate::repo::settings::{Actor, record_change};

const POLICY_COLUMNS: &str =
    "scope, wallet, revoked, registered, endpoints, per_call_max, daily_cap, monthly_cap, updated_unix_s";

/// A wallet's policy in one scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalletPolicy {
    /// `*` or a provider id.
    pub scope: String,
    /// The wallet.
    pub wallet: Address,
    /// Denied outright.
    pub revoked: bool,
    /// Registered (counts in allowlist mode).
    pub registered: bool,
    /// Allowed endpoint names (`provider:path`); `None` allows all.
    pub endpoints: Option<Vec<String>>,
    /// Largest amount per call (atomic units).
    pub per_call_max: Option<u64>,
    /// Largest spend per UTC day (atomic units, summed over every asset).
    pub daily_cap: Option<u64>,
    /// Largest spend per UTC calendar month.
    pub monthly_cap: Option<u64>,
    /// Last change.
    pub updated_unix_s: u64,
}

#[derive(sqlx::FromRow)]
struct PolicyRow {
    scope: String,
    wallet: Hex<Address>,
    revoked: i64,
    registered: i64,
    endpoints: Option<String>,
    per_call_max: Option<Unsigned>,
    daily_cap: Option<Unsigned>,
    monthly_cap: Option<Unsigned>,
    updated_unix_s: Unsigned,
}

impl PolicyRow {
    fn into_policy(self) -> Result<WalletPolicy, MeteringError> {
        Ok(WalletPolicy {
            wallet: self.wallet.0,
            scope: self.scope,
            revoked: self.revoked != 0,
            registered: self.registered != 0,
            endpoints: self
                .endpoints
                .as_deref()
                .map(serde_json::from_str::<Vec<String>>)
                .transpose()
                .map_err(|e| MeteringError::corrupt("endpoints", e))?,
            per_call_max: self.per_call_max.map(Unsigned::get),
            daily_cap: self.daily_cap.map(Unsigned::get),
            monthly_cap: self.monthly_cap.map(Unsigned::get),
            updated_unix_s: self.updated_unix_s.get(),
        })
    }
}

/// The wallet policies repository. Cheap to clone; clones share the database handle.
#[derive(Debug, Clone)]
pub struct Policies {
    db: Db,
}

impl Policies {
    pub(crate) fn new(db: Db) -> Policies {
        Policies { db }
    }

    /// Creates or replaces a wallet's policy in its scope.
    pub async fn put(&self, p: &WalletPolicy, actor: &Actor) -> Result<(), MeteringError> {
        let now = Unsigned::new("updated_unix_s", p.updated_unix_s)?;
        let endpoints = p
            .endpoints
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| MeteringError::InvalidValue { what: "endpoints", reason: e.to_string() })?;
        let per_call_max = Unsigned::opt("per_call_max", p.per_call_max)?;
        let daily_cap = Unsigned::opt("daily_cap", p.daily_cap)?;
        let monthly_cap = Unsigned::opt("monthly_cap", p.monthly_cap)?;
        let wallet = Hex(p.wallet);
        let target = format!("{}/{}", p.scope, wallet.text());
        let detail = serde_json::to_string(p).ok();
        db_call!(
            self.db,
            "put_wallet_policy",
            tx | tx,
            err | {
                sqlx::query(
                    "INSERT INTO wallet_policies (scope, wallet, revoked, registered, endpoints, per_call_max, \
                 daily_cap, monthly_cap, updated_unix_s) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (scope, wallet) DO UPDATE SET revoked = excluded.revoked, \
                 registered = excluded.registered, endpoints = excluded.endpoints, \
                 per_call_max = excluded.per_call_max, daily_cap = excluded.daily_cap, \
                 monthly_cap = excluded.monthly_cap, updated_unix_s = excluded.updated_unix_s",
                )
                .bind(&p.scope)
                .bind(wallet)
                .bind(i64::from(p.revoked))
                .bind(i64::from(p.registered))
                .bind(endpoints.as_deref())
                .bind(per_call_max)
                .bind(daily_cap)
                .bind(monthly_cap)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                record_change!(self.db, tx, err, actor, "wallet.put", &target, detail.as_deref(), now);
                tx.commit().await.map_err(err)
            }
        )
    }

    /// Revokes or reinstates a wallet in a scope, creating its policy if it has none (other
    /// fields untouched).
    pub async fn set_revoked(
        &self,
        scope: &str,
        wallet: Address,
        revoked: bool,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<(), MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let wallet = Hex(wallet);
        let target = format!("{scope}/{}", wallet.text());
        db_call!(
            self.db,
            "set_wallet_revoked",
            tx | tx,
            err | {
                sqlx::query(
                    "INSERT INTO wallet_policies (scope, wallet, revoked, registered, updated_unix_s) \
                 VALUES ($1, $2, $3, 0, $4) ON CONFLICT (scope, wallet) DO UPDATE SET \
                 revoked = excluded.revoked, updated_unix_s = excluded.updated_unix_s",
                )
                .bind(scope)
                .bind(wallet)
                .bind(i64::from(revoked))
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                let action = if revoked { "wallet.revoke" } else { "wallet.reinstate" };
                record_change!(self.db, tx, err, actor, action, &target, None::<&str>, now);
                tx.commit().await.map_err(err)
            }
        )
    }

    /// Wallet policies, optionally of one scope and/or one wallet.
    pub async fn list(&self, scope: Option<&str>, wallet: Option<Address>) -> Result<Vec<WalletPolicy>, MeteringError> {
        let sql = format!(
            "SELECT {POLICY_COLUMNS} FROM wallet_policies WHERE ($1 IS NULL OR scope = $1) \
             AND ($2 IS NULL OR wallet = $2) ORDER BY scope, wallet"
        );
        let rows: Vec<PolicyRow> = db_call!(
            self.db,
            "wallet_policies",
            read | pool | { sqlx::query_as(&sql).bind(scope).bind(wallet.map(Hex)).fetch_all(pool) }
        )?;
        rows.into_iter().map(PolicyRow::into_policy).collect()
    }
}
