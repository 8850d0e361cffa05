// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {TestBase} from "./Vm.sol";
import {Eip3009Token} from "../src/Eip3009Token.sol";
import {Aggregate3} from "../src/Aggregate3.sol";

/// Batched settlement through `aggregate3`: several transferWithAuthorization calls in one
/// transaction, a failing one (allowed to fail) leaving the others in place.
contract Aggregate3Test is TestBase {
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant TRANSFER_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes4 internal constant SEL_TRANSFER_VRS = 0xe3ee160e;
    uint256 internal constant ALICE_PK = 0xA11CE;
    uint256 internal constant NOW = 1_700_000_000;

    Eip3009Token internal token;
    Aggregate3 internal multicall;
    address internal alice;
    address internal payee = address(0xBEEF);

    function setUp() public {
        vm.warp(NOW);
        token = new Eip3009Token();
        multicall = new Aggregate3();
        alice = vm.addr(ALICE_PK);
        token.mint(alice, 1_000_000);
    }

    function signedTransfer(uint256 value, bytes32 nonce) internal view returns (bytes memory) {
        bytes32 domain = keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("USD Coin"), keccak256("2"), block.chainid, address(token))
        );
        bytes32 structHash =
            keccak256(abi.encode(TRANSFER_TYPEHASH, alice, payee, value, NOW - 60, NOW + 300, nonce));
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ALICE_PK, keccak256(abi.encodePacked(hex"1901", domain, structHash)));
        return abi.encodeWithSelector(SEL_TRANSFER_VRS, alice, payee, value, NOW - 60, NOW + 300, nonce, v, r, s);
    }

    function test_Selector() public pure {
        vm.assertEq(bytes32(Aggregate3.aggregate3.selector), bytes32(bytes4(0x82ad56cb)), "Multicall3's selector");
    }

    function test_OneFailedCallLeavesTheOthers() public {
        Aggregate3.Call3[] memory calls = new Aggregate3.Call3[](3);
        calls[0] = Aggregate3.Call3(address(token), true, signedTransfer(1_000, keccak256("a")));
        // Used twice: the second use reverts in the token.
        calls[1] = Aggregate3.Call3(address(token), true, signedTransfer(1_000, keccak256("a")));
        calls[2] = Aggregate3.Call3(address(token), true, signedTransfer(2_000, keccak256("b")));
        Aggregate3.Result[] memory results = multicall.aggregate3(calls);
        vm.assertTrue(results[0].success, "first");
        vm.assertTrue(!results[1].success, "replay refused");
        vm.assertTrue(results[2].success, "third");
        vm.assertEq(token.balanceOf(payee), 3_000, "two payments landed");
        vm.assertTrue(token.authorizationState(alice, keccak256("b")), "b used");
    }

    function test_RevertsWhenAFailureIsNotAllowed() public {
        Aggregate3.Call3[] memory calls = new Aggregate3.Call3[](2);
        calls[0] = Aggregate3.Call3(address(token), true, signedTransfer(1_000, keccak256("a")));
        calls[1] = Aggregate3.Call3(address(token), false, signedTransfer(1_000, keccak256("a")));
        vm.expectRevert(bytes("Multicall3: call failed"));
        multicall.aggregate3(calls);
        vm.assertEq(token.balanceOf(payee), 0, "nothing moved");
    }
}
