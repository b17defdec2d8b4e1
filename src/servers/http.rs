//! Serves a router over TLS (the webhook: HTTP/2 and HTTP/1.1 by ALPN, bounded handshakes) or
//! plain TCP (the admin port): a bounded number of connections, each closed once idle, every
//! request within the bounds of `limits`, and a graceful drain. What a connection may take is
//! in `connection_limits`, how one is served in `connection`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::servers::connection::{Connection, ConnectionService};
use crate::servers::connection_limits::{
    HANDSHAKE_SHARE, Handshakes, Open, PeerAdmission, PeerCounts,
};
use crate::servers::limits::{RequestGuard, ServerLimits, ServerTimeouts};
use crate::telemetry::metrics::{Metrics, Refusal, Server, ServerLabels};

/// How one server is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    /// `webhook` or `admin`: the `server` label of metrics and logs.
    pub name: Server,
    pub timeouts: ServerTimeouts,
    pub limits: ServerLimits,
}

impl ServerSettings {
    pub const WEBHOOK: Self = Self {
        name: Server::Webhook,
        timeouts: ServerTimeouts::WEBHOOK,
        limits: ServerLimits::WEBHOOK,
    };

    pub const ADMIN: Self = Self {
        name: Server::Admin,
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
        let peer_share = match PeerCounts::take(&peers, peer.ip()) {
            PeerAdmission::Counted(share) => Some(share),
            PeerAdmission::Unlimited => None,
            PeerAdmission::AtLimit => {
                guard.refusals.record(Refusal::PeerLimit, Some(peer));
                drop((stream, slot));
                continue;
            }
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
            server = name.as_str(),
            "connections still open after {:?}; they are being dropped",
            timeouts.drain
        );
    }
    Ok(())
}
