//! The table of bad payments: each must be refused with its own error, and the good ones
//! beside them must pass, against the token on a real chain.

use alloy_primitives::{Address, B256, Bytes, U256, address, uint};
use alloy_sol_types::SolCall;
use tollgate_test_support::{Deployment, PaymentBuilder, TokenCall, random_key, sign_cancel};
use tollgate_verifier::{VerifierConfig, VerifyError, check_offline};
use tollgate_x402::{Network, PaymentPayload, v1};

use crate::{Env, PRICE};

const SECP256K1_ORDER: U256 = uint!(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256);

fn with_sig(b: &PaymentBuilder, f: impl FnOnce(&mut Vec<u8>)) -> PaymentPayload {
    let mut sig = b.sign().to_vec();
    f(&mut sig);
    b.v2_with(Bytes::from(sig))
}

/// The same signature with `s` mirrored into the upper half (still valid ECDSA, but
/// malleable, so the token refuses it).
fn high_s(sig: &mut [u8]) {
    let s = U256::from_be_slice(&sig[32..64]);
    sig[32..64].copy_from_slice(&(SECP256K1_ORDER - s).to_be_bytes::<32>());
    sig[64] = if sig[64] == 27 { 28 } else { 27 };
}

type Expect = fn(&VerifyError) -> bool;

struct Case {
    name: &'static str,
    payment: PaymentPayload,
    expect: Expect,
}

// Goal: at least 25 distinct bad payments are each refused with the right error, on the
// token placed at Base's USDC address on chain 8453.
#[tokio::test]
async fn table_of_bad_payments_on_base_usdc() {
    let env = Env::start(Deployment::BaseUsdc).await;
    let now = env.now;
    let ok = || env.payment();
    let mut cases: Vec<Case> = Vec::new();
    let mut case = |name, payment, expect: Expect| cases.push(Case { name, payment, expect });

    // Signed under the wrong EIP-712 domain: recovery yields another address.
    let mut b = ok();
    b.domain_name = "USDC".into();
    case("domain name", b.v2(), |e| matches!(e, VerifyError::InvalidSignature { .. }));
    let mut b = ok();
    b.domain_version = "1".into();
    case("domain version", b.v2(), |e| matches!(e, VerifyError::InvalidSignature { .. }));
    let mut b = ok();
    b.domain_chain_id = 84532;
    case("domain chain id", b.v2(), |e| matches!(e, VerifyError::InvalidSignature { .. }));
    let mut b = ok();
    b.domain_contract = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");
    case("domain contract", b.v2(), |e| matches!(e, VerifyError::InvalidSignature { .. }));

    // Signed by someone other than `from`.
    let mut b = ok();
    b.key = random_key();
    case("from is not the signer", b.v2(), |e| matches!(e, VerifyError::InvalidSignature { .. }));

    // Fields changed after signing.
    let b = ok();
    let mut p = b.v2();
    if let PaymentPayload::V2(v) = &mut p {
        v.payload.authorization.nonce = B256::repeat_byte(7);
    }
    case("nonce changed after signing", p, |e| matches!(e, VerifyError::InvalidSignature { .. }));
    let b = ok();
    let mut p = b.v2();
    if let PaymentPayload::V2(v) = &mut p {
        v.payload.authorization.valid_before = (now + 3600).into();
    }
    case("validBefore changed after signing", p, |e| matches!(e, VerifyError::InvalidSignature { .. }));

    // Validity window.
    let mut b = ok();
    b.valid_before = now - 1;
    case("expired", b.v2(), |e| matches!(e, VerifyError::Expired { .. }));
    let mut b = ok();
    b.valid_before = now + 3;
    case("expires within the block-time buffer", b.v2(), |e| matches!(e, VerifyError::Expired { .. }));
    let mut b = ok();
    b.valid_after = now + 60;
    case("not yet valid", b.v2(), |e| matches!(e, VerifyError::NotYetValid { .. }));

    // Amount and payee.
    let mut b = ok();
    b.value = U256::from(PRICE - 1);
    case("underpaid", b.v2(), |e| matches!(e, VerifyError::ValueMismatch { .. }));
    let mut b = ok();
    b.value = U256::from(PRICE + 1);
    case("overpaid", b.v2(), |e| matches!(e, VerifyError::ValueMismatch { .. }));
    let mut b = ok();
    b.to = random_key().address();
    case("payTo mismatch", b.v2(), |e| matches!(e, VerifyError::RecipientMismatch { .. }));

    // Signature bytes.
    case("high s", with_sig(&ok(), |s| high_s(s)), |e| matches!(e, VerifyError::SignatureHighS));
    case("v = 29", with_sig(&ok(), |s| s[64] = 29), |e| matches!(e, VerifyError::SignatureBadV { v: 29 }));
    case("v = 26", with_sig(&ok(), |s| s[64] = 26), |e| matches!(e, VerifyError::SignatureBadV { v: 26 }));
    case("short signature", with_sig(&ok(), |s| s.truncate(64)), |e| {
        matches!(e, VerifyError::SignatureLength { len_bytes: 64 })
    });
    case("empty signature", with_sig(&ok(), |s| s.clear()), |e| {
        matches!(e, VerifyError::SignatureLength { len_bytes: 0 })
    });
    case("r = 0", with_sig(&ok(), |s| s[..32].fill(0)), |e| matches!(e, VerifyError::InvalidSignature { .. }));
    case("flipped v", with_sig(&ok(), |s| s[64] = if s[64] == 27 { 28 } else { 27 }), |e| {
        matches!(e, VerifyError::InvalidSignature { .. })
    });

    // Scheme, network, offer.
    let b = ok();
    let p = PaymentPayload::V1(v1::PaymentPayload {
        x402_version: 1,
        scheme: "upto".into(),
        network: Network::BASE,
        payload: b.exact_with(b.sign()),
    });
    case("scheme upto", p, |e| matches!(e, VerifyError::UnsupportedScheme { .. }));
    let b = ok();
    let mut p = b.v2();
    if let PaymentPayload::V2(v) = &mut p {
        v.accepted.network = Network::BASE_SEPOLIA;
    }
    case("network mismatch", p, |e| matches!(e, VerifyError::NetworkMismatch { paid_chain_id: 84532, .. }));

    // On-chain state: a nonce already settled, a cancelled nonce, an empty wallet.
    let settled = ok();
    let verified = env.verifier.verify(&env.offer, &settled.v2()).await.expect("first use verifies");
    env.settler.settle(&verified).await.expect("first use settles");
    case("nonce already settled", settled.v2(), |e| matches!(e, VerifyError::NonceAlreadyUsed { .. }));

    let cancelled = ok();
    let (v, r, s) = sign_cancel(&env.payer, &cancelled.domain(), env.payer.address(), cancelled.nonce);
    let cancel =
        TokenCall::cancelAuthorizationCall { authorizer: env.payer.address(), nonce: cancelled.nonce, v, r, s };
    env.chain.send(env.chain.token, cancel.abi_encode()).await.expect("cancel");
    case("nonce cancelled", cancelled.v2(), |e| matches!(e, VerifyError::NonceAlreadyUsed { .. }));

    let poor = PaymentBuilder::new(&env.offer, &random_key(), now);
    case(
        "insufficient balance",
        poor.v2(),
        |e| matches!(e, VerifyError::InsufficientBalance { balance, .. } if balance.is_zero()),
    );

    // The chain's clock disagrees with ours: only the simulation can tell.
    env.chain.warp_to(now + 1_000).await.expect("warp");
    let mut b = ok();
    b.valid_before = now + 500;
    case("expired on chain though not by our clock", b.v2(), |e| matches!(e, VerifyError::Expired { .. }));

    assert!(cases.len() >= 25, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        match env.verifier.verify(&env.offer, &c.payment).await {
            Err(e) if (c.expect)(&e) => {}
            other => failures.push(format!("{}: got {other:?}", c.name)),
        }
    }
    assert!(failures.is_empty(), "unexpected outcomes:\n{}", failures.join("\n"));

    // And the control: an untouched payment, made after all of the above, still verifies,
    // also as v1 and with a 0/1 recovery id.
    let mut good = ok();
    good.valid_before = now + 1_300;
    env.verifier.verify(&env.offer, &good.v2()).await.expect("good v2 payment");
    env.verifier.verify(&env.offer, &good.v1()).await.expect("good v1 payment");
    let zero_one = with_sig(&good, |s| s[64] -= 27);
    env.verifier.verify(&env.offer, &zero_one).await.expect("v as 0/1");
}

// Goal: the chain's "not yet valid" is caught by simulation even when our clock is ahead.
#[tokio::test]
async fn not_yet_valid_on_chain_though_valid_by_our_clock() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    env.clock.set(env.now + 500);
    let mut b = env.payment();
    b.valid_after = env.now + 200;
    b.valid_before = env.now + 900;
    let err = env.verifier.verify(&env.offer, &b.v2()).await.unwrap_err();
    assert!(matches!(err, VerifyError::NotYetValid { .. }), "{err:?}");
}

// Goal: an offer without the EIP-712 domain, a paused token and a blacklisted payer are
// refused with their own errors.
#[tokio::test]
async fn offer_and_token_state_errors() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    let mut offer = env.offer.clone();
    offer.extra.clear();
    let err = env.verifier.verify(&offer, &env.payment().v2()).await.unwrap_err();
    assert_eq!(err, VerifyError::MissingEip712Domain);

    env.chain.send(env.chain.token, TokenCall::pauseCall {}.abi_encode()).await.unwrap();
    let err = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap_err();
    assert!(matches!(&err, VerifyError::SimulationFailed { reason } if reason.contains("paused")), "{err:?}");
    env.chain.send(env.chain.token, TokenCall::unpauseCall {}.abi_encode()).await.unwrap();

    let blacklist = TokenCall::blacklistCall { account: env.payer.address() };
    env.chain.send(env.chain.token, blacklist.abi_encode()).await.unwrap();
    let err = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap_err();
    assert!(matches!(&err, VerifyError::SimulationFailed { reason } if reason.contains("blacklisted")), "{err:?}");
}

// Goal: an offer whose domain name or version differs from the token's is diagnosed as
// our misconfiguration, even though the client's signature matches the offer.
#[tokio::test]
async fn offer_domain_differs_from_token() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    let mut offer = env.offer.clone();
    offer.extra.insert("name".into(), "USDC".into());
    let b = PaymentBuilder::new(&offer, &env.payer, env.now);
    let err = env.verifier.verify(&offer, &b.v2()).await.unwrap_err();
    assert!(matches!(&err, VerifyError::TokenNameMismatch { actual, .. } if actual == "USD Coin"), "{err:?}");

    let mut offer = env.offer.clone();
    offer.extra.insert("version".into(), "3".into());
    let b = PaymentBuilder::new(&offer, &env.payer, env.now);
    let err = env.verifier.verify(&offer, &b.v2()).await.unwrap_err();
    assert!(matches!(&err, VerifyError::TokenVersionMismatch { actual, .. } if actual == "2"), "{err:?}");
}

// Goal: an asset address without code, a chain we are not configured for, and a validity
// beyond the configured cap are refused.
#[tokio::test]
async fn asset_chain_and_window_errors() {
    let config = VerifierConfig { validity_window_max_s: Some(600), ..VerifierConfig::default() };
    let env = Env::start_with(Deployment::Fresh { chain_id: 31337 }, config.clone()).await;

    let mut offer = env.offer.clone();
    offer.asset = Address::repeat_byte(0x42);
    let b = PaymentBuilder::new(&offer, &env.payer, env.now);
    let err = env.verifier.verify(&offer, &b.v2()).await.unwrap_err();
    assert!(matches!(err, VerifyError::AssetNotContract { chain_id: 31337, .. }), "{err:?}");

    let mut offer = env.offer.clone();
    offer.network = Network::BASE_SEPOLIA;
    let b = PaymentBuilder::new(&offer, &env.payer, env.now);
    let err = env.verifier.verify(&offer, &b.v2()).await.unwrap_err();
    assert_eq!(err, VerifyError::ChainNotConfigured { chain_id: 84532 });

    let mut b = env.payment();
    b.valid_before = env.now + 3_600;
    let err = check_offline(&env.offer, &b.v2(), env.now, &config).unwrap_err();
    assert!(matches!(err, VerifyError::ValidityTooLong { window_max_s: 600, .. }), "{err:?}");
    b.valid_before = env.now + 600;
    check_offline(&env.offer, &b.v2(), env.now, &config).expect("at the cap is fine");
}
