//! `ConfigError`, the one error of the configuration, and the reasons several keys share.
//!
//! Owns how an error is printed: always the key (and, for a TOML error, its position), never a
//! value or a line of the file. Must not import any other part of `config` (every part builds
//! these errors; this module is the bottom of `config`'s imports).

use std::path::PathBuf;

/// Why the configuration was refused. Always names the key; never contains a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// TOML syntax error, unknown key or wrong type. Built from the parser's position and a
    /// fixed description, never from its `Display`, which quotes the offending line (an
    /// unquoted `rpc_url = https://host/KEY` or an unknown `relayer_key = "0x…"` would be
    /// printed whole).
    #[error("{}{reason}", location(key.as_deref(), *line, *column))]
    Parse {
        /// Dotted path of the key when it is known (`settlement.relayer_key`); a key that
        /// looks like a secret itself is not named.
        key: Option<String>,
        /// 1-based line of the error, when the parser gave a position.
        line: Option<usize>,
        /// 1-based column (in characters) of the error, when the parser gave a position.
        column: Option<usize>,
        /// What is wrong, without the value.
        reason: String,
    },
    /// A value is present but invalid.
    #[error("{key}: {reason}")]
    Invalid {
        /// Dotted path of the key, e.g. `providers[0].pay_to`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// How a parse error's location is printed: `key (line L, column C): `.
fn location(key: Option<&str>, line: Option<usize>, column: Option<usize>) -> String {
    match (key, line, column) {
        (Some(k), Some(l), Some(c)) => format!("{k} (line {l}, column {c}): "),
        (Some(k), _, _) => format!("{k}: "),
        (None, Some(l), Some(c)) => format!("line {l}, column {c}: "),
        _ => String::new(),
    }
}

/// Reasons shared by several keys. Like every reason, they do not repeat the value.
pub(super) const UNKNOWN_NETWORK: &str = "not a known network (eip155:<chain id>, or a v1 name like base)";
pub(super) const BAD_PATH_PATTERN: &str = "not a route pattern: starts with `/`, no empty, `.`, `..` or encoded segments, \
     `{name}` parameters, `*` only as the last segment";

pub(super) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), reason: reason.into() }
}
