//! kubeecr keeps AWS ECR pull credentials fresh inside Kubernetes `dockerconfigjson` Secrets
//! that opt in with the `deft.com/kubeecr` annotation, updating them in place.
//!
//! Pure decisions live in `contract` (where a Secret stands, what it asks for, what kubeecr
//! writes and when), `admission::decision`, `refresher::step` and `status::state`; the rest
//! does I/O:
//!
//! - `k8s`: the Kubernetes API: connecting, scopes, paged lists and watches, errors;
//! - `tokens`: ECR tokens, cached per (principal, region);
//! - `admission`: the webhook's decisions and its HTTP routes;
//! - `refresher`: finds opted-in Secrets (one pass, or watches and a schedule) and patches them;
//! - `servers`: HTTPS with certificate reload, and the plain-HTTP admin port;
//! - `runtime`: the `kubeecr serve` process composed of those, leader election and shutdown;
//! - `status`: `kubeecr status`, where each opted-in Secret stands;
//! - `certs`: `kubeecr certs`, webhook certificates for clusters without cert-manager;
//! - `telemetry`: logs, metrics and Kubernetes Events;
//! - `cmd`: the command line, a module per subcommand, which turns flags into the settings
//!   above and runs them.

pub mod admission;
pub mod certs;
pub mod cmd;
pub mod contract;
pub mod k8s;
pub mod refresher;
pub mod runtime;
pub mod servers;
pub mod status;
pub mod telemetry;
pub mod tokens;
