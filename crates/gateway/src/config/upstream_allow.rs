//! `[admin] upstream_allow`: the hosts (any port) and host:port pairs that upstreams set
//! through the admin API may point at even when they resolve to loopback, private or other
//! internal addresses.
//!
//! Owns the entry's parsing and how a host is compared (`normal_host`). Must not resolve
//! names, classify addresses or decide a refusal: that is the SSRF guard's (`crate::ssrf`),
//! which reads these entries from the configuration. Imports nothing of the crate, so the
//! guard can depend on the configuration and never the other way round.

/// One `[admin] upstream_allow` entry: a host (any port) or a host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    host: String,
    port: Option<u16>,
}

impl AllowEntry {
    /// `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
    pub fn parse(s: &str) -> Result<AllowEntry, String> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or("expected host, host:port or [v6]:port")?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':').ok_or("expected host, host:port or [v6]:port")?)),
            }
        } else if s.matches(':').count() == 1 {
            let (h, p) = s.split_once(':').ok_or("expected host or host:port")?;
            (h, Some(p))
        } else {
            (s, None)
        };
        let port = match port {
            None => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| "the port is not a number from 0 to 65535")?),
        };
        let ok = !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        if !ok {
            return Err(
                "expected a host name or address (letters, digits, '.', '-', '_'), optionally with :port".into()
            );
        }
        Ok(AllowEntry { host: normal_host(host), port })
    }

    /// Whether the entry names `host` (normalised by `normal_host`) on `port`: an entry without
    /// a port names every port of its host.
    pub fn allows(&self, host: &str, port: Option<u16>) -> bool {
        self.host == host && (self.port.is_none() || self.port == port)
    }

    /// Whether the entry names `host` (normalised), whatever its port.
    pub fn names_host(&self, host: &str) -> bool {
        self.host == host
    }
}

/// Hosts compare case-insensitively, without IPv6 brackets or a trailing dot.
pub fn normal_host(h: &str) -> String {
    h.trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: allow-list entries parse in every documented form and bad ones are refused.
    #[test]
    fn allow_entries() {
        let e = |h: &str, p| AllowEntry { host: h.to_owned(), port: p };
        assert_eq!(AllowEntry::parse("API.internal"), Ok(e("api.internal", None)));
        assert_eq!(AllowEntry::parse("127.0.0.1:8080"), Ok(e("127.0.0.1", Some(8080))));
        assert_eq!(AllowEntry::parse("[::1]:80"), Ok(e("::1", Some(80))));
        assert_eq!(AllowEntry::parse("[::1]"), Ok(e("::1", None)));
        assert_eq!(AllowEntry::parse("fd00::1"), Ok(e("fd00::1", None)));
        for bad in ["", "host:port", "http://x", "a b", "host:99999", "[::1"] {
            assert!(AllowEntry::parse(bad).is_err(), "{bad}");
        }
    }
}
