//! Usage items (items table, `pk` = BUCKET): a bucket's counts, and the stream consumer's
//! batches added to them once each.

use super::errors::{is_condition_failure, storage_error};
use super::items::*;
use super::Store;
use crate::store::errors::StoreError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, ReturnValue};
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: i64,
    pub keys: i64,
}

/// What one batch of the items table's stream adds up to for one bucket (`count_changes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketDelta {
    pub incarnation: u64,
    pub bytes: i64,
    pub keys: i64,
    /// Names exactly the records counted, so a redelivery is recognised.
    pub token: String,
    /// Positions of the bucket's records in the batch.
    pub first: usize,
    pub last: usize,
}

/// The usage change that moves with a head in a bucket with `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct UsageChange {
    pub incarnation: u64,
    pub bytes_delta: i64,
    pub keys_delta: i64,
    /// The bucket's `bytes` must be at most this before the write (max_bytes minus the growth).
    pub bytes_ceiling: Option<i64>,
}

pub(super) fn decode_usage(item: &Item) -> Usage {
    Usage {
        bytes: get_i64(item, USED_BYTES).unwrap_or(0),
        keys: get_i64(item, LIVE_KEYS).unwrap_or(0),
    }
}

impl Store {
    pub async fn usage(&self, bucket: &str) -> Result<Option<Usage>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.items)
            .key(PK, s(usage_pk(bucket)))
            .key(REVISION, n(0))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| storage_error("GetItem", error))?;
        Ok(output.item().map(decode_usage))
    }

    /// Usage of many buckets, 100 per BatchGetItem, retrying what DynamoDB leaves unprocessed.
    pub async fn usages(&self, buckets: &[String]) -> Result<HashMap<String, Usage>, StoreError> {
        let mut found = HashMap::new();
        for chunk in buckets.chunks(100) {
            let mut keys = KeysAndAttributes::builder().consistent_read(true);
            for bucket in chunk {
                keys = keys.keys(
                    [
                        (PK.to_string(), s(usage_pk(bucket))),
                        (REVISION.to_string(), n(0)),
                    ]
                    .into(),
                );
            }
            let read = self.get_batch(keys).await?;
            for item in &read {
                if let Some(bucket) = get_str(item, PK) {
                    found.insert(bucket.to_string(), decode_usage(item));
                }
            }
        }
        Ok(found)
    }

    /// Adds one batch's changes to the bucket's counts, unless the bucket already counted that
    /// batch (its token is among the last `COUNTED_TOKENS` kept) or is another incarnation
    /// (deleted, or re-created since): false then.
    pub async fn count_changes(
        &self,
        bucket: &str,
        delta: &BucketDelta,
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.items)
            .key(PK, s(usage_pk(bucket)))
            .key(REVISION, n(0))
            .update_expression(
                "ADD #bytes :bytes, #keys :keys SET #counted = list_append(if_not_exists(#counted, :none), :token)",
            )
            .condition_expression("#inc = :inc AND NOT contains(#counted, :id)")
            .expression_attribute_names("#bytes", USED_BYTES)
            .expression_attribute_names("#keys", LIVE_KEYS)
            .expression_attribute_names("#counted", COUNTED_BATCHES)
            .expression_attribute_names("#inc", INCARNATION)
            .expression_attribute_values(":bytes", n(delta.bytes))
            .expression_attribute_values(":keys", n(delta.keys))
            .expression_attribute_values(":none", AttributeValue::L(Vec::new()))
            .expression_attribute_values(":token", AttributeValue::L(vec![s(&delta.token)]))
            .expression_attribute_values(":id", s(&delta.token))
            .expression_attribute_values(":inc", n(delta.incarnation))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) if is_condition_failure(&error) => return Ok(false),
            Err(error) => return Err(storage_error("UpdateItem", error)),
        };
        let kept = output
            .attributes()
            .and_then(|item| item.get(COUNTED_BATCHES))
            .and_then(|list| list.as_l().ok())
            .map_or(0, Vec::len);
        if kept > COUNTED_TOKENS {
            // The oldest half goes; a redelivery comes long before that many later batches.
            let oldest: Vec<String> = (0..COUNTED_TOKENS / 2)
                .map(|index| format!("#counted[{index}]"))
                .collect();
            let trimmed = self
                .client
                .update_item()
                .table_name(&self.items)
                .key(PK, s(usage_pk(bucket)))
                .key(REVISION, n(0))
                .update_expression(format!("REMOVE {}", oldest.join(", ")))
                .condition_expression("size(#counted) > :kept")
                .expression_attribute_names("#counted", COUNTED_BATCHES)
                .expression_attribute_values(":kept", n(COUNTED_TOKENS))
                .send()
                .await;
            match trimmed {
                Ok(_) => {}
                Err(error) if is_condition_failure(&error) => {}
                Err(error) => return Err(storage_error("UpdateItem", error)),
            }
        }
        Ok(true)
    }

    /// Removing the usage item makes every in-flight write's transaction fail its condition,
    /// so no write that started before the delete can land after it.
    pub async fn delete_usage(&self, bucket: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.items)
            .key(PK, s(usage_pk(bucket)))
            .key(REVISION, n(0))
            .send()
            .await
            .map_err(|error| storage_error("DeleteItem", error))?;
        Ok(())
    }
}
