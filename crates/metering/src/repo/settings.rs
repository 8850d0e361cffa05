//! `Settings`: the control plane's global row (`control_state`: allowlist mode and the change
//! counter replicas watch), the admin change log, and change notifications.
//!
//! Owns [`record_change!`], the one way an admin change is recorded: inside the change's own
//! transaction it bumps `control_state.version`, appends to `admin_log` and, on PostgreSQL,
//! sends `NOTIFY tollgate_control` (delivered on commit). The catalog, tokens and policies
//! repositories use it; this file imports none of them.
//!
//! Must not: know HTTP or roles' routes.

use std::fmt;

use serde::Serialize;

use crate::MeteringError;
use crate::db::codec::Unsigned;
use crate::db::{Db, Pool, db_call};

/// The PostgreSQL channel notified after every control-plane change.
pub const CONTROL_CHANNEL: &str = "tollgate_control";

pub(crate) const BUMP_VERSION: &str = "UPDATE control_state SET version = version + 1 WHERE id = 1 RETURNING version";
pub(crate) const INSERT_ADMIN_LOG: &str =
    "INSERT INTO admin_log (at_unix_s, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const NOTIFY: &str = "SELECT pg_notify('tollgate_control', $1)";

/// Who made an admin change (for the admin log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String);

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The control plane's global settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ControlState {
    /// Only registered wallets may pay.
    pub allowlist_mode: bool,
    /// Increases with every change.
    pub version: u64,
}

/// Inside an open transaction `$tx` of `$db`: bump the change counter, log the change, and
/// notify other replicas (PostgreSQL) on commit. `$now` is an [`Unsigned`] time.
macro_rules! record_change {
    ($db:expr, $tx:expr, $err:expr, $actor:expr, $action:expr, $target:expr, $detail:expr, $now:expr) => {{
        let (version,): (i64,) =
            sqlx::query_as($crate::repo::settings::BUMP_VERSION).fetch_one(&mut *$tx).await.map_err($err)?;
        sqlx::query($crate::repo::settings::INSERT_ADMIN_LOG)
            .bind($now)
            .bind(&$actor.0)
            .bind($action)
            .bind($target)
            .bind($detail)
            .execute(&mut *$tx)
            .await
            .map_err($err)?;
        if $db.engine() == $crate::db::Engine::Postgres {
            sqlx::query($crate::repo::settings::NOTIFY)
                .bind(version.to_string())
                .execute(&mut *$tx)
                .await
                .map_err($err)?;
        }
    }};
}
pub(crate) use record_change;

/// Wakes on `NOTIFY tollgate_control` (PostgreSQL only).
pub struct ControlListener(sqlx::postgres::PgListener);

impl fmt::Debug for ControlListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ControlListener")
    }
}

impl ControlListener {
    /// Waits for the next change notification.
    pub async fn recv(&mut self) -> Result<(), MeteringError> {
        self.0.recv().await.map(|_| ()).map_err(|e| MeteringError::Database {
            op: "control_listener",
            reason: e.to_string(),
            retryable: true,
        })
    }
}

/// The settings repository. Cheap to clone; clones share the database handle.
#[derive(Debug, Clone)]
pub struct Settings {
    db: Db,
}

impl Settings {
    pub(crate) fn new(db: Db) -> Settings {
        Settings { db }
    }

    /// A listener for control-plane changes: `Some` on PostgreSQL, `None` on SQLite (which
    /// has no notifications; replicas poll [`Settings::state`]).
    pub async fn listener(&self) -> Result<Option<ControlListener>, MeteringError> {
        const OP: &str = "control_listener";
        let Pool::Postgres(pool) = &self.db.pool else { return Ok(None) };
        let err = |e: sqlx::Error| self.db.error(OP, e);
        self.db
            .bounded(OP, async {
                let mut l = sqlx::postgres::PgListener::connect_with(pool).await.map_err(err)?;
                l.listen(CONTROL_CHANNEL).await.map_err(err)?;
                Ok(Some(ControlListener(l)))
            })
            .await
    }

    /// The global settings and change counter.
    pub async fn state(&self) -> Result<ControlState, MeteringError> {
        let (allowlist, version): (i64, Unsigned) = db_call!(
            self.db,
            "control_state",
            read | pool | {
                sqlx::query_as("SELECT allowlist_mode, version FROM control_state WHERE id = 1").fetch_one(pool)
            }
        )?;
        Ok(ControlState { allowlist_mode: allowlist != 0, version: version.get() })
    }

    /// Turns allowlist mode on or off.
    pub async fn set_allowlist_mode(&self, on: bool, actor: &Actor, now_unix_s: u64) -> Result<(), MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        db_call!(
            self.db,
            "set_allowlist_mode",
            tx | tx,
            err | {
                sqlx::query("UPDATE control_state SET allowlist_mode = $1 WHERE id = 1")
                    .bind(i64::from(on))
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                let detail = if on { "on" } else { "off" };
                record_change!(self.db, tx, err, actor, "settings.allowlist_mode", "control", Some(detail), now);
                tx.commit().await.map_err(err)
            }
        )
    }
}
