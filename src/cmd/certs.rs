//! `kubeecr certs`: a CA and a serving certificate for the webhook, for clusters without
//! cert-manager.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::certs::{self, CertsRequest};
use crate::cmd::CmdError;
use crate::cmd::duration::{HOUR, TEN_YEARS, duration_within};

#[derive(Debug, Args)]
pub struct CertsCommand {
    /// Directory for ca.crt, tls.crt, tls.key and ca-bundle.env (what certs/kustomization.yaml
    /// reads). Required, so that a key never lands in whatever directory the command ran in.
    #[arg(long)]
    pub out: PathBuf,
    /// Name of the webhook's Service.
    #[arg(long, default_value = "kubeecr-webhook")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "kubeecr")]
    pub service_namespace: String,
    /// More DNS names or IP addresses to cover (e.g. 127.0.0.1 for a local run).
    #[arg(long = "extra-name", value_delimiter = ',')]
    pub extra_names: Vec<String>,
    /// How long the certificates are valid; run again before then.
    #[arg(long, default_value = "365d", value_parser = |s: &str| duration_within(s, HOUR, TEN_YEARS))]
    pub valid_for: Duration,
    /// Replace certificates already in --out.
    #[arg(long)]
    pub force: bool,
}

impl CertsCommand {
    pub fn request(&self) -> CertsRequest {
        CertsRequest {
            service: self.service.clone(),
            namespace: self.service_namespace.clone(),
            extra_names: self.extra_names.clone(),
            valid_for: self.valid_for,
        }
    }
}

impl CertsCommand {
    pub fn run(&self) -> Result<ExitCode, CmdError> {
        let cmd = self;
        let request = cmd.request();
        let issued = certs::issue(&request).map_err(anyhow::Error::from)?;
        for path in certs::write(&cmd.out, &issued, cmd.force).map_err(anyhow::Error::from)? {
            println!("wrote {}", path.display());
        }
        println!(
            "valid for {} until {}; run again before then, and apply the new certificate and caBundle together",
            certs::names(&request).join(", "),
            jiff::Timestamp::now()
                + jiff::SignedDuration::try_from(cmd.valid_for).map_err(anyhow::Error::from)?,
        );
        Ok(ExitCode::SUCCESS)
    }
}
