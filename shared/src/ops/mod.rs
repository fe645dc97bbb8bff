//! The KV operations, one module per function, over the DynamoDB store.

pub mod bucket_create;
pub mod bucket_list;
pub mod key_get;
pub mod key_list;
pub mod key_put;
pub mod write;
