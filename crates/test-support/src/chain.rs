//! anvil with our EIP-3009 token, and the transactions tests need to set the scene.

use std::time::Duration;

use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::providers::{DynProvider, Provider, ProviderBuilder};
use alloy::rpc::types::{TransactionReceipt, TransactionRequest};
use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, B256, Bytes, U256};
use alloy_sol_types::{SolCall, SolValue, sol};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use tollgate_x402::{DecimalU256, Network, v2};

use crate::{Anvil, BASE_USDC, MULTICALL3, anvil_key};

sol! {
    /// The calls tests make on the test token and the smart wallet.
    interface TokenCall {
        function mint(address to, uint256 amount) external;
        function balanceOf(address account) external view returns (uint256);
        function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);
        function cancelAuthorization(address authorizer, bytes32 nonce, uint8 v, bytes32 r, bytes32 s) external;
        function transfer(address to, uint256 value) external returns (bool);
        function pause() external;
        function unpause() external;
        function blacklist(address account) external;
        function DOMAIN_SEPARATOR() external view returns (bytes32);
        function transferWithAuthorization(address from, address to, uint256 value, uint256 validAfter, uint256 validBefore, bytes32 nonce, bytes signature) external;
    }
}

const TOKEN_ARTIFACT: &str = include_str!("../../../contracts/artifacts/Eip3009Token.json");
const WALLET_ARTIFACT: &str = include_str!("../../../contracts/artifacts/SmartWallet1271.json");
const AGGREGATE3_ARTIFACT: &str = include_str!("../../../contracts/artifacts/Aggregate3.json");

fn artifact_hex(artifact: &str, key: &str) -> Bytes {
    let v: Value = serde_json::from_str(artifact).expect("artifact JSON");
    v[key].as_str().expect("artifact field").parse().expect("artifact hex")
}

/// Where the token lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deployment {
    /// Chain 8453, runtime code placed at Base's USDC address ("pretend to be Base").
    BaseUsdc,
    /// Deployed by a normal transaction on a chain with this id (31337 for anvil's default).
    Fresh {
        /// The chain id anvil runs with.
        chain_id: u64,
    },
}

/// A running anvil with the token, and a funded deployer (anvil key 0) that mints.
pub struct TestChain {
    /// The node.
    pub anvil: Anvil,
    /// The token address.
    pub token: Address,
    /// Chain id.
    pub chain_id: u64,
    /// Provider signing as anvil key 0.
    pub provider: DynProvider,
}

impl std::fmt::Debug for TestChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestChain").field("url", &self.anvil.url).field("token", &self.token).finish()
    }
}

impl TestChain {
    /// Starts anvil and puts the token in place.
    pub async fn start(deployment: Deployment) -> anyhow::Result<TestChain> {
        let chain_id = match deployment {
            Deployment::BaseUsdc => 8453,
            Deployment::Fresh { chain_id } => chain_id,
        };
        let anvil = Anvil::spawn(chain_id).await?;
        let provider = Self::provider_for(&anvil.url, anvil_key(0));
        let mut chain = TestChain { anvil, token: Address::ZERO, chain_id, provider };
        chain.token = match deployment {
            Deployment::BaseUsdc => {
                let code = artifact_hex(TOKEN_ARTIFACT, "deployedBytecode");
                chain.rpc("anvil_setCode", json!([BASE_USDC, code])).await?;
                BASE_USDC
            }
            Deployment::Fresh { .. } => chain.deploy(artifact_hex(TOKEN_ARTIFACT, "bytecode")).await?,
        };
        // Batched settlement calls Multicall3 at its canonical address, as on a real network.
        let aggregate3 = artifact_hex(AGGREGATE3_ARTIFACT, "deployedBytecode");
        chain.rpc("anvil_setCode", json!([MULTICALL3, aggregate3])).await?;
        Ok(chain)
    }

    fn provider_for(url: &str, key: PrivateKeySigner) -> DynProvider {
        ProviderBuilder::new()
            .wallet(EthereumWallet::from(key))
            .connect_reqwest(crate::http(), url.parse().expect("url"))
            .erased()
    }

    /// The network id of this chain.
    pub fn network(&self) -> Network {
        Network::new(self.chain_id)
    }

    /// A v2 offer for `amount` atomic units paid to `pay_to`, with the token's domain.
    pub fn offer(&self, pay_to: Address, amount: u64) -> v2::PaymentRequirements {
        let mut extra = serde_json::Map::new();
        extra.insert("name".into(), "USD Coin".into());
        extra.insert("version".into(), "2".into());
        v2::PaymentRequirements {
            scheme: "exact".into(),
            network: self.network(),
            amount: DecimalU256::from(amount),
            asset: self.token,
            pay_to,
            max_timeout_seconds: 60,
            extra,
        }
    }

    /// A raw JSON-RPC request (anvil_* and evm_* methods).
    pub async fn rpc(&self, method: &'static str, params: Value) -> anyhow::Result<Value> {
        Ok(self.provider.raw_request(method.into(), params).await?)
    }

    /// Deploys creation code from anvil key 0; returns the contract address.
    pub async fn deploy(&self, creation_code: Bytes) -> anyhow::Result<Address> {
        let tx = TransactionRequest::default().with_deploy_code(creation_code);
        let receipt = self.send_tx(&self.provider, tx).await?;
        receipt.contract_address.context("no contract address in receipt")
    }

    /// Deploys an ERC-1271 wallet owned by `owner`.
    pub async fn deploy_smart_wallet(&self, owner: Address) -> anyhow::Result<Address> {
        let mut code = artifact_hex(WALLET_ARTIFACT, "bytecode").to_vec();
        code.extend_from_slice(&owner.abi_encode());
        self.deploy(code.into()).await
    }

    /// Sends a transaction from anvil key 0 and waits for a successful receipt.
    pub async fn send(&self, to: Address, data: impl Into<Bytes>) -> anyhow::Result<TransactionReceipt> {
        let tx = TransactionRequest::default().with_to(to).with_input(data.into());
        self.send_tx(&self.provider, tx).await
    }

    /// Sends a transaction signed by `key` (which needs gas: see [`TestChain::fund_gas`]).
    pub async fn send_as(
        &self,
        key: PrivateKeySigner,
        to: Address,
        data: impl Into<Bytes>,
    ) -> anyhow::Result<TransactionReceipt> {
        let provider = Self::provider_for(&self.anvil.url, key);
        let tx = TransactionRequest::default().with_to(to).with_input(data.into());
        self.send_tx(&provider, tx).await
    }

    /// Sends a transaction signed by `key` with a high priority fee (so it is ordered first
    /// in the next block) and returns its hash without waiting for it to be mined.
    pub async fn submit_priority(
        &self,
        key: PrivateKeySigner,
        to: Address,
        data: impl Into<Bytes>,
    ) -> anyhow::Result<B256> {
        let provider = Self::provider_for(&self.anvil.url, key);
        let gwei: u128 = 1_000_000_000;
        let tx = TransactionRequest::default()
            .with_to(to)
            .with_input(data.into())
            .with_max_priority_fee_per_gas(100 * gwei)
            .with_max_fee_per_gas(200 * gwei)
            .with_gas_limit(300_000);
        Ok(*provider.send_transaction(tx).await?.tx_hash())
    }

    async fn send_tx(&self, provider: &DynProvider, tx: TransactionRequest) -> anyhow::Result<TransactionReceipt> {
        let hash = *provider.send_transaction(tx).await?.tx_hash();
        for _ in 0..2000 {
            if let Some(r) = provider.get_transaction_receipt(hash).await? {
                if !r.status() {
                    bail!("transaction {hash} reverted");
                }
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        bail!("no receipt for {hash}")
    }

    /// A read-only call.
    pub async fn call(&self, to: Address, data: impl Into<Bytes>) -> anyhow::Result<Bytes> {
        let tx = TransactionRequest::default().with_to(to).with_input(data.into());
        Ok(self.provider.call(tx).await?)
    }

    /// Mints `amount` atomic units to `to`.
    pub async fn mint(&self, to: Address, amount: u64) -> anyhow::Result<()> {
        self.send(self.token, TokenCall::mintCall { to, amount: U256::from(amount) }.abi_encode()).await?;
        Ok(())
    }

    /// A fresh payer holding `amount` atomic units of the token (no gas: payers only sign).
    pub async fn funded_payer(&self, amount: u64) -> anyhow::Result<PrivateKeySigner> {
        let payer = crate::random_key();
        if amount > 0 {
            self.mint(payer.address(), amount).await?;
        }
        Ok(payer)
    }

    /// Token balance of `who`.
    pub async fn balance(&self, who: Address) -> anyhow::Result<U256> {
        let out = self.call(self.token, TokenCall::balanceOfCall { account: who }.abi_encode()).await?;
        Ok(U256::abi_decode(&out)?)
    }

    /// Whether `authorizer` has used or cancelled `nonce`.
    pub async fn authorization_used(&self, authorizer: Address, nonce: B256) -> anyhow::Result<bool> {
        let out = self.call(self.token, TokenCall::authorizationStateCall { authorizer, nonce }.abi_encode()).await?;
        Ok(bool::abi_decode(&out)?)
    }

    /// Gives `who` native currency for gas.
    pub async fn fund_gas(&self, who: Address) -> anyhow::Result<()> {
        let wei = U256::from(10u64).pow(U256::from(20u64));
        self.rpc("anvil_setBalance", json!([who, wei])).await?;
        Ok(())
    }

    /// Timestamp of the latest block.
    pub async fn latest_timestamp(&self) -> anyhow::Result<u64> {
        let block = self.provider.get_block_by_number(alloy::eips::BlockNumberOrTag::Latest).await?;
        Ok(block.context("no latest block")?.header.timestamp)
    }

    /// Sets the next block's timestamp and mines it.
    pub async fn warp_to(&self, timestamp: u64) -> anyhow::Result<()> {
        self.rpc("evm_setNextBlockTimestamp", json!([timestamp])).await?;
        self.rpc("evm_mine", json!([])).await?;
        Ok(())
    }
}
