//! Startup refusals and warnings: what the file may say but the gateway will not run with.
//!
//! An admin listener off loopback without TLS, plain `http://` off loopback, an upstream at our
//! own RPC node or listeners (`upstream_conflict`, which `crate::ssrf` applies to the admin
//! API's upstreams too), secret files others can write or read, a world-writable file. Must not
//! read a secret (file modes are checked before any secret is read) and must not import
//! `build`, `provider` or `values`.

use std::net::SocketAddr;
use std::path::Path;

use reqwest::Url;
use secrecy::ExposeSecret as _;

use super::error::{ConfigError, invalid};
use super::raw::RawConfig;
use super::sections::{AdminConfig, ConfigWarning, NetworkConfig, ServerConfig};

/// Off loopback, a plain-HTTP admin API would send its bearer tokens across the network in
/// clear. Refused unless the listener serves TLS (`admin.tls_cert_file`) or
/// `admin.allow_insecure_remote` says a TLS proxy is in front; then warned.
pub(super) fn check_admin_listener(admin: &AdminConfig) -> Result<Option<ConfigWarning>, ConfigError> {
    if !admin.enabled || admin.listen.ip().is_loopback() || admin.tls.is_some() {
        return Ok(None);
    }
    if !admin.allow_insecure_remote {
        return Err(invalid(
            "admin.listen",
            "not a loopback address and no TLS: bearer tokens would cross the network in clear. Listen on \
             127.0.0.1 or ::1, set admin.tls_cert_file and admin.tls_key_file, or set \
             admin.allow_insecure_remote = true if a TLS proxy on this host is the only way in",
        ));
    }
    Ok(Some(ConfigWarning {
        key: "admin.listen".to_owned(),
        reason: "the admin API listens off loopback without TLS (admin.allow_insecure_remote = true): \
                 bearer tokens are readable on the network unless a TLS proxy is the only way in"
            .to_owned(),
    }))
}

/// `http://` to another host sends requests (RPC calls; upstream calls with their injected
/// credential) across the network in clear, where they can be read and answered by anyone
/// on the path. Loopback (`localhost`, 127.0.0.0/8, ::1) is fine; elsewhere the entry must say
/// `allow_insecure_http = true`.
pub(super) fn check_plain_http(key: &str, u: &Url, allowed: bool) -> Result<(), ConfigError> {
    if u.scheme() != "http" || allowed {
        return Ok(());
    }
    let loopback = match url_host(u) {
        Some(UrlHost::Ip(ip)) => ip.is_loopback(),
        Some(UrlHost::Loopback) => true,
        _ => false,
    };
    if loopback {
        return Ok(());
    }
    Err(invalid(
        key,
        "http:// to a host that is not loopback: traffic would cross the network in clear; use https://, \
         or set allow_insecure_http = true on this entry",
    ))
}

/// An upstream must be a third party: pointed at our RPC node it would let any paying agent
/// send JSON-RPC (transactions included) to the node with our network position; pointed at
/// the admin listener it would relay paid calls into the admin API; pointed at the gateway's
/// own listener it would loop. Compared by host and port (`localhost` and the unspecified
/// listen address count as loopback). Used for the file's providers and the admin API's.
pub fn check_upstream(
    key: &str,
    upstream: &Url,
    server: &ServerConfig,
    admin: &AdminConfig,
    networks: &[NetworkConfig],
) -> Result<(), ConfigError> {
    match upstream_conflict(upstream, server, admin, networks) {
        None => Ok(()),
        Some(UpstreamConflict::RpcNode { network }) => Err(invalid(
            key,
            format!(
                "points at the RPC node of networks[{network}] (same host and port): paying agents could send \
                 it JSON-RPC requests through the gateway"
            ),
        )),
        Some(UpstreamConflict::AdminListener) => {
            Err(invalid(key, "points at the admin listener (admin.listen): paid calls would reach the admin API"))
        }
        Some(UpstreamConflict::OwnListener) => {
            Err(invalid(key, "points at the gateway's own listener (server.listen): calls would loop"))
        }
    }
}

/// Which of the gateway's own endpoints an upstream's host and port name (`check_upstream`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamConflict {
    /// The RPC node of `networks[network]`.
    RpcNode {
        /// Index in `[[networks]]`.
        network: usize,
    },
    /// The admin listener.
    AdminListener,
    /// The public listener.
    OwnListener,
}

/// The first of the gateway's own endpoints `upstream` names by host and port, if any.
pub fn upstream_conflict(
    upstream: &Url,
    server: &ServerConfig,
    admin: &AdminConfig,
    networks: &[NetworkConfig],
) -> Option<UpstreamConflict> {
    for (network, n) in networks.iter().enumerate() {
        if let Ok(rpc) = Url::parse(n.rpc_url.expose_secret())
            && same_host_port(upstream, &rpc)
        {
            return Some(UpstreamConflict::RpcNode { network });
        }
    }
    if admin.enabled && points_at_listener(upstream, admin.listen) {
        return Some(UpstreamConflict::AdminListener);
    }
    if points_at_listener(upstream, server.listen) {
        return Some(UpstreamConflict::OwnListener);
    }
    None
}

/// The URL's host as an address when it is one (`localhost` counts as loopback).
enum UrlHost {
    Ip(std::net::IpAddr),
    Loopback,
    Name(String),
}

fn url_host(u: &Url) -> Option<UrlHost> {
    let host = u.host_str()?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Some(match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => UrlHost::Ip(ip),
        Err(_) if bare.eq_ignore_ascii_case("localhost") => UrlHost::Loopback,
        Err(_) => UrlHost::Name(bare.to_ascii_lowercase()),
    })
}

fn same_host_port(a: &Url, b: &Url) -> bool {
    if a.port_or_known_default() != b.port_or_known_default() {
        return false;
    }
    let is_loopback = |h: &UrlHost| match h {
        UrlHost::Ip(ip) => ip.is_loopback(),
        UrlHost::Loopback => true,
        UrlHost::Name(_) => false,
    };
    match (url_host(a), url_host(b)) {
        (Some(UrlHost::Ip(x)), Some(UrlHost::Ip(y))) => x == y,
        (Some(UrlHost::Name(x)), Some(UrlHost::Name(y))) => x == y,
        (Some(UrlHost::Loopback), Some(h)) | (Some(h), Some(UrlHost::Loopback)) => is_loopback(&h),
        _ => false,
    }
}

fn points_at_listener(u: &Url, listen: SocketAddr) -> bool {
    if u.port_or_known_default() != Some(listen.port()) {
        return false;
    }
    match url_host(u) {
        Some(UrlHost::Ip(ip)) => ip == listen.ip() || (listen.ip().is_unspecified() && ip.is_loopback()),
        Some(UrlHost::Loopback) => listen.ip().is_loopback() || listen.ip().is_unspecified(),
        _ => false,
    }
}

/// The permission bits of `path`, when it exists (always `None` off Unix).
pub(super) fn file_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::metadata(path).ok().map(|m| m.permissions().mode())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// Every file the configuration reads a secret from, checked before any is read: a
/// world-writable one is refused (anyone on the host could substitute a key they know, or a
/// credential of their choice), a group- or world-readable one is warned about.
pub(super) fn check_secret_files(raw: &RawConfig) -> Result<Vec<ConfigWarning>, ConfigError> {
    let mut files: Vec<(String, &Path)> = Vec::new();
    if let Some(f) = &raw.settlement.relayer_key_file {
        files.push(("settlement.relayer_key_file".to_owned(), f));
    }
    if let Some(f) = &raw.vault.master_key_file {
        files.push(("vault.master_key_file".to_owned(), f));
    }
    if let Some(f) = &raw.server.tls_key_file {
        files.push(("server.tls_key_file".to_owned(), f));
    }
    if let Some(f) = &raw.admin.tls_key_file {
        files.push(("admin.tls_key_file".to_owned(), f));
    }
    for (pi, p) in raw.providers.iter().enumerate() {
        if let Some(f) = p.credential.as_ref().and_then(|c| c.secret_file.as_deref()) {
            files.push((format!("providers[{pi}].credential.secret_file"), f));
        }
    }
    let mut warnings = Vec::new();
    for (key, path) in files {
        let Some(mode) = file_mode(path) else { continue };
        let bits = mode & 0o7777;
        if mode & 0o002 != 0 {
            return Err(invalid(
                key,
                format!(
                    "{} is world-writable (mode {bits:04o}): anyone on this host could replace the secret; chmod 600",
                    path.display()
                ),
            ));
        }
        if mode & 0o044 != 0 {
            warnings.push(ConfigWarning {
                key,
                reason: format!("{} is readable by other users (mode {bits:04o}); chmod 600", path.display()),
            });
        }
    }
    Ok(warnings)
}
