//! Serving: the router, background tasks, graceful shutdown. `main` and tests run the same
//! code: they pass a bound listener and a shutdown future.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::app::Gateway;
use crate::paid;
use crate::settlement;
use crate::{admin, control};

/// The HTTP router.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/receipts/{id}", get(paid::get_receipt))
        .route("/healthz", get(paid::healthz))
        .route("/readyz", get(crate::readiness::readyz))
        .fallback(paid::handle)
        .with_state(gw)
}

/// Serves on `listener` until `shutdown` resolves, with the recovery sweep and the
/// deferred-settlement worker running beside it.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let recovery = tokio::spawn(settlement::recovery_loop(gw.clone()));
    let watcher = tokio::spawn(control::watch(gw.clone()));
    // Readiness: the verdict paid calls read (fail closed before anything is forwarded).
    let monitor = tokio::spawn(crate::readiness::monitor(gw.clone()));
    let audit = gw.audit_rx.lock().ok().and_then(|mut rx| rx.take()).map(|rx| {
        tokio::spawn(control::audit_writer(
            gw.ledger.clone(),
            rx,
            gw.audit_pending.clone(),
            gw.config.control.audit_batch,
        ))
    });
    let worker = gw
        .deferred_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take())
        .map(|rx| tokio::spawn(settlement::deferred_worker(gw.clone(), rx)));
    let chaser = gw
        .chase_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take())
        .map(|rx| tokio::spawn(settlement::chase_worker(gw.clone(), rx)));
    // The periodic reconciliation, when `[reconciliation] interval_s` is set.
    let recon = crate::reconcile::spawn_job(&gw);
    // The peer address becomes the forwarded request's `X-Forwarded-For`.
    let app = router(gw.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    recovery.abort();
    watcher.abort();
    monitor.abort();
    if let Some(r) = recon {
        // A run cut short records nothing (its run is one transaction); its lease expires.
        r.abort();
    }
    if let Some(w) = worker {
        w.abort();
    }
    if let Some(c) = chaser {
        c.abort();
    }
    // Let the audit writer commit what the last requests queued (bounded wait).
    if let Some(a) = audit {
        wait_for_zero(&gw.audit_pending).await;
        a.abort();
    }
    result
}

/// Waits (at most 5 s) for a count of pending writes to reach zero.
async fn wait_for_zero(pending: &std::sync::atomic::AtomicU64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while pending.load(std::sync::atomic::Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Serves the admin API on its own listener until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let body_max = gw.config.admin.body_bytes_max;
    let app = admin::router(gw).layer(axum::extract::DefaultBodyLimit::max(body_max));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}
