//! `tollgate serve`: loads the configuration, prints the relayer address and warns on low
//! gas, serves until SIGINT/SIGTERM; SIGHUP reloads the listeners' TLS certificates. Knows
//! nothing of the agent side.

use std::path::PathBuf;
use std::sync::Arc;

use tollgate_gateway::{Config, Gateway};
use tollgate_verifier::SystemClock;

pub async fn serve(path: PathBuf, log_format: Option<&str>, log_level: tracing::Level) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    // The flag wins over the file; clap has already checked its value.
    let format = match log_format {
        Some(f) => f.parse().map_err(|e: &str| anyhow::anyhow!("--log-format: {e}"))?,
        None => config.log.format,
    };
    crate::init_log(log_level, format);
    for w in &config.warnings {
        say!("tollgate: WARNING {w}");
    }
    let listen = config.server.listen;
    let gas_warn_wei = config.settlement.gas_warn_wei;
    let gw = Gateway::start(config, Arc::new(SystemClock)).await?;
    match gw.relayer() {
        Some(relayer) => {
            say!("tollgate: relayer {relayer}");
            for (chain_id, settler) in &gw.settlers {
                match settler.gas_balance().await {
                    Ok(b) if b < alloy_primitives::U256::from(gas_warn_wei) => {
                        say!("tollgate: WARNING relayer gas balance on chain {chain_id} is low: {b} wei")
                    }
                    Ok(_) => {}
                    Err(e) => say!("tollgate: WARNING cannot read relayer gas balance on chain {chain_id}: {e}"),
                }
            }
        }
        None => say!("tollgate: no relayer key configured (no priced routes)"),
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    // The admin API first: its address is printed before the line tests and scripts wait for.
    let admin = if gw.config.admin.enabled {
        let admin_listener = tokio::net::TcpListener::bind(gw.config.admin.listen).await?;
        let scheme = if gw.config.admin.tls.is_some() { "https" } else { "http" };
        say!("tollgate: admin API on {scheme}://{}", admin_listener.local_addr()?);
        Some(tokio::spawn(tollgate_gateway::serve_admin(admin_listener, gw.clone(), stopped())))
    } else {
        None
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let scheme = if gw.config.server.tls.is_some() { "https" } else { "http" };
    let hup = tokio::spawn(reload_on_sighup(gw.clone()));
    say!("tollgate: listening on {scheme}://{}", listener.local_addr()?);
    let serving = tollgate_gateway::serve(listener, gw, stopped());
    tokio::pin!(serving);
    tokio::select! {
        r = &mut serving => r?,
        () = shutdown_signal() => {
            let _ = stop_tx.send(true);
            serving.await?;
        }
    }
    let _ = stop_tx.send(true);
    hup.abort();
    if let Some(a) = admin {
        a.await??;
    }
    Ok(())
}

/// SIGHUP: reload the listeners' certificates (new connections get them; open ones keep
/// theirs). A failed reload keeps the old certificate and says why.
async fn reload_on_sighup(gw: Arc<Gateway>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
    while hup.recv().await.is_some() {
        match tollgate_gateway::reload_certificates(&gw) {
            Ok(0) => say!("tollgate: SIGHUP: no TLS certificate to reload"),
            Ok(n) => say!("tollgate: SIGHUP: {n} TLS certificate(s) reloaded"),
            Err(e) => {
                say!("tollgate: WARNING SIGHUP: TLS certificate not reloaded, the previous one keeps serving: {e}")
            }
        }
    }
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
