//! The public listener's accept loop: hyper's HTTP/1.1 connection driver under our own
//! connection limits, for plain and TLS listeners alike (docs/operations.md, Limits).
//!
//! `axum::serve` exposes none of these limits, so this is a small hand-written loop:
//! - **connection cap**: each connection holds one of `connections_max` slots (lowered at
//!   startup to what the process's file-descriptor limit leaves room for, after raising the
//!   soft limit to the hard one); a connection accepted beyond it is closed at once, so the
//!   slots of slow clients never turn into a kernel backlog paying clients wait in, nor into
//!   `EMFILE`;
//! - **header-read timeout**: a connection must deliver a complete request head within
//!   `header_read_timeout_ms` of its start (TLS handshake included) or of the first byte of
//!   a later request; a slowloris client is cut;
//! - **keep-alive timeout**: an idle connection whose next request has not started within
//!   `keep_alive_timeout_ms` is closed;
//! - **head size**: hyper's own caps (`max_headers`, `max_header_size`) sit above the
//!   configured limits, which `crate::limits` enforces with codes; a head beyond hyper's cap
//!   gets hyper's bare 431 and the connection is closed.
//!
//! The two timeouts are one watchdog per connection, not hyper's `header_read_timeout`: hyper
//! starts that timer when a connection goes idle, which would tie the keep-alive wait to the
//! header deadline (a load balancer in front wants a keep-alive longer than its own idle
//! timeout; a slow head should still be cut in seconds). The watchdog sees the connection's
//! phase: `head` (bytes of a request head are arriving), `busy` (a request is being handled
//! or its response written: no deadline here, the request limits apply), `idle`.
//!
//! Shutdown: stop accepting, ask every connection to finish (hyper's graceful shutdown:
//! idle ones close at once, busy ones after their response), wait for the last one.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::app::Gateway;
use crate::config::ServerLimits;

/// Header fields hyper accepts above `headers_count_max` (the excess is refused by
/// `crate::limits` with a code; far beyond, by hyper).
const HEADERS_SLACK: usize = 32;
/// Bytes of request line and slack hyper accepts above `header_bytes_max + uri_bytes_max`.
const HEAD_SLACK_BYTES: usize = 4 * 1024;
/// File descriptors kept for everything but client connections, beyond one upstream
/// connection per concurrent request and the database pool (RPC pools, files, logs).
const FDS_RESERVED: u64 = 256;
/// A raised soft limit never goes above this (Linux's default `fs.nr_open`).
const FDS_CEILING: u64 = 1 << 20;

/// Serves `app` on `listener` under the limits of `gw.config.server.limits` until `shutdown`
/// resolves, then waits for open connections to finish. Serves TLS when
/// `gw.config.server.tls` is set (handshakes run in each connection's own task, within the
/// header-read timeout). Requests carry `ConnectInfo<SocketAddr>` of their peer.
pub async fn serve_connections(
    listener: TcpListener,
    app: Router,
    gw: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = gw.config.server.limits.clone();
    let tls = match &gw.config.server.tls {
        Some(cert) => Some(TlsAcceptor::from(cert.server_config().map_err(std::io::Error::other)?)),
        None => None,
    };
    let cap = connection_cap(&limits, u64::from(gw.config.database.max_connections));
    let slots = Arc::new(Semaphore::new(cap));
    let http = http_builder(&limits);
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            gw.metrics.listener.cut("connection_cap");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Conn {
            peer,
            http: http.clone(),
            app: app.clone(),
            gw: gw.clone(),
            header_timeout: limits.header_read_timeout,
            idle_timeout: limits.keep_alive_timeout,
            stop: stop_rx.clone(),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            conn.run(tcp, tls).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Every connection holds a slot: all of them back means every connection has ended.
    let _ = slots.acquire_many(u32::try_from(cap).unwrap_or(u32::MAX)).await;
    Ok(())
}

fn http_builder(limits: &ServerLimits) -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    let head_max = limits.header_bytes_max + limits.uri_bytes_max + HEAD_SLACK_BYTES;
    b.keep_alive(limits.keep_alive_timeout.is_some())
        // The watchdog does it (see the module's documentation).
        .header_read_timeout(None)
        .max_headers(limits.headers_count_max + HEADERS_SLACK)
        .max_header_size(head_max)
        // The read buffer: a head must fit; bodies stream through it.
        .max_buf_size(head_max.max(64 * 1024));
    b
}

/// The connection cap in force: `connections_max`, or less when the file-descriptor limit
/// (soft, after raising it to the hard one) leaves less room.
pub fn connection_cap(limits: &ServerLimits, db_connections: u64) -> usize {
    let configured = limits.connections_max;
    let Some(fds) = raise_fd_limit() else { return configured };
    let concurrency = u64::try_from(limits.concurrency_max).unwrap_or(u64::MAX);
    let reserved = concurrency.saturating_add(db_connections).saturating_add(FDS_RESERVED).min(fds / 2);
    let room = usize::try_from(fds.saturating_sub(reserved)).unwrap_or(usize::MAX).max(1);
    if room < configured {
        tracing::warn!(
            connections_max = configured,
            in_force = room,
            fd_limit = fds,
            "server.connections_max lowered to what the file-descriptor limit leaves room for (raise `ulimit -n`)"
        );
        room
    } else {
        configured
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (capped); returns the soft limit in
/// force afterwards (`None`: unlimited or unknown).
fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let now = getrlimit(Resource::Nofile);
    let soft = now.current?;
    let target = now.maximum.unwrap_or(FDS_CEILING).min(FDS_CEILING);
    if target > soft {
        match setrlimit(Resource::Nofile, Rlimit { current: Some(target), maximum: now.maximum }) {
            Ok(()) => {
                tracing::debug!(from = soft, to = target, "raised the file-descriptor soft limit");
                return Some(target);
            }
            Err(e) => tracing::debug!(error = %e, "could not raise the file-descriptor soft limit"),
        }
    }
    Some(soft)
}

/// One connection's task.
struct Conn {
    peer: SocketAddr,
    http: hyper::server::conn::http1::Builder,
    app: Router,
    gw: Arc<Gateway>,
    header_timeout: Duration,
    idle_timeout: Option<Duration>,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        let metrics = self.gw.clone();
        metrics.metrics.listener.opened();
        // The header deadline counts from here: a TLS handshake is part of the first head.
        let phase = Arc::new(Phase::new());
        match tls {
            None => self.serve(tcp, phase).await,
            Some(acceptor) => match tokio::time::timeout(self.header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => self.serve(stream, phase).await,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %self.peer, "TLS handshake failed: {e}");
                    metrics.metrics.listener.cut("tls_handshake");
                }
                Err(_) => {
                    tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                    metrics.metrics.listener.cut("tls_handshake");
                }
            },
        }
        metrics.metrics.listener.closed();
    }

    async fn serve<I>(mut self, io: I, phase: Arc<Phase>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (peer, app) = (self.peer, self.app.clone());
        let svc_phase = phase.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            svc_phase.busy();
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            let call = app.clone().oneshot(request);
            let phase = svc_phase.clone();
            async move {
                let response = match call.await {
                    Ok(r) => r,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| Tracked { body, phase: Some(phase) }))
            }
        });
        let conn = self.http.serve_connection(TokioIo::new(Watched { io, phase: phase.clone() }), service);
        tokio::pin!(conn);
        let watchdog = watchdog(&phase, self.header_timeout, self.idle_timeout);
        tokio::pin!(watchdog);
        let mut stopping = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(peer = %peer, "connection ended: {e}");
                    }
                    return;
                }
                reason = &mut watchdog => {
                    tracing::debug!(peer = %peer, reason, "connection cut");
                    self.gw.metrics.listener.cut(reason);
                    // Dropping the connection closes the socket.
                    return;
                }
                _ = self.stop.wait_for(|s| *s), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

const HEAD: u8 = 0;
const BUSY: u8 = 1;
const IDLE: u8 = 2;

/// Where a connection is, for its watchdog: the phase and when it began (milliseconds
/// after `start`). Written by the connection's reads, its service and its response body, all
/// polled by the connection's task; the watchdog is told of every change.
struct Phase {
    start: Instant,
    phase: AtomicU8,
    since_ms: AtomicU64,
    changed: Notify,
}

impl Phase {
    fn new() -> Phase {
        Phase { start: Instant::now(), phase: AtomicU8::new(HEAD), since_ms: AtomicU64::new(0), changed: Notify::new() }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn set(&self, phase: u8) {
        self.since_ms.store(self.now_ms(), Ordering::Release);
        self.phase.store(phase, Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: an idle connection has begun its next request's head.
    fn read(&self) {
        if self.phase.load(Ordering::Acquire) == IDLE {
            self.set(HEAD);
        }
    }

    /// A request head is complete and is being handled.
    fn busy(&self) {
        self.phase.store(BUSY, Ordering::Release);
        self.changed.notify_one();
    }

    /// The response is written: waiting for the next request.
    fn idle(&self) {
        self.set(IDLE);
    }
}

/// Resolves with the reason when the connection overstays its phase's deadline.
async fn watchdog(phase: &Phase, header: Duration, idle: Option<Duration>) -> &'static str {
    loop {
        let (limit, reason) = match phase.phase.load(Ordering::Acquire) {
            BUSY => {
                phase.changed.notified().await;
                continue;
            }
            HEAD => (header, "header_timeout"),
            // Without keep-alive hyper closes after the response; the header deadline stands.
            _ => (idle.unwrap_or(header), "idle_timeout"),
        };
        let deadline = phase.start + Duration::from_millis(phase.since_ms.load(Ordering::Acquire)) + limit;
        if Instant::now() >= deadline {
            return reason;
        }
        tokio::select! {
            () = phase.changed.notified() => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

/// The connection's socket, telling its [`Phase`] when bytes arrive.
struct Watched<I> {
    io: I,
    phase: Arc<Phase>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.phase.read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// A response body that marks its connection idle once written (hyper drops it then).
struct Tracked {
    body: axum::body::Body,
    phase: Option<Arc<Phase>>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(p) = self.phase.take() {
            p.idle();
        }
    }
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
