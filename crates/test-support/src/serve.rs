//! The HTTP/1.1 server loop under the fault fixtures ([`crate::RpcFaultProxy`],
//! [`crate::MockUpstream`]): hyper on a loopback listener, one task per connection, and
//! the controls a fault needs that a normal server hides — closing one connection without an
//! answer (with a TCP reset or a plain close), refusing connections altogether and coming
//! back on the same port. Optionally over TLS (a rustls server configuration from
//! [`crate::TestCa`]), with the same controls.
//!
//! Owns sockets and bytes only; what to answer is the handler's business. Must not be used
//! outside this crate's fixtures: it has no limits a production server would need.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinHandle;

/// One connection's controls, handed to the handler with each request on it.
#[derive(Debug, Default)]
pub(crate) struct ConnCtl {
    abort: Notify,
    reset: AtomicBool,
}

impl ConnCtl {
    /// Closes this connection now, whatever is in flight on it. With `reset`, the close is a
    /// TCP reset (`SO_LINGER` 0), which is what a crashed peer or a middlebox looks like;
    /// otherwise an orderly FIN.
    pub(crate) fn abort(&self, reset: bool) {
        self.reset.store(reset, Ordering::SeqCst);
        self.abort.notify_one();
    }
}

/// A response body: whole, or streamed from a channel by a task the handler spawned (for
/// trickles and mid-body resets). The channel's capacity is 1, so the producer runs at most
/// one chunk ahead of what hyper has taken.
#[derive(Debug)]
pub(crate) struct FixtureBody {
    full: Option<Bytes>,
    rx: Option<mpsc::Receiver<Bytes>>,
}

impl FixtureBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> FixtureBody {
        FixtureBody { full: Some(bytes.into()), rx: None }
    }

    pub(crate) fn empty() -> FixtureBody {
        FixtureBody { full: None, rx: None }
    }

    /// A body fed chunk by chunk through the returned sender; it ends when the sender drops.
    pub(crate) fn channel() -> (mpsc::Sender<Bytes>, FixtureBody) {
        let (tx, rx) = mpsc::channel(1);
        (tx, FixtureBody { full: None, rx: Some(rx) })
    }
}

impl Body for FixtureBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(bytes) = self.full.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        match &mut self.rx {
            Some(rx) => rx.poll_recv(cx).map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.full.is_none() && self.rx.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.full, &self.rx) {
            (Some(b), None) => SizeHint::with_exact(b.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Response<FixtureBody>> + Send>>;

/// What answers each request: the request and its connection's controls.
pub(crate) type Handler = Arc<dyn Fn(Request<Incoming>, Arc<ConnCtl>) -> HandlerFuture + Send + Sync>;

/// Wraps a handler function into a [`Handler`].
pub(crate) fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Incoming>, Arc<ConnCtl>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<FixtureBody>> + Send + 'static,
{
    Arc::new(move |req, ctl| Box::pin(f(req, ctl)))
}

/// The accept loop of one "up" period and the switch that closes its connections.
struct Running {
    accept: JoinHandle<()>,
    // Dropping the sender closes every connection accepted in this period.
    _close: watch::Sender<()>,
}

/// A loopback HTTP/1.1 server that can go down (refusing connections, closing open ones)
/// and come back on the same port.
pub(crate) struct HttpServer {
    addr: SocketAddr,
    handler: Handler,
    tls: Option<tokio_rustls::TlsAcceptor>,
    running: Mutex<Option<Running>>,
}

impl std::fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServer").field("addr", &self.addr).finish()
    }
}

impl HttpServer {
    /// Binds `127.0.0.1:0` and serves `handler` over TLS with `tls` when given.
    pub(crate) async fn start_with(handler: Handler, tls: Option<Arc<rustls::ServerConfig>>) -> io::Result<HttpServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tls = tls.map(tokio_rustls::TlsAcceptor::from);
        let server = HttpServer { addr, handler, tls, running: Mutex::new(None) };
        server.run(listener);
        Ok(server)
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`, or `https://localhost:<port>` over TLS (the name test
    /// certificates are issued for).
    pub(crate) fn base_url(&self) -> String {
        match self.tls {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    /// Stops listening (new connections are refused by the kernel) and closes every open
    /// connection.
    pub(crate) fn down(&self) {
        if let Some(r) = self.running.lock().expect("server state").take() {
            r.accept.abort();
        }
    }

    /// Listens again on the same port. Retries for a while: the kernel may hold the port
    /// briefly after the old listener closed.
    pub(crate) async fn up(&self) -> io::Result<()> {
        if self.running.lock().expect("server state").is_some() {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..100 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.run(listener);
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(last.unwrap_or_else(|| io::Error::other("could not rebind")))
    }

    fn run(&self, listener: TcpListener) {
        let (close, closed) = watch::channel(());
        let handler = self.handler.clone();
        let tls = self.tls.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of descriptors, most likely: let other tasks close some.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve_connection(stream, tls.clone(), handler.clone(), closed.clone()));
            }
        });
        *self.running.lock().expect("server state") = Some(Running { accept, _close: close });
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock()
            && let Some(r) = running.take()
        {
            r.accept.abort();
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Handler,
    closed: watch::Receiver<()>,
) {
    let ctl = Arc::new(ConnCtl::default());
    let lingering = Lingering { inner: stream, ctl: ctl.clone() };
    match tls {
        None => drive(TokioIo::new(lingering), ctl, handler, closed).await,
        Some(acceptor) => {
            // A client that refuses our certificate ends the connection here, as a real
            // server's would.
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(lingering)).await {
                drive(TokioIo::new(tls), ctl, handler, closed).await;
            }
        }
    }
}

async fn drive<IO>(io: TokioIo<IO>, ctl: Arc<ConnCtl>, handler: Handler, mut closed: watch::Receiver<()>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_ctl = ctl.clone();
    let svc = service_fn(move |req| {
        let (handler, ctl) = (handler.clone(), svc_ctl.clone());
        async move { Ok::<_, Infallible>(handler(req, ctl).await) }
    });
    let conn = http1::Builder::new().serve_connection(io, svc);
    // Dropping `conn` drops the socket: `Lingering` turns that into a reset when asked.
    tokio::select! {
        _ = conn => {}
        _ = ctl.abort.notified() => {}
        _ = closed.changed() => {}
    }
}

/// A TCP stream that, when its connection was aborted with `reset`, sets `SO_LINGER` to
/// zero as it is dropped, so the peer gets an RST instead of a FIN.
struct Lingering {
    inner: TcpStream,
    ctl: Arc<ConnCtl>,
}

impl Drop for Lingering {
    fn drop(&mut self) {
        if self.ctl.reset.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response with `status` and a whole body.
pub(crate) fn response(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<FixtureBody> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(FixtureBody::full(body)).unwrap_or_else(|_| Response::new(FixtureBody::empty()))
}

/// Waits until the connection is aborted: the handler's answer when it must not answer.
pub(crate) async fn never() -> Response<FixtureBody> {
    std::future::pending::<()>().await;
    Response::new(FixtureBody::empty())
}
