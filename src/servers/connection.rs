//! One connection served: HTTP/1.1 or HTTP/2 through hyper, closed gracefully once idle (or
//! before its first request, sooner) and at shutdown, then dropped if it does not close in
//! time; each request goes through the request bounds of `limits`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::servers::limits::{RequestGuard, ServerTimeouts};

pub(super) struct Connection {
    pub(super) builder: Arc<auto::Builder<TokioExecutor>>,
    pub(super) service: ConnectionService,
    pub(super) timeouts: ServerTimeouts,
    pub(super) closing: CancellationToken,
}

impl Connection {
    /// Serves until the client closes; closes gracefully once idle or at shutdown, and drops
    /// a connection that does not finish closing in time.
    pub(super) async fn serve<I>(self, io: I)
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
pub(super) struct Activity {
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
pub(super) struct ConnectionService {
    pub(super) app: Router,
    pub(super) guard: Arc<RequestGuard>,
    pub(super) activity: Arc<Activity>,
    pub(super) peer: SocketAddr,
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
