//! The HTTP client of the admin API: the base URL and token, URLs with percent-encoded
//! segments and values under `/admin`, a timeout on every request, no redirects, answers read
//! within a cap, and refusals as one line with the server's code (4xx → exit 3).
//!
//! Must not: follow redirects (the token would go with them), or print the token.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use super::args::Connection;
use super::output::print_json;
use super::{ANSWER_BYTES_MAX, DEFAULT_URL, TOKEN_ENV, TOKEN_FILE_BYTES_MAX, URL_ENV};
use crate::{EXIT_FAILURE, EXIT_OK, EXIT_REFUSED, EXIT_TRANSPORT, Failure};

/// The admin API at one base URL, with the caller's token.
pub(super) struct Api {
    http: reqwest::Client,
    base: Url,
    /// Where the base URL came from, for the error when it cannot be reached.
    from: String,
    token: SecretString,
}

/// The admin API's URL and where it came from: --url, else TOLLGATE_ADMIN_URL, else the
/// configuration file's `[admin] listen` (--config or TOLLGATE_CONFIG), else the default.
fn base_url(conn: &Connection) -> Result<(String, String), Failure> {
    if let Some(u) = &conn.url {
        return Ok((u.clone(), "--url".to_owned()));
    }
    if let Some(u) = std::env::var(URL_ENV).ok().filter(|u| !u.is_empty()) {
        return Ok((u, URL_ENV.to_owned()));
    }
    if let Some(path) = conn.config_file() {
        return match tollgate_gateway::Config::admin_url(&path) {
            Ok(Some(u)) => Ok((u, format!("[admin] listen in {}", path.display()))),
            Ok(None) => Err(Failure::usage(format!(
                "the admin API is disabled in {} ([admin] enabled = false); pass --url",
                path.display()
            ))),
            Err(e) => Err(Failure::usage(e.to_string())),
        };
    }
    Ok((DEFAULT_URL.to_owned(), "the default".to_owned()))
}

impl Api {
    pub(super) fn new(conn: &Connection) -> Result<Api, Failure> {
        let (url, from) = base_url(conn)?;
        let base = Url::parse(&url).map_err(|e| Failure::usage(format!("--url `{url}`: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Failure::usage(format!("--url `{url}`: expected an http:// or https:// URL")));
        }
        let token = load_token(conn.token_file.as_deref())?;
        let timeout = Duration::from_millis(conn.timeout_ms.max(1));
        let http = crate::args::client_tls(conn.ca_file.as_deref())?
            .reqwest_builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot build the HTTP client: {e}")))?;
        Ok(Api { http, base, from, token })
    }

    /// `/admin/<segments...>?<query>`, each segment and value percent-encoded.
    pub(super) fn url(&self, segments: &[&str], query: &[(&str, Option<String>)]) -> Result<Url, Failure> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.path_segments_mut()
            .map_err(|()| Failure::usage(format!("--url `{}` cannot be a base URL", self.base)))?
            .pop_if_empty()
            .push("admin")
            .extend(segments);
        let present: Vec<(&str, &String)> = query.iter().filter_map(|(k, v)| v.as_ref().map(|v| (*k, v))).collect();
        if !present.is_empty() {
            url.query_pairs_mut().extend_pairs(present);
        }
        Ok(url)
    }

    pub(super) async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, Option<String>)],
        body: Option<Value>,
    ) -> Result<reqwest::Response, Failure> {
        let url = self.url(segments, query)?;
        let mut bearer = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", self.token.expose_secret()))
            .map_err(|_| Failure::usage("the admin token contains characters a header cannot carry"))?;
        bearer.set_sensitive(true);
        let mut request = self.http.request(method, url).header(reqwest::header::AUTHORIZATION, bearer);
        if let Some(body) = body {
            request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let bytes = read_capped(response, ANSWER_BYTES_MAX).await.map_err(|e| self.transport(e))?;
        Err(refusal(status, &bytes))
    }

    pub(super) fn transport(&self, e: reqwest::Error) -> Failure {
        if let Some(tls) = tollgate_tls::tls_failure(&e) {
            return Failure::new(EXIT_TRANSPORT, format!("request to the admin API failed: {tls}"));
        }
        let what = if e.is_timeout() { "timed out" } else { "failed" };
        Failure::new(
            EXIT_TRANSPORT,
            format!(
                "request to the admin API at {} ({}) {what}: {}; to use another address pass --url URL, set {URL_ENV}, \
                 or pass --config FILE (or set TOLLGATE_CONFIG) to use its [admin] listen",
                self.base,
                self.from,
                e.without_url()
            ),
        )
    }

    /// The answer as JSON.
    pub(super) async fn json(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, Option<String>)],
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        let response = self.send(method, segments, query, body).await?;
        let bytes = read_capped(response, ANSWER_BYTES_MAX).await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Failure::new(EXIT_FAILURE, format!("the admin API answered with invalid JSON: {e}")))
    }

    /// Sends and prints the JSON answer.
    pub(super) async fn show(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, Option<String>)],
        body: Option<Value>,
    ) -> Result<u8, Failure> {
        print_json(&self.json(method, segments, query, body).await?);
        Ok(EXIT_OK)
    }

    /// Streams the audit export (JSON lines) to stdout or a new file.
    pub(super) async fn export(&self, query: &[(&str, Option<String>)], out: Option<&Path>) -> Result<u8, Failure> {
        let mut response = self.send(Method::GET, &["audit", "export"], query, None).await?;
        let mut sink: Box<dyn Write> = match out {
            Some(path) => Box::new(
                std::fs::File::create_new(path)
                    .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot create {}: {e}", path.display())))?,
            ),
            None => Box::new(crate::out::stdout()),
        };
        let fail = |e: std::io::Error| Failure::new(EXIT_FAILURE, format!("cannot write the export: {e}"));
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            sink.write_all(&chunk).map_err(fail)?;
        }
        sink.flush().map_err(fail)?;
        Ok(EXIT_OK)
    }
}

/// Reads a body of at most `cap` bytes; a larger one is cut at the cap (then fails to parse as
/// JSON, or is an error message shown cut). Large answers (CSV, JSON lines) are streamed instead.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > cap {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A non-2xx answer: one line with the server's code (4xx → exit 3, else 1).
pub(super) fn refusal(status: StatusCode, body: &[u8]) -> Failure {
    let exit = if status.is_client_error() { EXIT_REFUSED } else { EXIT_FAILURE };
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().and_then(|v| v.get("error"));
    let code = error.and_then(|e| e.get("code")).and_then(Value::as_str);
    let message = error.and_then(|e| e.get("message")).and_then(Value::as_str).unwrap_or("");
    match code {
        Some(code) => Failure::new(exit, format!("{code}: {message} (HTTP {})", status.as_u16())),
        None => Failure::new(exit, format!("the admin API answered HTTP {status}")),
    }
}

/// The token from `--token-file` or TOLLGATE_ADMIN_TOKEN (trimmed, non-empty).
pub(super) fn load_token(file: Option<&Path>) -> Result<SecretString, Failure> {
    let raw = match file {
        Some(path) => {
            let mut s = String::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(TOKEN_FILE_BYTES_MAX).read_to_string(&mut s))
                .map_err(|e| Failure::usage(format!("cannot read the token file {}: {e}", path.display())))?;
            s
        }
        None => std::env::var(TOKEN_ENV).map_err(|_| {
            Failure::usage(format!(
                "set {TOKEN_ENV} or pass --token-file PATH (create the first token with \
                 `tollgate admin bootstrap --config FILE`)"
            ))
        })?,
    };
    let token = raw.trim();
    if token.is_empty() {
        return Err(Failure::usage("the admin token is empty"));
    }
    Ok(SecretString::from(token.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(base: &str) -> Api {
        let http = tollgate_tls::ClientTls::new(None).unwrap().reqwest_builder().build().unwrap();
        Api { http, base: Url::parse(base).unwrap(), from: "--url".to_owned(), token: SecretString::from("t") }
    }

    // Goal: path segments and query values are percent-encoded under /admin, absent query
    // values are left out, and a base URL with a path prefix keeps it.
    #[test]
    fn urls_encode_segments_and_values() {
        let a = api("http://127.0.0.1:8403");
        let u = a.url(&["providers", "we/ird id", "endpoints", "prices"], &[("path", Some("/w/{city}".into()))]);
        assert_eq!(
            u.unwrap().as_str(),
            "http://127.0.0.1:8403/admin/providers/we%2Fird%20id/endpoints/prices?path=%2Fw%2F%7Bcity%7D"
        );
        let u = a.url(&["wallets"], &[("scope", None), ("wallet", None)]).unwrap();
        assert_eq!(u.as_str(), "http://127.0.0.1:8403/admin/wallets");
        let u = api("http://gw.internal/tollgate/").url(&["whoami"], &[]).unwrap();
        assert_eq!(u.as_str(), "http://gw.internal/tollgate/admin/whoami");
    }

    // Goal: a server error becomes one line with its code; 4xx exits 3, 5xx exits 1.
    #[test]
    fn refusals_carry_the_code() {
        let body = br#"{"error":{"code":"admin_forbidden","message":"this token may not x","retrySafe":false}}"#;
        let f = refusal(StatusCode::FORBIDDEN, body);
        assert_eq!((f.code, f.message.as_str()), (EXIT_REFUSED, "admin_forbidden: this token may not x (HTTP 403)"));
        assert_eq!(refusal(StatusCode::INTERNAL_SERVER_ERROR, b"oops").code, EXIT_FAILURE);
    }
}
