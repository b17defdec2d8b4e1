//! Test doubles and harnesses for kubeecr. Kept out of the product's `src/`.

pub mod apiserver;
pub mod cluster;
pub mod conflict;
pub mod moto;
pub mod tls;
pub mod yaml;
