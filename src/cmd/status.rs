//! `kubeecr status`: where each opted-in Secret stands, as the refresher would judge it.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::cmd::CmdError;
use crate::cmd::args::PolicyArgs;
use crate::cmd::duration::parse_refresh_before;
use crate::k8s::{self, KubeSettings};
use crate::status::{self, StatusSettings, state};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Args)]
pub struct StatusCommand {
    #[command(flatten)]
    pub kube: KubeSettings,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// A Secret whose token expires within this margin is `due` (as for refresh and serve).
    #[arg(long, env = "KUBEECR_REFRESH_BEFORE", default_value = "4h", value_parser = parse_refresh_before)]
    pub refresh_before: Duration,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    pub output: OutputFormat,
}

impl StatusCommand {
    pub fn settings(&self) -> Result<StatusSettings, String> {
        Ok(StatusSettings {
            policy: std::sync::Arc::new(self.policy.policy()?),
            refresh_before: self.refresh_before,
            page_size: 500,
        })
    }
}

impl StatusCommand {
    /// Prints every opted-in Secret. Exit 0: all filled; 1: something needs attention; 2: the
    /// Secrets could not be listed.
    pub async fn run(self) -> Result<ExitCode, CmdError> {
        let cmd = self;
        let client = k8s::connect(&cmd.kube)
            .await
            .map_err(|e| CmdError::NotRun(format!("{e:#}")))?;
        let settings = cmd.settings().map_err(CmdError::NotRun)?;
        let rows = status::collect(&client, &settings)
            .await
            .map_err(|e| CmdError::NotRun(e.to_string()))?;
        let summary = state::Summary::of(&rows);
        match cmd.output {
            OutputFormat::Table => print!("{}", state::table(&rows)),
            OutputFormat::Json => println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "secrets": rows,
                    "summary": summary,
                }))
                .map_err(anyhow::Error::from)?
            ),
        }
        Ok(if summary.needs_attention() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        })
    }
}
