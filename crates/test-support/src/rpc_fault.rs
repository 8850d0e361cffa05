//! [`RpcFaultProxy`]: a JSON-RPC proxy in front of a real node (anvil) that fails, stalls or
//! drops chosen methods on a test's command, and counts every call per method.
//!
//! Owns the fault rules and the counts. Knows nothing of the gateway: it sees JSON-RPC over
//! HTTP and nothing else, so whatever the gateway does with the answers is exercised for
//! real. Not a general proxy: bodies are read whole (16 MiB cap), HTTP/1.1 only.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{Value, json};

use crate::serve::{ConnCtl, FixtureBody, HttpServer, handler, never, response};

/// The largest request body the proxy reads.
const REQUEST_BYTES_MAX: usize = 16 << 20;

/// The rule key that applies to every method without a rule of its own.
pub const ANY_METHOD: &str = "*";

/// What the proxy does to a call of a method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcFault {
    /// Answer this HTTP status (429, 502, 503, ...) with a short text body; the node never
    /// sees the call.
    Status(u16),
    /// Answer HTTP 200 with this JSON-RPC error object; the node never sees the call.
    RpcError {
        /// JSON-RPC error code (`-32000` is what nodes use for "server error").
        code: i64,
        /// Its message.
        message: String,
    },
    /// Answer HTTP 200 with this JSON-RPC result; the node never sees the call (a node that
    /// does not know yet what another already serves: `null` for a receipt, `[]` for logs, as a
    /// replica behind a load balancer that has not indexed the latest block answers).
    Result(Value),
    /// Wait this long, then forward and answer normally (a slow node; a client with a
    /// shorter timeout gives up first, while the node still executes the call).
    Stall(Duration),
    /// Close the connection without answering; the node never sees the call.
    Drop,
    /// Keep the connection open and never answer; the node never sees the call (a node that
    /// took the request and went silent: the caller's own timeout decides).
    Hang,
    /// Close the connection with a TCP reset without answering; the node never sees the call.
    Reset,
    /// Forward to the node, then answer HTTP 502 instead of its answer: the node accepted the
    /// call (a transaction is in its pool) but the client never learns it.
    ForwardThenFail,
}

#[derive(Debug, Clone)]
struct Rule {
    fault: RpcFault,
    /// `None`: every call until cleared; `Some(k)`: the next `k` calls, then the rule is gone.
    remaining: Option<u32>,
}

#[derive(Debug, Default)]
struct State {
    rules: HashMap<String, Rule>,
    calls: BTreeMap<String, u64>,
}

impl State {
    /// Counts a call of `method` and takes the fault that applies to it (consuming one of a
    /// "next K" rule).
    fn take(&mut self, method: &str) -> Option<RpcFault> {
        *self.calls.entry(method.to_owned()).or_default() += 1;
        let key = if self.rules.contains_key(method) { method } else { ANY_METHOD };
        let rule = self.rules.get_mut(key)?;
        let fault = rule.fault.clone();
        if let Some(left) = &mut rule.remaining {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.rules.remove(key);
            }
        }
        Some(fault)
    }
}

/// A JSON-RPC proxy on `127.0.0.1:<free port>` in front of a node URL; dropped, it stops.
///
/// Rules apply per method name (or [`ANY_METHOD`]); calls without a rule pass through. In a
/// batch, `RpcError` and `Result` faults answer their own elements and the rest is forwarded; the first
/// element whose fault acts on the whole HTTP exchange (status, stall, drop, reset,
/// forward-then-fail) decides the fate of the whole batch.
#[derive(Debug)]
pub struct RpcFaultProxy {
    server: HttpServer,
    state: Arc<Mutex<State>>,
}

impl RpcFaultProxy {
    /// Starts the proxy in front of `node_url` (e.g. `Anvil::url`).
    pub async fn start(node_url: &str) -> anyhow::Result<RpcFaultProxy> {
        Self::start_with(node_url, None).await
    }

    /// Starts the proxy terminating TLS with `tls` in front of `node_url` (plain HTTP to the
    /// node, like a hosted provider's front door): the gateway's `rpc_url` becomes
    /// `https://localhost:<port>`.
    pub async fn start_tls(node_url: &str, tls: Arc<rustls::ServerConfig>) -> anyhow::Result<RpcFaultProxy> {
        Self::start_with(node_url, Some(tls)).await
    }

    async fn start_with(node_url: &str, tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<RpcFaultProxy> {
        let node: reqwest::Url = node_url.parse().context("node URL")?;
        let client = crate::http_builder().timeout(Duration::from_secs(60)).build()?;
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let server = HttpServer::start_with(
            handler(move |req, ctl| {
                let (st, client, node) = (st.clone(), client.clone(), node.clone());
                async move { handle(req, ctl, st, client, node).await }
            }),
            tls,
        )
        .await?;
        Ok(RpcFaultProxy { server, state })
    }

    /// The URL to give the gateway as its `rpc_url`.
    pub fn url(&self) -> String {
        self.server.base_url()
    }

    /// Applies `fault` to every call of `method` (or [`ANY_METHOD`]) until cleared.
    pub fn set(&self, method: &str, fault: RpcFault) {
        self.state().rules.insert(method.to_owned(), Rule { fault, remaining: None });
    }

    /// Applies `fault` to the next `k` calls of `method`, then lets it pass again.
    pub fn fail_next(&self, method: &str, k: u32, fault: RpcFault) {
        if k > 0 {
            self.state().rules.insert(method.to_owned(), Rule { fault, remaining: Some(k) });
        }
    }

    /// Lets `method` pass again.
    pub fn pass(&self, method: &str) {
        self.state().rules.remove(method);
    }

    /// Removes every rule: the proxy is transparent again (it stays up or down as it was).
    pub fn pass_all(&self) {
        self.state().rules.clear();
    }

    /// How many calls of `method` arrived (faulted or not) since the start or the last
    /// [`RpcFaultProxy::reset_counts`]; batch elements count one each.
    pub fn calls(&self, method: &str) -> u64 {
        self.state().calls.get(method).copied().unwrap_or(0)
    }

    /// Calls per method.
    pub fn call_counts(&self) -> BTreeMap<String, u64> {
        self.state().calls.clone()
    }

    /// All calls of all methods.
    pub fn total_calls(&self) -> u64 {
        self.state().calls.values().sum()
    }

    /// Sets every count back to zero.
    pub fn reset_counts(&self) {
        self.state().calls.clear();
    }

    /// Takes the proxy down: the port refuses connections and open connections are closed.
    pub fn down(&self) {
        self.server.down();
    }

    /// Brings the proxy back on the same port.
    pub async fn up(&self) -> anyhow::Result<()> {
        Ok(self.server.up().await?)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("proxy state")
    }
}

async fn handle(
    req: Request<Incoming>,
    ctl: Arc<ConnCtl>,
    state: Arc<Mutex<State>>,
    client: reqwest::Client,
    node: reqwest::Url,
) -> Response<FixtureBody> {
    let body = match Limited::new(req.into_body(), REQUEST_BYTES_MAX).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return response(413, &[], "request body too large or broken"),
    };
    let Ok(parsed) = serde_json::from_slice::<Value>(&body) else {
        // Not JSON: let the node say what it thinks of it.
        return forward(&client, &node, body).await;
    };
    let (calls, batch) = match parsed {
        Value::Array(items) => (items, true),
        single => (vec![single], false),
    };

    // Decide every element's fate under one lock, so concurrent batches count consistently.
    let faults: Vec<Option<RpcFault>> = {
        let mut st = state.lock().expect("proxy state");
        calls.iter().map(|c| st.take(c.get("method").and_then(Value::as_str).unwrap_or(""))).collect()
    };
    let whole =
        faults.iter().flatten().find(|f| !matches!(f, RpcFault::RpcError { .. } | RpcFault::Result(_))).cloned();
    let mut answered = Vec::new();
    let mut forwarded = Vec::new();
    for (call, fault) in calls.into_iter().zip(faults) {
        match fault {
            Some(RpcFault::RpcError { code, message }) => answered.push(json!({
                "jsonrpc": "2.0",
                "id": call.get("id").cloned().unwrap_or(Value::Null),
                "error": { "code": code, "message": message },
            })),
            Some(RpcFault::Result(result)) => answered.push(json!({
                "jsonrpc": "2.0",
                "id": call.get("id").cloned().unwrap_or(Value::Null),
                "result": result,
            })),
            _ => forwarded.push(call),
        }
    }

    match whole {
        Some(RpcFault::Status(code)) => return response(code, &[("content-type", "text/plain")], "injected fault"),
        Some(RpcFault::Drop) => {
            ctl.abort(false);
            return never().await;
        }
        Some(RpcFault::Reset) => {
            ctl.abort(true);
            return never().await;
        }
        Some(RpcFault::Hang) => return never().await,
        Some(RpcFault::Stall(d)) => tokio::time::sleep(d).await,
        _ => {}
    }

    let forward_then_fail = whole == Some(RpcFault::ForwardThenFail);
    if !batch {
        let answer = match (answered.pop(), forwarded.pop()) {
            (Some(error), _) => json_response(&error),
            (None, Some(call)) => forward(&client, &node, Bytes::from(call.to_string())).await,
            (None, None) => response(400, &[], "empty request"),
        };
        return if forward_then_fail {
            response(502, &[("content-type", "text/plain")], "injected fault")
        } else {
            answer
        };
    }

    if !forwarded.is_empty() {
        let reply = forward(&client, &node, Bytes::from(Value::Array(forwarded).to_string())).await;
        if forward_then_fail || reply.status() != 200 {
            return if forward_then_fail { response(502, &[], "injected fault") } else { reply };
        }
        let Ok(bytes) = reply.into_body().collect().await.map(|b| b.to_bytes());
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Array(items)) => answered.extend(items),
            Ok(other) => answered.push(other),
            Err(_) => return response(502, &[], "node answered a batch with something else"),
        }
    }
    json_response(&Value::Array(answered))
}

async fn forward(client: &reqwest::Client, node: &reqwest::Url, body: Bytes) -> Response<FixtureBody> {
    let sent = client.post(node.clone()).header("content-type", "application/json").body(body).send().await;
    let reply = match sent {
        Ok(r) => r,
        Err(_) => return response(502, &[], "node unreachable"),
    };
    let status = reply.status().as_u16();
    match reply.bytes().await {
        Ok(b) => response(status, &[("content-type", "application/json")], b),
        Err(_) => response(502, &[], "node answer broken"),
    }
}

fn json_response(v: &Value) -> Response<FixtureBody> {
    response(200, &[("content-type", "application/json")], v.to_string())
}
