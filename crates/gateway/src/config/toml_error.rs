//! Turns a TOML or serde error about the configuration file into a [`ConfigError::Parse`]
//! that names the key and the position and never quotes the file.
//!
//! The `toml` crate's `Display` prints the offending source line, and serde's messages quote
//! the value (`invalid type: string "0x…", expected u64`). Both can be a secret: an unknown
//! `relayer_key = "0x…"` next to the `relayer_key_env` it was meant to be, or an unquoted
//! `rpc_url = https://host/KEY`. So this module uses only the error's span (for line and
//! column), the path serde was deserializing, and the *shape* of the message: the parts that
//! come from our schema or the TOML grammar are kept, anything that may come from the input
//! is dropped. It must not print any byte of the input other than a key name that passes
//! [`printable_key`].
//!
//! Imports no part of `config` but `error`.

use serde::de::DeserializeOwned;

use super::error::ConfigError;

/// Deserializes `text`, reporting errors through [`describe`].
pub(super) fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let de = toml::de::Deserializer::parse(text).map_err(|e| describe(text, &e, None))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        describe(text, e.inner(), Some(path))
    })
}

/// The descriptions `toml_parser` gives syntax errors. They come from the grammar, not the
/// input; an unknown one (a newer parser) is reported as a generic syntax error.
const SYNTAX_DESCRIPTIONS: &[&str] = &[
    "`_` may only go between digits",
    "cannot recurse further; max recursion depth met",
    "carriage return must be followed by newline",
    "duplicate key",
    "extra `=`",
    "extra assignment between key-value pairs",
    "extra comma in array",
    "extra comma in inline table",
    "integers with a radix cannot be signed",
    "invalid basic string",
    "invalid binary number",
    "invalid boolean",
    "invalid comment character",
    "invalid date-time",
    "invalid exponent",
    "invalid float",
    "invalid fraction",
    "invalid hexadecimal number",
    "invalid inline table element",
    "invalid integer number",
    "invalid key",
    "invalid key-value pair",
    "invalid literal string",
    "invalid mantissa",
    "invalid multi-line basic string",
    "invalid multi-line literal string",
    "invalid octal number",
    "invalid string",
    "invalid table",
    "invalid unquoted key",
    "invalid value",
    "key with no value",
    "keys cannot be multi-line basic strings",
    "keys cannot be multi-line literal strings",
    "missing array opening",
    "missing assignment between key-value pairs",
    "missing comma between array elements",
    "missing comma between key-value pairs",
    "missing comment start",
    "missing escaped value",
    "missing inline table opening",
    "missing key for inline table element",
    "missing opening quote",
    "missing table open",
    "missing value",
    "missing value for key",
    "radix must be lowercase",
    "recursion limit",
    "redundant integer number prefix",
    "redundant numeric sign",
    "string values must be quoted",
    "too few unicode value digits",
    "unclosed array",
    "unclosed array table",
    "unclosed inline table",
    "unclosed table",
    "unexpected `=` in array",
    "unexpected content",
    "unexpected content between comment and newline",
    "unexpected key or value",
    "unexpected leading zero",
    "unexpected sign",
    "unquoted keys cannot be empty",
];

/// Builds the error from `e`'s position and message shape; `path` is where serde was when it
/// failed (absent for syntax errors, which happen before deserialization).
pub(super) fn describe(text: &str, e: &toml::de::Error, path: Option<String>) -> ConfigError {
    let start = e.span().map(|s| s.start);
    let (line, column) = match start.and_then(|s| position(text, s)) {
        Some((l, c)) => (Some(l), Some(c)),
        None => (None, None),
    };
    let message = e.message();
    // serde_path_to_error has already entered an unknown key when its visitor refuses it: keep
    // the table's path, and judge the key's name separately.
    let unknown = message.strip_prefix("unknown field `").map(|rest| rest.split_once('`').map_or("", |(n, _)| n));
    let path = match (path, unknown) {
        (Some(p), Some(name)) if p == name => None,
        (Some(p), Some(name)) => Some(p.strip_suffix(&format!(".{name}")).map(str::to_owned).unwrap_or(p)),
        (p, _) => p,
    };
    let path = path.filter(|p| !p.is_empty() && p != "." && p.split('.').all(printable_segment));
    // The part after the last ", expected " names what the schema or grammar wanted.
    let expected = message.rsplit_once(", expected ").map(|(_, x)| x);
    let (key, reason) = if let Some(rest) = message.strip_prefix("unknown field `") {
        // serde: "unknown field `NAME`, expected one of `a`, `b`" (or "there are no fields").
        let name = rest.split_once('`').map(|(n, _)| n).unwrap_or("");
        let reason = match rest.split_once("`, ") {
            Some((_, tail)) if tail.starts_with("expected") || tail == "there are no fields" => {
                format!("unknown key; {tail}")
            }
            _ => "unknown key".to_owned(),
        };
        let key = if printable_key(name) {
            Some(join(path.as_deref(), name))
        } else {
            // Still say where: the table it was found in.
            path.map(|p| format!("{p}.<key not shown>"))
        };
        (key, reason)
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split_once('`').map(|(n, _)| n).unwrap_or("");
        let key = printable_key(name).then(|| join(path.as_deref(), name));
        (key, "missing".to_owned())
    } else if let Some(kind) = ["invalid type", "invalid value", "invalid length", "unknown variant"]
        .into_iter()
        .find(|k| message.starts_with(k))
    {
        // serde quotes the value between the kind and ", expected …": drop it.
        let reason = match expected {
            Some(x) => format!("{kind}; expected {x}"),
            None => kind.to_owned(),
        };
        (path.or_else(|| key_on_line(text, start)), reason)
    } else {
        let description = message.split_once(", expected ").map(|(d, _)| d).unwrap_or(message);
        let reason = if SYNTAX_DESCRIPTIONS.contains(&description) {
            match expected {
                Some(x) => format!("TOML syntax: {description}; expected {x}"),
                None => format!("TOML syntax: {description}"),
            }
        } else if path.is_some() {
            // A message of a Deserialize impl, which may quote the value.
            "invalid value".to_owned()
        } else {
            "TOML syntax error".to_owned()
        };
        (path.or_else(|| key_on_line(text, start)), reason)
    };
    ConfigError::Parse { key, line, column, reason }
}

fn join(path: Option<&str>, name: &str) -> String {
    match path {
        Some(p) => format!("{p}.{name}"),
        None => name.to_owned(),
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn position(text: &str, offset: usize) -> Option<(usize, usize)> {
    let before = text.get(..offset.min(text.len()))?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before.get(line_start..).map(|l| l.chars().count()).unwrap_or(0) + 1;
    Some((line, column))
}

/// For errors without a serde path (syntax errors): the key assigned on the error's line and
/// the table it is in (`networks.rpc_url`), when both look like key names. Array indices are
/// not counted; the line number says which entry.
fn key_on_line(text: &str, start: Option<usize>) -> Option<String> {
    let start = start?;
    let before = text.get(..start.min(text.len()))?;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = text.get(line_start..)?.split('\n').next()?;
    let (name, _) = line.split_once('=')?;
    let name = name.trim();
    if !name.split('.').all(printable_key) {
        return None;
    }
    // The nearest table header above the line.
    let table = text.get(..line_start)?.lines().rev().map(str::trim).find(|l| l.starts_with('['));
    let table = table
        .map(|h| h.trim_start_matches('[').split(']').next().unwrap_or("").trim())
        .filter(|h| !h.is_empty() && h.split('.').all(printable_key));
    Some(match table {
        Some(t) => format!("{t}.{name}"),
        None => name.to_owned(),
    })
}

/// Whether `name` may be printed as a key: shaped like ours (short, lower case, `_`, `-`, at
/// most three digits as in `eip712_name`), not like key material (hex keys and API tokens
/// have many digits, and tokens mixed case).
pub(super) fn printable_key(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name.bytes().filter(u8::is_ascii_digit).count() <= 3
}

/// A serde path segment: a key, optionally indexed (`providers[0]`, `routes[12]`).
fn printable_segment(seg: &str) -> bool {
    let name = seg.split('[').next().unwrap_or("");
    let indices = seg.get(name.len()..).unwrap_or("");
    printable_key(name) && indices.bytes().all(|b| b.is_ascii_digit() || b == b'[' || b == b']')
}
