//! What each subcommand does, wired from its arguments.

use std::process::ExitCode;
use std::sync::Arc;

use crate::certs;
use crate::cli::{CertsCommand, Cli, Command, OutputFormat, RefreshCommand, StatusCommand};
use crate::kube_api;
use crate::refresher::pass::Refresher;
use crate::refresher::write::{Outcome, Writer};
use crate::servers::tls;
use crate::status::{self, state};
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
        Command::Status(cmd) => status(*cmd).await,
        Command::Certs(cmd) => certs(&cmd),
        Command::Serve(cmd) => match cmd.settings() {
            Ok(settings) => {
                warn_of(&settings.policy);
                if let Some(warning) = settings.admission_warning() {
                    tracing::warn!("{warning}");
                }
                crate::service::serve::run(settings).await
            }
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

/// Logs what the operator should know of the policy before relying on it.
fn warn_of(policy: &crate::contract::policy::Policy) {
    for warning in policy.warnings() {
        tracing::warn!("{warning}");
    }
}

/// One pass; prints the summary; fails when any secret failed.
async fn refresh(cmd: RefreshCommand) -> anyhow::Result<ExitCode> {
    let policy = match cmd.policy.policy() {
        Ok(policy) => policy,
        Err(e) => {
            eprintln!("kubeecr refresh: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    warn_of(&policy);
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
        Arc::new(policy),
        cmd.refresh.write_settings(cmd.force, cmd.dry_run),
        metrics,
    );
    let refresher = Refresher::new(client, Arc::new(writer), cmd.refresh.pass_settings());
    let summary = refresher.run_once().await?;
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

/// Prints every opted-in Secret. Exit 0: all filled; 1: something needs attention; 2: the
/// Secrets could not be listed.
async fn status(cmd: StatusCommand) -> anyhow::Result<ExitCode> {
    let client = match kube_api::connect(&cmd.kube.settings()).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("kubeecr status: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let settings = match cmd.settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("kubeecr status: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let rows = match status::collect(&client, &settings).await {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("kubeecr status: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let summary = state::Summary::of(&rows);
    match cmd.output {
        OutputFormat::Table => print!("{}", state::table(&rows)),
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "secrets": rows,
                "summary": summary,
            }))?
        ),
    }
    Ok(if summary.needs_attention() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn certs(cmd: &CertsCommand) -> anyhow::Result<ExitCode> {
    let request = cmd.request();
    let issued = certs::issue(&request)?;
    for path in certs::write(&cmd.out, &issued, cmd.force)? {
        println!("wrote {}", path.display());
    }
    println!(
        "valid for {} until {}; run again before then, and apply the new certificate and caBundle together",
        certs::names(&request).join(", "),
        jiff::Timestamp::now() + jiff::SignedDuration::try_from(cmd.valid_for)?,
    );
    Ok(ExitCode::SUCCESS)
}
