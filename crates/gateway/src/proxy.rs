//! Forwarding a paid request upstream: strip what the agent must not pass on, inject the
//! provider's credential, stream the request body within its cap, never follow redirects.
//!
//! The upstream URL comes only from configuration plus the already-checked request path:
//! an agent cannot choose the host. The credential is inserted *replacing* any value the
//! agent sent under the same name, and marked sensitive so it is never logged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use base64_engine::encode_basic;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use secrecy::ExposeSecret;

use crate::config::Injection;
use crate::error::GatewayError;

/// Request headers never forwarded: hop-by-hop headers (RFC 9110 §7.6.1), the agent's own
/// credentials, and the payment itself.
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

/// Where and how to forward one request.
pub struct Target<'a> {
    /// Full upstream URL (base from config, path checked, agent query).
    pub url: String,
    /// The credential to inject: where, and the secret (resolved for this call).
    pub credential: Option<(&'a Injection, &'a secrecy::SecretString)>,
    /// Whole-exchange timeout.
    pub timeout: Duration,
    /// Request body cap.
    pub body_bytes_max: u64,
    /// Response body cap.
    pub response_bytes_max: u64,
}

/// What came back.
pub struct Upstream {
    /// Status.
    pub status: StatusCode,
    /// Filtered headers.
    pub headers: HeaderMap,
    /// The body, read in full (within the cap) or still streaming.
    pub body: UpstreamBody,
}

/// An upstream body.
pub enum UpstreamBody {
    /// Read completely: charging depends on complete delivery.
    Buffered(Bytes),
    /// Relayed as it arrives (the call is already paid for).
    Streaming(reqwest::Response),
}

impl Upstream {
    /// Whether this status earns payment (2xx and 3xx).
    pub fn succeeded(&self) -> bool {
        self.status.is_success() || self.status.is_redirection()
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

fn relayable_response_headers(headers: &HeaderMap) -> HeaderMap {
    let listed = connection_listed(headers);
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let n = name.as_str();
        if STRIPPED_RESPONSE.contains(&n) || listed.iter().any(|l| l == n) {
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

/// Forwards the request and returns the upstream's answer. With `buffer` the response body
/// is read completely (and capped) before returning.
pub async fn forward(
    http: &reqwest::Client,
    target: Target<'_>,
    method: Method,
    agent_headers: &HeaderMap,
    body: Body,
    buffer: bool,
) -> Result<Upstream, GatewayError> {
    let mut url = reqwest::Url::parse(&target.url)
        .map_err(|_| GatewayError::Internal("upstream URL does not parse".to_owned()))?;
    let mut headers = forwardable_request_headers(agent_headers);
    if let Some((injection, secret)) = target.credential {
        inject(&mut url, &mut headers, injection, secret)?;
    }
    if let Some(len) = agent_headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > target.body_bytes_max
    {
        return Err(GatewayError::BodyTooLarge { limit_bytes: target.body_bytes_max });
    }
    let over_limit = Arc::new(AtomicBool::new(false));
    let flag = over_limit.clone();
    let cap = target.body_bytes_max;
    let mut seen: u64 = 0;
    let stream = body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        seen = seen.saturating_add(chunk.len() as u64);
        if seen > cap {
            flag.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other("request body over the cap"));
        }
        Ok::<Bytes, std::io::Error>(chunk)
    });
    let result = http
        .request(method, url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(stream))
        .timeout(target.timeout)
        .send()
        .await;
    let response = match result {
        Ok(r) => r,
        Err(_) if over_limit.load(Ordering::SeqCst) => {
            return Err(GatewayError::BodyTooLarge { limit_bytes: target.body_bytes_max });
        }
        Err(e) if e.is_timeout() => return Err(GatewayError::UpstreamTimeout),
        Err(e) => return Err(GatewayError::UpstreamUnavailable { reason: describe(&e) }),
    };
    let status = response.status();
    let headers = relayable_response_headers(response.headers());
    if !buffer {
        return Ok(Upstream { status, headers, body: UpstreamBody::Streaming(response) });
    }
    let body = read_capped(response, target.response_bytes_max).await?;
    Ok(Upstream { status, headers, body: UpstreamBody::Buffered(body) })
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

/// The body for the agent: buffered bytes, or the upstream stream capped at `cap` (the
/// connection is cut if the upstream sends more).
pub fn into_body(body: UpstreamBody, cap: u64) -> Body {
    match body {
        UpstreamBody::Buffered(b) => Body::from(b),
        UpstreamBody::Streaming(r) => {
            let mut seen: u64 = 0;
            Body::from_stream(r.bytes_stream().map(move |chunk| {
                let chunk = chunk.map_err(std::io::Error::other)?;
                seen = seen.saturating_add(chunk.len() as u64);
                if seen > cap {
                    return Err(std::io::Error::other("upstream response over the cap"));
                }
                Ok::<Bytes, std::io::Error>(chunk)
            }))
        }
    }
}

/// A transport error without its URL (which may carry a query-injected credential).
fn describe(e: &reqwest::Error) -> String {
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

/// Basic-auth encoding.
mod base64_engine {
    use base64::Engine as _;
    pub fn encode_basic(user: &str, password: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    }
}
