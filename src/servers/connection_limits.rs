//! What a server lets in: connections per peer address, the connection slot each holds, and
//! the places among TLS handshakes, the oldest evicted for the newest. Used by `http::serve`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

/// Connections open per peer address, when they are limited.
pub(super) struct PeerCounts {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's share of its address, given back on drop.
pub(super) struct PeerShare {
    counts: Arc<PeerCounts>,
    ip: std::net::IpAddr,
}

/// Whether one more connection from an address may open.
pub(super) enum PeerAdmission {
    /// No per-address limit is set.
    Unlimited,
    /// Yes, and it holds this share until it closes or authenticates.
    Counted(PeerShare),
    /// No: the address holds its share already.
    AtLimit,
}

impl PeerCounts {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max,
            open: std::sync::Mutex::default(),
        }
    }

    /// A share for one more connection from `ip`. The map holds only addresses with a
    /// connection open, so it is bounded by `max_connections`.
    pub(super) fn take(counts: &Arc<Self>, ip: std::net::IpAddr) -> PeerAdmission {
        if counts.max == 0 {
            return PeerAdmission::Unlimited;
        }
        let mut open = counts.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= counts.max {
            return PeerAdmission::AtLimit;
        }
        *n += 1;
        PeerAdmission::Counted(PeerShare {
            counts: Arc::clone(counts),
            ip,
        })
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
pub(super) struct Open {
    gauge: Gauge,
    _slot: tokio::sync::OwnedSemaphorePermit,
    peer: Option<PeerShare>,
}

impl Open {
    pub(super) fn new(
        gauge: Gauge,
        slot: tokio::sync::OwnedSemaphorePermit,
        peer: Option<PeerShare>,
    ) -> Self {
        gauge.inc();
        Self {
            gauge,
            _slot: slot,
            peer,
        }
    }

    /// Authenticated by a client certificate: no longer counted against its address.
    pub(super) fn authenticated(&mut self) {
        self.peer = None;
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// At most one in this many connection slots may be in a TLS handshake: the rest stay for
/// connections past it.
pub(super) const HANDSHAKE_SHARE: usize = 4;

/// The connections in their TLS handshake, oldest first, each able to be told to give up its
/// place. When every place is taken, the oldest gives way to the newest: a connection that
/// says nothing has had its chance by then, while the API server's handshake takes
/// milliseconds.
pub(super) struct Handshakes {
    max: usize,
    next: AtomicUsize,
    pending: Mutex<std::collections::VecDeque<(usize, CancellationToken)>>,
}

/// One connection's place among the handshakes, given back on drop.
pub(super) struct Handshake {
    handshakes: Arc<Handshakes>,
    id: usize,
    evicted: CancellationToken,
}

impl Handshakes {
    pub(super) fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            next: AtomicUsize::new(0),
            pending: Mutex::default(),
        }
    }

    pub(super) fn enter(self: &Arc<Self>) -> Handshake {
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
    pub(super) async fn evicted(&self) {
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
