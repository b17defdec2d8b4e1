//! The command line: one module per subcommand, each with its arguments, their checks and its
//! `run`; argument groups that several share in `args`. Flags that configure a running kubeecr
//! also read a `KUBEECR_*` variable; a command's one-off flags (`refresh --dry-run`,
//! `status -o`, `certs`) read none. docs/reference/cli.md, generated from these definitions,
//! says which is which.

pub mod args;
pub mod certs;
pub mod duration;
pub mod refresh;
pub mod serve;
pub mod status;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::contract::policy::Policy;
use crate::servers::tls;
use crate::telemetry::logging::{self, LogFormat, LogSettings};

pub use certs::CertsCommand;
pub use refresh::RefreshCommand;
pub use serve::ServeCommand;
pub use status::StatusCommand;

#[derive(Debug, Parser)]
#[command(
    name = "kubeecr",
    version,
    about = "Keeps AWS ECR pull credentials fresh in Kubernetes dockerconfigjson Secrets, in place."
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Where AWS credentials come from; the variables are the SDK's, read by no flag.
const AWS_CREDENTIALS_HELP: &str = "AWS credentials come from the AWS SDK's default chain: \
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN (in a cluster, from the \
kubeecr-aws-secrets Secret), IRSA (AWS_ROLE_ARN, AWS_WEB_IDENTITY_TOKEN_FILE), EKS Pod Identity, \
or AWS_PROFILE.";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Refresh every opted-in Secret that is due, once, and exit (CronJob or laptop).
    #[command(after_help = AWS_CREDENTIALS_HELP)]
    Refresh(Box<RefreshCommand>),
    /// Serve the admission webhook and the admin port, and keep opted-in Secrets fresh.
    #[command(after_help = AWS_CREDENTIALS_HELP)]
    Serve(Box<ServeCommand>),
    /// List opted-in Secrets with their expiry and state; exit 1 when any needs attention.
    Status(Box<StatusCommand>),
    /// Write a CA and a serving certificate for the webhook (clusters without cert-manager).
    Certs(CertsCommand),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Self::Refresh(_) => "refresh",
            Self::Serve(_) => "serve",
            Self::Status(_) => "status",
            Self::Certs(_) => "certs",
        }
    }

    async fn run(self) -> Result<ExitCode, CmdError> {
        match self {
            Self::Refresh(cmd) => cmd.run().await,
            Self::Serve(cmd) => cmd.run().await,
            Self::Status(cmd) => cmd.run().await,
            Self::Certs(cmd) => cmd.run(),
        }
    }
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(
        long,
        env = "KUBEECR_LOG_FORMAT",
        value_enum,
        default_value = "plain",
        global = true
    )]
    pub log_format: LogFormat,
    /// Log filter, in tracing's EnvFilter syntax (e.g. `info,kubeecr=debug`). Unset:
    /// $RUST_LOG, then `info`. Whatever it says, the AWS SDK, hyper, h2, rustls, tower and
    /// kube's client never log below debug: at trace they would log the token.
    #[arg(long, env = "KUBEECR_LOG_LEVEL", global = true)]
    pub log_level: Option<String>,
}

impl LogArgs {
    pub fn settings(&self) -> LogSettings {
        let (filter, source) = match (&self.log_level, std::env::var("RUST_LOG")) {
            (Some(level), _) => (level.clone(), "--log-level"),
            (None, Ok(rust_log)) if !rust_log.is_empty() => (rust_log, "RUST_LOG"),
            (None, _) => ("info".to_string(), "the default log level"),
        };
        LogSettings {
            format: self.log_format,
            filter,
            source,
        }
    }
}

/// How a subcommand fails.
#[derive(Debug)]
pub enum CmdError {
    /// Nothing was done: a flag's value, or what the command needs before it starts (exit 2).
    NotRun(String),
    /// It failed while working (exit 1).
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for CmdError {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

/// Runs the subcommand; the one place that turns a failure into a message and an exit code.
pub async fn run(cli: Cli) -> ExitCode {
    if let Err(e) = logging::init(&cli.log.settings()) {
        eprintln!("kubeecr: {e}");
        return ExitCode::from(2);
    }
    tls::install_crypto_provider();
    let name = cli.command.name();
    match cli.command.run().await {
        Ok(code) => code,
        Err(CmdError::NotRun(message)) => {
            eprintln!("kubeecr {name}: {message}");
            ExitCode::from(2)
        }
        Err(CmdError::Failed(e)) => {
            eprintln!("kubeecr: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs what the operator should know of the policy before relying on it.
fn warn_of(policy: &Policy) {
    for warning in policy.warnings() {
        tracing::warn!("{warning}");
    }
}

#[cfg(test)]
mod tests;
