//! Request bounds: a body's size and arrival time, a request's total time, how many requests
//! run at once, and how many body bytes all of them hold in memory. Every refusal is answered
//! at once, without reading further, and counted.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

use crate::telemetry::metrics::{Metrics, Refusal, RefusalLabels, Server};

/// How long a server waits for each part of a connection and a request.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connections open at once; further ones wait in the kernel's listen backlog.
    pub max_connections: usize,
    /// Connections open at once from one IP address, until they authenticate with a client
    /// certificate (`--client-ca-file`); more are closed at once. 0: no limit.
    pub max_connections_per_ip: usize,
    /// Requests in flight at once, body reads included; more get 503.
    pub max_concurrent_requests: usize,
    /// Largest body; a larger declared `Content-Length` gets 413 before a byte is read.
    pub max_request_bytes: u32,
    /// Body bytes held across all requests in flight; a request that would pass it gets 503.
    pub max_buffered_request_bytes: u32,
    /// HTTP/2 streams at once on one connection: with `max_concurrent_requests`, how few
    /// connections can take every request slot.
    pub http2_max_concurrent_streams: u32,
    /// Request headers: HTTP/2 header list size, HTTP/1 read buffer (at least 8 KiB).
    pub max_header_bytes: u32,
}

impl ServerLimits {
    /// The webhook. The API server needs a handful of connections and requests at once; 512
    /// connections stay under the common 1024 file descriptor limit with room for the
    /// Kubernetes and AWS clients. 32 per address is more than an API server's HTTP/2
    /// connections ever need (32 streams each: 1,024 requests, four times the request
    /// bound). 32 MiB of bodies is ten AdmissionReviews of the largest kind, or thousands of
    /// usual ones.
    pub const WEBHOOK: Self = Self {
        max_connections: 512,
        max_connections_per_ip: 32,
        max_concurrent_requests: 256,
        max_request_bytes: 3 * 1024 * 1024,
        max_buffered_request_bytes: 32 * 1024 * 1024,
        http2_max_concurrent_streams: 32,
        max_header_bytes: 16 * 1024,
    };

    /// The admin port: probes and scrapes, one request at a time each, no bodies. The kubelet
    /// probes from the node's address and Prometheus from its own, a few connections each:
    /// a per-address share keeps one pod from holding every slot and failing the probes. No
    /// body is read and each connection carries one request at a time, so a request slot is
    /// never held waiting: there are as many as connections.
    pub const ADMIN: Self = Self {
        max_connections: 64,
        max_connections_per_ip: 8,
        max_concurrent_requests: 64,
        max_request_bytes: 0,
        max_buffered_request_bytes: 1,
        http2_max_concurrent_streams: 1,
        max_header_bytes: 16 * 1024,
    };
}

/// Applies the request bounds of one server; shared by all its connections.
pub(crate) struct RequestGuard {
    max_request_bytes: u32,
    body_timeout: Duration,
    request_timeout: Duration,
    requests: Arc<Semaphore>,
    /// One permit per body byte held.
    bytes: Arc<Semaphore>,
    pub(crate) refusals: Refusals,
}

impl RequestGuard {
    pub(crate) fn new(
        server: Server,
        limits: &ServerLimits,
        body_timeout: Duration,
        request_timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            max_request_bytes: limits.max_request_bytes,
            body_timeout,
            request_timeout,
            requests: Arc::new(Semaphore::new(limits.max_concurrent_requests)),
            bytes: Arc::new(Semaphore::new(limits.max_buffered_request_bytes as usize)),
            refusals: Refusals::new(server, metrics),
        }
    }

    /// `app`'s answer to `req`, or the refusal.
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        app: Router,
        peer: SocketAddr,
    ) -> Response {
        let answered = tokio::time::timeout(self.request_timeout, self.admit(req, app)).await;
        let refusal = match answered {
            Ok(Ok(response)) => return response,
            Ok(Err(refusal)) => refusal,
            Err(_) => Refusal::RequestTimeout,
        };
        self.refusals.record(refusal, Some(peer));
        let status = match refusal {
            Refusal::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match refusal {
            Refusal::TooLarge => format!(
                "the request body is larger than {} bytes",
                self.max_request_bytes
            ),
            Refusal::BodyTimeout => format!(
                "the request body did not arrive within {}",
                humantime::format_duration(self.body_timeout)
            ),
            Refusal::RequestTimeout => format!(
                "no answer within {}",
                humantime::format_duration(self.request_timeout)
            ),
            Refusal::BodyBudget => "too many request bytes in flight; try again".to_string(),
            _ => "too many requests in flight; try again".to_string(),
        };
        (status, message).into_response()
    }

    async fn admit(&self, req: Request<Incoming>, app: Router) -> Result<Response, Refusal> {
        let max = u64::from(self.max_request_bytes);
        // Exact when the client declared a Content-Length (hyper holds it to it).
        let declared = req.body().size_hint();
        // With no body allowed (the admin port), one that may still come is refused at once
        // rather than waited for with a request slot held.
        if declared.lower() > max || (max == 0 && !req.body().is_end_stream()) {
            return Err(Refusal::TooLarge);
        }
        let _slot = Arc::clone(&self.requests)
            .try_acquire_owned()
            .map_err(|_| Refusal::Busy)?;
        let limit = declared.upper().unwrap_or(max).min(max) as usize;
        let (parts, body) = req.into_parts();
        let read = read_body(body, limit, &self.bytes);
        let read = tokio::time::timeout(self.body_timeout, read)
            .await
            .map_err(|_| Refusal::BodyTimeout)?;
        // Held until the answer is sent: the app reads the body until then.
        let (body, _held) = match read {
            Ok(read) => read,
            Err(BodyError::TooLarge) => return Err(Refusal::TooLarge),
            Err(BodyError::Budget) => return Err(Refusal::BodyBudget),
            Err(BodyError::Read(e)) => {
                return Ok((
                    StatusCode::BAD_REQUEST,
                    format!("reading the request body failed: {e}"),
                )
                    .into_response());
            }
        };
        let req = Request::from_parts(parts, Body::from(body));
        Ok(app.oneshot(req).await.unwrap_or_else(|e| match e {}))
    }
}

/// How far ahead of the received bytes a body's buffer may grow.
const GROWTH_AHEAD: usize = 256 * 1024;

enum BodyError {
    TooLarge,
    Budget,
    Read(hyper::Error),
}

/// The whole body, at most `max` bytes. Memory is taken from `budget` as the body arrives,
/// one permit per byte allocated, so a client that declares a large body and sends nothing
/// holds nothing; never allocates past `max`.
async fn read_body(
    mut body: Incoming,
    max: usize,
    budget: &Arc<Semaphore>,
) -> Result<(Bytes, Option<OwnedSemaphorePermit>), BodyError> {
    // Declared first, dropped last: the budget comes back only after the buffer is freed.
    let mut held: Option<OwnedSemaphorePermit> = None;
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        let need = buf.len() + data.len();
        if need > max {
            return Err(BodyError::TooLarge);
        }
        if need > buf.capacity() {
            // Doubling, but never more than 256 KiB ahead of what arrived: a body just past a
            // power of two holds what it sent, not twice that.
            let target = need
                .max((buf.capacity() * 2).min(need + GROWTH_AHEAD))
                .min(max);
            let more = u32::try_from(target - buf.capacity()).map_err(|_| BodyError::TooLarge)?;
            let permit = Arc::clone(budget)
                .try_acquire_many_owned(more)
                .map_err(|_| BodyError::Budget)?;
            match &mut held {
                Some(held) => held.merge(permit),
                None => held = Some(permit),
            }
            buf.reserve_exact(target - buf.len());
        }
        buf.extend_from_slice(&data);
    }
    Ok((Bytes::from(buf), held))
}

/// Counts refusals, and logs them at most once per reason every 10 s, so that an attack does
/// not flood the log.
pub(crate) struct Refusals {
    server: Server,
    metrics: Arc<Metrics>,
    /// Per reason: when it was last logged, and how many went unlogged since.
    logged: Mutex<[(Option<Instant>, u64); Refusal::ALL.len()]>,
}

const LOG_EVERY: Duration = Duration::from_secs(10);

impl Refusals {
    fn new(server: Server, metrics: Arc<Metrics>) -> Self {
        Self {
            server,
            metrics,
            logged: Mutex::new([(None, 0); Refusal::ALL.len()]),
        }
    }

    pub(crate) fn record(&self, reason: Refusal, peer: Option<SocketAddr>) {
        self.metrics
            .http_refused
            .get_or_create(&RefusalLabels {
                server: self.server,
                reason,
            })
            .inc();
        let index = Refusal::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        let unlogged = {
            let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
            let (last, skipped) = &mut logged[index];
            if last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
                *skipped += 1;
                return;
            }
            *last = Some(Instant::now());
            std::mem::take(skipped)
        };
        let what = match reason {
            Refusal::TooLarge => "refused a request body over the size limit (413)",
            Refusal::Busy => "refused a request: too many in flight (503)",
            Refusal::BodyBudget => {
                "refused a request: request bodies hold the whole memory budget (503)"
            }
            Refusal::BodyTimeout => "a request body did not arrive in time (408)",
            Refusal::RequestTimeout => "a request was not answered in time (503)",
            Refusal::HandshakeTimeout => "closed a connection: no TLS handshake in time",
            Refusal::ConnectionLimit => {
                "at the connection limit: new connections wait in the listen backlog"
            }
            Refusal::PeerLimit => "closed a connection: its address holds its share already",
            Refusal::HandshakeFailed => "closed a connection: the TLS handshake failed",
            Refusal::HandshakeEvicted => {
                "closed the oldest connection still in its TLS handshake, to make room for a new one"
            }
        };
        let peer = peer.map(|p| p.to_string()).unwrap_or_default();
        tracing::warn!(
            server = self.server.as_str(),
            reason = reason.as_str(),
            peer,
            also_since_last_line = unlogged,
            "{what}"
        );
    }
}
