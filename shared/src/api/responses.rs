//! Each function's successful answer, as the `body` of its envelope (SPEC "Response
//! envelope"). The field names are the contract's, including the product's capitalised
//! `Bucket`.

use crate::model::config::BucketConfig;
use crate::model::placement::Replication;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// kv-key-put and kv-key-delete.
#[derive(Debug, Serialize)]
pub struct KeyWritten {
    pub message: &'static str,
    pub revision: u64,
}

/// kv-key-increment.
#[derive(Debug, Serialize)]
pub struct Incremented {
    pub value: i64,
    pub revision: u64,
}

/// kv-key-watch: the flow waits for its task token; this answer is for direct callers.
#[derive(Debug, Serialize)]
pub struct Watching {
    pub message: &'static str,
    /// The revision a change must pass to resume the flow.
    pub after_revision: u64,
    /// The change that resumed the flow at once, when the key had already passed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resumed_with: Option<Change>,
}

/// What a resumed flow receives (`SendTaskSuccess`'s output): the change it waited for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    /// The stored text of a PUT; null for a delete, purge or expiry, or when larger than a
    /// task's output may be (`too_large`).
    pub value: Option<String>,
    pub revision: u64,
    pub operation: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub too_large: bool,
}

/// kv-bucket-create.
#[derive(Debug, Serialize)]
pub struct BucketCreated {
    pub message: &'static str,
    /// The effective configuration, defaults filled in.
    pub config: BucketConfig,
}

/// kv-key-get.
#[derive(Debug, Serialize)]
pub struct KeyValue {
    pub body: KeyValueBody,
    pub metadata: ValueMetadata,
}

#[derive(Debug, Serialize)]
pub struct KeyValueBody {
    pub key: String,
    /// The stored text, or the JSON it parses to with `json: true`.
    pub value: Value,
}

#[derive(Debug, Serialize)]
pub struct ValueMetadata {
    #[serde(rename = "Bucket")]
    pub bucket: String,
    pub revision: u64,
    pub created: u64,
}

/// The `metadata` of answers about one bucket.
#[derive(Debug, Serialize)]
pub struct BucketMetadata {
    #[serde(rename = "Bucket")]
    pub bucket: String,
}

/// kv-key-list.
#[derive(Debug, Serialize)]
pub struct KeysPage {
    pub body: KeyListBody,
    pub metadata: BucketMetadata,
}

#[derive(Debug, Serialize)]
pub struct KeyListBody {
    /// The bucket's live keys, all pages together.
    pub results_total: i64,
    pub results: Vec<ListedKey>,
    /// Pass back to get the next page.
    pub last_sequence: u64,
    pub has_more: bool,
}

#[derive(Debug, Serialize)]
pub struct ListedKey {
    pub key: String,
    /// Left out only when it is too large for an answer (`too_large`): read it with kv-key-get.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The key's latest revision.
    pub sequence: u64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub too_large: bool,
}

/// kv-key-history.
#[derive(Debug, Serialize)]
pub struct HistoryPage {
    pub body: KeyHistoryBody,
    pub metadata: BucketMetadata,
}

#[derive(Debug, Serialize)]
pub struct KeyHistoryBody {
    pub key: String,
    /// The key's retained revisions, all pages together.
    pub results_total: usize,
    pub results: Vec<HistoryEntry>,
    /// Pass back as `last_sequence` to get the next page.
    pub last_sequence: u64,
    pub has_more: bool,
}

#[derive(Debug, Serialize)]
pub struct HistoryEntry {
    pub revision: u64,
    /// Null for delete and purge markers, and for a value too large for an answer
    /// (`too_large`).
    pub value: Value,
    pub created: u64,
    pub operation: &'static str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub too_large: bool,
}

/// kv-bucket-list.
#[derive(Debug, Serialize)]
pub struct BucketsPage {
    pub body: BucketListBody,
    pub metadata: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct BucketListBody {
    pub results_total: usize,
    pub results: Vec<BucketSummary>,
    /// Only when a `limit` was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_more: Option<bool>,
    /// The cursor of the next page, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_after: Option<String>,
}

/// How a bucket is described, in the list and in kv-bucket-info.
#[derive(Debug, Serialize)]
pub struct BucketSummary {
    pub name: String,
    pub description: String,
    /// Keys with a live value.
    pub entry_total: i64,
    /// What counts against `max_bytes`.
    pub bytes: i64,
    pub created: u64,
    pub metadata: BTreeMap<String, String>,
    pub config: BucketConfig,
}

/// kv-bucket-info.
#[derive(Debug, Serialize)]
pub struct BucketInfo {
    pub body: BucketInfoBody,
    pub metadata: BucketMetadata,
}

#[derive(Debug, Serialize)]
pub struct BucketInfoBody {
    #[serde(flatten)]
    pub summary: BucketSummary,
    /// The oldest revision still stored, 0 when none is.
    pub first_sequence: u64,
    /// The bucket's latest revision.
    pub last_sequence: u64,
    /// Its `num_replicas` and where this deployment keeps its items.
    pub replication: Replication,
}

/// kv-bucket-delete.
#[derive(Debug, Serialize)]
pub struct BucketDeleted {
    pub message: &'static str,
    /// False while the bucket's items are still being removed in the background.
    pub purged: bool,
    pub keys_removed: u64,
}

/// kv-bucket-purge: one step of every deletion its batch mentioned.
#[derive(Debug, Serialize)]
pub struct PurgeStep {
    pub message: &'static str,
    pub results: Vec<PurgedBucket>,
}

#[derive(Debug, Serialize)]
pub struct PurgedBucket {
    pub bucket: String,
    pub purged: bool,
    pub keys_removed: u64,
}

/// kv-expiry-sweep.
#[derive(Debug, Serialize)]
pub struct SweepDone {
    pub message: &'static str,
    pub examined: u64,
    pub expired: u64,
    /// Heads (or pages of a shard) that could not be swept for a storage error.
    pub failed: u64,
    /// False when the deadline came first or something failed; the next run goes on.
    pub complete: bool,
}

/// A stream consumer's answer to Lambda's event source mapping, at the top of the result
/// (partial batch failure reporting).
#[derive(Debug, Serialize)]
pub struct BatchOutcome {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
    /// Buckets whose counts this batch changed.
    pub counted: usize,
    /// Records that could not be read, kept with their reason and skipped.
    pub set_aside: usize,
}

#[derive(Debug, Serialize)]
pub struct BatchItemFailure {
    /// The failed record's `SequenceNumber`.
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: Value,
}

impl BatchItemFailure {
    /// The failure of a stream record: Lambda retries from it.
    pub fn of_record(record: Option<&Value>) -> BatchItemFailure {
        BatchItemFailure {
            item_identifier: record
                .and_then(|record| record.get("dynamodb"))
                .and_then(|stream| stream.get("SequenceNumber"))
                .cloned()
                .unwrap_or(Value::Null),
        }
    }
}

/// kv-items-replicate's answer to the event source mapping.
#[derive(Debug, Serialize)]
pub struct Replicated {
    #[serde(rename = "batchItemFailures")]
    pub batch_item_failures: Vec<BatchItemFailure>,
    /// Events put on the bus.
    pub published: usize,
    /// Waiting flows resumed.
    pub resumed: usize,
    /// Records that can never be processed, kept with their reason and skipped.
    pub set_aside: usize,
}
