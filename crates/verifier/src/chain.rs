//! The narrow view of a chain that verification and settlement need, and its alloy
//! implementation.
//!
//! Everything else in this crate talks to [`Chain`], never to an alloy provider, so the
//! RPC surface stays small, every call has a timeout, and transport errors become
//! [`VerifyError::Rpc`]/[`VerifyError::RpcTimeout`] in one place. RPC URLs may embed API
//! keys, so they never appear in errors or `Debug` output.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy::network::{Ethereum, ReceiptResponse as _};
use alloy::providers::{Provider, ProviderBuilder, RootProvider};
use alloy::rpc::types::{Filter, TransactionRequest};
use alloy::transports::{RpcError, TransportErrorKind};
use alloy_primitives::{Address, B256, Bytes, U256};
use async_trait::async_trait;

use crate::VerifyError;

/// Outcome of an `eth_call` or gas estimate that reached the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome<T> {
    /// The call succeeded.
    Success(T),
    /// The EVM reverted with this data (possibly empty).
    Reverted(Bytes),
}

/// Why `eth_sendRawTransaction` did not return a hash, as far as nonce management and the
/// truth told to the payer care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The nonce was already used (e.g. by a transaction sent outside this process).
    NonceTooLow,
    /// Another transaction with this nonce is pending ("replacement transaction underpriced").
    NonceInUse,
    /// This very transaction is already in the node's pool ("already known"): it was
    /// broadcast before (an earlier send whose answer was lost, or a re-broadcast).
    AlreadyKnown,
    /// The node answered with a refusal it is known to mean (insufficient funds for gas,
    /// underpriced, intrinsic gas too low, over the block gas limit, invalid sender, a rate
    /// limit, HTTP 429), or the connection was refused before a byte was sent. The
    /// transaction is not in any mempool through us. Any other error is [`SendError::InDoubt`]:
    /// hosted providers answer generic errors after forwarding to a backend.
    Refused(VerifyError),
    /// The request may have reached a node that took the transaction, and the answer was
    /// lost: a timeout, a reset after sending, an HTTP 5xx from a proxy, an unreadable
    /// answer. The hash must be kept and checked; the payment may still be made.
    InDoubt(VerifyError),
}

/// One log of a mined transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptLog {
    /// Emitting contract.
    pub address: Address,
    /// Topics, the event signature first.
    pub topics: Vec<B256>,
    /// Non-indexed data.
    pub data: Bytes,
    /// Position of the log in its block.
    pub log_index: u64,
    /// The transaction that emitted it.
    pub tx_hash: B256,
    /// Block number.
    pub block_number: u64,
    /// Block hash.
    pub block_hash: B256,
}

/// A mined transaction's receipt, reduced to what settlement checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The transaction.
    pub tx_hash: B256,
    /// Whether it succeeded.
    pub success: bool,
    /// Block number.
    pub block_number: u64,
    /// Block hash (recorded so that reconciliation can detect reorgs).
    pub block_hash: B256,
    /// Its logs.
    pub logs: Vec<ReceiptLog>,
}

/// EIP-1559 fee caps for a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    /// `maxFeePerGas`.
    pub max_fee_per_gas: u128,
    /// `maxPriorityFeePerGas`.
    pub max_priority_fee_per_gas: u128,
}

/// A filter for `eth_getLogs` over a bounded block range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Emitting contracts.
    pub addresses: Vec<Address>,
    /// Event signature (topic 0).
    pub topic0: B256,
    /// Accepted values of topic 1 (e.g. `Transfer.from`); empty means any.
    pub topic1: Vec<B256>,
    /// Accepted values of topic 2 (e.g. `Transfer.to`); empty means any.
    pub topic2: Vec<B256>,
    /// First block, inclusive.
    pub from_block: u64,
    /// Last block, inclusive.
    pub to_block: u64,
}

/// The chain operations tollgate uses. One value serves one chain id.
#[async_trait]
pub trait Chain: Send + Sync + 'static {
    /// The chain id this handle was connected to (checked against the node at connect).
    fn chain_id(&self) -> u64;
    /// Length of the contract code at `address` (0 for a plain account).
    async fn code_len(&self, address: Address) -> Result<usize, VerifyError>;
    /// `eth_call` against the latest block.
    async fn call(&self, from: Option<Address>, to: Address, data: Bytes) -> Result<CallOutcome<Bytes>, VerifyError>;
    /// `eth_estimateGas`; a revert is an outcome, not an error.
    async fn estimate_gas(&self, from: Address, to: Address, data: Bytes) -> Result<CallOutcome<u64>, VerifyError>;
    /// Native balance (the relayer's gas money).
    async fn native_balance(&self, address: Address) -> Result<U256, VerifyError>;
    /// The next nonce of `address`, counting pending transactions.
    async fn pending_nonce(&self, address: Address) -> Result<u64, VerifyError>;
    /// The number of transactions of `address` in the latest block (its next nonce, not
    /// counting pending transactions).
    async fn mined_nonce(&self, address: Address) -> Result<u64, VerifyError>;
    /// The number of transactions of `address` as of block `number` (its mined nonce then). A
    /// node that does not have that block yet answers an error, never an older count.
    async fn mined_nonce_at(&self, address: Address, number: u64) -> Result<u64, VerifyError>;
    /// `eth_call` against the state as of block `number` (the same guarantee).
    async fn call_at(&self, to: Address, data: Bytes, number: u64) -> Result<CallOutcome<Bytes>, VerifyError>;
    /// Current fee caps.
    async fn fees(&self) -> Result<Fees, VerifyError>;
    /// `eth_sendRawTransaction`; returns the transaction hash.
    async fn send_raw(&self, raw: Bytes) -> Result<B256, SendError>;
    /// The receipt, once mined.
    async fn receipt(&self, tx_hash: B256) -> Result<Option<Receipt>, VerifyError>;
    /// Latest block number.
    async fn block_number(&self) -> Result<u64, VerifyError>;
    /// Hash of the block at `number`, if it exists.
    async fn block_hash(&self, number: u64) -> Result<Option<B256>, VerifyError>;
    /// Timestamp (unix seconds) of the block at `number`, if it exists (reconciliation by time
    /// and per-period totals).
    async fn block_timestamp(&self, number: u64) -> Result<Option<u64>, VerifyError>;
    /// `eth_getLogs` over a bounded range.
    async fn logs(&self, query: &LogQuery) -> Result<Vec<ReceiptLog>, VerifyError>;
    /// The chain id the node reports now (readiness: a node swapped behind the URL is
    /// noticed). Implementations without a node answer [`Chain::chain_id`].
    async fn node_chain_id(&self) -> Result<u64, VerifyError> {
        Ok(self.chain_id())
    }
}

/// Calls and failures of one JSON-RPC method.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RpcCount {
    /// Requests sent (or attempted).
    pub calls: u64,
    /// Of those, the ones that failed: a transport error, a timeout or a JSON-RPC error
    /// object. A revert is an answer, not a failure.
    pub errors: u64,
}

/// Calls and failures per JSON-RPC method of one [`AlloyChain`]. Counted here and read by
/// the caller (the gateway exports them as metrics): this crate depends on no metrics
/// library. The method names are a fixed set of `&'static str`, so the map stays small.
#[derive(Debug, Default)]
pub struct RpcStats {
    by_method: Mutex<BTreeMap<&'static str, RpcCount>>,
}

impl RpcStats {
    fn record(&self, method: &'static str, ok: bool) {
        // A poisoned lock only means a panic elsewhere mid-increment; the map is still valid.
        let mut map = self.by_method.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = map.entry(method).or_default();
        count.calls = count.calls.saturating_add(1);
        if !ok {
            count.errors = count.errors.saturating_add(1);
        }
    }

    /// Every method seen so far with its counts, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, RpcCount)> {
        let map = self.by_method.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(m, c)| (*m, *c)).collect()
    }
}

/// [`Chain`] over alloy's HTTP provider.
pub struct AlloyChain {
    provider: RootProvider<Ethereum>,
    chain_id: u64,
    rpc_timeout: Duration,
    stats: Arc<RpcStats>,
}

impl fmt::Debug for AlloyChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL is deliberately absent: hosted RPC URLs carry API keys.
        f.debug_struct("AlloyChain")
            .field("chain_id", &self.chain_id)
            .field("rpc_timeout", &self.rpc_timeout)
            .finish_non_exhaustive()
    }
}

impl AlloyChain {
    /// Connects to `rpc_url` through `http` (a client built by `tollgate-tls`, which decides
    /// the trusted roots for an `https` node) and checks that the node serves
    /// `expected_chain_id`.
    pub async fn connect(
        rpc_url: &str,
        expected_chain_id: u64,
        rpc_timeout: Duration,
        http: reqwest::Client,
    ) -> Result<Self, VerifyError> {
        let url = rpc_url
            .parse()
            .map_err(|_| VerifyError::Rpc { method: "connect", reason: "the RPC URL is not a valid URL".to_owned() })?;
        let provider = ProviderBuilder::new().disable_recommended_fillers().connect_reqwest(http, url).root().clone();
        let chain = AlloyChain { provider, chain_id: expected_chain_id, rpc_timeout, stats: Arc::default() };
        let actual = chain.timed("eth_chainId", chain.provider.get_chain_id()).await?;
        if actual != expected_chain_id {
            return Err(VerifyError::NetworkMismatch { offered_chain_id: expected_chain_id, paid_chain_id: actual });
        }
        Ok(chain)
    }

    /// This chain's RPC calls and failures per method (shared: it keeps counting).
    pub fn stats(&self) -> Arc<RpcStats> {
        self.stats.clone()
    }

    async fn timed<T, F>(&self, method: &'static str, fut: F) -> Result<T, VerifyError>
    where
        F: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        let result = self.timed_uncounted(method, fut).await;
        self.stats.record(method, result.is_ok());
        result
    }

    async fn timed_uncounted<T, F>(&self, method: &'static str, fut: F) -> Result<T, VerifyError>
    where
        F: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        match tokio::time::timeout(self.rpc_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(rpc_error(method, &e)),
            Err(_) => Err(VerifyError::RpcTimeout { method, timeout_ms: millis(self.rpc_timeout) }),
        }
    }

    async fn timed_call<T, F>(&self, method: &'static str, fut: F) -> Result<CallOutcome<T>, VerifyError>
    where
        F: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        let result = self.timed_call_uncounted(method, fut).await;
        self.stats.record(method, result.is_ok());
        result
    }

    async fn timed_call_uncounted<T, F>(&self, method: &'static str, fut: F) -> Result<CallOutcome<T>, VerifyError>
    where
        F: Future<Output = Result<T, RpcError<TransportErrorKind>>>,
    {
        match tokio::time::timeout(self.rpc_timeout, fut).await {
            Ok(Ok(v)) => Ok(CallOutcome::Success(v)),
            Ok(Err(RpcError::ErrorResp(payload))) if payload.message.contains("revert") => {
                Ok(CallOutcome::Reverted(payload.as_revert_data().unwrap_or_default()))
            }
            Ok(Err(e)) => Err(rpc_error(method, &e)),
            Err(_) => Err(VerifyError::RpcTimeout { method, timeout_ms: millis(self.rpc_timeout) }),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Describes a transport error without the request URL (which may hold an API key).
fn rpc_error(method: &'static str, e: &RpcError<TransportErrorKind>) -> VerifyError {
    let reason = match e {
        RpcError::ErrorResp(p) => format!("node error {}: {}", p.code, p.message),
        RpcError::Transport(kind) if kind.is_retry_err() => "node busy or rate limited".to_owned(),
        // A certificate problem is said with the host and the reason (never the URL, whose
        // path or query may hold an API key), so an operator can tell it from a dead node.
        RpcError::Transport(TransportErrorKind::Custom(err)) => match tollgate_tls::tls_failure(err.as_ref()) {
            Some(tls) => tls.to_string(),
            None => "transport error (node unreachable)".to_owned(),
        },
        RpcError::Transport(_) => "transport error (node unreachable)".to_owned(),
        RpcError::DeserError { .. } => "unexpected response from node".to_owned(),
        other => std::any::type_name_of_val(other).to_string(),
    };
    VerifyError::Rpc { method, reason }
}

/// JSON-RPC refusals whose meaning is certain: the node validated the transaction and did
/// not take it (geth/reth/anvil wording), or a rate limit answered before any node saw it.
fn definite_refusal(code: i64, msg: &str) -> bool {
    const REFUSALS: &[&str] = &[
        "insufficient funds",
        "transaction underpriced",
        "intrinsic gas too low",
        "exceeds block gas limit",
        "gas limit reached",
        "invalid sender",
        "max fee per gas less than block base fee",
        "fee cap less than block base fee",
        "rate limit",
        "too many requests",
    ];
    code == -32005 || REFUSALS.iter().any(|r| msg.contains(r))
}

/// Whether a failed `eth_sendRawTransaction` certainly never reached a node: refused at
/// connect time (no byte sent), or rate limited with HTTP 429 (the front door answered
/// before any node saw it). Everything else is in doubt.
fn send_never_reached_node(e: &RpcError<TransportErrorKind>) -> bool {
    let RpcError::Transport(kind) = e else { return false };
    match kind {
        TransportErrorKind::HttpError(h) | TransportErrorKind::HttpErrorWithRetryAfter { error: h, .. } => {
            h.status == 429
        }
        TransportErrorKind::Custom(err) => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
            while let Some(s) = source {
                if let Some(io) = s.downcast_ref::<std::io::Error>()
                    && io.kind() == std::io::ErrorKind::ConnectionRefused
                {
                    return true;
                }
                source = s.source();
            }
            false
        }
        _ => false,
    }
}

fn tx(from: Option<Address>, to: Address, data: Bytes) -> TransactionRequest {
    let mut req = TransactionRequest::default().to(to).input(data.into());
    if let Some(from) = from {
        req = req.from(from);
    }
    req
}

fn convert_log(log: &alloy::rpc::types::Log) -> Option<ReceiptLog> {
    Some(ReceiptLog {
        address: log.address(),
        topics: log.topics().to_vec(),
        data: log.data().data.clone(),
        log_index: log.log_index?,
        tx_hash: log.transaction_hash?,
        block_number: log.block_number?,
        block_hash: log.block_hash?,
    })
}

impl AlloyChain {
    async fn send_raw_uncounted(&self, raw: Bytes) -> Result<B256, SendError> {
        const METHOD: &str = "eth_sendRawTransaction";
        let fut = async { self.provider.send_raw_transaction(&raw).await.map(|pending| *pending.tx_hash()) };
        match tokio::time::timeout(self.rpc_timeout, fut).await {
            Ok(Ok(hash)) => Ok(hash),
            Ok(Err(RpcError::ErrorResp(p))) => {
                let msg = p.message.to_ascii_lowercase();
                let e = VerifyError::Rpc { method: METHOD, reason: format!("node error {}: {}", p.code, p.message) };
                if msg.contains("nonce too low") {
                    Err(SendError::NonceTooLow)
                } else if msg.contains("already known") || msg.contains("known transaction") {
                    Err(SendError::AlreadyKnown)
                } else if msg.contains("replacement transaction underpriced") {
                    Err(SendError::NonceInUse)
                } else if definite_refusal(p.code, &msg) {
                    Err(SendError::Refused(e))
                } else {
                    // Anything else may come from a proxy or a load balancer after a backend
                    // took the transaction: the provider bears that doubt, never the payer.
                    Err(SendError::InDoubt(e))
                }
            }
            Ok(Err(e)) if send_never_reached_node(&e) => Err(SendError::Refused(rpc_error(METHOD, &e))),
            Ok(Err(e)) => Err(SendError::InDoubt(rpc_error(METHOD, &e))),
            Err(_) => Err(SendError::InDoubt(VerifyError::RpcTimeout {
                method: METHOD,
                timeout_ms: millis(self.rpc_timeout),
            })),
        }
    }
}

#[async_trait]
impl Chain for AlloyChain {
    fn chain_id(&self) -> u64 {
        self.chain_id
    }

    async fn code_len(&self, address: Address) -> Result<usize, VerifyError> {
        Ok(self.timed("eth_getCode", self.provider.get_code_at(address).into_future()).await?.len())
    }

    async fn call(&self, from: Option<Address>, to: Address, data: Bytes) -> Result<CallOutcome<Bytes>, VerifyError> {
        self.timed_call("eth_call", self.provider.call(tx(from, to, data)).into_future()).await
    }

    async fn call_at(&self, to: Address, data: Bytes, number: u64) -> Result<CallOutcome<Bytes>, VerifyError> {
        self.timed_call("eth_call", self.provider.call(tx(None, to, data)).number(number).into_future()).await
    }

    async fn estimate_gas(&self, from: Address, to: Address, data: Bytes) -> Result<CallOutcome<u64>, VerifyError> {
        self.timed_call("eth_estimateGas", self.provider.estimate_gas(tx(Some(from), to, data)).into_future()).await
    }

    async fn native_balance(&self, address: Address) -> Result<U256, VerifyError> {
        self.timed("eth_getBalance", self.provider.get_balance(address).into_future()).await
    }

    async fn pending_nonce(&self, address: Address) -> Result<u64, VerifyError> {
        self.timed("eth_getTransactionCount", self.provider.get_transaction_count(address).pending().into_future())
            .await
    }

    async fn mined_nonce(&self, address: Address) -> Result<u64, VerifyError> {
        self.timed("eth_getTransactionCount", self.provider.get_transaction_count(address).latest().into_future()).await
    }

    async fn mined_nonce_at(&self, address: Address, number: u64) -> Result<u64, VerifyError> {
        self.timed("eth_getTransactionCount", self.provider.get_transaction_count(address).number(number).into_future())
            .await
    }

    async fn fees(&self) -> Result<Fees, VerifyError> {
        let gas_price = self.timed("eth_gasPrice", self.provider.get_gas_price().into_future()).await?;
        let tip =
            self.timed("eth_maxPriorityFeePerGas", self.provider.get_max_priority_fee_per_gas().into_future()).await?;
        // Twice the current price leaves room for the base fee to rise over a few blocks
        // without the transaction getting stuck.
        Ok(Fees { max_fee_per_gas: gas_price.saturating_mul(2).max(tip), max_priority_fee_per_gas: tip })
    }

    async fn send_raw(&self, raw: Bytes) -> Result<B256, SendError> {
        let result = self.send_raw_uncounted(raw).await;
        self.stats.record("eth_sendRawTransaction", result.is_ok());
        result
    }

    async fn node_chain_id(&self) -> Result<u64, VerifyError> {
        self.timed("eth_chainId", self.provider.get_chain_id().into_future()).await
    }

    async fn receipt(&self, tx_hash: B256) -> Result<Option<Receipt>, VerifyError> {
        let receipt = self
            .timed("eth_getTransactionReceipt", self.provider.get_transaction_receipt(tx_hash).into_future())
            .await?;
        let Some(r) = receipt else { return Ok(None) };
        let (Some(block_number), Some(block_hash)) = (r.block_number(), r.block_hash()) else {
            return Ok(None);
        };
        Ok(Some(Receipt {
            tx_hash,
            success: r.status(),
            block_number,
            block_hash,
            logs: r.inner.logs().iter().filter_map(convert_log).collect(),
        }))
    }

    async fn block_number(&self) -> Result<u64, VerifyError> {
        self.timed("eth_blockNumber", self.provider.get_block_number().into_future()).await
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, VerifyError> {
        let block =
            self.timed("eth_getBlockByNumber", self.provider.get_block_by_number(number.into()).into_future()).await?;
        Ok(block.map(|b| b.header.hash))
    }

    async fn block_timestamp(&self, number: u64) -> Result<Option<u64>, VerifyError> {
        let block =
            self.timed("eth_getBlockByNumber", self.provider.get_block_by_number(number.into()).into_future()).await?;
        Ok(block.map(|b| b.header.timestamp))
    }

    async fn logs(&self, query: &LogQuery) -> Result<Vec<ReceiptLog>, VerifyError> {
        let mut filter = Filter::new()
            .address(query.addresses.clone())
            .event_signature(query.topic0)
            .from_block(query.from_block)
            .to_block(query.to_block);
        // An empty set would be sent as "match nothing" by some nodes; leave the topic open.
        if !query.topic1.is_empty() {
            filter = filter.topic1(query.topic1.clone());
        }
        if !query.topic2.is_empty() {
            filter = filter.topic2(query.topic2.clone());
        }
        let logs = self.timed("eth_getLogs", self.provider.get_logs(&filter)).await?;
        Ok(logs.iter().filter_map(convert_log).collect())
    }
}
