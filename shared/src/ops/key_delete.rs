//! kv-key-delete: a delete (or purge) marker with its own revision, as NATS KV writes it.

use super::write::{write, WriteRequest};
use crate::api::params::Params;
use crate::model::error::KvError;
use crate::ops::state::Kv;
use crate::store::items::Op;
use serde_json::{json, Value};
use std::time::Instant;

pub async fn run(kv: &Kv, params: Params, deadline: Instant) -> Result<Value, KvError> {
    let (bucket, key) = params.bucket_and_key()?;
    let purge = params.opt_bool("purge")?.unwrap_or(false);
    let expected = params
        .opt_int("revision", 0, i64::MAX)?
        .map(|revision| revision.unsigned_abs());
    let op = if purge { Op::Purge } else { Op::Del };
    let written = write(
        kv,
        WriteRequest {
            bucket,
            key,
            op,
            text: "",
            expected,
            ttl_ns: None,
            deadline,
        },
    )
    .await?;
    kv.cache.remove(bucket, key);
    let message = if purge {
        "Key purged successfully"
    } else {
        "Key deleted successfully"
    };
    Ok(json!({"message": message, "revision": written.revision}))
}
