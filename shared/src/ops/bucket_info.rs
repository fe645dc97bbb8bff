//! kv-bucket-info: one bucket's effective configuration and live usage.

use crate::api::params::Params;
use crate::model::error::KvError;
use crate::ops::state::Kv;
use serde_json::{json, Value};

pub async fn run(kv: &Kv, params: Params) -> Result<Value, KvError> {
    let bucket = params.bucket()?;
    let (record, usage, first) = tokio::join!(
        kv.store.read_bucket(bucket),
        kv.store.usage(bucket),
        kv.store.first_live_revision(bucket)
    );
    let record = record?
        .filter(|record| record.deleting_ms.is_none())
        .ok_or_else(|| KvError::BucketNotFound(bucket.to_string()))?;
    let usage = usage?.ok_or_else(|| KvError::BucketNotFound(bucket.to_string()))?;
    let mut body = super::bucket_list::summary(&record, usage);
    body["first_sequence"] = json!(first?.unwrap_or(0));
    body["last_sequence"] = json!(record.seq);
    Ok(json!({"body": body, "metadata": {"Bucket": bucket}}))
}
