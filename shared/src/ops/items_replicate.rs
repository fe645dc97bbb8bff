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
//! - Mirrors and sources: each revision is copied into every bucket that mirrors or sources
//!   its bucket (`ops::copies`), and a target's backfill advances a slice at a time when its
//!   cursor moves on its usage item.
//! - Waiters: each flow waiting on a key (kv-key-watch) that a revision passes is resumed
//!   (`ops::waiters`), after the copies and events, so a resumed flow finds them made.
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
use crate::ops::copies::{backfill_slice, copy_into, Copy};
use crate::ops::state::Kv;
use crate::ops::waiters::{self, ChangedKey};
use crate::store::feeds::backfill_cursors;
use crate::store::items::{decode_head, get_u64, INCARNATION};
use crate::store::stream_images::{record_images, RecordImages};
use crate::store::BucketRecord;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

/// One revision committed to a head, as its stream record shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The record's position in the batch.
    pub index: usize,
    pub bucket: String,
    /// The bucket's `created` the head carries (absent only in hand-made events).
    pub incarnation: Option<u64>,
    pub key: String,
    pub revision: u64,
    pub op: Op,
    /// The value's text, for a PUT.
    pub value: Option<String>,
    pub created_ms: u64,
    pub expiry_ns: Option<u64>,
}

impl Committed {
    /// This revision as a copy for the buckets that mirror or source its bucket.
    fn copy(&self) -> Copy<'_> {
        Copy {
            origin: &self.bucket,
            key: &self.key,
            revision: self.revision,
            op: self.op,
            text: self.value.as_deref().unwrap_or(""),
            created_ms: self.created_ms,
            expiry_ns: self.expiry_ns,
        }
    }
}

/// The revision a stream record commits, if it commits one.
pub fn committed(index: usize, record: &Value) -> Result<Option<Committed>, KvError> {
    let Some(RecordImages { pk, old, new }) = record_images(record)
        .map_err(|what| KvError::param(format!("Stream record {index}: {what}")))?
    else {
        return Ok(None);
    };
    let Some((bucket, key)) = pk.split_once('/') else {
        return Ok(None);
    };
    let Some(new) = new else {
        return Ok(None);
    };
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
        incarnation: get_u64(&new, INCARNATION),
        key: key.to_string(),
        revision: latest.revision,
        op: latest.op,
        value,
        created_ms: latest.created_ms,
        expiry_ns: latest.expiry_ns,
    }))
}

/// A backfill cursor that moved (or was set) on a target's usage item: the next slice to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillStep {
    pub index: usize,
    pub target: String,
    pub incarnation: Option<u64>,
    pub origin: String,
    pub cursor: String,
}

/// The backfill slices a stream record asks for: a usage item whose cursors changed.
pub fn backfill_steps(index: usize, record: &Value) -> Vec<BackfillStep> {
    let Ok(Some(RecordImages {
        pk,
        old,
        new: Some(new),
    })) = record_images(record)
    else {
        return Vec::new();
    };
    if pk.contains('/') {
        return Vec::new();
    }
    let before = old.map(|old| backfill_cursors(&old)).unwrap_or_default();
    backfill_cursors(&new)
        .into_iter()
        .filter(|(origin, cursor)| before.get(origin) != Some(cursor))
        .map(|(origin, cursor)| BackfillStep {
            index,
            target: pk.to_string(),
            incarnation: get_u64(&new, INCARNATION),
            origin,
            cursor,
        })
        .collect()
}

/// The batch's bucket records and feeds, each read once.
#[derive(Default)]
struct Lookups {
    buckets: BTreeMap<String, Option<BucketRecord>>,
    feeds: BTreeMap<String, Vec<String>>,
}

impl Lookups {
    /// The bucket as it is now, if it is the incarnation that wrote the record.
    async fn live(
        &mut self,
        kv: &Kv,
        bucket: &str,
        incarnation: Option<u64>,
    ) -> Result<Option<BucketRecord>, KvError> {
        if !self.buckets.contains_key(bucket) {
            let record = kv
                .store
                .read_bucket(bucket)
                .await?
                .filter(|record| record.deleting_ms.is_none());
            self.buckets.insert(bucket.to_string(), record);
        }
        Ok(self
            .buckets
            .get(bucket)
            .cloned()
            .flatten()
            .filter(|record| incarnation.is_none_or(|wanted| record.created_ms == wanted)))
    }

    /// The live buckets that copy from `origin`.
    async fn targets(&mut self, kv: &Kv, origin: &str) -> Result<Vec<BucketRecord>, KvError> {
        if !self.feeds.contains_key(origin) {
            let feeds = kv.store.feeds(origin).await?;
            self.feeds.insert(origin.to_string(), feeds);
        }
        let names = self.feeds.get(origin).cloned().unwrap_or_default();
        let mut targets = Vec::new();
        for name in names {
            if let Some(target) = self.live(kv, &name, None).await? {
                // A bucket of that name created since, copying nothing from here, is skipped.
                if target.config.copies_from(origin).is_some() {
                    targets.push(target);
                }
            }
        }
        Ok(targets)
    }
}

pub async fn run(kv: &Kv, batch: StreamBatch, deadline: Instant) -> Result<Replicated, KvError> {
    let mut commits = Vec::new();
    let mut backfills = Vec::new();
    for (index, record) in batch.records.iter().enumerate() {
        match committed(index, record)? {
            Some(commit) => commits.push(commit),
            None => backfills.extend(backfill_steps(index, record)),
        }
    }
    let mut lookups = Lookups::default();
    let mut failed_at: Option<usize> = None;
    let fail = |failed_at: &mut Option<usize>, index: usize, why: &str| {
        tracing::warn!(record = index, error = %why, "stream record not replicated");
        *failed_at = Some(failed_at.map_or(index, |earlier: usize| earlier.min(index)));
    };
    // A mirror's last revision is its origin's: raised before the copies land, so that a
    // reader who sees the copies sees it too.
    let mut raised: BTreeMap<String, u64> = BTreeMap::new();
    for commit in &commits {
        if lookups
            .live(kv, &commit.bucket, commit.incarnation)
            .await?
            .is_none()
        {
            continue;
        }
        for target in lookups.targets(kv, &commit.bucket).await? {
            if target.config.mirror.is_some() {
                let top = raised.entry(target.config.bucket.clone()).or_default();
                *top = (*top).max(commit.revision);
            }
        }
    }
    for (bucket, revision) in raised {
        kv.store.raise_last_revision(&bucket, revision).await?;
    }
    // Copies in stream order; the first that fails stops the rest, since a later revision of
    // its key must not reach a mirror before it.
    let mut live_commits = Vec::new();
    for commit in &commits {
        let outcome = async {
            let Some(origin) = lookups.live(kv, &commit.bucket, commit.incarnation).await? else {
                return Ok(None);
            };
            for target in lookups.targets(kv, &commit.bucket).await? {
                copy_into(kv, &target, &commit.copy(), deadline).await?;
            }
            Ok::<_, KvError>(Some(origin))
        }
        .await;
        match outcome {
            Ok(Some(origin)) => live_commits.push((commit, origin.config)),
            Ok(None) => {}
            Err(error) => {
                fail(&mut failed_at, commit.index, &error.to_string());
                break;
            }
        }
    }
    let mut events: Vec<(usize, Event)> = Vec::new();
    for (commit, config) in &live_commits {
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
                Err(why) => fail(&mut failed_at, index, &why),
            }
        }
    }
    // Flows waiting on these keys, per bucket: one read of its waiters each.
    let mut changed: BTreeMap<(&str, u64), Vec<ChangedKey<'_>>> = BTreeMap::new();
    for (commit, _) in &live_commits {
        if failed_at.is_some_and(|failed| failed <= commit.index) {
            continue;
        }
        let Some(incarnation) = commit.incarnation.or_else(|| {
            lookups
                .buckets
                .get(&commit.bucket)
                .cloned()
                .flatten()
                .map(|record| record.created_ms)
        }) else {
            continue;
        };
        changed
            .entry((commit.bucket.as_str(), incarnation))
            .or_default()
            .push(ChangedKey {
                key: &commit.key,
                revision: commit.revision,
                op: commit.op,
                value: commit.value.as_deref(),
            });
    }
    let mut resumed = 0;
    for ((bucket, incarnation), changes) in changed {
        match waiters::wake(kv, bucket, incarnation, &changes, deadline).await {
            Ok(count) => resumed += count,
            Err(error) => {
                let first = live_commits
                    .iter()
                    .find(|(commit, _)| commit.bucket == bucket)
                    .map_or(0, |(commit, _)| commit.index);
                fail(&mut failed_at, first, &error.to_string());
            }
        }
    }
    // Backfill slices, bounded by the invocation's work budget; each hands on to the next
    // through the stream by moving its cursor.
    let budget = deadline.min(Instant::now() + kv.purge_budget);
    for step in backfills {
        if failed_at.is_some_and(|failed| failed <= step.index) {
            continue;
        }
        let outcome = async {
            let Some(target) = lookups.live(kv, &step.target, step.incarnation).await? else {
                return Ok(());
            };
            let next = backfill_slice(kv, &target, &step.origin, &step.cursor, budget).await?;
            kv.store
                .set_backfill(&step.target, &step.origin, next.as_deref())
                .await?;
            Ok::<_, KvError>(())
        }
        .await;
        if let Err(error) = outcome {
            fail(&mut failed_at, step.index, &error.to_string());
        }
    }
    Ok(Replicated {
        batch_item_failures: failed_at
            .map(|index| BatchItemFailure::of_record(batch.records.get(index)))
            .into_iter()
            .collect(),
        published,
        resumed,
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
