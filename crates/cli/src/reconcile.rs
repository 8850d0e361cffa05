//! `tollgate reconcile`: reconciles one network's settlements over a block range, a time range,
//! or from the stored cursor to the head, against the ledger; records the run, prints a summary
//! and writes CSV or JSON (docs/reconciliation.md). Knows nothing of the classification: that
//! is `tollgate-recon`.
//!
//! Builds only what a reconciliation needs — the configuration, the ledger, the one network's
//! chain client — and never starts a gateway: the control plane is read (the stored payees),
//! never seeded from the file or otherwise written.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tollgate_gateway::config::NetworkConfig;
use tollgate_metering::{Ledger, LedgerOptions};

use tollgate_gateway::Config;
use tollgate_recon::{
    ReconcileOptions, Reconciler, Standalone, Target, parse_time, reconcile_range, reconcile_resume, reconcile_times,
    render_csv, render_json, render_totals_csv,
};
use tollgate_verifier::{AlloyChain, SystemClock};
use tollgate_x402::Network;

use crate::{EXIT_FAILURE, EXIT_OK, Failure};

/// `tollgate reconcile` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// The gateway's configuration file (database, networks, payees).
    #[arg(long, short)]
    pub config: PathBuf,
    /// First block, inclusive (with --to-block).
    #[arg(long, value_name = "N", requires = "to_block", conflicts_with_all = ["from_time", "resume"])]
    pub from_block: Option<u64>,
    /// Last block, inclusive (at most the chain head).
    #[arg(long, value_name = "N", requires = "from_block")]
    pub to_block: Option<u64>,
    /// Start time, inclusive: RFC 3339 (2026-01-01T00:00:00Z) or unix seconds (with --to-time).
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "to_time", conflicts_with = "resume")]
    pub from_time: Option<u64>,
    /// End time, exclusive: the range ends with the last block before it.
    #[arg(long, value_name = "TIME", value_parser = parse_time, requires = "from_time")]
    pub to_time: Option<u64>,
    /// From the last stored cursor + 1 (or [reconciliation] start_block) to the chain head.
    #[arg(long)]
    pub resume: bool,
    /// The network (CAIP-2, e.g. eip155:8453); required when several are configured.
    #[arg(long, value_name = "CAIP2", value_parser = parse_network)]
    pub network: Option<Network>,
    /// Confirmations a transfer needs, its own block included [default: [reconciliation]
    /// confirmations, 10].
    #[arg(long, value_name = "N")]
    pub confirmations: Option<u64>,
    /// Blocks per eth_getLogs call [default: [reconciliation] chunk_blocks, 2000].
    #[arg(long, value_name = "N")]
    pub chunk_blocks: Option<u64>,
    /// Write the items as CSV (RFC 4180) to this file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write the totals per UTC day, UTC month, provider, route and payer as CSV to this file.
    #[arg(long, value_name = "FILE")]
    pub totals_csv: Option<PathBuf>,
    /// Print the run as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Which range a run covers.
enum Range {
    Blocks((u64, u64)),
    Times((u64, u64)),
    Resume,
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
    let defaults = config.reconciliation.options();
    let opts = ReconcileOptions {
        confirmations_min: args.confirmations.unwrap_or(defaults.confirmations_min),
        chunk_blocks: args.chunk_blocks.unwrap_or(defaults.chunk_blocks),
        ..defaults
    };
    let (start_block, blocks_max) = (config.reconciliation.start_block, config.reconciliation.run_blocks_max);
    let range = match (args.from_block.zip(args.to_block), args.from_time.zip(args.to_time), args.resume) {
        (Some(blocks), None, false) => Range::Blocks(blocks),
        (None, Some(times), false) => Range::Times(times),
        (None, None, true) => Range::Resume,
        _ => {
            return Err(Failure::usage(
                "give one range: --from-block N --to-block M, --from-time T --to-time U, or --resume",
            ));
        }
    };
    let net = config
        .network(network)
        .ok_or_else(|| Failure::new(EXIT_FAILURE, format!("network {} is not configured", network.caip2())))?;
    let units = net.units();
    let recon = connect(&config, net).await.map_err(|e| Failure::new(EXIT_FAILURE, e))?;
    let outcome = match range {
        Range::Blocks((from, to)) => reconcile_range(&recon, network, from, to, opts).await.map(Some),
        Range::Times((from, to)) => reconcile_times(&recon, network, from, to, opts).await.map(Some),
        Range::Resume => reconcile_resume(&recon, network, start_block, blocks_max, opts).await,
    };
    recon.ledger.close().await;
    let Some(outcome) = outcome.map_err(|e| Failure::new(EXIT_FAILURE, e))? else {
        say!("tollgate: nothing to reconcile: no block after the stored cursor (or start_block) yet");
        return Ok(EXIT_OK);
    };
    let write = |path: &PathBuf, text: String| {
        std::fs::write(path, text)
            .map_err(|e| Failure::new(EXIT_FAILURE, format!("cannot write {}: {e}", path.display())))
    };
    if let Some(path) = &args.csv {
        write(path, render_csv(&outcome.report, &units))?;
    }
    if let Some(path) = &args.totals_csv {
        write(path, render_totals_csv(&outcome.breakdown, &units))?;
    }
    let r = &outcome.report;
    let tie = r.tie_out(&outcome.scope.pay_to);
    let counts: Vec<String> = r.totals.counts.iter().map(|(c, n)| format!("{c}={n}")).collect();
    say!(
        "tollgate: run {} blocks {}..={} cursor {} | {} | chain {} matched {} ledger {} | tie-out {}",
        outcome.run_id,
        outcome.scope.from_block,
        outcome.scope.to_block,
        outcome.cursor_block.map_or_else(|| "none".to_owned(), |c| c.to_string()),
        counts.join(" "),
        units.label(r.totals.chain_total),
        units.label(r.totals.matched_total),
        units.label(r.totals.ledger_total),
        if tie.holds { "holds" } else { "DOES NOT HOLD" },
    );
    if args.json {
        crate::out::print_line(render_json(&outcome, &units))?;
    }
    Ok(EXIT_OK)
}

/// The ledger, the chain of `net` and the payees — the file's providers and those the admin API
/// stored, read from the control plane without seeding it — as a [`Reconciler`] whose host
/// re-checks nothing (a reopened settlement is left to the serving gateway's recovery sweep).
async fn connect(config: &Config, net: &NetworkConfig) -> Result<Reconciler, String> {
    let db = &config.database;
    let options = LedgerOptions {
        max_connections: db.max_connections,
        statement_timeout_ms: db.statement_timeout_ms,
        sqlite_synchronous_full: db.sqlite_synchronous_full,
        ..LedgerOptions::default()
    };
    let ledger = Ledger::connect(db.url.expose_secret(), options).await.map_err(|e| format!("database: {e}"))?;
    // RPC is trusted through the `[tls]` roots, like the gateway's; each call has its own
    // timeout in `AlloyChain`, this bounds the connection.
    let rpc_http = config
        .tls
        .client
        .reqwest_builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("RPC HTTP client: {e}"))?;
    let chain = AlloyChain::connect(net.rpc_url.expose_secret(), net.network.chain_id, net.rpc_timeout, rpc_http)
        .await
        .map_err(|e| format!("network {}: {e}", net.network.caip2()))?;
    let stored = tollgate_gateway::control::load(config, &ledger).await.map_err(|e| format!("database: {e}"))?;
    let mut payees = tollgate_gateway::reconcile::file_payees(config);
    payees.extend(stored.providers.iter().map(|p| p.pay_to));
    Ok(Reconciler {
        ledger,
        clock: Arc::new(SystemClock),
        targets: vec![Target { network: net.network, asset: net.asset, chain: Arc::new(chain) }],
        host: Arc::new(Standalone { payees }),
    })
}
