//! The caller of an admin operation and the rules of who may do what.
//!
//! Roles: **operator** (everything), **provider** (only its own provider's records),
//! **finance** (read-only views). The transport authenticates the token and builds the
//! [`Principal`]; every operation then asks one of the checks below before it reads its input,
//! so a caller without the right learns nothing from input errors.
//!
//! Must not: authenticate (tokens are the transport's), or know HTTP.

use tollgate_metering::{Actor, Role};

use crate::ControlError;

/// The caller, from a valid admin token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Token id.
    pub token_id: String,
    /// Role.
    pub role: Role,
    /// Provider of a provider token.
    pub provider: Option<String>,
}

impl Principal {
    /// Who the audit trail names for this caller's changes.
    pub fn actor(&self) -> Actor {
        Actor(format!("token:{}", self.token_id))
    }

    /// One of `roles`.
    pub fn require(&self, roles: &[Role], action: &'static str) -> Result<(), ControlError> {
        if roles.contains(&self.role) { Ok(()) } else { Err(ControlError::Forbidden { action }) }
    }

    /// Operators, or the provider's own token.
    pub fn require_provider(&self, provider: &str, action: &'static str) -> Result<(), ControlError> {
        match self.role {
            Role::Operator => Ok(()),
            Role::Provider if self.provider.as_deref() == Some(provider) => Ok(()),
            _ => Err(ControlError::Forbidden { action }),
        }
    }

    /// Operators, finance, or the provider's own token (read-only views).
    pub fn require_reader_of(&self, provider: &str, action: &'static str) -> Result<(), ControlError> {
        match self.role {
            Role::Operator | Role::Finance => Ok(()),
            Role::Provider if self.provider.as_deref() == Some(provider) => Ok(()),
            Role::Provider => Err(ControlError::Forbidden { action }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, provider: Option<&str>) -> Principal {
        Principal { token_id: "00".repeat(8), role, provider: provider.map(str::to_owned) }
    }

    #[test]
    fn provider_scope_is_the_providers_own() {
        // Goal: a provider token passes the provider checks for its own provider only; finance reads but never writes; operators pass all.
        let own = who(Role::Provider, Some("weather"));
        assert!(own.require_provider("weather", "x").is_ok());
        assert!(own.require_provider("other", "x").is_err());
        assert!(own.require_reader_of("other", "x").is_err());
        let finance = who(Role::Finance, None);
        assert!(finance.require_reader_of("weather", "x").is_ok());
        assert!(finance.require_provider("weather", "x").is_err());
        let op = who(Role::Operator, None);
        assert!(op.require_provider("any", "x").is_ok() && op.require(&[Role::Operator], "x").is_ok());
        assert!(matches!(
            finance.require(&[Role::Operator], "list tokens"),
            Err(ControlError::Forbidden { action: "list tokens" })
        ));
    }
}
