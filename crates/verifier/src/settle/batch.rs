//! Batched settlement: many verified `transferWithAuthorization` calls in one transaction
//! through Multicall3's `aggregate3` at its canonical address, each call with
//! `allowFailure = true`, so that one payment the token refuses (a cancelled authorization,
//! a balance moved away) fails alone and the others settle.
//!
//! The batch follows the single send's rules: its hash is claimed before the broadcast (one
//! claim for the whole batch, which the caller makes all-or-nothing), its nonce comes from the
//! same book, an answer lost on the broadcast is `acknowledged: false`. Each payment's outcome
//! is read from the receipt by the token's `AuthorizationUsed(authorizer, nonce)` log, whose
//! indexed topics name the payment exactly; the position of a call in the batch is never used
//! to tell which payment a log belongs to.
//!
//! Must not: put two payments of one authorization in a batch, send a batch whose gas was not
//! estimated, or report an inner call as failed while the transaction is unmined.

use std::time::Duration;

use alloy_primitives::{Address, B256, Bytes, address};
use alloy_sol_types::{SolCall, sol};

use super::{Claim, FIRST_RECEIPT_POLL, Settled, Settler, Submitted, find_settled, revert_error};
use crate::VerifyError;
use crate::chain::CallOutcome;
use crate::verify::VerifiedPayment;

/// Multicall3's canonical address (the same on every chain where it is deployed; the test
/// chains place `contracts/src/Aggregate3.sol`'s runtime code there).
pub const MULTICALL3: Address = address!("cA11bde05977b3631167028862bE2a173976CA11");

/// Most payments in one batch: far below a block's gas limit (about 70k gas each).
pub const BATCH_PAYMENTS_MAX: usize = 256;

sol! {
    /// Multicall3's `aggregate3` (selector 0x82ad56cb).
    interface IMulticall3 {
        struct Call3 {
            address target;
            bool allowFailure;
            bytes callData;
        }
        struct Result {
            bool success;
            bytes returnData;
        }
        function aggregate3(Call3[] calls) external payable returns (Result[] returnData);
    }
}

/// What became of one payment of a mined batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchItem {
    /// Its `AuthorizationUsed` and `Transfer` are in the receipt.
    Settled(Settled),
    /// Its call failed inside the batch (no `AuthorizationUsed` of this payment in the
    /// receipt): this transaction did not move its money. Whether the authorization is used
    /// (by someone else) is for the caller to ask.
    Failed {
        /// The batch transaction.
        tx_hash: B256,
    },
}

/// What became of a submitted batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Mined and successful: one item per payment, in the order the payments were given.
    Mined(Vec<BatchItem>),
    /// No receipt within the timeout: check again later with the hash.
    Pending {
        /// The batch transaction.
        tx_hash: B256,
    },
}

impl Settler {
    /// The `aggregate3` calldata that settles `payments`, each call allowed to fail.
    fn batch_calldata(payments: &[VerifiedPayment]) -> Bytes {
        let calls = payments
            .iter()
            .map(|p| IMulticall3::Call3 { target: p.asset, allowFailure: true, callData: p.transfer_calldata() })
            .collect();
        IMulticall3::aggregate3Call { calls }.abi_encode().into()
    }

    /// Refuses a batch this settler cannot send: empty, over [`BATCH_PAYMENTS_MAX`], a payment
    /// of another chain, or one authorization twice (the second call would fail for certain).
    fn check_batch(&self, payments: &[VerifiedPayment]) -> Result<(), VerifyError> {
        let refuse = |reason: String| Err(VerifyError::SettlementNotSent { reason });
        if payments.is_empty() || payments.len() > BATCH_PAYMENTS_MAX {
            return refuse(format!("a batch holds 1 to {BATCH_PAYMENTS_MAX} payments, not {}", payments.len()));
        }
        let chain_id = self.chain.chain_id();
        let mut seen = std::collections::HashSet::new();
        for p in payments {
            if p.chain_id != chain_id {
                return refuse(format!("a payment of chain {} in a batch for chain {chain_id}", p.chain_id));
            }
            if !seen.insert((p.asset, p.authorization.from, p.authorization.nonce)) {
                return refuse(format!(
                    "authorization {} of {} twice in one batch",
                    p.authorization.nonce, p.authorization.from
                ));
            }
        }
        Ok(())
    }

    /// Simulates the batch from the relayer (`eth_call` of `aggregate3`): per payment, `Ok`
    /// when its transfer would succeed now, or the token's refusal as the single send's
    /// estimate would name it (`NonceAlreadyUsed` for a cancelled authorization, ...). The
    /// caller leaves the refused ones out of the batch it submits.
    pub async fn simulate_batch(
        &self,
        payments: &[VerifiedPayment],
    ) -> Result<Vec<Result<(), VerifyError>>, VerifyError> {
        self.check_batch(payments)?;
        let calldata = Self::batch_calldata(payments);
        let returned = match self.chain.call(Some(self.address), MULTICALL3, calldata).await? {
            CallOutcome::Success(data) => data,
            // Every call may fail, so only the aggregator itself reverts (no code at the
            // address on this chain, or a value sent): no payment is judged by it.
            CallOutcome::Reverted(data) => {
                return Err(VerifyError::SimulationFailed {
                    reason: format!("aggregate3 reverted: {}", crate::token::decode_revert_reason(&data)),
                });
            }
        };
        let results = IMulticall3::aggregate3Call::abi_decode_returns(&returned)
            .map_err(|e| VerifyError::SimulationFailed { reason: format!("aggregate3 answer not decodable: {e}") })?;
        if results.len() != payments.len() {
            return Err(VerifyError::SimulationFailed {
                reason: format!("aggregate3 answered {} results for {} calls", results.len(), payments.len()),
            });
        }
        Ok(payments
            .iter()
            .zip(results)
            .map(|(p, r)| if r.success { Ok(()) } else { Err(revert_error(p, &r.returnData)) })
            .collect())
    }

    /// Signs one `aggregate3` transaction settling all of `payments` (each call allowed to
    /// fail alone), calls `claim` with its hash *before* broadcasting it, and broadcasts it
    /// only if the claim returns true: the same contract as [`Settler::submit_claimed`], for
    /// a batch. The claim must record the hash on every payment's entry or on none.
    ///
    /// The gas limit is the node's estimate of this very batch (`eth_estimateGas`, which runs
    /// it) plus the configured margin: a call that would fail in the estimate is cheaper than
    /// one that succeeds, so the caller should leave out what [`Settler::simulate_batch`]
    /// refused.
    pub async fn submit_batch(
        &self,
        payments: &[VerifiedPayment],
        claim: &mut dyn Claim,
    ) -> Result<Option<Submitted>, VerifyError> {
        self.check_batch(payments)?;
        let calldata = Self::batch_calldata(payments);
        let gas = match self.chain.estimate_gas(self.address, MULTICALL3, calldata.clone()).await? {
            CallOutcome::Success(gas) => gas,
            CallOutcome::Reverted(data) => {
                return Err(VerifyError::SimulationFailed {
                    reason: format!("aggregate3 reverted: {}", crate::token::decode_revert_reason(&data)),
                });
            }
        };
        let gas_limit = gas.saturating_add(gas.saturating_mul(self.config.gas_margin_percent) / 100);
        self.send_claimed(MULTICALL3, calldata, gas_limit, claim).await
    }

    /// One look at a batch's receipt: `None` while unmined; per payment, where it landed or
    /// that its call failed; `SettlementReverted` when the whole transaction reverted (then
    /// no payment of it moved).
    pub async fn check_batch_receipt(
        &self,
        payments: &[VerifiedPayment],
        tx_hash: B256,
    ) -> Result<Option<Vec<BatchItem>>, VerifyError> {
        let Some(receipt) = self.chain.receipt(tx_hash).await? else { return Ok(None) };
        if !receipt.success {
            return Err(VerifyError::SettlementReverted { tx_hash, block_number: receipt.block_number });
        }
        Ok(Some(
            payments
                .iter()
                .map(|p| match find_settled(&receipt, p) {
                    Some(settled) => BatchItem::Settled(settled),
                    None => BatchItem::Failed { tx_hash },
                })
                .collect(),
        ))
    }

    /// Polls for a batch's receipt like [`Settler::await_receipt_every`]: at once, then after
    /// 2 ms, doubling up to `poll_interval`, until the configured receipt timeout
    /// ([`BatchOutcome::Pending`]).
    pub async fn await_batch_receipt(
        &self,
        payments: &[VerifiedPayment],
        tx_hash: B256,
        poll_interval: Duration,
    ) -> Result<BatchOutcome, VerifyError> {
        let deadline = tokio::time::Instant::now() + self.config.receipt_timeout;
        let mut wait = FIRST_RECEIPT_POLL.min(poll_interval);
        loop {
            match self.check_batch_receipt(payments, tx_hash).await {
                Ok(Some(items)) => return Ok(BatchOutcome::Mined(items)),
                Ok(None) => {}
                // A flaky node while waiting is not a verdict on the transaction.
                Err(VerifyError::Rpc { .. } | VerifyError::RpcTimeout { .. }) => {}
                Err(e) => return Err(e),
            }
            if tokio::time::Instant::now() + wait > deadline {
                return Ok(BatchOutcome::Pending { tx_hash });
            }
            tokio::time::sleep(wait).await;
            wait = wait.saturating_mul(2).min(poll_interval);
        }
    }
}
