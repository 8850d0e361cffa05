//! `tollgate reconcile`: reconciles one network's settlements over a block range against the
//! ledger, records the run, prints a summary and writes CSV or JSON (docs/reconciliation.md).
//! Knows nothing of the classification: that is `tollgate_gateway::reconcile`.

use std::path::PathBuf;
use std::sync::Arc;

use tollgate_gateway::reconcile::{ReconcileOptions, reconcile_range, render_csv, render_json};
use tollgate_gateway::{Config, Gateway};
use tollgate_verifier::SystemClock;
use tollgate_x402::Network;

use crate::{EXIT_FAILURE, EXIT_OK, Failure};

/// `tollgate reconcile` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// The gateway's configuration file (database, networks, payees).
    #[arg(long, short)]
    pub config: PathBuf,
    /// First block, inclusive.
    #[arg(long, value_name = "N")]
    pub from_block: u64,
    /// Last block, inclusive (at most the chain head).
    #[arg(long, value_name = "N")]
    pub to_block: u64,
    /// The network (CAIP-2, e.g. eip155:8453); required when several are configured.
    #[arg(long, value_name = "CAIP2", value_parser = parse_network)]
    pub network: Option<Network>,
    /// Confirmations a transfer needs, its own block included.
    #[arg(long, value_name = "N", default_value_t = ReconcileOptions::default().confirmations_min)]
    pub confirmations: u64,
    /// Blocks per eth_getLogs call.
    #[arg(long, value_name = "N", default_value_t = ReconcileOptions::default().chunk_blocks)]
    pub chunk_blocks: u64,
    /// Write the items as CSV (RFC 4180) to this file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Print the run as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

fn parse_network(s: &str) -> Result<Network, String> {
    Network::parse(s).map_err(|e| format!("`{s}`: {e}"))
}

/// Runs the reconciliation. Exit 0 when the run is recorded (exceptions are reported, not
/// failures); 1 when it could not run.
pub async fn run(args: ReconcileArgs) -> Result<u8, Failure> {
    let config = Config::load(&args.config).map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    let network = match (args.network, config.networks.as_slice()) {
        (Some(n), _) => n,
        (None, [only]) => only.network,
        (None, _) => return Err(Failure::usage("several networks are configured: pass --network eip155:<chain id>")),
    };
    let gw = Gateway::start(config, Arc::new(SystemClock)).await.map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    let opts = ReconcileOptions {
        confirmations_min: args.confirmations,
        chunk_blocks: args.chunk_blocks,
        ..ReconcileOptions::default()
    };
    let outcome = reconcile_range(&gw, network, args.from_block, args.to_block, opts)
        .await
        .map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    gw.ledger.close().await;
    if let Some(path) = &args.csv {
        std::fs::write(path, render_csv(&outcome.report))
            .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot write {}: {e}", path.display())))?;
    }
    let r = &outcome.report;
    let tie = r.tie_out(&outcome.scope.pay_to);
    let counts: Vec<String> = r.totals.counts.iter().map(|(c, n)| format!("{c}={n}")).collect();
    eprintln!(
        "tollgate: run {} blocks {}..={} cursor {} | {} | chain {} matched {} ledger {} | tie-out {}",
        outcome.run_id,
        outcome.scope.from_block,
        outcome.scope.to_block,
        outcome.cursor_block.map_or_else(|| "none".to_owned(), |c| c.to_string()),
        counts.join(" "),
        r.totals.chain_total,
        r.totals.matched_total,
        r.totals.ledger_total,
        if tie.holds { "holds" } else { "DOES NOT HOLD" },
    );
    if args.json {
        println!("{}", render_json(&outcome));
    }
    Ok(EXIT_OK)
}
