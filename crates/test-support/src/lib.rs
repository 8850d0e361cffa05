//! The test kit: every fixture the workspace's tests, the bench and the demo use, so none
//! of them carries a harness of its own.
//!
//! - [`TestChain`]: a real anvil node on a free loopback port with our EIP-3009 token deployed
//!   (normally, or at Base's USDC address on chain 8453), funded payers, anvil's well-known
//!   keys; payment signing ([`PaymentBuilder`]) done with alloy's generic EIP-712 code —
//!   deliberately independent of the verifier's hand-rolled hashing, so each checks the other.
//! - [`ConfigBuilder`]: the gateway's TOML configuration, built instead of copied.
//! - [`MockUpstream`]: the one provider upstream: scripted per path (fixed, JSON, computed,
//!   broken deliveries, down and up again), recording headers, bodies and hit counts.
//! - [`TestGateway`]: a gateway in-process (feature `gateway`) or as the real `tollgate`
//!   binary, killable with SIGKILL and restartable on the same config.
//! - The fault kit: a JSON-RPC fault proxy in front of anvil ([`RpcFaultProxy`]), a
//!   PostgreSQL server a test can stop and start ([`ThrowawayPg`], optionally with
//!   `ssl = on`), per-test databases ([`PgDatabase`]), and a test certificate authority
//!   ([`TestCa`]) for real TLS handshakes.
//!
//! Must not be a dependency of any non-dev target. Helpers here may panic: a panic in a
//! fixture is a failed test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic, missing_docs)]

mod anvil;
mod chain;
mod config;
mod gateway;
mod pg;
mod pg_server;
mod rpc_fault;
mod serve;
mod sign;
mod tls;
mod upstream;

pub use anvil::{Anvil, workspace_root};
pub use chain::{Deployment, TestChain, TokenCall};
pub use config::{
    ConfigBuilder, NetworkConfig, ProviderConfig, RouteConfig, TomlValue, quote, sqlite_url, string_array,
};
pub use gateway::{LogSink, TestGateway};
#[cfg(feature = "gateway")]
pub use gateway::{admin_token, serve_admin, serve_paid};
pub use pg::{PgDatabase, pg_admin_url};
pub use pg_server::ThrowawayPg;
pub use rpc_fault::{ANY_METHOD, RpcFault, RpcFaultProxy};
pub use sign::{
    PaymentBuilder, sign_authorization_digest, sign_cancel, sign_transfer_authorization, v1_header, v2_header,
};
pub use tls::{IssuedCert, TestCa, http, http_builder};
pub use upstream::{MockUpstream, Recorded, Reply, Responder};

use alloy::signers::local::PrivateKeySigner;
use alloy_primitives::{Address, address};

/// Base mainnet's USDC address.
pub const BASE_USDC: Address = address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913");

/// Multicall3's canonical address (the same on every EVM chain that has it, Base included).
/// Test chains hold `contracts/src/Aggregate3.sol`'s runtime code there: the same
/// `aggregate3` ABI and meaning.
pub const MULTICALL3: Address = alloy_primitives::address!("cA11bde05977b3631167028862bE2a173976CA11");

/// anvil's default dev keys (mnemonic "test test ... junk"), index 0 to 9.
pub const ANVIL_KEYS: [&str; 10] = [
    "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "dbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/// The signer for anvil dev key `index` (0..10).
pub fn anvil_key(index: usize) -> PrivateKeySigner {
    ANVIL_KEYS[index].parse().expect("anvil dev key")
}

/// A fresh random key (for payers and payees that must start empty).
pub fn random_key() -> PrivateKeySigner {
    PrivateKeySigner::random()
}

/// The machine's load average (1, 5, 15 minutes) as `a/b/c`, printed by the benchmarks beside
/// their numbers; `unknown` where /proc/loadavg cannot be read.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join("/"))
        .unwrap_or_else(|_| "unknown".to_owned())
}
