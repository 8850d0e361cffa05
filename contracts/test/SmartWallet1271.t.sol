// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {TestBase} from "./Vm.sol";
import {Eip3009Token} from "../src/Eip3009Token.sol";
import {SmartWallet1271} from "../src/SmartWallet1271.sol";

contract SmartWallet1271Test is TestBase {
    bytes4 internal constant MAGIC = 0x1626ba7e;
    bytes4 internal constant INVALID = 0xffffffff;
    uint256 internal constant OWNER_PK = 0x0A0A;
    uint256 internal constant OTHER_PK = 0x0B0B;

    SmartWallet1271 internal wallet;
    address internal owner;
    bytes32 internal constant HASH = keccak256("some digest");

    function setUp() public {
        owner = vm.addr(OWNER_PK);
        wallet = new SmartWallet1271(owner);
    }

    function check(bytes memory sig) internal view returns (bytes4) {
        return wallet.isValidSignature(HASH, sig);
    }

    function test_Owner() public view {
        vm.assertEq(wallet.owner(), owner, "owner");
    }

    function test_ValidOwnerSignature() public view {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(OWNER_PK, HASH);
        vm.assertEq(bytes32(check(packSig(v, r, s))), bytes32(MAGIC), "owner's signature is valid");
    }

    function test_SelectorIsErc1271() public pure {
        vm.assertEq(
            bytes32(SmartWallet1271.isValidSignature.selector), bytes32(MAGIC), "isValidSignature selector"
        );
    }

    function test_InvalidSignatures() public view {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(OTHER_PK, HASH);
        vm.assertEq(bytes32(check(packSig(v, r, s))), bytes32(INVALID), "other key");

        (v, r, s) = vm.sign(OWNER_PK, HASH);
        (uint8 v2, bytes32 r2, bytes32 s2) = malleate(v, r, s);
        vm.assertEq(bytes32(check(packSig(v2, r2, s2))), bytes32(INVALID), "high s");
        vm.assertEq(bytes32(check(packSig(v - 27, r, s))), bytes32(INVALID), "v in {0,1}");
        vm.assertEq(bytes32(check(abi.encodePacked(r, s))), bytes32(INVALID), "64 bytes");
        vm.assertEq(bytes32(check(abi.encodePacked(r, s, v, v))), bytes32(INVALID), "66 bytes");
        vm.assertEq(bytes32(check(hex"")), bytes32(INVALID), "empty");
        vm.assertEq(bytes32(check(packSig(27, bytes32(0), bytes32(uint256(1))))), bytes32(INVALID), "recovers to 0");

        // Raw hash only: a signature over the eth_sign-prefixed hash is not accepted.
        bytes32 prefixed = keccak256(abi.encodePacked("\x19Ethereum Signed Message:\n32", HASH));
        (v, r, s) = vm.sign(OWNER_PK, prefixed);
        vm.assertEq(bytes32(check(packSig(v, r, s))), bytes32(INVALID), "prefixed hash");
    }

    function test_Execute_OnlyOwner() public {
        Eip3009Token token = new Eip3009Token();
        token.mint(address(wallet), 10);

        vm.expectRevert(bytes("SmartWallet1271: caller is not the owner"));
        wallet.execute(address(token), abi.encodeCall(Eip3009Token.transfer, (address(this), 1)));

        vm.prank(owner);
        wallet.execute(address(token), abi.encodeCall(Eip3009Token.transfer, (address(this), 4)));
        vm.assertEq(token.balanceOf(address(this)), 4, "moved by the wallet");

        // The callee's revert reason comes through unchanged.
        vm.prank(owner);
        vm.expectRevert(bytes("ERC20: transfer amount exceeds balance"));
        wallet.execute(address(token), abi.encodeCall(Eip3009Token.transfer, (address(this), 7)));
    }

    function test_Constructor_RejectsZeroOwner() public {
        vm.expectRevert(bytes("SmartWallet1271: zero owner"));
        new SmartWallet1271(address(0));
    }
}
