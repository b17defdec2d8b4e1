//! `kubeecr serve`: the webhook, the admin port and the watch-driven refresher in one
//! process, with leader election and a graceful shutdown.

pub mod leader;
pub mod serve;
pub mod shutdown;
