//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
//! does it: create the Lease, or take it over by an update guarded by its resourceVersion.
//!
//! - A Lease held by another replica counts as expired `lease_duration` after this replica
//!   last *saw it change* (its own clock), so clock skew between nodes does not matter.
//! - The leader renews every `retry_period`. If no renewal succeeds for `renew_deadline`
//!   (shorter than the lease), it stops leading at once, before anyone else may take over.
//! - On shutdown the leader releases the Lease (empty holder), so another replica takes
//!   over at its next try rather than after the lease runs out.
//!
//! kube-lease-manager supports kube 5 and was considered. It was not used: it keeps
//! reporting leadership while renewals fail (no renew deadline), and judges another holder's
//! lease by comparing that holder's renewTime with the local wall clock.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::k8s::{describe, status_code};
use crate::telemetry::metrics::Metrics;

/// Leader election as configured; `resolve` fills in what the environment knows.
#[derive(Debug, Clone)]
pub struct Election {
    pub name: String,
    /// Unset: the client's default namespace (in-cluster: the pod's).
    pub namespace: Option<String>,
    /// Unset: the hostname and a random suffix, so that two processes on one host differ.
    pub identity: Option<String>,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Election {
    pub fn resolve(self, client: &kube::Client) -> LeaseSettings {
        let identity = self.identity.unwrap_or_else(|| {
            let host = hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "kubeecr".to_string());
            format!("{host}_{:08x}", fastrand::u32(..))
        });
        LeaseSettings {
            name: self.name,
            namespace: self
                .namespace
                .unwrap_or_else(|| client.default_namespace().to_string()),
            identity,
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// Who this replica is: the pod name, or the hostname and a random suffix.
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// What this replica last saw of the Lease, and when (its own clock).
struct Observed {
    lease: Lease,
    at: Instant,
}

pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaseSettings,
    observed: Option<Observed>,
}

fn holder(lease: &Lease) -> Option<&str> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

fn same_record(a: &Lease, b: &Lease) -> bool {
    a.metadata.resource_version == b.metadata.resource_version && a.spec == b.spec
}

impl LeaderElector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Self {
        Self {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            observed: None,
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(self.settings.lease_duration.as_secs().max(1) as i32),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn observe(&mut self, lease: Lease) {
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|o| !same_record(&o.lease, &lease));
        if changed {
            self.observed = Some(Observed {
                lease,
                at: Instant::now(),
            });
        }
    }

    /// One attempt to become or stay the leader. `Ok(true)`: this replica holds the Lease.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(current) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.settings.name.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created);
                    Ok(true)
                }
                // Another replica created it first.
                Err(e) if status_code(&e) == Some(409) => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(current.clone());
        let me = self.settings.identity.as_str();
        let held_by = holder(&current);
        let observed_at = self.observed.as_ref().map_or_else(Instant::now, |o| o.at);
        let duration = current
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .map_or(self.settings.lease_duration, |s| {
                Duration::from_secs(s.max(0) as u64)
            });
        if let Some(other) = held_by
            && other != me
            && observed_at.elapsed() < duration
        {
            return Ok(false);
        }
        let spec = current.spec.clone().unwrap_or_default();
        let (acquired, transitions) = if held_by == Some(me) {
            (spec.acquire_time, spec.lease_transitions.unwrap_or(0))
        } else {
            (None, spec.lease_transitions.unwrap_or(0) + 1)
        };
        let mut update = current;
        update.spec = Some(self.spec(now, acquired, transitions));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &update)
            .await
        {
            Ok(written) => {
                self.observe(written);
                Ok(true)
            }
            // Changed since it was read: another replica renewed or took it.
            Err(e) if status_code(&e) == Some(409) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up, if this replica holds it: empty holder, one-second duration.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(Observed { lease, .. }) = self.observed.take() else {
            return Ok(());
        };
        if holder(&lease) != Some(self.settings.identity.as_str()) {
            return Ok(());
        }
        let now = Timestamp::now();
        let mut update = lease;
        let spec = update.spec.get_or_insert_with(LeaseSpec::default);
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(now));
        spec.acquire_time = Some(MicroTime(now));
        match self
            .api
            .replace(&self.settings.name, &PostParams::default(), &update)
            .await
        {
            Ok(_) => Ok(()),
            // Someone else holds it already: nothing to release.
            Err(e) if status_code(&e) == Some(409) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Elects until `shutdown`, publishing whether this replica leads; then releases the
    /// Lease if it holds it. A leader whose renewals fail stops leading the moment its renew
    /// deadline passes, whatever its requests are doing.
    pub async fn run(
        mut self,
        leading: watch::Sender<bool>,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) {
        let deadline = self.settings.renew_deadline;
        let mut last_renewal: Option<Instant> = None;
        let mut last_error: Option<(String, Instant)> = None;
        loop {
            if last_renewal.is_some_and(|at| at.elapsed() >= deadline) {
                tracing::warn!(identity = %self.settings.identity, deadline = ?deadline, "could not renew the Lease in time; stepping down");
                last_renewal = None;
                leading.send_replace(false);
            }
            // A leader's attempt may not outlast its deadline; a candidate's takes half of it.
            let budget = match last_renewal {
                Some(at) => (at + deadline).saturating_duration_since(Instant::now()),
                None => deadline / 2,
            };
            // A renewal counts from when it was sent: its answer may come late.
            let sent = Instant::now();
            let attempt = tokio::time::timeout(budget, self.try_acquire_or_renew())
                .await
                .unwrap_or_else(|_| {
                    Err(kube::Error::Service("the Lease request timed out".into()))
                });
            match attempt {
                Ok(true) => {
                    if last_renewal.is_none() {
                        tracing::info!(identity = %self.settings.identity, lease = %self.settings.name, namespace = %self.settings.namespace, "acquired the Lease");
                    }
                    last_renewal = Some(sent);
                    last_error = None;
                }
                Ok(false) => {
                    if last_renewal.take().is_some() {
                        tracing::warn!(identity = %self.settings.identity, "lost the Lease to another replica");
                    }
                    last_error = None;
                }
                Err(e) => {
                    metrics.lease_errors.inc();
                    let message = describe(&e);
                    // Said once, and again every minute while it lasts.
                    let repeat = last_error
                        .as_ref()
                        .is_some_and(|(m, at)| *m == message && at.elapsed() < ERROR_REPEAT);
                    if !repeat {
                        tracing::warn!(lease = %self.settings.name, namespace = %self.settings.namespace, "leader election: {message}");
                        last_error = Some((message, Instant::now()));
                    }
                }
            }
            let pause = self
                .settings
                .retry_period
                .mul_f64(1.0 + 0.2 * fastrand::f64());
            let is_leader = last_renewal.is_some_and(|at| at.elapsed() < deadline);
            leading.send_if_modified(|l| std::mem::replace(l, is_leader) != is_leader);
            // Back at the deadline at the latest, to step down on time.
            let mut wake = Instant::now() + pause;
            if let Some(at) = last_renewal {
                wake = wake.min(at + deadline);
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep_until(wake) => {}
            }
        }
        leading.send_replace(false);
        match self.release().await {
            Ok(()) => tracing::info!(identity = %self.settings.identity, "released the Lease"),
            Err(e) => tracing::warn!("releasing the Lease: {}", describe(&e)),
        }
    }
}

/// How often a lasting leader-election error is logged again.
const ERROR_REPEAT: Duration = Duration::from_secs(60);
