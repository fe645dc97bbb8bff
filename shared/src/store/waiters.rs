//! kv-key-watch's waiters (items table): a flow's task token waiting for a key, or the keys a
//! filter matches, to pass a revision.
//!
//! A bucket's waiters share one partition, `BUCKET/~watch` (no key may contain `~`), each under
//! a `rev` of its own below 0: no stream consumer reads them (they read `rev` 0 only), the
//! stream's replication reads them with one `Query` per bucket changed in a batch, and an
//! idle waiter costs its storage only. Each has an expiry (DynamoDB's TTL removes it).

use super::errors::{storage_error, StoreError};
use super::items::{get_str, get_u64, n, s, Item, INCARNATION, PK, REVISION, TTL};
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, WriteRequest};
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

impl super::Store {
    /// Keeps a waiter; its `id` is drawn here (53 random bits: no collision in practice, and a
    /// collision only replaces a waiter whose flow then times out).
    pub async fn add_waiter(&self, bucket: &str, waiter: &Waiter) -> Result<u64, StoreError> {
        let id = fastrand::u64(1..(1 << 53));
        self.client
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
            .map_err(|error| storage_error("PutItem", error))?;
        Ok(id)
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
        }
        Ok(())
    }
}
