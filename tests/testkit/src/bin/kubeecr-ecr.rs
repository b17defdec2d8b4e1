//! ECR for scripts: the testkit's proxy in front of a moto server, answering
//! GetAuthorizationToken as ECR does (a fresh password of real length on every call, expiring
//! 12 hours ahead). Used by `scripts/local-run.sh` and `scripts/bench/`, so that what they measure and
//! show has real token sizes.

use clap::Parser;
use kubeecr_testkit::moto::{EcrProxy, TokenStyle};

#[derive(Parser)]
struct Args {
    /// The moto server to stand in front of, e.g. http://127.0.0.1:5000.
    #[arg(long)]
    moto: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Pass moto's own answers through (`<account>-auth-token`, expiring in 2015).
    #[arg(long)]
    moto_tokens: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let proxy = EcrProxy::start_on(&args.listen, &args.moto).await;
    if args.moto_tokens {
        proxy.set_token_style(TokenStyle::Moto);
    }
    println!("ready {}", proxy.url());
    tokio::signal::ctrl_c().await?;
    let issued = proxy.issued().len();
    eprintln!("issued {issued} tokens");
    Ok(())
}
