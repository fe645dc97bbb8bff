//! kv-key-list: the bucket's live keys in revision order, paged by `last_sequence`.

use crate::dynamo::items::decode_revision;
use crate::error::KvError;
use crate::handler::Kv;
use crate::params::Params;
use crate::subject::Filter;
use crate::time;
use serde_json::{json, Value};

pub async fn run(kv: &Kv, params: Params) -> Result<Value, KvError> {
    let bucket = params.bucket()?;
    let last_sequence = params
        .opt_int("last_sequence", 0, i64::MAX)?
        .unwrap_or(0)
        .unsigned_abs();
    let limit = params.opt_int("limit", 1, 1000)?.unwrap_or(100);
    let filter = params.opt_str("filter")?.map(Filter::parse).transpose()?;

    // One extra item tells whether another page exists, so has_more is exact.
    let page_size = i32::try_from(limit + 1).unwrap_or(1001);
    let (page, usage) = tokio::join!(
        kv.store.latest_page(bucket, last_sequence, page_size),
        kv.store.usage(bucket)
    );
    let usage = usage?.ok_or_else(|| KvError::BucketNotFound(bucket.to_string()))?;
    let (items, index_has_more) = page?;
    let limit = usize::try_from(limit).unwrap_or(100);
    let has_more = items.len() > limit || index_has_more;
    let now_ns = time::now_ns();
    let mut results = Vec::new();
    let mut cursor = last_sequence;
    for item in items.iter().take(limit) {
        let revision = decode_revision(bucket, item)?;
        cursor = revision.rev;
        let live = !time::is_expired(revision.expiry_ns, now_ns);
        let wanted = filter
            .as_ref()
            .is_none_or(|filter| filter.matches(&revision.key));
        if live && wanted {
            results.push(
                json!({"key": revision.key, "value": revision.text, "sequence": revision.rev}),
            );
        }
    }
    Ok(json!({
        "body": {
            "results_total": usage.keys,
            "results": results,
            "last_sequence": cursor,
            "has_more": has_more,
        },
        "metadata": {"Bucket": bucket},
    }))
}
