//! kv-key-put: store a string, object or array as a new revision of the key.

use super::write::{write, WriteRequest};
use crate::api::params::Params;
use crate::model::cache::CachedValue;
use crate::model::error::KvError;
use crate::model::validate;
use crate::ops::state::Kv;
use crate::store::items::Op;
use serde_json::{json, Value};
use std::time::Instant;

pub async fn run(kv: &Kv, params: Params, deadline: Instant) -> Result<Value, KvError> {
    let (bucket, key) = params.bucket_and_key()?;
    let text = validate::value_text(params.raw_with_null("value"))?;
    let expected = params
        .opt_int("revision", 0, i64::MAX)?
        .map(|revision| revision.unsigned_abs());
    let ttl_ns = params.opt_int("ttl", 0, i64::MAX)?;
    let written = write(
        kv,
        WriteRequest {
            bucket,
            key,
            op: Op::Put,
            text: &text,
            expected,
            ttl_ns,
            deadline,
        },
    )
    .await?;
    if written.memory {
        kv.cache.put(
            bucket,
            key,
            CachedValue {
                revision: written.revision,
                text,
                created_ms: written.created_ms,
                expiry_ns: written.expiry_ns,
            },
        );
    }
    Ok(json!({"message": "Key written successfully", "revision": written.revision}))
}
