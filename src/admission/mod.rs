//! The admission webhook: pure decisions, the AdmissionReview wire format, and the HTTP
//! routes that serve them.

pub mod decision;
pub mod review;
pub mod webhook;
