//! The watch-driven refresher of `kubeecr serve`.
//!
//! Every replica watches (so that `/readyz` can say the watch is synced, and a new leader
//! starts with a full index), and decides when each opted-in Secret is next due. Only the
//! leader writes: it takes due Secrets off the schedule, at most `concurrency` at a time,
//! and refreshes each with one PATCH from the watched copy (a GET first only for a Secret
//! kubeecr does not manage yet). A change seen by the watch is decided on at once; a resync
//! decides on every Secret again, as a safety net.
//!
//! Written by hand rather than on `kube_runtime::Controller`: it reads two watches into one
//! index (kubeecr's Secrets in full, the rest as metadata), every replica keeps it but only
//! the leader writes, and work in flight is dropped the moment leadership moves. The
//! state machine itself is pure, in `step`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use jiff::Timestamp;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::contract::annotation::SecretRef;
use crate::contract::kept::KeptSecret;
use crate::contract::plan::{self, Plan};
use crate::contract::standing::{Listing, NotFilled, listing};
use crate::refresher::index::{Change, Index, StreamId};
use crate::refresher::schedule::{Schedule, jittered};
use crate::refresher::step::{self, Requeue, Step};
use crate::refresher::write::{Outcome, Writer};
use crate::telemetry::events::Events;
use crate::telemetry::metrics::{Metrics, SecretState, StateLabels};

#[derive(Debug, Clone, Copy)]
pub struct ControllerSettings {
    /// Secrets refreshed at once.
    pub concurrency: usize,
    /// Every Secret is decided on again this often, whatever the watches say.
    pub resync: Duration,
    /// Retries of a failing Secret start here and double up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("the Secret watches ended")]
    WatchEnded,
    #[error("the leader election stopped")]
    LeaderGone,
}

pub struct Controller {
    writer: Arc<Writer>,
    events: Events,
    metrics: Arc<Metrics>,
    settings: ControllerSettings,
    index: Index,
    schedule: Schedule,
    state: HashMap<SecretRef, SecretState>,
    /// When the token each Secret kubeecr fills expires, as recorded on it (for the soonest
    /// expiry and the count past renewal).
    expiries: HashMap<SecretRef, Timestamp>,
    /// The last note sent for a Secret kubeecr will not fill, so that it is sent once.
    skipped: HashMap<SecretRef, NotFilled>,
    in_flight: JoinSet<(SecretRef, Outcome)>,
    /// The Secret of each running refresh task (at most `concurrency`), so that a task that
    /// panics still frees its Secret.
    tasks: HashMap<tokio::task::Id, SecretRef>,
    /// Changed while a refresh of theirs was running.
    dirty: HashSet<SecretRef>,
    leader: bool,
}

/// Why a Secret is decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// A watch saw it change (or a refresh of it ended while it changed).
    Changed,
    /// The periodic resync.
    Resync,
}

/// How often the queue-depth gauge is updated.
const QUEUE_INTERVAL: Duration = Duration::from_secs(5);

impl Controller {
    pub fn new(
        writer: Arc<Writer>,
        events: Events,
        metrics: Arc<Metrics>,
        settings: ControllerSettings,
        streams: Vec<StreamId>,
    ) -> Self {
        Self {
            schedule: Schedule::new(settings.min_backoff, settings.max_backoff),
            index: Index::new(streams),
            writer,
            events,
            metrics,
            settings,
            state: HashMap::new(),
            expiries: HashMap::new(),
            skipped: HashMap::new(),
            in_flight: JoinSet::new(),
            tasks: HashMap::new(),
            dirty: HashSet::new(),
            leader: false,
        }
    }

    /// Runs until `shutdown`. `pending` names the watches that have not listed yet (`None`
    /// once all have); `leader` says whether this replica may write.
    pub async fn run(
        mut self,
        changes: impl Stream<Item = Change> + Send,
        mut leader: watch::Receiver<bool>,
        pending: watch::Sender<Option<String>>,
        shutdown: CancellationToken,
    ) -> Result<(), ControllerError> {
        let mut changes = std::pin::pin!(changes);
        let mut resync = tokio::time::interval(self.settings.resync);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.tick().await;
        let mut queue = tokio::time::interval(QUEUE_INTERVAL);
        self.metrics
            .set_states(SecretState::ALL.iter().map(|&s| (s, 0)));
        self.set_leader(*leader.borrow_and_update());
        loop {
            let capacity = self.leader && self.in_flight.len() < self.settings.concurrency;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => {
                    self.in_flight.shutdown().await;
                    self.metrics.leader.set(0);
                    return Ok(());
                }
                changed = leader.changed() => {
                    changed.map_err(|_| ControllerError::LeaderGone)?;
                    let is_leader = *leader.borrow_and_update();
                    self.set_leader(is_leader);
                }
                change = changes.next() => {
                    let change = change.ok_or(ControllerError::WatchEnded)?;
                    for secret in self.index.apply(change) {
                        self.decide(&secret, Trigger::Changed);
                    }
                    let unsynced = self.index.unsynced();
                    let now = (!unsynced.is_empty())
                        .then(|| format!("not listed yet: {}", unsynced.join(", ")));
                    pending.send_if_modified(|p| {
                        let changed = *p != now;
                        *p = now;
                        changed
                    });
                }
                Some(done) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    match done {
                        // A task from before a change of leader is no longer ours.
                        Ok((id, (secret, outcome))) => {
                            if self.tasks.remove(&id).is_some() {
                                self.finished(secret, outcome);
                            }
                        }
                        Err(e) => self.crashed(e),
                    }
                }
                secret = self.schedule.next_due(), if capacity => self.dispatch(secret),
                _ = resync.tick() => self.decide_all(),
                _ = queue.tick() => {
                    self.metrics.queue_depth.set(self.schedule.len() as i64);
                    self.report_expiries();
                }
            }
        }
    }

    fn set_leader(&mut self, leader: bool) {
        if leader == self.leader {
            return;
        }
        self.leader = leader;
        self.metrics.leader.set(i64::from(leader));
        if leader {
            tracing::info!("leading: refreshing Secrets");
        } else {
            tracing::info!("not leading: stopped refreshing Secrets");
            // Another replica leads now; what was running is its to finish.
            self.in_flight.abort_all();
            self.tasks.clear();
            self.dirty.clear();
            self.schedule.forget_failures();
        }
        self.decide_all();
    }

    fn decide_all(&mut self) {
        let secrets: Vec<SecretRef> = self.index.keys().cloned().collect();
        for secret in &secrets {
            self.decide(secret, Trigger::Resync);
        }
    }

    /// Schedules `secret` for when it is due. A change seen by a watch is decided on at once;
    /// a resync leaves a failing Secret at the retry time of its backoff.
    fn decide(&mut self, secret: &SecretRef, trigger: Trigger) {
        if self.tasks.values().any(|s| s == secret) {
            self.dirty.insert(secret.clone());
            return;
        }
        if trigger == Trigger::Resync && self.schedule.is_failing(secret) {
            return;
        }
        let Some(entry) = self.index.get(secret) else {
            self.schedule.forget(secret);
            self.set_state(secret, None);
            self.skipped.remove(secret);
            return;
        };
        let now = Timestamp::now();
        let due = self.writer.due_policy();
        let decision = match (&entry.managed, &entry.unmanaged) {
            // Kept without its data (oversized), a Secret looks due: its refresh reads it
            // in full and decides for real.
            (Some(managed), _) => plan::plan(secret, managed, self.writer.policy(), due, now),
            (None, Some(meta)) => {
                match listing(secret, &meta.marks, self.writer.policy()) {
                    // Read in full, filled and labelled on the first write. Metadata shows no
                    // shape or immutability: the read decides on those.
                    Listing::Listed => Plan::UpToDate { due_at: Some(now) },
                    Listing::NotOptedIn | Listing::OptingOut(_) => {
                        Plan::Skip(NotFilled::NotOptedIn)
                    }
                    Listing::Refused(e) => Plan::Skip(e.into()),
                }
            }
            (None, None) => unreachable!("the index drops empty entries"),
        };
        let failing = self.schedule.is_failing(secret);
        self.apply(secret, step::after_decision(decision, now, failing), now);
    }

    /// Carries out a step of the state machine.
    fn apply(&mut self, secret: &SecretRef, step: Step, now: Timestamp) {
        if step.succeeded {
            self.schedule.succeeded(secret);
        }
        let margin = self.writer.due_policy().refresh_before;
        match step.requeue {
            Requeue::Now => self.schedule.now(secret),
            Requeue::At(at) => self.schedule.at(secret, jittered(at, now, margin), now),
            Requeue::UntilChanged => self.schedule.remove(secret),
            Requeue::Forget => self.schedule.forget(secret),
            Requeue::Backoff => {
                let retry = self.schedule.failed(secret);
                tracing::debug!(%secret, retry_in = ?retry, "will retry");
            }
            Requeue::Stay => {}
        }
        if let Some(why) = step.not_filled {
            self.skip(secret, why);
        }
        self.set_state(secret, step.state);
    }

    /// Tells, once per distinct reason, why kubeecr will not fill a Secret.
    fn skip(&mut self, secret: &SecretRef, why: NotFilled) {
        if !self.leader || self.skipped.get(secret) == Some(&why) {
            return;
        }
        self.events.skipped(secret, &why);
        self.skipped.insert(secret.clone(), why);
    }

    fn dispatch(&mut self, secret: SecretRef) {
        let Some(entry) = self.index.get(&secret) else {
            return;
        };
        let cached = entry
            .managed
            .as_ref()
            .filter(|m| m.is_complete())
            .map(|m| Arc::new(KeptSecret::clone(m)));
        let writer = Arc::clone(&self.writer);
        let task = secret.clone();
        let handle = self.in_flight.spawn(async move {
            let outcome = writer.refresh(&task, cached).await;
            (task, outcome)
        });
        self.tasks.insert(handle.id(), secret);
    }

    /// A refresh task panicked or was aborted: its Secret is free again, retried later.
    fn crashed(&mut self, error: tokio::task::JoinError) {
        let Some(secret) = self.tasks.remove(&error.id()) else {
            return;
        };
        self.dirty.remove(&secret);
        if error.is_panic() {
            tracing::error!(%secret, "refreshing the Secret panicked; retrying with backoff");
            self.schedule.failed(&secret);
            self.set_state(&secret, Some(SecretState::Failing));
        }
    }

    fn finished(&mut self, secret: SecretRef, outcome: Outcome) {
        let dirty = self.dirty.remove(&secret);
        let now = Timestamp::now();
        match &outcome {
            Outcome::Refreshed {
                expires_at,
                first_fill,
                ..
            } => {
                self.skipped.remove(&secret);
                if *first_fill {
                    self.events.filled(
                        &secret,
                        &format!("filled with ECR tokens; they expire at {expires_at}"),
                    );
                }
            }
            Outcome::Failed(failure) => self.events.refresh_failed(&secret, &failure.note),
            _ => {}
        }
        let expires_at = match &outcome {
            Outcome::Refreshed { expires_at, .. } => Some(*expires_at),
            _ => None,
        };
        let margin = self.writer.due_policy().refresh_before;
        self.apply(&secret, step::after_refresh(outcome, now, margin), now);
        if let Some(at) = expires_at {
            self.expiries.insert(secret.clone(), at);
        }
        // Changed while it was being refreshed. After a write the change may predate it
        // (deciding again then costs a 409 and a read) or follow it: decide again rather than
        // miss the latter.
        if dirty {
            self.decide(&secret, Trigger::Changed);
        }
    }

    /// The soonest recorded expiry, and how many Secrets hold less than half of
    /// `--refresh-before`: a healthy refresher renews each at `--refresh-before`.
    fn report_expiries(&self) {
        let now = Timestamp::now();
        let half = self.writer.due_policy().refresh_before / 2;
        let soonest = self.expiries.values().min();
        self.metrics
            .secret_expiry_soonest
            .set(soonest.map_or(f64::INFINITY, |t| t.as_millisecond() as f64 / 1000.0));
        let past = self
            .expiries
            .values()
            .filter(|t| now.checked_add(half).is_ok_and(|limit| **t < limit))
            .count();
        self.metrics
            .secrets_past_renewal
            .set(i64::try_from(past).unwrap_or(i64::MAX));
    }

    /// Records a Secret's state and keeps the per-state gauges exact.
    fn set_state(&mut self, secret: &SecretRef, state: Option<SecretState>) {
        // The expiry of a token kubeecr answers for: not an invalid or forgotten Secret's.
        let recorded = self
            .index
            .get(secret)
            .and_then(|e| e.managed.as_ref())
            .and_then(|m| m.marks.expires_at()?.parse::<Timestamp>().ok());
        match (state, recorded) {
            (Some(s), Some(at)) if s != SecretState::Invalid => {
                self.expiries.insert(secret.clone(), at);
            }
            _ => {
                self.expiries.remove(secret);
            }
        }
        let old = match state {
            Some(state) => self.state.insert(secret.clone(), state),
            None => self.state.remove(secret),
        };
        if old == state {
            return;
        }
        let gauge = |s| {
            self.metrics
                .secrets
                .get_or_create(&StateLabels { state: s })
                .clone()
        };
        if let Some(old) = old {
            gauge(old).dec();
        }
        if let Some(new) = state {
            gauge(new).inc();
        }
    }
}
