//! kv-bucket-list: every bucket with its configuration and live usage.

use crate::api::params::Params;
use crate::model::error::KvError;
use crate::model::validate;
use crate::ops::state::Kv;
use crate::store::{BucketRecord, Usage};
use serde_json::{json, Value};

pub async fn run(kv: &Kv, params: Params) -> Result<Value, KvError> {
    let limit = params.opt_int("limit", 1, 1000)?;
    let start_after = params.opt_str("start_after")?;
    if let Some(name) = start_after {
        validate::bucket_name(name).map_err(|_| {
            KvError::param("Parameter 'start_after' must be a bucket name from a previous page")
        })?;
    }
    let mut records: Vec<BucketRecord> = Vec::new();
    let mut cursor = start_after.map(str::to_string);
    let has_more = loop {
        let remaining = limit.map(|limit| limit - records.len() as i64);
        let page_limit = remaining.map(|remaining| i32::try_from(remaining).unwrap_or(1000));
        let (page, next) = kv.store.scan_buckets(page_limit, cursor.as_deref()).await?;
        records.extend(
            page.into_iter()
                .filter(|record| record.deleting_ms.is_none()),
        );
        cursor = next;
        let full = limit.is_some_and(|limit| records.len() as i64 >= limit);
        if cursor.is_none() || full {
            break cursor.is_some();
        }
    };
    if limit.is_none() {
        records.sort_by(|a, b| a.config.bucket.cmp(&b.config.bucket));
    }
    let names: Vec<String> = records
        .iter()
        .map(|record| record.config.bucket.clone())
        .collect();
    let usages = kv.store.usages(&names).await?;
    let results: Vec<Value> = records
        .iter()
        .map(|record| {
            let usage = usages.get(&record.config.bucket).copied();
            summary(record, usage.unwrap_or_default())
        })
        .collect();
    let mut body = json!({"results_total": results.len(), "results": results});
    if limit.is_some() {
        body["has_more"] = json!(has_more);
        if let (true, Some(last)) = (has_more, names.last()) {
            body["start_after"] = json!(last);
        }
    }
    Ok(json!({"body": body, "metadata": {}}))
}

/// How a bucket is described to callers, in the list and in kv-bucket-info.
pub fn summary(record: &BucketRecord, usage: Usage) -> Value {
    json!({
        "name": record.config.bucket,
        "description": record.config.description,
        "entry_total": usage.keys,
        "bytes": usage.bytes,
        "created": record.created_ms,
        "metadata": record.config.metadata,
        "config": record.config.to_json(),
    })
}
