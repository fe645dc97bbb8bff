//! kv-key-history: every retained revision of a key, oldest first, markers included, in pages
//! that end early when the next revision would take the answer past `MAX_PAGE_BYTES` (passing
//! `last_sequence` back gives the next).

use crate::api::requests;
use crate::api::responses::{BucketMetadata, HistoryEntry, HistoryPage, KeyHistoryBody};
use crate::model::error::KvError;
use crate::model::limits::{encoded_len, PageBudget};
use crate::model::revision::Op;
use crate::model::time;
use crate::ops::state::Kv;
use serde_json::Value;

pub async fn run(kv: &Kv, request: requests::KeyHistory) -> Result<HistoryPage, KvError> {
    let requests::KeyHistory {
        bucket,
        key,
        json: as_json,
        last_sequence,
    } = request;
    let (bucket, key) = (bucket.as_str(), key.as_str());
    // The bucket is checked alongside: one being deleted serves nothing, though its items are
    // still there until the purge reaches them.
    let (history, live) = tokio::join!(
        kv.store.history(bucket, key),
        super::live_bucket(kv, bucket)
    );
    let incarnation = live?;
    let (head, retained) = history?;
    if head.latest_revision.is_none() || !super::of_incarnation(head.incarnation, incarnation) {
        return Err(KvError::KeyNotFound);
    }
    let now_ns = time::now_ns();
    let mut results = Vec::new();
    let (mut results_total, mut cursor, mut has_more) = (0, last_sequence, false);
    let mut budget = PageBudget::default();
    for stored in retained {
        let decoded = stored.decode(key)?;
        // Expired values are gone, as if the sweep had removed them.
        if decoded.op == Op::Expired || time::is_expired(decoded.expiry_ns, now_ns) {
            continue;
        }
        results_total += 1;
        if decoded.revision <= last_sequence || has_more {
            continue;
        }
        let value = match decoded.op {
            Op::Del | Op::Purge | Op::Expired => Value::Null,
            Op::Put if as_json => serde_json::from_str(&decoded.text).map_err(|error| {
                KvError::ValueNotJson(format!(
                    "Revision {} of key '{key}' is not valid JSON ({error}); read it with json: false",
                    decoded.revision
                ))
            })?,
            Op::Put => Value::String(decoded.text),
        };
        let mut entry = HistoryEntry {
            revision: decoded.revision,
            value,
            created: decoded.created_ms,
            operation: decoded.op.as_str(),
            too_large: false,
        };
        let mut size = encoded_len(&entry);
        if !PageBudget::fits_alone(size) {
            entry.value = Value::Null;
            entry.too_large = true;
            size = encoded_len(&entry);
        }
        if !budget.take(size) {
            // The answer is full: the next page starts at this revision.
            has_more = true;
            continue;
        }
        cursor = entry.revision;
        results.push(entry);
    }
    Ok(HistoryPage {
        body: KeyHistoryBody {
            key: key.to_string(),
            results_total,
            results,
            last_sequence: cursor,
            has_more,
        },
        metadata: BucketMetadata {
            bucket: bucket.to_string(),
        },
    })
}
