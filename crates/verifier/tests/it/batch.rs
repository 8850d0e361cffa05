//! Batched settlement on a real chain: many payments in one `aggregate3` transaction at
//! Multicall3's address, each payment's outcome read from its own `AuthorizationUsed` log.

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, U256};
use alloy_sol_types::SolCall;
use serde_json::json;
use tollgate_test_support::{Deployment, PaymentBuilder, TokenCall, sign_cancel};
use tollgate_verifier::{
    AUTHORIZATION_USED_TOPIC, BatchItem, BatchOutcome, Chain, Claim, MULTICALL3, TRANSFER_TOPIC, VerifiedPayment,
    VerifyError,
};

use crate::{Env, PRICE};

/// A claim that records every hash it is asked for, and refuses when told to.
struct Record {
    hashes: Vec<B256>,
    accept: bool,
}

#[async_trait::async_trait]
impl Claim for Record {
    async fn claim(&mut self, tx_hash: B256, _: Address, _: u64) -> bool {
        self.hashes.push(tx_hash);
        self.accept
    }
}

/// `n` payments to the env's payee: the env's payer pays twice (the same payer, payee and
/// value: only the authorization nonce tells the two apart), the others once each.
async fn payments(env: &Env, n: usize) -> (Vec<PaymentBuilder>, Vec<PrivateKeySigner>, Vec<VerifiedPayment>) {
    let mut keys = vec![env.payer.clone(), env.payer.clone()];
    while keys.len() < n {
        keys.push(env.chain.funded_payer(1_000_000).await.unwrap());
    }
    let builders: Vec<PaymentBuilder> = keys.iter().map(|k| PaymentBuilder::new(&env.offer, k, env.now)).collect();
    let mut verified = Vec::new();
    for b in &builders {
        verified.push(env.verifier.verify(&env.offer, &b.v2()).await.expect("verifies"));
    }
    (builders, keys, verified)
}

fn cancel_call(key: &PrivateKeySigner, b: &PaymentBuilder) -> Vec<u8> {
    let (v, r, s) = sign_cancel(key, &b.domain(), key.address(), b.nonce);
    TokenCall::cancelAuthorizationCall { authorizer: key.address(), nonce: b.nonce, v, r, s }.abi_encode()
}

// Goal: one transaction settles a batch whose inner call for one payment fails on chain (its
// payer cancels in the same block, ahead of the batch): that payment alone is `Failed`, the
// others settle, each with the index of its own Transfer log, found through its own
// AuthorizationUsed (two payments share payer, payee and value); the hash was claimed once,
// before the broadcast.
#[tokio::test]
async fn one_failed_call_fails_alone() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    let (builders, keys, verified) = payments(&env, 5).await;
    assert!(env.settler.simulate_batch(&verified).await.unwrap().iter().all(Result::is_ok));
    env.chain.fund_gas(keys[2].address()).await.unwrap();
    env.chain.rpc("evm_setAutomine", json!([false])).await.unwrap();
    let mut record = Record { hashes: Vec::new(), accept: true };
    let sent = env.settler.submit_batch(&verified, &mut record).await.unwrap().expect("sent");
    assert!(sent.acknowledged);
    assert_eq!(record.hashes, vec![sent.tx_hash]);
    env.chain.submit_priority(keys[2].clone(), env.chain.token, cancel_call(&keys[2], &builders[2])).await.unwrap();
    env.chain.rpc("evm_mine", json!([])).await.unwrap();

    let outcome = env.settler.await_batch_receipt(&verified, sent.tx_hash, std::time::Duration::from_millis(5)).await;
    let BatchOutcome::Mined(items) = outcome.unwrap() else { panic!("expected the batch mined") };
    assert_eq!(items.len(), 5);
    assert_eq!(items[2], BatchItem::Failed { tx_hash: sent.tx_hash });
    let receipt = env.rpc_receipt(sent.tx_hash).await;
    let mut indexes = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if i == 2 {
            continue;
        }
        let BatchItem::Settled(s) = item else { panic!("payment {i} not settled: {item:?}") };
        assert_eq!(s.tx_hash, sent.tx_hash);
        let transfer = receipt.logs.iter().find(|l| l.log_index == s.log_index).expect("log at the index");
        assert_eq!(transfer.topics[0], TRANSFER_TOPIC);
        assert_eq!(transfer.topics[1], keys[i].address().into_word());
        // The log just before it is this payment's own AuthorizationUsed.
        let used = receipt.logs.iter().find(|l| l.log_index + 1 == s.log_index).expect("log before");
        assert_eq!(used.topics, vec![AUTHORIZATION_USED_TOPIC, keys[i].address().into_word(), builders[i].nonce]);
        indexes.push(s.log_index);
    }
    indexes.dedup();
    assert_eq!(indexes.len(), 4, "each payment has its own Transfer log");
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), U256::from(4 * PRICE));
    for (i, b) in builders.iter().enumerate() {
        assert!(env.chain.authorization_used(keys[i].address(), b.nonce).await.unwrap());
    }
    // The receipt of the batch read as a single settlement finds each payment's own transfer.
    let single = env.settler.check_receipt(&verified[1], sent.tx_hash).await.unwrap().expect("mined");
    assert!(matches!(&items[1], BatchItem::Settled(s) if *s == single));
    let err = env.settler.check_receipt(&verified[2], sent.tx_hash).await.unwrap_err();
    assert!(matches!(err, VerifyError::TransferLogMissing { .. }), "{err:?}");
}

// Goal: the simulation names a payment the token would refuse (cancelled before the batch)
// and passes the others; a refused claim sends nothing and leaves no nonce gap; the batch of
// the others then settles; a batch naming one authorization twice, or none, is refused
// before anything is signed.
#[tokio::test]
async fn simulation_leaves_out_a_refused_payment() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    let (builders, keys, verified) = payments(&env, 4).await;
    env.chain.fund_gas(keys[3].address()).await.unwrap();
    env.chain.send_as(keys[3].clone(), env.chain.token, cancel_call(&keys[3], &builders[3])).await.unwrap();
    let simulated = env.settler.simulate_batch(&verified).await.unwrap();
    assert!(simulated[..3].iter().all(Result::is_ok), "{simulated:?}");
    assert!(matches!(simulated[3], Err(VerifyError::NonceAlreadyUsed { .. })), "{simulated:?}");

    let good = &verified[..3];
    let mut refuse = Record { hashes: Vec::new(), accept: false };
    assert_eq!(env.settler.submit_batch(good, &mut refuse).await.unwrap(), None);
    assert_eq!(refuse.hashes.len(), 1);
    assert!(!env.chain.authorization_used(keys[0].address(), builders[0].nonce).await.unwrap());

    let mut record = Record { hashes: Vec::new(), accept: true };
    let sent = env.settler.submit_batch(good, &mut record).await.unwrap().expect("sent");
    let BatchOutcome::Mined(items) =
        env.settler.await_batch_receipt(good, sent.tx_hash, std::time::Duration::from_millis(5)).await.unwrap()
    else {
        panic!("expected the batch mined");
    };
    assert!(items.iter().all(|i| matches!(i, BatchItem::Settled(_))), "{items:?}");
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), U256::from(3 * PRICE));

    let twice = vec![verified[0].clone(), verified[0].clone()];
    let err = env.settler.submit_batch(&twice, &mut record).await.unwrap_err();
    assert!(matches!(err, VerifyError::SettlementNotSent { .. }), "{err:?}");
    let err = env.settler.simulate_batch(&[]).await.unwrap_err();
    assert!(matches!(err, VerifyError::SettlementNotSent { .. }), "{err:?}");
    assert_eq!(record.hashes.len(), 1, "nothing signed for a refused batch");
    // The aggregator is where the settler sends.
    assert_ne!(env.rpc.code_len(MULTICALL3).await.unwrap(), 0);
}
