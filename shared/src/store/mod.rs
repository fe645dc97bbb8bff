//! Everything that knows DynamoDB: the client, the table schema, the item layout, how failures
//! are classified, and `Store`'s requests, one file per kind of item (`buckets`, `heads` and
//! their archived revisions, `usage` and the stream consumer's state kept in it, `batches`).

pub mod batches;
pub mod buckets;
pub mod claims;
pub mod client;
pub mod errors;
pub mod feeds;
pub mod heads;
pub mod items;
pub mod metering;
pub mod schema;
pub mod set_aside;
pub mod stream_images;
pub mod usage;
pub mod waiters;

pub use buckets::BucketRecord;
pub use heads::{CommitError, HeadCondition, HeadWrite};
pub use usage::{BucketDelta, Usage, UsageChange};

use crate::model::config::Settings;
use crate::store::errors::StoreError;
use aws_sdk_dynamodb::Client;

#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    buckets: String,
    items: String,
}

pub(super) fn build_failed(error: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Internal(format!("Could not build a DynamoDB request: {error}"))
}

impl Store {
    pub fn new(client: Client, settings: &Settings) -> Store {
        Store {
            client,
            buckets: settings.buckets_table.clone(),
            items: settings.items_table.clone(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}
