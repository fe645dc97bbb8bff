//! kv-bucket-list: every bucket with its configuration and live usage, or a page of them; an
//! answer ends early (`has_more`, `start_after`) when the next bucket would take it past
//! `MAX_PAGE_BYTES`.

use crate::api::requests;
use crate::api::responses::{BucketListBody, BucketSummary, BucketsPage};
use crate::model::error::KvError;
use crate::model::limits::{encoded_len, PageBudget};
use crate::ops::state::Kv;
use crate::store::{BucketRecord, Usage};
use std::collections::BTreeMap;

pub async fn run(kv: &Kv, request: requests::BucketList) -> Result<BucketsPage, KvError> {
    let limit = request.limit;
    let mut records: Vec<BucketRecord> = Vec::new();
    let mut cursor = request.start_after;
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
    let names: Vec<String> = records
        .iter()
        .map(|record| record.config.bucket.clone())
        .collect();
    let usages = kv.store.usages(&names).await?;
    let mut results: Vec<BucketSummary> = records
        .into_iter()
        .map(|record| {
            let usage = usages.get(&record.config.bucket).copied();
            summary(record, usage.unwrap_or_default())
        })
        .collect();
    // In the scan's order, the one `start_after` continues, the buckets that fit one answer.
    let mut budget = PageBudget::default();
    let fitting = results
        .iter()
        .take_while(|summary| budget.take(encoded_len(summary)))
        .count()
        .max(1);
    let full = fitting < results.len();
    results.truncate(fitting);
    let has_more = has_more || full;
    let start_after = match (limit.is_some() || full, has_more) {
        (true, true) => results.last().map(|summary| summary.name.clone()),
        _ => None,
    };
    // A whole list, in one answer, is in name order.
    if !has_more {
        results.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(BucketsPage {
        body: BucketListBody {
            results_total: results.len(),
            results,
            has_more: (limit.is_some() || full).then_some(has_more),
            start_after,
        },
        metadata: BTreeMap::new(),
    })
}

/// How a bucket is described to callers, in the list and in kv-bucket-info.
pub fn summary(record: BucketRecord, usage: Usage) -> BucketSummary {
    BucketSummary {
        name: record.config.bucket.clone(),
        description: record.config.description.clone(),
        entry_total: usage.keys,
        bytes: usage.bytes,
        created: record.created_ms,
        metadata: record.config.metadata.clone(),
        config: record.config,
    }
}
