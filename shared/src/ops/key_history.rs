//! kv-key-history: every retained revision of a key, oldest first, markers included.

use crate::api::requests;
use crate::api::responses::{BucketMetadata, HistoryEntry, KeyHistory, KeyHistoryBody};
use crate::model::error::KvError;
use crate::model::revision::Op;
use crate::model::time;
use crate::ops::state::Kv;
use serde_json::Value;

pub async fn run(kv: &Kv, request: requests::KeyHistory) -> Result<KeyHistory, KvError> {
    let requests::KeyHistory {
        bucket,
        key,
        json: as_json,
    } = request;
    let (bucket, key) = (bucket.as_str(), key.as_str());
    let (head, retained) = kv.store.history(bucket, key).await?;
    if head.latest_revision.is_none() {
        return Err(super::key_or_bucket_missing(kv, bucket).await);
    }
    let now_ns = time::now_ns();
    let mut results = Vec::with_capacity(retained.len());
    for stored in retained {
        let decoded = stored.decode(key)?;
        // Expired values are gone, as if the sweep had removed them.
        if decoded.op == Op::Expired || time::is_expired(decoded.expiry_ns, now_ns) {
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
        results.push(HistoryEntry {
            revision: decoded.revision,
            value,
            created: decoded.created_ms,
            operation: decoded.op.as_str(),
        });
    }
    Ok(KeyHistory {
        body: KeyHistoryBody {
            key: key.to_string(),
            results_total: results.len(),
            results,
        },
        metadata: BucketMetadata {
            bucket: bucket.to_string(),
        },
    })
}
