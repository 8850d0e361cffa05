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

/// The HTTP router.
pub fn router(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route("/receipts/{id}", get(paid::get_receipt))
        .route("/healthz", get(paid::healthz))
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
    let worker = gw
        .deferred_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take())
        .map(|rx| tokio::spawn(settlement::deferred_worker(gw.clone(), rx)));
    // The periodic reconciliation, when `[reconciliation] interval_s` is set.
    let recon = crate::reconcile::spawn_job(&gw);
    let result = axum::serve(listener, router(gw)).with_graceful_shutdown(shutdown).await;
    recovery.abort();
    if let Some(r) = recon {
        // A run cut short records nothing (its run is one transaction); its lease expires.
        r.abort();
    }
    if let Some(w) = worker {
        w.abort();
    }
    result
}
