//! The relayer's account nonces: handing them out from the book (read from the node when
//! unknown, once nothing is in flight), giving them back, filling a gap a lost send left with a
//! zero-value self-transfer, and closing a nonce a dead process claimed but never broadcast.
//!
//! Must not: hold the book's lock across I/O, or send anything but a zero-value transfer from
//! the relayer to itself (settlements are sent by `Settler::send_claimed`).

use std::sync::PoisonError;
use std::time::Duration;

use alloy::eips::Encodable2718;
use alloy::network::{NetworkTransactionBuilder, TransactionBuilder};
use alloy::rpc::types::TransactionRequest;
use alloy_primitives::{Address, B256, U256};

use super::{Rebroadcast, Settler};
use crate::VerifyError;
use crate::chain::{Fees, SendError};
use crate::nonces::{AfterRelease, Count, Release, Take};

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
pub(super) struct NonceGuard<'a> {
    settler: &'a Settler,
    nonce: u64,
    armed: bool,
}

impl<'a> NonceGuard<'a> {
    pub(super) fn new(settler: &'a Settler, nonce: u64) -> Self {
        NonceGuard { settler, nonce, armed: true }
    }

    /// The holder releases the nonce itself from here on.
    pub(super) fn disarm(mut self) {
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

impl Settler {
    /// The next nonce from the book; reads the count from the node when it is unknown and
    /// nothing is in flight, waits for in-flight sends otherwise.
    pub(super) async fn take_nonce(&self) -> Result<u64, VerifyError> {
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
    pub(super) async fn release_nonce(&self, held: NonceGuard<'_>, how: Release, fees: &Fees) {
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
    pub(super) async fn fill_gap(&self, nonce: u64, fees: &Fees) -> Release {
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
    pub(super) async fn self_transfer(&self, nonce: u64, fees: &Fees) -> Result<B256, VerifyError> {
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

    /// Forgets the tracked account nonce, so the next send asks the node (used when an
    /// in-doubt broadcast could not be confirmed: its nonce may be a gap to refill).
    pub async fn forget_nonce(&self) {
        self.book.lock().unwrap_or_else(PoisonError::into_inner).forget();
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
}
