//! kv-key-history: every retained revision of a key, oldest first, markers included.

use crate::api::params::Params;
use crate::model::error::KvError;
use crate::model::time;
use crate::ops::state::Kv;
use crate::store::items::Op;
use serde_json::{json, Value};

pub async fn run(kv: &Kv, params: Params) -> Result<Value, KvError> {
    let (bucket, key) = params.bucket_and_key()?;
    let as_json = params.opt_bool("json")?.unwrap_or(false);
    let (head, retained) = kv.store.history(bucket, key).await?;
    if head.cur.is_none() {
        return Err(super::key_or_bucket_missing(kv, bucket).await);
    }
    let now_ns = time::now_ns();
    let mut results = Vec::with_capacity(retained.len());
    for stored in retained {
        let revision = stored.decode(key)?;
        // Expired values are gone, as if the sweep had removed them.
        if revision.op == Op::Expired || time::is_expired(revision.expiry_ns, now_ns) {
            continue;
        }
        let value = match revision.op {
            Op::Del | Op::Purge | Op::Expired => Value::Null,
            Op::Put if as_json => serde_json::from_str(&revision.text).map_err(|error| {
                KvError::ValueNotJson(format!(
                    "Revision {} of key '{key}' is not valid JSON ({error}); read it with json: false",
                    revision.rev
                ))
            })?,
            Op::Put => Value::String(revision.text),
        };
        results.push(json!({
            "revision": revision.rev,
            "value": value,
            "created": revision.created_ms,
            "operation": revision.op.as_str(),
        }));
    }
    Ok(json!({
        "body": {"key": key, "results_total": results.len(), "results": results},
        "metadata": {"Bucket": bucket},
    }))
}
