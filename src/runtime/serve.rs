//! `kubeecr serve`, composed: the HTTPS webhook, the admin port, the certificate reloader,
//! the Secret watches and refresher, the Lease loop, token renewal and Events.
//!
//! Any of them ending on its own ends the process with a failure: no half-alive replica.
//! SIGTERM turns `/readyz` to 503, keeps serving for `--shutdown-delay` (so that endpoints
//! stop routing here first), then stops refreshing, releases the Lease, stops accepting
//! webhook connections and drains the open ones (20 s at most), and exits 0.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::webhook::{self, WebhookState};
use crate::contract::policy::Policy;
use crate::k8s::{self, KubeSettings};
use crate::refresher::controller::{Controller, ControllerSettings};
use crate::refresher::watch as secret_watch;
use crate::refresher::write::{WriteSettings, Writer};
use crate::runtime::leader::{Election, LeaderElector};
use crate::runtime::shutdown;
use crate::servers::admin::{self, Health};
use crate::servers::http::{self, ServerSettings};
use crate::servers::tls::{CertReloader, TlsFiles, server_config};
use crate::telemetry::events::Events;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::process;
use crate::tokens::cache::{CacheConfig, TokenCache};
use crate::tokens::ecr::{EcrSettings, EcrTokenSource};

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    pub listen: SocketAddr,
    pub tls: TlsFiles,
    pub tls_reload_interval: Duration,
    pub require_token: bool,
    pub token_wait: Duration,
    /// Connections, requests, bodies and their timeouts (`max_request_bytes` bounds reviews).
    pub server: ServerSettings,
    /// Put tokens in mutation responses; `false`: the refresher fills new Secrets instead.
    pub admission_fill: bool,
}

impl ServeSettings {
    /// Rules that keep teams apart, undone at the webhook port: with tokens in admission
    /// answers and no client certificate required, any pod that reaches the port can forge a
    /// review naming another team's namespace and role.
    pub fn admission_warning(&self) -> Option<String> {
        let per_namespace = self.policy.allowed_role_arns.names_namespaces()
            || self.policy.allowed_registries.names_namespaces();
        (per_namespace && self.webhook.admission_fill && self.webhook.tls.client_ca.is_none()).then(|| {
            "the rules differ by namespace, but any pod that reaches the webhook port can get a token for any namespace's rules in a forged AdmissionReview: set --admission-fill=false, or --client-ca-file, and fence the port (docs/security.md)".to_string()
        })
    }
}

#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub kube: KubeSettings,
    pub ecr: EcrSettings,
    pub cache: CacheConfig,
    pub policy: Policy,
    pub write: WriteSettings,
    pub page_size: u32,
    pub controller: ControllerSettings,
    pub webhook: WebhookSettings,
    pub admin_listen: SocketAddr,
    /// `None`: this replica always refreshes (`--leader-elect=false`).
    pub election: Option<Election>,
    pub events_per_second: NonZeroU32,
    /// How long to keep serving after SIGTERM, while `/readyz` already says 503.
    pub shutdown_delay: Duration,
}

/// How often tokens about to expire are renewed ahead of time.
const TOKEN_RENEW_INTERVAL: Duration = Duration::from_secs(60);
/// Bound on the whole shutdown, beyond the connection drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// Bound on the admin port's own stop, last.
const ADMIN_STOP: Duration = Duration::from_secs(2);
/// Longest a stop takes after `--shutdown-delay`: a pod's terminationGracePeriodSeconds must
/// cover the delay and this, or the Lease may not be released.
pub const STOP_BOUND: Duration = SHUTDOWN_GRACE.saturating_add(ADMIN_STOP);

type Task = (&'static str, anyhow::Result<()>);

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {addr} ({what}): {e}"))
}

pub async fn run(settings: ServeSettings) -> anyhow::Result<ExitCode> {
    // SIGTERM cancels `signal`; the tasks stop on `stop`, after the shutdown delay.
    let signal = CancellationToken::new();
    let signals = tokio::spawn(shutdown::on_signal(signal.clone()));
    let stop = CancellationToken::new();

    let reloader = CertReloader::load(settings.webhook.tls.clone())?;
    let tls = server_config(reloader.store(), reloader.clients());
    let (certificate_loaded, certificate_rx) = watch::channel(true);
    let webhook_listener = bind(settings.webhook.listen, "webhook").await?;
    let admin_listener = bind(settings.admin_listen, "admin").await?;
    let client = k8s::connect(&settings.kube).await?;
    let metrics = Arc::new(Metrics::new());

    let source = EcrTokenSource::from_env(settings.ecr.clone()).await;
    let tokens = TokenCache::new(Arc::new(source), settings.cache, Arc::clone(&metrics));
    let policy = Arc::new(settings.policy.clone());
    let lease = settings.election.clone().map(|e| e.resolve(&client));
    let instance = lease.as_ref().map_or_else(
        || format!("kubeecr-{}", std::process::id()),
        |l| l.identity.clone(),
    );
    let (events, events_task) = Events::start(
        client.clone(),
        instance,
        settings.events_per_second,
        Arc::clone(&metrics),
    );

    let (leading_tx, leading_rx) = watch::channel(false);
    let (pending_tx, pending_rx) =
        watch::channel(Some("the Secret watches have not listed yet".to_string()));
    let (stopping_tx, stopping_rx) = watch::channel(false);

    let mut tasks: JoinSet<Task> = JoinSet::new();

    // The webhook.
    let state = Arc::new(WebhookState {
        policy: Arc::clone(&policy),
        tokens: Arc::clone(&tokens),
        require_token: settings.webhook.require_token,
        token_wait: settings.webhook.token_wait,
        fill: settings.webhook.admission_fill,
        clients_verified: settings.webhook.tls.client_ca.is_some(),
        metrics: Arc::clone(&metrics),
        events: events.clone(),
    });
    let server = settings.webhook.server;
    let app = webhook::router(state, server.limits.max_request_bytes as usize);
    tracing::info!(listen = %webhook_listener.local_addr()?, "serving the admission webhook");
    let drained = stop.clone();
    let webhook_metrics = Arc::clone(&metrics);
    tasks.spawn(async move {
        let served = http::serve(
            webhook_listener,
            Some(tls),
            app,
            server,
            webhook_metrics,
            drained.cancelled_owned(),
        )
        .await;
        ("the webhook server", served.map_err(Into::into))
    });
    // Memory, and the serving certificate's expiry, for /metrics.
    let certificates = reloader.store();
    let (sample_stop, sample_metrics) = (stop.clone(), Arc::clone(&metrics));
    tasks.spawn(async move {
        let mut every = tokio::time::interval(process::SAMPLE_INTERVAL);
        loop {
            tokio::select! {
                _ = every.tick() => process::sample(&sample_metrics, certificates.not_after()),
                () = sample_stop.cancelled() => break,
            }
        }
        ("the metrics sampler", Ok(()))
    });
    let reload_stop = stop.clone();
    let interval = settings.webhook.tls_reload_interval;
    tasks.spawn(async move {
        tokio::select! {
            () = reloader.run(interval) => {}
            () = reload_stop.cancelled() => {}
        }
        drop(certificate_loaded);
        ("the certificate reloader", Ok(()))
    });

    // The refresher: watches on every replica, writes on the leader.
    let writer = Arc::new(Writer::new(
        client.clone(),
        Arc::clone(&tokens),
        policy,
        settings.write.clone(),
        Arc::clone(&metrics),
    ));
    let (namespaces, exclude) = (
        &settings.policy.namespaces,
        &settings.policy.exclude_namespaces,
    );
    let streams = secret_watch::stream_ids(namespaces, exclude);
    let changes = secret_watch::changes(
        &client,
        &streams,
        exclude,
        settings.page_size,
        &settings.policy.regions,
        &metrics,
    );
    let controller = Controller::new(
        writer,
        events,
        Arc::clone(&metrics),
        settings.controller,
        streams,
    );
    let controller_stop = stop.clone();
    let leading = leading_rx.clone();
    tasks.spawn(async move {
        let ran = controller
            .run(changes, leading, pending_tx, controller_stop)
            .await;
        ("the refresher", ran.map_err(Into::into))
    });

    // Leader election, or always leading.
    match lease {
        Some(lease) => {
            let elector = LeaderElector::new(client.clone(), lease);
            let lease_stop = stop.clone();
            let lease_metrics = Arc::clone(&metrics);
            tasks.spawn(async move {
                elector.run(leading_tx, lease_metrics, lease_stop).await;
                ("the leader election", Ok(()))
            });
        }
        None => {
            leading_tx.send_replace(true);
            let lease_stop = stop.clone();
            tasks.spawn(async move {
                lease_stop.cancelled().await;
                drop(leading_tx);
                ("the leader election", Ok(()))
            });
        }
    }

    // Tokens in use are renewed before they expire, so admission never waits for ECR.
    let renew_stop = stop.clone();
    let renewing = Arc::clone(&tokens);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(TOKEN_RENEW_INTERVAL);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let renewed = renewing.renew_due().await;
                    if renewed > 0 {
                        tracing::info!(renewed, "renewed ECR tokens ahead of expiry");
                    }
                }
                () = renew_stop.cancelled() => break,
            }
        }
        ("the token renewal", Ok(()))
    });

    // The admin port outlives the others: /readyz says 503 while they drain.
    let health = Health {
        certificate_loaded: certificate_rx,
        watch_pending: pending_rx,
        shutting_down: stopping_rx,
    };
    let admin_stop = CancellationToken::new();
    let admin_app = admin::router(health, Arc::clone(&metrics));
    tracing::info!(listen = %admin_listener.local_addr()?, "serving /livez, /readyz and /metrics");
    let mut admin_task = tokio::spawn(http::serve(
        admin_listener,
        None,
        admin_app,
        ServerSettings::ADMIN,
        Arc::clone(&metrics),
        admin_stop.clone().cancelled_owned(),
    ));

    // Run until a signal, or until a task ends on its own.
    let mut admin_ended = false;
    let failed = tokio::select! {
        biased;
        () = signal.cancelled() => None,
        Some(ended) = tasks.join_next() => Some(match ended {
            Ok((name, Ok(()))) => format!("{name} stopped"),
            Ok((name, Err(e))) => format!("{name} failed: {e:#}"),
            Err(e) => format!("a task panicked: {e}"),
        }),
        served = &mut admin_task => {
            admin_ended = true;
            Some(match served {
                Ok(Ok(())) => "the admin server stopped".to_string(),
                Ok(Err(e)) => format!("the admin server failed: {e}"),
                Err(e) => format!("the admin server panicked: {e}"),
            })
        }
    };
    stopping_tx.send_replace(true);
    match &failed {
        Some(why) => tracing::error!("{why}; shutting down"),
        // Endpoints take a moment to drop a pod that is no longer ready: keep serving
        // meanwhile, so that the API server is not refused.
        None if !settings.shutdown_delay.is_zero() => {
            tracing::info!(delay = ?settings.shutdown_delay, "not ready any more; still serving for the shutdown delay");
            tokio::time::sleep(settings.shutdown_delay).await;
        }
        None => {}
    }
    stop.cancel();
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(ended) = tasks.join_next().await {
            if let Ok((name, Err(e))) = ended {
                tracing::warn!("{name} ended with an error: {e:#}");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("not every task stopped within {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    admin_stop.cancel();
    if !admin_ended {
        let _ = tokio::time::timeout(ADMIN_STOP, admin_task).await;
    }
    events_task.abort();
    signals.abort();
    match failed {
        Some(why) => anyhow::bail!(why),
        None => {
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
