use std::process::ExitCode;

use clap::Parser;

/// glibc's malloc contends on its arenas under admission load; mimalloc does not. Built with
/// `no_thp`: on hosts with transparent huge pages always on, its arenas otherwise fill whole
/// huge pages, and idle RSS with 10,000 watched Secrets went from 35 to 56 MiB
/// (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    kubeecr::commands::run(kubeecr::cli::Cli::parse()).await
}
