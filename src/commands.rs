//! What each subcommand does, wired from its arguments.

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{Cli, Command, RefreshCommand};
use crate::kube_api;
use crate::refresher::pass::Refresher;
use crate::refresher::write::{Outcome, Writer};
use crate::servers::tls;
use crate::telemetry::logging;
use crate::telemetry::metrics::Metrics;
use crate::tokens::cache::TokenCache;
use crate::tokens::ecr::EcrTokenSource;

pub async fn run(cli: Cli) -> ExitCode {
    if let Err(e) = logging::init(&cli.log.settings()) {
        eprintln!("kubeecr: {e}");
        return ExitCode::from(2);
    }
    tls::install_crypto_provider();
    let result = match cli.command {
        Command::Refresh(cmd) => refresh(*cmd).await,
        Command::Serve(cmd) => match cmd.settings() {
            Ok(settings) => crate::service::serve::run(settings).await,
            Err(e) => {
                eprintln!("kubeecr serve: {e}");
                return ExitCode::from(2);
            }
        },
    };
    result.unwrap_or_else(|e| {
        eprintln!("kubeecr: {e:#}");
        ExitCode::FAILURE
    })
}

/// One pass; prints the summary; fails when any secret failed.
async fn refresh(cmd: RefreshCommand) -> anyhow::Result<ExitCode> {
    let client = kube_api::connect(&cmd.kube.settings()).await?;
    let metrics = Arc::new(Metrics::new());
    let source = EcrTokenSource::from_env(cmd.aws.settings()).await;
    let tokens = TokenCache::new(
        Arc::new(source),
        cmd.refresh.cache_config(&cmd.aws),
        Arc::clone(&metrics),
    );
    let writer = Writer::new(
        client.clone(),
        tokens,
        Arc::new(cmd.policy.policy()),
        cmd.refresh.write_settings(cmd.force),
        metrics,
    );
    let refresher = Refresher::new(client, Arc::new(writer), cmd.refresh.pass_settings());
    let summary = refresher.run_once().await?;
    for report in &summary.reports {
        match &report.outcome {
            Outcome::Refreshed { expires_at, .. } => {
                println!("refreshed {} (expires {expires_at})", report.secret)
            }
            Outcome::Unchanged { .. } => println!("unchanged {}", report.secret),
            Outcome::Released => println!("released  {} (opted out)", report.secret),
            Outcome::Skipped(why) => println!("skipped   {why}"),
            Outcome::Failed(failure) => println!("FAILED    {}", failure.message),
        }
    }
    println!("{summary}");
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
