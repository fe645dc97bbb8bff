//! kv-key-list: the bucket's live keys in revision order, paged by `last_sequence`; a page
//! ends early when the next key would take the answer past `MAX_PAGE_BYTES`.

use crate::api::requests;
use crate::api::responses::{BucketMetadata, KeyListBody, KeysPage, ListedKey};
use crate::model::error::KvError;
use crate::model::limits::{encoded_len, PageBudget};
use crate::model::time;
use crate::ops::state::Kv;
use crate::store::items::{self, get_str, get_u64, Item};

pub async fn run(kv: &Kv, request: requests::KeyList) -> Result<KeysPage, KvError> {
    let requests::KeyList {
        bucket,
        last_sequence,
        limit,
        filter,
    } = request;
    let bucket = bucket.as_str();

    // One extra item tells whether another page exists, so has_more is exact.
    let page_size = i32::try_from(limit + 1).unwrap_or(1001);
    let (page, usage) = tokio::join!(
        kv.store.latest_page(bucket, last_sequence, page_size),
        kv.store.usage(bucket)
    );
    let usage = usage?.ok_or_else(|| KvError::BucketNotFound(bucket.to_string()))?;
    let (items, index_has_more) = page?;
    let limit = usize::try_from(limit).unwrap_or(100);
    let mut has_more = items.len() > limit || index_has_more;
    let now_ns = time::now_ns();
    let page: Vec<&Item> = items.iter().take(limit).collect();
    // Index entries carry small values; larger ones are read from their heads, all at once.
    let large: Vec<String> = page
        .iter()
        .filter(|entry| !entry.contains_key(items::LIST_VALUE))
        .filter_map(|entry| get_str(entry, items::PK).map(str::to_string))
        .collect();
    let heads = match large.is_empty() {
        true => Default::default(),
        false => kv.store.head_values(&large).await?,
    };
    let mut results = Vec::new();
    let mut cursor = last_sequence;
    let mut budget = PageBudget::default();
    for entry in page {
        let pk = get_str(entry, items::PK).unwrap_or_default();
        let key = items::key_from_pk(bucket, pk)
            .ok_or_else(|| KvError::Internal(format!("Index entry of another bucket: {pk}")))?;
        let revision = get_u64(entry, items::HEAD_REVISION).unwrap_or(0);
        let live = !time::is_expired(get_u64(entry, items::EXPIRY_NS), now_ns);
        let wanted = filter.as_ref().is_none_or(|filter| filter.matches(key));
        if !(live && wanted) {
            cursor = revision;
            continue;
        }
        let text = match entry.get(items::LIST_VALUE) {
            Some(value) => list_text(value, entry)?,
            // A head replaced since the index was read shows its newer value, still the key's;
            // one deleted or expired since has none to list.
            None => match heads.get(pk).and_then(|head| live_value(head, now_ns)) {
                Some((value, head)) => list_text(value, head)?,
                None => {
                    cursor = revision;
                    continue;
                }
            },
        };
        let mut listed = ListedKey {
            key: key.to_string(),
            value: Some(text),
            sequence: revision,
            too_large: false,
        };
        let mut size = encoded_len(&listed);
        if !PageBudget::fits_alone(size) {
            listed.value = None;
            listed.too_large = true;
            size = encoded_len(&listed);
        }
        if !budget.take(size) {
            // The answer is full: the next page starts at this key.
            has_more = true;
            break;
        }
        cursor = revision;
        results.push(listed);
    }
    Ok(KeysPage {
        body: KeyListBody {
            results_total: usage.keys,
            results,
            last_sequence: cursor,
            has_more,
        },
        metadata: BucketMetadata {
            bucket: bucket.to_string(),
        },
    })
}

/// A head's value, if the head still holds a live one.
fn live_value(
    head: &Item,
    now_ns: u64,
) -> Option<(&aws_sdk_dynamodb::types::AttributeValue, &Item)> {
    if head.contains_key(items::OP) || time::is_expired(get_u64(head, items::EXPIRY_NS), now_ns) {
        return None;
    }
    head.get(items::VALUE).map(|value| (value, head))
}

fn list_text(
    value: &aws_sdk_dynamodb::types::AttributeValue,
    item: &Item,
) -> Result<String, KvError> {
    let bytes = value.as_b().map(|blob| blob.as_ref()).unwrap_or_default();
    let compressed = item
        .get(items::COMPRESSED)
        .and_then(|flag| flag.as_bool().ok())
        .copied()
        .unwrap_or(false);
    crate::model::codec::decode(bytes, compressed)
}
