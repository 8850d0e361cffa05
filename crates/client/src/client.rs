//! [`PayingClient`]: one logical request, paid at most once.
//!
//! Owns the request loop and the mapping from HTTP answers to record states (see the table
//! in the crate docs). The rule that keeps one logical request from paying twice: once a
//! payment header may have reached the server, only that same header is ever sent again
//! for this request; a new authorization is signed only after a definite 402 to the first
//! delivery of the previous one.
//!
//! Must not: know the gateway's internals (it reads only x402 headers, the stable error
//! codes in 402/409 bodies, and the `Tollgate-Settlement` receipt header), or read the
//! environment.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256};
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use tollgate_x402::facilitator::SettleResponse;
use tollgate_x402::v2;

use crate::challenge::{Challenge, error_body, fresh_authorization_may_help, is_in_flight, receipt, refusal_reason};
use crate::config::{AllowedAsset, ClientConfig, Clock, SpendLimits};
use crate::error::ClientError;
use crate::sign::{random_nonce, random_payment_id, sign_exact, valid_before};
use crate::store::{Outcome, PaymentRecord, RecordState, SpendStore, check_budgets, totals};

/// The answer to a request, after any payment handling.
#[derive(Debug, Clone)]
pub struct Paid {
    /// Final HTTP status (a non-2xx here is the upstream's or the server's answer after the
    /// payment was handled; the record says whether anything was charged).
    pub status: StatusCode,
    /// Final response headers.
    pub headers: HeaderMap,
    /// Final response body (at most `response_bytes_max`).
    pub body: Bytes,
    /// The decoded `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`, when present.
    pub receipt: Option<SettleResponse>,
    /// The payment made for this answer (`None` when the resource was free).
    pub payment: Option<PaymentRecord>,
}

/// What the store counts against budgets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Spent {
    /// Sum of counted records (`signed`, `sent`, `paid`, `paid_pending`), atomic units.
    pub total_atomic: U256,
    /// The same per `host:port`.
    pub per_host_atomic: BTreeMap<String, U256>,
    /// The same per UTC day (`YYYY-MM-DD`, by the day each authorization was signed).
    pub per_day_atomic: BTreeMap<String, U256>,
    /// Records whose outcome is unknown (`signed` or `sent`).
    pub unresolved: usize,
}

impl Spent {
    /// The budgets' view of `records` (as read from a [`SpendStore`]).
    pub fn of(records: &[PaymentRecord]) -> Spent {
        let t = totals(records);
        let unresolved = records.iter().filter(|r| r.state.unresolved()).count();
        Spent { total_atomic: t.total, per_host_atomic: t.per_host, per_day_atomic: t.per_day, unresolved }
    }
}

/// What paying a URL would take, found without signing anything ([`PayingClient::quote`]).
#[derive(Debug, Clone)]
pub struct Quote {
    /// The status of the unpaid request.
    pub status: StatusCode,
    /// The offer that would be paid, when the answer was a 402 (`None`: no payment asked).
    pub would_pay: Option<WouldPay>,
}

/// The offer [`PayingClient::send`] would pay, and for what; it fits every spend control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WouldPay {
    /// Amount, atomic units.
    pub amount_atomic: U256,
    /// The chain.
    pub network: tollgate_x402::Network,
    /// The token.
    pub asset: Address,
    /// The payee.
    pub pay_to: Address,
    /// The challenge's x402 version (1 or 2).
    pub x402_version: u8,
    /// `host:port`, the per-host budgets' key.
    pub host: String,
}

/// An x402-paying HTTP client with spend controls and a persisted spending record.
pub struct PayingClient {
    http: reqwest::Client,
    signer: PrivateKeySigner,
    allow: Vec<AllowedAsset>,
    limits: SpendLimits,
    store: Arc<SpendStore>,
    retries: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    payment_attempts_max: u32,
    response_bytes_max: usize,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PayingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayingClient")
            .field("address", &self.signer.address())
            .field("store", &self.store.path())
            .finish_non_exhaustive()
    }
}

/// One logical request, kept to be sent again unchanged.
struct Req {
    method: Method,
    url: Url,
    host: String,
    headers: HeaderMap,
    body: Bytes,
}

/// A response read in full (up to the cap).
struct Fetched {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    truncated: bool,
}

/// How one authorization's delivery ended, short of an error.
enum Delivery {
    /// An answer that is not a refusal (paid, pending, or the upstream's error).
    Answered(Box<Paid>),
    /// A definite 402 to the first delivery.
    Refused { reason: String, fetched: Fetched },
}

/// A transport error described without its URL (a query may carry an API key).
fn describe(e: reqwest::Error) -> String {
    // A refused certificate is said with the host and the reason.
    if let Some(tls) = tollgate_tls::tls_failure(&e) {
        return tls.to_string();
    }
    let e = e.without_url();
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The refusal as an error, with the server's message when its body carried one.
fn rejected(reason: String, fetched: &Fetched) -> ClientError {
    let message = error_body(&fetched.body).map(|(_, m)| m).filter(|m| !m.is_empty());
    ClientError::PaymentRejected { reason, message, status: Some(fetched.status.as_u16()) }
}

fn idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

impl PayingClient {
    /// Builds the client and opens (or creates) the spending record.
    pub fn new(config: ClientConfig) -> Result<PayingClient, ClientError> {
        let store = SpendStore::open(&config.store_path)?;
        // Redirects are returned to the caller, never followed: a payment header must not
        // travel to a host the agent did not choose.
        let tls = match config.tls {
            Some(t) => t,
            None => tollgate_tls::ClientTls::new(None)
                .map_err(|e| ClientError::InvalidRequest { reason: format!("TLS: {e}") })?,
        };
        let http = tls
            .reqwest_builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::InvalidRequest { reason: format!("HTTP client: {}", describe(e)) })?;
        Ok(PayingClient {
            http,
            signer: config.signer,
            allow: config.allow,
            limits: config.limits,
            store: Arc::new(store),
            retries: config.retries,
            backoff_initial: config.retry_backoff_initial,
            backoff_max: config.retry_backoff_max,
            payment_attempts_max: config.payment_attempts_max.max(1),
            response_bytes_max: config.response_bytes_max,
            clock: config.clock,
        })
    }

    /// The payer address.
    pub fn address(&self) -> Address {
        self.signer.address()
    }

    /// The spending record.
    pub fn store(&self) -> &SpendStore {
        &self.store
    }

    /// Every record, oldest first.
    pub async fn records(&self) -> Result<Vec<PaymentRecord>, ClientError> {
        self.blocking(|s| s.records()).await
    }

    /// What budgets count now.
    pub async fn spent(&self) -> Result<Spent, ClientError> {
        Ok(Spent::of(&self.records().await?))
    }

    /// A dry run of [`PayingClient::send`]: makes the request without payment and, when the
    /// answer is a 402, chooses the offer and checks the spend controls exactly as `send`
    /// would, but signs nothing, records nothing and sends no payment. Fails as `send` would
    /// before signing (`BudgetExceeded`, `NoAcceptableRequirement`, `Protocol`,
    /// `Transport`). The unpaid request does reach the server (a tollgate gateway answers it
    /// with the challenge, forwarding nothing).
    pub async fn quote(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: impl Into<Bytes>,
    ) -> Result<Quote, ClientError> {
        let req = self.request(method, url, headers, body.into())?;
        let first = self.unpaid(&req).await?;
        if first.status != StatusCode::PAYMENT_REQUIRED {
            return Ok(Quote { status: first.status, would_pay: None });
        }
        let challenge = Challenge::from_response(&first.headers, &first.body)?;
        let offer = challenge.choose(&self.allow)?.clone();
        let records = self.records().await?;
        check_budgets(&records, &self.limits, &req.host, offer.amount.0, self.clock.now_unix_s())?;
        let would_pay = WouldPay {
            amount_atomic: offer.amount.0,
            network: offer.network,
            asset: offer.asset,
            pay_to: offer.pay_to,
            x402_version: challenge.version,
            host: req.host,
        };
        Ok(Quote { status: first.status, would_pay: Some(would_pay) })
    }

    /// The startup step after a crash: the records a previous process left `signed` or
    /// `sent`. They stay counted against budgets; nothing is changed.
    ///
    /// What an agent should do with each:
    /// - `signed`: it was never sent (`sent` is written before the first send). It stays
    ///   counted until it expires at `valid_before_unix_s`; [`PayingClient::resend`]
    ///   delivers it if the call is still wanted.
    /// - `sent`: the server may have it, and may have charged it. Do **not** pay the same
    ///   request again with a fresh authorization before learning the outcome:
    ///   [`PayingClient::resend`] re-sends the same header to the same URL (a 200 with a
    ///   receipt answers the call; a 402 `invalid_exact_evm_nonce_already_used` means the
    ///   first delivery was processed and the record becomes `paid_pending`). The token
    ///   refuses the authorization after `valid_before_unix_s`, so its worst case is bounded
    ///   by then.
    pub async fn resume(&self) -> Result<Vec<PaymentRecord>, ClientError> {
        let open: Vec<PaymentRecord> = self.records().await?.into_iter().filter(|r| r.state.unresolved()).collect();
        for r in &open {
            tracing::warn!(nonce = %r.nonce, state = ?r.state, url = %r.url, amount = %r.amount,
                "payment left unresolved by an earlier process; counted against budgets");
        }
        Ok(open)
    }

    /// Re-sends the stored payment header of a `signed` or `sent` record to its URL with its
    /// method (the caller supplies headers and body again). Never signs anything new.
    pub async fn resend(&self, nonce: B256, headers: HeaderMap, body: impl Into<Bytes>) -> Result<Paid, ClientError> {
        let record = self
            .records()
            .await?
            .into_iter()
            .find(|r| r.nonce == nonce)
            .ok_or_else(|| ClientError::InvalidRequest { reason: format!("no record with nonce {nonce}") })?;
        if !record.state.unresolved() {
            return Err(ClientError::InvalidRequest {
                reason: format!("record {nonce} is {:?}: nothing to re-send", record.state),
            });
        }
        let method = Method::from_bytes(record.method.as_bytes())
            .map_err(|_| ClientError::InvalidRequest { reason: "stored method is invalid".to_owned() })?;
        let req = self.request(method, &record.url, headers, body.into())?;
        let was_sent = record.state == RecordState::Sent;
        match self.deliver(&req, record, was_sent).await? {
            Delivery::Answered(paid) => Ok(*paid),
            Delivery::Refused { reason, fetched } => Err(rejected(reason, &fetched)),
        }
    }

    /// Performs the request, paying a 402 challenge when an allowed offer fits the spend
    /// controls. See the crate docs for the flow and the record states.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: impl Into<Bytes>,
    ) -> Result<Paid, ClientError> {
        let req = self.request(method, url, headers, body.into())?;
        let first = self.unpaid(&req).await?;
        if first.status != StatusCode::PAYMENT_REQUIRED {
            if first.truncated {
                return Err(ClientError::ResponseTooLarge { limit_bytes: self.response_bytes_max });
            }
            return Ok(Paid {
                status: first.status,
                headers: first.headers,
                body: first.body,
                receipt: None,
                payment: None,
            });
        }
        let mut challenge_response = first;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let challenge = Challenge::from_response(&challenge_response.headers, &challenge_response.body)?;
            let offer = challenge.choose(&self.allow)?.clone();
            let record = self.sign_and_record(&req, challenge, offer).await?;
            match self.deliver(&req, record, false).await? {
                Delivery::Answered(paid) => return Ok(*paid),
                Delivery::Refused { reason, fetched } => {
                    if attempt < self.payment_attempts_max && fresh_authorization_may_help(&reason) {
                        tracing::info!(%reason, attempt, "payment refused; signing a fresh authorization");
                        challenge_response = fetched;
                        continue;
                    }
                    return Err(rejected(reason, &fetched));
                }
            }
        }
    }

    fn request(&self, method: Method, url: &str, headers: HeaderMap, body: Bytes) -> Result<Req, ClientError> {
        let url = Url::parse(url).map_err(|e| ClientError::InvalidRequest { reason: format!("URL: {e}") })?;
        match url.scheme() {
            "http" | "https" => {}
            other => return Err(ClientError::InvalidRequest { reason: format!("unsupported URL scheme {other}") }),
        }
        let host =
            url.host_str().ok_or_else(|| ClientError::InvalidRequest { reason: "URL has no host".to_owned() })?;
        let host = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
        Ok(Req { method, url, host, headers, body })
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
        self.backoff_initial.saturating_mul(factor).min(self.backoff_max)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SpendStore) -> Result<T, ClientError> + Send + 'static,
    ) -> Result<T, ClientError> {
        let store = self.store.clone();
        let path = store.path().to_owned();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ClientError::store(&path, format!("store task failed: {e}")))?
    }

    async fn set_state(&self, nonce: B256, state: RecordState, outcome: Outcome) -> Result<PaymentRecord, ClientError> {
        let now = self.clock.now_unix_s();
        self.blocking(move |s| s.set_state(nonce, state, outcome, now)).await
    }

    /// One HTTP exchange, reading the body up to the cap.
    async fn exchange(&self, req: &Req, payment: Option<(&str, &str)>) -> Result<Fetched, reqwest::Error> {
        let mut headers = req.headers.clone();
        headers.remove("payment-signature");
        headers.remove("x-payment");
        let mut rb = self.http.request(req.method.clone(), req.url.clone()).headers(headers);
        if !req.body.is_empty() {
            rb = rb.body(req.body.clone());
        }
        if let Some((name, value)) = payment {
            rb = rb.header(name, value);
        }
        let mut resp = rb.send().await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = resp.chunk().await? {
            if body.len().saturating_add(chunk.len()) > self.response_bytes_max {
                truncated = true;
                break;
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { status, headers, body: body.into(), truncated })
    }

    /// The request without payment, retried on transport errors (any error for idempotent
    /// methods; only connect failures otherwise, which never reached the server).
    async fn unpaid(&self, req: &Req) -> Result<Fetched, ClientError> {
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match self.exchange(req, None).await {
                Ok(f) => return Ok(f),
                Err(e) => {
                    let retry = e.is_connect() || idempotent(&req.method);
                    if !retry || attempts > self.retries {
                        return Err(ClientError::Transport {
                            host: req.host.clone(),
                            reason: describe(e),
                            attempts,
                            payment_in_doubt: false,
                        });
                    }
                    tokio::time::sleep(self.backoff(attempts)).await;
                }
            }
        }
    }

    /// Checks the budgets, signs, and durably records the authorization as `signed`, all
    /// under the store's exclusive lock (so concurrent payments cannot both squeeze under a
    /// budget). Nothing is signed when a budget refuses.
    async fn sign_and_record(
        &self,
        req: &Req,
        challenge: Challenge,
        offer: v2::PaymentRequirements,
    ) -> Result<PaymentRecord, ClientError> {
        let now = self.clock.now_unix_s();
        let valid_before_unix_s = valid_before(&offer, now);
        let nonce = random_nonce()?;
        // One id per authorization: every delivery of this header is the same payment.
        let payment_id = random_payment_id()?;
        let signer = self.signer.clone();
        let limits = self.limits.clone();
        let (method, url, host) = (req.method.to_string(), req.url.to_string(), req.host.clone());
        self.blocking(move |store| {
            store.update(|records| {
                check_budgets(records, &limits, &host, offer.amount.0, now)?;
                let exact = sign_exact(&signer, &offer, valid_before_unix_s, nonce)?;
                let (header_name, header) = challenge.payment_header(&offer, exact, &payment_id)?;
                let record = PaymentRecord {
                    nonce,
                    state: RecordState::Signed,
                    created_unix_s: now,
                    updated_unix_s: now,
                    method,
                    url,
                    host,
                    amount: offer.amount,
                    network: offer.network,
                    asset: offer.asset,
                    pay_to: offer.pay_to,
                    payer: signer.address(),
                    valid_before_unix_s,
                    x402_version: challenge.version,
                    header_name: header_name.to_owned(),
                    header,
                    transaction: None,
                    reason: None,
                    http_status: None,
                };
                records.push(record.clone());
                Ok(record)
            })
        })
        .await
    }

    /// Sends the record's header until a final answer. `maybe_delivered` says whether an
    /// earlier process or attempt may already have delivered it.
    async fn deliver(
        &self,
        req: &Req,
        record: PaymentRecord,
        mut maybe_delivered: bool,
    ) -> Result<Delivery, ClientError> {
        let nonce = record.nonce;
        // Durable before the header first leaves the process.
        let record = self.set_state(nonce, RecordState::Sent, Outcome::default()).await?;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let answer = self.exchange(req, Some((&record.header_name, &record.header))).await;
            let fetched = match answer {
                Err(e) => {
                    // A connect failure never reached the server; anything later may have.
                    maybe_delivered |= !e.is_connect();
                    let reason = describe(e);
                    if attempts > self.retries {
                        return Err(self.gave_up(req, nonce, reason, attempts, maybe_delivered).await);
                    }
                    tracing::warn!(%nonce, attempt = attempts, %reason, "transport error; re-sending the same payment");
                    tokio::time::sleep(self.backoff(attempts)).await;
                    continue;
                }
                Ok(f) => f,
            };
            if fetched.status == StatusCode::CONFLICT && is_in_flight(&fetched.body) {
                // An earlier delivery of this very header is being processed right now.
                maybe_delivered = true;
                if attempts > self.retries {
                    return Err(self.in_doubt(nonce, "payment_in_flight".to_owned(), fetched.status).await);
                }
                tokio::time::sleep(self.backoff(attempts)).await;
                continue;
            }
            if fetched.status == StatusCode::PAYMENT_REQUIRED {
                let reason = refusal_reason(&fetched.headers, &fetched.body);
                // A refusal whose receipt names a transaction is no refusal: that payment may
                // still settle, and a fresh authorization could pay the call twice.
                let names_tx = receipt(&fetched.headers).is_some_and(|r| !r.transaction.is_empty());
                if maybe_delivered || names_tx || !self.entry_ended_uncharged(req, &fetched.headers).await {
                    return Err(self.in_doubt(nonce, reason, fetched.status).await);
                }
                let outcome = Outcome { reason: Some(reason.clone()), http_status: Some(402), ..Outcome::default() };
                self.set_state(nonce, RecordState::Refused, outcome).await?;
                return Ok(Delivery::Refused { reason, fetched });
            }
            if fetched.status == StatusCode::FORBIDDEN
                && !maybe_delivered
                && receipt(&fetched.headers).is_none()
                && !fetched.headers.contains_key("tollgate-receipt")
                && let Some((code, _)) = error_body(&fetched.body)
            {
                // The server's own refusal (a tollgate wallet policy), made before any
                // reservation: no receipt, no ledger entry, so nothing was charged. An
                // upstream's 403 comes with the gateway's receipt header instead.
                let outcome = Outcome { reason: Some(code.clone()), http_status: Some(403), ..Outcome::default() };
                self.set_state(nonce, RecordState::Refused, outcome).await?;
                return Ok(Delivery::Refused { reason: code, fetched });
            }
            return self.answered(nonce, fetched, maybe_delivered).await.map(|p| Delivery::Answered(Box::new(p)));
        }
    }

    /// When a refusal names the gateway's ledger entry (`Tollgate-Receipt`), whether
    /// `GET /receipts/{id}` says it ended without moving money (`voided`, `settle_failed`).
    /// Anything else — another state, no answer — means this authorization may still settle,
    /// and nothing new is signed. A refusal that names no entry was refused before any
    /// reservation: true.
    async fn entry_ended_uncharged(&self, req: &Req, headers: &HeaderMap) -> bool {
        let Some(id) = headers.get("tollgate-receipt").and_then(|v| v.to_str().ok()) else { return true };
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return false;
        }
        let Ok(url) = req.url.join(&format!("/receipts/{id}")) else { return false };
        let Ok(resp) = self.http.get(url).send().await else { return false };
        let Ok(body) = resp.json::<serde_json::Value>().await else { return false };
        matches!(body.get("state").and_then(serde_json::Value::as_str), Some("voided" | "settle_failed"))
    }

    /// Retries ran out on transport errors.
    async fn gave_up(&self, req: &Req, nonce: B256, reason: String, attempts: u32, in_doubt: bool) -> ClientError {
        let (state, note) = if in_doubt {
            (RecordState::Sent, format!("transport error after sending: {reason}"))
        } else {
            (RecordState::Failed, format!("never delivered: {reason}"))
        };
        if let Err(e) = self.set_state(nonce, state, Outcome { reason: Some(note), ..Outcome::default() }).await {
            return e;
        }
        ClientError::Transport { host: req.host.clone(), reason, attempts, payment_in_doubt: in_doubt }
    }

    /// An answer to a re-send that does not tell whether the first delivery was charged.
    async fn in_doubt(&self, nonce: B256, reason: String, status: StatusCode) -> ClientError {
        tracing::warn!(%nonce, %reason, "payment outcome unknown after a lost response; counted as spent");
        let outcome =
            Outcome { reason: Some(reason.clone()), http_status: Some(status.as_u16()), ..Outcome::default() };
        match self.set_state(nonce, RecordState::PaidPending, outcome).await {
            Ok(_) => ClientError::PaymentOutcomeUnknown { reason, nonce },
            Err(e) => e,
        }
    }

    /// Records a final non-402 answer by its receipt.
    async fn answered(&self, nonce: B256, f: Fetched, maybe_delivered: bool) -> Result<Paid, ClientError> {
        let receipt = receipt(&f.headers);
        let settlement = f.headers.get("tollgate-settlement").and_then(|v| v.to_str().ok()).map(str::to_owned);
        // A tollgate gateway names its pending settlement and its own receipt id (looked up
        // at `GET /receipts/{id}`); other servers may say nothing.
        let receipt_id = f.headers.get("tollgate-receipt").and_then(|v| v.to_str().ok());
        let note = |otherwise: &str| match (settlement.as_deref(), receipt_id) {
            (Some(s), Some(id)) => format!("settlement {s}, receipt {id}"),
            (Some(s), None) => format!("settlement {s}"),
            (None, _) => otherwise.to_owned(),
        };
        let status = Some(f.status.as_u16());
        let (state, outcome) = match &receipt {
            // x402 `settlement_pending`: a transaction exists or may exist; the payment is
            // made unless the chain says otherwise later. Counted as spent, never re-paid.
            Some(r) if !r.success && r.error_reason.as_deref() == Some("settlement_pending") => {
                let tx = Some(r.transaction.clone()).filter(|t| !t.is_empty());
                let reason = Some(note("settlement pending"));
                (RecordState::PaidPending, Outcome { transaction: tx, reason, http_status: status })
            }
            Some(r) if r.success => {
                let tx = Some(r.transaction.clone()).filter(|t| !t.is_empty());
                let pending = tx.is_none() || matches!(settlement.as_deref(), Some("pending" | "deferred"));
                let reason = pending.then(|| note("settlement pending"));
                let state = if pending { RecordState::PaidPending } else { RecordState::Paid };
                (state, Outcome { transaction: tx, reason, http_status: status })
            }
            None if f.status.is_success() => {
                // Served, and possibly settled later (a deferred gateway answers before it
                // settles): counted as spent until known otherwise.
                let reason = Some(note("2xx without a receipt"));
                (RecordState::PaidPending, Outcome { reason, http_status: status, ..Outcome::default() })
            }
            _ if maybe_delivered => {
                return Err(self
                    .in_doubt(nonce, format!("HTTP {} to a re-sent payment", f.status.as_u16()), f.status)
                    .await);
            }
            other => {
                // The first delivery was answered with an error and no success receipt: the
                // server did not charge (x402 settles only successful calls).
                let why = other.as_ref().and_then(|r| r.error_reason.clone());
                let reason = Some(why.unwrap_or_else(|| format!("HTTP {} without a receipt", f.status.as_u16())));
                (RecordState::Failed, Outcome { reason, http_status: status, ..Outcome::default() })
            }
        };
        let record = self.set_state(nonce, state, outcome).await?;
        if f.truncated {
            return Err(ClientError::ResponseTooLarge { limit_bytes: self.response_bytes_max });
        }
        Ok(Paid { status: f.status, headers: f.headers, body: f.body, receipt, payment: Some(record) })
    }
}
