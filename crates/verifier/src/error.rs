//! `VerifyError`: every way a payment can fail verification or settlement.
//!
//! Each variant maps to a stable reason code (the x402 reference codes where one exists)
//! and to whose fault it is. This crate does not know HTTP: the gateway turns
//! [`Fault`] into a status code in its one error-mapping place.

use alloy_primitives::{Address, B256, U256};

/// Who caused a failure, which decides how the caller reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The payment itself is bad: the client must sign a different one.
    Client,
    /// The chain (RPC node) failed or was too slow; the same payment may succeed later.
    Chain,
    /// Our own configuration or relayer is at fault.
    Ours,
}

/// Why a payment did not verify or settle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The payment's scheme is not `exact`.
    #[error("unsupported scheme `{scheme}`")]
    UnsupportedScheme {
        /// What the client named.
        scheme: String,
    },
    /// The offer lacks the EIP-712 domain `name`/`version` in `extra`.
    #[error("offer has no EIP-712 domain name/version in `extra`")]
    MissingEip712Domain,
    /// The payment is for a different network than the offer.
    #[error("payment is for chain {paid_chain_id}, offer is for chain {offered_chain_id}")]
    NetworkMismatch {
        /// Chain of the offer.
        offered_chain_id: u64,
        /// Chain the payment names.
        paid_chain_id: u64,
    },
    /// No RPC endpoint is configured for the offer's chain.
    #[error("no chain configured for chain id {chain_id}")]
    ChainNotConfigured {
        /// The chain id asked for.
        chain_id: u64,
    },
    /// The signature has a length no wallet kind uses (and `from` is not a contract).
    #[error("signature is {len_bytes} bytes; a plain wallet signs 65")]
    SignatureLength {
        /// Bytes received.
        len_bytes: usize,
    },
    /// ECDSA `s` is in the upper half of the curve order; the token rejects it.
    #[error("signature s value is not canonical (high s)")]
    SignatureHighS,
    /// ECDSA `v` is not 27, 28, 0 or 1.
    #[error("signature v value {v} is invalid")]
    SignatureBadV {
        /// The byte received.
        v: u8,
    },
    /// The signature does not come from `authorization.from` (ECDSA recovery gave another
    /// address, or the smart wallet's `isValidSignature` said no).
    #[error("signature is not from {from}")]
    InvalidSignature {
        /// The claimed payer.
        from: Address,
    },
    /// An ERC-6492 signature for a wallet that is not deployed yet.
    #[error("ERC-6492 signature for undeployed wallet {wallet} (factory {factory}) is not supported")]
    UndeployedSmartWallet {
        /// The counterfactual wallet.
        wallet: Address,
        /// The factory the signature names.
        factory: Address,
    },
    /// `authorization.to` is not the offer's `payTo`.
    #[error("authorization pays {paid}, offer requires {expected}")]
    RecipientMismatch {
        /// Offer's payee.
        expected: Address,
        /// Authorization's payee.
        paid: Address,
    },
    /// `validBefore` is too close (within the block-time buffer) or past.
    #[error("authorization valid before {valid_before_unix_s}, now is {now_unix_s}")]
    Expired {
        /// The authorization's `validBefore` (saturated to u64).
        valid_before_unix_s: u64,
        /// The verifier's clock.
        now_unix_s: u64,
    },
    /// `validAfter` is in the future.
    #[error("authorization valid after {valid_after_unix_s}, now is {now_unix_s}")]
    NotYetValid {
        /// The authorization's `validAfter` (saturated to u64).
        valid_after_unix_s: u64,
        /// The verifier's clock.
        now_unix_s: u64,
    },
    /// `validBefore` is further ahead than the configured policy cap.
    #[error("authorization valid until {valid_before_unix_s}, later than the {window_max_s} s allowed")]
    ValidityTooLong {
        /// The authorization's `validBefore` (saturated to u64).
        valid_before_unix_s: u64,
        /// The cap, in seconds from now.
        window_max_s: u64,
    },
    /// `authorization.value` is not exactly the offer's amount.
    #[error("authorization value {paid} differs from the price {expected}")]
    ValueMismatch {
        /// The price.
        expected: U256,
        /// What was signed.
        paid: U256,
    },
    /// The asset address has no contract code on the chain.
    #[error("asset {asset} has no code on chain {chain_id}")]
    AssetNotContract {
        /// The token address.
        asset: Address,
        /// The chain.
        chain_id: u64,
    },
    /// The authorization nonce was used or cancelled on chain.
    #[error("authorization nonce {nonce} of {from} is already used or cancelled")]
    NonceAlreadyUsed {
        /// The payer.
        from: Address,
        /// The nonce.
        nonce: B256,
    },
    /// The payer's token balance is below the amount.
    #[error("balance {balance} is below the amount {required}")]
    InsufficientBalance {
        /// The payer's balance.
        balance: U256,
        /// The amount.
        required: U256,
    },
    /// The token's `name()` differs from the offer's EIP-712 domain name.
    #[error("token name is `{actual}`, offer says `{expected}`")]
    TokenNameMismatch {
        /// From the offer.
        expected: String,
        /// From the token.
        actual: String,
    },
    /// The token's `version()` differs from the offer's EIP-712 domain version.
    #[error("token version is `{actual}`, offer says `{expected}`")]
    TokenVersionMismatch {
        /// From the offer.
        expected: String,
        /// From the token.
        actual: String,
    },
    /// The token refused the transfer for another reason (paused, blacklisted, ...).
    #[error("simulated transfer reverted: {reason}")]
    SimulationFailed {
        /// The revert string, or a description of the revert data.
        reason: String,
    },
    /// The chain node returned an error or could not be reached.
    #[error("RPC {method} failed: {reason}")]
    Rpc {
        /// JSON-RPC method.
        method: &'static str,
        /// The transport's description (no secrets: RPC URLs are not included).
        reason: String,
    },
    /// A chain call took longer than its timeout.
    #[error("RPC {method} timed out after {timeout_ms} ms")]
    RpcTimeout {
        /// JSON-RPC method.
        method: &'static str,
        /// The limit.
        timeout_ms: u64,
    },
    /// The settlement transaction could not be sent (after nonce recovery retries).
    #[error("settlement transaction not sent: {reason}")]
    SettlementNotSent {
        /// Why.
        reason: String,
    },
    /// The settlement transaction was mined but reverted.
    #[error("settlement transaction {tx_hash} reverted in block {block_number}")]
    SettlementReverted {
        /// The transaction.
        tx_hash: B256,
        /// The block it was mined (and reverted) in: what became of the authorization is read
        /// as of that block, never from a node that may be behind it.
        block_number: u64,
    },
    /// The settlement transaction succeeded but carries no matching `Transfer` log.
    #[error("settlement transaction {tx_hash} has no Transfer of {value} from {from} to {to}")]
    TransferLogMissing {
        /// The transaction.
        tx_hash: B256,
        /// Expected sender.
        from: Address,
        /// Expected payee.
        to: Address,
        /// Expected amount.
        value: U256,
    },
}

impl VerifyError {
    /// The stable, machine-readable reason code (x402 reference names where they exist).
    pub fn reason_code(&self) -> &'static str {
        use VerifyError::*;
        match self {
            UnsupportedScheme { .. } => "invalid_exact_evm_scheme",
            MissingEip712Domain => "invalid_exact_evm_missing_eip712_domain",
            NetworkMismatch { .. } | ChainNotConfigured { .. } => "invalid_exact_evm_network_mismatch",
            SignatureLength { .. } | SignatureHighS | SignatureBadV { .. } | InvalidSignature { .. } => {
                "invalid_exact_evm_signature"
            }
            UndeployedSmartWallet { .. } => "invalid_exact_evm_undeployed_smart_wallet",
            RecipientMismatch { .. } => "invalid_exact_evm_recipient_mismatch",
            Expired { .. } | ValidityTooLong { .. } => "invalid_exact_evm_payload_authorization_valid_before",
            NotYetValid { .. } => "invalid_exact_evm_payload_authorization_valid_after",
            ValueMismatch { .. } => "invalid_exact_evm_payload_authorization_value_mismatch",
            AssetNotContract { .. } => "invalid_exact_evm_asset_not_contract",
            NonceAlreadyUsed { .. } => "invalid_exact_evm_nonce_already_used",
            InsufficientBalance { .. } => "invalid_exact_evm_insufficient_balance",
            TokenNameMismatch { .. } => "invalid_exact_evm_token_name_mismatch",
            TokenVersionMismatch { .. } => "invalid_exact_evm_token_version_mismatch",
            SimulationFailed { .. } => "invalid_exact_evm_transaction_simulation_failed",
            Rpc { .. } | RpcTimeout { .. } => "chain_unavailable",
            SettlementNotSent { .. } | SettlementReverted { .. } | TransferLogMissing { .. } => {
                "unexpected_settle_error"
            }
        }
    }

    /// Whose fault the failure is.
    pub fn fault(&self) -> Fault {
        use VerifyError::*;
        match self {
            Rpc { .. } | RpcTimeout { .. } => Fault::Chain,
            // The offer is ours: a missing domain, an asset without code or a wrong domain
            // name means our configuration is wrong, not the client's payment.
            MissingEip712Domain
            | ChainNotConfigured { .. }
            | AssetNotContract { .. }
            | TokenNameMismatch { .. }
            | TokenVersionMismatch { .. }
            | SettlementNotSent { .. }
            | SettlementReverted { .. }
            | TransferLogMissing { .. } => Fault::Ours,
            _ => Fault::Client,
        }
    }
}
