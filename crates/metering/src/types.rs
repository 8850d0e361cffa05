//! The ledger's value types: ids, amounts, states and their transition table, entries, events
//! and spend queries.
//!
//! Owns the Rust half of every money invariant (the schema holds the other half): the checked
//! amount newtype, the legal state transitions ([`EntryState::can_go_to`], mirrored by the
//! trigger in `migrations/*/0001_ledger.sql`) and the size limits of stored text.
//! Must not do IO, or name the error type: parsing and checking these values, which can
//! fail with [`crate::MeteringError`], is `checks`'s (so that `error`, which names ids and
//! states, and this file do not import each other).

use std::fmt;

use alloy_primitives::{Address, B256, U256};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest event cause stored (a short machine-readable word such as `upstream_5xx`).
pub const CAUSE_BYTES_MAX: usize = 64;
/// Longest event detail stored (JSON).
pub const DETAIL_BYTES_MAX: usize = 16 * 1024;
/// Longest opaque payment stored. The x402 header is capped at 16 KiB of base64, so its
/// decoded JSON, however re-encoded, fits.
pub const PAYMENT_BYTES_MAX: usize = 32 * 1024;
/// Longest provider, route or method name stored; also the limit of lease names and holders.
pub const LABEL_BYTES_MAX: usize = 256;
/// Longest request path stored.
pub const PATH_BYTES_MAX: usize = 8 * 1024;
/// Longest reason stored on an entry.
pub const REASON_BYTES_MAX: usize = 2 * 1024;

/// A ledger entry's id: 128 random bits as 32 lowercase hex characters. It doubles as the
/// public receipt id, so it reveals nothing (no time, no sequence).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(String);

impl EntryId {
    /// Length of the hex form.
    pub const LEN: usize = 32;

    /// An id from 32 lowercase hex characters already checked (`checks` parses and makes ids).
    pub(crate) fn from_checked_hex(hex: String) -> EntryId {
        EntryId(hex)
    }

    /// The 32 hex characters.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for EntryId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EntryId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EntryId, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A token amount in atomic units, `0 < v <= i64::MAX` so that it is stored exactly in a
/// signed 64-bit column (about 9.2e12 USDC at 6 decimals). Serialized as a decimal string,
/// like amounts on the x402 wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AtomicAmount(u64);

impl AtomicAmount {
    /// The largest amount the ledger stores.
    pub const MAX: u64 = i64::MAX.unsigned_abs();

    /// `None` for zero or for more than [`AtomicAmount::MAX`].
    pub fn new(value: u64) -> Option<AtomicAmount> {
        (value > 0 && value <= AtomicAmount::MAX).then_some(AtomicAmount(value))
    }

    /// From a protocol-edge `U256`; `None` when out of range.
    pub fn from_u256(value: U256) -> Option<AtomicAmount> {
        u64::try_from(value).ok().and_then(AtomicAmount::new)
    }

    /// The amount.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The amount as the database stores it (always fits, by construction).
    pub(crate) fn to_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for AtomicAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for AtomicAmount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AtomicAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AtomicAmount, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<u64>()
            .ok()
            .and_then(AtomicAmount::new)
            .ok_or_else(|| serde::de::Error::custom("amount must be a decimal string in 1..=i64::MAX"))
    }
}

/// Which ledger entries a read-only page holds: reserved in `[from_unix_s, to_unix_s)`,
/// optionally of one provider, one payer and one state (`refund_owed`: the refunds owed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// One provider.
    pub provider: Option<String>,
    /// One payer.
    pub payer: Option<Address>,
    /// From, inclusive.
    pub from_unix_s: u64,
    /// To, exclusive.
    pub to_unix_s: u64,
    /// One state.
    pub state: Option<EntryState>,
}

/// When a call is settled relative to forwarding it upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SettlementMode {
    /// Forward first; settle only if the upstream succeeded, otherwise void.
    After,
    /// Settle first, then forward; an upstream failure leaves a refund owed.
    Before,
    /// Forward, then settle later from the durable backlog (batched).
    Deferred,
}

impl SettlementMode {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            SettlementMode::After => "after",
            SettlementMode::Before => "before",
            SettlementMode::Deferred => "deferred",
        }
    }
}

impl fmt::Display for SettlementMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a ledger entry is in its life.
///
/// ```text
/// reserved ──▶ forwarded ──▶ settling ──▶ settled ──▶ refund_owed
///    │  │          │          │  ▲ │ │
///    │  └──────────┼─────────▶┘  └─┘ └──▶ settle_failed
///    └─────────────┴──────────────┴──────▶ voided
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// The spend is recorded; the call has not been forwarded (or its outcome is unknown).
    Reserved,
    /// The upstream answered.
    Forwarded,
    /// A settlement transaction was sent; its receipt is awaited.
    Settling,
    /// The transfer is on chain.
    Settled,
    /// The settlement transaction reverted or could not be sent for good.
    SettleFailed,
    /// No money moves: the upstream failed, or the authorization expired unsettled.
    Voided,
    /// Settled, but the upstream then failed (mode `before`): the payer is owed a refund.
    RefundOwed,
}

impl EntryState {
    /// Every state, in lifecycle order.
    pub const ALL: [EntryState; 7] = [
        EntryState::Reserved,
        EntryState::Forwarded,
        EntryState::Settling,
        EntryState::Settled,
        EntryState::SettleFailed,
        EntryState::Voided,
        EntryState::RefundOwed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryState::Reserved => "reserved",
            EntryState::Forwarded => "forwarded",
            EntryState::Settling => "settling",
            EntryState::Settled => "settled",
            EntryState::SettleFailed => "settle_failed",
            EntryState::Voided => "voided",
            EntryState::RefundOwed => "refund_owed",
        }
    }

    /// Whether the entry's outcome is decided. `Settled` counts as decided: the only move
    /// out of it is recording a refund debt (`RefundOwed`), not a settlement step.
    pub fn is_terminal(self) -> bool {
        matches!(self, EntryState::Settled | EntryState::SettleFailed | EntryState::Voided | EntryState::RefundOwed)
    }

    /// Whether the entry may move from this state to `to`. The schema's trigger holds the same
    /// table; `settling -> settling` records a replacement transaction.
    pub fn can_go_to(&self, to: EntryState) -> bool {
        use EntryState::*;
        matches!(
            (*self, to),
            (Reserved, Forwarded | Settling | Voided)
                | (Forwarded, Settling | SettleFailed | Voided)
                | (Settling, Settling | Settled | SettleFailed | Voided | RefundOwed)
                | (Settled, RefundOwed)
                // Only when the settlement's block was reorged away: back to be re-checked
                // (Entries::reopen_reorged).
                | (Settled, Settling)
        )
    }
}

impl fmt::Display for EntryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many entries are in each state (states with none are absent), for the metrics
/// exporter (`Spend::state_counts`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// (state, entries).
    pub by_state: Vec<(EntryState, u64)>,
    /// When the oldest deferred entry not yet settled was created (none: no backlog).
    pub oldest_unsettled_deferred_unix_s: Option<u64>,
}

/// A payment authorization to reserve: everything known when the verified call arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// EVM chain id.
    pub chain_id: u64,
    /// The token contract.
    pub asset: Address,
    /// The payer (`authorization.from`).
    pub payer: Address,
    /// The payee (`authorization.to`).
    pub pay_to: Address,
    /// The EIP-3009 authorization nonce.
    pub nonce: B256,
    /// The authorized value.
    pub amount: AtomicAmount,
    /// `authorization.validBefore` (must be at most `i64::MAX`).
    pub valid_before_unix_s: u64,
    /// The provider the call goes to.
    pub provider: String,
    /// The route name that priced the call.
    pub route: String,
    /// The HTTP method, as text (the ledger does not know HTTP).
    pub method: String,
    /// The request path.
    pub path: String,
    /// When the call is settled.
    pub mode: SettlementMode,
    /// Opaque JSON the gateway needs to settle later; stored, never parsed.
    pub payment: String,
    /// The price version the call was quoted (`price_versions.id`), when the route has one.
    pub price_version: Option<u64>,
    /// The credential that serves the call (`vault:NAME`, `env:NAME`, `file:PATH`), never
    /// its value.
    pub credential: Option<String>,
    /// The vault version of that credential.
    pub credential_version: Option<u64>,
    /// Now, from the caller's clock.
    pub now_unix_s: u64,
}

/// A state change, with the data the new state needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The upstream answered (with this status, if it got that far).
    Forwarded {
        /// The upstream's HTTP status code.
        upstream_status: Option<u16>,
    },
    /// A settlement transaction was sent; from `settling` it records a replacement.
    Settling {
        /// The transaction.
        tx_hash: B256,
    },
    /// The settlement transaction landed with its `Transfer` log.
    Settled {
        /// The transaction that landed (may be a replacement of the one first recorded).
        tx_hash: B256,
        /// Its block.
        block_number: u64,
        /// Its block's hash.
        block_hash: B256,
        /// The index of the token's `Transfer` log in the block.
        log_index: u64,
    },
    /// Settlement failed for good.
    SettleFailed {
        /// Why.
        reason: String,
    },
    /// No money moves.
    Voided {
        /// Why.
        reason: String,
    },
    /// Settled, then the upstream failed: the payer is owed a refund.
    RefundOwed {
        /// Why.
        reason: String,
    },
}

impl Transition {
    /// The state this transition leads to.
    pub fn to_state(&self) -> EntryState {
        match self {
            Transition::Forwarded { .. } => EntryState::Forwarded,
            Transition::Settling { .. } => EntryState::Settling,
            Transition::Settled { .. } => EntryState::Settled,
            Transition::SettleFailed { .. } => EntryState::SettleFailed,
            Transition::Voided { .. } => EntryState::Voided,
            Transition::RefundOwed { .. } => EntryState::RefundOwed,
        }
    }

    /// The transaction hash this transition records, if any.
    pub fn tx_hash(&self) -> Option<B256> {
        match self {
            Transition::Settling { tx_hash } | Transition::Settled { tx_hash, .. } => Some(*tx_hash),
            _ => None,
        }
    }
}

/// One ledger entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The entry (and receipt) id.
    pub id: EntryId,
    /// EVM chain id.
    pub chain_id: u64,
    /// The token contract.
    pub asset: Address,
    /// The payer.
    pub payer: Address,
    /// The payee.
    pub pay_to: Address,
    /// The authorization nonce.
    pub nonce: B256,
    /// The authorized value.
    pub amount: AtomicAmount,
    /// The authorization's `validBefore`.
    pub valid_before_unix_s: u64,
    /// The provider.
    pub provider: String,
    /// The route.
    pub route: String,
    /// The HTTP method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The settlement mode.
    pub mode: SettlementMode,
    /// The current state.
    pub state: EntryState,
    /// The settlement transaction (latest recorded).
    pub tx_hash: Option<B256>,
    /// The block the settlement landed in.
    pub block_number: Option<u64>,
    /// That block's hash.
    pub block_hash: Option<B256>,
    /// The `Transfer` log's index in that block.
    pub log_index: Option<u64>,
    /// The upstream's status code.
    pub upstream_status: Option<u16>,
    /// The reason of the last failure, void or refund.
    pub reason: Option<String>,
    /// The opaque payment JSON.
    pub payment: String,
    /// The price version the call was quoted.
    pub price_version: Option<u64>,
    /// The credential that served the call (never its value).
    pub credential: Option<String>,
    /// Its vault version.
    pub credential_version: Option<u64>,
    /// When the entry was reserved.
    pub created_unix_s: u64,
    /// When the entry last changed state.
    pub updated_unix_s: u64,
}

/// One appended state change of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Position in the ledger's event log (increasing).
    pub id: i64,
    /// The entry.
    pub entry_id: EntryId,
    /// The previous state; `None` for the reservation.
    pub from_state: Option<EntryState>,
    /// The new state.
    pub to_state: EntryState,
    /// A short machine-readable cause (`upstream_5xx`, `recovery_expired`, ...).
    pub cause: String,
    /// Caller-supplied JSON detail.
    pub detail: Option<String>,
    /// The transaction hash this change recorded (`settling`, `settled`), so that replaced
    /// transactions stay on record after the entry's `tx_hash` moves on.
    pub tx_hash: Option<B256>,
    /// When.
    pub at_unix_s: u64,
}

/// Which of a payer's entries to total in `Spend::totals`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendQuery {
    /// EVM chain id (amounts of different chains or tokens are never added together).
    pub chain_id: u64,
    /// The token contract.
    pub asset: Address,
    /// The payer.
    pub payer: Address,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only this route.
    pub route: Option<String>,
    /// Only entries created at or after this time.
    pub created_from_unix_s: Option<u64>,
    /// Only entries created before this time.
    pub created_before_unix_s: Option<u64>,
}

/// A count of entries and the sum of their amounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Number of entries.
    pub count: u64,
    /// Sum of their amounts, in atomic units.
    pub amount: u128,
}

/// A payer's spend, by outcome. Voided and failed entries moved no money and are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SpendTotals {
    /// Entries in `settled`: paid.
    pub settled: Tally,
    /// Entries in `reserved`, `forwarded` or `settling`: may still be paid.
    pub pending: Tally,
    /// Entries in `refund_owed`: paid, then owed back.
    pub refund_owed: Tally,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::check_cause;

    #[test]
    fn amount_bounds() {
        // Goal: zero and anything above i64::MAX are refused; the edges are accepted.
        assert_eq!(AtomicAmount::new(0), None);
        assert_eq!(AtomicAmount::new(1).map(AtomicAmount::get), Some(1));
        assert_eq!(AtomicAmount::new(AtomicAmount::MAX).map(AtomicAmount::get), Some(AtomicAmount::MAX));
        assert_eq!(AtomicAmount::new(AtomicAmount::MAX + 1), None);
        assert_eq!(AtomicAmount::from_u256(U256::from(u64::MAX)), None);
        assert_eq!(AtomicAmount::from_u256(U256::from(10_000u64)).map(AtomicAmount::get), Some(10_000));
    }

    #[test]
    fn names_round_trip() {
        // Goal: every state and mode parses back from its stored name; unknown names are refused.
        for state in EntryState::ALL {
            assert_eq!(state.as_str().parse::<EntryState>().unwrap(), state);
        }
        for mode in [SettlementMode::After, SettlementMode::Before, SettlementMode::Deferred] {
            assert_eq!(mode.as_str().parse::<SettlementMode>().unwrap(), mode);
        }
        assert!("Settled".parse::<EntryState>().is_err());
        assert!("later".parse::<SettlementMode>().is_err());
    }

    #[test]
    fn entry_id_validation() {
        // Goal: entry ids are exactly 32 lowercase hex characters, and random ids satisfy that.
        let id = EntryId::random().unwrap();
        assert_eq!(id.as_str().parse::<EntryId>().unwrap(), id);
        assert!("0123456789ABCDEF0123456789abcdef".parse::<EntryId>().is_err());
        assert!("0123456789abcdef".parse::<EntryId>().is_err());
        assert!("0123456789abcdef0123456789abcdeg".parse::<EntryId>().is_err());
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<EntryId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<EntryId>("\"nope\"").is_err());
    }

    #[test]
    fn terminal_states_lead_nowhere_but_refund() {
        // Goal: terminal states allow no transition except settled -> refund_owed, and settled
        // -> settling when a reorg removed the settlement's block.
        for from in EntryState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in EntryState::ALL {
                let allowed =
                    from == EntryState::Settled && matches!(to, EntryState::RefundOwed | EntryState::Settling);
                assert_eq!(from.can_go_to(to), allowed, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn cause_validation() {
        // Goal: causes are short machine-readable words.
        assert!(check_cause("upstream_5xx").is_ok());
        assert!(check_cause("").is_err());
        assert!(check_cause("Upstream failed").is_err());
        assert!(check_cause(&"a".repeat(65)).is_err());
    }
}
