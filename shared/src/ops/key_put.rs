//! kv-key-put: store a string, object or array as a new revision of the key.

use super::write::{self, write, Idempotency, WriteRequest};
use crate::api::function::Function;
use crate::api::requests::KeyPut;
use crate::api::responses::KeyWritten;
use crate::model::cache::CachedValue;
use crate::model::error::KvError;
use crate::model::revision::Op;
use crate::ops::state::Kv;
use std::time::Instant;

pub async fn run(kv: &Kv, request: KeyPut, deadline: Instant) -> Result<KeyWritten, KvError> {
    let KeyPut {
        bucket,
        key,
        value,
        revision,
        ttl,
        idempotency_key,
    } = request;
    let written = write(
        kv,
        WriteRequest {
            bucket: &bucket,
            key: &key,
            op: Op::Put,
            text: &value,
            expected: revision,
            ttl_ns: ttl,
            deadline,
            source: None,
            increment: None,
            idempotency: Idempotency::of(idempotency_key.as_deref(), Function::KeyPut),
            incarnation: None,
        },
    )
    .await?;
    remember(kv, &bucket, &key, &written, value);
    Ok(KeyWritten {
        message: "Key written successfully",
        revision: written.revision,
    })
}

/// A value written to a `memory` bucket goes into this container's cache too.
pub(super) fn remember(kv: &Kv, bucket: &str, key: &str, written: &write::Written, text: String) {
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
}
