//! `kubeecr serve`: the admission webhook over HTTPS and the background refresher, in one
//! process. Any task that dies ends the process; SIGTERM drains connections first.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;

use crate::cli::RefreshCommand;
use crate::ecr::EcrTokenSource;
use crate::https_server::{self, ServerTimeouts};
use crate::kube_client;
use crate::refresh::Refresher;
use crate::tls::{CertReloader, TlsFiles, server_config};
use crate::token_cache::TokenCache;
use crate::webhook::{self, WebhookState};

#[derive(Debug, Args)]
pub struct ServeCommand {
    /// Everything `kubeecr refresh` takes, for the background refresher and the token cache.
    #[command(flatten)]
    pub core: RefreshCommand,
    #[command(flatten)]
    pub webhook: WebhookArgs,
}

#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Address of the HTTPS webhook server.
    #[arg(long, env = "KUBEECR_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// Serving certificate (PEM, may hold the chain), as cert-manager mounts it.
    #[arg(
        long,
        env = "KUBEECR_TLS_CERT_FILE",
        default_value = "/etc/kubeecr/tls/tls.crt"
    )]
    pub tls_cert_file: PathBuf,
    /// Serving key (PEM).
    #[arg(
        long,
        env = "KUBEECR_TLS_KEY_FILE",
        default_value = "/etc/kubeecr/tls/tls.key"
    )]
    pub tls_key_file: PathBuf,
    /// How often the certificate files are checked for a new pair.
    #[arg(long, env = "KUBEECR_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,
    /// Deny an opted-in Secret write when no ECR token can be had (default: admit with a warning).
    #[arg(long, env = "KUBEECR_REQUIRE_TOKEN")]
    pub require_token: bool,
    /// Longest wait for a cold token during admission (also at most half the webhook timeout).
    #[arg(long, env = "KUBEECR_TOKEN_WAIT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub token_wait: Duration,
    /// Largest AdmissionReview accepted; larger ones get 413.
    #[arg(long, env = "KUBEECR_MAX_REQUEST_BYTES", default_value_t = 3 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// How often the background refresher passes over the opted-in Secrets; 0s disables it.
    #[arg(long, env = "KUBEECR_REFRESH_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub refresh_interval: Duration,
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: draining connections");
}

async fn refresh_forever(refresher: Refresher, interval: Duration) {
    if interval.is_zero() {
        return futures::future::pending().await;
    }
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match refresher.run_once().await {
            Ok(summary) => tracing::info!(%summary, "refresh pass"),
            Err(e) => tracing::error!("refresh pass failed: {e}"),
        }
    }
}

pub async fn run(cmd: ServeCommand) -> anyhow::Result<ExitCode> {
    let files = TlsFiles {
        cert: cmd.webhook.tls_cert_file.clone(),
        key: cmd.webhook.tls_key_file.clone(),
    };
    let reloader = CertReloader::load(files)?;
    let tls = server_config(reloader.store());
    let listener = TcpListener::bind(cmd.webhook.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listening on {}: {e}", cmd.webhook.listen))?;
    let client = kube_client::connect(&cmd.core.kube).await?;
    let source = EcrTokenSource::from_env(cmd.core.aws.settings()).await;
    let tokens = TokenCache::new(
        Arc::new(source),
        cmd.core.refresh.cache_config(&cmd.core.aws),
    );
    let policy = Arc::new(cmd.core.policy.policy());
    let state = Arc::new(WebhookState {
        policy: Arc::clone(&policy),
        tokens: Arc::clone(&tokens),
        require_token: cmd.webhook.require_token,
        token_wait: cmd.webhook.token_wait,
    });
    let app = webhook::router(state, cmd.webhook.max_request_bytes);
    let refresher = Refresher::new(client, tokens, policy, cmd.core.refresh.options());
    tracing::info!(listen = %listener.local_addr()?, "serving the admission webhook");
    tokio::select! {
        served = https_server::serve(listener, tls, app, ServerTimeouts::default(), shutdown_signal()) => {
            served?;
            Ok(ExitCode::SUCCESS)
        }
        () = reloader.run(cmd.webhook.tls_reload_interval) => anyhow::bail!("the certificate reloader stopped"),
        () = refresh_forever(refresher, cmd.webhook.refresh_interval) => anyhow::bail!("the refresher stopped"),
    }
}
