//! Usage items (items table, `pk` = BUCKET): a bucket's counts, and the stream consumer's
//! batches added to them once each.

use super::errors::storage_error;
use super::items::*;
use super::{build_failed, Store};
use crate::store::errors::StoreError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{KeysAndAttributes, Put, TransactWriteItem, Update};
use std::collections::HashMap;

/// How many times a count colliding with another consumer's is sent again before the batch
/// is left to the stream's retry.
const COUNT_ATTEMPTS: u32 = 8;

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

    /// Adds one batch's changes to its buckets' counts, once: every bucket's change and a
    /// record of the batch's `token` (`counted_pk`, kept past the stream's 24-hour retention)
    /// are written in one transaction, which only succeeds if the token is new. A bucket that
    /// is another incarnation now (deleted, or re-created) is left out and the rest sent
    /// again. Per change, whether it was added: none when the token was counted before (by any
    /// earlier delivery, however many batches ago).
    pub async fn count_changes(
        &self,
        token: &str,
        changes: &[(String, BucketDelta)],
    ) -> Result<Vec<bool>, StoreError> {
        let expires_s = crate::model::time::now_ns() / 1_000_000_000 + COUNTED_FOR_S;
        let token_item = Put::builder()
            .table_name(&self.items)
            .item(PK, s(counted_pk(token)))
            .item(REVISION, n(COUNTED_REVISION))
            .item(TTL, n(expires_s))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(build_failed)?;
        let mut updates = Vec::with_capacity(changes.len());
        for (bucket, delta) in changes {
            // The usage item sheds the token list it kept before counting moved to token items.
            let update = Update::builder()
                .table_name(&self.items)
                .key(PK, s(usage_pk(bucket)))
                .key(REVISION, n(0))
                .update_expression("ADD #bytes :bytes, #keys :keys REMOVE #counted")
                .condition_expression("#inc = :inc")
                .expression_attribute_names("#bytes", USED_BYTES)
                .expression_attribute_names("#keys", LIVE_KEYS)
                .expression_attribute_names("#counted", COUNTED_BATCHES)
                .expression_attribute_names("#inc", INCARNATION)
                .expression_attribute_values(":bytes", n(delta.bytes))
                .expression_attribute_values(":keys", n(delta.keys))
                .expression_attribute_values(":inc", n(delta.incarnation))
                .build()
                .map_err(build_failed)?;
            updates.push(update);
        }
        // Positions in `changes` still sent.
        let mut included: Vec<usize> = (0..changes.len()).collect();
        let mut attempt = 0u32;
        loop {
            if included.is_empty() {
                return Ok(vec![false; changes.len()]);
            }
            let mut request = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(token_item.clone()).build());
            for &index in &included {
                request = request.transact_items(
                    TransactWriteItem::builder()
                        .update(updates[index].clone())
                        .build(),
                );
            }
            let error = match request.send().await {
                Ok(_) => {
                    let mut applied = vec![false; changes.len()];
                    for index in included {
                        applied[index] = true;
                    }
                    return Ok(applied);
                }
                Err(error) => error,
            };
            let reasons = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    cancelled.cancellation_reasons().to_vec()
                }
                _ => return Err(storage_error("TransactWriteItems", error)),
            };
            let refused = |position: usize| {
                reasons.get(position).and_then(|reason| reason.code())
                    == Some("ConditionalCheckFailed")
            };
            // A resend after a lost answer meets its own token: counted, once.
            if refused(0) {
                return Ok(vec![false; changes.len()]);
            }
            // The transaction's items are the token, then `included` in order.
            let live: Vec<usize> = included
                .iter()
                .enumerate()
                .filter(|(position, _)| !refused(position + 1))
                .map(|(_, index)| *index)
                .collect();
            if live.len() < included.len() {
                included = live;
                continue;
            }
            // Consumers of other shards counting the same bucket at the same moment collide
            // on its usage item (AWS, not DynamoDB Local): they take turns.
            let conflict = reasons
                .iter()
                .any(|reason| reason.code() == Some("TransactionConflict"));
            if !conflict || attempt >= COUNT_ATTEMPTS {
                return Err(storage_error("TransactWriteItems", error));
            }
            attempt += 1;
            let ceiling_ms = 10u64 << attempt.min(5);
            tokio::time::sleep(std::time::Duration::from_millis(fastrand::u64(
                1..=ceiling_ms,
            )))
            .await;
        }
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
