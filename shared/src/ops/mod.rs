//! The KV operations, one module per function, over the DynamoDB store.

pub mod bucket_create;
pub mod bucket_delete;
pub mod bucket_info;
pub mod bucket_list;
pub mod copies;
pub mod expiry_sweep;
pub mod items_replicate;
pub mod items_stream;
pub mod key_delete;
pub mod key_get;
pub mod key_history;
pub mod key_increment;
pub mod key_list;
pub mod key_put;
pub mod key_watch;
pub mod set_aside;
pub mod state;
pub mod waiters;
pub mod write;

use crate::model::error::KvError;
use crate::ops::state::Kv;
use crate::store::errors::StoreError;

/// A stream batch's records and the age of its oldest, for the function's metric record.
fn count_batch(records: &[serde_json::Value]) {
    use crate::model::metrics;
    metrics::add(|counts| &counts.records, records.len() as u64);
    let now_ms = crate::model::time::ns_to_ms(crate::model::time::now_ns());
    let oldest_secs = records
        .iter()
        .filter_map(|record| {
            record
                .get("dynamodb")?
                .get("ApproximateCreationDateTime")?
                .as_f64()
        })
        .fold(None, |oldest: Option<f64>, at| {
            Some(oldest.map_or(at, |oldest| oldest.min(at)))
        });
    if let Some(oldest_secs) = oldest_secs {
        let age_ms = now_ms.saturating_sub((oldest_secs.max(0.0) * 1000.0) as u64);
        metrics::raise(|counts| &counts.oldest_record_age_ms, age_ms);
    }
}

/// The incarnation of `bucket` if it exists and is not being deleted, else 404
/// `bucket_not_found`; read at most once per `LIVE_FOR` per container.
async fn live_bucket(kv: &Kv, bucket: &str) -> Result<u64, KvError> {
    if let Some(incarnation) = kv.live_buckets.incarnation(bucket) {
        return Ok(incarnation);
    }
    match kv.store.read_bucket(bucket).await? {
        Some(record) if record.deleting_ms.is_none() => {
            kv.live_buckets.remember(bucket, record.created_ms);
            Ok(record.created_ms)
        }
        _ => Err(KvError::BucketNotFound(bucket.to_string())),
    }
}

/// Whether a head read alongside `live_bucket` is a key of the bucket there is now: not one of
/// an earlier bucket of the same name that the purge has not reached yet.
fn of_incarnation(head_incarnation: Option<u64>, incarnation: u64) -> bool {
    head_incarnation.is_none_or(|of| of == incarnation)
}

/// What a store failure means to the caller. A missing bucket is the caller's 404; an item
/// DynamoDB refused as too large is the caller's value (`store::heads` words it with the real
/// limit); the rest are Lambda errors, retryable or not.
impl From<StoreError> for KvError {
    fn from(error: StoreError) -> KvError {
        match error {
            StoreError::Unavailable(message) => KvError::Unavailable(message),
            StoreError::Internal(message) => KvError::Internal(message),
            StoreError::BucketNotFound(bucket) => KvError::BucketNotFound(bucket),
            StoreError::ItemTooLarge(message) => KvError::ValueTooLarge(message),
        }
    }
}
