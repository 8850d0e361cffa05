//! Verifier demo (interim `scripts/demo.sh` until the gateway lands): a local chain that
//! pretends to be Base, an agent wallet with test USDC, one x402 v2 payment header decoded,
//! verified and settled, and a replay of the same header refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use tollgate_test_support::{Deployment, PaymentBuilder, TestChain, anvil_key, random_key};
use tollgate_verifier::{
    AlloyChain, Chain, SettleConfig, SettleOutcome, Settler, SystemClock, Verifier, VerifierConfig,
};
use tollgate_x402::{PAYMENT_HEADER_BYTES_MAX, PaymentPayload, find_offer};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("[1/5] starting anvil as Base (chain 8453), token at the Base USDC address");
    let chain = TestChain::start(Deployment::BaseUsdc).await?;
    let rpc = Arc::new(AlloyChain::connect(&chain.anvil.url, 8453, Duration::from_secs(5)).await?);
    let relayer = anvil_key(9);
    let verifier = Verifier::new(
        vec![rpc.clone() as Arc<dyn Chain>],
        Arc::new(SystemClock),
        VerifierConfig { simulate_from: relayer.address(), ..VerifierConfig::default() },
    );
    let settler = Settler::new(
        rpc,
        relayer,
        SettleConfig { receipt_poll_interval: Duration::from_millis(10), ..SettleConfig::default() },
    );

    println!("[2/5] funding an agent wallet with 1.00 test USDC");
    let agent = random_key();
    chain.mint(agent.address(), 1_000_000).await?;
    let provider = random_key().address();
    let offers = vec![chain.offer(provider, 10_000)];

    println!("[3/5] agent signs an EIP-3009 authorization for 0.01 USDC (x402 v2 header)");
    let now = chain.latest_timestamp().await?;
    let header = PaymentBuilder::new(&offers[0], &agent, now).v2().to_header()?;

    println!("[4/5] decode → match → verify → settle");
    let payment = PaymentPayload::from_header(header.as_bytes(), PAYMENT_HEADER_BYTES_MAX)?;
    let offer = find_offer(&offers, &payment)?;
    let verified = verifier.verify(offer, &payment).await?;
    let outcome = settler.settle(&verified).await?;
    let SettleOutcome::Settled(settled) = outcome else { anyhow::bail!("settlement pending: {outcome:?}") };

    println!("[5/5] replaying the same header");
    let replay = verifier.verify(offer, &payment).await.expect_err("a replay must be refused");

    println!();
    println!("  {:<22} {}", "payer (agent)", agent.address());
    println!("  {:<22} {}", "payee (provider)", provider);
    println!("  {:<22} {} atomic units (0.01 USDC)", "amount", verified.authorization.value);
    println!("  {:<22} {}", "settlement tx", settled.tx_hash);
    println!("  {:<22} {} (log index {})", "block", settled.block_number, settled.log_index);
    println!("  {:<22} {}", "provider balance", chain.balance(provider).await?);
    println!("  {:<22} refused: {}", "replay", replay.reason_code());
    Ok(())
}
