//! What kubeecr tells people: logs, Prometheus metrics and Kubernetes Events.

pub mod events;
pub mod logging;
pub mod metrics;
pub mod process;
