//! kv-items-stream, fed by the items table's stream: what follows from a head's change without
//! slowing the write down.
//!
//! - Counts: a bucket's `bytes` (every retained revision's size) and `entry_total` (keys whose
//!   latest revision is a value) move by the difference between a head's old and new images,
//!   summed per bucket and applied with one `ADD` per bucket per batch. Buckets with
//!   `max_bytes` are skipped: their writes keep the counts exact themselves. A delta of another
//!   incarnation of the bucket (a deleted and re-created name) is dropped.
//! - Redelivery: the batch's updates (99 buckets a transaction) carry a token naming exactly
//!   which records they count, written as an item of its own in the same transaction (kept 25
//!   hours, longer than the stream keeps a record), so a batch delivered again changes nothing,
//!   however many batches came between. A failure is reported (partial batch response) only
//!   from a record after which no other bucket's records were counted; otherwise the whole
//!   batch fails and comes back whole, tokens and all (the mapping does not bisect batches,
//!   which would give their halves new tokens).
//! - History: revisions a head no longer lists are deleted (a write never deletes before it
//!   commits, so a refused write destroys nothing), and a replaced value that the head still
//!   lists is archived again from the old image, which repairs a writer that stopped between
//!   its head's write and its own archive write.

use crate::api::function::Function;
use crate::api::requests::StreamBatch;
use crate::api::responses::{BatchItemFailure, BatchOutcome};
use crate::model::error::KvError;
use crate::model::revision::{Head, Op, Stored};
use crate::ops::set_aside::{Failures, Skipped};
use crate::ops::state::Kv;
use crate::store::errors::StoreError;
use crate::store::items::{self, decode_head, get_u64, EXACT_COUNTS, INCARNATION};
use crate::store::stream_images::{record_images, RecordImages};
use crate::store::BucketDelta;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// How many buckets one counting transaction holds: DynamoDB takes 100 items, one is the token.
const COUNTS_PER_TRANSACTION: usize = 99;

/// One head change of the batch, as far as it matters here.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadChange {
    /// The record's position in the batch.
    pub index: usize,
    pub sequence: String,
    pub event_id: String,
    pub bucket: String,
    pub key: String,
    pub incarnation: u64,
    pub exact_counts: bool,
    pub bytes: i64,
    pub keys: i64,
    /// Archived revisions the old head listed and the new one does not.
    pub trimmed: Vec<u64>,
    /// The replaced latest, still listed by the new head: its archive must exist.
    pub archive: Option<Stored>,
}

/// (bytes, entry_total) one head contributes to its bucket.
pub fn contribution(head: &Head) -> (i64, i64) {
    let bytes = head
        .entries
        .iter()
        .map(|entry| i64::try_from(entry.size).unwrap_or(i64::MAX))
        .sum();
    let live = head.latest_entry().is_some_and(|entry| entry.op == Op::Put);
    (bytes, i64::from(live))
}

/// Reads one stream record; None for records of other items (archives, usage, buckets).
pub fn head_change(index: usize, record: &Value) -> Result<Option<HeadChange>, KvError> {
    let Some(RecordImages { pk, old, new }) = record_images(record)
        .map_err(|what| KvError::param(format!("Stream record {index}: {what}")))?
    else {
        return Ok(None);
    };
    let Some((bucket, key)) = pk.split_once('/') else {
        return Ok(None);
    };
    let stream = &record["dynamodb"];
    let old_head = decode_head(old.as_ref())?;
    let new_head = decode_head(new.as_ref())?;
    let (old_bytes, old_keys) = contribution(&old_head);
    let (new_bytes, new_keys) = contribution(&new_head);
    let incarnation = [&new, &old]
        .into_iter()
        .flatten()
        .find_map(|item| get_u64(item, INCARNATION))
        .unwrap_or(0);
    let exact_counts = [&new, &old]
        .into_iter()
        .flatten()
        .any(|item| matches!(item.get(EXACT_COUNTS), Some(AttributeValue::Bool(true))));
    let kept = |revision: u64| {
        new_head
            .entries
            .iter()
            .any(|entry| entry.revision == revision)
    };
    // The old latest lived in the head alone: it is archived only when a write keeps it, so
    // one dropped at the change that replaced it (history 1, a purge, an expired latest) has no
    // item to delete, and deleting it anyway would cost a write unit per overwrite.
    let trimmed = old_head
        .entries
        .iter()
        .map(|entry| entry.revision)
        .filter(|revision| {
            !kept(*revision)
                && Some(*revision) != new_head.latest_revision
                && Some(*revision) != old_head.latest_revision
        })
        .collect();
    let archive = old_head.latest.filter(|latest| {
        new_head.latest_revision != Some(latest.revision) && kept(latest.revision)
    });
    let text = |name: &str| {
        record
            .get(name)
            .or_else(|| stream.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Ok(Some(HeadChange {
        index,
        sequence: text("SequenceNumber"),
        event_id: text("eventID"),
        bucket: bucket.to_string(),
        key: key.to_string(),
        incarnation,
        exact_counts,
        bytes: new_bytes - old_bytes,
        keys: new_keys - old_keys,
        trimmed,
        archive,
    }))
}

/// Per bucket (and incarnation), the sum of its heads' changes; buckets with exact counts and
/// changes that change nothing are left out.
pub fn bucket_deltas(changes: &[HeadChange]) -> BTreeMap<(String, u64), BucketDelta> {
    let mut deltas: BTreeMap<(String, u64), (BucketDelta, Vec<&str>)> = BTreeMap::new();
    for change in changes.iter().filter(|change| !change.exact_counts) {
        let (delta, ids) = deltas
            .entry((change.bucket.clone(), change.incarnation))
            .or_insert_with(|| {
                (
                    BucketDelta {
                        incarnation: change.incarnation,
                        bytes: 0,
                        keys: 0,
                        token: String::new(),
                        first: change.index,
                        last: change.index,
                    },
                    Vec::new(),
                )
            });
        delta.bytes += change.bytes;
        delta.keys += change.keys;
        delta.last = change.index;
        ids.push(if change.event_id.is_empty() {
            change.sequence.as_str()
        } else {
            change.event_id.as_str()
        });
    }
    deltas
        .into_iter()
        .filter(|(_, (delta, _))| delta.bytes != 0 || delta.keys != 0)
        .map(|(bucket, (mut delta, ids))| {
            delta.token = batch_token(&ids);
            (bucket, delta)
        })
        .collect()
}

/// A short name for a list of record ids (FNV-1a over them, twice with different seeds).
fn batch_token(ids: &[&str]) -> String {
    let hash = |seed: u64| {
        ids.iter().fold(seed, |hash, id| {
            id.bytes()
                .chain(std::iter::once(0))
                .fold(hash, |hash, byte| {
                    (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
                })
        })
    };
    format!(
        "{:016x}{:016x}",
        hash(0xcbf2_9ce4_8422_2325),
        hash(0x6c62_272e_07bb_0142)
    )
}

pub async fn run(kv: &Kv, batch: StreamBatch) -> Result<BatchOutcome, KvError> {
    let records = &batch.records;
    super::count_batch(records);
    let mut changes = Vec::new();
    // A record that cannot be read is set aside: nothing after it waits for it.
    let mut unreadable = Failures::default();
    for (index, record) in records.iter().enumerate() {
        match head_change(index, record) {
            Ok(Some(change)) => changes.push(change),
            Ok(None) => {}
            Err(error) => {
                unreadable
                    .refused(
                        kv,
                        Function::ItemsStream,
                        (index, record),
                        Skipped::UNREADABLE,
                        &error,
                    )
                    .await;
            }
        }
    }
    if let Some(index) = unreadable.first_retry {
        // Setting it aside failed: nothing is counted before it can be.
        return Ok(BatchOutcome {
            batch_item_failures: vec![BatchItemFailure::of_record(records.get(index))],
            counted: 0,
            set_aside: unreadable.set_aside,
        });
    }
    // The earliest record whose work failed; everything from it on comes back.
    let mut failed_at: Option<usize> = None;
    let mut first_error: Option<String> = None;
    let mut fail = |index: usize, error: &StoreError| {
        tracing::warn!(error = %error, record = index, "stream record not processed");
        failed_at = Some(failed_at.map_or(index, |earlier| earlier.min(index)));
        first_error.get_or_insert_with(|| error.to_string());
    };
    let mut counted_last = None;
    let mut counted = 0;
    // One transaction for the batch's buckets (99 a chunk, with the chunk's token): a bucket
    // costs its usage update, and the token is paid once per batch, not once per bucket.
    let deltas: Vec<((String, u64), BucketDelta)> = bucket_deltas(&changes).into_iter().collect();
    let mut updates = tokio::task::JoinSet::new();
    for (chunk_index, chunk) in deltas.chunks(COUNTS_PER_TRANSACTION).enumerate() {
        let store = kv.store.clone();
        let chunk: Vec<(String, BucketDelta)> = chunk
            .iter()
            .map(|((bucket, _), delta)| (bucket.clone(), delta.clone()))
            .collect();
        let token = batch_token(
            &chunk
                .iter()
                .map(|(_, delta)| delta.token.as_str())
                .chain(std::iter::once(chunk_index.to_string().as_str()))
                .collect::<Vec<_>>(),
        );
        updates.spawn(crate::model::metrics::inherited(async move {
            let outcome = store.count_changes(&token, &chunk).await;
            (chunk, outcome)
        }));
    }
    while let Some(joined) = updates.join_next().await {
        let (chunk, outcome) =
            joined.map_err(|error| KvError::Internal(format!("Count task failed: {error}")))?;
        match outcome {
            Ok(applied) => {
                for ((_, delta), applied) in chunk.iter().zip(applied) {
                    counted += usize::from(applied);
                    counted_last =
                        Some(counted_last.map_or(delta.last, |last: usize| last.max(delta.last)));
                }
            }
            Err(error) => {
                let first = chunk
                    .iter()
                    .map(|(_, delta)| delta.first)
                    .min()
                    .unwrap_or(0);
                fail(first, &error);
            }
        }
    }
    // History upkeep for the whole batch in as few requests as it takes: what is trimmed is
    // deleted (and not archived again, should the batch also hold its replacement).
    let trimmed: BTreeSet<(String, u64)> = changes
        .iter()
        .flat_map(|change| {
            let pk = items::key_pk(&change.bucket, &change.key);
            change
                .trimmed
                .iter()
                .map(move |revision| (pk.clone(), *revision))
        })
        .collect();
    let archives: Vec<(String, &Stored)> = changes
        .iter()
        .filter_map(|change| {
            let pk = items::key_pk(&change.bucket, &change.key);
            change
                .archive
                .as_ref()
                .filter(|stored| !trimmed.contains(&(pk.clone(), stored.revision)))
                .map(|stored| (pk, stored))
        })
        .collect();
    let first_upkeep = changes
        .iter()
        .find(|change| !change.trimmed.is_empty() || change.archive.is_some())
        .map(|change| change.index);
    if let Some(first) = first_upkeep {
        let trimmed: Vec<(String, u64)> = trimmed.into_iter().collect();
        let (deleted, archived) = tokio::join!(
            kv.store.delete_items(&trimmed),
            kv.store.archive_many(&archives)
        );
        if let Err(error) = deleted.and(archived) {
            fail(first, &error);
        }
    }
    match failed_at {
        None => Ok(BatchOutcome {
            batch_item_failures: Vec::new(),
            counted,
            set_aside: unreadable.set_aside,
        }),
        // Counting from here again is safe only if nothing after it was counted: the retried
        // records would be counted a second time, under another token.
        Some(index) if counted_last.is_none_or(|last| last < index) => {
            Ok(BatchOutcome {
                batch_item_failures: vec![BatchItemFailure::of_record(records.get(index))],
                counted,
                set_aside: unreadable.set_aside,
            })
        }
        Some(_) => Err(KvError::Unavailable(format!(
            "Part of the stream batch failed after later records were counted, so the whole batch must come again (counted buckets skip it by token): {}",
            first_error.unwrap_or_default()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn head_image(latest_revision: u64, entries: &[(u64, u64, &str)], extra: Value) -> Value {
        let h: Vec<Value> = entries
            .iter()
            .map(|(revision, size, op)| {
                json!({"L": [{"N": revision.to_string()}, {"N": size.to_string()}, {"N": "0"}, {"S": op}]})
            })
            .collect();
        let mut image = json!({
            "pk": {"S": "b/k"}, "rev": {"N": "0"}, "cur": {"N": latest_revision.to_string()},
            "h": {"L": h}, "inc": {"N": "7"}, "v": {"B": "dmFsdWU="}
        });
        if let (Value::Object(image), Value::Object(extra)) = (&mut image, extra) {
            image.extend(extra);
        }
        image
    }

    fn record(sequence_number: &str, old: Option<Value>, new: Option<Value>) -> Value {
        let mut stream = json!({"Keys": {"pk": {"S": "b/k"}, "rev": {"N": "0"}}, "SequenceNumber": sequence_number});
        if let Some(old) = old {
            stream["OldImage"] = old;
        }
        if let Some(new) = new {
            stream["NewImage"] = new;
        }
        json!({"eventID": format!("id-{sequence_number}"), "dynamodb": stream})
    }

    #[test]
    fn a_first_put_adds_a_key_and_its_bytes() {
        let change = head_change(
            0,
            &record("1", None, Some(head_image(3, &[(3, 5, "PUT")], json!({})))),
        )
        .unwrap()
        .unwrap();
        assert_eq!((change.bytes, change.keys, change.incarnation), (5, 1, 7));
        assert!(change.trimmed.is_empty() && change.archive.is_none());
    }

    #[test]
    fn replacing_trims_archives_and_deleting_drops_the_key() {
        let old = head_image(3, &[(1, 4, "PUT"), (3, 5, "PUT")], json!({}));
        let new = head_image(
            9,
            &[(3, 5, "PUT"), (9, 0, "DEL")],
            json!({"op": {"S": "DEL"}}),
        );
        let change = head_change(0, &record("2", Some(old), Some(new)))
            .unwrap()
            .unwrap();
        assert_eq!((change.bytes, change.keys), (-4, -1));
        assert_eq!(change.trimmed, vec![1]);
        assert_eq!(change.archive.map(|stored| stored.revision), Some(3));
    }

    #[test]
    fn other_items_and_exact_buckets_are_not_counted() {
        let mut archive = record(
            "3",
            None,
            Some(json!({"pk": {"S": "b/k"}, "rev": {"N": "4"}})),
        );
        archive["dynamodb"]["Keys"]["rev"] = json!({"N": "4"});
        assert_eq!(head_change(0, &archive).unwrap(), None);
        let exact = head_image(2, &[(2, 9, "PUT")], json!({"mb": {"BOOL": true}}));
        let change = head_change(1, &record("4", None, Some(exact)))
            .unwrap()
            .unwrap();
        assert!(bucket_deltas(&[change]).is_empty());
    }

    #[test]
    fn deltas_sum_per_bucket_with_a_token_of_their_records() {
        let first = head_change(
            0,
            &record("5", None, Some(head_image(1, &[(1, 5, "PUT")], json!({})))),
        )
        .unwrap()
        .unwrap();
        let second = HeadChange {
            index: 1,
            event_id: "id-6".into(),
            ..first.clone()
        };
        let deltas = bucket_deltas(&[first.clone(), second]);
        let delta = &deltas[&("b".to_string(), 7)];
        assert_eq!(
            (delta.bytes, delta.keys, delta.first, delta.last),
            (10, 2, 0, 1)
        );
        let alone = bucket_deltas(&[first]);
        assert_ne!(alone[&("b".to_string(), 7)].token, delta.token);
    }
}
