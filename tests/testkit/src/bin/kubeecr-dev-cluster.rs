//! A throwaway "cluster" for running kubeecr locally: the in-repo kube-apiserver double on
//! 127.0.0.1, a kubeconfig for it, dev TLS certificates for the webhook, and kubeecr's
//! `webhook-config/` registered against a webhook URL. Used by `scripts/local-run.sh`.

use std::path::PathBuf;

use clap::Parser;
use kubeecr_testkit::apiserver::FakeApiServer;
use kubeecr_testkit::tls::TestCa;

#[derive(Parser)]
struct Args {
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Where to write the kubeconfig.
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Directory for ca.crt, tls.crt and tls.key (made when missing).
    #[arg(long)]
    certs_dir: PathBuf,
    /// The webhook's base URL, e.g. https://127.0.0.1:8443. Unset: no webhook is registered.
    #[arg(long)]
    webhook_url: Option<String>,
    /// The webhook-config/ directory to register.
    #[arg(long, default_value = "webhook-config")]
    webhook_config: PathBuf,
}

fn ensure_certs(dir: &std::path::Path) -> anyhow::Result<String> {
    let ca_path = dir.join("ca.crt");
    if !ca_path.exists() {
        std::fs::create_dir_all(dir)?;
        let ca = TestCa::new("kubeecr-local-ca");
        let serving = ca.serving("kubeecr-webhook.local", true);
        std::fs::write(dir.join("tls.crt"), serving.cert_pem)?;
        std::fs::write(dir.join("tls.key"), serving.key_pem)?;
        std::fs::write(&ca_path, ca.pem())?;
    }
    Ok(std::fs::read_to_string(ca_path)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let ca = ensure_certs(&args.certs_dir)?;
    let server = FakeApiServer::start_on(&args.listen).await;
    server.write_kubeconfig(&args.kubeconfig);
    if let Some(url) = &args.webhook_url {
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
