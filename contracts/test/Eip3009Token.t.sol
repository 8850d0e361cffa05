// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {TestBase} from "./Vm.sol";
import {Eip3009Token} from "../src/Eip3009Token.sol";
import {SmartWallet1271} from "../src/SmartWallet1271.sol";

/// Behaviour of Eip3009Token against FiatToken v2.2's rules. Everything a test needs from the
/// token (digests, signatures) is computed before `vm.expectRevert`, because that cheatcode
/// applies to the very next external call.
contract Eip3009TokenTest is TestBase {
    // Same events as the token, so `vm.expectEmit` can match them.
    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);
    event AuthorizationUsed(address indexed authorizer, bytes32 indexed nonce);
    event AuthorizationCanceled(address indexed authorizer, bytes32 indexed nonce);

    /// Typehashes computed here from their type strings, independently of the token.
    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant TRANSFER_TYPEHASH = keccak256(
        "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 internal constant RECEIVE_TYPEHASH = keccak256(
        "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
    );
    bytes32 internal constant CANCEL_TYPEHASH = keccak256("CancelAuthorization(address authorizer,bytes32 nonce)");

    /// Selectors the gateway calls, as literals (x402 notes §4).
    bytes4 internal constant SEL_TRANSFER_VRS = 0xe3ee160e;
    bytes4 internal constant SEL_TRANSFER_BYTES = 0xcf092995;
    bytes4 internal constant SEL_CANCEL_VRS = 0x5a049a70;
    bytes4 internal constant SEL_AUTHORIZATION_STATE = 0xe94a0102;

    address internal constant BASE_USDC = 0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913;
    /// EIP-712 domain separator of ("USD Coin", "2", 8453, BASE_USDC), computed offline with
    /// `cast keccak $(cast abi-encode ...)`.
    bytes32 internal constant BASE_USDC_DOMAIN_SEPARATOR =
        0x02fa7265e7c5d81118673727957699e4d68f74cd74b7db77da710fe8a2c7834f;

    uint256 internal constant ALICE_PK = 0xA11CE;
    uint256 internal constant BOB_PK = 0xB0B;
    uint256 internal constant NOW = 1_700_000_000;

    Eip3009Token internal token;
    address internal alice;
    address internal bob;
    address internal carol = address(0xCA501);

    struct Auth {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    function setUp() public {
        vm.warp(NOW);
        token = new Eip3009Token();
        alice = vm.addr(ALICE_PK);
        bob = vm.addr(BOB_PK);
        token.mint(alice, 1_000_000); // 1 USDC
    }

    // -------------------------------------------------------------------------------------
    // Helpers
    // -------------------------------------------------------------------------------------

    function defaultAuth() internal view returns (Auth memory) {
        return Auth(alice, bob, 10_000, NOW - 60, NOW + 300, keccak256("nonce-1"));
    }

    function domainSeparator(address verifyingContract) internal view returns (bytes32) {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256("USD Coin"), keccak256("2"), block.chainid, verifyingContract)
        );
    }

    function digestFor(address tokenAddr, bytes32 typeHash, Auth memory a) internal view returns (bytes32) {
        bytes32 structHash =
            keccak256(abi.encode(typeHash, a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(tokenAddr), structHash));
    }

    function signAuth(uint256 pk, bytes32 typeHash, Auth memory a)
        internal
        view
        returns (uint8 v, bytes32 r, bytes32 s)
    {
        return vm.sign(pk, digestFor(address(token), typeHash, a));
    }

    function cancelDigest(address authorizer, bytes32 nonce) internal view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(CANCEL_TYPEHASH, authorizer, nonce));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator(address(token)), structHash));
    }

    function callVrs(Auth memory a, uint8 v, bytes32 r, bytes32 s) internal returns (bool ok, bytes memory ret) {
        return address(token).call(
            abi.encodeWithSelector(
                SEL_TRANSFER_VRS, a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, v, r, s
            )
        );
    }

    function callBytes(Auth memory a, bytes memory sig) internal returns (bool ok, bytes memory ret) {
        return address(token).call(
            abi.encodeWithSelector(SEL_TRANSFER_BYTES, a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, sig)
        );
    }

    function transferVrs(Auth memory a, uint8 v, bytes32 r, bytes32 s) internal {
        token.transferWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, v, r, s);
    }

    function transferBytes(Auth memory a, bytes memory sig) internal {
        token.transferWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, sig);
    }

    /// Both overloads revert with `reason` for this authorization and signature, and nothing
    /// changes: no balance moves, the nonce stays unused.
    function assertBothRevert(Auth memory a, uint8 v, bytes32 r, bytes32 s, string memory reason) internal {
        uint256 fromBefore = token.balanceOf(a.from);
        uint256 toBefore = token.balanceOf(a.to);
        bool usedBefore = token.authorizationState(a.from, a.nonce);
        bytes memory sig = packSig(v, r, s);

        vm.expectRevert(bytes(reason));
        transferVrs(a, v, r, s);
        vm.expectRevert(bytes(reason));
        transferBytes(a, sig);

        // The same through the literal selectors, comparing the raw revert data.
        (bool ok, bytes memory ret) = callVrs(a, v, r, s);
        vm.assertFalse(ok, "v,r,s overload must revert");
        vm.assertEq(keccak256(ret), keccak256(errorData(reason)), "v,r,s overload revert data");
        (ok, ret) = callBytes(a, sig);
        vm.assertFalse(ok, "bytes overload must revert");
        vm.assertEq(keccak256(ret), keccak256(errorData(reason)), "bytes overload revert data");

        vm.assertEq(token.balanceOf(a.from), fromBefore, "payer balance unchanged");
        vm.assertEq(token.balanceOf(a.to), toBefore, "payee balance unchanged");
        vm.assertEq(token.authorizationState(a.from, a.nonce), usedBefore, "nonce state unchanged");
    }

    // -------------------------------------------------------------------------------------
    // Metadata, typehashes, domain
    // -------------------------------------------------------------------------------------

    function test_Metadata() public view {
        vm.assertEq(token.name(), "USD Coin", "name");
        vm.assertEq(token.symbol(), "USDC", "symbol");
        vm.assertEq(token.version(), "2", "version");
        vm.assertEq(uint256(token.decimals()), 6, "decimals");
        vm.assertEq(token.totalSupply(), 1_000_000, "totalSupply");
    }

    function test_Typehashes() public view {
        vm.assertEq(
            TRANSFER_TYPEHASH,
            0x7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267,
            "transfer typehash literal"
        );
        vm.assertEq(token.TRANSFER_WITH_AUTHORIZATION_TYPEHASH(), TRANSFER_TYPEHASH, "transfer typehash");
        vm.assertEq(token.RECEIVE_WITH_AUTHORIZATION_TYPEHASH(), RECEIVE_TYPEHASH, "receive typehash");
        vm.assertEq(token.CANCEL_AUTHORIZATION_TYPEHASH(), CANCEL_TYPEHASH, "cancel typehash");
    }

    function test_Selectors() public pure {
        vm.assertEq(
            bytes32(SEL_TRANSFER_VRS),
            bytes32(
                bytes4(
                    keccak256(
                        "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
                    )
                )
            ),
            "transferWithAuthorization(v,r,s)"
        );
        vm.assertEq(
            bytes32(SEL_TRANSFER_BYTES),
            bytes32(bytes4(keccak256("transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"))),
            "transferWithAuthorization(bytes)"
        );
        vm.assertEq(
            bytes32(SEL_CANCEL_VRS),
            bytes32(bytes4(keccak256("cancelAuthorization(address,bytes32,uint8,bytes32,bytes32)"))),
            "cancelAuthorization(v,r,s)"
        );
        vm.assertEq(
            bytes32(SEL_AUTHORIZATION_STATE),
            bytes32(bytes4(keccak256("authorizationState(address,bytes32)"))),
            "authorizationState"
        );
    }

    function test_DomainSeparator_IsEip712OfNameVersionChainAndAddress() public view {
        vm.assertEq(token.DOMAIN_SEPARATOR(), domainSeparator(address(token)), "domain separator");
    }

    function test_DomainSeparator_FollowsChainId() public {
        bytes32 before = token.DOMAIN_SEPARATOR();
        vm.chainId(8453);
        bytes32 onBase = token.DOMAIN_SEPARATOR();
        vm.assertNotEq(onBase, before, "domain separator must change with the chain id");
        vm.assertEq(onBase, domainSeparator(address(token)), "domain separator on 8453");
        vm.chainId(84532);
        vm.assertEq(token.DOMAIN_SEPARATOR(), domainSeparator(address(token)), "domain separator on 84532");
    }

    function test_Digest_MatchesForgeEip712Implementation() public view {
        Auth memory a = defaultAuth();
        string memory json = string.concat(
            '{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},',
            '{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],',
            '"TransferWithAuthorization":[{"name":"from","type":"address"},{"name":"to","type":"address"},',
            '{"name":"value","type":"uint256"},{"name":"validAfter","type":"uint256"},',
            '{"name":"validBefore","type":"uint256"},{"name":"nonce","type":"bytes32"}]},',
            '"primaryType":"TransferWithAuthorization",',
            string.concat(
                '"domain":{"name":"USD Coin","version":"2","chainId":',
                vm.toString(block.chainid),
                ',"verifyingContract":"',
                vm.toString(address(token)),
                '"},'
            ),
            string.concat(
                '"message":{"from":"',
                vm.toString(a.from),
                '","to":"',
                vm.toString(a.to),
                '","value":"',
                vm.toString(a.value),
                '","validAfter":"',
                vm.toString(a.validAfter),
                '","validBefore":"',
                vm.toString(a.validBefore),
                '","nonce":"',
                vm.toString(a.nonce),
                '"}}'
            )
        );
        vm.assertEq(
            vm.eip712HashTypedData(json), digestFor(address(token), TRANSFER_TYPEHASH, a), "EIP-712 digest"
        );
    }

    // -------------------------------------------------------------------------------------
    // transferWithAuthorization: success
    // -------------------------------------------------------------------------------------

    function test_TransferWithAuthorization_Vrs_SucceedsAndEmits() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);

        vm.expectEmit(true, true, false, true, address(token));
        emit AuthorizationUsed(alice, a.nonce);
        vm.expectEmit(true, true, false, true, address(token));
        emit Transfer(alice, bob, a.value);
        (bool ok,) = callVrs(a, v, r, s); // through the literal selector 0xe3ee160e
        vm.assertTrue(ok, "transferWithAuthorization(v,r,s) must succeed");

        vm.assertEq(token.balanceOf(alice), 1_000_000 - a.value, "payer balance");
        vm.assertEq(token.balanceOf(bob), a.value, "payee balance");
        vm.assertTrue(token.authorizationState(alice, a.nonce), "nonce used");
        (bool ok2, bytes memory ret) =
            address(token).staticcall(abi.encodeWithSelector(SEL_AUTHORIZATION_STATE, alice, a.nonce));
        vm.assertTrue(ok2 && abi.decode(ret, (bool)), "authorizationState via 0xe94a0102");
    }

    function test_TransferWithAuthorization_Bytes_SucceedsAndEmits() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);

        vm.expectEmit(true, true, false, true, address(token));
        emit AuthorizationUsed(alice, a.nonce);
        vm.expectEmit(true, true, false, true, address(token));
        emit Transfer(alice, bob, a.value);
        (bool ok,) = callBytes(a, packSig(v, r, s)); // through the literal selector 0xcf092995
        vm.assertTrue(ok, "transferWithAuthorization(bytes) must succeed");

        vm.assertEq(token.balanceOf(alice), 1_000_000 - a.value, "payer balance");
        vm.assertEq(token.balanceOf(bob), a.value, "payee balance");
        vm.assertTrue(token.authorizationState(alice, a.nonce), "nonce used");
    }

    function test_TransferWithAuthorization_AnyoneCanSubmit() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        vm.prank(carol); // a facilitator, neither payer nor payee
        transferVrs(a, v, r, s);
        vm.assertEq(token.balanceOf(bob), a.value, "payee balance");
    }

    function test_TransferWithAuthorization_WholeBalance() public {
        Auth memory a = defaultAuth();
        a.value = 1_000_000;
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        transferVrs(a, v, r, s);
        vm.assertEq(token.balanceOf(alice), 0, "payer emptied");
    }

    /// The runtime code alone, placed at Base's USDC address on chain 8453 (what
    /// `anvil_setCode` does), verifies signatures made for Base USDC's real domain.
    function test_RuntimeCodePlacedAtBaseUsdc_Works() public {
        vm.chainId(8453);
        vm.etch(BASE_USDC, address(token).code);
        Eip3009Token usdc = Eip3009Token(BASE_USDC);

        vm.assertEq(usdc.DOMAIN_SEPARATOR(), BASE_USDC_DOMAIN_SEPARATOR, "Base USDC domain separator");
        vm.assertEq(usdc.name(), "USD Coin", "name");
        vm.assertEq(usdc.balanceOf(alice), 0, "fresh storage at the etched address");

        usdc.mint(alice, 500_000);
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ALICE_PK, digestFor(BASE_USDC, TRANSFER_TYPEHASH, a));
        usdc.transferWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, packSig(v, r, s));
        vm.assertEq(usdc.balanceOf(bob), a.value, "payee balance");
        vm.assertTrue(usdc.authorizationState(alice, a.nonce), "nonce used");
    }

    // -------------------------------------------------------------------------------------
    // transferWithAuthorization: rejections
    // -------------------------------------------------------------------------------------

    function test_RevertsWhen_NonceAlreadyUsed() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        transferVrs(a, v, r, s);
        assertBothRevert(a, v, r, s, "FiatTokenV2: authorization is used or canceled");
    }

    function test_RevertsWhen_NonceUsedWithDifferentTerms() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        transferVrs(a, v, r, s);
        // Same nonce, otherwise a fresh, validly signed authorization.
        a.to = carol;
        a.value = 1;
        (v, r, s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "FiatTokenV2: authorization is used or canceled");
    }

    function test_SameNonceFromAnotherPayerIsIndependent() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        transferVrs(a, v, r, s);
        token.mint(bob, 50);
        Auth memory b = Auth(bob, carol, 50, 0, NOW + 1, a.nonce);
        (v, r, s) = signAuth(BOB_PK, TRANSFER_TYPEHASH, b);
        transferVrs(b, v, r, s);
        vm.assertEq(token.balanceOf(carol), 50, "bob's payment with the same nonce value");
    }

    function test_RevertsWhen_NonceCanceled() public {
        Auth memory a = defaultAuth();
        (uint8 cv, bytes32 cr, bytes32 cs) = vm.sign(ALICE_PK, cancelDigest(alice, a.nonce));

        vm.expectEmit(true, true, false, true, address(token));
        emit AuthorizationCanceled(alice, a.nonce);
        (bool ok,) = address(token).call(abi.encodeWithSelector(SEL_CANCEL_VRS, alice, a.nonce, cv, cr, cs));
        vm.assertTrue(ok, "cancelAuthorization(v,r,s) via 0x5a049a70");
        vm.assertTrue(token.authorizationState(alice, a.nonce), "canceled nonce reads as used");

        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "FiatTokenV2: authorization is used or canceled");

        // Cancelling twice is refused too.
        vm.expectRevert(bytes("FiatTokenV2: authorization is used or canceled"));
        token.cancelAuthorization(alice, a.nonce, cv, cr, cs);
    }

    function test_CancelAuthorization_BytesOverload() public {
        bytes32 nonce = keccak256("to-cancel");
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(ALICE_PK, cancelDigest(alice, nonce));
        vm.expectEmit(true, true, false, true, address(token));
        emit AuthorizationCanceled(alice, nonce);
        token.cancelAuthorization(alice, nonce, packSig(v, r, s));
        vm.assertTrue(token.authorizationState(alice, nonce), "canceled");
    }

    function test_CancelAuthorization_RevertsWhen_UsedOrWrongSigner() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        transferVrs(a, v, r, s);
        (v, r, s) = vm.sign(ALICE_PK, cancelDigest(alice, a.nonce));
        vm.expectRevert(bytes("FiatTokenV2: authorization is used or canceled"));
        token.cancelAuthorization(alice, a.nonce, v, r, s);

        bytes32 other = keccak256("other");
        (v, r, s) = vm.sign(BOB_PK, cancelDigest(alice, other));
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        token.cancelAuthorization(alice, other, v, r, s);
        vm.assertFalse(token.authorizationState(alice, other), "not canceled");
    }

    function test_RevertsWhen_Expired_AtValidBefore() public {
        Auth memory a = defaultAuth();
        a.validBefore = NOW; // block.timestamp == validBefore: already expired (strict <)
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "FiatTokenV2: authorization is expired");
    }

    function test_RevertsWhen_Expired_AfterValidBefore() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        vm.warp(a.validBefore + 1);
        assertBothRevert(a, v, r, s, "FiatTokenV2: authorization is expired");
    }

    function test_Succeeds_OneSecondBeforeValidBefore() public {
        Auth memory a = defaultAuth();
        a.validBefore = NOW + 1;
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        transferVrs(a, v, r, s);
        vm.assertEq(token.balanceOf(bob), a.value, "paid");
    }

    function test_RevertsWhen_NotYetValid_AtValidAfter() public {
        Auth memory a = defaultAuth();
        a.validAfter = NOW; // block.timestamp == validAfter: not yet valid (strict >)
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "FiatTokenV2: authorization is not yet valid");
    }

    function test_RevertsWhen_NotYetValid_BeforeValidAfter() public {
        Auth memory a = defaultAuth();
        a.validAfter = NOW + 10;
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "FiatTokenV2: authorization is not yet valid");
        // ...and becomes valid one second after validAfter.
        vm.warp(NOW + 11);
        transferVrs(a, v, r, s);
        vm.assertEq(token.balanceOf(bob), a.value, "paid once valid");
    }

    function test_Succeeds_OneSecondAfterValidAfter() public {
        Auth memory a = defaultAuth();
        a.validAfter = NOW - 1;
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        transferVrs(a, v, r, s);
        vm.assertEq(token.balanceOf(bob), a.value, "paid");
    }

    function test_TimeChecksComeBeforeNonceAndSignature() public {
        Auth memory a = defaultAuth();
        a.validBefore = NOW;
        // Garbage signature: the expiry is still what is reported (FiatToken's order).
        assertBothRevert(a, 27, bytes32(uint256(1)), bytes32(uint256(2)), "FiatTokenV2: authorization is expired");
    }

    function test_RevertsWhen_WrongSigner() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(BOB_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "FiatTokenV2: invalid signature");
    }

    function test_RevertsWhen_SignedTermsDiffer() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        a.value += 1;
        assertBothRevert(a, v, r, s, "FiatTokenV2: invalid signature");
        a.value -= 1;
        a.to = carol;
        assertBothRevert(a, v, r, s, "FiatTokenV2: invalid signature");
    }

    function test_RevertsWhen_SignedForAnotherChain() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        vm.chainId(8453);
        assertBothRevert(a, v, r, s, "FiatTokenV2: invalid signature");
    }

    function test_RevertsWhen_ReceiveSignatureUsedForTransfer() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, RECEIVE_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "FiatTokenV2: invalid signature");
    }

    function test_RevertsWhen_HighS() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        (uint8 v2, bytes32 r2, bytes32 s2) = malleate(v, r, s);
        // (v2, r2, s2) is a valid ecrecover signature by alice, but not canonical.
        vm.assertEq(ecrecover(digestFor(address(token), TRANSFER_TYPEHASH, a), v2, r2, s2), alice, "malleated sig");
        assertBothRevert(a, v2, r2, s2, "ECRecover: invalid signature 's' value");
    }

    function test_RevertsWhen_VIsZeroOrOne() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v - 27, r, s, "ECRecover: invalid signature 'v' value");
        assertBothRevert(a, v == 27 ? 1 : 0, r, s, "ECRecover: invalid signature 'v' value");
        assertBothRevert(a, 29, r, s, "ECRecover: invalid signature 'v' value");
    }

    function test_RevertsWhen_SignatureRecoversToZero() public {
        Auth memory a = defaultAuth();
        // r = 0 is not a curve point: ecrecover returns address(0).
        assertBothRevert(a, 27, bytes32(0), bytes32(uint256(1)), "ECRecover: invalid signature");
    }

    function test_RevertsWhen_SignatureLengthIsNot65() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        bytes memory short = abi.encodePacked(r, s); // 64 bytes (EIP-2098 style is not accepted)
        vm.expectRevert(bytes("ECRecover: invalid signature length"));
        transferBytes(a, short);
        bytes memory long = abi.encodePacked(r, s, v, uint8(0));
        vm.expectRevert(bytes("ECRecover: invalid signature length"));
        transferBytes(a, long);
        vm.assertFalse(token.authorizationState(alice, a.nonce), "nonce unused");
    }

    function test_RevertsWhen_InsufficientBalance() public {
        Auth memory a = defaultAuth();
        a.value = 1_000_001;
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "ERC20: transfer amount exceeds balance");
    }

    function test_RevertsWhen_PayeeIsZeroAddress() public {
        Auth memory a = defaultAuth();
        a.to = address(0);
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "ERC20: transfer to the zero address");
    }

    function test_RevertsWhen_Paused() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        token.pause();
        vm.assertTrue(token.paused(), "paused");
        assertBothRevert(a, v, r, s, "Pausable: paused");
        token.unpause();
        transferVrs(a, v, r, s);
        vm.assertEq(token.balanceOf(bob), a.value, "paid after unpause");
    }

    function test_RevertsWhen_PayerOrPayeeBlacklisted() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        token.blacklist(alice);
        vm.assertTrue(token.isBlacklisted(alice), "blacklisted");
        assertBothRevert(a, v, r, s, "Blacklistable: account is blacklisted");
        token.unBlacklist(alice);
        token.blacklist(bob);
        assertBothRevert(a, v, r, s, "Blacklistable: account is blacklisted");
        token.unBlacklist(bob);
        transferVrs(a, v, r, s);
        vm.assertEq(token.balanceOf(bob), a.value, "paid after unblacklisting");
    }

    // -------------------------------------------------------------------------------------
    // receiveWithAuthorization
    // -------------------------------------------------------------------------------------

    function test_ReceiveWithAuthorization_RequiresCallerToBePayee() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, RECEIVE_TYPEHASH, a);

        vm.prank(carol);
        vm.expectRevert(bytes("FiatTokenV2: caller must be the payee"));
        token.receiveWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, v, r, s);
        vm.prank(carol);
        vm.expectRevert(bytes("FiatTokenV2: caller must be the payee"));
        token.receiveWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, packSig(v, r, s));

        vm.expectEmit(true, true, false, true, address(token));
        emit AuthorizationUsed(alice, a.nonce);
        vm.expectEmit(true, true, false, true, address(token));
        emit Transfer(alice, bob, a.value);
        vm.prank(bob);
        token.receiveWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, v, r, s);
        vm.assertEq(token.balanceOf(bob), a.value, "payee balance");
    }

    function test_ReceiveWithAuthorization_BytesOverload() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, RECEIVE_TYPEHASH, a);
        vm.prank(bob);
        token.receiveWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, packSig(v, r, s));
        vm.assertEq(token.balanceOf(bob), a.value, "payee balance");
        vm.assertTrue(token.authorizationState(alice, a.nonce), "nonce used");
    }

    function test_ReceiveWithAuthorization_RejectsTransferSignature() public {
        Auth memory a = defaultAuth();
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        vm.prank(bob);
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        token.receiveWithAuthorization(a.from, a.to, a.value, a.validAfter, a.validBefore, a.nonce, v, r, s);
    }

    // -------------------------------------------------------------------------------------
    // ERC-1271 payers
    // -------------------------------------------------------------------------------------

    function test_Erc1271Wallet_ValidSignature_BothOverloads() public {
        SmartWallet1271 wallet = new SmartWallet1271(alice);
        token.mint(address(wallet), 100);
        Auth memory a = Auth(address(wallet), bob, 40, 0, NOW + 300, keccak256("w-1"));
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);

        vm.expectEmit(true, true, false, true, address(token));
        emit AuthorizationUsed(address(wallet), a.nonce);
        vm.expectEmit(true, true, false, true, address(token));
        emit Transfer(address(wallet), bob, 40);
        transferBytes(a, packSig(v, r, s));

        a.nonce = keccak256("w-2");
        (v, r, s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        transferVrs(a, v, r, s); // packed into the same 65 bytes and asked through ERC-1271

        vm.assertEq(token.balanceOf(address(wallet)), 20, "wallet balance");
        vm.assertEq(token.balanceOf(bob), 80, "payee balance");
    }

    function test_Erc1271Wallet_InvalidSignatures() public {
        SmartWallet1271 wallet = new SmartWallet1271(alice);
        token.mint(address(wallet), 100);
        Auth memory a = Auth(address(wallet), bob, 40, 0, NOW + 300, keccak256("w-1"));

        // Signed by someone other than the owner.
        (uint8 v, bytes32 r, bytes32 s) = signAuth(BOB_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "FiatTokenV2: invalid signature");

        // The owner's high-s twin: the wallet says no, so the token reports an invalid
        // signature (not ECRecover's message: the token does no ECDSA for contract payers).
        (v, r, s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        (uint8 v2, bytes32 r2, bytes32 s2) = malleate(v, r, s);
        assertBothRevert(a, v2, r2, s2, "FiatTokenV2: invalid signature");

        // An empty signature.
        vm.expectRevert(bytes("FiatTokenV2: invalid signature"));
        transferBytes(a, hex"");
    }

    function test_ContractPayerWithoutErc1271_IsInvalidSignature() public {
        // The token itself has code but no isValidSignature: the staticcall fails.
        token.mint(address(token), 100);
        Auth memory a = Auth(address(token), bob, 40, 0, NOW + 300, keccak256("c-1"));
        (uint8 v, bytes32 r, bytes32 s) = signAuth(ALICE_PK, TRANSFER_TYPEHASH, a);
        assertBothRevert(a, v, r, s, "FiatTokenV2: invalid signature");
    }

    // -------------------------------------------------------------------------------------
    // ERC-20 basics
    // -------------------------------------------------------------------------------------

    function test_Erc20_TransferApproveTransferFrom() public {
        vm.expectEmit(true, true, false, true, address(token));
        emit Transfer(alice, bob, 100);
        vm.prank(alice);
        vm.assertTrue(token.transfer(bob, 100), "transfer");

        vm.expectEmit(true, true, false, true, address(token));
        emit Approval(alice, carol, 500);
        vm.prank(alice);
        token.approve(carol, 500);
        vm.assertEq(token.allowance(alice, carol), 500, "allowance");

        vm.prank(carol);
        token.transferFrom(alice, bob, 200);
        vm.assertEq(token.allowance(alice, carol), 300, "allowance spent");
        vm.assertEq(token.balanceOf(bob), 300, "bob");
        vm.assertEq(token.balanceOf(alice), 1_000_000 - 300, "alice");

        vm.prank(carol);
        vm.expectRevert(bytes("ERC20: transfer amount exceeds allowance"));
        token.transferFrom(alice, bob, 301);

        vm.prank(bob);
        vm.expectRevert(bytes("ERC20: transfer amount exceeds balance"));
        token.transfer(carol, 301);
    }

    function test_Mint_IncreasesSupplyAndEmits() public {
        vm.expectEmit(true, true, false, true, address(token));
        emit Transfer(address(0), carol, 7);
        token.mint(carol, 7);
        vm.assertEq(token.totalSupply(), 1_000_007, "totalSupply");
        vm.assertEq(token.balanceOf(carol), 7, "balance");
        vm.expectRevert(bytes("FiatToken: mint to the zero address"));
        token.mint(address(0), 1);
    }
}
