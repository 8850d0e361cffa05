//! Wallet policies (per scope: `*` or a provider) and the control plane's settings.
//!
//! Rules held here: operators act in any scope (default `*`); a provider token always acts
//! in its own provider's scope and may name only its own endpoints; finance never writes; a
//! scope is `*` or an existing provider.
//!
//! Must not: enforce a policy on a call (the store does, inside the reservation's
//! transaction), or cache one.

use tollgate_admin_api::types as api;
use tollgate_metering::{GLOBAL_SCOPE, Role, WalletPolicy};

use super::{Host, address, atomic, value, values};
use crate::{ControlError, Principal};

/// The scope a caller acts in: operators choose (default `*`); a provider token always acts
/// in its own provider's scope; finance in none.
pub fn scope_for(p: &Principal, asked: Option<String>, action: &'static str) -> Result<String, ControlError> {
    let forbidden = ControlError::Forbidden { action };
    match p.role {
        Role::Operator => Ok(asked.unwrap_or_else(|| GLOBAL_SCOPE.to_owned())),
        Role::Provider => {
            let own = p.provider.clone().ok_or(forbidden)?;
            match asked {
                Some(s) if s != own => Err(ControlError::Forbidden { action }),
                _ => Ok(own),
            }
        }
        Role::Finance => Err(forbidden),
    }
}

async fn check_scope_exists<H: Host>(host: &H, scope: &str) -> Result<(), ControlError> {
    if scope != GLOBAL_SCOPE
        && !host.ledger().catalog().providers().await?.iter().any(|x| x.id == scope && x.deleted_unix_s.is_none())
    {
        return Err(ControlError::invalid("scope", format!("`{scope}` is neither `*` nor a provider")));
    }
    Ok(())
}

/// Policies: operators see every scope (or the one asked); a provider token its own.
pub async fn list<H: Host>(
    host: &H,
    p: &Principal,
    input: impl FnOnce() -> Result<api::WalletsQuery, ControlError>,
) -> Result<api::WalletPolicyList, ControlError> {
    p.require(&[Role::Operator, Role::Provider], "read wallet policies")?;
    let q = input()?;
    let scope = match p.role {
        Role::Operator => q.scope,
        _ => Some(scope_for(p, q.scope, "read wallet policies")?),
    };
    let wallet = q.wallet.as_deref().map(|w| address("wallet", w)).transpose()?;
    Ok(api::WalletPolicyList { policies: values(host.ledger().policies().list(scope.as_deref(), wallet).await?) })
}

/// Sets a wallet's policy in a scope (its revocation is kept unless the body sets it).
pub async fn put<H: Host>(
    host: &H,
    p: &Principal,
    wallet: &str,
    query: impl FnOnce() -> Result<api::ScopeQuery, ControlError>,
    body: impl FnOnce() -> Result<api::WalletPolicyBody, ControlError>,
) -> Result<api::WalletPolicySet, ControlError> {
    p.require(&[Role::Operator, Role::Provider], "set wallet policies")?;
    let scope = scope_for(p, query()?.scope, "set wallet policies")?;
    let b = body()?;
    check_scope_exists(host, &scope).await?;
    let wallet = address("wallet", wallet)?;
    if let Some(list) = &b.endpoints {
        if list.len() > 1000 {
            return Err(ControlError::invalid("endpoints", "at most 1000 endpoints"));
        }
        if scope != GLOBAL_SCOPE
            && let Some(other) = list.iter().find(|e| !e.starts_with(&format!("{scope}:")))
        {
            return Err(ControlError::invalid(
                "endpoints",
                format!("`{other}` is not an endpoint of provider {scope}"),
            ));
        }
    }
    let policies = host.ledger().policies();
    let revoked = match b.revoked {
        Some(r) => r,
        None => policies.list(Some(&scope), Some(wallet)).await?.first().is_some_and(|x| x.revoked),
    };
    let policy = WalletPolicy {
        scope,
        wallet,
        revoked,
        registered: b.registered,
        endpoints: b.endpoints,
        per_call_max: atomic("per_call_max", b.per_call_max.as_deref())?,
        daily_cap: atomic("daily_cap", b.daily_cap.as_deref())?,
        monthly_cap: atomic("monthly_cap", b.monthly_cap.as_deref())?,
        updated_unix_s: host.now_unix_s(),
    };
    policies.put(&policy, &p.actor()).await?;
    Ok(api::WalletPolicySet { policy: value(policy) })
}

/// Revokes (or reinstates) a wallet in a scope; applies to its next reservation everywhere.
pub async fn set_revoked<H: Host>(
    host: &H,
    p: &Principal,
    wallet: &str,
    revoked: bool,
    input: impl FnOnce() -> Result<api::ScopeQuery, ControlError>,
) -> Result<api::WalletRevoked, ControlError> {
    let action = if revoked { "revoke wallets" } else { "reinstate wallets" };
    p.require(&[Role::Operator, Role::Provider], action)?;
    let q = input()?;
    let scope = scope_for(p, q.scope, "revoke or reinstate wallets")?;
    check_scope_exists(host, &scope).await?;
    let wallet = address("wallet", wallet)?;
    host.ledger().policies().set_revoked(&scope, wallet, revoked, &p.actor(), host.now_unix_s()).await?;
    Ok(api::WalletRevoked { scope, wallet: format!("{wallet:#x}"), revoked })
}

/// The settings (operators only).
pub async fn settings<H: Host>(host: &H, p: &Principal) -> Result<api::Settings, ControlError> {
    p.require(&[Role::Operator], "read settings")?;
    let s = host.ledger().settings().state().await?;
    Ok(api::Settings { allowlist_mode: s.allowlist_mode, version: s.version })
}

/// Changes the settings (operators only).
pub async fn put_settings<H: Host>(
    host: &H,
    p: &Principal,
    input: impl FnOnce() -> Result<api::SettingsBody, ControlError>,
) -> Result<api::SettingsSet, ControlError> {
    p.require(&[Role::Operator], "change settings")?;
    let b = input()?;
    host.ledger().settings().set_allowlist_mode(b.allowlist_mode, &p.actor(), host.now_unix_s()).await?;
    Ok(api::SettingsSet { allowlist_mode: b.allowlist_mode })
}
