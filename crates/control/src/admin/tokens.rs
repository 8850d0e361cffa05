//! Admin tokens: who the caller is, and creating, listing and revoking tokens (operators only).
//!
//! A token is 256 random bits shown once, in the answer that creates it; the store keeps its
//! SHA-256 only.
//!
//! Must not: return a token after its creation, or authenticate (the transport does).

use tollgate_admin_api::types as api;
use tollgate_metering::{Actor, AdminToken, Role, token_hash};

use super::{Host, value, values};
use crate::{ControlError, Principal};

/// Prefix of admin tokens (so a leaked one is recognisable by secret scanners).
pub const TOKEN_PREFIX: &str = "tgadm_";

/// A fresh admin token: the prefix and 32 random bytes in hex.
pub fn new_token() -> String {
    format!("{TOKEN_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// The caller's own token.
pub fn whoami(p: &Principal) -> api::Whoami {
    api::Whoami { token_id: p.token_id.clone(), role: p.role.as_str().to_owned(), provider: p.provider.clone() }
}

/// Every token's record (no token, no hash of one shown as a credential).
pub async fn list<H: Host>(host: &H, p: &Principal) -> Result<api::TokenList, ControlError> {
    p.require(&[Role::Operator], "list tokens")?;
    Ok(api::TokenList { tokens: values(host.ledger().tokens().list().await?) })
}

/// Creates a token for `role` (of `provider`, which must exist): the record and the token,
/// shown once. No permission check: the caller is an operator or `tollgate admin bootstrap`.
pub async fn create_record<H: Host>(
    host: &H,
    role: Role,
    provider: Option<&str>,
    label: &str,
    actor: &Actor,
) -> Result<(AdminToken, String), ControlError> {
    if let Some(id) = provider
        && !host.ledger().catalog().providers().await?.iter().any(|x| x.id == id && x.deleted_unix_s.is_none())
    {
        return Err(ControlError::NotFound { what: "provider", key: id.to_owned() });
    }
    let token = new_token();
    let record =
        host.ledger().tokens().create(role, provider, &token_hash(&token), label, actor, host.now_unix_s()).await?;
    Ok((record, token))
}

/// Creates a token (operators only).
pub async fn create<H: Host>(
    host: &H,
    p: &Principal,
    input: impl FnOnce() -> Result<api::NewToken, ControlError>,
) -> Result<api::CreatedToken, ControlError> {
    p.require(&[Role::Operator], "create tokens")?;
    let b = input()?;
    let role =
        Role::parse(&b.role).ok_or_else(|| ControlError::invalid("role", "expected operator, provider or finance"))?;
    if (role == Role::Provider) != b.provider.is_some() {
        return Err(ControlError::invalid("provider", "required for provider tokens and only for them"));
    }
    let label = b.label.unwrap_or_default();
    if label.len() > 128 {
        return Err(ControlError::invalid("label", "at most 128 bytes"));
    }
    let (record, token) = create_record(host, role, b.provider.as_deref(), &label, &p.actor()).await?;
    Ok(api::CreatedToken { token, record: value(record) })
}

/// Revokes a token by id (operators only); immediate on every replica (tokens are read from
/// the store at every request).
pub async fn revoke<H: Host>(host: &H, p: &Principal, id: String) -> Result<api::TokenRevoked, ControlError> {
    p.require(&[Role::Operator], "revoke tokens")?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ControlError::invalid("id", "expected a token id (16 hex digits)"));
    }
    let tokens = host.ledger().tokens();
    let revoked = tokens.revoke(&id, &p.actor(), host.now_unix_s()).await?;
    if !revoked && !tokens.list().await?.iter().any(|t| t.id == id) {
        return Err(ControlError::NotFound { what: "token", key: id });
    }
    Ok(api::TokenRevoked { id, revoked: true })
}
