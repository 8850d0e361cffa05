//! Loading and creating the agent's key: hex (from a string, an environment variable
//! through a caller-supplied lookup, or a file) and the encrypted JSON keystore v3
//! (scrypt + AES-128-CTR, the format of geth, foundry's `cast wallet` and alloy).
//!
//! Owns: parsing and writing key material. Must not: put key material in any error,
//! log line or `Debug` output (errors describe the problem, never the input); write a key
//! file readable by anyone but its owner (0600, created exclusively, never overwritten);
//! read the environment by itself.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use alloy::signers::local::{LocalSignerError, PrivateKeySigner};
use alloy_primitives::B256;
use secrecy::{ExposeSecret, SecretString};

use crate::error::ClientError;

/// A new random key from the operating system's generator.
pub fn generate() -> PrivateKeySigner {
    PrivateKeySigner::random()
}

/// Parses 32 bytes of hex (`0x` optional, surrounding whitespace ignored).
pub fn signer_from_hex(text: &str) -> Result<PrivateKeySigner, ClientError> {
    let t = text.trim();
    let digits = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")).unwrap_or(t);
    let mut bytes = [0u8; 32];
    if digits.len() != 64 || alloy_primitives::hex::decode_to_slice(digits, &mut bytes).is_err() {
        return Err(ClientError::key("expected 32 bytes of hex (64 hex digits, 0x optional)"));
    }
    let key = B256::from(bytes);
    bytes.fill(0);
    PrivateKeySigner::from_bytes(&key).map_err(|_| ClientError::key("not a valid secp256k1 secret key"))
}

/// Reads the hex key from the variable `name` through `lookup` (pass
/// `&|k| std::env::var(k).ok()` from a binary; tests pass a map).
pub fn signer_from_env(name: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<PrivateKeySigner, ClientError> {
    let value = SecretString::from(lookup(name).ok_or_else(|| ClientError::key(format!("{name} is not set")))?);
    signer_from_hex(value.expose_secret()).map_err(|e| match e {
        ClientError::Key { reason } => ClientError::key(format!("{name}: {reason}")),
        other => other,
    })
}

/// Reads a file holding the hex key (as written by [`write_key_file`]).
pub fn signer_from_file(path: &Path) -> Result<PrivateKeySigner, ClientError> {
    let text = fs::read_to_string(path)
        .map_err(|e| ClientError::key(format!("cannot read key file {}: {}", path.display(), e.kind())))?;
    let text = SecretString::from(text);
    signer_from_hex(text.expose_secret()).map_err(|e| match e {
        ClientError::Key { reason } => ClientError::key(format!("{}: {reason}", path.display())),
        other => other,
    })
}

/// Decrypts a JSON keystore v3.
pub fn signer_from_keystore(path: &Path, password: &SecretString) -> Result<PrivateKeySigner, ClientError> {
    PrivateKeySigner::decrypt_keystore(path, password.expose_secret().as_bytes()).map_err(|e| {
        let reason = match &e {
            LocalSignerError::EthKeystoreError(k) if k.to_string() == "Mac Mismatch" => {
                "wrong password (or a corrupted keystore)".to_owned()
            }
            LocalSignerError::EthKeystoreError(k) => format!("not a readable keystore: {k}"),
            LocalSignerError::IoError(io) => format!("cannot read: {}", io.kind()),
            _ => "the keystore holds no valid key".to_owned(),
        };
        ClientError::key(format!("keystore {}: {reason}", path.display()))
    })
}

/// Writes the key as hex to a new file with mode 0600. Refuses to overwrite.
pub fn write_key_file(path: &Path, signer: &PrivateKeySigner) -> Result<(), ClientError> {
    let err = |e: std::io::Error| ClientError::key(format!("cannot write key file {}: {e}", path.display()));
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut file = opts.open(path).map_err(err)?;
    let hex = SecretString::from(format!("{:#x}\n", signer.to_bytes()));
    file.write_all(hex.expose_secret().as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}

/// Writes the key as an encrypted JSON keystore v3 at `path` (mode 0600). Refuses to
/// overwrite: the file is built in a private temporary directory beside `path` and
/// hard-linked into place, which fails if `path` exists.
pub fn write_keystore(path: &Path, signer: &PrivateKeySigner, password: &SecretString) -> Result<(), ClientError> {
    let err = |what: &str, e: &dyn std::fmt::Display| {
        ClientError::key(format!("cannot write keystore {}: {what}: {e}", path.display()))
    };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".tollgate-keystore").tempdir_in(dir).map_err(|e| err("temp dir", &e))?;
    let mut rng = rand::rngs::OsRng;
    PrivateKeySigner::encrypt_keystore(
        tmp.path(),
        &mut rng,
        signer.to_bytes(),
        password.expose_secret().as_bytes(),
        Some("keystore.json"),
    )
    .map_err(|e| err("encrypting", &e))?;
    let built = tmp.path().join("keystore.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&built, fs::Permissions::from_mode(0o600)).map_err(|e| err("permissions", &e))?;
    }
    fs::hard_link(&built, path).map_err(|e| err("placing it", &e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    // Goal: hex keys parse with or without 0x; bad input fails without echoing it.
    #[test]
    fn parses_hex_and_never_echoes_it() {
        let a = signer_from_hex(KEY).unwrap();
        let b = signer_from_hex(&format!(" 0x{KEY}\n")).unwrap();
        assert_eq!(a.address(), b.address());
        for bad in [KEY[..63].to_owned(), "zz".to_owned(), format!("{KEY}00"), "0".repeat(64)] {
            let e = signer_from_hex(&bad).unwrap_err().to_string();
            assert!(!e.contains(&bad) || bad.len() < 4, "{e}");
            assert!(!e.contains(&KEY[..16]), "{e}");
        }
        let env = |k: &str| (k == "K").then(|| format!("0x{}", &KEY[..60]));
        let e = signer_from_env("K", &env).unwrap_err().to_string();
        assert!(e.starts_with("key: K: expected 32 bytes"), "{e}");
        assert!(!e.contains(&KEY[..16]));
        assert!(signer_from_env("MISSING", &env).unwrap_err().to_string().contains("MISSING is not set"));
    }

    // Goal: key files and keystores round-trip, are 0600, are never overwritten, and a
    // wrong password is told apart from a missing file.
    #[test]
    fn key_files_and_keystores_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let signer = generate();
        let file = dir.path().join("agent.key");
        write_key_file(&file, &signer).unwrap();
        assert_eq!(signer_from_file(&file).unwrap().address(), signer.address());
        assert!(write_key_file(&file, &signer).is_err(), "never overwrites");
        let ks = dir.path().join("agent.json");
        let pw = SecretString::from("correct horse");
        write_keystore(&ks, &signer, &pw).unwrap();
        assert_eq!(signer_from_keystore(&ks, &pw).unwrap().address(), signer.address());
        assert!(write_keystore(&ks, &signer, &pw).is_err(), "never overwrites");
        let e = signer_from_keystore(&ks, &SecretString::from("wrong")).unwrap_err().to_string();
        assert!(e.contains("wrong password"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in [&file, &ks] {
                assert_eq!(fs::metadata(p).unwrap().permissions().mode() & 0o777, 0o600);
            }
        }
        // Only the keystore is left in the directory (no temporary leftovers).
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
