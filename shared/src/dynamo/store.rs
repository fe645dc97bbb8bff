//! The DynamoDB requests behind every KV operation. Each method is one request (or one page of
//! them); the semantics that combine them live in `ops`.

use super::errors::{classify, is_condition_failure, storage_error, Failure};
use super::items::*;
use crate::config::{BucketConfig, Settings};
use crate::error::KvError;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, KeysAndAttributes, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct Store {
    client: Client,
    buckets: String,
    items: String,
}

#[derive(Debug, Clone)]
pub struct BucketRecord {
    pub config: BucketConfig,
    pub created_ms: u64,
    /// The last revision handed out in this bucket.
    pub seq: u64,
    /// When kv-bucket-delete started, if it has: such a bucket no longer exists for callers.
    pub deleting_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub bytes: i64,
    pub keys: i64,
}

/// A new revision of one key, committed atomically with its head, the index marker of the
/// revision it replaces, the revisions it pushes out of history, and the bucket's usage.
#[derive(Debug)]
pub struct Commit<'a> {
    pub bucket: &'a str,
    /// The bucket's `created`, as read when the revision was handed out.
    pub incarnation: u64,
    pub key: &'a str,
    /// The head's `cur` the plan was made from; None when the key has no head yet.
    pub expected_cur: Option<u64>,
    pub entries: &'a [HeadEntry],
    pub rev: u64,
    pub stored: &'a [u8],
    pub compressed: bool,
    pub created_ms: u64,
    pub expiry_ns: Option<u64>,
    pub op: Op,
    pub memory: bool,
    /// The previous latest value, kept in history but no longer the key's latest.
    pub unmark: Option<u64>,
    pub trimmed: Vec<u64>,
    pub bytes_delta: i64,
    pub keys_delta: i64,
    /// The bucket's `bytes` must be at most this before the write (max_bytes minus the growth).
    pub bytes_ceiling: Option<i64>,
}

/// Which items of a key's partition a query returns.
#[derive(Debug, Clone, Copy)]
enum Partition {
    /// Revisions and markers, whole.
    Revisions,
    /// Every item including the head, keys only.
    KeysOnly,
}

#[derive(Debug)]
pub enum CommitError {
    /// Another writer changed the key since its head was read.
    HeadChanged,
    /// DynamoDB did not apply the transaction because of other transactions or throttling;
    /// a later attempt can succeed. Carries what to report if no attempt does.
    Contention(KvError),
    /// DynamoDB may or may not have applied the transaction (no answer, a lost response, a
    /// server error, still in progress): only sending it again with the same token tells.
    OutcomeUnknown(KvError),
    BucketFull {
        used: i64,
    },
    BucketGone,
    Failed(KvError),
}

fn build_failed(error: aws_sdk_dynamodb::error::BuildError) -> KvError {
    KvError::Internal(format!("Could not build a DynamoDB request: {error}"))
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

    /// Creates the bucket and its usage counter together; false when the bucket already exists.
    pub async fn create_bucket(
        &self,
        config: &BucketConfig,
        created_ms: u64,
    ) -> Result<bool, KvError> {
        let config_json = serde_json::to_string(config).map_err(|error| {
            KvError::Internal(format!("Could not encode the configuration: {error}"))
        })?;
        let bucket_item = Put::builder()
            .table_name(&self.buckets)
            .item(BUCKET, s(&config.bucket))
            .item(CONFIG, s(config_json))
            .item(CREATED, n(created_ms))
            .item(SEQ, n(0))
            .condition_expression("attribute_not_exists(#bucket)")
            .expression_attribute_names("#bucket", BUCKET)
            .build()
            .map_err(build_failed)?;
        let usage_item = Put::builder()
            .table_name(&self.items)
            .item(PK, s(usage_pk(&config.bucket)))
            .item(REV, n(0))
            .item(USED_BYTES, n(0))
            .item(LIVE_KEYS, n(0))
            .item(INCARNATION, n(created_ms))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", PK)
            .build()
            .map_err(build_failed)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(bucket_item).build())
            .transact_items(TransactWriteItem::builder().put(usage_item).build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) => match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled))
                    if cancelled
                        .cancellation_reasons()
                        .iter()
                        .any(|reason| reason.code() == Some("ConditionalCheckFailed")) =>
                {
                    Ok(false)
                }
                _ => Err(storage_error("TransactWriteItems", error)),
            },
        }
    }

    pub async fn read_bucket(&self, bucket: &str) -> Result<Option<BucketRecord>, KvError> {
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
    pub async fn allocate_revision(&self, bucket: &str) -> Result<BucketRecord, KvError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.buckets)
            .key(BUCKET, s(bucket))
            .update_expression("ADD #seq :one")
            .condition_expression("attribute_exists(#bucket) AND attribute_not_exists(#deleting)")
            .expression_attribute_names("#seq", SEQ)
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
                .ok_or_else(|| KvError::Internal("UpdateItem returned no attributes".into())),
            Err(error) if is_condition_failure(&error) => {
                Err(KvError::BucketNotFound(bucket.to_string()))
            }
            Err(error) => Err(storage_error("UpdateItem", error)),
        }
    }

    pub async fn read_head(
        &self,
        bucket: &str,
        key: &str,
        consistent: bool,
    ) -> Result<Head, KvError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.items)
            .key(PK, s(key_pk(bucket, key)))
            .key(REV, n(0))
            .consistent_read(consistent)
            .send()
            .await
            .map_err(|error| storage_error("GetItem", error))?;
        decode_head(output.item())
    }

    /// Commits with `token` as the transaction's `ClientRequestToken`: sent again with the same
    /// token within 10 minutes, a transaction DynamoDB already applied succeeds without being
    /// applied again, and one still in progress is reported as such.
    pub async fn commit(&self, commit: &Commit<'_>, token: &str) -> Result<(), CommitError> {
        let failed = |error| CommitError::Failed(build_failed(error));
        let pk = key_pk(commit.bucket, commit.key);
        let mut head = Put::builder()
            .table_name(&self.items)
            .item(PK, s(&pk))
            .item(REV, n(0))
            .item(HEAD_REVISION, n(commit.rev))
            .item(HEAD_ENTRIES, encode_head_entries(commit.entries))
            .item(HEAD_BUCKET, s(commit.bucket))
            .expression_attribute_names("#pk", PK);
        head = match commit.expected_cur {
            None => head.condition_expression("attribute_not_exists(#pk)"),
            Some(cur) => head
                .condition_expression("attribute_exists(#pk) AND #cur = :cur")
                .expression_attribute_names("#cur", HEAD_REVISION)
                .expression_attribute_values(":cur", n(cur)),
        };
        let mut revision = Put::builder()
            .table_name(&self.items)
            .item(PK, s(&pk))
            .item(REV, n(commit.rev))
            .item(VALUE, AttributeValue::B(Blob::new(commit.stored)))
            .item(CREATED_MS, n(commit.created_ms));
        if commit.compressed {
            revision = revision.item(COMPRESSED, AttributeValue::Bool(true));
        }
        if let Some(expiry) = commit.expiry_ns {
            revision = revision
                .item(EXPIRY_NS, n(expiry))
                .item(TTL, n(crate::time::ttl_attribute_secs(expiry)));
        }
        if commit.memory {
            revision = revision.item(MEMORY, AttributeValue::Bool(true));
        }
        revision = match commit.op {
            Op::Put => revision.item(LATEST_IN_BUCKET, s(commit.bucket)),
            marker => revision.item(OP, s(marker.as_str())),
        };
        let mut writes = vec![
            TransactWriteItem::builder()
                .put(head.build().map_err(failed)?)
                .build(),
            TransactWriteItem::builder()
                .put(revision.build().map_err(failed)?)
                .build(),
        ];
        if let Some(previous) = commit.unmark {
            let update = Update::builder()
                .table_name(&self.items)
                .key(PK, s(&pk))
                .key(REV, n(previous))
                .update_expression("REMOVE #gb")
                .expression_attribute_names("#gb", LATEST_IN_BUCKET)
                .build()
                .map_err(failed)?;
            writes.push(TransactWriteItem::builder().update(update).build());
        }
        for rev in &commit.trimmed {
            let delete = Delete::builder()
                .table_name(&self.items)
                .key(PK, s(&pk))
                .key(REV, n(rev))
                .build()
                .map_err(failed)?;
            writes.push(TransactWriteItem::builder().delete(delete).build());
        }
        let mut usage = Update::builder()
            .table_name(&self.items)
            .key(PK, s(usage_pk(commit.bucket)))
            .key(REV, n(0))
            .update_expression("ADD #bytes :bytes, #keys :keys")
            .expression_attribute_names("#bytes", USED_BYTES)
            .expression_attribute_names("#keys", LIVE_KEYS)
            .expression_attribute_names("#inc", INCARNATION)
            .expression_attribute_values(":bytes", n(commit.bytes_delta))
            .expression_attribute_values(":keys", n(commit.keys_delta))
            .expression_attribute_values(":inc", n(commit.incarnation))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        usage = match commit.bytes_ceiling {
            None => usage.condition_expression("#inc = :inc"),
            Some(ceiling) => usage
                .condition_expression("#inc = :inc AND #bytes <= :ceiling")
                .expression_attribute_values(":ceiling", n(ceiling)),
        };
        writes.push(
            TransactWriteItem::builder()
                .update(usage.build().map_err(failed)?)
                .build(),
        );
        let usage_index = writes.len() - 1;

        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .client_request_token(token)
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
            error.as_service_error()
        {
            let reasons = cancelled.cancellation_reasons();
            let code = |index: usize| reasons.get(index).and_then(|reason| reason.code());
            if let Some(usage) = reasons
                .get(usage_index)
                .filter(|_| code(usage_index) == Some("ConditionalCheckFailed"))
            {
                return Err(match usage.item() {
                    Some(old) if get_u64(old, INCARNATION) == Some(commit.incarnation) => {
                        CommitError::BucketFull {
                            used: get_i64(old, USED_BYTES).unwrap_or(0),
                        }
                    }
                    _ => CommitError::BucketGone,
                });
            }
            if code(0) == Some("ConditionalCheckFailed") {
                return Err(CommitError::HeadChanged);
            }
            if reasons.iter().any(|reason| {
                matches!(
                    reason.code(),
                    Some(
                        "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
                    )
                )
            }) {
                return Err(CommitError::Contention(KvError::Unavailable(
                    "DynamoDB cancelled the write's transaction: it conflicted with other transactions or was throttled"
                        .to_string(),
                )));
            }
        }
        if error.code() == Some("ValidationException")
            && error
                .message()
                .is_some_and(|message| message.to_ascii_lowercase().contains("item size"))
        {
            return Err(CommitError::Failed(KvError::ValueTooLarge(format!(
                "The value does not fit in one DynamoDB item ({} KB at most, key and metadata included): {}",
                MAX_ITEM_BYTES / 1024,
                error.message().unwrap_or("")
            ))));
        }
        match classify(&error) {
            Failure::OutcomeUnknown => Err(CommitError::OutcomeUnknown(storage_error(
                "TransactWriteItems",
                error,
            ))),
            Failure::Refused => Err(CommitError::Contention(storage_error(
                "TransactWriteItems",
                error,
            ))),
            Failure::Permanent => Err(CommitError::Failed(storage_error(
                "TransactWriteItems",
                error,
            ))),
        }
    }

    /// The key's newest revision (value or marker), in one strongly consistent request.
    pub async fn latest_revision(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<Revision>, KvError> {
        let output = latest_revision_query(&self.client, &self.items, bucket, key)
            .send()
            .await
            .map_err(|error| storage_error("Query", error))?;
        output
            .items()
            .first()
            .map(|item| decode_revision(bucket, item))
            .transpose()
    }

    pub async fn revision(
        &self,
        bucket: &str,
        key: &str,
        rev: u64,
    ) -> Result<Option<Revision>, KvError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.items)
            .key(PK, s(key_pk(bucket, key)))
            .key(REV, n(rev))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| storage_error("GetItem", error))?;
        output
            .item()
            .map(|item| decode_revision(bucket, item))
            .transpose()
    }

    pub async fn usage(&self, bucket: &str) -> Result<Option<Usage>, KvError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.items)
            .key(PK, s(usage_pk(bucket)))
            .key(REV, n(0))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| storage_error("GetItem", error))?;
        Ok(output.item().map(decode_usage))
    }

    /// Usage of many buckets, 100 per BatchGetItem, retrying what DynamoDB leaves unprocessed.
    pub async fn usages(&self, buckets: &[String]) -> Result<HashMap<String, Usage>, KvError> {
        let mut found = HashMap::new();
        for chunk in buckets.chunks(100) {
            let mut keys = KeysAndAttributes::builder().consistent_read(true);
            for bucket in chunk {
                keys = keys.keys(
                    [
                        (PK.to_string(), s(usage_pk(bucket))),
                        (REV.to_string(), n(0)),
                    ]
                    .into(),
                );
            }
            let request =
                HashMap::from([(self.items.clone(), keys.build().map_err(build_failed)?)]);
            let read = until_processed(request, |pending| async move {
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
            .await?;
            for item in &read {
                if let Some(bucket) = get_str(item, PK) {
                    found.insert(bucket.to_string(), decode_usage(item));
                }
            }
        }
        Ok(found)
    }

    /// One page of buckets in table order, and the name to continue after when there are more.
    pub async fn scan_buckets(
        &self,
        limit: Option<i32>,
        start_after: Option<&str>,
    ) -> Result<(Vec<BucketRecord>, Option<String>), KvError> {
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

    /// Up to `limit` latest values with a revision above `after`, in revision order, in one
    /// request; the flag says whether the index holds more beyond them.
    pub async fn latest_page(
        &self,
        bucket: &str,
        after: u64,
        limit: i32,
    ) -> Result<(Vec<Item>, bool), KvError> {
        let output = self
            .client
            .query()
            .table_name(&self.items)
            .index_name(BY_SEQUENCE_INDEX)
            .key_condition_expression("#gb = :bucket AND #rev > :after")
            .expression_attribute_names("#gb", LATEST_IN_BUCKET)
            .expression_attribute_names("#rev", REV)
            .expression_attribute_values(":bucket", s(bucket))
            .expression_attribute_values(":after", n(after))
            .limit(limit)
            .send()
            .await
            .map_err(|error| storage_error("Query", error))?;
        let more = output.last_evaluated_key().is_some();
        Ok((output.items().to_vec(), more))
    }

    /// Every retained revision of a key, oldest first (markers and not yet swept expired
    /// revisions included), in as many pages as the values need.
    pub async fn revisions(&self, bucket: &str, key: &str) -> Result<Vec<Revision>, KvError> {
        self.partition(&key_pk(bucket, key), Partition::Revisions)
            .await?
            .iter()
            .map(|item| decode_revision(bucket, item))
            .collect()
    }

    /// Every item of one partition, strongly consistent, in as many pages as it takes.
    async fn partition(&self, pk: &str, part: Partition) -> Result<Vec<Item>, KvError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.items)
                .expression_attribute_names("#pk", PK)
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            query = match part {
                Partition::Revisions => query
                    .key_condition_expression("#pk = :pk AND #rev > :head")
                    .expression_attribute_names("#rev", REV)
                    .expression_attribute_values(":head", n(0)),
                Partition::KeysOnly => query
                    .key_condition_expression("#pk = :pk")
                    .projection_expression("#rev")
                    .expression_attribute_names("#rev", REV),
            };
            let output = query
                .send()
                .await
                .map_err(|error| storage_error("Query", error))?;
            items.extend_from_slice(output.items());
            match output.last_evaluated_key() {
                Some(next) => start = Some(next.clone()),
                None => return Ok(items),
            }
        }
    }

    /// The lowest revision among the bucket's live values, from the `by-sequence` index.
    pub async fn first_live_revision(&self, bucket: &str) -> Result<Option<u64>, KvError> {
        let output = self
            .client
            .query()
            .table_name(&self.items)
            .index_name(BY_SEQUENCE_INDEX)
            .key_condition_expression("#gb = :bucket")
            .expression_attribute_names("#gb", LATEST_IN_BUCKET)
            .expression_attribute_values(":bucket", s(bucket))
            .projection_expression("#rev")
            .expression_attribute_names("#rev", REV)
            .limit(1)
            .send()
            .await
            .map_err(|error| storage_error("Query", error))?;
        Ok(output.items().first().and_then(|item| get_u64(item, REV)))
    }

    /// Marks the bucket as being deleted (idempotently) and returns it; None if it never existed.
    pub async fn mark_deleting(
        &self,
        bucket: &str,
        now_ms: u64,
    ) -> Result<Option<BucketRecord>, KvError> {
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

    /// Removing the usage item makes every in-flight write's transaction fail its condition,
    /// so no write that started before the delete can land after it.
    pub async fn delete_usage(&self, bucket: &str) -> Result<(), KvError> {
        self.client
            .delete_item()
            .table_name(&self.items)
            .key(PK, s(usage_pk(bucket)))
            .key(REV, n(0))
            .send()
            .await
            .map_err(|error| storage_error("DeleteItem", error))?;
        Ok(())
    }

    /// One page of the bucket's key partitions from the `by-bucket` index.
    pub async fn key_partitions(
        &self,
        bucket: &str,
        after: Option<String>,
    ) -> Result<(Vec<String>, Option<String>), KvError> {
        let start = after.map(|pk| {
            HashMap::from([
                (HEAD_BUCKET.to_string(), s(bucket)),
                (PK.to_string(), s(pk)),
                (REV.to_string(), n(0)),
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
    pub async fn partition_items(&self, pk: &str) -> Result<Vec<u64>, KvError> {
        let items = self.partition(pk, Partition::KeysOnly).await?;
        Ok(items.iter().filter_map(|item| get_u64(item, REV)).collect())
    }

    /// Deletes items 25 per BatchWriteItem, retrying what DynamoDB leaves unprocessed.
    pub async fn delete_items(&self, keys: &[(String, u64)]) -> Result<(), KvError> {
        for chunk in keys.chunks(25) {
            let mut writes = Vec::with_capacity(chunk.len());
            for (pk, rev) in chunk {
                let delete = DeleteRequest::builder()
                    .key(PK, s(pk))
                    .key(REV, n(rev))
                    .build()
                    .map_err(build_failed)?;
                writes.push(WriteRequest::builder().delete_request(delete).build());
            }
            let request = HashMap::from([(self.items.clone(), writes)]);
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

    /// Asks the buckets table's stream to invoke the purger again for this bucket.
    pub async fn bump_purge_round(&self, bucket: &str) -> Result<(), KvError> {
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
    pub async fn delete_bucket_record(&self, bucket: &str) -> Result<(), KvError> {
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
}

/// Sends a batch and re-sends what DynamoDB leaves unprocessed, with backoff; returns every
/// item the batch read.
async fn until_processed<T, F, Fut>(
    first: HashMap<String, T>,
    mut send: F,
) -> Result<Vec<Item>, KvError>
where
    F: FnMut(HashMap<String, T>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Item>, Option<HashMap<String, T>>), KvError>>,
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
        Some(request) if !request.is_empty() => Err(KvError::Unavailable(format!(
            "DynamoDB left part of a batch unprocessed after {ATTEMPTS} attempts"
        ))),
        _ => Ok(read),
    }
}

fn decode_bucket(item: &Item) -> Result<BucketRecord, KvError> {
    let config_json = get_str(item, CONFIG)
        .ok_or_else(|| KvError::Internal("Bucket item without configuration".into()))?;
    let config: BucketConfig = serde_json::from_str(config_json).map_err(|error| {
        KvError::Internal(format!("Bucket configuration is malformed: {error}"))
    })?;
    Ok(BucketRecord {
        config,
        created_ms: get_u64(item, CREATED).unwrap_or(0),
        seq: get_u64(item, SEQ).unwrap_or(0),
        deleting_ms: get_u64(item, DELETING),
    })
}

fn decode_usage(item: &Item) -> Usage {
    Usage {
        bytes: get_i64(item, USED_BYTES).unwrap_or(0),
        keys: get_i64(item, LIVE_KEYS).unwrap_or(0),
    }
}

/// The request behind `Store::latest_revision`, unsent: `make bench` times it raw beside the
/// handler, so the two must be the same request.
pub fn latest_revision_query(
    client: &Client,
    items_table: &str,
    bucket: &str,
    key: &str,
) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
    client
        .query()
        .table_name(items_table)
        .key_condition_expression("#pk = :pk AND #rev > :head")
        .expression_attribute_names("#pk", PK)
        .expression_attribute_names("#rev", REV)
        .expression_attribute_values(":pk", s(key_pk(bucket, key)))
        .expression_attribute_values(":head", n(0))
        .scan_index_forward(false)
        .limit(1)
        .consistent_read(true)
}
