//! kv-key-increment: adds `by` to a counter in one atomic step, through the same write path as
//! a put (a revision of its own, history, counts, the stream, republish).

use super::write::{write, Idempotency, Increment, WriteRequest};
use crate::api::function::Function;
use crate::api::requests::KeyIncrement;
use crate::api::responses::Incremented;
use crate::model::error::KvError;
use crate::model::revision::Op;
use crate::ops::state::Kv;
use std::time::Instant;

pub async fn run(
    kv: &Kv,
    request: KeyIncrement,
    deadline: Instant,
) -> Result<Incremented, KvError> {
    let KeyIncrement {
        bucket,
        key,
        by,
        ttl,
        idempotency_key,
    } = request;
    let written = write(
        kv,
        WriteRequest {
            increment: Some(Increment { by, window_ns: ttl }),
            idempotency: Idempotency::of(idempotency_key.as_deref(), Function::KeyIncrement),
            ..WriteRequest::plain(&bucket, &key, Op::Put, "", deadline)
        },
    )
    .await?;
    let value = written.counter.ok_or_else(|| {
        KvError::Internal("An increment was written without its value".to_string())
    })?;
    super::key_put::remember(kv, &bucket, &key, &written, value.to_string());
    Ok(Incremented {
        value,
        revision: written.revision,
    })
}
