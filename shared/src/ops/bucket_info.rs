//! kv-bucket-info: one bucket's effective configuration and live usage.

use crate::error::KvError;
use crate::handler::Kv;
use crate::params::Params;
use crate::validate;
use serde_json::{json, Value};

pub async fn run(kv: &Kv, params: Params) -> Result<Value, KvError> {
    let bucket = params.required_str("bucket")?;
    validate::bucket_name(bucket)?;
    let (record, usage, first) = tokio::join!(
        kv.store.read_bucket(bucket),
        kv.store.usage(bucket),
        kv.store.first_live_revision(bucket)
    );
    let record = record?
        .filter(|record| record.deleting_ms.is_none())
        .ok_or_else(|| KvError::BucketNotFound(bucket.to_string()))?;
    let usage = usage?.ok_or_else(|| KvError::BucketNotFound(bucket.to_string()))?;
    Ok(json!({
        "body": {
            "name": record.config.bucket,
            "description": record.config.description,
            "entry_total": usage.keys,
            "bytes": usage.bytes,
            "created": record.created_ms,
            "metadata": record.config.metadata,
            "config": record.config.to_json(),
            "first_sequence": first?.unwrap_or(0),
            "last_sequence": record.seq,
        },
        "metadata": {"Bucket": bucket},
    }))
}
