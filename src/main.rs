use std::process::ExitCode;

use clap::Parser;

/// glibc's malloc contends on its arenas under admission load; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    kubeecr::commands::run(kubeecr::cli::Cli::parse()).await
}
