//! Path patterns of priced routes and the request-path checks done before any of them.
//!
//! A pattern is a sequence of literal segments and `{name}` segments (one segment each),
//! optionally ending in `*` (any remaining segments). Request paths with `.`/`..` segments,
//! raw or percent-encoded, encoded slashes or backslashes are refused outright: the
//! upstream URL is built from configuration plus this path, and must never escape it.
//! Paths and queries over their caps are refused before routing (414).

use std::fmt;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A compiled route path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    raw: String,
    segments: Vec<Segment>,
    wildcard: bool,
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl PathPattern {
    /// Parses `/a/{b}/c` or `/a/*`.
    pub fn parse(raw: &str) -> Result<PathPattern, String> {
        let rest = raw.strip_prefix('/').ok_or("must start with /")?;
        let mut segments = Vec::new();
        let mut wildcard = false;
        let parts: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
        let count = parts.len();
        for (i, part) in parts.into_iter().enumerate() {
            if part == "*" {
                if i + 1 != count {
                    return Err("`*` is only allowed as the last segment".into());
                }
                wildcard = true;
            } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(format!("bad parameter name in `{part}`"));
                }
                segments.push(Segment::Param(name.to_owned()));
            } else if part.is_empty()
                || part == "."
                || part == ".."
                || part.contains(['{', '}', '*', '%', '\\'])
                || part.chars().any(char::is_control)
            {
                return Err(format!("bad segment `{part}`"));
            } else {
                segments.push(Segment::Literal(part.to_owned()));
            }
        }
        Ok(PathPattern { raw: raw.to_owned(), segments, wildcard })
    }

    /// Whether some request path matches both patterns (used to refuse an endpoint that would
    /// shadow, or be shadowed by, another provider's).
    pub fn overlaps(&self, other: &PathPattern) -> bool {
        let compatible = self.segments.iter().zip(other.segments.iter()).all(|pair| match pair {
            (Segment::Literal(a), Segment::Literal(b)) => a == b,
            _ => true,
        });
        let (a, b) = (self.segments.len(), other.segments.len());
        compatible && (a == b || (a < b && self.wildcard) || (b < a && other.wildcard))
    }

    /// The names of its `{name}` segments, in order.
    pub fn param_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Whether it ends in `*` (any remaining segments).
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The values a matching request path gives its `{name}` segments, as they appear in the
    /// path (still percent-encoded). Empty when the path does not match.
    pub fn params(&self, path: &str) -> Vec<(String, String)> {
        if !self.matches(path) {
            return Vec::new();
        }
        let rest = path.strip_prefix('/').unwrap_or(path);
        self.segments
            .iter()
            .zip(rest.split('/'))
            .filter_map(|(seg, part)| match seg {
                Segment::Param(name) => Some((name.clone(), part.to_owned())),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    /// The bazaar extension's `routeTemplate` (`/weather/:city`): present only for a pattern
    /// with parameters and without a wildcard, which the template syntax cannot say.
    pub fn route_template(&self) -> Option<String> {
        if self.wildcard || self.param_names().next().is_none() {
            return None;
        }
        let mut out = String::new();
        for seg in &self.segments {
            out.push('/');
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(name) => {
                    out.push(':');
                    out.push_str(name);
                }
            }
        }
        Some(out)
    }

    /// Whether the (already checked) request path matches.
    pub fn matches(&self, path: &str) -> bool {
        let rest = path.strip_prefix('/').unwrap_or(path);
        let parts: Vec<&str> = if rest.is_empty() { Vec::new() } else { rest.split('/').collect() };
        if parts.len() < self.segments.len() || (!self.wildcard && parts.len() != self.segments.len()) {
            return false;
        }
        self.segments.iter().zip(parts.iter()).all(|(seg, part)| match seg {
            Segment::Literal(l) => l == part,
            Segment::Param(_) => !part.is_empty(),
        })
    }
}

/// Percent-decodes `s` (invalid escapes are kept as they are).
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
    percent_encoding::percent_decode_str(s).collect()
}

/// Longest request path accepted: what the ledger records of a call (longer ones would be
/// refused there, after verification had already cost RPC calls).
pub const PATH_BYTES_MAX: usize = tollgate_metering::PATH_BYTES_MAX;

/// Longest query string accepted (it is forwarded upstream, never stored).
pub const QUERY_BYTES_MAX: usize = 8 * 1024;

/// Which part of the request target is too long, and its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLong {
    /// `path` or `query`.
    pub part: &'static str,
    /// The cap in bytes.
    pub limit_bytes: usize,
}

/// Refuses a request target whose path or query is over its cap. Runs before routing, so an
/// oversized target costs no verification, RPC or ledger work.
pub fn check_target_length(path: &str, query: Option<&str>) -> Result<(), TooLong> {
    if path.len() > PATH_BYTES_MAX {
        return Err(TooLong { part: "path", limit_bytes: PATH_BYTES_MAX });
    }
    if query.is_some_and(|q| q.len() > QUERY_BYTES_MAX) {
        return Err(TooLong { part: "query", limit_bytes: QUERY_BYTES_MAX });
    }
    Ok(())
}

/// Refuses request paths that could reach outside the route once an upstream decodes them:
/// dot segments (raw or encoded), encoded slashes and backslashes, control characters.
pub fn check_request_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("path must start with /");
    }
    let decoded = percent_decode(path);
    if decoded.iter().any(|b| *b == b'\\' || *b < 0x20 || *b == 0x7f) {
        return Err("path contains a backslash or control character");
    }
    for raw_segment in path.split('/') {
        let seg = percent_decode(raw_segment);
        if seg.contains(&b'/') {
            return Err("path contains an encoded slash");
        }
        if seg == b"." || seg == b".." {
            return Err("path contains a dot segment");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: valid escapes decode (either hex case), invalid or cut-off ones stay as they are.
    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode("a%2Fb%2fc"), b"a/b/c".to_vec());
        assert_eq!(percent_decode("100%zz%4"), b"100%zz%4".to_vec());
        assert_eq!(percent_decode("%"), b"%".to_vec());
    }

    // Goal: literal, parameter and wildcard patterns match exactly what they should.
    #[test]
    fn patterns_match() {
        let p = PathPattern::parse("/weather/{city}").unwrap();
        assert!(p.matches("/weather/london"));
        assert!(!p.matches("/weather"));
        assert!(!p.matches("/weather/london/extra"));
        assert!(!p.matches("/weather/"));
        let w = PathPattern::parse("/search/*").unwrap();
        assert!(w.matches("/search"));
        assert!(w.matches("/search/a/b/c"));
        assert!(!w.matches("/searching"));
        let exact = PathPattern::parse("/v1/chat").unwrap();
        assert!(exact.matches("/v1/chat"));
        assert!(!exact.matches("/v1/chat2"));
        for bad in ["weather", "/a/*/b", "/a/{}", "/a/../b", "/a/%2e", "/a//b"] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    // Goal: parameters are read from a matching path, and the route template uses the
    // `:name` syntax only where it can say the whole pattern.
    #[test]
    fn params_and_templates() {
        let p = PathPattern::parse("/weather/{country}/{city}").unwrap();
        assert_eq!(
            p.params("/weather/uk/london"),
            vec![("country".into(), "uk".into()), ("city".into(), "london".into())]
        );
        assert!(p.params("/weather/uk").is_empty());
        assert_eq!(p.route_template().as_deref(), Some("/weather/:country/:city"));
        assert_eq!(PathPattern::parse("/static").unwrap().route_template(), None);
        assert_eq!(PathPattern::parse("/files/{id}/*").unwrap().route_template(), None);
        assert!(PathPattern::parse("/files/*").unwrap().is_wildcard());
    }

    // Goal: overlap is exact: patterns sharing a matching path overlap, disjoint ones do not.
    #[test]
    fn overlaps() {
        let p = |s: &str| PathPattern::parse(s).unwrap();
        for (a, b) in [
            ("/*", "/acme/x"),
            ("/acme/*", "/acme"),
            ("/acme/*", "/acme/{id}/y"),
            ("/a/{x}", "/a/b"),
            ("/a/{x}/c", "/a/{y}/c"),
            ("/a", "/a"),
        ] {
            assert!(p(a).overlaps(&p(b)) && p(b).overlaps(&p(a)), "{a} ~ {b}");
        }
        for (a, b) in [("/a/b", "/a/c"), ("/a/{x}", "/a"), ("/a/{x}", "/a/b/c"), ("/acme/*", "/evil/*"), ("/a", "/b/*")]
        {
            assert!(!p(a).overlaps(&p(b)) && !p(b).overlaps(&p(a)), "{a} !~ {b}");
        }
        assert!(PathPattern::parse("/a/b\u{0}c").is_err());
    }

    // Goal: a path or query one byte over its cap is refused, naming the part; at the cap it passes.
    #[test]
    fn target_length() {
        let at = format!("/{}", "a".repeat(PATH_BYTES_MAX - 1));
        assert_eq!(check_target_length(&at, None), Ok(()));
        assert_eq!(check_target_length(&format!("{at}b"), None).unwrap_err().part, "path");
        let q = "q".repeat(QUERY_BYTES_MAX);
        assert_eq!(check_target_length("/a", Some(&q)), Ok(()));
        assert_eq!(check_target_length("/a", Some(&format!("{q}q"))).unwrap_err().part, "query");
    }

    // Goal: traversal in any spelling is refused; ordinary paths pass.
    #[test]
    fn traversal_refused() {
        for ok in ["/weather/london", "/search/a%20b", "/x/file.txt", "/a/.hidden"] {
            assert_eq!(check_request_path(ok), Ok(()), "{ok}");
        }
        for bad in ["/a/../b", "/a/./b", "/a/%2e%2e/b", "/a/%2E%2e", "/a/..%2fadmin", "/a%5c..", "/a\\b", "/a/%00"] {
            assert!(check_request_path(bad).is_err(), "{bad}");
        }
    }
}
