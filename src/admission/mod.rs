//! The admission webhook: pure decisions, and the HTTP routes that serve them.

pub mod decision;
pub mod webhook;
