//! `Tokens`: admin bearer tokens, stored as SHA-256 hashes with their role and provider.
//!
//! Must not: see a bearer token (only [`token_hash`] of it), know routes or HTTP, or import a
//! repository other than `settings` (for [`record_change!`]).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::MeteringError;
use crate::db::codec::Unsigned;
use crate::db::{Db, db_call};
use crate::repo::settings::{Actor, record_change};

const TOKEN_COLUMNS: &str = "id, role, provider, token_hash, label, created_unix_s, revoked_unix_s";

/// Role of an admin token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Operator,
    /// One provider's endpoints, credentials, revenue and audit.
    Provider,
    /// Read-only ledger, audit and reconciliation.
    Finance,
}

impl Role {
    /// Stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Provider => "provider",
            Role::Finance => "finance",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "operator" => Some(Role::Operator),
            "provider" => Some(Role::Provider),
            "finance" => Some(Role::Finance),
            _ => None,
        }
    }
}

/// An admin token's record (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AdminToken {
    /// Public id (16 hex digits).
    pub id: String,
    /// Its role.
    pub role: Role,
    /// The provider, for provider tokens.
    pub provider: Option<String>,
    /// SHA-256 of the token, hex.
    #[serde(skip)]
    pub token_hash: String,
    /// Free text.
    pub label: String,
    /// Creation time.
    pub created_unix_s: u64,
    /// Revocation time.
    pub revoked_unix_s: Option<u64>,
}

/// SHA-256 of a bearer token, hex: what `admin_tokens` stores.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    role: String,
    provider: Option<String>,
    token_hash: String,
    label: String,
    created_unix_s: Unsigned,
    revoked_unix_s: Option<Unsigned>,
}

impl TokenRow {
    fn into_token(self) -> Result<AdminToken, MeteringError> {
        Ok(AdminToken {
            role: Role::parse(&self.role).ok_or_else(|| MeteringError::corrupt("role", &self.role))?,
            id: self.id,
            provider: self.provider,
            token_hash: self.token_hash,
            label: self.label,
            created_unix_s: self.created_unix_s.get(),
            revoked_unix_s: self.revoked_unix_s.map(Unsigned::get),
        })
    }
}

/// The admin tokens repository. Cheap to clone; clones share the database handle.
#[derive(Debug, Clone)]
pub struct Tokens {
    db: Db,
}

impl Tokens {
    pub(crate) fn new(db: Db) -> Tokens {
        Tokens { db }
    }

    /// Stores a new admin token's hash and returns its record.
    pub async fn create(
        &self,
        role: Role,
        provider: Option<&str>,
        token_hash_hex: &str,
        label: &str,
        actor: &Actor,
        now_unix_s: u64,
    ) -> Result<AdminToken, MeteringError> {
        if (role == Role::Provider) != provider.is_some() {
            return Err(MeteringError::InvalidValue {
                what: "provider",
                reason: "required for provider tokens and only for them".to_owned(),
            });
        }
        let id = hex::encode(crate::checks::random_bytes::<8>()?);
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        db_call!(
            self.db,
            "create_admin_token",
            tx | tx,
            err | {
                sqlx::query(
                    "INSERT INTO admin_tokens (id, role, provider, token_hash, label, created_unix_s) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&id)
                .bind(role.as_str())
                .bind(provider)
                .bind(token_hash_hex)
                .bind(label)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(err)?;
                record_change!(self.db, tx, err, actor, "token.create", &id, Some(role.as_str()), now);
                tx.commit().await.map_err(err)
            }
        )?;
        Ok(AdminToken {
            id,
            role,
            provider: provider.map(str::to_owned),
            token_hash: token_hash_hex.to_owned(),
            label: label.to_owned(),
            created_unix_s: now_unix_s,
            revoked_unix_s: None,
        })
    }

    /// The token with this hash, revoked or not.
    pub async fn by_hash(&self, token_hash_hex: &str) -> Result<Option<AdminToken>, MeteringError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM admin_tokens WHERE token_hash = $1");
        let row: Option<TokenRow> = db_call!(
            self.db,
            "admin_token_by_hash",
            read | pool | { sqlx::query_as(&sql).bind(token_hash_hex).fetch_optional(pool) }
        )?;
        row.map(TokenRow::into_token).transpose()
    }

    /// Every token record (never the tokens).
    pub async fn list(&self) -> Result<Vec<AdminToken>, MeteringError> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM admin_tokens ORDER BY created_unix_s, id");
        let rows: Vec<TokenRow> =
            db_call!(self.db, "admin_tokens", read | pool | sqlx::query_as(&sql).fetch_all(pool))?;
        rows.into_iter().map(TokenRow::into_token).collect()
    }

    /// Revokes a token; `false` when it is unknown or already revoked.
    pub async fn revoke(&self, id: &str, actor: &Actor, now_unix_s: u64) -> Result<bool, MeteringError> {
        let now = Unsigned::new("now_unix_s", now_unix_s)?;
        db_call!(
            self.db,
            "revoke_admin_token",
            tx | tx,
            err | {
                let done =
                    sqlx::query("UPDATE admin_tokens SET revoked_unix_s = $1 WHERE id = $2 AND revoked_unix_s IS NULL")
                        .bind(now)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(err)?
                        .rows_affected()
                        == 1;
                if done {
                    record_change!(self.db, tx, err, actor, "token.revoke", id, None::<&str>, now);
                }
                tx.commit().await.map_err(err)?;
                Ok(done)
            }
        )
    }
}
