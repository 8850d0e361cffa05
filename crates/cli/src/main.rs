//! The `tollgate` binary. `serve` runs the gateway from a configuration file.
//!
//! Errors are printed as one readable line (no backtrace) and exit non-zero.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tollgate_gateway::{Config, Gateway};
use tollgate_verifier::SystemClock;

/// Tollgate: a pay-per-call gateway for AI agents (x402, USDC, EIP-3009).
#[derive(Debug, Parser)]
#[command(name = "tollgate", version, about)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    ///
    /// Example:
    ///   TOLLGATE_RELAYER_KEY=0x... WEATHER_API_KEY=... tollgate serve --config tollgate.toml
    Serve {
        /// The configuration file (see docs/configuration.md).
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt().with_max_level(cli.log_level).with_target(false).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tollgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve(config).await,
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    let listen = config.server.listen;
    let gas_warn_wei = config.settlement.gas_warn_wei;
    let gw = Gateway::start(config, Arc::new(SystemClock)).await?;
    match gw.relayer() {
        Some(relayer) => {
            eprintln!("tollgate: relayer {relayer}");
            for (chain_id, settler) in &gw.settlers {
                match settler.gas_balance().await {
                    Ok(b) if b < alloy_primitives::U256::from(gas_warn_wei) => {
                        eprintln!("tollgate: WARNING relayer gas balance on chain {chain_id} is low: {b} wei")
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("tollgate: WARNING cannot read relayer gas balance on chain {chain_id}: {e}"),
                }
            }
        }
        None => eprintln!("tollgate: WARNING no relayer key configured: paid routes cannot settle"),
    }
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("tollgate: listening on http://{}", listener.local_addr()?);
    tollgate_gateway::serve(listener, gw, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
