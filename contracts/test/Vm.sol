// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// The few forge cheatcodes these tests use (forge-std is not available offline). Signatures as
/// in forge-std's Vm.sol; the cheatcode contract lives at a fixed address.
interface Vm {
    function addr(uint256 privateKey) external pure returns (address);
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function warp(uint256 newTimestamp) external;
    function chainId(uint256 newChainId) external;
    function etch(address target, bytes calldata newRuntimeBytecode) external;
    function prank(address msgSender) external;
    function expectRevert(bytes calldata revertData) external;
    function expectEmit(bool checkTopic1, bool checkTopic2, bool checkTopic3, bool checkData, address emitter)
        external;
    function eip712HashTypedData(string calldata jsonData) external pure returns (bytes32 digest);
    function toString(address value) external pure returns (string memory);
    function toString(uint256 value) external pure returns (string memory);
    function toString(bytes32 value) external pure returns (string memory);

    function assertTrue(bool condition, string calldata err) external pure;
    function assertFalse(bool condition, string calldata err) external pure;
    function assertEq(bool left, bool right, string calldata err) external pure;
    function assertEq(uint256 left, uint256 right, string calldata err) external pure;
    function assertEq(address left, address right, string calldata err) external pure;
    function assertEq(bytes32 left, bytes32 right, string calldata err) external pure;
    function assertEq(string calldata left, string calldata right, string calldata err) external pure;
    function assertNotEq(bytes32 left, bytes32 right, string calldata err) external pure;
}

/// Base for test contracts: the cheatcode handle plus small helpers. Assertions are forge's own
/// `vm.assert*` cheatcodes, which revert (and so fail the test) with a message.
abstract contract TestBase {
    /// address(uint160(uint256(keccak256("hevm cheat code"))))
    Vm internal constant vm = Vm(0x7109709ECfa91a80626fF3989D68f67F5b1DD12D);

    /// secp256k1 group order n.
    uint256 internal constant SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    /// ABI encoding of `Error(string)`: what `require(cond, reason)` reverts with.
    function errorData(string memory reason) internal pure returns (bytes memory) {
        return abi.encodeWithSignature("Error(string)", reason);
    }

    /// r ‖ s ‖ v, the 65-byte layout FiatToken expects in its `bytes signature` overloads.
    function packSig(uint8 v, bytes32 r, bytes32 s) internal pure returns (bytes memory) {
        return abi.encodePacked(r, s, v);
    }

    /// The other, high-s signature for the same key and digest: (v ^ 1, r, n - s).
    function malleate(uint8 v, bytes32 r, bytes32 s) internal pure returns (uint8, bytes32, bytes32) {
        return (v == 27 ? 28 : 27, r, bytes32(SECP256K1_N - uint256(s)));
    }
}
