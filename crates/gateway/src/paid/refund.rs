//! Refunds owed in mode `before`: the payer paid before the upstream answered, so a failed
//! or broken delivery cannot be voided; it is recorded `refund_owed` once the money landed.
//!
//! Must not: record a refund for money that has not landed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate_metering::{EntryId, EntryState, Transition};

use crate::app::Gateway;
use crate::proxy;
use crate::settlement::REFUND_DUE;

/// `before` mode streams the body after settlement: when the upstream breaks off, times out
/// or overruns the response cap mid-body, the agent got a truncated answer it paid for, so
/// the entry is moved to `refund_owed` with the cause. An agent that goes away before the end
/// is not owed anything (the stream is dropped without a report).
pub(super) fn refund_if_broken(
    gw: &Arc<Gateway>,
    id: &EntryId,
    ended: tokio::sync::oneshot::Receiver<proxy::Delivery>,
) {
    let (gw, id) = (gw.clone(), id.clone());
    tokio::spawn(async move {
        match ended.await {
            Ok(proxy::Delivery::Complete) => {}
            Ok(proxy::Delivery::Broken { cause }) => {
                tracing::warn!(%id, cause, "paid body broke off mid-delivery; refund owed");
                refund_owed(&gw, &id, cause);
            }
            Err(_) => tracing::info!(%id, "the agent went away before the paid body ended"),
        }
    });
}

/// Longest a refund owed waits for its settlement to be recorded (a pending settlement is
/// chased, or followed by the sweep, until it lands).
const REFUND_WAIT_MIN: Duration = Duration::from_secs(60);

/// Records that the payer of a paid (`before`) call is owed a refund. Only a `settled` entry
/// can owe one: money that has not landed is not refunded. A `settling` entry (the settlement
/// is pending) is followed until it is `settled` (then owed) or ends uncharged (then nothing
/// is owed); this runs beside the response.
pub(super) fn refund_owed(gw: &Arc<Gateway>, id: &EntryId, reason: &'static str) {
    let (gw, id) = (gw.clone(), id.clone());
    tokio::spawn(async move {
        let deadline = Instant::now() + gw.config.settlement.receipt_timeout.saturating_mul(2).max(REFUND_WAIT_MIN);
        let t = Transition::RefundOwed { reason: reason.to_owned() };
        let mut noted = false;
        while Instant::now() < deadline {
            let now = gw.clock.now_unix_s();
            match gw.ledger.entries().transition_from(&id, EntryState::Settled, t.clone(), reason, None, now).await {
                Ok(true) => return,
                Ok(false) => match gw.ledger.entries().get(&id).await {
                    // Pending: noted durably first, so a restart (or this wait running out)
                    // cannot lose the refund; the sweep records it when the money lands.
                    Ok(Some(e)) if e.state == EntryState::Settling => {
                        if !noted {
                            let cause = format!("{REFUND_DUE}{reason}");
                            // A failed note is retried on the next round; the final failure is
                            // logged and counted below.
                            match gw.ledger.entries().note_settling(&id, &cause, gw.clock.now_unix_s()).await {
                                Ok(_) => noted = true,
                                Err(e) => tracing::warn!(%id, error = %e, "refund due not noted yet; retrying"),
                            }
                        }
                    }
                    Ok(Some(e)) if e.state == EntryState::Settled => continue,
                    Ok(Some(e)) if e.state == EntryState::RefundOwed => return,
                    Ok(Some(e)) => {
                        tracing::info!(%id, state = %e.state, reason, "no refund owed: the payment did not land");
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%id, error = %e, "refund owed: entry unreadable; retrying"),
                },
                Err(e) => tracing::warn!(%id, error = %e, "refund owed not recorded yet; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tracing::error!(%id, reason, "could not record a refund owed");
        gw.counters.left_to_recovery();
    });
}
