//! What each subcommand does, wired from its arguments.

use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::{Command, RefreshCommand};
use crate::ecr::EcrTokenSource;
use crate::refresh::{Outcome, Refresher};
use crate::token_cache::TokenCache;
use crate::{kube_client, telemetry, tls};

pub async fn run(cli: crate::cli::Cli) -> ExitCode {
    if let Err(e) = telemetry::init(&cli.log) {
        eprintln!("kubeecr: {e}");
        return ExitCode::from(2);
    }
    tls::install_crypto_provider();
    let result = match cli.command {
        Command::Refresh(cmd) => refresh(*cmd).await,
        Command::Serve(cmd) => crate::serve::run(*cmd).await,
    };
    result.unwrap_or_else(|e| {
        eprintln!("kubeecr: {e:#}");
        ExitCode::FAILURE
    })
}

/// One pass; prints the summary; fails when any secret failed.
async fn refresh(cmd: RefreshCommand) -> anyhow::Result<ExitCode> {
    let client = kube_client::connect(&cmd.kube).await?;
    let source = EcrTokenSource::from_env(cmd.aws.settings()).await;
    let tokens = TokenCache::new(Arc::new(source), cmd.refresh.cache_config(&cmd.aws));
    let refresher = Refresher::new(
        client,
        tokens,
        Arc::new(cmd.policy.policy()),
        cmd.refresh.options(),
    );
    let summary = refresher.run_once().await?;
    for report in &summary.reports {
        match &report.outcome {
            Outcome::Refreshed { expires_at, .. } => {
                println!("refreshed {} (expires {expires_at})", report.secret)
            }
            Outcome::Unchanged => println!("unchanged {}", report.secret),
            Outcome::Skipped(why) => println!("skipped   {why}"),
            Outcome::Failed(why) => println!("FAILED    {why}"),
        }
    }
    println!("{summary}");
    Ok(if summary.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
