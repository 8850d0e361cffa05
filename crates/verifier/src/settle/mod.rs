//! Settlement: sending the verified `transferWithAuthorization` from the relayer key and
//! waiting for its receipt.
//!
//! Submission and the receipt wait are separate steps so the caller can record the
//! transaction hash (ledger state `settling`) before waiting: a crash or a receipt timeout
//! then leaves a hash to check, never a payment that might be sent twice.
//!
//! The relayer's account nonces are handed out by a [`NonceBook`](crate::nonces) so that many
//! settlements sign, claim and send at once (no lock is held across I/O), and are re-read from
//! the node when unknown or stale ("nonce too low", e.g. after a transaction sent by another
//! process) once nothing is in flight. One `Settler` per key per process; several processes
//! sharing a key must be serialised by the caller (the gateway holds a database lock).
//!
//! RPC economy: fee caps are cached for `fee_cache`; a payment whose transfer the verifier
//! simulated moments ago is sent without `eth_estimateGas` (the largest estimate seen for
//! that token, with margin and a cold-slot allowance); receipts are polled fast first, then
//! less often, up to `receipt_poll_interval`.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use alloy::eips::Encodable2718;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256};
use tokio::sync::{Mutex, Notify};

use crate::VerifyError;
use crate::chain::{CallOutcome, Chain, Fees, SendError};
use crate::nonces::{NonceBook, Release};
use crate::token::{RevertContext, classify_revert, decode_revert_reason};
use crate::verify::VerifiedPayment;

mod batch;
mod nonce;
mod receipt;

pub use nonce::NonceClosure;
use nonce::NonceGuard;
use receipt::find_settled;

pub use batch::{BATCH_PAYMENTS_MAX, BatchItem, BatchOutcome, MULTICALL3};

/// Records a settlement transaction's hash before it is broadcast (see
/// [`Settler::submit_claimed`]). Returns whether the caller may send it.
#[async_trait::async_trait]
pub trait Claim: Send {
    /// Claims the payment for the transaction `tx_hash`, sent from `relayer` with account
    /// nonce `nonce` (recorded so that a later sweep can tell when a transaction that never
    /// landed no longer can: once the relayer's mined nonce has passed it).
    async fn claim(&mut self, tx_hash: B256, relayer: Address, nonce: u64) -> bool;
}

/// A claim that always succeeds (nothing to record).
#[derive(Debug, Clone, Copy, Default)]
pub struct AlwaysClaim;

#[async_trait::async_trait]
impl Claim for AlwaysClaim {
    async fn claim(&mut self, _tx_hash: B256, _relayer: Address, _nonce: u64) -> bool {
        true
    }
}

/// Settlement limits.
#[derive(Debug, Clone)]
pub struct SettleConfig {
    /// How often to ask for the receipt. Fast on a local chain; about a block time on a
    /// public one. (alloy's default of 7 s is far too slow for a paid HTTP call.)
    pub receipt_poll_interval: Duration,
    /// How long to wait for the receipt before reporting [`SettleOutcome::Pending`].
    pub receipt_timeout: Duration,
    /// Extra gas over the estimate, in percent.
    pub gas_margin_percent: u64,
    /// Sends attempted when the node refuses the nonce, before giving up.
    pub send_attempts_max: u32,
    /// How long fee caps read from the node are reused (they are set at twice the gas
    /// price, so a second-old reading is safe; Base makes a block every 2 s).
    pub fee_cache: Duration,
}

/// How the gas limit of a settlement is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GasPlan {
    /// Ask the node (`eth_estimateGas`), which also simulates the transfer once more.
    Estimate,
    /// The verifier simulated this very transfer moments ago (a paid call settling its own
    /// payment): a plain-wallet signature uses the largest estimate seen for the token, plus
    /// the margin and [`COLD_SLOT_GAS`]; the first payment of a token is still estimated.
    Simulated,
}

/// Gas added to a remembered estimate: writing a storage slot for the first time (a payee
/// with no balance yet) costs about 20,000 more than the payment the estimate was made for.
pub const COLD_SLOT_GAS: u64 = 22_100;

/// The first receipt poll after a broadcast; each later wait doubles, up to the configured
/// interval (a local or fast chain answers in milliseconds; a 2 s chain within a poll).
const FIRST_RECEIPT_POLL: Duration = Duration::from_millis(2);

impl Default for SettleConfig {
    fn default() -> Self {
        SettleConfig {
            receipt_poll_interval: Duration::from_millis(250),
            receipt_timeout: Duration::from_secs(30),
            gas_margin_percent: 20,
            send_attempts_max: 4,
            fee_cache: Duration::from_secs(1),
        }
    }
}

/// Where a settled transfer landed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The transaction.
    pub tx_hash: B256,
    /// Its block.
    pub block_number: u64,
    /// The block's hash (reconciliation compares it to detect reorgs).
    pub block_hash: B256,
    /// Index of the `Transfer` log in the block.
    pub log_index: u64,
}

/// A settlement transaction handed to the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// Its hash (recorded by the claim before the broadcast).
    pub tx_hash: B256,
    /// Whether the node acknowledged it. `false`: the broadcast's answer was lost (timeout,
    /// reset, a proxy's 5xx), so the transaction may or may not be in a mempool; the hash
    /// must be checked, and the payer told the payment is pending, never "not charged".
    pub acknowledged: bool,
    /// The relayer's account nonce it uses.
    pub nonce: u64,
    /// The signed transaction, for re-broadcasting the very same bytes (same hash, same
    /// nonce: it can land at most once) when the first broadcast's answer was lost.
    pub raw: alloy_primitives::Bytes,
}

/// What a re-broadcast of a signed settlement found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebroadcast {
    /// The node has it now (it took it, or already knew it).
    Known,
    /// Its nonce is used already: by this transaction (mined) or by another one (then this
    /// one can never land).
    NonceTaken,
    /// The node did not answer or refused; try again later.
    Failed(VerifyError),
}

/// What became of a submitted settlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// Mined, successful, with the expected `Transfer`.
    Settled(Settled),
    /// Sent, but no receipt within the timeout: check again later with the hash. This is
    /// not a failure, and the payer must not be asked to pay again.
    Pending {
        /// The transaction to check.
        tx_hash: B256,
    },
}

/// Sends settlements for one chain from one relayer key.
pub struct Settler {
    chain: Arc<dyn Chain>,
    wallet: EthereumWallet,
    address: Address,
    /// The relayer's nonces (held only for bookkeeping, never across I/O).
    book: std::sync::Mutex<NonceBook>,
    /// Woken on every release from the book (a taker waits for sends to finish before the
    /// count is read again).
    book_changed: Notify,
    /// One re-read of the count from the node at a time.
    refresh: Mutex<()>,
    /// Fee caps and when they were read.
    fees: std::sync::Mutex<Option<(tokio::time::Instant, Fees)>>,
    /// The largest `eth_estimateGas` seen per token for plain-wallet signatures.
    gas_seen: std::sync::Mutex<HashMap<Address, u64>>,
    config: SettleConfig,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is never printed; the wallet type does not print it either, but we do
        // not rely on that.
        f.debug_struct("Settler")
            .field("chain_id", &self.chain.chain_id())
            .field("relayer", &self.address)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Settler {
    /// A settler sending from `relayer_key` on `chain`.
    pub fn new(chain: Arc<dyn Chain>, relayer_key: PrivateKeySigner, config: SettleConfig) -> Self {
        let address = relayer_key.address();
        Settler {
            chain,
            wallet: EthereumWallet::from(relayer_key),
            address,
            book: std::sync::Mutex::new(NonceBook::default()),
            book_changed: Notify::new(),
            refresh: Mutex::new(()),
            fees: std::sync::Mutex::new(None),
            gas_seen: std::sync::Mutex::new(HashMap::new()),
            config,
        }
    }

    /// The relayer's address (it pays the gas).
    pub fn address(&self) -> Address {
        self.address
    }

    /// The chain this settler sends on.
    pub fn chain(&self) -> &Arc<dyn Chain> {
        &self.chain
    }

    /// The relayer's native balance, for low-gas warnings.
    pub async fn gas_balance(&self) -> Result<U256, VerifyError> {
        self.chain.native_balance(self.address).await
    }

    /// Submits and waits for the receipt.
    pub async fn settle(&self, payment: &VerifiedPayment) -> Result<SettleOutcome, VerifyError> {
        let tx_hash = self.submit(payment).await?;
        self.await_receipt(payment, tx_hash).await
    }

    /// Estimates, signs and sends the transfer; returns its hash without waiting.
    pub async fn submit(&self, payment: &VerifiedPayment) -> Result<B256, VerifyError> {
        let sent = self.submit_claimed(payment, &mut AlwaysClaim, GasPlan::Estimate).await?;
        sent.map(|s| s.tx_hash).ok_or_else(|| VerifyError::SettlementNotSent { reason: "claim refused".to_owned() })
    }

    /// Like [`Settler::submit`], but calls `claim(tx_hash)` with the signed transaction's
    /// hash *before* broadcasting it, and broadcasts only if the claim returns true. The
    /// caller records the hash there (ledger state `settling`), so a crash between the
    /// broadcast and the record cannot lose the transaction, and two workers racing on one
    /// payment cannot both send: the loser's claim fails and nothing is sent
    /// (`Ok(None)`). When the node refuses the nonce and the transaction is rebuilt,
    /// `claim` is called again with the new hash.
    ///
    /// When the broadcast's answer is lost (timeout, reset, a proxy's 5xx) the transaction
    /// may or may not have been accepted; its hash is returned all the same with
    /// `acknowledged: false`, so the caller keeps something to check rather than telling
    /// the payer nothing was charged. `Err(SettlementNotSent)` after a claim means the node
    /// answered and refused it (or the connection was refused): no transaction exists.
    pub async fn submit_claimed(
        &self,
        payment: &VerifiedPayment,
        claim: &mut dyn Claim,
        gas: GasPlan,
    ) -> Result<Option<Submitted>, VerifyError> {
        let calldata = payment.transfer_calldata();
        let gas_limit = self.gas_limit(payment, &calldata, gas).await?;
        self.send_claimed(payment.asset, calldata, gas_limit, claim).await
    }

    /// Signs a call of `to` with `calldata` and `gas_limit` for the next relayer nonce, has
    /// `claim` record its hash, and broadcasts it (see [`Settler::submit_claimed`], whose
    /// contract this is; [`Settler::submit_batch`] sends through it too).
    async fn send_claimed(
        &self,
        to: Address,
        calldata: alloy_primitives::Bytes,
        gas_limit: u64,
        claim: &mut dyn Claim,
    ) -> Result<Option<Submitted>, VerifyError> {
        let fees = self.fees().await?;
        let mut last_refusal = String::new();
        for _ in 0..self.config.send_attempts_max.max(1) {
            let nonce = self.take_nonce().await?;
            // Released through `release_nonce` on every path below; released as taken if this
            // future is dropped.
            let held = NonceGuard::new(self, nonce);
            let request = TransactionRequest::default()
                .with_from(self.address)
                .with_to(to)
                .with_input(calldata.clone())
                .with_chain_id(self.chain.chain_id())
                .with_nonce(nonce)
                .with_gas_limit(gas_limit)
                .with_max_fee_per_gas(fees.max_fee_per_gas)
                .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
            let envelope = match request.build(&self.wallet).await {
                Ok(e) => e,
                Err(e) => {
                    self.release_nonce(held, Release::Unused, &fees).await;
                    return Err(VerifyError::SettlementNotSent { reason: format!("signing failed: {e}") });
                }
            };
            let tx_hash = *envelope.tx_hash();
            if !claim.claim(tx_hash, self.address, nonce).await {
                self.release_nonce(held, Release::Unused, &fees).await;
                return Ok(None);
            }
            let raw: alloy_primitives::Bytes = envelope.encoded_2718().into();
            match self.chain.send_raw(raw.clone()).await {
                // Taken, or this very transaction is in the pool already: it was sent.
                Ok(_) | Err(SendError::AlreadyKnown) => {
                    self.release_nonce(held, Release::Used, &fees).await;
                    return Ok(Some(Submitted { tx_hash, acknowledged: true, nonce, raw }));
                }
                Err(SendError::NonceTooLow | SendError::NonceInUse) => {
                    // Someone else used this nonce: ask the node again.
                    tracing::warn!(relayer = %self.address, nonce, "relayer nonce refused; refreshing from the node");
                    last_refusal = format!("nonce {nonce} refused");
                    self.release_nonce(held, Release::Taken, &fees).await;
                }
                Err(SendError::InDoubt(e)) => {
                    // Keep nonces moving forward: if the node took it, reusing the nonce would
                    // replace a payment the payer was told is pending. If it did not, the
                    // caller re-broadcasts these bytes to fill the gap, or calls
                    // `forget_nonce` when it gives up.
                    self.release_nonce(held, Release::Used, &fees).await;
                    tracing::warn!(%tx_hash, error = %e, "settlement broadcast in doubt; keeping the hash to check");
                    return Ok(Some(Submitted { tx_hash, acknowledged: false, nonce, raw }));
                }
                Err(SendError::Refused(e)) => {
                    self.release_nonce(held, Release::Unused, &fees).await;
                    return Err(VerifyError::SettlementNotSent { reason: e.to_string() });
                }
            }
        }
        Err(VerifyError::SettlementNotSent { reason: last_refusal })
    }

    /// The gas limit for `payment`'s transfer (see [`GasPlan`]). A revert in the estimate is
    /// the token's refusal of the payment.
    async fn gas_limit(
        &self,
        payment: &VerifiedPayment,
        calldata: &alloy_primitives::Bytes,
        plan: GasPlan,
    ) -> Result<u64, VerifyError> {
        let plain = matches!(payment.signature, crate::verify::SignatureCheck::Ecdsa(_));
        let margin = |gas: u64| gas.saturating_add(gas.saturating_mul(self.config.gas_margin_percent) / 100);
        if plan == GasPlan::Simulated && plain {
            let seen = self.gas_seen.lock().unwrap_or_else(PoisonError::into_inner).get(&payment.asset).copied();
            if let Some(gas) = seen {
                return Ok(margin(gas).saturating_add(COLD_SLOT_GAS));
            }
        }
        let gas = match self.chain.estimate_gas(self.address, payment.asset, calldata.clone()).await? {
            CallOutcome::Success(gas) => gas,
            CallOutcome::Reverted(data) => return Err(revert_error(payment, &data)),
        };
        if plain {
            let mut seen = self.gas_seen.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = seen.entry(payment.asset).or_insert(gas);
            *entry = (*entry).max(gas);
        }
        Ok(margin(gas))
    }

    /// Fee caps, read from the node at most once per `fee_cache`.
    async fn fees(&self) -> Result<Fees, VerifyError> {
        let now = tokio::time::Instant::now();
        if let Some((at, fees)) = *self.fees.lock().unwrap_or_else(PoisonError::into_inner)
            && now.duration_since(at) < self.config.fee_cache
        {
            return Ok(fees);
        }
        let fees = self.chain.fees().await?;
        *self.fees.lock().unwrap_or_else(PoisonError::into_inner) = Some((now, fees));
        Ok(fees)
    }

    /// Sends an already signed settlement again (the same bytes, so the same hash and nonce).
    pub async fn rebroadcast(&self, raw: &alloy_primitives::Bytes) -> Rebroadcast {
        match self.chain.send_raw(raw.clone()).await {
            Ok(_) | Err(SendError::AlreadyKnown) => Rebroadcast::Known,
            Err(SendError::NonceTooLow | SendError::NonceInUse) => Rebroadcast::NonceTaken,
            Err(SendError::Refused(e) | SendError::InDoubt(e)) => Rebroadcast::Failed(e),
        }
    }

    /// The latest block's number and timestamp: once the timestamp is at or past an
    /// authorization's `validBefore`, no transaction can use that authorization any more (the
    /// token compares block time).
    pub async fn head(&self) -> Result<(u64, u64), VerifyError> {
        let number = self.chain.block_number().await?;
        let timestamp = self.chain.block_timestamp(number).await?.ok_or(VerifyError::Rpc {
            method: "eth_getBlockByNumber",
            reason: "the latest block is missing".to_owned(),
        })?;
        Ok((number, timestamp))
    }
}

fn revert_error(payment: &VerifiedPayment, data: &alloy_primitives::Bytes) -> VerifyError {
    let reason = decode_revert_reason(data);
    let a = &payment.authorization;
    let ctx = RevertContext {
        from: a.from,
        nonce: a.nonce,
        value: a.value,
        valid_after_unix_s: u64::try_from(a.valid_after).unwrap_or(u64::MAX),
        valid_before_unix_s: u64::try_from(a.valid_before).unwrap_or(u64::MAX),
        now_unix_s: 0,
    };
    classify_revert(&reason, &ctx).unwrap_or(VerifyError::SimulationFailed { reason })
}
