//! Bucket items (buckets table): create, read, hand out revisions, list, mark deleting, remove.

use super::errors::{is_condition_failure, storage_error};
use super::items::*;
use super::{build_failed, Store};
use crate::model::config::BucketConfig;
use crate::store::errors::StoreError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Put, ReturnValue, TransactWriteItem, Update};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct BucketRecord {
    pub config: BucketConfig,
    pub created_ms: u64,
    /// The last revision handed out in this bucket.
    pub last_revision: u64,
    /// When kv-bucket-delete started, if it has: such a bucket no longer exists for callers.
    pub deleting_ms: Option<u64>,
    /// When the last revision was handed out (epoch ms), if ever.
    pub last_allocated_ms: Option<u64>,
}

pub(super) fn decode_bucket(item: &Item) -> Result<BucketRecord, StoreError> {
    let config_json = get_str(item, CONFIG)
        .ok_or_else(|| StoreError::Internal("Bucket item without configuration".into()))?;
    let config: BucketConfig = serde_json::from_str(config_json).map_err(|error| {
        StoreError::Internal(format!("Bucket configuration is malformed: {error}"))
    })?;
    Ok(BucketRecord {
        config,
        created_ms: get_u64(item, CREATED).unwrap_or(0),
        last_revision: get_u64(item, LAST_REVISION).unwrap_or(0),
        deleting_ms: get_u64(item, DELETING),
        last_allocated_ms: get_u64(item, LAST_ALLOCATED),
    })
}

/// A bucket item's condition for handing out a revision or a commit window: it exists and is
/// not being deleted (`#bucket`, `#deleting`), and with `LIVE_INCARNATION` is the incarnation
/// created at `:created`.
const LIVE: &str = "attribute_exists(#bucket) AND attribute_not_exists(#deleting)";
const LIVE_INCARNATION: &str =
    "attribute_exists(#bucket) AND attribute_not_exists(#deleting) AND #created = :created";

impl Store {
    /// Creates the bucket and its usage counter together; false when the bucket already exists.
    pub async fn create_bucket(
        &self,
        config: &BucketConfig,
        created_ms: u64,
    ) -> Result<bool, StoreError> {
        let config_json = serde_json::to_string(config).map_err(|error| {
            StoreError::Internal(format!("Could not encode the configuration: {error}"))
        })?;
        let bucket_item = Put::builder()
            .table_name(&self.buckets)
            .item(BUCKET, s(&config.bucket))
            .item(CONFIG, s(config_json))
            .item(CREATED, n(created_ms))
            .item(LAST_REVISION, n(0))
            .condition_expression("attribute_not_exists(#bucket)")
            .expression_attribute_names("#bucket", BUCKET)
            .build()
            .map_err(build_failed)?;
        let origins = config.origins();
        let mut usage_item = Put::builder()
            .table_name(&self.items)
            .item(PK, s(usage_pk(&config.bucket)))
            .item(REVISION, n(0))
            .item(USED_BYTES, n(0))
            .item(LIVE_KEYS, n(0))
            .item(INCARNATION, n(created_ms))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK);
        if !origins.is_empty() {
            // Every origin's backfill starts from its first key.
            let cursors = origins
                .iter()
                .map(|origin| (origin.to_string(), s("")))
                .collect();
            usage_item = usage_item.item(BACKFILL, AttributeValue::M(cursors));
        }
        let mut transaction = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(bucket_item).build())
            .transact_items(
                TransactWriteItem::builder()
                    .put(usage_item.build().map_err(build_failed)?)
                    .build(),
            );
        // The origins learn where their revisions go, in the same step: a revision they
        // commit after it reaches the new bucket by the stream, one before it by the backfill.
        for origin in &origins {
            let feed = Update::builder()
                .table_name(&self.items)
                .key(PK, s(usage_pk(origin)))
                .key(REVISION, n(0))
                .update_expression("ADD #feeds :bucket")
                .condition_expression("attribute_exists(#pk)")
                .expression_attribute_names("#feeds", FEEDS)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(
                    ":bucket",
                    AttributeValue::Ss(vec![config.bucket.clone()]),
                )
                .build()
                .map_err(build_failed)?;
            transaction =
                transaction.transact_items(TransactWriteItem::builder().update(feed).build());
        }
        match transaction.send().await {
            Ok(_) => Ok(true),
            Err(error) => match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    let failed = |index: usize| {
                        cancelled
                            .cancellation_reasons()
                            .get(index)
                            .is_some_and(|reason| reason.code() == Some("ConditionalCheckFailed"))
                    };
                    if failed(0) || failed(1) {
                        return Ok(false);
                    }
                    match origins
                        .iter()
                        .enumerate()
                        .find(|(index, _)| failed(index + 2))
                    {
                        Some((_, origin)) => Err(StoreError::BucketNotFound(origin.to_string())),
                        None => Err(storage_error("TransactWriteItems", error)),
                    }
                }
                _ => Err(storage_error("TransactWriteItems", error)),
            },
        }
    }

    pub async fn read_bucket(&self, bucket: &str) -> Result<Option<BucketRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.buckets)
            .key(BUCKET, s(bucket))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| storage_error("GetItem", error))?;
        output.item().map(decode_bucket).transpose()
    }

    /// Hands out the bucket's next revision and returns its configuration in the same request.
    pub async fn allocate_revision(
        &self,
        bucket: &str,
        incarnation: Option<u64>,
    ) -> Result<BucketRecord, StoreError> {
        let request = match incarnation {
            None => self.client.update_item().condition_expression(LIVE),
            Some(incarnation) => self
                .client
                .update_item()
                .condition_expression(LIVE_INCARNATION)
                .expression_attribute_names("#created", CREATED)
                .expression_attribute_values(":created", n(incarnation)),
        };
        let result = request
            .table_name(&self.buckets)
            .key(BUCKET, s(bucket))
            .update_expression("ADD #seq :one SET #alloc = :now")
            .expression_attribute_names("#seq", LAST_REVISION)
            .expression_attribute_names("#alloc", LAST_ALLOCATED)
            .expression_attribute_values(
                ":now",
                n(crate::model::time::ns_to_ms(crate::model::time::now_ns())),
            )
            .expression_attribute_names("#bucket", BUCKET)
            .expression_attribute_names("#deleting", DELETING)
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => output
                .attributes()
                .map(decode_bucket)
                .transpose()?
                .ok_or_else(|| StoreError::Internal("UpdateItem returned no attributes".into())),
            Err(error) if is_condition_failure(&error) => {
                Err(StoreError::BucketNotFound(bucket.to_string()))
            }
            Err(error) => Err(storage_error("UpdateItem", error)),
        }
    }

    /// Opens a commit window for a write that takes no revision of its own (a mirror's copy
    /// keeps its origin's): the bucket's last allocation moves to now, so a delete that marks
    /// the bucket afterwards waits the window out before it purges. None when the bucket is
    /// gone, being deleted, or another incarnation; else when (epoch ms) the window opened.
    pub async fn open_commit_window(
        &self,
        bucket: &str,
        incarnation: u64,
    ) -> Result<Option<u64>, StoreError> {
        let now_ms = crate::model::time::ns_to_ms(crate::model::time::now_ns());
        let result = self
            .client
            .update_item()
            .table_name(&self.buckets)
            .key(BUCKET, s(bucket))
            .update_expression("SET #alloc = :now")
            .condition_expression(LIVE_INCARNATION)
            .expression_attribute_names("#alloc", LAST_ALLOCATED)
            .expression_attribute_names("#bucket", BUCKET)
            .expression_attribute_names("#deleting", DELETING)
            .expression_attribute_names("#created", CREATED)
            .expression_attribute_values(":now", n(now_ms))
            .expression_attribute_values(":created", n(incarnation))
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(now_ms)),
            Err(error) if is_condition_failure(&error) => Ok(None),
            Err(error) => Err(storage_error("UpdateItem", error)),
        }
    }

    /// One page of buckets in table order, and the name to continue after when there are more.
    pub async fn scan_buckets(
        &self,
        limit: Option<i32>,
        start_after: Option<&str>,
    ) -> Result<(Vec<BucketRecord>, Option<String>), StoreError> {
        let output = self
            .client
            .scan()
            .table_name(&self.buckets)
            .consistent_read(true)
            .set_limit(limit)
            .set_exclusive_start_key(
                start_after.map(|name| HashMap::from([(BUCKET.to_string(), s(name))])),
            )
            .send()
            .await
            .map_err(|error| storage_error("Scan", error))?;
        let records = output
            .items()
            .iter()
            .map(decode_bucket)
            .collect::<Result<Vec<_>, _>>()?;
        let next = output
            .last_evaluated_key()
            .and_then(|key| get_str(key, BUCKET))
            .map(str::to_string);
        Ok((records, next))
    }

    /// Marks the bucket as being deleted (idempotently) and returns it; None if it never existed.
    pub async fn mark_deleting(
        &self,
        bucket: &str,
        now_ms: u64,
    ) -> Result<Option<BucketRecord>, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.buckets)
            .key(BUCKET, s(bucket))
            .update_expression("SET #deleting = if_not_exists(#deleting, :now)")
            .condition_expression("attribute_exists(#bucket)")
            .expression_attribute_names("#deleting", DELETING)
            .expression_attribute_names("#bucket", BUCKET)
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match result {
            Ok(output) => output.attributes().map(decode_bucket).transpose(),
            Err(error) if is_condition_failure(&error) => Ok(None),
            Err(error) => Err(storage_error("UpdateItem", error)),
        }
    }

    /// Asks the buckets table's stream to invoke the purger again for this bucket.
    pub async fn bump_purge_round(&self, bucket: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.buckets)
            .key(BUCKET, s(bucket))
            .update_expression("ADD #round :one")
            .condition_expression("attribute_exists(#deleting)")
            .expression_attribute_names("#round", PURGE_ROUND)
            .expression_attribute_names("#deleting", DELETING)
            .expression_attribute_values(":one", n(1))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Ok(()),
            Err(error) => Err(storage_error("UpdateItem", error)),
        }
    }

    /// Frees the bucket's name once its items are gone.
    pub async fn delete_bucket_record(&self, bucket: &str) -> Result<(), StoreError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.buckets)
            .key(BUCKET, s(bucket))
            .condition_expression("attribute_exists(#deleting)")
            .expression_attribute_names("#deleting", DELETING)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error) if is_condition_failure(&error) => Ok(()),
            Err(error) => Err(storage_error("DeleteItem", error)),
        }
    }

    /// Leaves word that the bucket was deleted, for `DELETED_ANSWERED_NS`: a kv-bucket-delete
    /// sent again after its answer was lost finds it and answers as the first did. An item of
    /// the items table no stream consumer reads (`rev` -1) and no key can be (`~`).
    pub async fn leave_tombstone(&self, bucket: &str, deleted_ms: u64) -> Result<(), StoreError> {
        let expires_ns = crate::model::time::now_ns().saturating_add(DELETED_ANSWERED_NS);
        self.client
            .put_item()
            .table_name(&self.items)
            .item(PK, s(tombstone_pk(bucket)))
            .item(REVISION, n(TOMBSTONE_REVISION))
            .item(DELETING, n(deleted_ms))
            .item(EXPIRY_NS, n(expires_ns))
            .item(TTL, n(crate::model::time::ttl_attribute_secs(expires_ns)))
            .send()
            .await
            .map_err(|error| storage_error("PutItem", error))?;
        Ok(())
    }

    /// Whether the bucket was deleted within the last `DELETED_ANSWERED_NS`.
    pub async fn recently_deleted(&self, bucket: &str) -> Result<bool, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.items)
            .key(PK, s(tombstone_pk(bucket)))
            .key(REVISION, n(TOMBSTONE_REVISION))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| storage_error("GetItem", error))?;
        let now_ns = crate::model::time::now_ns();
        Ok(output
            .item()
            .and_then(|item| get_u64(item, EXPIRY_NS))
            .is_some_and(|expires_ns| expires_ns > now_ns))
    }
}

/// How long after its purge a deleted bucket's kv-bucket-delete still answers 200.
pub const DELETED_ANSWERED_NS: u64 = 10 * 60 * 1_000_000_000;
const TOMBSTONE_REVISION: i64 = -1;

fn tombstone_pk(bucket: &str) -> String {
    format!("{bucket}/~deleted")
}
