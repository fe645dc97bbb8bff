//! kv-items-replicate, fed by the items table's stream beside kv-items-stream: carries each
//! committed revision where its bucket's configuration sends it.
//!
//! - Republish: a revision whose key matches the bucket's `republish.src` becomes an
//!   EventBridge event (`source` `kv.republish`, `detail-type` the key's subject mapped into
//!   `republish.dest`), its value in `detail` unless `headers_only` or too large for an event.
//! - Order and delivery: a key's revisions reach the stream in revision order, and a batch's
//!   events are put in that order. A record whose event was not put is reported as the batch's
//!   first failure (partial batch response): it and the records after it come again, so an
//!   event is put at least once, and some may be put twice. `detail` carries the bucket, key
//!   and revision, which identify an event for a consumer that must see each once.
//! - A revision is read from the head's new image: a new latest revision (value, delete or
//!   purge marker), or the expiry sweeper marking the latest value EXPIRED. Archived
//!   revisions, usage items and heads removed with their bucket are not revisions.

use crate::api::events::RepublishedRevision;
use crate::api::requests::StreamBatch;
use crate::api::responses::{BatchItemFailure, Replicated};
use crate::bus::{Event, MAX_ENTRY_BYTES};
use crate::model::config::BucketConfig;
use crate::model::error::KvError;
use crate::model::revision::Op;
use crate::model::subject_map::RepublishMap;
use crate::ops::state::Kv;
use crate::store::items::{decode_head, get_str, get_u64, INCARNATION, PK, REVISION};
use crate::store::stream_images::image;
use serde_json::Value;
use std::collections::BTreeMap;

/// One revision committed to a head, as its stream record shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The record's position in the batch.
    pub index: usize,
    pub bucket: String,
    pub incarnation: u64,
    pub key: String,
    pub revision: u64,
    pub op: Op,
    /// The value's text, for a PUT.
    pub value: Option<String>,
    pub created_ms: u64,
}

/// The revision a stream record commits, if it commits one.
pub fn committed(index: usize, record: &Value) -> Result<Option<Committed>, KvError> {
    let malformed = |what: &str| KvError::param(format!("Stream record {index}: {what}"));
    let stream = record
        .get("dynamodb")
        .ok_or_else(|| malformed("no 'dynamodb' field"))?;
    let keys = image(stream.get("Keys")).ok_or_else(|| malformed("no 'Keys'"))?;
    let (Some(pk), Some(0)) = (get_str(&keys, PK), get_u64(&keys, REVISION)) else {
        return Ok(None);
    };
    let Some((bucket, key)) = pk.split_once('/') else {
        return Ok(None);
    };
    let Some(new) = image(stream.get("NewImage")) else {
        return Ok(None);
    };
    let old = image(stream.get("OldImage"));
    let corrupt = |error: crate::store::errors::StoreError| KvError::Internal(error.to_string());
    let new_head = decode_head(Some(&new)).map_err(corrupt)?;
    let old_head = decode_head(old.as_ref()).map_err(corrupt)?;
    let Some(latest) = new_head.latest else {
        return Ok(None);
    };
    let newer = old_head
        .latest_revision
        .is_none_or(|old| old < latest.revision);
    let expired_now = latest.op == Op::Expired
        && old_head
            .latest
            .as_ref()
            .is_some_and(|old| old.op != Op::Expired);
    if !(newer || expired_now) {
        return Ok(None);
    }
    let value = match latest.op {
        Op::Put => Some(
            latest
                .decode(key)
                .map(|revision| revision.text)
                .map_err(|error| KvError::Internal(error.to_string()))?,
        ),
        Op::Del | Op::Purge | Op::Expired => None,
    };
    Ok(Some(Committed {
        index,
        bucket: bucket.to_string(),
        incarnation: get_u64(&new, INCARNATION).unwrap_or(0),
        key: key.to_string(),
        revision: latest.revision,
        op: latest.op,
        value,
        created_ms: latest.created_ms,
    }))
}

pub async fn run(kv: &Kv, batch: StreamBatch) -> Result<Replicated, KvError> {
    let mut commits = Vec::new();
    for (index, record) in batch.records.iter().enumerate() {
        if let Some(commit) = committed(index, record)? {
            commits.push(commit);
        }
    }
    // Each bucket's configuration once per batch: it decides where the revisions go, and a
    // bucket deleted (or deleted and created again) since a revision was written sends nothing.
    let mut configs: BTreeMap<(String, u64), Option<BucketConfig>> = BTreeMap::new();
    let mut failed_at: Option<usize> = None;
    let mut fail = |index: usize, why: &str| {
        tracing::warn!(record = index, error = %why, "stream record not replicated");
        failed_at = Some(failed_at.map_or(index, |earlier| earlier.min(index)));
    };
    for commit in &commits {
        let wanted = (commit.bucket.clone(), commit.incarnation);
        if configs.contains_key(&wanted) {
            continue;
        }
        match kv.store.read_bucket(&commit.bucket).await {
            Ok(record) => {
                let config = record
                    .filter(|record| {
                        record.deleting_ms.is_none() && record.created_ms == commit.incarnation
                    })
                    .map(|record| record.config);
                configs.insert(wanted, config);
            }
            Err(error) => fail(commit.index, &error.to_string()),
        }
    }
    let mut events: Vec<(usize, Event)> = Vec::new();
    for commit in &commits {
        let Some(Some(config)) = configs.get(&(commit.bucket.clone(), commit.incarnation)) else {
            continue;
        };
        if let Some(event) = republished(config, commit)? {
            events.push((commit.index, event));
        }
    }
    let mut published = 0;
    if !events.is_empty() {
        let bus = kv.bus.as_ref().ok_or_else(|| {
            KvError::Internal("kv-items-replicate has no EventBridge client".to_string())
        })?;
        let (indexes, events): (Vec<usize>, Vec<Event>) = events.into_iter().unzip();
        for (index, outcome) in indexes.into_iter().zip(bus.publish(&events).await) {
            match outcome {
                Ok(()) => published += 1,
                Err(why) => fail(index, &why),
            }
        }
    }
    Ok(Replicated {
        batch_item_failures: failed_at
            .map(|index| BatchItemFailure::of_record(batch.records.get(index)))
            .into_iter()
            .collect(),
        published,
    })
}

/// The event a revision becomes under the bucket's `republish`, if its key matches.
fn republished(config: &BucketConfig, commit: &Committed) -> Result<Option<Event>, KvError> {
    let Some(republish) = &config.republish else {
        return Ok(None);
    };
    let map = RepublishMap::new(&config.bucket, &republish.src, &republish.dest)
        .map_err(|why| KvError::Internal(format!("Stored republish is invalid: {why}")))?;
    let Some(subject) = map.map(&commit.key) else {
        return Ok(None);
    };
    let mut detail = RepublishedRevision {
        bucket: commit.bucket.clone(),
        key: commit.key.clone(),
        revision: commit.revision,
        operation: commit.op.as_str(),
        created: commit.created_ms,
        size: commit.value.as_ref().map_or(0, String::len),
        headers_only: republish.headers_only,
        too_large: false,
        value: (!republish.headers_only)
            .then(|| commit.value.clone())
            .flatten(),
    };
    let encode = |detail: &RepublishedRevision| {
        serde_json::to_string(detail)
            .map_err(|error| KvError::Internal(format!("Could not encode an event: {error}")))
    };
    let mut event = Event {
        detail_type: subject,
        detail: encode(&detail)?,
    };
    if event.size() > MAX_ENTRY_BYTES {
        detail.value = None;
        detail.headers_only = true;
        detail.too_large = true;
        event.detail = encode(&detail)?;
    }
    Ok(Some(event))
}
