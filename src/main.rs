use std::process::ExitCode;

use clap::Parser;

/// mimalloc: glibc's malloc contends on its arenas under admission load. `no_thp`: its arenas
/// would otherwise fill whole 2 MiB huge pages. Figures: BENCHMARKS.md, "The allocator".
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    kubeecr::cmd::run(kubeecr::cmd::Cli::parse()).await
}
