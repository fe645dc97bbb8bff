//! kv-key-delete: a delete (or purge) marker with its own revision, as NATS KV writes it.

use super::write::{write, Idempotency, WriteRequest};
use crate::api::function::Function;
use crate::api::requests::KeyDelete;
use crate::api::responses::KeyWritten;
use crate::model::error::KvError;
use crate::model::revision::Op;
use crate::ops::state::Kv;
use std::time::Instant;

pub async fn run(kv: &Kv, request: KeyDelete, deadline: Instant) -> Result<KeyWritten, KvError> {
    let KeyDelete {
        bucket,
        key,
        purge,
        revision,
        idempotency_key,
    } = request;
    let written = write(
        kv,
        WriteRequest {
            bucket: &bucket,
            key: &key,
            op: if purge { Op::Purge } else { Op::Del },
            text: "",
            expected: revision,
            ttl_ns: None,
            deadline,
            source: None,
            increment: None,
            idempotency: Idempotency::of(idempotency_key.as_deref(), Function::KeyDelete),
            incarnation: None,
        },
    )
    .await?;
    kv.cache.remove(&bucket, &key);
    Ok(KeyWritten {
        message: if purge {
            "Key purged successfully"
        } else {
            "Key deleted successfully"
        },
        revision: written.revision,
    })
}
