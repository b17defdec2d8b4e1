//! Serves a router over TLS (the webhook: HTTP/2 and HTTP/1.1 by ALPN, bounded handshakes) or
//! plain TCP (the admin port): a bounded number of connections, each closed once idle, every
//! request within the bounds of `limits`, and a graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus_client::metrics::gauge::Gauge;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::servers::limits::{RequestGuard, ServerLimits};
use crate::telemetry::metrics::{Metrics, Refusal, ServerLabels};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    /// Bound on the TLS handshake, from the connection's accept. An API server in the same
    /// network finishes in milliseconds; a connection that says nothing holds a slot no
    /// longer than this.
    pub handshake: Duration,
    /// A connection with no request in flight for this long is closed: HTTP/1 header reads
    /// and keep-alive, HTTP/2, and a connection that never says which. Longer than the 90s
    /// idle timeout of Go's HTTP transport, so the API server always closes an idle connection
    /// before kubeecr does and never sends on one being closed ("failed to call webhook: EOF").
    pub idle: Duration,
    /// A connection that has sent no request this long after it opened is closed: the API
    /// server sends one at once, so only a client holding a slot waits longer.
    pub first_request: Duration,
    /// The whole request body must arrive within this, else 408.
    pub body: Duration,
    /// The whole request, body and answer, else 503. At least `body`.
    pub request: Duration,
    /// Bound on draining connections at shutdown.
    pub drain: Duration,
}

impl ServerTimeouts {
    /// The admin port: probes and scrapes are quick, and nothing must hold a connection long.
    pub const ADMIN: Self = Self {
        handshake: Duration::from_secs(10),
        idle: Duration::from_secs(10),
        first_request: Duration::from_secs(10),
        body: Duration::from_secs(5),
        request: Duration::from_secs(10),
        drain: Duration::from_secs(2),
    };

    /// The webhook. The API server waits 30s at most for an answer (`timeoutSeconds`), and
    /// sends a review in one piece at once.
    pub const WEBHOOK: Self = Self {
        handshake: Duration::from_secs(3),
        idle: Duration::from_secs(120),
        first_request: Duration::from_secs(10),
        body: Duration::from_secs(10),
        request: Duration::from_secs(30),
        drain: Duration::from_secs(20),
    };
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        Self::WEBHOOK
    }
}

/// How one server is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// `webhook` or `admin`: the `server` label of metrics and logs.
    pub name: &'static str,
    pub timeouts: ServerTimeouts,
    pub limits: ServerLimits,
}

impl ServerSettings {
    pub const WEBHOOK: Self = Self {
        name: "webhook",
        timeouts: ServerTimeouts::WEBHOOK,
        limits: ServerLimits::WEBHOOK,
    };

    pub const ADMIN: Self = Self {
        name: "admin",
        timeouts: ServerTimeouts::ADMIN,
        limits: ServerLimits::ADMIN,
    };
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self::WEBHOOK
    }
}

fn builder(settings: &ServerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's HTTP/1 buffer holds the request head: its size bounds the headers (431).
    let header_bytes = (settings.limits.max_header_bytes as usize).max(8192);
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.timeouts.idle)
        .max_buf_size(header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.limits.http2_max_concurrent_streams)
        .max_header_list_size(settings.limits.max_header_bytes)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Accepts until `shutdown` resolves, then drains open connections. `tls: None` serves plain
/// HTTP/1.1 and HTTP/2 (prior knowledge).
///
/// At `max_connections`, accepting pauses: new connections wait in the kernel's listen
/// backlog, costing kubeecr nothing, and are served as soon as one closes; the API server
/// would count a refused connection as a failed call at once.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    settings: ServerSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let ServerSettings {
        name,
        timeouts,
        limits,
    } = settings;
    let acceptor = tls.map(TlsAcceptor::from);
    let builder = Arc::new(builder(&settings));
    let guard = Arc::new(RequestGuard::new(
        name,
        &limits,
        timeouts.body,
        timeouts.request,
        Arc::clone(&metrics),
    ));
    let open = metrics
        .http_connections
        .get_or_create(&ServerLabels { server: name })
        .clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(PeerCounts::new(limits.max_connections_per_ip));
    let handshakes = Arc::new(Handshakes::new(limits.max_connections / HANDSHAKE_SHARE));
    let closing = CancellationToken::new();
    tokio::pin!(shutdown);
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                guard.refusals.record(Refusal::ConnectionLimit, None);
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => slot.expect("never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Closed at once, its slot given back: one address must not hold every slot.
        let Some(peer_share) = PeerCounts::take(&peers, peer.ip()) else {
            guard.refusals.record(Refusal::PeerLimit, Some(peer));
            drop((stream, slot));
            continue;
        };
        let connection = Connection {
            builder: Arc::clone(&builder),
            service: ConnectionService {
                app: app.clone(),
                guard: Arc::clone(&guard),
                activity: Arc::default(),
                peer,
            },
            timeouts,
            closing: closing.clone(),
        };
        let acceptor = acceptor.clone();
        let (guard, open) = (Arc::clone(&guard), open.clone());
        // A place among the handshakes in progress, evicting the oldest when all are taken:
        // connections that say nothing cannot keep a new one from its handshake.
        let handshake = acceptor.as_ref().map(|_| handshakes.enter());
        tokio::spawn(async move {
            let mut open = Open::new(open, slot, peer_share);
            let (Some(acceptor), Some(handshake)) = (acceptor, handshake) else {
                return connection.serve(stream).await;
            };
            let accepted = tokio::select! {
                accepted = tokio::time::timeout(timeouts.handshake, acceptor.accept(stream)) => accepted,
                () = handshake.evicted() => {
                    guard.refusals.record(Refusal::HandshakeEvicted, Some(peer));
                    return;
                }
            };
            drop(handshake);
            match accepted {
                Ok(Ok(tls)) => {
                    // A client certificate that --client-ca-file verified: the API server.
                    // Its connections are not limited per address.
                    if tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty())
                    {
                        open.authenticated();
                    }
                    connection.serve(tls).await
                }
                // Closed before a ClientHello: a TCP check or a port scan, not a failure.
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    tracing::debug!(%peer, "closed before a TLS handshake");
                }
                Ok(Err(e)) => {
                    // Counted and logged (rate-limited): a wrong --client-ca-file fails every
                    // call here, and nothing else would show it.
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    guard.refusals.record(Refusal::HandshakeFailed, Some(peer));
                }
                Err(_) => guard.refusals.record(Refusal::HandshakeTimeout, Some(peer)),
            }
        });
    }
    drop(listener);
    closing.cancel();
    // Each connection closes itself within `drain`; all slots back means all closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(timeouts.drain, slots.acquire_many(all)).await;
    if drained.is_err() {
        tracing::warn!(
            server = name,
            "connections still open after {:?}; they are being dropped",
            timeouts.drain
        );
    }
    Ok(())
}

/// Connections open per peer address, when they are limited.
struct PeerCounts {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's share of its address, given back on drop.
struct PeerShare {
    counts: Arc<PeerCounts>,
    ip: std::net::IpAddr,
}

impl PeerCounts {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: std::sync::Mutex::default(),
        }
    }

    /// A share for one more connection from `ip`, or `None` at its limit. The map holds only
    /// addresses with a connection open, so it is bounded by `max_connections`.
    fn take(counts: &Arc<Self>, ip: std::net::IpAddr) -> Option<Option<PeerShare>> {
        if counts.max == 0 {
            return Some(None);
        }
        let mut open = counts.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= counts.max {
            return None;
        }
        *n += 1;
        Some(Some(PeerShare {
            counts: Arc::clone(counts),
            ip,
        }))
    }
}

impl Drop for PeerShare {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A connection slot, its address's share and the open-connections gauge, all given back on
/// drop.
struct Open {
    gauge: Gauge,
    _slot: tokio::sync::OwnedSemaphorePermit,
    peer: Option<PeerShare>,
}

impl Open {
    fn new(gauge: Gauge, slot: tokio::sync::OwnedSemaphorePermit, peer: Option<PeerShare>) -> Self {
        gauge.inc();
        Self {
            gauge,
            _slot: slot,
            peer,
        }
    }

    /// Authenticated by a client certificate: no longer counted against its address.
    fn authenticated(&mut self) {
        self.peer = None;
    }
}

/// At most one in this many connection slots may be in a TLS handshake: the rest stay for
/// connections past it.
const HANDSHAKE_SHARE: usize = 4;

/// The connections in their TLS handshake, oldest first, each able to be told to give up its
/// place. When every place is taken, the oldest gives way to the newest: a connection that
/// says nothing has had its chance by then, while the API server's handshake takes
/// milliseconds.
struct Handshakes {
    max: usize,
    next: AtomicUsize,
    pending: Mutex<std::collections::VecDeque<(usize, CancellationToken)>>,
}

/// One connection's place among the handshakes, given back on drop.
struct Handshake {
    handshakes: Arc<Handshakes>,
    id: usize,
    evicted: CancellationToken,
}

impl Handshakes {
    fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            next: AtomicUsize::new(0),
            pending: Mutex::default(),
        }
    }

    fn enter(self: &Arc<Self>) -> Handshake {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= self.max
            && let Some((_, oldest)) = pending.pop_front()
        {
            oldest.cancel();
        }
        pending.push_back((id, evicted.clone()));
        Handshake {
            handshakes: Arc::clone(self),
            id,
            evicted,
        }
    }
}

impl Handshake {
    async fn evicted(&self) {
        self.evicted.cancelled().await;
    }
}

impl Drop for Handshake {
    fn drop(&mut self) {
        let mut pending = self
            .handshakes
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(at) = pending.iter().position(|(id, _)| *id == self.id) {
            pending.remove(at);
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    service: ConnectionService,
    timeouts: ServerTimeouts,
    closing: CancellationToken,
}

impl Connection {
    /// Serves until the client closes; closes gracefully once idle or at shutdown, and drops
    /// a connection that does not finish closing in time.
    async fn serve<I>(self, io: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            builder,
            service,
            timeouts,
            closing,
        } = self;
        let (activity, peer) = (Arc::clone(&service.activity), service.peer);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let mut deadline = Instant::now() + timeouts.first_request;
        let mut closed = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    return;
                }
                () = closing.cancelled(), if !closed => {
                    conn.as_mut().graceful_shutdown();
                    closed = true;
                    deadline = Instant::now() + timeouts.drain;
                }
                () = tokio::time::sleep_until(deadline) => {
                    if closed {
                        tracing::debug!(%peer, "connection did not close in time; dropped");
                        return;
                    }
                    // Until its first request, a connection is allowed `first_request` idle.
                    let idle = if activity.served() {
                        timeouts.idle
                    } else {
                        timeouts.first_request
                    };
                    match activity.idle_since() {
                        Some(since) if since + idle <= Instant::now() => {
                            // Requests that raced the close still get their full time.
                            conn.as_mut().graceful_shutdown();
                            closed = true;
                            deadline = Instant::now() + timeouts.request;
                        }
                        Some(since) => deadline = since + idle,
                        None => deadline = Instant::now() + timeouts.idle,
                    }
                }
            }
        }
    }
}

/// When a connection last had a request in flight.
struct Activity {
    in_flight: AtomicUsize,
    /// Requests begun so far.
    begun: AtomicUsize,
    last: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            begun: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        self.begun.fetch_add(1, Ordering::SeqCst);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(Arc::clone(self))
    }

    /// Whether a request has come on this connection.
    fn served(&self) -> bool {
        self.begun.load(Ordering::SeqCst) > 0
    }

    /// Since when no request has been in flight; `None` while one is.
    fn idle_since(&self) -> Option<Instant> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        Some(*self.last.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        *self.0.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The router behind the request bounds, counting what is in flight on its connection.
#[derive(Clone)]
struct ConnectionService {
    app: Router,
    guard: Arc<RequestGuard>,
    activity: Arc<Activity>,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for ConnectionService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.begin();
        let (app, guard, peer) = (self.app.clone(), Arc::clone(&self.guard), self.peer);
        Box::pin(async move {
            let response = guard.handle(req, app, peer).await;
            drop(in_flight);
            Ok(response)
        })
    }
}
