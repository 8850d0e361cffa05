//! The gateway's side of reconciliation (`tollgate-recon` does the work): the [`Reconciler`]
//! built from the gateway's state — the configured networks and their chains, the payees of
//! the file and of the live control plane, and the settlement re-check of an entry a run
//! reopened — the options of `[reconciliation]`, and the periodic job that `server` starts.
//! The admin API's finance endpoints (`admin`) call these.
//!
//! Must not: read chain logs, classify or render (that is `tollgate-recon`).

use std::sync::Arc;

use alloy_primitives::Address;
use tollgate_metering::EntryId;
use tollgate_recon::{Host, JobSettings, Reconciler, Target};

use crate::Gateway;
use crate::config::{Config, ReconciliationConfig};

/// The job of `[reconciliation]`, or `None` when `interval_s` is absent (disabled).
pub fn job_settings(c: &ReconciliationConfig) -> Option<JobSettings> {
    Some(JobSettings {
        interval: c.interval?,
        start_block: c.start_block,
        run_blocks_max: c.run_blocks_max,
        lease_ttl_s: c.lease_ttl_s,
        options: c.options(),
    })
}

/// The payees of the file's providers.
pub fn file_payees(config: &Config) -> Vec<Address> {
    config.providers.iter().map(|p| p.pay_to).collect()
}

/// The gateway as a reconciliation host: every payee the live control plane knows, and the
/// settlement re-check of a reopened entry.
struct GatewayHost(Arc<Gateway>);

#[async_trait::async_trait]
impl Host for GatewayHost {
    fn payees(&self) -> Vec<Address> {
        let snapshot = self.0.live.get();
        let mut payees = file_payees(&self.0.config);
        payees.extend(snapshot.providers.iter().map(|p| p.pay_to));
        payees
    }

    async fn reopened(&self, id: &EntryId) {
        crate::settlement::recheck(&self.0.settlements, id).await;
    }
}

/// The reconciler of this gateway: its ledger and clock, every configured network's chain.
pub fn reconciler(gw: &Arc<Gateway>) -> Reconciler {
    let targets = gw
        .config
        .networks
        .iter()
        .filter_map(|n| {
            let chain = gw.verifier.chain(n.network.chain_id).ok()?.clone();
            Some(Target { network: n.network, asset: n.asset, chain })
        })
        .collect();
    Reconciler { ledger: gw.ledger.clone(), clock: gw.clock.clone(), targets, host: Arc::new(GatewayHost(gw.clone())) }
}

/// Starts the periodic job when `[reconciliation] interval_s` is set.
pub fn spawn_job(gw: &Arc<Gateway>) -> Option<tokio::task::JoinHandle<()>> {
    let job = job_settings(&gw.config.reconciliation)?;
    Some(tokio::spawn(tollgate_recon::job_loop(reconciler(gw), gw.instance.clone(), job)))
}
