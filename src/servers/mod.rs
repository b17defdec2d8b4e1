//! Network servers: HTTPS for the webhook with certificate reload, and the plain-HTTP admin
//! port.

pub mod admin;
pub mod http;
pub mod tls;
