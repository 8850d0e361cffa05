//! Verification and settlement of x402 `exact` payments: EIP-3009
//! `transferWithAuthorization` on EVM chains.
//!
//! Owns: the EIP-712 digest, signature classification and ECDSA recovery (libsecp256k1),
//! ERC-1271 / ERC-6492 smart-wallet checks, the validity window against an injected clock,
//! on-chain pre-checks (nonce state, balance, simulation), and settlement from a relayer
//! key (nonce management, receipt polling, `Transfer` log check).
//!
//! Must not: know HTTP or status codes (errors carry a [`Fault`] and a stable reason code;
//! the gateway maps them), touch the database (the caller records outcomes), or read the
//! environment (configuration arrives by value). The chain is reached only through the
//! [`Chain`] trait, whose alloy implementation puts a timeout on every RPC call.

mod chain;
mod clock;
mod eip712;
mod error;
mod nonces;
mod settle;
mod signature;
mod token;
mod verify;

pub use chain::{AlloyChain, CallOutcome, Chain, Fees, LogQuery, Receipt, ReceiptLog, RpcCount, RpcStats, SendError};
pub use clock::{Clock, FixedClock, SystemClock};
pub use eip712::{
    CANCEL_AUTHORIZATION_TYPEHASH, DOMAIN_TYPEHASH, TRANSFER_WITH_AUTHORIZATION_TYPEHASH, TokenDomain,
    TransferAuthorization, signing_hash,
};
pub use error::{Fault, VerifyError};
pub use settle::{
    AlwaysClaim, BATCH_PAYMENTS_MAX, BatchItem, BatchOutcome, COLD_SLOT_GAS, Claim, GasPlan, MULTICALL3, NonceClosure,
    Rebroadcast, SettleConfig, SettleOutcome, Settled, Settler, Submitted,
};
pub use signature::{ERC6492_MAGIC, EcdsaSignature, SignatureShape};
pub use token::{AUTHORIZATION_CANCELED_TOPIC, AUTHORIZATION_USED_TOPIC, TRANSFER_TOPIC, decode_revert_reason};
pub use verify::{
    OfflineChecked, PendingSignature, SignatureCheck, VerifiedPayment, Verifier, VerifierConfig, check_offline,
};
