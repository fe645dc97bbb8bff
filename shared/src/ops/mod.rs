//! The KV operations, one module per function, over the DynamoDB store.

pub mod bucket_create;
pub mod bucket_delete;
pub mod bucket_info;
pub mod bucket_list;
pub mod key_delete;
pub mod key_get;
pub mod key_history;
pub mod key_list;
pub mod key_put;
pub mod write;
