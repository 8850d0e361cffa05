//! The pipelined relayer: many settlements from one key at once, a nonce given back while a
//! higher one is in flight, and the RPC calls a paid call's settlement no longer makes.

use std::sync::Arc;
use std::time::Duration;

use alloy::providers::Provider;
use alloy_primitives::{Address, B256, U256};
use tokio::sync::Notify;
use tollgate_test_support::{Deployment, anvil_key};
use tollgate_verifier::{AlwaysClaim, Claim, GasPlan, SettleConfig, SettleOutcome, Settler};

use crate::{Env, PRICE, fast_settle};

fn calls(env: &Env, method: &str) -> u64 {
    env.rpc.stats().snapshot().iter().find(|(m, _)| *m == method).map(|(_, c)| c.calls).unwrap_or(0)
}

// Goal: 24 settlements started at once from one settler all land, each with its own relayer
// nonce and nothing else sent (no nonce handed out twice, none skipped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_settlements_take_consecutive_nonces() {
    let env = Env::start(Deployment::BaseUsdc).await;
    let relayer = anvil_key(9).address();
    let before = env.chain.provider.get_transaction_count(relayer).await.unwrap();
    let mut payments = Vec::new();
    for _ in 0..24 {
        payments.push(env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap());
    }
    let settles = payments.iter().map(|p| env.settler.settle(p));
    let outcomes = futures_util::future::join_all(settles).await;
    let mut hashes = std::collections::HashSet::new();
    for o in outcomes {
        let Ok(SettleOutcome::Settled(s)) = o else { panic!("not settled: {o:?}") };
        assert!(hashes.insert(s.tx_hash));
    }
    assert_eq!(env.chain.provider.get_transaction_count(relayer).await.unwrap(), before + 24);
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), U256::from(24 * PRICE));
}

/// Refuses its claim once the other settlement has claimed a higher nonce.
struct RefuseAfterOther {
    entered: Arc<Notify>,
    other_claimed: Arc<Notify>,
}

#[async_trait::async_trait]
impl Claim for RefuseAfterOther {
    async fn claim(&mut self, _tx: B256, _relayer: Address, _nonce: u64) -> bool {
        self.entered.notify_one();
        self.other_claimed.notified().await;
        false
    }
}

/// Records its nonce and tells the other claim.
struct ClaimAndTell {
    other_claimed: Arc<Notify>,
    nonce: Option<u64>,
}

#[async_trait::async_trait]
impl Claim for ClaimAndTell {
    async fn claim(&mut self, _tx: B256, _relayer: Address, nonce: u64) -> bool {
        self.nonce = Some(nonce);
        self.other_claimed.notify_one();
        true
    }
}

// Goal: a settlement whose claim is refused after a later settlement took the next nonce
// gives its nonce back as a gap; the settler fills it (a zero-value self-transfer), so the
// later transaction, queued behind the gap at the node, lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nonce_given_back_below_a_sent_one_is_filled() {
    let env = Env::start(Deployment::BaseUsdc).await;
    let relayer = anvil_key(9).address();
    let before = env.chain.provider.get_transaction_count(relayer).await.unwrap();
    let a = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    let b = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    let (entered, other_claimed) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let mut refuse = RefuseAfterOther { entered: entered.clone(), other_claimed: other_claimed.clone() };
    let mut tell = ClaimAndTell { other_claimed, nonce: None };
    let first = env.settler.submit_claimed(&a, &mut refuse, GasPlan::Estimate);
    let second = async {
        entered.notified().await; // `a` holds its nonce and is claiming
        env.settler.submit_claimed(&b, &mut tell, GasPlan::Estimate).await
    };
    let (first, second) = tokio::join!(first, second);
    assert_eq!(first.unwrap(), None, "the refused claim sends nothing");
    let sent = second.unwrap().expect("the second settlement is sent");
    assert_eq!(tell.nonce, Some(before + 1), "the second settlement took the next nonce");
    let outcome = env.settler.await_receipt(&b, sent.tx_hash).await.unwrap();
    assert!(matches!(outcome, SettleOutcome::Settled(_)), "queued behind the gap: {outcome:?}");
    assert_eq!(env.chain.provider.get_transaction_count(relayer).await.unwrap(), before + 2);
    assert!(!env.chain.authorization_used(a.payer(), a.authorization.nonce).await.unwrap());
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), U256::from(PRICE));
}

// Goal: a paid call's settlement (its transfer simulated by the verifier moments ago) makes
// no `eth_estimateGas` once the token's gas is known, and fee caps are read once per
// `fee_cache`; what it sends still lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_payments_skip_the_estimate_and_share_fees() {
    let env = Env::start(Deployment::BaseUsdc).await;
    let settler = Settler::new(
        env.rpc.clone(),
        anvil_key(9),
        SettleConfig { fee_cache: Duration::from_secs(600), ..fast_settle() },
    );
    let mut hashes = Vec::new();
    let mut payments = Vec::new();
    for _ in 0..3 {
        let p = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
        let sent = settler.submit_claimed(&p, &mut AlwaysClaim, GasPlan::Simulated).await.unwrap().unwrap();
        hashes.push(sent.tx_hash);
        payments.push(p);
    }
    assert_eq!(calls(&env, "eth_estimateGas"), 1, "only the token's first payment is estimated");
    assert_eq!(calls(&env, "eth_gasPrice"), 1, "fees read once");
    for (p, h) in payments.iter().zip(hashes) {
        assert!(matches!(settler.await_receipt(p, h).await.unwrap(), SettleOutcome::Settled(_)));
    }
    assert_eq!(env.chain.balance(env.payee).await.unwrap(), U256::from(3 * PRICE));
}

// Goal: a payment that verifies costs one `eth_call` (the simulated transfer), plus one
// `eth_getCode` for the token's first payment only; a refused one still names its reason
// (the nonce state and balance are read when the simulation reverts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_payment_costs_one_call() {
    let env = Env::start(Deployment::BaseUsdc).await;
    for _ in 0..3 {
        env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    }
    assert_eq!(calls(&env, "eth_call"), 3);
    assert_eq!(calls(&env, "eth_getCode"), 1);
    let unfunded = tollgate_test_support::random_key();
    let payment = tollgate_test_support::PaymentBuilder::new(&env.offer, &unfunded, env.now);
    let err = env.verifier.verify(&env.offer, &payment.v2()).await.unwrap_err();
    assert!(matches!(err, tollgate_verifier::VerifyError::InsufficientBalance { .. }), "{err:?}");
    assert_eq!(calls(&env, "eth_call"), 6, "the simulation, then the nonce state and the balance");
}

/// A claim that never answers (its caller gives up first).
struct Hang;

#[async_trait::async_trait]
impl Claim for Hang {
    async fn claim(&mut self, _tx: B256, _relayer: Address, _nonce: u64) -> bool {
        std::future::pending::<()>().await;
        false
    }
}

// Goal: a settlement dropped while it holds a nonce (its caller's timeout fired during the
// claim) does not wedge the relayer: the nonce is given back, the count read again, and the
// next settlement lands with that very nonce (found by review: the nonce stayed in flight
// forever and every later settlement waited or queued behind a gap).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_settlement_gives_its_nonce_back() {
    let env = Env::start(Deployment::BaseUsdc).await;
    let relayer = anvil_key(9).address();
    let before = env.chain.provider.get_transaction_count(relayer).await.unwrap();
    let a = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    let dropped =
        tokio::time::timeout(Duration::from_millis(300), env.settler.submit_claimed(&a, &mut Hang, GasPlan::Estimate))
            .await;
    assert!(dropped.is_err(), "the hung claim was given up");
    let b = env.verifier.verify(&env.offer, &env.payment().v2()).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), env.settler.settle(&b)).await.expect("not wedged");
    assert!(matches!(outcome, Ok(SettleOutcome::Settled(_))), "{outcome:?}");
    assert_eq!(env.chain.provider.get_transaction_count(relayer).await.unwrap(), before + 1, "no gap, no filler");
}
