//! The admission webhook: pure decisions, the AdmissionReview wire format, and the HTTP
//! routes that serve them.

mod answer;
pub mod decision;
pub mod fill;
pub mod review;
pub mod webhook;
