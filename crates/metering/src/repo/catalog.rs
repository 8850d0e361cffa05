//! `Catalog`: what the gateway sells. Providers, their endpoints with versioned prices, and
//! the credentials that serve them (versions of ciphertext).
//!
//! Owns the rules that must hold under concurrency: a price different from the current one
//! makes exactly one new price version (the endpoint row is locked while prices are compared),
//! and credential versions are numbered one after the other (the provider row is locked).
//! Every change is recorded with [`record_change!`] in its own transaction.
//!
//! Must not: see a credential in clear or a master key (the gateway encrypts; this stores hex
//! ciphertext), parse a spec or a price list (opaque JSON here), or import a repository other
//! than `settings`.

use serde::Serialize;

use crate::MeteringError;
use crate::db::codec::Unsigned;
use crate::db::{Db, Engine, db_call};
use crate::repo::settings::{Actor, record_change};

const ENDPOINT_SELECT: &str = "SELECT e.id, e.provider, e.path, e.spec, e.source, e.enabled, \
     p.id AS price_version, p.prices, e.updated_unix_s, e.deleted_unix_s FROM endpoints e \
     JOIN price_versions p ON p.id = (SELECT MAX(id) FROM price_versions WHERE endpoint_id = e.id)";

/// Where a provider or endpoint record came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The TOML file (seeded at startup).
    Config,
    /// The admin API.
    Admin,
}

impl Source {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Admin => "admin",
        }
    }
    fn parse(s: &str) -> Source {
        if s == "config" { Source::Config } else { Source::Admin }
    }
}

/// A provider as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProviderRecord {
    /// Id.
    pub id: String,
    /// JSON spec (opaque here; the gateway validates it).
    pub spec: String,
    /// Origin.
    pub source: Source,
    /// Last change.
    pub updated_unix_s: u64,
    /// When it was deleted (soft: the row and everything naming it are kept); `None` while live.
    pub deleted_unix_s: Option<u64>,
}

/// An endpoint as stored, with its current price version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointRecord {
    /// Id.
    pub id: u64,
    /// Provider id.
    pub provider: String,
    /// Path pattern.
    pub path: String,
    /// JSON spec (opaque here).
    pub spec: String,
    /// Origin.
    pub source: Source,
    /// Whether it is served.
    pub enabled: bool,
    /// Current price version id.
    pub price_version: u64,
    /// Current prices, JSON (opaque here).
    pub prices: String,
    /// Last change.
    pub updated_unix_s: u64,
    /// When it was deleted (soft: its row, price versions and ledger references are kept);
    /// `None` while live.
    pub deleted_unix_s: Option<u64>,
}

/// One price version of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PriceVersion {
    /// Id (recorded by ledger entries).
    pub id: u64,
    /// Endpoint id.
    pub endpoint_id: u64,
    /// Prices, JSON.
    pub prices: String,
    /// When it was created.
    pub created_unix_s: u64,
}

/// What `put_endpoint` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EndpointWrite {
    /// The endpoint id.
    pub endpoint_id: u64,
    /// Its current price version.
    pub price_version: u64,
    /// Whether this call created that version (the price changed or the endpoint is new).
    pub new_price_version: bool,
}

/// One stored credential version: ciphertext only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialVersion {
    /// Provider id.
    pub provider: String,
    /// Credential name.
    pub name: String,
    /// Version (1, 2, ...).
    pub version: u64,
    /// AES-GCM nonce, hex (never served by the admin API).
    #[serde(skip)]
    pub nonce: String,
    /// Ciphertext with tag, hex (never served by the admin API).
    #[serde(skip)]
    pub ciphertext: String,
    /// Upload time.
    pub created_unix_s: u64,
    /// Revocation time.
    pub revoked_unix_s: Option<u64>,
}

#[derive(sqlx::FromRow)]
struct EndpointRow {
    id: Unsigned,
    provider: String,
    path: String,
    spec: String,
    source: String,
    enabled: i64,
    price_version: Unsigned,
    prices: String,
    updated_unix_s: Unsigned,
    deleted_unix_s: Option<Unsigned>,
}

#[derive(sqlx::FromRow)]
struct CredentialRow {
    provider: String,
    name: String,
    version: Unsigned,
    nonce: String,
    ciphertext: String,
    created_unix_s: Unsigned,
    revoked_unix_s: Option<Unsigned>,
}

/// The catalog repository. Cheap to clone; clones share the database handle.
#[derive(Debug, Clone)]
pub struct Catalog {
    db: Db,
}

impl Catalog {
    pub(crate) fn new(db: Db) -> Catalog {
        Catalog { db }
    }

    /// ` FOR UPDATE` on PostgreSQL (SQLite's transaction already holds the write lock).
    fn lock_clause(&self) -> &'static str {
        if self.db.engine() == Engine::Postgres { " FOR UPDATE" } else { "" }
    }

    /// Creates or replaces a provider's spec (bringing a deleted one back).
    pub async fn put_provider(
        &self,
        id: &str,
        spec: &str,
        source: Source,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<(), MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        db_call!(
            self.db,
            "put_provider",
            tx | tx,
            err | {
                let changed = sqlx::query(
                    "INSERT INTO providers (id, spec, source, created_unix_s, updated_unix_s) \
                 VALUES ($1, $2, $3, $4, $4) ON CONFLICT (id) DO UPDATE SET spec = excluded.spec, \
                 source = excluded.source, updated_unix_s = excluded.updated_unix_s, deleted_unix_s = NULL \
                 WHERE providers.spec <> excluded.spec OR providers.source <> excluded.source \
                 OR providers.deleted_unix_s IS NOT NULL",
                )
                .bind(id)
                .bind(spec)
                .bind(source.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected()
                    > 0;
                if changed {
                    record_change!(self.db, tx, err, actor, "provider.put", id, Some(spec), now);
                }
                tx.commit().await.map_err(err)
            }
        )
    }

    /// Every provider, deleted ones included (see [`ProviderRecord::deleted_unix_s`]).
    pub async fn providers(&self) -> Result<Vec<ProviderRecord>, MeteringError> {
        let rows: Vec<(String, String, String, Unsigned, Option<Unsigned>)> = db_call!(
            self.db,
            "providers",
            read | pool | {
                sqlx::query_as("SELECT id, spec, source, updated_unix_s, deleted_unix_s FROM providers ORDER BY id")
                    .fetch_all(pool)
            }
        )?;
        Ok(rows
            .into_iter()
            .map(|(id, spec, source, updated, deleted)| ProviderRecord {
                id,
                spec,
                source: Source::parse(&source),
                updated_unix_s: updated.get(),
                deleted_unix_s: deleted.map(Unsigned::get),
            })
            .collect())
    }

    /// Deletes a provider softly, with every live endpoint of it, in one transaction; `false`
    /// when it does not exist or is deleted already. Rows, price versions, credentials and
    /// ledger references are kept.
    pub async fn delete_provider(&self, id: &str, actor: &Actor, now_unix_s: u64) -> Result<bool, MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        db_call!(
            self.db,
            "delete_provider",
            tx | tx,
            err | {
                let done = sqlx::query(
                    "UPDATE providers SET deleted_unix_s = $1, updated_unix_s = $1 WHERE id = $2 \
                 AND deleted_unix_s IS NULL",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected()
                    == 1;
                if done {
                    sqlx::query(
                        "UPDATE endpoints SET deleted_unix_s = $1, updated_unix_s = $1 WHERE provider = $2 \
                     AND deleted_unix_s IS NULL",
                    )
                    .bind(now)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
                    record_change!(self.db, tx, err, actor, "provider.delete", id, None::<&str>, now);
                }
                tx.commit().await.map_err(err)?;
                Ok(done)
            }
        )
    }

    /// Deletes an endpoint softly; `false` when it does not exist or is deleted already. Its
    /// row and price versions are kept (ledger entries name them).
    pub async fn delete_endpoint(
        &self,
        provider: &str,
        path: &str,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let target = format!("{provider}:{path}");
        db_call!(
            self.db,
            "delete_endpoint",
            tx | tx,
            err | {
                let done = sqlx::query(
                    "UPDATE endpoints SET deleted_unix_s = $1, updated_unix_s = $1, source = 'admin' \
                 WHERE provider = $2 AND path = $3 AND deleted_unix_s IS NULL",
                )
                .bind(now)
                .bind(provider)
                .bind(path)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected()
                    == 1;
                if done {
                    record_change!(self.db, tx, err, actor, "endpoint.delete", &target, None::<&str>, now);
                }
                tx.commit().await.map_err(err)?;
                Ok(done)
            }
        )
    }

    /// Creates or updates an endpoint, served or not as `enabled` says; a price different
    /// from the current one (or a new endpoint) makes a new price version. Brings a deleted
    /// endpoint back (same row, its price history goes on). The provider must be live.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_endpoint(
        &self,
        provider: &str,
        path: &str,
        spec: &str,
        prices: &str,
        enabled: bool,
        source: Source,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<EndpointWrite, MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let target = format!("{provider}:{path}");
        // Locked until commit (PostgreSQL), so that two writers of one endpoint compare prices
        // one after the other and make at most one new version.
        let select_endpoint = format!(
            "SELECT id, spec, source, enabled, deleted_unix_s FROM endpoints WHERE provider = $1 AND path = $2{}",
            self.lock_clause()
        );
        db_call!(
            self.db,
            "put_endpoint",
            tx | tx,
            err | {
                let known: Option<(String,)> =
                    sqlx::query_as("SELECT id FROM providers WHERE id = $1 AND deleted_unix_s IS NULL")
                        .bind(provider)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(err)?;
                if known.is_none() {
                    return Err(MeteringError::UnknownRecord { what: "provider", key: provider.to_owned() });
                }
                // Insert if absent; replicas seeding the same file at once wait on each other
                // here (the UNIQUE key), then see the committed row below.
                let inserted: Option<(Unsigned,)> = sqlx::query_as(
                    "INSERT INTO endpoints (provider, path, spec, source, enabled, created_unix_s, updated_unix_s) \
                 VALUES ($1, $2, $3, $4, $6, $5, $5) ON CONFLICT (provider, path) DO NOTHING RETURNING id",
                )
                .bind(provider)
                .bind(path)
                .bind(spec)
                .bind(source.as_str())
                .bind(now)
                .bind(i64::from(enabled))
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                let (endpoint_id, mut changed) = match inserted {
                    Some((id,)) => (id, true),
                    None => {
                        let (id, old_spec, old_source, was_enabled, deleted): (
                            Unsigned,
                            String,
                            String,
                            i64,
                            Option<Unsigned>,
                        ) = sqlx::query_as(&select_endpoint)
                            .bind(provider)
                            .bind(path)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(err)?;
                        let changed = old_spec != spec
                            || old_source != source.as_str()
                            || was_enabled != i64::from(enabled)
                            || deleted.is_some();
                        if changed {
                            sqlx::query(
                                "UPDATE endpoints SET spec = $1, source = $2, enabled = $5, deleted_unix_s = NULL, \
                             updated_unix_s = $3 WHERE id = $4",
                            )
                            .bind(spec)
                            .bind(source.as_str())
                            .bind(now)
                            .bind(id)
                            .bind(i64::from(enabled))
                            .execute(&mut *tx)
                            .await
                            .map_err(err)?;
                        }
                        (id, changed)
                    }
                };
                let current: Option<(Unsigned, String)> = sqlx::query_as(
                    "SELECT id, prices FROM price_versions WHERE endpoint_id = $1 ORDER BY id DESC LIMIT 1",
                )
                .bind(endpoint_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
                let (price_version, new_price_version) = match current {
                    Some((id, old)) if old == prices => (id, false),
                    _ => {
                        let (id,): (Unsigned,) = sqlx::query_as(
                            "INSERT INTO price_versions (endpoint_id, prices, created_unix_s) VALUES ($1, $2, $3) \
                         RETURNING id",
                        )
                        .bind(endpoint_id)
                        .bind(prices)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(err)?;
                        changed = true;
                        (id, true)
                    }
                };
                if changed {
                    let detail =
                        serde_json::json!({ "spec": spec, "prices": prices, "price_version": price_version.get() });
                    record_change!(self.db, tx, err, actor, "endpoint.put", &target, Some(detail.to_string()), now);
                }
                tx.commit().await.map_err(err)?;
                Ok(EndpointWrite {
                    endpoint_id: endpoint_id.get(),
                    price_version: price_version.get(),
                    new_price_version,
                })
            }
        )
    }

    /// Enables or disables a live endpoint; `false` when it does not exist, is deleted or
    /// already is so. `source` becomes its owner (an admin change is kept over the file's).
    #[allow(clippy::too_many_arguments)]
    pub async fn set_endpoint_enabled(
        &self,
        provider: &str,
        path: &str,
        enabled: bool,
        source: Source,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let target = format!("{provider}:{path}");
        db_call!(
            self.db,
            "set_endpoint_enabled",
            tx | tx,
            err | {
                let done = sqlx::query(
                    "UPDATE endpoints SET enabled = $1, updated_unix_s = $2, source = $5 WHERE provider = $3 \
                 AND path = $4 AND enabled <> $1 AND deleted_unix_s IS NULL",
                )
                .bind(i64::from(enabled))
                .bind(now)
                .bind(provider)
                .bind(path)
                .bind(source.as_str())
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected()
                    == 1;
                if done {
                    let action = if enabled { "endpoint.enable" } else { "endpoint.disable" };
                    record_change!(self.db, tx, err, actor, action, &target, None::<&str>, now);
                }
                tx.commit().await.map_err(err)?;
                Ok(done)
            }
        )
    }

    /// Every endpoint with its current price version, optionally of one provider; deleted ones
    /// included (see [`EndpointRecord::deleted_unix_s`]).
    pub async fn endpoints(&self, provider: Option<&str>) -> Result<Vec<EndpointRecord>, MeteringError> {
        let sql = format!("{ENDPOINT_SELECT} WHERE ($1 IS NULL OR e.provider = $1) ORDER BY e.id");
        let rows: Vec<EndpointRow> =
            db_call!(self.db, "endpoints", read | pool | sqlx::query_as(&sql).bind(provider).fetch_all(pool))?;
        Ok(rows
            .into_iter()
            .map(|r| EndpointRecord {
                id: r.id.get(),
                provider: r.provider,
                path: r.path,
                spec: r.spec,
                source: Source::parse(&r.source),
                enabled: r.enabled != 0,
                price_version: r.price_version.get(),
                prices: r.prices,
                updated_unix_s: r.updated_unix_s.get(),
                deleted_unix_s: r.deleted_unix_s.map(Unsigned::get),
            })
            .collect())
    }

    /// Every price version of an endpoint, oldest first.
    pub async fn price_versions(&self, endpoint_id: u64) -> Result<Vec<PriceVersion>, MeteringError> {
        let id = Unsigned::new("endpoint_id", endpoint_id)?;
        let rows: Vec<(Unsigned, Unsigned, String, Unsigned)> = db_call!(
            self.db,
            "price_versions",
            read | pool | {
                sqlx::query_as(
                "SELECT id, endpoint_id, prices, created_unix_s FROM price_versions WHERE endpoint_id = $1 ORDER BY id",
            )
            .bind(id)
            .fetch_all(pool)
            }
        )?;
        Ok(rows
            .into_iter()
            .map(|(id, endpoint_id, prices, created)| PriceVersion {
                id: id.get(),
                endpoint_id: endpoint_id.get(),
                prices,
                created_unix_s: created.get(),
            })
            .collect())
    }

    /// Stores a new version of a credential (ciphertext) and returns its version number.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_credential_version(
        &self,
        provider: &str,
        name: &str,
        nonce_hex: &str,
        ciphertext_hex: &str,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<u64, MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let target = format!("{provider}/{name}");
        // The provider row is locked (PostgreSQL; SQLite holds its write lock) so that
        // concurrent uploads number their versions one after the other.
        let select_provider = format!("SELECT id FROM providers WHERE id = $1{}", self.lock_clause());
        let version: Unsigned = db_call!(
            self.db,
            "add_credential_version",
            tx | tx,
            err | {
                let known: Option<(String,)> =
                    sqlx::query_as(&select_provider).bind(provider).fetch_optional(&mut *tx).await.map_err(err)?;
                if known.is_none() {
                    return Err(MeteringError::UnknownRecord { what: "provider", key: provider.to_owned() });
                }
                let (version,): (Unsigned,) = sqlx::query_as(
                    "INSERT INTO credentials (provider, name, version, nonce, ciphertext, created_unix_s) \
                 SELECT $1, $2, COALESCE(MAX(version), 0) + 1, $3, $4, $5 FROM credentials \
                 WHERE provider = $1 AND name = $2 RETURNING version",
                )
                .bind(provider)
                .bind(name)
                .bind(nonce_hex)
                .bind(ciphertext_hex)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
                let detail = format!("version {}", version.get());
                record_change!(self.db, tx, err, actor, "credential.add", &target, Some(detail), now);
                tx.commit().await.map_err(err)?;
                Ok(version)
            }
        )?;
        Ok(version.get())
    }

    /// Revokes one version of a credential; `false` when unknown or already revoked.
    pub async fn revoke_credential_version(
        &self,
        provider: &str,
        name: &str,
        version: u64,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<bool, MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        let v = Unsigned::new("version", version)?;
        let target = format!("{provider}/{name}/{version}");
        db_call!(
            self.db,
            "revoke_credential_version",
            tx | tx,
            err | {
                let done = sqlx::query(
                    "UPDATE credentials SET revoked_unix_s = $1 WHERE provider = $2 AND name = $3 AND version = $4 \
                 AND revoked_unix_s IS NULL",
                )
                .bind(now)
                .bind(provider)
                .bind(name)
                .bind(v)
                .execute(&mut *tx)
                .await
                .map_err(err)?
                .rows_affected()
                    == 1;
                if done {
                    record_change!(self.db, tx, err, actor, "credential.revoke", &target, None::<&str>, now);
                }
                tx.commit().await.map_err(err)?;
                Ok(done)
            }
        )
    }

    /// Credential versions (ciphertext included, for the gateway's decryption), optionally of
    /// one provider, ordered by provider, name, version.
    pub async fn credential_versions(&self, provider: Option<&str>) -> Result<Vec<CredentialVersion>, MeteringError> {
        let rows: Vec<CredentialRow> = db_call!(
            self.db,
            "credential_versions",
            read | pool | {
                sqlx::query_as(
                    "SELECT provider, name, version, nonce, ciphertext, created_unix_s, revoked_unix_s \
                 FROM credentials WHERE ($1 IS NULL OR provider = $1) ORDER BY provider, name, version",
                )
                .bind(provider)
                .fetch_all(pool)
            }
        )?;
        Ok(rows
            .into_iter()
            .map(|r| CredentialVersion {
                provider: r.provider,
                name: r.name,
                version: r.version.get(),
                nonce: r.nonce,
                ciphertext: r.ciphertext,
                created_unix_s: r.created_unix_s.get(),
                revoked_unix_s: r.revoked_unix_s.map(Unsigned::get),
            })
            .collect())
    }
}
