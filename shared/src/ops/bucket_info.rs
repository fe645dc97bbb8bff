//! kv-bucket-info: one bucket's effective configuration and live usage.

use crate::api::requests::BucketName;
use crate::api::responses::{BucketInfo, BucketInfoBody, BucketMetadata};
use crate::model::error::KvError;
use crate::ops::state::Kv;

pub async fn run(kv: &Kv, request: BucketName) -> Result<BucketInfo, KvError> {
    let bucket = request.bucket;
    let (record, usage, first) = tokio::join!(
        kv.store.read_bucket(&bucket),
        kv.store.usage(&bucket),
        kv.store.first_live_revision(&bucket)
    );
    let record = record?
        .filter(|record| record.deleting_ms.is_none())
        .ok_or_else(|| KvError::BucketNotFound(bucket.clone()))?;
    let usage = usage?.ok_or_else(|| KvError::BucketNotFound(bucket.clone()))?;
    let last_sequence = record.last_revision;
    let replication = kv.deployment.replication(&record.config);
    Ok(BucketInfo {
        body: BucketInfoBody {
            summary: super::bucket_list::summary(record, usage),
            first_sequence: first?.unwrap_or(0),
            last_sequence,
            replication,
        },
        metadata: BucketMetadata { bucket },
    })
}
