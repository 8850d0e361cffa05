//! Redaction of the injected secret from what an upstream answers: every form the secret
//! can take on the way back (raw, percent-encoded in either hex case or the form encoding,
//! and for basic auth the base64 of `user:secret`), replaced by `[redacted]` in headers and
//! bodies, across chunk boundaries when a body is streamed.
//!
//! Must not: log or return a secret (a miss here is a leak; the tests split every needle at
//! every boundary).

use std::sync::Arc;

use bytes::Bytes;
use secrecy::ExposeSecret;

use crate::config::Injection;
use base64_engine::encode_basic;

/// What replaces a secret in a response.
const REDACTED: &[u8] = b"[redacted]";

/// The byte strings that betray an injected secret in a response: the secret as is, its
/// percent-encodings (upper- and lower-case hex, and the form encoding the query injection
/// itself uses), and for basic auth the base64 of `user:secret` with its encodings.
#[derive(Default)]
pub struct Redactor {
    /// Longest first, so the longest match wins at a position.
    needles: Vec<Vec<u8>>,
    longest: usize,
    /// The bytes a needle starts with: most positions are passed over on one lookup.
    first: Vec<bool>,
}

impl Redactor {
    /// The forms of `secret` as `injection` sends it.
    pub fn new(injection: &Injection, secret: &secrecy::SecretString) -> Redactor {
        let secret = secret.expose_secret();
        let mut needles = encodings(secret.as_bytes());
        if let Injection::Basic { username } = injection {
            needles.extend(encodings(encode_basic(username, secret).as_bytes()));
        }
        needles.retain(|n| !n.is_empty());
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        let longest = needles.first().map_or(0, Vec::len);
        let mut first = vec![false; 256];
        for n in &needles {
            if let Some(slot) = n.first().and_then(|b| first.get_mut(usize::from(*b))) {
                *slot = true;
            }
        }
        Redactor { needles, longest, first }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    /// The length of the needle starting at `at`, if any.
    fn needle_at(&self, hay: &[u8], at: usize) -> Option<usize> {
        let rest = hay.get(at..)?;
        self.needles.iter().find(|n| rest.starts_with(n)).map(Vec::len)
    }

    /// Copies `hay[..stop]` (and the whole of a needle starting before `stop`) to `out` with
    /// every needle replaced; returns how far it consumed and whether it replaced anything.
    fn scan(&self, hay: &[u8], stop: usize, out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        let mut hit = false;
        while i < stop {
            let Some(&b) = hay.get(i) else { break };
            let starts = self.first.get(usize::from(b)).copied().unwrap_or(false);
            if let Some(len) = starts.then(|| self.needle_at(hay, i)).flatten() {
                out.extend_from_slice(REDACTED);
                i += len;
                hit = true;
                continue;
            }
            out.push(b);
            i += 1;
        }
        (i, hit)
    }

    /// `hay` with every needle replaced, or `None` when there was none.
    pub fn redact(&self, hay: &[u8]) -> Option<Vec<u8>> {
        if self.is_empty() {
            return None;
        }
        let mut out = Vec::with_capacity(hay.len());
        let (_, hit) = self.scan(hay, hay.len(), &mut out);
        hit.then_some(out)
    }
}

/// Redaction of a streamed body: the last `longest - 1` bytes of each chunk are held back
/// until the next one arrives, so a secret split across chunks is still found.
pub(super) struct Scrubber {
    pub(super) redactor: Arc<Redactor>,
    pub(super) carry: Vec<u8>,
    pub(super) hit: bool,
}

impl Scrubber {
    pub(super) fn push(&mut self, chunk: &[u8]) -> Bytes {
        if self.redactor.is_empty() {
            return Bytes::copy_from_slice(chunk);
        }
        self.carry.extend_from_slice(chunk);
        // A needle starting before `stop` ends within what is held.
        let stop = self.carry.len().saturating_sub(self.redactor.longest.saturating_sub(1));
        let mut out = Vec::with_capacity(stop);
        let (consumed, hit) = self.redactor.scan(&self.carry, stop, &mut out);
        self.hit |= hit;
        self.carry.drain(..consumed.min(self.carry.len()));
        Bytes::from(out)
    }

    pub(super) fn finish(&mut self) -> Bytes {
        let mut out = Vec::with_capacity(self.carry.len());
        let (_, hit) = self.redactor.scan(&self.carry, self.carry.len(), &mut out);
        self.hit |= hit;
        self.carry.clear();
        Bytes::from(out)
    }
}

/// `raw` and its percent-encodings.
fn encodings(raw: &[u8]) -> Vec<Vec<u8>> {
    const UPPER: &[u8; 16] = b"0123456789ABCDEF";
    const LOWER: &[u8; 16] = b"0123456789abcdef";
    let encode = |hex: &[u8; 16], keep: &dyn Fn(u8) -> bool, space_plus: bool| {
        let mut out = Vec::with_capacity(raw.len() * 3);
        for &b in raw {
            if keep(b) {
                out.push(b);
            } else if space_plus && b == b' ' {
                out.push(b'+');
            } else {
                out.push(b'%');
                out.extend(hex.get(usize::from(b >> 4)).copied());
                out.extend(hex.get(usize::from(b & 0xf)).copied());
            }
        }
        out
    };
    // RFC 3986 unreserved characters, and what `application/x-www-form-urlencoded` keeps.
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || b"-._~".contains(&b);
    let form = |b: u8| b.is_ascii_alphanumeric() || b"*-._".contains(&b);
    vec![
        raw.to_vec(),
        encode(UPPER, &unreserved, false),
        encode(LOWER, &unreserved, false),
        encode(UPPER, &form, true),
        encode(LOWER, &form, true),
    ]
}

/// Basic-auth encoding.
pub(super) mod base64_engine {
    use base64::Engine as _;
    pub fn encode_basic(user: &str, password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor(secret: &str) -> Redactor {
        let injection = Injection::Basic { username: "svc".to_owned() };
        Redactor::new(&injection, &secrecy::SecretString::from(secret.to_owned()))
    }

    // Goal: every form of the secret is replaced, in one piece and split across any chunk
    // boundary of a streamed body.
    #[test]
    fn redaction_in_one_piece_and_across_chunks() {
        let r = Arc::new(redactor("s3cr/t+ky"));
        let basic = encode_basic("svc", "s3cr/t+ky");
        let text = format!("a s3cr/t+ky b s3cr%2Ft%2Bky c s3cr%2ft%2bky d {basic} e");
        let clean = String::from_utf8(r.redact(text.as_bytes()).unwrap()).unwrap();
        assert_eq!(clean, "a [redacted] b [redacted] c [redacted] d [redacted] e");
        for split in 0..text.len() {
            for step in [1, 2, 3, 7] {
                let mut s = Scrubber { redactor: r.clone(), carry: Vec::new(), hit: false };
                let mut out = Vec::new();
                let (head, tail) = text.as_bytes().split_at(split);
                out.extend_from_slice(&s.push(head));
                for piece in tail.chunks(step) {
                    out.extend_from_slice(&s.push(piece));
                }
                out.extend_from_slice(&s.finish());
                assert_eq!(String::from_utf8(out).unwrap(), clean, "split at {split}, step {step}");
                assert!(s.hit);
            }
        }
        assert!(r.redact(b"nothing here").is_none());
    }
}
