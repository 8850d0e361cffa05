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
use crate::nonces::{AfterRelease, Count, NonceBook, Release, Take};
use crate::token::{RevertContext, TRANSFER_TOPIC, classify_revert, decode_revert_reason};
use crate::verify::VerifiedPayment;

mod batch;

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

/// Gas for the zero-value self-transfer that closes a nonce (a plain transfer's intrinsic gas).
const CLOSE_NONCE_GAS: u64 = 21_000;

/// Re-broadcasts of a self-transfer whose first broadcast's answer was lost, and the wait
/// before each.
const SELF_TRANSFER_REBROADCASTS: u32 = 3;
const SELF_TRANSFER_REBROADCAST_WAIT: Duration = Duration::from_millis(200);

/// A nonce held in the book while its holder awaits I/O. If the holder's future is dropped
/// (a caller's timeout) before it releases the nonce, the guard releases it as taken: the
/// count is read again from the node once nothing is in flight, and a gap it left is found
/// and filled by that read. Without it, a dropped settlement would hold the nonce in flight
/// forever and every later settlement would wait for it.
struct NonceGuard<'a> {
    settler: &'a Settler,
    nonce: u64,
    armed: bool,
}

impl<'a> NonceGuard<'a> {
    fn new(settler: &'a Settler, nonce: u64) -> Self {
        NonceGuard { settler, nonce, armed: true }
    }

    /// The holder releases the nonce itself from here on.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for NonceGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.settler.book.lock().unwrap_or_else(PoisonError::into_inner).release(self.nonce, Release::Taken);
            self.settler.book_changed.notify_waiters();
        }
    }
}

/// What [`Settler::close_nonce`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NonceClosure {
    /// The nonce is already used by a mined transaction.
    Passed,
    /// A zero-value transfer to the relayer now holds the nonce; once mined, the nonce has
    /// passed.
    Sent {
        /// The closing transaction.
        tx_hash: B256,
    },
    /// Not the relayer's next free nonce: a transaction of ours is pending at or below it, or
    /// this process is sending.
    Busy,
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

    /// The next nonce from the book; reads the count from the node when it is unknown and
    /// nothing is in flight, waits for in-flight sends otherwise.
    async fn take_nonce(&self) -> Result<u64, VerifyError> {
        loop {
            let changed = self.book_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let take = self.book.lock().unwrap_or_else(PoisonError::into_inner).take();
            match take {
                Take::Nonce(n) => return Ok(n),
                Take::Wait => changed.await,
                Take::Refresh => {
                    let _one = self.refresh.lock().await;
                    // Someone may have read it meanwhile: then just take again.
                    if self.book.lock().unwrap_or_else(PoisonError::into_inner).needs_refresh() {
                        let pending = self.chain.pending_nonce(self.address).await?;
                        let count = self.book.lock().unwrap_or_else(PoisonError::into_inner).set_next(pending);
                        if let Count::Gap(gap) = count {
                            // Held by the book; a guard gives it back if this call is dropped.
                            let held = NonceGuard::new(self, gap);
                            let filled = match self.fees().await {
                                Ok(fees) => self.fill_gap(gap, &fees).await,
                                Err(_) => Release::Taken,
                            };
                            held.disarm();
                            self.book.lock().unwrap_or_else(PoisonError::into_inner).release(gap, filled);
                            self.book_changed.notify_waiters();
                            if filled == Release::Taken {
                                // Not filled: the settlement fails now (nothing was claimed)
                                // rather than queue behind a gap; the next one tries again.
                                return Err(VerifyError::SettlementNotSent {
                                    reason: format!("relayer nonce {gap} is a gap that could not be filled"),
                                });
                            }
                        }
                    }
                }
            }
        }
    }

    /// Ends a nonce's flight. A nonce given back unused below an assigned one is a gap that
    /// would hold every later transaction at the node: it is filled at once with a zero-value
    /// transfer to the relayer; if that cannot be sent, the count is read again from the node
    /// once nothing is in flight (its pending count then stops at the gap, so the next
    /// settlement fills it).
    async fn release_nonce(&self, held: NonceGuard<'_>, how: Release, fees: &Fees) {
        let nonce = held.nonce;
        held.disarm();
        let after = self.book.lock().unwrap_or_else(PoisonError::into_inner).release(nonce, how);
        if let AfterRelease::Fill(gap) = after {
            let held = NonceGuard::new(self, gap);
            let filled = self.fill_gap(gap, fees).await;
            held.disarm();
            self.book.lock().unwrap_or_else(PoisonError::into_inner).release(gap, filled);
        }
        self.book_changed.notify_waiters();
    }

    /// Fills the gap at `nonce` with a self-transfer, confirmed known to the node:
    /// [`Release::Used`] once it is, [`Release::Taken`] otherwise (the count is then read
    /// again once nothing is in flight, and a gap found then is filled by that read).
    async fn fill_gap(&self, nonce: u64, fees: &Fees) -> Release {
        match self.self_transfer(nonce, fees).await {
            Ok(tx_hash) => {
                tracing::warn!(relayer = %self.address, nonce, tx = %tx_hash, "relayer nonce gap filled");
                Release::Used
            }
            Err(e) => {
                tracing::warn!(relayer = %self.address, nonce, error = %e,
                    "relayer nonce gap not filled; the count is read again once sends finish");
                Release::Taken
            }
        }
    }

    /// Signs and sends a zero-value transfer from the relayer to itself with `nonce`.
    async fn self_transfer(&self, nonce: u64, fees: &Fees) -> Result<B256, VerifyError> {
        let request = TransactionRequest::default()
            .with_from(self.address)
            .with_to(self.address)
            .with_value(U256::ZERO)
            .with_chain_id(self.chain.chain_id())
            .with_nonce(nonce)
            .with_gas_limit(CLOSE_NONCE_GAS)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let envelope = request
            .build(&self.wallet)
            .await
            .map_err(|e| VerifyError::SettlementNotSent { reason: format!("signing failed: {e}") })?;
        let tx_hash = *envelope.tx_hash();
        let raw: alloy_primitives::Bytes = envelope.encoded_2718().into();
        let taken = || VerifyError::SettlementNotSent { reason: format!("nonce {nonce} taken") };
        match self.chain.send_raw(raw.clone()).await {
            Ok(_) | Err(SendError::AlreadyKnown) => Ok(tx_hash),
            Err(SendError::NonceTooLow | SendError::NonceInUse) => Err(taken()),
            Err(SendError::Refused(e)) => Err(e),
            // The answer was lost: the same bytes again until the node says it knows them (a
            // transfer only assumed sent would leave the very gap it was meant to fill).
            Err(SendError::InDoubt(mut last)) => {
                for _ in 0..SELF_TRANSFER_REBROADCASTS {
                    tokio::time::sleep(SELF_TRANSFER_REBROADCAST_WAIT).await;
                    match self.rebroadcast(&raw).await {
                        Rebroadcast::Known => return Ok(tx_hash),
                        Rebroadcast::NonceTaken => return Err(taken()),
                        Rebroadcast::Failed(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }

    /// Polls for the receipt of `tx_hash` until the configured timeout: at once, then after
    /// 2 ms, doubling the wait up to `receipt_poll_interval`.
    pub async fn await_receipt(&self, payment: &VerifiedPayment, tx_hash: B256) -> Result<SettleOutcome, VerifyError> {
        self.await_receipt_every(payment, tx_hash, self.config.receipt_poll_interval).await
    }

    /// Like [`Settler::await_receipt`], polling every `poll_interval` (background settlements
    /// that nobody waits on need not ask the node as often as a paid call in progress).
    pub async fn await_receipt_every(
        &self,
        payment: &VerifiedPayment,
        tx_hash: B256,
        poll_interval: Duration,
    ) -> Result<SettleOutcome, VerifyError> {
        let deadline = tokio::time::Instant::now() + self.config.receipt_timeout;
        let mut wait = FIRST_RECEIPT_POLL.min(poll_interval);
        loop {
            match self.check_receipt(payment, tx_hash).await {
                Ok(Some(settled)) => return Ok(SettleOutcome::Settled(settled)),
                Ok(None) => {}
                // A flaky node while waiting is not a verdict on the transaction.
                Err(VerifyError::Rpc { .. } | VerifyError::RpcTimeout { .. }) => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() + wait > deadline {
                return Ok(SettleOutcome::Pending { tx_hash });
            }
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2).min(poll_interval);
        }
    }

    /// Sends an already signed settlement again (the same bytes, so the same hash and nonce).
    pub async fn rebroadcast(&self, raw: &alloy_primitives::Bytes) -> Rebroadcast {
        match self.chain.send_raw(raw.clone()).await {
            Ok(_) | Err(SendError::AlreadyKnown) => Rebroadcast::Known,
            Err(SendError::NonceTooLow | SendError::NonceInUse) => Rebroadcast::NonceTaken,
            Err(SendError::Refused(e) | SendError::InDoubt(e)) => Rebroadcast::Failed(e),
        }
    }

    /// Forgets the tracked account nonce, so the next send asks the node (used when an
    /// in-doubt broadcast could not be confirmed: its nonce may be a gap to refill).
    pub async fn forget_nonce(&self) {
        self.book.lock().unwrap_or_else(PoisonError::into_inner).forget();
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

    /// Whether a transaction of `relayer` with account nonce `nonce` can still be mined, as of
    /// block `number`: false once the relayer's mined nonce then had passed it (another
    /// transaction took it). A node behind that block answers an error, never an older count.
    pub async fn nonce_still_open(&self, relayer: Address, nonce: u64, number: u64) -> Result<bool, VerifyError> {
        Ok(self.chain.mined_nonce_at(relayer, number).await? <= nonce)
    }

    /// Makes a claimed but never broadcast settlement unable to land: when `nonce` is this
    /// relayer's next nonce on the node (mined and pending counts both equal to it, so no
    /// transaction of ours holds it, in the pool or in a block), sends a zero-value transfer
    /// to the relayer itself with that nonce. Once it is mined, every transaction signed for
    /// that nonce can never be. The tracked nonce moves past it.
    ///
    /// Used by recovery for a call the agent was never answered for, whose settlement was
    /// claimed by a process that died before its broadcast: waiting for later traffic to take
    /// the nonce could take until the authorization's `validBefore` on a quiet gateway.
    pub async fn close_nonce(&self, nonce: u64) -> Result<NonceClosure, VerifyError> {
        // Exclusive with re-reads of the count; refused while this process has sends in
        // flight or has handed out other nonces since it last read the count (then `nonce`
        // is below them and was assigned, or above them and not ours to close yet).
        let _one = self.refresh.lock().await;
        {
            let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
            if !book.idle() || book.next().is_some_and(|n| n != nonce) {
                return Ok(NonceClosure::Busy);
            }
            book.forget();
            book.hold(nonce);
        }
        let closed = self.close_held(nonce).await;
        let how = match &closed {
            Ok(NonceClosure::Sent { .. }) => Release::Used,
            _ => Release::Taken,
        };
        {
            let mut book = self.book.lock().unwrap_or_else(PoisonError::into_inner);
            book.release(nonce, how);
            if how == Release::Used {
                book.set_next(nonce.saturating_add(1));
            }
        }
        self.book_changed.notify_waiters();
        closed
    }

    async fn close_held(&self, nonce: u64) -> Result<NonceClosure, VerifyError> {
        let mined = self.chain.mined_nonce(self.address).await?;
        if mined > nonce {
            return Ok(NonceClosure::Passed);
        }
        let pending = self.chain.pending_nonce(self.address).await?;
        if pending != nonce || mined != nonce {
            // A transaction of ours holds it (in the pool) or an earlier nonce is still open:
            // what is in flight decides first.
            return Ok(NonceClosure::Busy);
        }
        let fees = self.fees().await?;
        match self.self_transfer(nonce, &fees).await {
            Ok(tx_hash) => Ok(NonceClosure::Sent { tx_hash }),
            Err(VerifyError::SettlementNotSent { .. }) if self.chain.mined_nonce(self.address).await? > nonce => {
                Ok(NonceClosure::Passed)
            }
            Err(e) => Err(e),
        }
    }

    /// One look at the receipt: `None` while unmined, the landing place when the expected
    /// `Transfer` is there, an error when the transaction reverted or moved something else.
    pub async fn check_receipt(
        &self,
        payment: &VerifiedPayment,
        tx_hash: B256,
    ) -> Result<Option<Settled>, VerifyError> {
        let Some(receipt) = self.chain.receipt(tx_hash).await? else { return Ok(None) };
        if !receipt.success {
            // The remembered gas may be what ran out: the token's next settlement estimates.
            self.gas_seen.lock().unwrap_or_else(PoisonError::into_inner).remove(&payment.asset);
            return Err(VerifyError::SettlementReverted { tx_hash });
        }
        let a = &payment.authorization;
        match find_settled(&receipt, payment) {
            Some(settled) => Ok(Some(settled)),
            None => Err(VerifyError::TransferLogMissing { tx_hash, from: a.from, to: a.to, value: a.value }),
        }
    }
}

/// Where `payment` landed in a successful `receipt`, if it did: the token's
/// `AuthorizationUsed(authorizer, nonce)` log whose indexed topics are this payment's payer
/// and nonce (which name the payment exactly, even among many in one batch transaction), then
/// the first `Transfer` of the same token after it from the payer to the payee of the value
/// (the token emits the two in that order). `log_index` is the `Transfer`'s.
fn find_settled(receipt: &crate::chain::Receipt, payment: &VerifiedPayment) -> Option<Settled> {
    let a = &payment.authorization;
    let used = receipt.logs.iter().find(|log| {
        log.address == payment.asset
            && log.topics.first() == Some(&crate::token::AUTHORIZATION_USED_TOPIC)
            && log.topics.get(1) == Some(&a.from.into_word())
            && log.topics.get(2) == Some(&a.nonce)
    })?;
    let value_word = a.value.to_be_bytes::<32>();
    let transfer = receipt.logs.iter().find(|log| {
        log.log_index > used.log_index
            && log.address == payment.asset
            && log.topics.first() == Some(&TRANSFER_TOPIC)
            && log.topics.get(1) == Some(&a.from.into_word())
            && log.topics.get(2) == Some(&a.to.into_word())
            && log.data.as_ref() == value_word.as_slice()
    })?;
    Some(Settled {
        tx_hash: receipt.tx_hash,
        block_number: receipt.block_number,
        block_hash: receipt.block_hash,
        log_index: transfer.log_index,
    })
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
