//! A throwaway "cluster" for running kubeecr locally: the in-repo kube-apiserver double on
//! 127.0.0.1, a kubeconfig for it, and kubeecr's `webhook-config/` registered against a
//! webhook URL, trusting the CA `kubeecr certs` made. Used by `scripts/local-run.sh` and `scripts/bench/`.

use std::path::PathBuf;

use clap::Parser;
use kubeecr_testkit::apiserver::FakeApiServer;

#[derive(Parser)]
struct Args {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Where to write the kubeconfig.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The webhook's base URL, e.g. https://127.0.0.1:8443. Unset: no webhook is registered.
    #[arg(long, requires = "webhook_ca")]
    webhook_url: Option<String>,
    /// The CA the webhook's certificate chains to (its caBundle), e.g. from `kubeecr certs`.
    #[arg(long)]
    webhook_ca: Option<PathBuf>,
    /// The webhook-config/ directory to register.
    #[arg(long, default_value = "webhook-config")]
    webhook_config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let server = FakeApiServer::start_on(&args.listen).await;
    server.write_kubeconfig(&args.kubeconfig);
    if let (Some(url), Some(ca)) = (&args.webhook_url, &args.webhook_ca) {
        let ca = std::fs::read_to_string(ca)?;
        let mut yaml = String::new();
        for file in ["mutating.yaml", "validating.yaml"] {
            yaml.push_str(&std::fs::read_to_string(args.webhook_config.join(file))?);
            yaml.push_str("\n---\n");
        }
        server.webhooks().register_yaml(&yaml, url, ca.as_bytes());
    }
    println!("ready {}", server.url());
    tokio::signal::ctrl_c().await?;
    Ok(())
}
