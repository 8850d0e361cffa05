//! Integration tests of the verifier against a real anvil node with our EIP-3009 token.
//! Every `VerifyError` variant is produced here at least once.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod bad_payments;
mod batch;
mod pipeline;
mod rpc_failures;
mod settlement;
mod smart_wallet;

use std::sync::Arc;
use std::time::Duration;

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::Address;
use tollgate_test_support::{Deployment, PaymentBuilder, TestChain, anvil_key, random_key};
use tollgate_verifier::{AlloyChain, Chain, FixedClock, SettleConfig, Settler, Verifier, VerifierConfig};
use tollgate_x402::v2;

/// Price used by most tests, in atomic units (0.01 USDC).
pub const PRICE: u64 = 10_000;

/// A chain with the token, a funded payer, a payee, a verifier and a settler.
pub struct Env {
    pub chain: TestChain,
    pub rpc: Arc<AlloyChain>,
    pub clock: Arc<FixedClock>,
    pub verifier: Verifier,
    pub settler: Settler,
    pub payer: PrivateKeySigner,
    pub payee: Address,
    pub offer: v2::PaymentRequirements,
    pub now: u64,
}

impl Env {
    pub async fn start(deployment: Deployment) -> Env {
        Self::start_with(deployment, VerifierConfig::default()).await
    }

    pub async fn start_with(deployment: Deployment, mut config: VerifierConfig) -> Env {
        let chain = TestChain::start(deployment).await.expect("test chain");
        let rpc = Arc::new(
            AlloyChain::connect(
                &chain.anvil.url,
                chain.chain_id,
                Duration::from_secs(5),
                tollgate_test_support::http(),
            )
            .await
            .expect("connect"),
        );
        let now = chain.latest_timestamp().await.expect("timestamp");
        let clock = Arc::new(FixedClock::new(now));
        let relayer = anvil_key(9);
        config.simulate_from = relayer.address();
        let verifier = Verifier::new(vec![rpc.clone() as Arc<dyn Chain>], clock.clone(), config);
        let settler = Settler::new(rpc.clone(), relayer, fast_settle());
        let payer = random_key();
        chain.mint(payer.address(), 1_000_000).await.expect("mint");
        let payee = random_key().address();
        let offer = chain.offer(payee, PRICE);
        Env { chain, rpc, clock, verifier, settler, payer, payee, offer, now }
    }

    /// A valid payment by the funded payer.
    pub fn payment(&self) -> PaymentBuilder {
        PaymentBuilder::new(&self.offer, &self.payer, self.now)
    }
}

pub fn fast_settle() -> SettleConfig {
    SettleConfig {
        receipt_poll_interval: Duration::from_millis(5),
        receipt_timeout: Duration::from_secs(10),
        ..SettleConfig::default()
    }
}

impl Env {
    /// The receipt of `tx`, read through the verifier's own chain handle.
    pub async fn rpc_receipt(&self, tx: alloy_primitives::B256) -> tollgate_verifier::Receipt {
        self.rpc.receipt(tx).await.expect("receipt call").expect("mined")
    }
}
