//! Heads and archived revisions (items table): reading a key's record, writing a new head (alone,
//! or with the usage item for `max_bytes`), archives, history, the key-list and expiry indexes.

use super::claims::{refused_claim, Claim, ClaimWrite};
use super::errors::{classify, is_condition_failure, storage_error, Failure};
use super::items::*;
use super::{build_failed, Store, UsageChange};
use crate::model::revision::{Head, HeadEntry, Op, Stored};
use crate::store::errors::StoreError;
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
    Update,
};
use aws_sdk_dynamodb::Client;
use std::collections::HashMap;

/// A key's new latest revision, written as its head (the head is the record: its value and its
/// retained revisions' list), and what the write is conditional on.
#[derive(Debug)]
pub struct HeadWrite<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    /// The bucket's `created`, as read when the revision was handed out.
    pub incarnation: u64,
    /// When (epoch ms) the revision was handed out: past `COMMIT_WINDOW_MS` the write is not
    /// sent, since a bucket delete may then believe every write of the bucket has landed.
    pub allocated_ms: u64,
    pub latest: &'a Stored,
    /// Every retained revision, the new latest last.
    pub entries: &'a [HeadEntry],
    /// The bucket has `max_bytes`: its usage moves with the head, so the stream leaves it be.
    pub exact_counts: bool,
    pub condition: HeadCondition,
    /// A copy from a source bucket: (that bucket, its revision). The head records it, and
    /// refuses a copy of that bucket's revision it already holds (or an older one).
    pub source: Option<(&'a str, u64)>,
}

/// What a head write requires of the head it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadCondition {
    /// The head is still at this revision: the one the write was planned from, or the one a
    /// compare-and-set names.
    At(u64),
    /// The key has never been written.
    Absent,
    /// The key has no live value (compare-and-set with revision 0): no head, a marker, or a
    /// value expired by `now_ns`.
    NoLiveValue { now_ns: u64 },
    /// The head holds an older revision than the new one, whatever it is.
    Older,
}

#[derive(Debug)]
pub enum CommitError {
    /// The revision was handed out too long ago to be written (nothing was sent): a write must
    /// take a new one.
    WindowClosed,
    /// The head is not what the write required; here is the head as DynamoDB saw it, when it
    /// said (a compare-and-set refusal needs no second read).
    HeadChanged(Option<Box<Head>>),
    /// DynamoDB did not apply the transaction because of other transactions or throttling;
    /// a later attempt can succeed. Carries what to report if no attempt does.
    Contention(StoreError),
    /// DynamoDB may or may not have applied the transaction (no answer, a lost response, a
    /// server error, still in progress): only sending it again with the same token tells.
    OutcomeUnknown(StoreError),
    BucketFull {
        used: i64,
    },
    BucketGone,
    /// A call with the same idempotency key already wrote: its outcome.
    Claimed(Box<Claim>),
    Failed(StoreError),
}

/// Which items of a key's partition a query returns.
#[derive(Debug, Clone, Copy)]
pub(super) enum Partition {
    /// The head and the archived revisions, whole.
    Whole,
    /// Every item including the head, keys only.
    KeysOnly,
}

/// A failed head write that is not a refusal of its condition: the item too large (the
/// caller's input), or a storage failure whose outcome may or may not be known.
pub(super) fn commit_failure<E>(operation: &str, error: SdkError<E, HttpResponse>) -> CommitError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if error.code() == Some("ValidationException")
        && error
            .message()
            .is_some_and(|message| message.to_ascii_lowercase().contains("item size"))
    {
        return CommitError::Failed(StoreError::ItemTooLarge(format!(
            "The value does not fit in one DynamoDB item ({} KB at most, key and metadata included): {}",
            MAX_ITEM_BYTES / 1024,
            error.message().unwrap_or("")
        )));
    }
    match classify(&error) {
        Failure::OutcomeUnknown => CommitError::OutcomeUnknown(storage_error(operation, error)),
        Failure::Refused => CommitError::Contention(storage_error(operation, error)),
        Failure::Permanent => CommitError::Failed(storage_error(operation, error)),
    }
}

pub(super) fn decode_archived(item: &Item) -> Result<Stored, StoreError> {
    let revision = get_u64(item, REVISION).ok_or_else(|| {
        StoreError::Internal("Stored item is malformed: item without 'rev'".into())
    })?;
    decode_stored(revision, item)
}

/// The request behind `Store::read_head` with a consistent read, unsent: `make bench` times it
/// raw beside the handler, so the two must be the same request.
pub fn head_read(
    client: &Client,
    items_table: &str,
    pk: &str,
    consistent: bool,
) -> aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder {
    client
        .get_item()
        .table_name(items_table)
        .key(PK, s(pk))
        .key(REVISION, n(0))
        .consistent_read(consistent)
}

impl Store {
    pub async fn read_head(
        &self,
        bucket: &str,
        key: &str,
        consistent: bool,
    ) -> Result<Head, StoreError> {
        self.read_head_of(&key_pk(bucket, key), consistent).await
    }

    /// The head of the key whose partition key is `pk`.
    pub async fn read_head_of(&self, pk: &str, consistent: bool) -> Result<Head, StoreError> {
        let output = head_read(&self.client, &self.items, pk, consistent)
            .send()
            .await
            .map_err(|error| storage_error("GetItem", error))?;
        decode_head(output.item())
    }

    pub(super) fn head_put(&self, write: &HeadWrite<'_>) -> Result<Put, CommitError> {
        let failed = |error| CommitError::Failed(build_failed(error));
        let now_ms = crate::model::time::ns_to_ms(crate::model::time::now_ns());
        if now_ms > write.allocated_ms + COMMIT_WINDOW_MS {
            return Err(CommitError::WindowClosed);
        }
        let latest = write.latest;
        let mut head = Put::builder()
            .table_name(&self.items)
            .set_item(Some(head_attributes(latest)))
            .item(PK, s(key_pk(write.bucket, write.key)))
            .item(REVISION, n(0))
            .item(HEAD_REVISION, n(latest.revision))
            .item(HEAD_ENTRIES, encode_head_entries(write.entries))
            .item(HEAD_BUCKET, s(write.bucket))
            .item(INCARNATION, n(write.incarnation))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if latest.op == Op::Put {
            if let Some(expiry_ns) = latest.expiry_ns {
                head = head
                    .item(
                        EXPIRY_SHARD,
                        s(expiry_shard(&key_pk(write.bucket, write.key))),
                    )
                    .item(EXPIRY_SECONDS, n(expiry_ns / 1_000_000_000));
            }
            head = head.item(LATEST_IN_BUCKET, s(write.bucket));
            if latest.bytes.len() <= LIST_VALUE_MAX_BYTES {
                head = head.item(
                    LIST_VALUE,
                    AttributeValue::B(Blob::new(latest.bytes.clone())),
                );
            }
        }
        if write.exact_counts {
            head = head.item(EXACT_COUNTS, AttributeValue::Bool(true));
        }
        if let Some((origin, revision)) = write.source {
            head = head
                .item(format!("{SOURCE_MARK_PREFIX}{origin}"), n(revision))
                .expression_attribute_names("#so", format!("{SOURCE_MARK_PREFIX}{origin}"))
                .expression_attribute_values(":so", n(revision));
        }
        head = match write.condition {
            // Every condition keeps the head's commits in increasing revision order, which is
            // what lets a head prove that a revision it does not show never landed.
            HeadCondition::At(revision) => head
                .condition_expression("#cur = :cur AND #cur < :rev")
                .expression_attribute_names("#cur", HEAD_REVISION)
                .expression_attribute_values(":cur", n(revision))
                .expression_attribute_values(":rev", n(latest.revision)),
            HeadCondition::Absent => head
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PK),
            HeadCondition::NoLiveValue { now_ns } => head
                .condition_expression(
                    "attribute_not_exists(#pk) OR (#cur < :rev AND (attribute_exists(#op) OR #x <= :now))",
                )
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#cur", HEAD_REVISION)
                .expression_attribute_names("#op", OP)
                .expression_attribute_names("#x", EXPIRY_NS)
                .expression_attribute_values(":rev", n(latest.revision))
                .expression_attribute_values(":now", n(now_ns)),
            HeadCondition::Older => head
                .condition_expression("attribute_not_exists(#pk) OR #cur < :rev")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#cur", HEAD_REVISION)
                .expression_attribute_values(":rev", n(latest.revision)),
        };
        if write.source.is_some() {
            let condition = head.get_condition_expression().clone().unwrap_or_default();
            head = head.condition_expression(format!(
                "({condition}) AND (attribute_not_exists(#so) OR #so < :so)"
            ));
        }
        head.build().map_err(failed)
    }

    /// The head's write as an update: every attribute of the new head set, every optional one
    /// it lacks removed, and the revisions the head held before kept in `r1`..`r3`, so a
    /// writer whose answer was lost can still recognise its revision after a few later writes.
    pub(super) fn head_update(&self, write: &HeadWrite<'_>) -> Result<Update, CommitError> {
        let put = self.head_put(write)?;
        let mut names = put
            .expression_attribute_names()
            .cloned()
            .unwrap_or_default();
        let mut values = put
            .expression_attribute_values()
            .cloned()
            .unwrap_or_default();
        let mut sets = Vec::new();
        let mut key = HashMap::new();
        // In name order: a transaction sent again under its token must be the same request.
        let mut attributes: Vec<(&String, &AttributeValue)> = put.item().iter().collect();
        attributes.sort_by(|a, b| a.0.cmp(b.0));
        for (index, (name, value)) in attributes.into_iter().enumerate() {
            if name == PK || name == REVISION {
                key.insert(name.clone(), value.clone());
                continue;
            }
            names.insert(format!("#s{index}"), name.clone());
            values.insert(format!(":s{index}"), value.clone());
            sets.push(format!("#s{index} = :s{index}"));
        }
        for (index, name) in RECENT_REVISIONS.iter().enumerate() {
            names.insert(format!("#r{index}"), (*name).to_string());
        }
        names.insert("#rc".into(), HEAD_REVISION.into());
        values.insert(":zero".into(), n(0));
        sets.push("#r2 = if_not_exists(#r1, :zero)".into());
        sets.push("#r1 = if_not_exists(#r0, :zero)".into());
        sets.push("#r0 = if_not_exists(#rc, :zero)".into());
        let removed: Vec<String> = OPTIONAL_HEAD_ATTRIBUTES
            .iter()
            .filter(|name| !put.item().contains_key(**name))
            .enumerate()
            .map(|(index, name)| {
                names.insert(format!("#m{index}"), (*name).to_string());
                format!("#m{index}")
            })
            .collect();
        let mut expression = format!("SET {}", sets.join(", "));
        if !removed.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removed.join(", ")));
        }
        Update::builder()
            .table_name(&self.items)
            .set_key(Some(key))
            .update_expression(expression)
            .set_condition_expression(put.condition_expression().map(str::to_string))
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|error| CommitError::Failed(build_failed(error)))
    }

    /// Writes the head alone, in one `UpdateItem`: a refusal returns the head DynamoDB saw.
    /// Sent again after an unknown outcome it is harmless: a head that already landed fails the
    /// condition and shows its own revision (as `cur`, or among the recent ones).
    pub async fn put_head(&self, write: &HeadWrite<'_>) -> Result<(), CommitError> {
        let update = self.head_update(write)?;
        // No retries inside the SDK: a resend after a lost answer would come back as a refusal
        // that hides the landed first send, so the caller resends itself, knowing it did.
        let result = self
            .update_item(&update)
            .customize()
            .config_override(
                aws_sdk_dynamodb::Config::builder()
                    .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled()),
            )
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        if let Some(UpdateItemError::ConditionalCheckFailedException(refused)) =
            error.as_service_error()
        {
            let head = refused
                .item()
                .map(|item| decode_head(Some(item)))
                .transpose();
            return Err(CommitError::HeadChanged(head.ok().flatten().map(Box::new)));
        }
        Err(commit_failure("UpdateItem", error))
    }

    /// Writes the head in one transaction with the bucket's usage (buckets with `max_bytes`,
    /// whose counts must be exact at every moment) and/or an idempotency claim, with `token` as
    /// its `ClientRequestToken`: sent again with the same token within 10 minutes, a
    /// transaction DynamoDB already applied succeeds without being applied again, and one
    /// still in progress is reported as such.
    pub async fn put_head_in_transaction(
        &self,
        write: &HeadWrite<'_>,
        usage: Option<&UsageChange>,
        claim: Option<&ClaimWrite<'_>>,
        token: &str,
    ) -> Result<(), CommitError> {
        let failed = |error| CommitError::Failed(build_failed(error));
        let head = self.head_update(write)?;
        let mut writes = vec![TransactWriteItem::builder().update(head).build()];
        if let Some(usage) = usage {
            let update = self.usage_update(write.bucket, usage).map_err(failed)?;
            writes.push(TransactWriteItem::builder().update(update).build());
        }
        if let Some(claim) = claim {
            let put = claim.put(&self.items).map_err(failed)?;
            writes.push(TransactWriteItem::builder().put(put).build());
        }
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
            let refused = |index: usize| {
                reasons
                    .get(index)
                    .filter(|reason| reason.code() == Some("ConditionalCheckFailed"))
            };
            let usage_index = usage.map(|_| 1);
            let claim_index = claim.map(|_| 1 + usize::from(usage.is_some()));
            // An earlier call with the same idempotency key: its outcome is the answer, whatever
            // else the transaction met.
            if let Some(earlier) = claim_index.and_then(refused) {
                if let Some(claim) = refused_claim(earlier.item()) {
                    return Err(CommitError::Claimed(Box::new(claim)));
                }
            }
            if let (Some(usage_now), Some(usage)) = (usage_index.and_then(refused), usage) {
                return Err(match usage_now.item() {
                    Some(old) if get_u64(old, INCARNATION) == Some(usage.incarnation) => {
                        CommitError::BucketFull {
                            used: get_i64(old, USED_BYTES).unwrap_or(0),
                        }
                    }
                    _ => CommitError::BucketGone,
                });
            }
            if let Some(head_now) = refused(0) {
                let head = head_now
                    .item()
                    .map(|item| decode_head(Some(item)))
                    .transpose();
                return Err(CommitError::HeadChanged(head.ok().flatten().map(Box::new)));
            }
            if reasons.iter().any(|reason| {
                matches!(
                    reason.code(),
                    Some(
                        "TransactionConflict" | "ThrottlingError" | "ProvisionedThroughputExceeded"
                    )
                )
            }) {
                return Err(CommitError::Contention(StoreError::Unavailable(
                    "DynamoDB cancelled the write's transaction: it conflicted with other transactions or was throttled"
                        .to_string(),
                )));
            }
        }
        Err(commit_failure("TransactWriteItems", error))
    }

    /// Keeps a replaced revision as an item of its own, so the key's history can show it. The
    /// same revision always has the same content, so writing it again changes nothing.
    pub async fn archive(
        &self,
        bucket: &str,
        key: &str,
        stored: &Stored,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.items)
            .set_item(Some(stored_attributes(stored)))
            .item(PK, s(key_pk(bucket, key)))
            .item(REVISION, n(stored.revision))
            .send()
            .await
            .map_err(|error| storage_error("PutItem", error))?;
        Ok(())
    }

    /// Replaces a head's retained list, the head otherwise unchanged, if its latest is still
    /// `latest_revision`: a mirror taking an older revision that arrived after later ones.
    /// False when the head has moved on.
    pub async fn set_head_entries(
        &self,
        bucket: &str,
        key: &str,
        latest_revision: u64,
        entries: &[HeadEntry],
    ) -> Result<bool, StoreError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.items)
            .key(PK, s(key_pk(bucket, key)))
            .key(REVISION, n(0))
            .update_expression("SET #h = :h")
            .condition_expression("#cur = :cur")
            .expression_attribute_names("#h", HEAD_ENTRIES)
            .expression_attribute_names("#cur", HEAD_REVISION)
            .expression_attribute_values(":h", encode_head_entries(entries))
            .expression_attribute_values(":cur", n(latest_revision))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(error) if is_condition_failure(&error) => Ok(false),
            Err(error) => Err(storage_error("UpdateItem", error)),
        }
    }

    /// An archived older revision of a key (its latest lives in the head).
    pub async fn archived(
        &self,
        bucket: &str,
        key: &str,
        revision: u64,
    ) -> Result<Option<Stored>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.items)
            .key(PK, s(key_pk(bucket, key)))
            .key(REVISION, n(revision))
            .consistent_read(true)
            .send()
            .await
            .map_err(|error| storage_error("GetItem", error))?;
        output.item().map(decode_archived).transpose()
    }

    /// Up to `limit` heads of live values with a revision above `after`, in revision order, in
    /// one request (index entries: keys, revision, and the value when it is small); the flag
    /// says whether the index holds more beyond them.
    pub async fn latest_page(
        &self,
        bucket: &str,
        after: u64,
        limit: i32,
    ) -> Result<(Vec<Item>, bool), StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.items)
            .index_name(BY_SEQUENCE_INDEX)
            .key_condition_expression("#gb = :bucket AND #cur > :after")
            .expression_attribute_names("#gb", LATEST_IN_BUCKET)
            .expression_attribute_names("#cur", HEAD_REVISION)
            .expression_attribute_values(":bucket", s(bucket))
            .expression_attribute_values(":after", n(after))
            .limit(limit)
            .send()
            .await
            .map_err(|error| storage_error("Query", error))?;
        let more = output.last_evaluated_key().is_some();
        Ok((output.items().to_vec(), more))
    }

    /// The values of heads whose values were too large for the index, by partition key, in
    /// `BatchGetItem`s of 100.
    pub async fn head_values(&self, pks: &[String]) -> Result<HashMap<String, Item>, StoreError> {
        let mut found = HashMap::new();
        for chunk in pks.chunks(100) {
            let mut keys = KeysAndAttributes::builder()
                .consistent_read(true)
                // With the marker and the expiry: a head deleted or expired since the index
                // was read has no value to list.
                .projection_expression("#pk, #cur, #v, #z, #op, #x")
                .expression_attribute_names("#pk", PK)
                .expression_attribute_names("#cur", HEAD_REVISION)
                .expression_attribute_names("#v", VALUE)
                .expression_attribute_names("#z", COMPRESSED)
                .expression_attribute_names("#op", OP)
                .expression_attribute_names("#x", EXPIRY_NS);
            for pk in chunk {
                keys = keys.keys([(PK.to_string(), s(pk)), (REVISION.to_string(), n(0))].into());
            }
            let read = self.get_batch(keys).await?;
            for item in read {
                if let Some(pk) = get_str(&item, PK) {
                    found.insert(pk.to_string(), item.clone());
                }
            }
        }
        Ok(found)
    }

    /// The key's head and every archived revision the head still lists, in as many pages as
    /// the values need: what the head does not list (trimmed, or left over) is never shown.
    pub async fn history(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<(Head, Vec<Stored>), StoreError> {
        let items = self
            .partition(&key_pk(bucket, key), Partition::Whole)
            .await?;
        let head = decode_head(items.iter().find(|item| get_u64(item, REVISION) == Some(0)))?;
        let mut archived: HashMap<u64, Stored> = HashMap::new();
        for item in &items {
            if get_u64(item, REVISION).is_some_and(|revision| revision > 0) {
                let stored = decode_archived(item)?;
                archived.insert(stored.revision, stored);
            }
        }
        let mut retained = Vec::with_capacity(head.entries.len());
        for entry in &head.entries {
            match (&head.latest, archived.remove(&entry.revision)) {
                (Some(latest), _) if latest.revision == entry.revision => {
                    retained.push(latest.clone())
                }
                (_, Some(stored)) => retained.push(stored),
                // Its archive write has not landed (yet): the stream consumer restores it.
                _ => {}
            }
        }
        Ok((head, retained))
    }

    /// Every item of one partition, strongly consistent, in as many pages as it takes.
    pub(super) async fn partition(
        &self,
        pk: &str,
        part: Partition,
    ) -> Result<Vec<Item>, StoreError> {
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
                Partition::Whole => query.key_condition_expression("#pk = :pk"),
                Partition::KeysOnly => query
                    .key_condition_expression("#pk = :pk")
                    .projection_expression("#rev")
                    .expression_attribute_names("#rev", REVISION),
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
    pub async fn first_live_revision(&self, bucket: &str) -> Result<Option<u64>, StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.items)
            .index_name(BY_SEQUENCE_INDEX)
            .key_condition_expression("#gb = :bucket")
            .expression_attribute_names("#gb", LATEST_IN_BUCKET)
            .expression_attribute_values(":bucket", s(bucket))
            .projection_expression("#cur")
            .expression_attribute_names("#cur", HEAD_REVISION)
            .limit(1)
            .send()
            .await
            .map_err(|error| storage_error("Query", error))?;
        Ok(output
            .items()
            .first()
            .and_then(|item| get_u64(item, HEAD_REVISION)))
    }

    /// One page of the heads one `by-expiry` partition lists as expired by `now_secs`, and where
    /// the next page starts.
    pub async fn expired_heads(
        &self,
        shard: &str,
        now_secs: u64,
        start: Option<Item>,
    ) -> Result<(Vec<String>, Option<Item>), StoreError> {
        let output = self
            .client
            .query()
            .table_name(&self.items)
            .index_name(BY_EXPIRY_INDEX)
            .key_condition_expression("#xp = :shard AND #xs <= :now")
            .expression_attribute_names("#xp", EXPIRY_SHARD)
            .expression_attribute_names("#xs", EXPIRY_SECONDS)
            .expression_attribute_values(":shard", s(shard))
            .expression_attribute_values(":now", n(now_secs))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|error| storage_error("Query", error))?;
        let pks = output
            .items()
            .iter()
            .filter_map(|item| get_str(item, PK))
            .map(str::to_string)
            .collect();
        Ok((pks, output.last_evaluated_key().cloned()))
    }

    /// Takes an expired latest value out of its head: no value, no key-list or expiry index
    /// entry, `entries` as the retained list, `op` EXPIRED. Conditional on the head still being
    /// that unexpired-marked value, so sending it again, or after a write replaced the value,
    /// changes nothing. In a `max_bytes` bucket the usage item moves with it, in one
    /// transaction, since its counts must stay exact. False when there was nothing to do.
    pub async fn expire_head(
        &self,
        pk: &str,
        head: &Head,
        entries: &[HeadEntry],
        now_ns: u64,
    ) -> Result<bool, StoreError> {
        let Some(latest_revision) = head.latest_revision else {
            return Ok(false);
        };
        let update = Update::builder()
            .table_name(&self.items)
            .key(PK, s(pk))
            .key(REVISION, n(0))
            // `ttl` too: a head written before heads stopped carrying it must not be deleted
            // whole by DynamoDB's sweep, with the older revisions it lists.
            .update_expression("SET #op = :expired, #h = :h REMOVE #v, #lv, #gb, #xp, #xs, #ttl")
            .condition_expression("#cur = :cur AND #x <= :now AND attribute_not_exists(#op)")
            .expression_attribute_names("#op", OP)
            .expression_attribute_names("#h", HEAD_ENTRIES)
            .expression_attribute_names("#v", VALUE)
            .expression_attribute_names("#lv", LIST_VALUE)
            .expression_attribute_names("#gb", LATEST_IN_BUCKET)
            .expression_attribute_names("#xp", EXPIRY_SHARD)
            .expression_attribute_names("#xs", EXPIRY_SECONDS)
            .expression_attribute_names("#ttl", TTL)
            .expression_attribute_names("#cur", HEAD_REVISION)
            .expression_attribute_names("#x", EXPIRY_NS)
            .expression_attribute_values(":expired", s(Op::Expired.as_str()))
            .expression_attribute_values(":h", encode_head_entries(entries))
            .expression_attribute_values(":cur", n(latest_revision))
            .expression_attribute_values(":now", n(now_ns))
            .build()
            .map_err(build_failed)?;
        let Some(incarnation) = head.exact_counts else {
            let result = self.update_item(&update).send().await;
            return match result {
                Ok(_) => Ok(true),
                Err(error) if is_condition_failure(&error) => Ok(false),
                Err(error) => Err(storage_error("UpdateItem", error)),
            };
        };
        let size = |entries: &[HeadEntry]| -> i64 {
            entries
                .iter()
                .map(|entry| i64::try_from(entry.size).unwrap_or(i64::MAX))
                .sum()
        };
        let change = UsageChange {
            incarnation,
            bytes_delta: size(entries) - size(&head.entries),
            keys_delta: -1,
            bytes_ceiling: None,
        };
        // Bucket names hold no '/', so the head's key starts with its bucket's.
        let bucket = pk.split_once('/').map_or(pk, |(bucket, _)| bucket);
        let usage = self.usage_update(bucket, &change).map_err(build_failed)?;
        let result = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().update(update).build())
            .transact_items(TransactWriteItem::builder().update(usage).build())
            .send()
            .await;
        let error = match result {
            Ok(_) => return Ok(true),
            Err(error) => error,
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
            error.as_service_error()
        {
            // The head changed, or the bucket was deleted: nothing of this value to take out.
            if cancelled
                .cancellation_reasons()
                .iter()
                .any(|reason| reason.code() == Some("ConditionalCheckFailed"))
            {
                return Ok(false);
            }
        }
        Err(storage_error("TransactWriteItems", error))
    }

    /// `update` sent by itself as an `UpdateItem`, the same request it is inside a transaction.
    fn update_item(&self, update: &Update) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(update.table_name())
            .set_key(Some(update.key().clone()))
            .update_expression(update.update_expression())
            .set_condition_expression(update.condition_expression().map(str::to_string))
            .set_expression_attribute_names(update.expression_attribute_names().cloned())
            .set_expression_attribute_values(update.expression_attribute_values().cloned())
            .set_return_values_on_condition_check_failure(
                update.return_values_on_condition_check_failure().cloned(),
            )
    }

    /// The usage item's share of a transaction that moves it with a head: conditional on the
    /// bucket's incarnation (and, for a write that grows the bucket, on room under `max_bytes`).
    fn usage_update(
        &self,
        bucket: &str,
        change: &UsageChange,
    ) -> Result<Update, aws_sdk_dynamodb::error::BuildError> {
        let update = Update::builder()
            .table_name(&self.items)
            .key(PK, s(usage_pk(bucket)))
            .key(REVISION, n(0))
            .update_expression("ADD #bytes :bytes, #keys :keys")
            .expression_attribute_names("#bytes", USED_BYTES)
            .expression_attribute_names("#keys", LIVE_KEYS)
            .expression_attribute_names("#inc", INCARNATION)
            .expression_attribute_values(":bytes", n(change.bytes_delta))
            .expression_attribute_values(":keys", n(change.keys_delta))
            .expression_attribute_values(":inc", n(change.incarnation))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        match change.bytes_ceiling {
            None => update.condition_expression("#inc = :inc"),
            Some(ceiling) => update
                .condition_expression("#inc = :inc AND #bytes <= :ceiling")
                .expression_attribute_values(":ceiling", n(ceiling)),
        }
        .build()
    }
}
