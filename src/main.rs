use std::process::ExitCode;

use clap::Parser;

/// glibc's malloc contends on its arenas under admission load; mimalloc does not. Built with
/// `no_thp`, so that it never asks for transparent huge pages itself: its arenas would fill
/// whole 2 MiB pages, and idle RSS with 10,000 watched Secrets went from 36 to 55 MiB
/// (BENCHMARKS.md). Where THP is `always`, the image's `MIMALLOC_ALLOW_THP=0` turns them off
/// for the process.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    kubeecr::cmd::run(kubeecr::cmd::Cli::parse()).await
}
