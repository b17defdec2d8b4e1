//! The refresher: finds opted-in Secrets and patches the ones that are due, in place.
//!
//! `write` refreshes one Secret; `listing` finds opted-in Secrets page
//! by page, and `pass` is one pass over them all (`kubeecr refresh`); `index`, `schedule`,
//! `watch`, `step` (pure) and `controller` are the watch-driven refresher of `kubeecr serve`.

pub mod controller;
pub mod index;
pub mod listing;
pub mod pass;
pub mod schedule;
pub mod step;
pub mod watch;
pub mod wire;
pub mod write;
