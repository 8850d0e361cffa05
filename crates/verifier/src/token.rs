//! The token's ABI as far as tollgate uses it, and the mapping of its revert strings to
//! stable errors.

use alloy_primitives::{B256, Bytes, b256};
use alloy_sol_types::{SolError, sol};

use crate::VerifyError;

sol! {
    /// FiatToken v2.2 (USDC) and our test token expose the same EIP-3009 surface.
    interface IEip3009 {
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function balanceOf(address account) external view returns (uint256);
        function name() external view returns (string);
        function version() external view returns (string);
        event Transfer(address indexed from, address indexed to, uint256 value);
        event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    }

    /// ERC-1271 smart-wallet signature check.
    interface IERC1271 {
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4 magicValue);
    }
}

/// `Transfer(address,address,uint256)` topic.
pub const TRANSFER_TOPIC: B256 = b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");
/// `AuthorizationUsed(address,bytes32)` topic.
pub const AUTHORIZATION_USED_TOPIC: B256 = b256!("98de503528ee59b575ef0c0a2576a82497bfc029a5685b209e9ec333479b10a5");
/// `AuthorizationCanceled(address,bytes32)` topic: the payer cancelled the authorization (the
/// token then refuses it as used, with no transfer).
pub const AUTHORIZATION_CANCELED_TOPIC: B256 =
    b256!("1cdd46ff242716cdaa72d159d339a485b3438398348d68f09d7c8c0a59353d81");
/// What `isValidSignature` returns for a good signature.
pub(crate) const ERC1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];

/// A readable description of EVM revert data: the `Error(string)` message, a panic code, or
/// the custom error's selector.
pub fn decode_revert_reason(data: &Bytes) -> String {
    if data.is_empty() {
        return "reverted without a reason".to_owned();
    }
    if let Ok(err) = alloy_sol_types::Revert::abi_decode(data) {
        return err.reason;
    }
    if let Ok(panic) = alloy_sol_types::Panic::abi_decode(data) {
        return format!("panic {}", panic.code);
    }
    let selector: String = data.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("custom error 0x{selector}")
}

/// Maps a token revert to the stable error it means. `None` means "a reason we do not
/// classify", which callers report as a failed simulation after further diagnosis.
pub(crate) fn classify_revert(reason: &str, ctx: &RevertContext) -> Option<VerifyError> {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("authorization is used or canceled") {
        Some(VerifyError::NonceAlreadyUsed { from: ctx.from, nonce: ctx.nonce })
    } else if lower.contains("invalid signature") {
        Some(VerifyError::InvalidSignature { from: ctx.from })
    } else if lower.contains("authorization is expired") {
        Some(VerifyError::Expired { valid_before_unix_s: ctx.valid_before_unix_s, now_unix_s: ctx.now_unix_s })
    } else if lower.contains("authorization is not yet valid") {
        Some(VerifyError::NotYetValid { valid_after_unix_s: ctx.valid_after_unix_s, now_unix_s: ctx.now_unix_s })
    } else if lower.contains("exceeds balance") {
        Some(VerifyError::InsufficientBalance { balance: alloy_primitives::U256::ZERO, required: ctx.value })
    } else {
        None
    }
}

/// The payment fields a revert classification reports.
pub(crate) struct RevertContext {
    pub from: alloy_primitives::Address,
    pub nonce: B256,
    pub value: alloy_primitives::U256,
    pub valid_after_unix_s: u64,
    pub valid_before_unix_s: u64,
    pub now_unix_s: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::keccak256;

    // Goal: event topics are the keccak of their signatures.
    #[test]
    fn topics_match_signatures() {
        assert_eq!(keccak256("Transfer(address,address,uint256)"), TRANSFER_TOPIC);
        assert_eq!(keccak256("AuthorizationUsed(address,bytes32)"), AUTHORIZATION_USED_TOPIC);
        assert_eq!(keccak256("AuthorizationCanceled(address,bytes32)"), AUTHORIZATION_CANCELED_TOPIC);
    }

    // Goal: Error(string), empty and custom revert data all decode to something readable.
    #[test]
    fn decodes_revert_data() {
        let data: Bytes = alloy_sol_types::Revert::from("FiatTokenV2: invalid signature").abi_encode().into();
        assert_eq!(decode_revert_reason(&data), "FiatTokenV2: invalid signature");
        assert_eq!(decode_revert_reason(&Bytes::new()), "reverted without a reason");
        assert_eq!(decode_revert_reason(&Bytes::from_static(&[0xde, 0xad, 0xbe, 0xef, 1])), "custom error 0xdeadbeef");
    }
}
