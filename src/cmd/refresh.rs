//! `kubeecr refresh`: one pass over every opted-in Secret, as a CronJob or from a laptop.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use crate::cmd::args::RefresherArgs;
use crate::cmd::{CmdError, warn_of};
use crate::k8s;
use crate::refresher::pass::Refresher;
use crate::refresher::write::{Outcome, Writer};
use crate::telemetry::metrics::Metrics;
use crate::tokens::cache::TokenCache;
use crate::tokens::ecr::EcrTokenSource;

#[derive(Debug, Args)]
pub struct RefreshCommand {
    #[command(flatten)]
    pub refresher: RefresherArgs,
    /// Write every opted-in secret, due or not (one whose content would not change is still left alone).
    #[arg(long, env = "KUBEECR_FORCE")]
    pub force: bool,
    /// Say what would be written, and write nothing: each write goes to the API server with
    /// dryRun=All, so RBAC, validation and webhooks are checked too. ECR is still called.
    #[arg(long)]
    pub dry_run: bool,
}

impl RefreshCommand {
    /// One pass; prints the summary; fails when any secret failed.
    pub async fn run(self) -> Result<ExitCode, CmdError> {
        let cmd = self;
        let RefresherArgs {
            kube,
            aws,
            policy,
            refresh,
        } = &cmd.refresher;
        let policy = policy.policy().map_err(CmdError::NotRun)?;
        warn_of(&policy);
        let client = k8s::connect(kube).await?;
        let metrics = Arc::new(Metrics::new());
        let source = EcrTokenSource::from_env(aws.settings()).await;
        let tokens = TokenCache::new(
            Arc::new(source),
            refresh.cache_config(aws),
            Arc::clone(&metrics),
        );
        let writer = Writer::new(
            client.clone(),
            tokens,
            Arc::new(policy),
            refresh.write_settings(cmd.force, cmd.dry_run),
            metrics,
        );
        let refresher = Refresher::new(client, Arc::new(writer), refresh.pass_settings());
        let summary = refresher.run_once().await.map_err(anyhow::Error::from)?;
        let (refreshed, released) = if cmd.dry_run {
            ("would refresh", "would release")
        } else {
            ("refreshed", "released ")
        };
        for report in &summary.reports {
            match &report.outcome {
                Outcome::Refreshed {
                    expires_at, reason, ..
                } => println!(
                    "{refreshed} {} ({reason}; new token expires {expires_at})",
                    report.secret
                ),
                Outcome::Unchanged { .. } => println!("unchanged {}", report.secret),
                Outcome::Released => println!("{released} {} (opted out)", report.secret),
                Outcome::Skipped(why) => println!("skipped   {}: {why}", report.secret),
                Outcome::Failed(failure) => println!("FAILED    {}", failure.message),
            }
        }
        if cmd.dry_run {
            println!("dry run, nothing written: {summary}");
        } else {
            println!("{summary}");
        }
        Ok(if summary.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    }
}
