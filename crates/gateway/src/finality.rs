//! Finality of a settlement as agents see it (`GET /receipts/{id}`): how many confirmations
//! the block the ledger recorded has, and whether that is `final` at the network's
//! `finality_confirmations`. The head is the node's, read through the verifier's `Chain` and
//! kept at most [`HEAD_TTL`] per network, so that agents polling `/receipts` cost the node at
//! most one `eth_blockNumber` a second per network, however many of them poll.
//!
//! Must not: change a ledger entry, trust a stored head, or look for receipts (an entry not
//! yet recorded `settled` is `pending` here, whatever the chain may already hold: the
//! workers and the sweep record it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tollgate_metering::{Entry, EntryState};
use tollgate_verifier::Chain;

/// How long a head read from the node is reused.
pub const HEAD_TTL: Duration = Duration::from_secs(1);

/// The last head read per network, with when it was read.
#[derive(Debug, Default)]
pub struct Heads {
    /// One lock per chain: a reader that finds the head stale reads it while the others wait
    /// for that one read instead of each asking the node.
    per_chain: HashMap<u64, Mutex<Option<(Instant, u64)>>>,
}

impl Heads {
    /// A cache for these chains.
    pub fn new(chain_ids: impl IntoIterator<Item = u64>) -> Self {
        Heads { per_chain: chain_ids.into_iter().map(|id| (id, Mutex::new(None))).collect() }
    }

    /// The head of `chain` (its latest block number), at most [`HEAD_TTL`] old; `None` for a
    /// chain not configured or when the node did not answer (within its RPC timeout).
    pub async fn head(&self, chain: &Arc<dyn Chain>) -> Option<u64> {
        let slot = self.per_chain.get(&chain.chain_id())?;
        let mut last = slot.lock().await;
        if let Some((at, number)) = *last
            && at.elapsed() < HEAD_TTL
        {
            return Some(number);
        }
        match chain.block_number().await {
            Ok(number) => {
                *last = Some((Instant::now(), number));
                Some(number)
            }
            Err(e) => {
                tracing::debug!(chain_id = chain.chain_id(), error = %e, "head not read for /receipts");
                None
            }
        }
    }
}

/// Where a settlement stands, as `/receipts` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finality {
    /// No block recorded yet, and the entry may still settle (reserved, forwarded, settling).
    Pending,
    /// In a block with `confirmations` (its own included; `None` when the head could not be
    /// read), fewer than the network's depth.
    Included {
        /// Confirmations, when known.
        confirmations: Option<u64>,
    },
    /// In a block with at least the network's `finality_confirmations`.
    Final {
        /// Confirmations.
        confirmations: u64,
    },
    /// Nothing will settle: voided or failed.
    None,
}

impl Finality {
    /// Of `entry`, given the head (if read) and the network's depth.
    pub fn of(entry: &Entry, head: Option<u64>, depth: u64) -> Finality {
        match (entry.state, entry.block_number) {
            (EntryState::Voided | EntryState::SettleFailed, _) => Finality::None,
            (_, None) => Finality::Pending,
            (_, Some(block)) => match head {
                None => Finality::Included { confirmations: None },
                Some(head) => {
                    let n = confirmations(block, head);
                    if n >= depth {
                        Finality::Final { confirmations: n }
                    } else {
                        Finality::Included { confirmations: Some(n) }
                    }
                }
            },
        }
    }

    /// The `finality` field: `pending`, `included`, `final`, or none.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Finality::Pending => Some("pending"),
            Finality::Included { .. } => Some("included"),
            Finality::Final { .. } => Some("final"),
            Finality::None => None,
        }
    }

    /// The `confirmations` field.
    pub fn confirmations(self) -> Option<u64> {
        match self {
            Finality::Included { confirmations } => confirmations,
            Finality::Final { confirmations } => Some(confirmations),
            Finality::Pending | Finality::None => None,
        }
    }
}

/// Confirmations of a block at `head`, its own included. A node behind the recorded block
/// (a lagging RPC replica) still counts 1: the receipt was seen in that block.
pub fn confirmations(block: u64, head: u64) -> u64 {
    head.saturating_sub(block).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: confirmations count the block itself, and a head behind the block still counts 1.
    #[test]
    fn confirmations_include_the_block_itself() {
        assert_eq!(confirmations(100, 100), 1);
        assert_eq!(confirmations(100, 109), 10);
        assert_eq!(confirmations(100, 98), 1);
    }
}
