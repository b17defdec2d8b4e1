//! ECR authorization tokens: what one is (pure), the cache that shares one fetch per
//! (principal, region), and the AWS SDK source.

pub mod cache;
pub mod ecr;
pub mod token;
