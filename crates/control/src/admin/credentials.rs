//! Vault credentials of a provider: metadata, upload (sealed before it is stored) and
//! revocation of a version (operators, or the provider's own token).
//!
//! Must not: return, log or echo a secret, even in an input error (a malformed secret field
//! may be the secret itself).

use secrecy::SecretString;
use tollgate_admin_api::types as api;

use super::{Host, values};
use crate::{ControlError, Principal, vault};

/// A provider's credential versions: metadata only (the store's `CredentialVersion` skips
/// nonce and ciphertext when serialised).
pub async fn list<H: Host>(host: &H, p: &Principal, id: &str) -> Result<api::CredentialList, ControlError> {
    p.require_provider(id, "read another provider's credentials")?;
    Ok(api::CredentialList { credentials: values(host.ledger().catalog().credential_versions(Some(id)).await?) })
}

/// Seals and stores a new version of credential `name` of provider `id`.
pub async fn upload<H: Host>(
    host: &H,
    p: &Principal,
    id: String,
    name: String,
    input: impl FnOnce() -> Result<api::SecretBody, ControlError>,
) -> Result<api::CredentialUploaded, H::Error> {
    p.require_provider(&id, "change another provider's credentials")?;
    // Never echo what was sent: a malformed secret field may be the secret itself.
    let b = input().map_err(|_| ControlError::invalid("secret", "expected {\"secret\": \"...\"} with a string"))?;
    let secret = SecretString::from(b.secret);
    let key = host.vault_key().ok_or(ControlError::Unavailable {
        what: "the vault has no master key (vault.master_key_env or vault.master_key_file)",
    })?;
    vault::check_vault_name(&name).map_err(|reason| ControlError::invalid("name", reason))?;
    vault::check_secret(&secret).map_err(|reason| ControlError::invalid("secret", reason))?;
    let (nonce, ct) = vault::seal(key, &id, &name, &secret).map_err(ControlError::from)?;
    let version = host
        .ledger()
        .catalog()
        .add_credential_version(&id, &name, &nonce, &ct, &p.actor(), host.now_unix_s())
        .await
        .map_err(ControlError::from)?;
    host.applied().await?;
    Ok(api::CredentialUploaded { provider: id, name, version })
}

/// Revokes one version (the previous unrevoked one, if any, is used again).
pub async fn revoke<H: Host>(
    host: &H,
    p: &Principal,
    id: String,
    name: String,
    version: &str,
) -> Result<api::CredentialRevoked, H::Error> {
    p.require_provider(&id, "change another provider's credentials")?;
    let version: u64 = version.parse().map_err(|_| ControlError::invalid("version", "expected a version number"))?;
    let catalog = host.ledger().catalog();
    let revoked = catalog
        .revoke_credential_version(&id, &name, version, &p.actor(), host.now_unix_s())
        .await
        .map_err(ControlError::from)?;
    if !revoked
        && !catalog
            .credential_versions(Some(&id))
            .await
            .map_err(ControlError::from)?
            .iter()
            .any(|v| v.name == name && v.version == version)
    {
        return Err(ControlError::NotFound { what: "credential version", key: format!("{id}/{name}/{version}") }.into());
    }
    host.applied().await?;
    Ok(api::CredentialRevoked { provider: id, name, version, revoked: true })
}
