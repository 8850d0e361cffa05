//! `tollgate wallet`: create a key, show its address, read a token balance, show the
//! spending record (`history`, in `history.rs`). The key is
//! never printed unless `--print-key` asks for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use alloy::providers::{Provider, ProviderBuilder};
use alloy_primitives::Address;
use tollgate_client::{USDC_BASE, USDC_BASE_SEPOLIA, keys};
use tollgate_verifier::{AlloyChain, SystemClock, Verifier, VerifierConfig};
use tollgate_x402::Network;

use crate::args::{KeyArgs, TlsArgs, client_failure, keystore_password, usdc};
use crate::out::print_line;
use crate::{EXIT_CODES, EXIT_OK, EXIT_TRANSPORT, Failure};

/// Examples shown under `tollgate wallet --help` and its subcommands.
pub fn help() -> String {
    format!(
        "\
Examples:
  tollgate wallet new --out ~/.tollgate/agent.key
  TOLLGATE_KEYSTORE_PASSWORD=... tollgate wallet new --keystore agent.json
  tollgate wallet address --key-file ~/.tollgate/agent.key
  tollgate wallet balance --key-file agent.key --rpc http://127.0.0.1:8545 --network eip155:84532
  tollgate wallet history --limit 20
  tollgate wallet history --json --store ~/.tollgate/spend.json

{EXIT_CODES}"
    )
}

/// `tollgate wallet` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum WalletCommand {
    /// Create a new key and print its address.
    ///
    /// The key is written with mode 0600 to a new file (never overwritten), as hex (`--out`)
    /// or as an encrypted JSON keystore v3 (`--keystore`, password from
    /// TOLLGATE_KEYSTORE_PASSWORD). It is printed only with `--print-key`.
    #[command(after_help = help())]
    New {
        /// Write the hex key to this new file.
        #[arg(long, value_name = "FILE", conflicts_with = "keystore")]
        out: Option<PathBuf>,
        /// Write an encrypted keystore to this new file.
        #[arg(long, value_name = "FILE")]
        keystore: Option<PathBuf>,
        /// Also print the private key on stdout (after the address).
        #[arg(long)]
        print_key: bool,
    },
    /// Print the address of a key.
    #[command(after_help = help())]
    Address {
        #[command(flatten)]
        key: KeyArgs,
    },
    /// Print a token balance (an `eth_call` of `balanceOf`): atomic units on stdout, a
    /// readable line on stderr.
    #[command(after_help = help())]
    Balance {
        /// JSON-RPC URL of the chain (http or https).
        #[arg(long, value_name = "URL")]
        rpc: String,
        /// The token [default: USDC of the network, for Base and Base Sepolia].
        #[arg(long, value_name = "ADDRESS")]
        asset: Option<Address>,
        /// The chain, `eip155:<chain id>` [default: what the node reports].
        #[arg(long, value_name = "NETWORK", value_parser = Network::parse)]
        network: Option<Network>,
        /// Whose balance [default: the key's address].
        #[arg(long, value_name = "ADDRESS")]
        address: Option<Address>,
        #[command(flatten)]
        key: KeyArgs,
        #[command(flatten)]
        tls: TlsArgs,
    },
    /// Show the spending record, newest first, with the totals the budgets count per host and
    /// per UTC day (reads the file only: no key, no network).
    #[command(after_help = help())]
    History(crate::history::HistoryArgs),
}

/// Runs a wallet subcommand; returns the exit code.
pub async fn run(cmd: WalletCommand) -> Result<u8, Failure> {
    match cmd {
        WalletCommand::New { out, keystore, print_key } => new(out, keystore, print_key),
        WalletCommand::Address { key } => {
            print_line(key.load()?.address())?;
            Ok(EXIT_OK)
        }
        WalletCommand::Balance { rpc, asset, network, address, key, tls } => {
            let who = match address {
                Some(a) => a,
                None => key.load()?.address(),
            };
            balance(&rpc, asset, network, who, &tls).await
        }
        WalletCommand::History(args) => crate::history::run(args),
    }
}

fn new(out: Option<PathBuf>, keystore: Option<PathBuf>, print_key: bool) -> Result<u8, Failure> {
    if out.is_none() && keystore.is_none() && !print_key {
        return Err(Failure::usage("nothing would keep the new key: pass --out FILE, --keystore FILE or --print-key"));
    }
    let signer = keys::generate();
    if let Some(path) = &out {
        keys::write_key_file(path, &signer).map_err(client_failure)?;
        say!("tollgate: key written to {} (mode 0600)", path.display());
    }
    if let Some(path) = &keystore {
        let password = keystore_password()?;
        keys::write_keystore(path, &signer, &password).map_err(client_failure)?;
        say!("tollgate: encrypted keystore written to {} (mode 0600)", path.display());
    }
    print_line(signer.address())?;
    if print_key {
        print_line(format_args!("{:#x}", signer.to_bytes()))?;
    }
    Ok(EXIT_OK)
}

async fn balance(
    rpc: &str,
    asset: Option<Address>,
    network: Option<Network>,
    who: Address,
    tls: &TlsArgs,
) -> Result<u8, Failure> {
    let timeout = Duration::from_secs(10);
    let unreachable = |e: &dyn std::fmt::Display| Failure::new(EXIT_TRANSPORT, format!("RPC: {e}"));
    let http = tls
        .client_tls()?
        .reqwest_builder()
        .connect_timeout(timeout)
        .build()
        .map_err(|e| Failure::new(crate::EXIT_FAILURE, format!("HTTP client: {}", e.without_url())))?;
    let chain_id = match network {
        Some(n) => n.chain_id,
        None => {
            let url = rpc.parse().map_err(|_| Failure::usage("--rpc is not a valid URL"))?;
            let provider = ProviderBuilder::new().disable_recommended_fillers().connect_reqwest(http.clone(), url);
            match tokio::time::timeout(timeout, provider.get_chain_id()).await {
                Ok(Ok(id)) => id,
                // The provider's error text may carry the URL (and an API key in it); a TLS
                // failure is told with the host and reason only.
                Ok(Err(e)) => {
                    let tls = match &e {
                        alloy::transports::RpcError::Transport(alloy::transports::TransportErrorKind::Custom(err)) => {
                            tollgate_tls::tls_failure(err.as_ref())
                        }
                        _ => None,
                    };
                    return Err(match tls {
                        Some(tls) => unreachable(&tls),
                        None => unreachable(&"eth_chainId failed (node unreachable?)"),
                    });
                }
                Err(_) => return Err(unreachable(&"eth_chainId timed out")),
            }
        }
    };
    let asset = match asset {
        Some(a) => a,
        None if chain_id == Network::BASE.chain_id => USDC_BASE,
        None if chain_id == Network::BASE_SEPOLIA.chain_id => USDC_BASE_SEPOLIA,
        None => return Err(Failure::usage(format!("no default asset on chain {chain_id}: pass --asset"))),
    };
    let chain = AlloyChain::connect(rpc, chain_id, timeout, http).await.map_err(|e| unreachable(&e))?;
    let verifier = Verifier::new(vec![Arc::new(chain)], Arc::new(SystemClock), VerifierConfig::default());
    let balance = verifier.token_balance(chain_id, asset, who).await.map_err(|e| unreachable(&e))?;
    let human = if asset == USDC_BASE || asset == USDC_BASE_SEPOLIA {
        format!("{} USDC = ", usdc(balance))
    } else {
        String::new()
    };
    say!("tollgate: {human}{balance} atomic units of {asset} on eip155:{chain_id} held by {who}");
    print_line(balance)?;
    Ok(EXIT_OK)
}
