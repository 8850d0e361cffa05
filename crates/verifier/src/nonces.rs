//! The relayer's account nonces, handed out to settlements that sign, claim and send at the
//! same time (a pipelined relayer): no lock is held across any I/O.
//!
//! Owns: which nonce the next settlement uses, which nonces are between "assigned" and "its
//! send has finished", and when the count may be read again from the node. Rules:
//! - a nonce is assigned once; the lowest never-assigned one is next;
//! - the count is re-read from the node only when it is unknown (start, or after the node
//!   said a nonce was taken) **and no assigned nonce is still in flight**: a read while
//!   others are signing or sending would hand out their nonces again, and a second
//!   transaction with a nonce of a pending one can replace it in the node's pool;
//! - a nonce given back unused is re-used only when nothing above it was assigned;
//!   otherwise it is a gap that stalls every later transaction at the node, and the caller
//!   must fill it (the settler sends a zero-value transfer to itself);
//! - a count read from the node at or below the highest nonce this process sent is a gap
//!   (the node lost that transaction; ours above it wait behind it), filled before any nonce
//!   is handed out, never a count to hand out from.
//!
//! Must not: do I/O, or wait while holding its lock (callers wait on [`NonceBook::changed`]).

use std::collections::BTreeSet;

/// What became of an assigned nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// A transaction with it reached the node (or may have): it is used.
    Used,
    /// The node said another transaction holds it: the count must be read again.
    Taken,
    /// Nothing was sent with it.
    Unused,
}

/// What the caller must do after [`NonceBook::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterRelease {
    /// Nothing.
    Done,
    /// The nonce was given back unused while a higher one was assigned: fill it, then call
    /// [`NonceBook::release`] again with the fill's outcome.
    Fill(u64),
}

/// What [`NonceBook::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Use this nonce; release it when its send has finished.
    Nonce(u64),
    /// The count is unknown and nothing is in flight: read it from the node and
    /// [`NonceBook::set_next`] it, then take again.
    Refresh,
    /// The count is unknown and sends are in flight: wait for a release, then take again.
    Wait,
}

/// What [`NonceBook::set_next`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    /// The count is set (or was set meanwhile by someone else): take again.
    Set,
    /// The node's pending count stops below a nonce this process sent: that nonce is a gap
    /// (its transaction never reached the node, or was dropped), and every later transaction
    /// of ours waits behind it. It is held: fill it, release it, then read the count again.
    Gap(u64),
}

/// The nonce book of one relayer key in one process.
#[derive(Debug, Default)]
pub(crate) struct NonceBook {
    /// The lowest nonce never assigned; `None` while unknown.
    next: Option<u64>,
    /// Assigned, and their sends not finished.
    in_flight: BTreeSet<u64>,
    /// The highest nonce whose transaction reached the node (or may have).
    used_high: Option<u64>,
}

impl NonceBook {
    /// The next nonce, or what to do first.
    pub(crate) fn take(&mut self) -> Take {
        match self.next {
            Some(n) => {
                self.next = Some(n.saturating_add(1));
                self.in_flight.insert(n);
                Take::Nonce(n)
            }
            None if self.in_flight.is_empty() => Take::Refresh,
            None => Take::Wait,
        }
    }

    /// Sets the count read from the node, unless another caller did meanwhile or sends
    /// started (then it may be stale already). A count at or below a nonce this process sent
    /// is a gap, never a count to hand out from: nonces above it are held by our own queued
    /// transactions, and a second transaction with one of them could replace it in the pool.
    pub(crate) fn set_next(&mut self, pending_nonce: u64) -> Count {
        if self.next.is_some() || !self.in_flight.is_empty() {
            return Count::Set;
        }
        if self.used_high.is_some_and(|high| pending_nonce <= high) {
            self.in_flight.insert(pending_nonce);
            return Count::Gap(pending_nonce);
        }
        self.next = Some(pending_nonce);
        Count::Set
    }

    /// Forgets the count: the next [`NonceBook::take`] reads it again once nothing is in
    /// flight.
    pub(crate) fn forget(&mut self) {
        self.next = None;
    }

    /// Whether the count must be read from the node before a nonce can be taken.
    pub(crate) fn needs_refresh(&self) -> bool {
        self.next.is_none() && self.in_flight.is_empty()
    }

    /// Whether nothing is assigned and in flight.
    pub(crate) fn idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The lowest never-assigned nonce, when known.
    pub(crate) fn next(&self) -> Option<u64> {
        self.next
    }

    /// Marks `nonce` in flight outside [`NonceBook::take`] (closing a nonce the sweep found
    /// open: the book must not hand it out meanwhile, nor re-read the count).
    pub(crate) fn hold(&mut self, nonce: u64) {
        self.in_flight.insert(nonce);
    }

    /// Ends `nonce`'s flight with `how`.
    pub(crate) fn release(&mut self, nonce: u64, how: Release) -> AfterRelease {
        self.in_flight.remove(&nonce);
        match how {
            Release::Used => {
                self.used_high = Some(self.used_high.map_or(nonce, |high| high.max(nonce)));
                AfterRelease::Done
            }
            Release::Taken => {
                self.next = None;
                AfterRelease::Done
            }
            Release::Unused => match self.next {
                // Nothing above it was assigned: the next settlement uses it.
                Some(next) if next == nonce.saturating_add(1) => {
                    self.next = Some(nonce);
                    AfterRelease::Done
                }
                // Unknown count, nothing of ours above it sent: the node's count will not
                // include it and the next settlement takes it.
                None if self.used_high.is_none_or(|high| nonce > high) => AfterRelease::Done,
                None => {
                    self.in_flight.insert(nonce);
                    AfterRelease::Fill(nonce)
                }
                Some(_) => {
                    self.in_flight.insert(nonce);
                    AfterRelease::Fill(nonce)
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Goal: nonces are handed out once each, in order, from the node's count; the count is
    // re-read only when nothing is in flight.
    #[test]
    fn assigns_in_order_and_refreshes_only_when_idle() {
        let mut b = NonceBook::default();
        assert_eq!(b.take(), Take::Refresh);
        assert_eq!(b.set_next(7), Count::Set);
        assert_eq!(b.take(), Take::Nonce(7));
        assert_eq!(b.take(), Take::Nonce(8));
        assert_eq!(b.release(7, Release::Taken), AfterRelease::Done);
        // 8 is still in flight: no re-read yet, and a late count is ignored.
        assert_eq!(b.take(), Take::Wait);
        assert_eq!(b.set_next(3), Count::Set, "ignored while 8 is in flight");
        assert_eq!(b.take(), Take::Wait);
        assert_eq!(b.release(8, Release::Used), AfterRelease::Done);
        assert_eq!(b.take(), Take::Refresh);
        assert_eq!(b.set_next(9), Count::Set);
        assert_eq!(b.take(), Take::Nonce(9));
    }

    // Goal: an unused nonce is re-used when it was the last assigned, and must be filled
    // when a higher one was assigned (a gap would stall every later transaction).
    #[test]
    fn unused_nonce_is_reused_or_filled() {
        let mut b = NonceBook::default();
        assert_eq!(b.set_next(0), Count::Set);
        assert_eq!(b.take(), Take::Nonce(0));
        assert_eq!(b.release(0, Release::Unused), AfterRelease::Done);
        assert_eq!(b.take(), Take::Nonce(0));
        assert_eq!(b.take(), Take::Nonce(1));
        assert_eq!(b.release(1, Release::Used), AfterRelease::Done);
        assert_eq!(b.release(0, Release::Unused), AfterRelease::Fill(0));
        // Held while it is filled: no re-read of the count meanwhile.
        assert!(!b.idle());
        assert_eq!(b.release(0, Release::Used), AfterRelease::Done);
        assert!(b.idle());
        assert_eq!(b.take(), Take::Nonce(2));
    }

    // Goal: after the count is forgotten, a node count at or below a nonce we sent is a gap
    // to fill, never a count to hand out from (its successors are our own queued
    // transactions); a nonce given back below a sent one is filled even when the count is
    // unknown.
    #[test]
    fn a_low_node_count_is_a_gap_not_a_count() {
        let mut b = NonceBook::default();
        assert_eq!(b.set_next(10), Count::Set);
        for n in 10..14 {
            assert_eq!(b.take(), Take::Nonce(n));
        }
        for n in 10..14 {
            assert_eq!(b.release(n, Release::Used), AfterRelease::Done);
        }
        b.forget();
        // The node lost 11: its pending count stops there.
        assert_eq!(b.take(), Take::Refresh);
        assert_eq!(b.set_next(11), Count::Gap(11));
        assert_eq!(b.take(), Take::Wait, "held while filled");
        assert_eq!(b.release(11, Release::Used), AfterRelease::Done);
        assert_eq!(b.take(), Take::Refresh);
        assert_eq!(b.set_next(14), Count::Set);
        assert_eq!(b.take(), Take::Nonce(14));
        // Unknown count and a nonce given back below the highest sent: filled.
        b.forget();
        assert_eq!(b.release(14, Release::Unused), AfterRelease::Done, "nothing of ours above 14 was sent");
        assert_eq!(b.release(12, Release::Unused), AfterRelease::Fill(12));
    }
}
