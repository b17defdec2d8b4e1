//! Connecting to the API server: a kubeconfig and context, or the in-cluster service account.

use std::path::PathBuf;

use kube::Client;
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

/// Where the API server is: a kubeconfig and context, or the in-cluster service account.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KubeSettings {
    /// Kubeconfig file. Unset: $KUBECONFIG, ~/.kube/config, then the in-cluster service account.
    #[arg(long, env = "KUBEECR_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context. Unset: the current context.
    #[arg(long, env = "KUBEECR_CONTEXT")]
    pub context: Option<String>,
}

pub async fn connect(settings: &KubeSettings) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| anyhow::anyhow!("reading kubeconfig {}: {e}", path.display()))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None if settings.context.is_some() => Config::from_kubeconfig(&options).await?,
        None => Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}
