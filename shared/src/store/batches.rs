//! Batched requests: `BatchGetItem`/`BatchWriteItem` with their unprocessed items re-sent, and
//! the purge's pages of keys and their items.

use super::errors::storage_error;
use super::heads::Partition;
use super::items::*;
use super::{build_failed, Store};
use crate::model::revision::Stored;
use crate::store::errors::StoreError;
use aws_sdk_dynamodb::types::{DeleteRequest, PutRequest, WriteRequest};
use std::collections::HashMap;

/// Sends a batch and re-sends what DynamoDB leaves unprocessed, with backoff; returns every
/// item the batch read.
pub(super) async fn until_processed<T, F, Fut>(
    first: HashMap<String, T>,
    mut send: F,
) -> Result<Vec<Item>, StoreError>
where
    F: FnMut(HashMap<String, T>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Item>, Option<HashMap<String, T>>), StoreError>>,
{
    const ATTEMPTS: u32 = 12;
    let mut read = Vec::new();
    let mut pending = Some(first);
    for attempt in 0..ATTEMPTS {
        let Some(request) = pending.take().filter(|request| !request.is_empty()) else {
            return Ok(read);
        };
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20 << attempt.min(5))).await;
        }
        let (items, unprocessed) = send(request).await?;
        read.extend(items);
        pending = unprocessed;
    }
    match pending {
        Some(request) if !request.is_empty() => Err(StoreError::Unavailable(format!(
            "DynamoDB left part of a batch unprocessed after {ATTEMPTS} attempts"
        ))),
        _ => Ok(read),
    }
}

impl Store {
    /// One page of the bucket's key partitions from the `by-bucket` index.
    pub async fn key_partitions(
        &self,
        bucket: &str,
        after: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), StoreError> {
        let start = after.map(|pk| {
            HashMap::from([
                (HEAD_BUCKET.to_string(), s(bucket)),
                (PK.to_string(), s(pk)),
                (REVISION.to_string(), n(0)),
            ])
        });
        let output = self
            .client
            .query()
            .table_name(&self.items)
            .index_name(BY_BUCKET_INDEX)
            .key_condition_expression("#hb = :bucket")
            .expression_attribute_names("#hb", HEAD_BUCKET)
            .expression_attribute_values(":bucket", s(bucket))
            .set_exclusive_start_key(start)
            .limit(100)
            .send()
            .await
            .map_err(|error| storage_error("Query", error))?;
        let partitions = output
            .items()
            .iter()
            .filter_map(|item| get_str(item, PK))
            .map(str::to_string)
            .collect();
        let next = output
            .last_evaluated_key()
            .and_then(|key| get_str(key, PK))
            .map(str::to_string);
        Ok((partitions, next))
    }

    /// Every item of one key (head, revisions, markers), keys only.
    pub async fn partition_items(&self, pk: &str) -> Result<Vec<u64>, StoreError> {
        let items = self.partition(pk, Partition::KeysOnly).await?;
        Ok(items
            .iter()
            .filter_map(|item| get_u64(item, REVISION))
            .collect())
    }

    /// Deletes items 25 per BatchWriteItem, retrying what DynamoDB leaves unprocessed.
    pub async fn delete_items(&self, keys: &[(String, u64)]) -> Result<(), StoreError> {
        let mut writes = Vec::with_capacity(keys.len());
        for (pk, revision) in keys {
            let delete = DeleteRequest::builder()
                .key(PK, s(pk))
                .key(REVISION, n(revision))
                .build()
                .map_err(build_failed)?;
            writes.push(WriteRequest::builder().delete_request(delete).build());
        }
        self.write_batches(writes).await
    }

    /// The items of one `BatchGetItem` of the items table (100 keys at most), re-sending what
    /// DynamoDB leaves unprocessed.
    pub(super) async fn get_batch(
        &self,
        keys: aws_sdk_dynamodb::types::builders::KeysAndAttributesBuilder,
    ) -> Result<Vec<Item>, StoreError> {
        let request = HashMap::from([(self.items.clone(), keys.build().map_err(build_failed)?)]);
        until_processed(request, |pending| async move {
            let output = self
                .client
                .batch_get_item()
                .set_request_items(Some(pending))
                .send()
                .await
                .map_err(|error| storage_error("BatchGetItem", error))?;
            let items = output
                .responses()
                .and_then(|tables| tables.get(&self.items));
            Ok((
                items.cloned().unwrap_or_default(),
                output.unprocessed_keys().cloned(),
            ))
        })
        .await
    }

    /// Writes archived revisions (partition key, revision) 25 per BatchWriteItem.
    pub async fn archive_many(&self, archives: &[(String, &Stored)]) -> Result<(), StoreError> {
        let mut writes = Vec::with_capacity(archives.len());
        for (pk, stored) in archives {
            let put = PutRequest::builder()
                .set_item(Some(stored_attributes(stored)))
                .item(PK, s(pk))
                .item(REVISION, n(stored.revision))
                .build()
                .map_err(build_failed)?;
            writes.push(WriteRequest::builder().put_request(put).build());
        }
        self.write_batches(writes).await
    }

    pub(super) async fn write_batches(&self, writes: Vec<WriteRequest>) -> Result<(), StoreError> {
        for chunk in writes.chunks(25) {
            let request = HashMap::from([(self.items.clone(), chunk.to_vec())]);
            until_processed(request, |pending| async move {
                let output = self
                    .client
                    .batch_write_item()
                    .set_request_items(Some(pending))
                    .send()
                    .await
                    .map_err(|error| storage_error("BatchWriteItem", error))?;
                Ok((Vec::new(), output.unprocessed_items().cloned()))
            })
            .await?;
        }
        Ok(())
    }
}
