//! ECR tokens, fetched: the cache that shares one fetch per (principal, region), and the
//! AWS SDK source behind it. What a token is lives in `contract::token`.

pub mod cache;
pub mod ecr;
