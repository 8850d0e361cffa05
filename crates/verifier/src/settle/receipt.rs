//! Receipts: waiting for a settlement's receipt (fast first, then less often), and reading
//! where a payment landed in one, by the token's logs that name it exactly.
//!
//! Must not: send anything, or take a missing receipt for a verdict (it is "not yet").

use std::sync::PoisonError;
use std::time::Duration;

use alloy_primitives::B256;

use super::{FIRST_RECEIPT_POLL, SettleOutcome, Settled, Settler};
use crate::VerifyError;
use crate::token::TRANSFER_TOPIC;
use crate::verify::VerifiedPayment;

impl Settler {
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
            return Err(VerifyError::SettlementReverted { tx_hash, block_number: receipt.block_number });
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
pub(super) fn find_settled(receipt: &crate::chain::Receipt, payment: &VerifiedPayment) -> Option<Settled> {
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
