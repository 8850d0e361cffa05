// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title SmartWallet1271
/// @notice A minimal ERC-1271 smart-contract wallet for tests: a signature is valid iff it is
/// a canonical 65-byte ECDSA signature (r ‖ s ‖ v, low s, v in {27, 28}) by `owner` over the
/// raw hash it is asked about (no prefix, no re-hashing). It never reverts in
/// `isValidSignature`; anything else returns 0xffffffff.
///
/// The owner can make the wallet call anything (`execute`), e.g. to move tokens it holds.
contract SmartWallet1271 {
    /// bytes4(keccak256("isValidSignature(bytes32,bytes)"))
    bytes4 internal constant MAGIC_VALUE = 0x1626ba7e;
    bytes4 internal constant INVALID_VALUE = 0xffffffff;
    uint256 internal constant SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;

    address public immutable owner;

    constructor(address owner_) {
        require(owner_ != address(0), "SmartWallet1271: zero owner");
        owner = owner_;
    }

    receive() external payable {}

    /// @notice ERC-1271: 0x1626ba7e iff `signature` is `owner`'s signature over `hash`.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) {
            return INVALID_VALUE;
        }
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s) > SECP256K1_HALF_N || (v != 27 && v != 28)) {
            return INVALID_VALUE;
        }
        address signer = ecrecover(hash, v, r, s);
        if (signer == address(0) || signer != owner) {
            return INVALID_VALUE;
        }
        return MAGIC_VALUE;
    }

    /// @notice Call `target` with `data` (and the attached value) as this wallet; owner only.
    /// Bubbles up the callee's revert data.
    function execute(address target, bytes calldata data) external payable returns (bytes memory result) {
        require(msg.sender == owner, "SmartWallet1271: caller is not the owner");
        bool success;
        (success, result) = target.call{value: msg.value}(data);
        if (!success) {
            assembly ("memory-safe") {
                revert(add(result, 0x20), mload(result))
            }
        }
    }
}
