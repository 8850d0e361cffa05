//! The periodic reconciliation job: every interval, one replica at a time (a ledger lease)
//! reconciles each network from its stored cursor to the chain head.
//!
//! Must not: stop its host: failures are logged and retried at the next tick.

use std::time::Duration;

use tollgate_x402::Network;

use crate::error::ReconcileError;
use crate::options::ReconcileOptions;
use crate::run::{ReconcileOutcome, Reconciler, reconcile_resume};

/// The periodic job's settings (the gateway's `[reconciliation]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobSettings {
    /// Time between ticks.
    pub interval: Duration,
    /// First block of the first run of a network (no cursor stored yet).
    pub start_block: u64,
    /// Most blocks per run; a longer backlog is caught up over several ticks.
    pub run_blocks_max: u64,
    /// The job's lease lasts this long (renewed before each network).
    pub lease_ttl_s: u64,
    /// Reconciliation limits.
    pub options: ReconcileOptions,
}

/// The name of the job's lease in the ledger.
pub const JOB_LEASE: &str = "reconciliation";

/// What one tick of the job did.
#[derive(Debug)]
pub enum JobTick {
    /// Another process holds the lease: nothing done.
    LeaseBusy,
    /// The outcome per configured network (`Ok(None)`: no new block).
    Ran(Vec<(Network, Result<Option<ReconcileOutcome>, ReconcileError>)>),
}

/// One tick: takes the lease (so that of several replicas one reconciles at a time),
/// reconciles every target network from its cursor to the head, records the runs and
/// releases the lease. A network's failure is reported in the result and does not stop the
/// others.
pub async fn job_tick(r: &Reconciler, instance: &str, job: &JobSettings) -> Result<JobTick, ReconcileError> {
    let mut results = Vec::new();
    for t in &r.targets {
        // Renewed before each network, so a long tick keeps it; lost only if a run outlasts
        // the TTL, in which case another replica may record a duplicate (identical) run.
        if !r.ledger.leases().try_acquire(JOB_LEASE, instance, job.lease_ttl_s, r.clock.now_unix_s()).await? {
            if results.is_empty() {
                return Ok(JobTick::LeaseBusy);
            }
            break;
        }
        let outcome = reconcile_resume(r, t.network, job.start_block, job.run_blocks_max, job.options).await;
        results.push((t.network, outcome));
    }
    r.ledger.leases().release(JOB_LEASE, instance).await?;
    Ok(JobTick::Ran(results))
}

/// Runs [`job_tick`] now and then every `interval` until the task is aborted. Errors are
/// logged and the work is retried at the next tick; nothing here can stop the server.
pub async fn job_loop(r: Reconciler, instance: String, job: JobSettings) {
    loop {
        match job_tick(&r, &instance, &job).await {
            Ok(JobTick::LeaseBusy) => tracing::debug!("reconciliation: another process holds the lease"),
            Ok(JobTick::Ran(results)) => {
                for (network, result) in results {
                    match result {
                        Ok(Some(o)) => tracing::info!(
                            %network,
                            run_id = o.run_id,
                            from_block = o.scope.from_block,
                            to_block = o.scope.to_block,
                            cursor_block = ?o.cursor_block,
                            exceptions = o.report.exceptions().count(),
                            "reconciliation run recorded"
                        ),
                        Ok(None) => tracing::debug!(%network, "reconciliation: no new block"),
                        Err(e) => tracing::warn!(%network, error = %e, "reconciliation failed; will retry"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciliation job failed; will retry"),
        }
        tokio::time::sleep(job.interval).await;
    }
}
