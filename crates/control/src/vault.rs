//! The credential vault's cryptography: AES-256-GCM under the master key from the
//! configuration (environment or file, never the database).
//!
//! Each version is sealed with a fresh random 96-bit nonce and the associated data
//! `tollgate-credential/v1 \0 provider \0 name`, so a ciphertext moved to another provider's
//! or credential's row fails to open. Owns the master key's type, the rules for credential names
//! and secrets, sealing and opening; storage is the ledger's
//! (hex ciphertext), and nothing here logs or returns a secret except as `SecretString`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use secrecy::{ExposeSecret, SecretString};

/// The vault's AES-256 master key, from the configuration (environment or file). Never
/// printed; never stored in the database.
pub struct VaultKey(pub secrecy::SecretBox<[u8; 32]>);

impl std::fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VaultKey([redacted])")
    }
}

/// A vault credential's name (the file's `credential.vault` and the admin API's upload path).
pub fn check_vault_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err("use 1 to 64 letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// A secret as the vault accepts it: 1 to 8192 bytes, no control characters. The reason
/// never quotes the secret.
pub fn check_secret(secret: &SecretString) -> Result<(), &'static str> {
    let s = secret.expose_secret();
    if s.is_empty() || s.len() > 8192 {
        return Err("must be 1 to 8192 bytes");
    }
    if s.bytes().any(|c| c.is_ascii_control()) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// Why a credential could not be sealed or opened. Never carries the secret.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The ciphertext does not open under this key for this slot (wrong key, moved or
    /// edited ciphertext).
    #[error("credential {provider}/{name} v{version} does not decrypt under the configured master key")]
    Open {
        /// Provider id.
        provider: String,
        /// Credential name.
        name: String,
        /// Version.
        version: u64,
    },
    /// Encryption failed (should not happen) or randomness was unavailable.
    #[error("could not seal the credential")]
    Seal,
}

fn aad(provider: &str, name: &str) -> Vec<u8> {
    let mut a = b"tollgate-credential/v1\0".to_vec();
    a.extend_from_slice(provider.as_bytes());
    a.push(0);
    a.extend_from_slice(name.as_bytes());
    a
}

fn cipher(key: &VaultKey) -> Aes256Gcm {
    Aes256Gcm::new(key.0.expose_secret().into())
}

/// Seals a secret for `provider`/`name`: (nonce hex, ciphertext-with-tag hex).
pub fn seal(key: &VaultKey, provider: &str, name: &str, secret: &SecretString) -> Result<(String, String), VaultError> {
    let nonce_bytes: [u8; 12] = rand::random();
    let nonce = Nonce::from(nonce_bytes);
    let aad = aad(provider, name);
    let ct = cipher(key)
        .encrypt(&nonce, Payload { msg: secret.expose_secret().as_bytes(), aad: &aad })
        .map_err(|_| VaultError::Seal)?;
    Ok((hex::encode(nonce_bytes), hex::encode(ct)))
}

/// Opens a sealed version.
pub fn open(
    key: &VaultKey,
    provider: &str,
    name: &str,
    version: u64,
    nonce_hex: &str,
    ciphertext_hex: &str,
) -> Result<SecretString, VaultError> {
    let fail = || VaultError::Open { provider: provider.to_owned(), name: name.to_owned(), version };
    let nonce: [u8; 12] = hex::decode(nonce_hex).ok().and_then(|b| b.try_into().ok()).ok_or_else(fail)?;
    let ct = hex::decode(ciphertext_hex).map_err(|_| fail())?;
    let aad = aad(provider, name);
    let clear = cipher(key).decrypt(&Nonce::from(nonce), Payload { msg: &ct, aad: &aad }).map_err(|_| fail())?;
    let text = String::from_utf8(clear).map_err(|_| fail())?;
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(b: u8) -> VaultKey {
        VaultKey(secrecy::SecretBox::new(Box::new([b; 32])))
    }

    #[test]
    fn sealed_secrets_open_only_in_their_slot_under_their_key() {
        // Goal: a sealed secret opens with the same key and slot, and fails with another key, another provider or name, or an edited ciphertext.
        let secret = SecretString::from("sk-live-123".to_owned());
        let (nonce, ct) = seal(&key(1), "openai", "main", &secret).unwrap();
        assert!(!ct.contains(&hex::encode("sk-live-123")));
        assert_eq!(open(&key(1), "openai", "main", 1, &nonce, &ct).unwrap().expose_secret(), "sk-live-123");
        assert!(open(&key(2), "openai", "main", 1, &nonce, &ct).is_err());
        assert!(open(&key(1), "other", "main", 1, &nonce, &ct).is_err());
        assert!(open(&key(1), "openai", "backup", 1, &nonce, &ct).is_err());
        let mut edited = ct.clone().into_bytes();
        edited[0] = if edited[0] == b'0' { b'1' } else { b'0' };
        assert!(open(&key(1), "openai", "main", 1, &nonce, std::str::from_utf8(&edited).unwrap()).is_err());
        let (nonce2, _) = seal(&key(1), "openai", "main", &secret).unwrap();
        assert_ne!(nonce, nonce2, "fresh nonce per seal");
    }
}
