//! Forwarding a paid request upstream: strip what the agent must not pass on, inject the
//! provider's credential, send a request body already read within its cap, never follow
//! redirects, and clean the answer before any byte of it reaches the agent.
//!
//! The upstream URL comes only from configuration plus the already-checked request path:
//! an agent cannot choose the host. The credential is inserted *replacing* any value the
//! agent sent under the same name, and marked sensitive so it is never logged.
//!
//! What comes back is treated as hostile: URLs in `Location`, `Content-Location`, `Link` and
//! `Refresh` are rewritten into the gateway's path space or dropped (the upstream's host is
//! never shown), `Set-Cookie` is dropped unless the route allows it, and every form of the
//! injected secret (raw, percent-encoded, and for basic auth its base64 form) is replaced by
//! `[redacted]` in headers and bodies, across chunk boundaries when the body is streamed.
//!
//! Must not: know the ledger or settlement (the caller decides what a response earns), or
//! put a secret or an upstream URL into an error.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use tokio::sync::oneshot;

use crate::config::Injection;
use crate::error::GatewayError;
pub use redact::Redactor;
use redact::Scrubber;
use redact::base64_engine::encode_basic;

mod redact;

/// Request headers never forwarded: hop-by-hop headers (RFC 9110 §7.6.1), the agent's own
/// credentials, the payment itself, and the agent's claims about where the request came from
/// (the gateway sets its own `X-Forwarded-*`).
const STRIPPED_REQUEST: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "authorization",
    "cookie",
    "payment-signature",
    "x-payment",
    "access-control-expose-headers",
    "content-length",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-real-ip",
];

/// Response headers never relayed: hop-by-hop, lengths we recompute, and anything that
/// could be mistaken for our own receipt.
const STRIPPED_RESPONSE: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "payment-response",
    "x-payment-response",
    "payment-required",
];

/// The ledger causes of a `before`-mode delivery broken mid-body.
pub const CAUSE_BODY_INCOMPLETE: &str = "upstream_body_incomplete";

/// See [`CAUSE_BODY_INCOMPLETE`].
pub const CAUSE_TIMEOUT: &str = "upstream_timeout";

/// See [`CAUSE_BODY_INCOMPLETE`].
pub const CAUSE_TOO_LARGE: &str = "upstream_response_too_large";

/// The `X-Forwarded-*` headers the gateway sets (the agent's own are always stripped).
#[derive(Debug, Clone)]
pub struct Forwarded {
    /// The agent's socket address (absent when the server was not given connection info).
    pub client_ip: Option<IpAddr>,
    /// `http` or `https`: how the agent reached the gateway.
    pub proto: String,
    /// The gateway's host as the agent addressed it.
    pub host: Option<String>,
}

/// Where and how to forward one request.
pub struct Target<'a> {
    /// Full upstream URL (base from config, path checked, agent query).
    pub url: String,
    /// The credential to inject: where, and the secret (resolved for this call).
    pub credential: Option<(&'a Injection, &'a secrecy::SecretString)>,
    /// Whole-exchange timeout.
    pub timeout: Duration,
    /// Response body cap.
    pub response_bytes_max: u64,
    /// The provider's id (named in logs).
    pub provider: &'a str,
    /// The provider's upstream base: URLs inside it are rewritten into the gateway's space.
    pub base: &'a reqwest::Url,
    /// The gateway-side prefix `strip_prefix` removed (put back when rewriting URLs).
    pub strip_prefix: Option<&'a str>,
    /// The forwarding headers to set; `None` sets none.
    pub forwarded: Option<Forwarded>,
    /// Relay the upstream's `Set-Cookie` (a route setting; off by default).
    pub allow_set_cookie: bool,
}

/// What came back.
pub struct Upstream {
    /// Status.
    pub status: StatusCode,
    /// Filtered, rewritten and redacted headers.
    pub headers: HeaderMap,
    /// The body, read in full (within the cap, redacted) or still streaming.
    pub body: UpstreamBody,
    redactor: Arc<Redactor>,
    provider: String,
    ended: Option<oneshot::Sender<Delivery>>,
}

/// An upstream body.
pub enum UpstreamBody {
    /// Read completely: charging depends on complete delivery.
    Buffered(Bytes),
    /// Relayed as it arrives (the call is already paid for).
    Streaming(reqwest::Response),
}

/// How a streamed body ended, reported to whoever called [`Upstream::watch_delivery`].
/// If the agent goes away first the stream is dropped and nothing is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The upstream's body ended normally and all of it was handed on.
    Complete,
    /// The upstream broke off, timed out or overran the cap mid-body.
    Broken {
        /// `upstream_body_incomplete`, `upstream_timeout` or `upstream_response_too_large`.
        cause: &'static str,
    },
}

impl Upstream {
    /// Whether this status earns payment: 2xx, and 3xx only where the route says so (a
    /// redirect is not the resource).
    pub fn succeeded(&self, charge_redirects: bool) -> bool {
        self.status.is_success() || (charge_redirects && self.status.is_redirection())
    }

    /// A receiver told how the streamed body ended (a buffered body is complete already).
    pub fn watch_delivery(&mut self) -> oneshot::Receiver<Delivery> {
        let (tx, rx) = oneshot::channel();
        match self.body {
            UpstreamBody::Buffered(_) => {
                let _ = tx.send(Delivery::Complete);
            }
            UpstreamBody::Streaming(_) => self.ended = Some(tx),
        }
        rx
    }

    /// Status, headers and the body for the agent: buffered bytes, or the upstream stream
    /// capped at `cap` (the connection is cut if the upstream sends more) and redacted.
    pub fn into_parts(self, cap: u64) -> (StatusCode, HeaderMap, Body) {
        let body = into_body(self.body, cap, self.redactor, self.provider, self.ended);
        (self.status, self.headers, body)
    }
}

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()).collect::<Vec<_>>())
        .collect()
}

/// The agent's headers minus everything in [`STRIPPED_REQUEST`] and whatever `Connection`
/// names.
pub fn forwardable_request_headers(headers: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        if STRIPPED_REQUEST.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

/// Builds the upstream URL: the configured base, the request path without the provider's
/// prefix, and the agent's query (minus the credential's parameter, when injected there).
pub fn upstream_url(base: &reqwest::Url, path: &str, strip_prefix: Option<&str>, query: Option<&str>) -> String {
    let rest = match strip_prefix {
        Some(p) => path.strip_prefix(p).unwrap_or(path),
        None => path,
    };
    let rest = if rest.starts_with('/') || rest.is_empty() { rest.to_owned() } else { format!("/{rest}") };
    let base = base.as_str().trim_end_matches('/');
    match query {
        Some(q) if !q.is_empty() => format!("{base}{rest}?{q}"),
        _ => format!("{base}{rest}"),
    }
}

fn inject(
    url: &mut reqwest::Url,
    headers: &mut HeaderMap,
    injection: &Injection,
    secret: &secrecy::SecretString,
) -> Result<(), GatewayError> {
    let secret = secret.expose_secret();
    match injection {
        Injection::Header { name, template } => {
            let mut value = HeaderValue::from_str(&template.replace("{secret}", secret))
                .map_err(|_| GatewayError::Internal("credential is not a valid header value".to_owned()))?;
            value.set_sensitive(true);
            headers.insert(name.clone(), value);
        }
        Injection::Query { param } => {
            let kept: Vec<(String, String)> = url
                .query_pairs()
                .filter(|(k, _)| k != param.as_str())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let mut pairs = url.query_pairs_mut();
            pairs.clear();
            for (k, v) in &kept {
                pairs.append_pair(k, v);
            }
            pairs.append_pair(param, secret);
        }
        Injection::Basic { username } => {
            let mut value = HeaderValue::from_str(&format!("Basic {}", encode_basic(username, secret)))
                .map_err(|_| GatewayError::Internal("credential is not a valid header value".to_owned()))?;
            value.set_sensitive(true);
            headers.insert(header::AUTHORIZATION, value);
        }
    }
    Ok(())
}

fn set_forwarded(headers: &mut HeaderMap, f: &Forwarded) {
    if let Some(ip) = f.client_ip
        && let Ok(v) = HeaderValue::from_str(&ip.to_string())
    {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&f.proto) {
        headers.insert(HeaderName::from_static("x-forwarded-proto"), v);
    }
    if let Some(host) = &f.host
        && let Ok(v) = HeaderValue::from_str(host)
    {
        headers.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
}

/// Reads the agent's request body completely, refusing it as soon as it passes `cap` (a
/// declared `Content-Length` over the cap is refused before reading), within `timeout`.
/// Nothing is sent upstream before this returns: a paid call is never executed with a body
/// the gateway would have refused, or a truncated one.
pub async fn read_request_body(
    body: Body,
    headers: &HeaderMap,
    cap: u64,
    timeout: Duration,
) -> Result<Bytes, GatewayError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > cap) {
        return Err(GatewayError::BodyTooLarge { limit_bytes: cap });
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut buf = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| GatewayError::RequestBodyIncomplete)?;
            if (buf.len() as u64).saturating_add(chunk.len() as u64) > cap {
                return Err(GatewayError::BodyTooLarge { limit_bytes: cap });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| GatewayError::RequestBodyTimeout)?
}

/// Forwards the request (its body already read within the cap) and returns the upstream's
/// answer, cleaned. With `buffer` the response body is read completely (capped, redacted)
/// before returning.
pub async fn forward(
    http: &reqwest::Client,
    target: Target<'_>,
    method: Method,
    agent_headers: &HeaderMap,
    body: Bytes,
    buffer: bool,
) -> Result<Upstream, GatewayError> {
    let mut url = reqwest::Url::parse(&target.url)
        .map_err(|_| GatewayError::Internal("upstream URL does not parse".to_owned()))?;
    let mut headers = forwardable_request_headers(agent_headers);
    if let Some(f) = &target.forwarded {
        set_forwarded(&mut headers, f);
    }
    let mut redactor = Redactor::default();
    let mut injected_param = None;
    if let Some((injection, secret)) = target.credential {
        inject(&mut url, &mut headers, injection, secret)?;
        redactor = Redactor::new(injection, secret);
        if let Injection::Query { param } = injection {
            injected_param = Some(param.as_str());
        }
        // Redaction reads the bytes as sent: ask for them unencoded.
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("identity"));
    }
    let redactor = Arc::new(redactor);
    let result = http.request(method, url.clone()).headers(headers).body(body).timeout(target.timeout).send().await;
    let response = match result {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return Err(GatewayError::UpstreamTimeout),
        Err(e) => return Err(GatewayError::UpstreamUnavailable { reason: describe(&e) }),
    };
    let status = response.status();
    let rules = Rewrite { request_url: &url, base: target.base, strip_prefix: target.strip_prefix, injected_param };
    let (headers, mut redacted) =
        relayable_response_headers(response.headers(), &rules, &redactor, target.allow_set_cookie);
    if !redactor.is_empty()
        && headers.get(header::CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
    {
        // Asked for `identity` and got an encoded body anyway: its bytes cannot be searched.
        tracing::warn!(provider = %target.provider, "upstream sent an encoded body despite accept-encoding: identity; \
            it is relayed without redaction");
    }
    let provider = target.provider.to_owned();
    let upstream = |body, redacted: bool| {
        if redacted {
            warn_redacted(&provider);
        }
        Upstream { status, headers, body, redactor: redactor.clone(), provider: provider.clone(), ended: None }
    };
    if !buffer {
        return Ok(upstream(UpstreamBody::Streaming(response), redacted));
    }
    let mut body = read_capped(response, target.response_bytes_max).await?;
    if let Some(clean) = redactor.redact(&body) {
        body = Bytes::from(clean);
        redacted = true;
    }
    Ok(upstream(UpstreamBody::Buffered(body), redacted))
}

fn warn_redacted(provider: &str) {
    tracing::warn!(provider = %provider, "upstream response carried the injected credential; redacted before relaying");
}

async fn read_capped(mut response: reqwest::Response, cap: u64) -> Result<Bytes, GatewayError> {
    if response.content_length().is_some_and(|l| l > cap) {
        return Err(GatewayError::UpstreamResponseTooLarge { limit_bytes: cap });
    }
    let mut buf = BytesMut::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if (buf.len() + chunk.len()) as u64 > cap {
                    return Err(GatewayError::UpstreamResponseTooLarge { limit_bytes: cap });
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(buf.freeze()),
            Err(e) if e.is_timeout() => return Err(GatewayError::UpstreamTimeout),
            Err(e) => return Err(GatewayError::UpstreamUnavailable { reason: describe(&e) }),
        }
    }
}

/// A streamed body's progress: the cap, the redaction carried across chunks, and who is
/// told how it ended.
struct Relay {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    seen: u64,
    cap: u64,
    scrub: Scrubber,
    provider: String,
    warned: bool,
    ended: Option<oneshot::Sender<Delivery>>,
    done: bool,
}

impl Relay {
    fn end(&mut self, how: Delivery) {
        self.done = true;
        if let Some(tx) = self.ended.take() {
            // The watcher may have stopped waiting (its task ended); nothing else to tell.
            let _ = tx.send(how);
        }
    }

    fn scrubbed(&mut self, out: Bytes) -> Bytes {
        if self.scrub.hit && !self.warned {
            self.warned = true;
            warn_redacted(&self.provider);
        }
        out
    }

    async fn next(mut self) -> Option<(std::io::Result<Bytes>, Relay)> {
        if self.done {
            return None;
        }
        match self.stream.next().await {
            Some(Ok(chunk)) => {
                self.seen = self.seen.saturating_add(chunk.len() as u64);
                if self.seen > self.cap {
                    self.end(Delivery::Broken { cause: CAUSE_TOO_LARGE });
                    return Some((Err(std::io::Error::other("upstream response over the cap")), self));
                }
                let out = self.scrub.push(&chunk);
                let out = self.scrubbed(out);
                Some((Ok(out), self))
            }
            Some(Err(e)) => {
                let cause = if e.is_timeout() { CAUSE_TIMEOUT } else { CAUSE_BODY_INCOMPLETE };
                self.end(Delivery::Broken { cause });
                Some((Err(std::io::Error::other(cause)), self))
            }
            None => {
                let tail = self.scrub.finish();
                let tail = self.scrubbed(tail);
                self.end(Delivery::Complete);
                if tail.is_empty() { None } else { Some((Ok(tail), self)) }
            }
        }
    }
}

fn into_body(
    body: UpstreamBody,
    cap: u64,
    redactor: Arc<Redactor>,
    provider: String,
    ended: Option<oneshot::Sender<Delivery>>,
) -> Body {
    match body {
        UpstreamBody::Buffered(b) => Body::from(b),
        UpstreamBody::Streaming(r) => {
            let relay = Relay {
                stream: r.bytes_stream().boxed(),
                seen: 0,
                cap,
                scrub: Scrubber { redactor, carry: Vec::new(), hit: false },
                provider,
                warned: false,
                ended,
                done: false,
            };
            Body::from_stream(futures_util::stream::unfold(relay, Relay::next))
        }
    }
}

/// How URLs in response headers are brought into the gateway's path space.
struct Rewrite<'a> {
    /// What was requested (relative references resolve against it).
    request_url: &'a reqwest::Url,
    base: &'a reqwest::Url,
    strip_prefix: Option<&'a str>,
    /// The query parameter carrying the credential, removed from rewritten URLs.
    injected_param: Option<&'a str>,
}

impl Rewrite<'_> {
    /// `target` as a gateway path (`/prefix/rest?query#fragment`) when it points inside the
    /// upstream base; `None` (drop it) otherwise.
    fn uri(&self, target: &str) -> Option<String> {
        let resolved = self.request_url.join(target.trim()).ok()?;
        if resolved.scheme() != self.base.scheme()
            || resolved.host_str() != self.base.host_str()
            || resolved.port_or_known_default() != self.base.port_or_known_default()
        {
            return None;
        }
        let rest = resolved.path().strip_prefix(self.base.path().trim_end_matches('/'))?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let prefix = self.strip_prefix.unwrap_or("").trim_end_matches('/');
        let mut out = format!("{prefix}{rest}");
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        if let Some(q) = resolved.query() {
            let kept: Vec<&str> = q
                .split('&')
                .filter(|pair| {
                    let key = pair.split('=').next().unwrap_or_default();
                    let key = crate::routes::percent_decode(&key.replace('+', " "));
                    self.injected_param.is_none_or(|p| key != p.as_bytes())
                })
                .collect();
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept.join("&"));
            }
        }
        if let Some(f) = resolved.fragment() {
            out.push('#');
            out.push_str(f);
        }
        Some(out)
    }

    /// `Link: <a>; rel=x, <b>; rel=y` with every target rewritten; `None` if any cannot be.
    fn link(&self, value: &str) -> Option<String> {
        let mut out = String::with_capacity(value.len());
        let mut rest = value;
        while let Some(open) = rest.find('<') {
            let (before, after) = rest.split_at(open);
            let after = after.get(1..)?;
            let close = after.find('>')?;
            let (target, tail) = after.split_at(close);
            out.push_str(before);
            out.push('<');
            out.push_str(&self.uri(target)?);
            rest = tail;
        }
        out.push_str(rest);
        Some(out)
    }

    /// `Refresh: 5; url=target` with the target rewritten; `None` if it cannot be.
    fn refresh(&self, value: &str) -> Option<String> {
        let Some((delay, rest)) = value.split_once(';') else { return Some(value.to_owned()) };
        let rest = rest.trim();
        let target = rest.get(..4).filter(|p| p.eq_ignore_ascii_case("url=")).and_then(|_| rest.get(4..))?;
        let target = target.trim().trim_matches(|c| c == '"' || c == '\'');
        Some(format!("{}; url={}", delay.trim(), self.uri(target)?))
    }
}

/// The upstream's headers as the agent may see them (and whether a secret was redacted):
/// hop-by-hop and receipt-like headers dropped, URL-bearing headers rewritten or dropped,
/// `Set-Cookie` dropped unless allowed, every value redacted.
fn relayable_response_headers(
    headers: &HeaderMap,
    rules: &Rewrite<'_>,
    redactor: &Redactor,
    allow_set_cookie: bool,
) -> (HeaderMap, bool) {
    let listed = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    let mut redacted = false;
    for (name, value) in headers {
        let n = name.as_str();
        if STRIPPED_RESPONSE.contains(&n) || listed.iter().any(|l| l == n) {
            continue;
        }
        if !allow_set_cookie && (name == header::SET_COOKIE || n == "set-cookie2") {
            continue;
        }
        let rewritten = match n {
            "location" | "content-location" => value.to_str().ok().and_then(|v| rules.uri(v)),
            "link" => value.to_str().ok().and_then(|v| rules.link(v)),
            "refresh" => value.to_str().ok().and_then(|v| rules.refresh(v)),
            _ => {
                let bytes = match redactor.redact(value.as_bytes()) {
                    Some(clean) => {
                        redacted = true;
                        clean
                    }
                    None => value.as_bytes().to_vec(),
                };
                if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                    out.append(name.clone(), v);
                }
                continue;
            }
        };
        // A URL-bearing header that cannot be rewritten is dropped: it pointed outside the
        // upstream base, or could not be read.
        let Some(rewritten) = rewritten else { continue };
        let bytes = match redactor.redact(rewritten.as_bytes()) {
            Some(clean) => {
                redacted = true;
                clean
            }
            None => rewritten.into_bytes(),
        };
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            out.append(name.clone(), v);
        }
    }
    (out, redacted)
}

/// A transport error without its URL (which may carry a query-injected credential). A refused
/// certificate names the upstream's host and the reason.
fn describe(e: &reqwest::Error) -> String {
    if let Some(tls) = tollgate_tls::tls_failure(e) {
        return tls.to_string();
    }
    let kind = if e.is_connect() {
        "connection failed"
    } else if e.is_body() {
        "body error"
    } else if e.is_request() {
        "request error"
    } else {
        "transport error"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: URLs inside the upstream base come back in the gateway's path space without the
    // injected parameter; anything else is dropped.
    #[test]
    fn urls_are_rewritten_or_dropped() {
        let base = reqwest::Url::parse("http://up.internal:9000/api/").unwrap();
        let request = reqwest::Url::parse("http://up.internal:9000/api/items?api_key=K&a=1").unwrap();
        let rules = Rewrite {
            request_url: &request,
            base: &base,
            strip_prefix: Some("/shop"),
            injected_param: Some("api_key"),
        };
        assert_eq!(rules.uri("http://up.internal:9000/api/items/?a=1&api_key=K").as_deref(), Some("/shop/items/?a=1"));
        assert_eq!(rules.uri("/api/x#f").as_deref(), Some("/shop/x#f"));
        assert_eq!(rules.uri("other?api%5Fkey=K").as_deref(), Some("/shop/other"));
        assert_eq!(rules.uri("http://up.internal:9000/admin"), None);
        assert_eq!(rules.uri("https://elsewhere.example/api/x"), None);
        assert_eq!(rules.uri("/apix"), None);
        assert_eq!(
            rules.link("<http://up.internal:9000/api/p2>; rel=\"next\", </api/p1>; rel=prev").as_deref(),
            Some("</shop/p2>; rel=\"next\", </shop/p1>; rel=prev")
        );
        assert_eq!(rules.link("<http://evil.example/>; rel=next"), None);
        assert_eq!(rules.refresh("0; URL='/api/z'").as_deref(), Some("0; url=/shop/z"));
        assert_eq!(rules.refresh("5").as_deref(), Some("5"));
        assert_eq!(rules.refresh("0; url=http://up.internal:9000/"), None);
    }
}
