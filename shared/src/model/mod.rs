//! The KV model, free of Lambda and DynamoDB: bucket configuration, the rules of names and
//! values, where buckets are placed, subjects, the codec, the memory cache, time, and the errors with their codes.

pub mod cache;
pub mod codec;
pub mod config;
pub mod error;
pub mod limits;
pub mod metrics;
pub mod placement;
pub mod revision;
pub mod subject;
pub mod subject_map;
pub mod time;
pub mod validate;
