//! kv-key-get: the key's latest live value, in one `GetItem` of its head (none for a `memory`
//! bucket's cached value), or a given revision: the head and that revision's item at once. The
//! bucket's record is read alongside, at most once a second per container (`live_bucket`).

use crate::api::requests::KeyGet;
use crate::api::responses::{KeyValue, KeyValueBody, ValueMetadata};
use crate::model::cache::CachedValue;
use crate::model::error::KvError;
use crate::model::metrics;
use crate::model::revision::{Op, Stored};
use crate::model::time;
use crate::ops::state::Kv;
use serde_json::Value;

pub async fn run(kv: &Kv, request: KeyGet) -> Result<KeyValue, KvError> {
    let KeyGet {
        bucket,
        key,
        json: as_json,
        revision,
    } = request;
    let (bucket, key) = (bucket.as_str(), key.as_str());
    let now_ns = time::now_ns();

    let cached = revision
        .is_none()
        .then(|| kv.cache.get(bucket, key, now_ns))
        .flatten();
    let found = match cached {
        Some(hit) => {
            metrics::add(|counts| &counts.cache_hits, 1);
            hit
        }
        None => {
            // The bucket is checked alongside: one being deleted serves nothing, though its
            // items are still there until the purge reaches them.
            let (found, live) = tokio::join!(
                read(kv, bucket, key, revision),
                super::live_bucket(kv, bucket)
            );
            let incarnation = live?;
            let (stored, of) = found?;
            let Some(stored) = stored.filter(|_| super::of_incarnation(of, incarnation)) else {
                return Err(KvError::KeyNotFound);
            };
            let stored = stored.decode(key)?;
            if stored.op != Op::Put || time::is_expired(stored.expiry_ns, now_ns) {
                return Err(KvError::KeyNotFound);
            }
            let value = CachedValue {
                revision: stored.revision,
                text: stored.text,
                created_ms: stored.created_ms,
                expiry_ns: stored.expiry_ns,
            };
            if stored.memory && revision.is_none() {
                // A miss of the cache is a read of a `memory` bucket that went to DynamoDB.
                metrics::add(|counts| &counts.cache_misses, 1);
                kv.cache.put(bucket, key, value.clone());
            }
            value
        }
    };
    let value = if as_json {
        serde_json::from_str::<Value>(&found.text).map_err(|error| {
            KvError::ValueNotJson(format!(
                "The value of key '{key}' is not valid JSON ({error}); read it with json: false"
            ))
        })?
    } else {
        Value::String(found.text)
    };
    Ok(KeyValue {
        body: KeyValueBody {
            key: key.to_string(),
            value,
        },
        metadata: ValueMetadata {
            bucket: bucket.to_string(),
            revision: found.revision,
            created: found.created_ms,
        },
    })
}

/// The key's latest revision, or the one asked for, and the incarnation of the bucket its head
/// was written in.
async fn read(
    kv: &Kv,
    bucket: &str,
    key: &str,
    revision: Option<u64>,
) -> Result<(Option<Stored>, Option<u64>), KvError> {
    match revision {
        None => {
            let head = kv.store.read_head(bucket, key, true).await?;
            Ok((head.latest, head.incarnation))
        }
        Some(revision) => at_revision(kv, bucket, key, revision).await,
    }
}

/// A given revision of the key: the head's latest, or an archived one the head still lists (an
/// archived item the head no longer lists was trimmed and is gone for readers).
async fn at_revision(
    kv: &Kv,
    bucket: &str,
    key: &str,
    revision: u64,
) -> Result<(Option<Stored>, Option<u64>), KvError> {
    let (head, archived) = tokio::join!(
        kv.store.read_head(bucket, key, true),
        kv.store.archived(bucket, key, revision)
    );
    let head = head?;
    if head.latest_revision.is_none() {
        return Ok((None, None));
    }
    if let Some(latest) = head.latest.filter(|latest| latest.revision == revision) {
        return Ok((Some(latest), head.incarnation));
    }
    if !head.entries.iter().any(|entry| entry.revision == revision) {
        return Ok((None, None));
    }
    Ok((archived?, head.incarnation))
}
