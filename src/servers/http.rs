//! Serves a router over TLS (the webhook: HTTP/2 and HTTP/1.1 by ALPN, bounded handshakes) or
//! plain TCP (the admin port), with bounded header reads and a graceful drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Clone, Copy)]
pub struct ServerTimeouts {
    /// Bound on the TLS handshake.
    pub handshake: Duration,
    /// HTTP/1 wait for request headers, idle keep-alive included. Longer than the 90s idle
    /// timeout of Go's HTTP transport, so the API server always closes an idle connection
    /// before kubeecr does and never sends on one being closed ("failed to call webhook: EOF").
    pub header_read: Duration,
    /// Bound on draining connections at shutdown.
    pub drain: Duration,
}

impl ServerTimeouts {
    /// The admin port: probes and scrapes are quick, and nothing must hold a connection long.
    pub const ADMIN: Self = Self {
        handshake: Duration::from_secs(10),
        header_read: Duration::from_secs(10),
        drain: Duration::from_secs(2),
    };
}

impl Default for ServerTimeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(120),
            drain: Duration::from_secs(20),
        }
    }
}

/// Accepts until `shutdown` resolves, then drains open connections. `tls: None` serves plain
/// HTTP/1.1 and HTTP/2 (prior knowledge).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    timeouts: ServerTimeouts,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
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
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                return serve_connection(&builder, stream, service, watcher, peer).await;
            };
            match tokio::time::timeout(timeouts.handshake, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_connection(&builder, tls, service, watcher, peer).await,
                Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(timeouts.drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "connections still open after {:?}; closing them",
            timeouts.drain
        );
    }
    Ok(())
}

async fn serve_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    service: TowerToHyperService<Router>,
    watcher: hyper_util::server::graceful::Watcher,
    peer: std::net::SocketAddr,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, "connection ended: {e}");
    }
}
