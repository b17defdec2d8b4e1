//! Network servers: HTTPS for the webhook with certificate reload, and the plain-HTTP admin
//! port, both within the bounds of `limits`.

pub mod admin;
pub mod cert_expiry;
mod connection;
mod connection_limits;
pub mod http;
pub mod limits;
pub mod tls;
