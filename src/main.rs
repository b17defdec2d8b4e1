use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    kubeecr::commands::run(kubeecr::cli::Cli::parse()).await
}
