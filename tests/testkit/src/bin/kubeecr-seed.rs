//! Fills a cluster with Secrets for benchmarks: opted-in ones spread over namespaces and
//! (account, region) pairs, and unrelated ones of a given size, as Helm release Secrets are.
//! Used by `scripts/bench/*.sh`. Creates concurrently; an object that exists already is left alone.

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

const REGIONS: [&str; 5] = [
    "us-west-2",
    "us-east-1",
    "eu-west-1",
    "eu-central-1",
    "ap-southeast-2",
];

#[derive(Parser)]
struct Args {
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Namespaces `bench-0` .. `bench-<n-1>`.
    #[arg(long, default_value_t = 1000)]
    namespaces: usize,
    /// Opted-in Secrets per namespace.
    #[arg(long, default_value_t = 10)]
    secrets_per_namespace: usize,
    /// Distinct accounts; with the 5 regions they make the (account, region) pairs.
    #[arg(long, default_value_t = 10)]
    accounts: usize,
    /// Registries each opted-in Secret lists (distinct accounts, one region).
    #[arg(long, default_value_t = 1)]
    registries_per_secret: usize,
    /// Bytes of padding inside each opted-in Secret's own `.dockerconfigjson`, as a tenant
    /// may put there.
    #[arg(long, default_value_t = 0)]
    config_padding: usize,
    /// Label the opted-in Secrets as kubeecr's webhook does at creation.
    #[arg(long)]
    labelled: bool,
    /// Unrelated Secrets (not opted in), spread over the namespaces.
    #[arg(long, default_value_t = 0)]
    unrelated: usize,
    /// Bytes of data in each unrelated Secret.
    #[arg(long, default_value_t = 512 * 1024)]
    unrelated_bytes: usize,
    /// Make the unrelated Secrets Opaque and label them `deft.com/kubeecr-managed=true`, as a
    /// tenant can without opting in (what the ValidatingAdmissionPolicy now refuses).
    #[arg(long)]
    unrelated_labelled: bool,
    /// Name prefix of the unrelated Secrets, so that several batches can be added.
    #[arg(long, default_value = "sh.helm.release.v1.app")]
    unrelated_prefix: String,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

async fn create(api: Api<Secret>, secret: Secret) -> anyhow::Result<()> {
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .ok();
    let args = Args::parse();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&args.kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    let client = kube::Client::try_from(config)?;
    let started = std::time::Instant::now();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = (0..args.namespaces).map(|i| format!("bench-{i}")).collect();
    futures::stream::iter(names.clone())
        .map(|name| {
            let namespaces = namespaces.clone();
            async move {
                let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
                match namespaces.create(&PostParams::default(), &ns).await {
                    Ok(_) => Ok(()),
                    // Exists; or the API double, which has no Namespace resource.
                    Err(kube::Error::Api(s)) if [404, 405, 409].contains(&s.code) => Ok(()),
                    Err(e) => Err(anyhow::Error::from(e)),
                }
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<anyhow::Result<()>>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;

    let empty = if args.config_padding == 0 {
        STANDARD.encode(br#"{"auths":{}}"#)
    } else {
        STANDARD.encode(format!(
            r#"{{"auths":{{}},"pad":"{}"}}"#,
            "x".repeat(args.config_padding)
        ))
    };
    let mut secrets = Vec::new();
    for (i, ns) in names.iter().enumerate() {
        for j in 0..args.secrets_per_namespace {
            let n = i * args.secrets_per_namespace + j;
            let region = REGIONS[(n / args.accounts) % REGIONS.len()];
            let registries: Vec<String> = (0..args.registries_per_secret.max(1))
                .map(|r| {
                    let account = 100_000_000_000u64
                        + ((n + r) % args.accounts.max(args.registries_per_secret)) as u64;
                    format!("{account:012}/{region}")
                })
                .collect();
            let mut meta = json!({
                "name": format!("ecr-pull-{j}"),
                "annotations": {"deft.com/kubeecr": registries.join(",")},
            });
            if args.labelled {
                meta["labels"] = json!({"deft.com/kubeecr-managed": "true"});
            }
            let s: Secret = serde_json::from_value(json!({
                "metadata": meta,
                "type": "kubernetes.io/dockerconfigjson",
                "data": {".dockerconfigjson": empty},
            }))?;
            secrets.push((ns.clone(), s));
        }
    }
    let blob = Arc::new(STANDARD.encode(vec![b'x'; args.unrelated_bytes]));
    for k in 0..args.unrelated {
        let ns = &names[k % names.len()];
        let mut s: Secret = serde_json::from_value(json!({
            "metadata": {"name": format!("{}.v{k}", args.unrelated_prefix)},
            "type": "helm.sh/release.v1",
            "data": {"release": *blob},
        }))?;
        if args.unrelated_labelled {
            s.type_ = Some("Opaque".into());
            s.metadata.labels =
                Some([("deft.com/kubeecr-managed".to_string(), "true".to_string())].into());
        }
        secrets.push((ns.clone(), s));
    }
    let total = secrets.len();
    futures::stream::iter(secrets)
        .map(|(ns, s)| create(Api::namespaced(client.clone(), &ns), s))
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<()>>()?;
    eprintln!(
        "seeded {total} Secrets in {} namespaces in {:.1}s",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
