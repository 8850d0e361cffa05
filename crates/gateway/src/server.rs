//! Serving: the router, background tasks, graceful shutdown. `main` and tests run the same
//! code: they pass a bound listener and a shutdown future.
//!
//! A listener whose configuration names a certificate (`[server]`/`[admin]`
//! `tls_cert_file`) serves HTTPS: handshakes complete off the accept loop (the public
//! listener's in each connection's task under its limits, `crate::listener`; the admin
//! listener's in `tollgate_tls::TlsIncoming`), and the certificate reloads on
//! [`reload_certificates`] (SIGHUP, called by `main`) or when its files change, without
//! dropping connections.

use std::future::Future;
use std::sync::Arc;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tollgate_tls::{ServerCert, TlsIncoming};

use crate::app::Gateway;
use crate::paid;
use crate::readyz::ReadinessChecks;
use crate::settlement;
use crate::{admin, control, discovery};

/// The HTTP router, with the request limits of `[server]` (`crate::limits`): the probes
/// (`/healthz`, `/readyz`) are never shed nor rate limited.
pub fn router(gw: Arc<Gateway>) -> Router {
    let checks = Arc::new(ReadinessChecks::new(&gw));
    routes(gw, checks)
}

/// [`router`] with the readiness checks `serve` composed.
fn routes(gw: Arc<Gateway>, checks: Arc<ReadinessChecks>) -> Router {
    let probes = Router::new()
        .route("/healthz", get(paid::healthz))
        .with_state(gw.clone())
        .merge(Router::new().route("/readyz", get(crate::readyz::readyz)).with_state(checks));
    let calls = Router::new()
        .route("/receipts/{id}", get(paid::get_receipt))
        .route("/discovery/resources", get(discovery::resources))
        .route("/.well-known/x402.json", get(discovery::well_known))
        .route("/openapi.json", get(discovery::openapi))
        .fallback(paid::handle)
        .with_state(gw.clone());
    crate::limits::layered(&gw, probes, calls)
}

/// Serves on `listener` until `shutdown` resolves, with the recovery sweep and the
/// deferred-settlement worker running beside it.
///
/// The services it composes from the gateway's parts: the readiness checks
/// (`crate::readyz::ReadinessChecks`: the first check before anything is served, then the
/// monitor, and `/readyz`), the settlement workers on `Gateway::settlements`, the control
/// watcher, the audit writer, the reconciliation job and the certificate watcher.
pub async fn serve(
    listener: TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_then(listener, gw, shutdown, || {}).await
}

/// [`serve`], calling `serving` once the first readiness check is made and the workers are
/// started, just before connections are accepted: a caller that changes the world the check
/// reads (a test draining the relayer) waits for it, so the check cannot see that change.
pub async fn serve_then(
    listener: TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    serving: impl FnOnce(),
) -> std::io::Result<()> {
    // The first readiness verdict before anything is served (every network is open until
    // then); the monitor keeps it current from then on.
    let checks = Arc::new(ReadinessChecks::new(&gw));
    checks.check().await;
    let recovery = tokio::spawn(settlement::recovery_loop(gw.settlements.clone()));
    let watcher = tokio::spawn(control::watch(gw.clone()));
    // Readiness: the verdict paid calls read (fail closed before anything is forwarded).
    let monitor = tokio::spawn(checks.clone().monitor());
    let audit = gw
        .audit_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take())
        .map(|rx| tokio::spawn(control::audit_writer(gw.ledger.clone(), rx, gw.config.control.audit_batch)));
    let worker = gw
        .settlements
        .deferred_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take())
        .map(|rx| tokio::spawn(settlement::deferred_worker(gw.settlements.clone(), rx)));
    let chaser = gw
        .settlements
        .chase_rx
        .lock()
        .ok()
        .and_then(|mut rx| rx.take())
        .map(|rx| tokio::spawn(settlement::chase_worker(gw.settlements.clone(), rx)));
    // The periodic reconciliation, when `[reconciliation] interval_s` is set.
    let recon = crate::reconcile::spawn_job(&gw);
    let reload = spawn_cert_watcher(&gw);
    serving();
    // Our own accept loop under the connection limits, plain or TLS (`crate::listener`); the
    // peer address becomes the forwarded request's `X-Forwarded-For` and the per-IP key.
    let result = crate::listener::serve_connections(listener, routes(gw.clone(), checks), gw.clone(), shutdown).await;
    if let Some(r) = reload {
        r.abort();
    }
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
        // Closing only lets `wait` finish once the queue is empty: a record queued after it
        // still counts (and is still waited for while the wait lasts).
        gw.audit_pending.close();
        // Bounded: records still queued when it ends are lost with the process, as ever.
        let _ = tokio::time::timeout(AUDIT_DRAIN_MAX, gw.audit_pending.wait()).await;
        a.abort();
    }
    result
}

/// How long shutdown waits for the audit writer to commit what the last requests queued.
const AUDIT_DRAIN_MAX: Duration = Duration::from_secs(5);

/// Serves the admin API on its own listener until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let body_max = gw.config.admin.body_bytes_max;
    let tls = gw.config.admin.tls.clone();
    let app = admin::router(gw).layer(axum::extract::DefaultBodyLimit::max(body_max));
    match tls_incoming(listener, tls.as_ref())? {
        Incoming::Plain(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
        Incoming::Tls(l) => axum::serve(l, app).with_graceful_shutdown(shutdown).await,
    }
}

/// How long a client has to complete its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once per listener; more connections wait in the kernel's
/// backlog (a handshake costs a signature, so an unbounded number is a CPU flood).
const TLS_HANDSHAKES_MAX: usize = 256;

enum Incoming {
    Plain(TcpListener),
    Tls(TlsListener),
}

fn tls_incoming(listener: TcpListener, cert: Option<&Arc<ServerCert>>) -> std::io::Result<Incoming> {
    let Some(cert) = cert else { return Ok(Incoming::Plain(listener)) };
    let config = cert.server_config().map_err(std::io::Error::other)?;
    Ok(Incoming::Tls(TlsListener(TlsIncoming::new(listener, config, TLS_HANDSHAKE_TIMEOUT, TLS_HANDSHAKES_MAX)?)))
}

/// `TlsIncoming` as an axum listener.
struct TlsListener(TlsIncoming);

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.0.local_addr())
    }
}

/// The listeners' certificates (public, then admin), those configured.
fn certificates(gw: &Gateway) -> Vec<Arc<ServerCert>> {
    [gw.config.server.tls.clone(), gw.config.admin.tls.clone()].into_iter().flatten().collect()
}

/// Reloads every listener certificate from its files (what `tollgate serve` does on SIGHUP).
/// New handshakes get the new certificate; open connections keep theirs. A pair that fails
/// to load leaves the previous certificate serving and is returned as an error naming the
/// file.
pub fn reload_certificates(gw: &Gateway) -> Result<usize, tollgate_tls::TlsError> {
    let certs = certificates(gw);
    for c in &certs {
        c.reload()?;
    }
    Ok(certs.len())
}

fn spawn_cert_watcher(gw: &Gateway) -> Option<tokio::task::JoinHandle<()>> {
    let interval = gw.config.tls.cert_reload_interval?;
    let certs = certificates(gw);
    if certs.is_empty() {
        return None;
    }
    Some(tokio::spawn(tollgate_tls::watch_files(certs, interval)))
}
