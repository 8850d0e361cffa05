//! Settlement on a real chain: success, receipts that are late, reverts, and relayer nonce
//! recovery.

use std::time::Duration;

use alloy::providers::Provider;
use alloy_primitives::U256;
use alloy_sol_types::SolCall;
use serde_json::json;
use tollgate_test_support::{Deployment, TokenCall, anvil_key, random_key, sign_cancel};
use tollgate_verifier::{SettleConfig, SettleOutcome, Settler, TRANSFER_TOPIC, VerifyError};

use crate::{Env, PRICE, fast_settle};

// Goal: a verified payment settles once: the payee is paid, the nonce is used, the
// receipt's Transfer log is found; a second settlement of the same payment is refused.
#[tokio::test]
async fn settles_once_and_refuses_the_replay() {
    let env = Env::start(Deployment::BaseUsdc).await;
    let verified = env.verifier.verify(&env.offer, &env.payment().v2()).await.expect("verifies");
    let SettleOutcome::Settled(settled) = env.settler.settle(&verified).await.expect("settles") else {
        panic!("expected a receipt within the timeout");
    };
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), U256::from(PRICE));
    assert!(env.chain.authorization_used(env.payer.address(), verified.authorization.nonce).await.unwrap());
    let receipt = env.rpc_receipt(settled.tx_hash).await;
    let log = receipt.logs.iter().find(|l| l.log_index == settled.log_index).expect("log at the recorded index");
    assert_eq!(log.topics[0], TRANSFER_TOPIC);
    assert_eq!(settled.block_hash, receipt.block_hash);

    let err = env.settler.settle(&verified).await.unwrap_err();
    assert!(matches!(err, VerifyError::NonceAlreadyUsed { .. }), "{err:?}");
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), U256::from(PRICE));
}

// Goal: the reads the recovery sweep pins to one block answer for that block, not the
// latest: before the settlement's block the authorization reads unused and the relayer's nonce
// open, at it used and passed; and a block the node does not have yet is an error, never the
// latest state.
#[tokio::test]
async fn pinned_reads_answer_for_their_block() {
    let env = Env::start(Deployment::BaseUsdc).await;
    let verified = env.verifier.verify(&env.offer, &env.payment().v2()).await.expect("verifies");
    let relayer = env.settler.address();
    let nonce = env.chain.provider.get_transaction_count(relayer).await.unwrap();
    let SettleOutcome::Settled(settled) = env.settler.settle(&verified).await.expect("settles") else {
        panic!("expected a receipt within the timeout");
    };
    let (block, a) = (settled.block_number, &verified.authorization);
    let used_at = |n| env.verifier.authorization_used_at(verified.chain_id, verified.asset, a.from, a.nonce, n);
    assert!(!used_at(block - 1).await.unwrap(), "unused before its block");
    assert!(used_at(block).await.unwrap(), "used at its block");
    assert!(env.settler.nonce_still_open(relayer, nonce, block - 1).await.unwrap());
    assert!(!env.settler.nonce_still_open(relayer, nonce, block).await.unwrap());
    assert!(used_at(block + 1_000).await.is_err(), "a block the node does not have");
    assert!(env.settler.nonce_still_open(relayer, nonce, block + 1_000).await.is_err());
    assert_eq!(env.settler.head().await.unwrap().0, block);
}

// Goal: transactions sent from the relayer key outside the settler (another process) do
// not wedge it: "nonce too low" is recovered from, for this settler and a second one.
#[tokio::test]
async fn relayer_nonce_recovers_from_outside_transactions() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    let first = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    env.settler.settle(&first).await.expect("first settlement");

    // Another process uses the relayer key twice.
    let other = Settler::new(env.rpc.clone(), anvil_key(9), fast_settle());
    for _ in 0..2 {
        let p = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
        other.settle(&p).await.expect("other process settles");
    }
    let mint = TokenCall::mintCall { to: random_key().address(), amount: U256::from(1u64) };
    env.chain.send_as(anvil_key(9), env.chain.token, mint.abi_encode()).await.unwrap();

    // Our settler's cached nonce is now stale by three.
    let next = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    let outcome = env.settler.settle(&next).await.expect("recovers from nonce too low");
    assert!(matches!(outcome, SettleOutcome::Settled(_)));
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), U256::from(4 * PRICE));
}

// Goal: a receipt that does not come in time yields Pending with the hash (not a failure),
// and the same hash later resolves to the settled transfer.
#[tokio::test]
async fn late_receipt_is_pending_then_settled() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    env.chain.rpc("evm_setAutomine", json!([false])).await.unwrap();
    let settler = Settler::new(
        env.rpc.clone(),
        anvil_key(9),
        SettleConfig { receipt_timeout: Duration::from_millis(100), ..fast_settle() },
    );
    let verified = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    let outcome = settler.settle(&verified).await.expect("submitted");
    let SettleOutcome::Pending { tx_hash } = outcome else { panic!("expected pending, got {outcome:?}") };
    assert_eq!(settler.check_receipt(&verified, tx_hash).await.unwrap(), None);

    env.chain.rpc("evm_mine", json!([])).await.unwrap();
    let settled = settler.check_receipt(&verified, tx_hash).await.unwrap().expect("mined now");
    assert_eq!(settled.tx_hash, tx_hash);
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), U256::from(PRICE));
}

// Goal: a settlement transaction that passes estimation but is beaten on chain (the payer
// cancels the authorization with a higher tip in the same block) is reported as reverted,
// never as settled.
#[tokio::test]
async fn transaction_beaten_in_the_same_block_reverts() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    env.chain.fund_gas(env.payer.address()).await.unwrap();
    env.chain.rpc("evm_setAutomine", json!([false])).await.unwrap();
    let payment = env.payment();
    let verified = env.verifier.verify(&env.offer, &payment.v2()).await.unwrap();
    let tx = env.settler.submit(&verified).await.expect("sent");
    let (v, r, s) = sign_cancel(&env.payer, &payment.domain(), env.payer.address(), payment.nonce);
    let cancel = TokenCall::cancelAuthorizationCall { authorizer: env.payer.address(), nonce: payment.nonce, v, r, s };
    env.chain.submit_priority(env.payer.clone(), env.chain.token, cancel.abi_encode()).await.unwrap();
    env.chain.rpc("evm_mine", json!([])).await.unwrap();
    let err = env.settler.await_receipt(&verified, tx).await.unwrap_err();
    let VerifyError::SettlementReverted { tx_hash, block_number } = err else { panic!("{err:?}") };
    assert_eq!(tx_hash, tx);
    let mined = env.rpc_receipt(tx).await;
    assert_eq!(block_number, mined.block_number);
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), U256::ZERO);
}

// Goal: a receipt without the expected Transfer (checked against the wrong transaction)
// is an error, never a settlement.
#[tokio::test]
async fn receipt_without_the_transfer_is_refused() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    let verified = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    let mint = TokenCall::mintCall { to: env.payee, amount: U256::from(PRICE) };
    let receipt = env.chain.send(env.chain.token, mint.abi_encode()).await.unwrap();
    let err = env.settler.check_receipt(&verified, receipt.transaction_hash).await.unwrap_err();
    assert!(matches!(err, VerifyError::TransferLogMissing { .. }), "{err:?}");
}

// Goal: a relayer without gas money cannot send, and says so.
#[tokio::test]
async fn unfunded_relayer_cannot_send() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    let broke = Settler::new(env.rpc.clone(), random_key(), fast_settle());
    assert_eq!(broke.gas_balance().await.unwrap(), U256::ZERO);
    let verified = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    let err = broke.settle(&verified).await.unwrap_err();
    assert!(
        matches!(&err, VerifyError::SettlementNotSent { reason } if reason.to_ascii_lowercase().contains("insufficient funds")),
        "{err:?}"
    );
    assert!(!env.chain.authorization_used(env.payer.address(), verified.authorization.nonce).await.unwrap());
}

// Goal: a refused claim sends nothing and leaves no gap in the relayer's nonces; the hash
// passed to an accepted claim is the hash of the transaction that lands.
#[tokio::test]
async fn claim_comes_before_broadcast() {
    let env = Env::start(Deployment::Fresh { chain_id: 31337 }).await;
    let verified = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    struct Refuse;
    #[async_trait::async_trait]
    impl tollgate_verifier::Claim for Refuse {
        async fn claim(&mut self, _: alloy_primitives::B256, _: alloy_primitives::Address, _: u64) -> bool {
            false
        }
    }
    struct Record(Vec<alloy_primitives::B256>);
    #[async_trait::async_trait]
    impl tollgate_verifier::Claim for Record {
        async fn claim(&mut self, tx_hash: alloy_primitives::B256, _: alloy_primitives::Address, _: u64) -> bool {
            self.0.push(tx_hash);
            true
        }
    }
    let refused =
        env.settler.submit_claimed(&verified, &mut Refuse, tollgate_verifier::GasPlan::Estimate).await.unwrap();
    assert_eq!(refused, None);
    assert!(!env.chain.authorization_used(env.payer.address(), verified.authorization.nonce).await.unwrap());

    let mut record = Record(Vec::new());
    let sent = env
        .settler
        .submit_claimed(&verified, &mut record, tollgate_verifier::GasPlan::Estimate)
        .await
        .unwrap()
        .expect("sent");
    assert!(sent.acknowledged);
    let sent = sent.tx_hash;
    assert_eq!(record.0, vec![sent]);
    let outcome = env.settler.await_receipt(&verified, sent).await.unwrap();
    assert!(matches!(outcome, SettleOutcome::Settled(s) if s.tx_hash == sent));
}
