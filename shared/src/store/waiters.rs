//! kv-key-watch's waiters (items table): a flow's task token waiting for a key, or the keys a
//! filter matches, to pass a revision.
//!
//! A bucket's waiters share one partition, `BUCKET/~watch` (no key may contain `~`), each under
//! a `rev` of its own below 0: no stream consumer reads them (they read `rev` 0 only), the
//! stream's replication reads them with one `Query` per bucket changed in a batch, and an
//! idle waiter costs its storage only. Each has an expiry (DynamoDB's TTL removes it).

use super::errors::{is_condition_failure, storage_error, StoreError};
use super::items::{
    get_str, get_u64, n, s, usage_pk, Item, INCARNATION, PK, REVISION, TTL, WAITING,
};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, DeleteRequest, ReturnValuesOnConditionCheckFailure, WriteRequest,
};
use std::collections::HashMap;

const WAITERS_MARK: &str = "~watch";
const PATTERN: &str = "wk";
const IS_FILTER: &str = "wf";
const AFTER: &str = "after";
/// The waiter saw `after` already expired (or it was marked so): its expiry is no change.
const EXPIRY_SEEN: &str = "xseen";
const TOKEN: &str = "tok";
const EXPIRES_NS: &str = "x";
/// What one `BatchWriteItem` takes.
const DELETES_PER_CALL: usize = 25;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    /// Its place in the bucket's partition (the item's `rev` is its negation).
    pub id: u64,
    /// A key, or a subject filter when `is_filter`.
    pub pattern: String,
    pub is_filter: bool,
    pub after: u64,
    pub expiry_seen: bool,
    pub task_token: String,
    pub expires_ns: u64,
    pub incarnation: u64,
}

fn waiters_pk(bucket: &str) -> String {
    format!("{bucket}/{WAITERS_MARK}")
}

fn decode(item: &Item) -> Option<Waiter> {
    let revision: i64 = item.get(REVISION)?.as_n().ok()?.parse().ok()?;
    Some(Waiter {
        id: revision.unsigned_abs(),
        pattern: get_str(item, PATTERN)?.to_string(),
        is_filter: matches!(item.get(IS_FILTER), Some(AttributeValue::Bool(true))),
        after: get_u64(item, AFTER)?,
        expiry_seen: matches!(item.get(EXPIRY_SEEN), Some(AttributeValue::Bool(true))),
        task_token: get_str(item, TOKEN)?.to_string(),
        expires_ns: get_u64(item, EXPIRES_NS).unwrap_or(0),
        incarnation: get_u64(item, INCARNATION).unwrap_or(0),
    })
}

/// Whether a bucket took one more waiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Kept, under this id.
    Added(u64),
    /// The bucket holds `max` waiters already.
    Full { max: u64 },
    /// The bucket has no usage item: it is gone.
    NoBucket,
}

impl super::Store {
    /// Keeps a waiter if its bucket holds fewer than `max`: the count on the bucket's usage
    /// item is raised first, conditionally, then the waiter written (its `id` is drawn here: 53
    /// random bits, no collision in practice, and one only replaces a waiter whose flow then
    /// times out).
    pub async fn add_waiter(
        &self,
        bucket: &str,
        waiter: &Waiter,
        max: u64,
    ) -> Result<Admission, StoreError> {
        let counted = self
            .client
            .update_item()
            .table_name(&self.items)
            .key(PK, s(usage_pk(bucket)))
            .key(REVISION, n(0))
            .update_expression("ADD #waiting :one")
            .condition_expression(
                "attribute_exists(#pk) AND (attribute_not_exists(#waiting) OR #waiting < :max)",
            )
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#waiting", WAITING)
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":max", n(max))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match counted {
            Ok(_) => {}
            Err(error) if is_condition_failure(&error) => {
                let existed = error
                    .as_service_error()
                    .and_then(|failure| match failure {
                        UpdateItemError::ConditionalCheckFailedException(check) => {
                            check.item().map(|item| !item.is_empty())
                        }
                        _ => None,
                    })
                    .unwrap_or(false);
                return Ok(if existed {
                    Admission::Full { max }
                } else {
                    Admission::NoBucket
                });
            }
            Err(error) => return Err(storage_error("UpdateItem", error)),
        }
        let id = fastrand::u64(1..(1 << 53));
        let written = self
            .client
            .put_item()
            .table_name(&self.items)
            .item(PK, s(waiters_pk(bucket)))
            .item(REVISION, n(-i64::try_from(id).unwrap_or(1)))
            .item(PATTERN, s(&waiter.pattern))
            .item(IS_FILTER, AttributeValue::Bool(waiter.is_filter))
            .item(AFTER, n(waiter.after))
            .item(EXPIRY_SEEN, AttributeValue::Bool(waiter.expiry_seen))
            .item(TOKEN, s(&waiter.task_token))
            .item(EXPIRES_NS, n(waiter.expires_ns))
            .item(TTL, n(waiter.expires_ns.div_ceil(1_000_000_000)))
            .item(INCARNATION, n(waiter.incarnation))
            .send()
            .await
            .map_err(|error| storage_error("PutItem", error));
        if let Err(error) = written {
            self.count_waiters_removed(bucket, 1).await?;
            return Err(error);
        }
        Ok(Admission::Added(id))
    }

    /// Lowers the bucket's count of waiters by `removed` (unless the bucket is gone).
    async fn count_waiters_removed(&self, bucket: &str, removed: usize) -> Result<(), StoreError> {
        let outcome = self
            .client
            .update_item()
            .table_name(&self.items)
            .key(PK, s(usage_pk(bucket)))
            .key(REVISION, n(0))
            .update_expression("ADD #waiting :removed")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .expression_attribute_names("#waiting", WAITING)
            .expression_attribute_values(":removed", n(-i64::try_from(removed).unwrap_or(0)))
            .send()
            .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Ok(()),
            Err(error) => Err(storage_error("UpdateItem", error)),
        }
    }

    /// Every waiter of the bucket, read consistently: one registered before a write committed
    /// is seen by whoever reads after it.
    pub async fn waiters(&self, bucket: &str) -> Result<Vec<Waiter>, StoreError> {
        let mut waiters = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.items)
                .key_condition_expression("#pk = :pk AND #rev < :zero")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#rev", REVISION)
                .expression_attribute_values(":pk", s(waiters_pk(bucket)))
                .expression_attribute_values(":zero", n(0))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|error| storage_error("Query", error))?;
            waiters.extend(output.items().iter().filter_map(decode));
            match output.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(waiters),
            }
        }
    }

    /// Removes waiters, 25 to a `BatchWriteItem`, sending again what DynamoDB left unprocessed.
    pub async fn remove_waiters(&self, bucket: &str, ids: &[u64]) -> Result<(), StoreError> {
        let pk = waiters_pk(bucket);
        for chunk in ids.chunks(DELETES_PER_CALL) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .filter_map(|id| {
                    DeleteRequest::builder()
                        .key(PK, s(&pk))
                        .key(REVISION, n(-i64::try_from(*id).unwrap_or(1)))
                        .build()
                        .ok()
                        .map(|delete| WriteRequest::builder().delete_request(delete).build())
                })
                .collect();
            for attempt in 0..8u32 {
                if requests.is_empty() {
                    break;
                }
                let output = self
                    .client
                    .batch_write_item()
                    .request_items(&self.items, requests)
                    .send()
                    .await
                    .map_err(|error| storage_error("BatchWriteItem", error))?;
                requests = output
                    .unprocessed_items()
                    .and_then(|left| left.get(&self.items))
                    .cloned()
                    .unwrap_or_default();
                if !requests.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(20 << attempt.min(5)))
                        .await;
                }
            }
            if !requests.is_empty() {
                return Err(StoreError::Unavailable(format!(
                    "DynamoDB left {} waiter deletes unprocessed",
                    requests.len()
                )));
            }
            self.count_waiters_removed(bucket, chunk.len()).await?;
        }
        Ok(())
    }
}
