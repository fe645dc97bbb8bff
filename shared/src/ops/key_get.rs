//! kv-key-get: the key's latest live value (or a given revision), in one DynamoDB request, or
//! none for a `memory` bucket's cached value.

use crate::cache::CachedValue;
use crate::dynamo::items::Op;
use crate::error::KvError;
use crate::handler::Kv;
use crate::params::Params;
use crate::time;
use serde_json::{json, Value};

pub async fn run(kv: &Kv, params: Params) -> Result<Value, KvError> {
    let (bucket, key) = params.bucket_and_key()?;
    let as_json = params.opt_bool("json")?.unwrap_or(false);
    let revision = params
        .opt_int("revision", 1, i64::MAX)?
        .map(|revision| revision.unsigned_abs());
    let now_ns = time::now_ns();

    let cached = revision
        .is_none()
        .then(|| kv.cache.get(bucket, key, now_ns))
        .flatten();
    let found = match cached {
        Some(hit) => hit,
        None => {
            let stored = match revision {
                None => kv.store.latest_revision(bucket, key).await?,
                Some(rev) => kv.store.revision(bucket, key, rev).await?,
            };
            let Some(stored) = stored else {
                return Err(super::key_or_bucket_missing(kv, bucket).await);
            };
            if stored.op != Op::Put || time::is_expired(stored.expiry_ns, now_ns) {
                return Err(KvError::KeyNotFound);
            }
            let value = CachedValue {
                revision: stored.rev,
                text: stored.text,
                created_ms: stored.created_ms,
                expiry_ns: stored.expiry_ns,
            };
            if stored.memory && revision.is_none() {
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
    Ok(json!({
        "body": {"key": key, "value": value},
        "metadata": {"Bucket": bucket, "revision": found.revision, "created": found.created_ms},
    }))
}
