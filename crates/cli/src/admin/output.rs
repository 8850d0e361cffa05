//! How an answer becomes output: pretty JSON on stdout, a created token written to a new
//! 0600 file, and the audit verdict's exit code.
//!
//! Must not: print a token except in the answer that created it (once).

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use crate::{EXIT_AUDIT_BROKEN, EXIT_FAILURE, EXIT_OK, Failure};

pub(super) fn print_json(v: &Value) {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    // A closed pipe is quiet (crate::out); any other write failure is told on stderr.
    if let Err(f) = crate::out::print_line(text) {
        say!("tollgate: {}", f.message);
    }
}

/// Prints a creation answer holding a token, or writes the token to a new 0600 file and
/// prints the rest.
pub(super) fn print_created(mut answer: Value, out: Option<&Path>) -> Result<u8, Failure> {
    if let Some(path) = out {
        let token = answer
            .as_object_mut()
            .and_then(|o| o.remove("token"))
            .and_then(|t| t.as_str().map(str::to_owned))
            .ok_or_else(|| Failure::new(EXIT_FAILURE, "the answer holds no token"))?;
        write_new_private(path, &format!("{token}\n"))?;
        if let Some(o) = answer.as_object_mut() {
            o.insert("token_file".to_owned(), Value::String(path.display().to_string()));
        }
    }
    print_json(&answer);
    Ok(EXIT_OK)
}

pub(super) fn write_new_private(path: &Path, text: &str) -> Result<(), Failure> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let fail = |e: std::io::Error| Failure::new(EXIT_FAILURE, format!("cannot write {}: {e}", path.display()));
    let mut file = opts.open(path).map_err(fail)?;
    file.write_all(text.as_bytes()).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Exit 0 when the chain is intact, else 8 with the first broken sequence number.
pub(super) fn verdict(intact: bool, broken_at_seq: Option<u64>, problem: Option<&str>) -> Result<u8, Failure> {
    if intact {
        return Ok(EXIT_OK);
    }
    let seq = broken_at_seq.map_or_else(|| "?".to_owned(), |s| s.to_string());
    Err(Failure::new(
        EXIT_AUDIT_BROKEN,
        format!("audit chain broken at seq {seq}: {}", problem.unwrap_or("unknown problem")),
    ))
}
