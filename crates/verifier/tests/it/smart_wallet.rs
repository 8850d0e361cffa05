//! ERC-1271 smart wallets and ERC-6492 wrapped signatures.

use alloy_primitives::{Address, Bytes};
use alloy_sol_types::SolValue;
use tollgate_test_support::{Deployment, PaymentBuilder, random_key, sign_authorization_digest};
use tollgate_verifier::{ERC6492_MAGIC, SettleOutcome, SignatureCheck, VerifyError};

use crate::{Env, PRICE};

/// A payment from `wallet`, signed by `signer` over the EIP-712 digest (the wallet checks
/// the raw digest).
fn wallet_payment(env: &Env, wallet: Address, signer: &alloy::signers::local::PrivateKeySigner) -> PaymentBuilder {
    let mut b = PaymentBuilder::new(&env.offer, signer, env.now);
    b.from = wallet;
    b
}

fn wrap_6492(factory: Address, calldata: Bytes, inner: Bytes) -> Bytes {
    let mut out = (factory, calldata, inner).abi_encode_params();
    out.extend_from_slice(ERC6492_MAGIC.as_slice());
    out.into()
}

// Goal: a deployed ERC-1271 wallet's valid signature verifies and settles through the
// bytes overload; a signature by someone else is refused.
#[tokio::test]
async fn erc1271_wallet_valid_and_invalid() {
    let env = Env::start(Deployment::BaseUsdc).await;
    let owner = random_key();
    let wallet = env.chain.deploy_smart_wallet(owner.address()).await.unwrap();
    env.chain.mint(wallet, 100_000).await.unwrap();

    let b = wallet_payment(&env, wallet, &owner);
    let verified = env.verifier.verify(&env.offer, &b.v2()).await.expect("wallet signature verifies");
    assert!(matches!(verified.signature, SignatureCheck::Contract(_)));
    let outcome = env.settler.settle(&verified).await.expect("settles");
    assert!(matches!(outcome, SettleOutcome::Settled(_)));
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), alloy_primitives::U256::from(PRICE));

    let stranger = wallet_payment(&env, wallet, &random_key());
    let err = env.verifier.verify(&env.offer, &stranger.v2()).await.unwrap_err();
    assert_eq!(err, VerifyError::InvalidSignature { from: wallet });

    // A non-65-byte blob the wallet does not accept.
    let blob = stranger.v2_with(Bytes::from(vec![1u8; 97]));
    let err = env.verifier.verify(&env.offer, &blob).await.unwrap_err();
    assert_eq!(err, VerifyError::InvalidSignature { from: wallet });
}

// Goal: an ERC-6492 wrapper around a deployed wallet's signature is unwrapped and accepted;
// one for an undeployed wallet is refused with a clear error, never accepted.
#[tokio::test]
async fn erc6492_deployed_and_undeployed() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    let owner = random_key();
    let wallet = env.chain.deploy_smart_wallet(owner.address()).await.unwrap();
    env.chain.mint(wallet, 100_000).await.unwrap();
    let factory = Address::repeat_byte(0xfa);

    let b = wallet_payment(&env, wallet, &owner);
    let wrapped = wrap_6492(factory, Bytes::from_static(b"deploy"), b.sign());
    let verified = env.verifier.verify(&env.offer, &b.v2_with(wrapped)).await.expect("6492 on deployed wallet");
    assert_eq!(verified.signature, SignatureCheck::Contract(b.sign()));

    let undeployed = Address::repeat_byte(0x77);
    let b = wallet_payment(&env, undeployed, &owner);
    let digest_sig = sign_authorization_digest(&owner, b.message_digest());
    let wrapped = wrap_6492(factory, Bytes::from_static(b"deploy"), digest_sig);
    let err = env.verifier.verify(&env.offer, &b.v2_with(wrapped)).await.unwrap_err();
    assert_eq!(err, VerifyError::UndeployedSmartWallet { wallet: undeployed, factory });

    // Without the wrapper, a non-65-byte signature from an address without code is just
    // malformed.
    let err = env.verifier.verify(&env.offer, &b.v2_with(Bytes::from(vec![9u8; 80]))).await.unwrap_err();
    assert_eq!(err, VerifyError::SignatureLength { len_bytes: 80 });
}
