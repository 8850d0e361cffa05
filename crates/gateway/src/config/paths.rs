//! Relative paths in the file resolve against the file's own folder, not the working
//! directory: secret files (`relayer_key_file`, `master_key_file`, a credential's
//! `secret_file`), certificate and key files, `tls.extra_ca_file`, and the SQLite database
//! (`database.url = "sqlite://ledger.db"`, and the default `tollgate.db`). Values taken from
//! the environment (`database.url_env`, `*_env`) are used as given.
//!
//! A gateway that ran before this rule with a relative database path and another working
//! directory would now open a new, empty ledger beside the file: refused at startup naming
//! both paths (`ConfigError::Invalid` on `database.url`), so nothing is silently lost.
//!
//! Must not: read a file's contents (only whether a database file exists), or import `build`.

use std::path::{Path, PathBuf};

use super::error::{ConfigError, invalid};
use super::raw::RawConfig;

/// Resolves every relative path of `raw` against `base` (the file's folder, absolute).
pub(super) fn resolve(raw: &mut RawConfig, base: &Path) -> Result<(), ConfigError> {
    let fix = |p: &mut Option<PathBuf>| {
        if let Some(path) = p
            && path.is_relative()
        {
            *path = base.join(&*path);
        }
    };
    fix(&mut raw.settlement.relayer_key_file);
    fix(&mut raw.vault.master_key_file);
    fix(&mut raw.server.tls_cert_file);
    fix(&mut raw.server.tls_key_file);
    fix(&mut raw.admin.tls_cert_file);
    fix(&mut raw.admin.tls_key_file);
    fix(&mut raw.tls.extra_ca_file);
    for p in &mut raw.providers {
        if let Some(c) = &mut p.credential {
            fix(&mut c.secret_file);
        }
    }
    if raw.database.url_env.is_none() {
        let url = raw.database.url.get_or_insert_with(|| DEFAULT_SQLITE_URL.to_owned());
        if let Some(resolved) = sqlite_url_against(url, base)? {
            *url = resolved;
        }
    }
    Ok(())
}

/// The database when the file names none.
pub(super) const DEFAULT_SQLITE_URL: &str = "sqlite://tollgate.db?mode=rwc";

/// A `sqlite:` URL with a relative file resolved against `base`; `None` when there is nothing
/// to resolve (PostgreSQL, an absolute path, an in-memory database).
fn sqlite_url_against(url: &str, base: &Path) -> Result<Option<String>, ConfigError> {
    let Some(rest) = url.strip_prefix("sqlite:") else { return Ok(None) };
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (file, query) = match rest.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (rest, None),
    };
    let path = Path::new(file);
    if file.is_empty() || file.starts_with(":memory:") || path.is_absolute() {
        return Ok(None);
    }
    let resolved = base.join(path);
    // The same relative path from the working directory: where an older build put the ledger.
    if let Ok(cwd) = std::env::current_dir()
        && !resolved.exists()
        && cwd.join(path) != resolved
        && cwd.join(path).exists()
    {
        return Err(invalid(
            "database.url",
            format!(
                "relative paths resolve against the configuration file's folder: {} does not exist, but {} \
                 (the same path from the working directory) does; move the database there or give an absolute path",
                resolved.display(),
                cwd.join(path).display()
            ),
        ));
    }
    let query = query.map(|q| format!("?{q}")).unwrap_or_default();
    Ok(Some(format!("sqlite://{}{query}", resolved.display())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    // Goal: relative SQLite files resolve against the base, and nothing else is touched.
    #[test]
    fn sqlite_urls_resolve_against_the_base() {
        let base = Path::new("/etc/tollgate");
        let r = |u: &str| sqlite_url_against(u, base).unwrap();
        assert_eq!(r("sqlite://ledger.db?mode=rwc").as_deref(), Some("sqlite:///etc/tollgate/ledger.db?mode=rwc"));
        assert_eq!(r("sqlite:data/l.db").as_deref(), Some("sqlite:///etc/tollgate/data/l.db"));
        assert_eq!(r("sqlite:///var/lib/t.db"), None);
        assert_eq!(r("sqlite::memory:"), None);
        assert_eq!(r("postgres://u@h/db"), None);
    }
}
