//! kv-bucket-delete: the bucket disappears at once for every operation, and its items are
//! purged in the background of the call's time budget, for buckets of any size.
//!
//! 1. The bucket item is marked `deleting`: from then on puts, lists and info say 404 and a
//!    create of the same name is refused, so a re-created bucket can never see old items.
//! 2. The usage item is deleted, so a re-created bucket's counts start from nothing (the
//!    stream consumer drops the old incarnation's changes, and a `max_bytes` write's
//!    transaction fails its condition on it). No revision is handed out once the bucket is
//!    marked, and no write sends its commit later than `COMMIT_WINDOW_MS` after taking its
//!    revision, so nothing of the old bucket can land once the purge has waited that out.
//! 3. Every key is found through the `by-bucket` index of heads and its items deleted
//!    (revisions first, the head last, so an interrupted purge can always resume).
//! 4. When the index is empty (and has had time to catch up with the last writes), the bucket
//!    item is deleted and the name is free again.
//!
//! A tombstone stays for ten minutes after the purge (`Store::leave_tombstone`), so that a
//! delete sent again after its answer was lost answers 200, not 404.
//!
//! What does not fit in one invocation's budget is handed on: the bucket item's `purge_round`
//! is bumped, and the buckets table's stream invokes kv-bucket-purge, which does the same
//! until the bucket is gone. Calling kv-bucket-delete again continues the purge as well.

use crate::api::requests::{BucketName, StreamBatch};
use crate::api::responses::{BucketDeleted, PurgeStep, PurgedBucket};
use crate::model::error::KvError;
use crate::model::{time, validate};
use crate::ops::state::Kv;
use crate::store::items::WRITES_QUIET_MS;
use crate::store::BucketRecord;
use serde_json::Value;
use std::time::{Duration, Instant};

/// How long the index may lag behind the last write before an empty index is trusted.
const SETTLE: Duration = Duration::from_secs(1);

pub async fn run(
    kv: &Kv,
    request: BucketName,
    deadline: Instant,
) -> Result<BucketDeleted, KvError> {
    let purged = delete_bucket(kv, &request.bucket, deadline).await?;
    Ok(BucketDeleted {
        message: if purged.done {
            "Bucket deleted successfully"
        } else {
            "Bucket deleted; its items are still being removed"
        },
        purged: purged.done,
        keys_removed: purged.keys,
    })
}

/// The buckets table's stream: continue every deletion its records mention.
pub async fn run_purger(
    kv: &Kv,
    batch: StreamBatch,
    deadline: Instant,
) -> Result<PurgeStep, KvError> {
    super::count_batch(&batch.records);
    let mut deletions: Vec<(String, u64)> = batch.records.iter().filter_map(deletion).collect();
    deletions.sort();
    deletions.dedup();
    let mut results = Vec::new();
    for (bucket, since_ms) in deletions {
        // Only the deletion the record speaks of is continued: a late record must never start
        // deleting a bucket re-created under the same name since.
        let Some(current) = kv.store.read_bucket(&bucket).await? else {
            continue;
        };
        if current.deleting_ms != Some(since_ms) {
            continue;
        }
        let purged = purge_and_hand_on(kv, &bucket, quiet_at(&current, since_ms), deadline).await?;
        results.push(PurgedBucket {
            bucket,
            purged: purged.done,
            keys_removed: purged.keys,
        });
    }
    Ok(PurgeStep {
        message: "Purge step done",
        results,
    })
}

/// The bucket a stream record's new image shows being deleted, and since when.
fn deletion(record: &Value) -> Option<(String, u64)> {
    let image = record.get("dynamodb")?.get("NewImage")?;
    let since_ms = image
        .get(crate::store::items::DELETING)?
        .get("N")?
        .as_str()?
        .parse()
        .ok()?;
    let name = image.get(crate::store::items::BUCKET)?.get("S")?.as_str()?;
    validate::bucket_name(name).ok()?;
    Some((name.to_string(), since_ms))
}

pub struct Purged {
    pub done: bool,
    pub keys: u64,
}

pub async fn delete_bucket(kv: &Kv, bucket: &str, deadline: Instant) -> Result<Purged, KvError> {
    let now_ms = time::ns_to_ms(time::now_ns());
    let Some(record) = kv.store.mark_deleting(bucket, now_ms).await? else {
        // A delete sent again after its answer was lost, the purge since finished, answers
        // as the first one did.
        if kv.store.recently_deleted(bucket).await? {
            return Ok(Purged {
                done: true,
                keys: 0,
            });
        }
        return Err(KvError::BucketNotFound(bucket.to_string()));
    };
    kv.store.delete_usage(bucket).await?;
    let since_ms = record.deleting_ms.unwrap_or(now_ms);
    purge_and_hand_on(kv, bucket, quiet_at(&record, since_ms), deadline).await
}

/// When (epoch ms) the bucket's items can be taken as final: the index has caught up with the
/// last writes, and no write of the bucket can land any more (a write never sends its commit
/// later than `COMMIT_WINDOW_MS` after its revision, and no revision is handed out once the
/// bucket is marked deleting).
fn quiet_at(record: &BucketRecord, since_ms: u64) -> u64 {
    let index_settled = since_ms + SETTLE.as_millis() as u64;
    let writes_landed = record
        .last_allocated_ms
        .map_or(0, |allocated| allocated + WRITES_QUIET_MS);
    index_settled.max(writes_landed)
}

/// Purges until done or out of time; what is left goes to the purger through the stream.
async fn purge_and_hand_on(
    kv: &Kv,
    bucket: &str,
    quiet_at_ms: u64,
    deadline: Instant,
) -> Result<Purged, KvError> {
    let purged = purge(kv, bucket, quiet_at_ms, deadline).await?;
    if !purged.done {
        kv.store.bump_purge_round(bucket).await?;
    }
    Ok(purged)
}

async fn purge(
    kv: &Kv,
    bucket: &str,
    quiet_at_ms: u64,
    deadline: Instant,
) -> Result<Purged, KvError> {
    let mut keys = 0;
    // Every invocation purges at least one page, however little time it was given: otherwise
    // a budget spent before the first page would hand on for ever without progress.
    let mut pages = 0;
    loop {
        let mut cursor = None;
        let mut found_any = false;
        loop {
            if pages > 0 && Instant::now() >= deadline {
                return Ok(Purged { done: false, keys });
            }
            pages += 1;
            let (partitions, next) = kv.store.key_partitions(bucket, cursor).await?;
            found_any |= !partitions.is_empty();
            keys += purge_partitions(kv, partitions).await?;
            cursor = next;
            if cursor.is_none() {
                break;
            }
        }
        if !found_any {
            let settled_at = Duration::from_millis(quiet_at_ms);
            let now = Duration::from_millis(time::ns_to_ms(time::now_ns()));
            if now >= settled_at {
                kv.store
                    .leave_tombstone(bucket, time::ns_to_ms(time::now_ns()))
                    .await?;
                kv.store.delete_bucket_record(bucket).await?;
                return Ok(Purged { done: true, keys });
            }
            let wait = settled_at - now;
            if Instant::now() + wait >= deadline {
                return Ok(Purged { done: false, keys });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Deletes every item of these keys, reading the keys in parallel; returns how many keys had
/// items (the index may still list keys already purged).
async fn purge_partitions(kv: &Kv, partitions: Vec<String>) -> Result<u64, KvError> {
    let mut reads = tokio::task::JoinSet::new();
    for pk in partitions {
        let store = kv.store.clone();
        reads.spawn(crate::model::metrics::inherited(async move {
            store
                .partition_items(&pk)
                .await
                .map(|revisions| (pk, revisions))
        }));
    }
    let mut revisions = Vec::new();
    let mut heads = Vec::new();
    while let Some(joined) = reads.join_next().await {
        let (pk, found) =
            joined.map_err(|error| KvError::Internal(format!("Purge task failed: {error}")))??;
        for revision in found {
            if revision == 0 {
                heads.push((pk.clone(), revision));
            } else {
                revisions.push((pk.clone(), revision));
            }
        }
    }
    kv.store.delete_items(&revisions).await?;
    kv.store.delete_items(&heads).await?;
    Ok(heads.len() as u64)
}
