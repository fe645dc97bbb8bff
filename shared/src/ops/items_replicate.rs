//! kv-items-replicate, fed by the items table's stream beside kv-items-stream: carries each
//! committed revision where its bucket's configuration sends it.
//!
//! - Republish: a revision whose key matches the bucket's `republish.src` becomes an
//!   EventBridge event (`source` `kv.republish`, `detail-type` the key's subject mapped into
//!   `republish.dest`), its value in `detail` unless `headers_only` or too large for an event.
//! - Order and delivery: a key's revisions reach the stream in revision order, and a batch's
//!   events are put in that order. A record whose event was not put for a reason a retry can
//!   cure is reported as the batch's first failure (partial batch response): it and the
//!   records after it come again, so an event is put at least once, and some may be put twice.
//!   A record that can never be processed (a copy its target refuses, an event EventBridge
//!   refuses, an unreadable record) is set aside (`ops::set_aside`) and skipped. `detail` carries the bucket, key
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
use crate::api::function::Function;
use crate::api::requests::StreamBatch;
use crate::api::responses::{BatchItemFailure, Replicated};
use crate::bus::{Event, Refusal, MAX_ENTRY_BYTES};
use crate::model::config::BucketConfig;
use crate::model::error::KvError;
use crate::model::revision::Op;
use crate::model::subject_map::RepublishMap;
use crate::ops::copies::{backfill_slice, copy_into, Copy};
use crate::ops::set_aside::{Failures, Skipped};
use crate::ops::state::Kv;
use crate::ops::waiters::{self, ChangedKey};
use crate::store::feeds::{backfill_cursors, Activity};
use crate::store::items::{decode_head, get_u64, INCARNATION};
use crate::store::stream_images::{record_images, RecordImages};
use crate::store::BucketRecord;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Instant;

const FUNCTION: Function = Function::ItemsReplicate;
/// The target named in a set-aside record of an event the bus refused.
const EVENT_TARGET: &str = "eventbridge";
/// The target named in a set-aside record of a bucket's waiters that could not be resumed.
const WAITERS_TARGET: &str = "waiters";

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
    /// This revision, skipped on its way to `target`.
    fn skipped<'a>(&'a self, target: &'a str) -> Skipped<'a> {
        Skipped {
            bucket: &self.bucket,
            key: &self.key,
            revision: Some(self.revision),
            target,
        }
    }

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

/// What the batch knows of each bucket it meets, each read once: its `Activity` (incarnation,
/// feeds, waiters) from its usage item, and its configuration, from the container's cache when
/// it has that incarnation's (a bucket's configuration never changes). A bucket with no feeds,
/// no republish and no waiters costs the batch that one read.
#[derive(Default)]
struct Lookups {
    activity: BTreeMap<String, Option<Activity>>,
}

impl Lookups {
    async fn activity(&mut self, kv: &Kv, bucket: &str) -> Result<Option<Activity>, KvError> {
        if !self.activity.contains_key(bucket) {
            let activity = kv.store.activity(bucket).await?;
            self.activity.insert(bucket.to_string(), activity);
        }
        Ok(self.activity.get(bucket).cloned().flatten())
    }

    /// The bucket as it is now, if it exists and is the incarnation that wrote the record.
    async fn live(
        &mut self,
        kv: &Kv,
        bucket: &str,
        incarnation: Option<u64>,
    ) -> Result<Option<BucketRecord>, KvError> {
        let Some(activity) = self.activity(kv, bucket).await? else {
            return Ok(None);
        };
        if incarnation.is_some_and(|wanted| wanted != activity.incarnation) {
            return Ok(None);
        }
        let config = match kv.bucket_configs.get(bucket, activity.incarnation) {
            Some(config) => config,
            None => {
                let Some(record) = kv
                    .store
                    .read_bucket(bucket)
                    .await?
                    .filter(|record| record.deleting_ms.is_none())
                    .filter(|record| record.created_ms == activity.incarnation)
                else {
                    return Ok(None);
                };
                let config = std::sync::Arc::new(record.config);
                kv.bucket_configs
                    .remember(bucket, activity.incarnation, config.clone());
                config
            }
        };
        Ok(Some(BucketRecord {
            config: (*config).clone(),
            created_ms: activity.incarnation,
            last_revision: 0,
            deleting_ms: None,
            last_allocated_ms: None,
        }))
    }

    /// The live buckets that copy from `origin`.
    async fn targets(&mut self, kv: &Kv, origin: &str) -> Result<Vec<BucketRecord>, KvError> {
        let names = self
            .activity(kv, origin)
            .await?
            .map(|activity| activity.feeds)
            .unwrap_or_default();
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

    /// Whether any flow may be waiting on `bucket`'s keys. Read after the batch's records were
    /// committed: a waiter counted later checks the key itself once it is written, and finds
    /// those revisions.
    fn may_have_waiters(&self, bucket: &str) -> bool {
        self.activity
            .get(bucket)
            .is_none_or(|activity| activity.as_ref().is_none_or(|found| found.waiting > 0))
    }
}

pub async fn run(kv: &Kv, batch: StreamBatch, deadline: Instant) -> Result<Replicated, KvError> {
    let records = &batch.records;
    super::count_batch(records);
    let mut failures = Failures::default();
    let mut commits = Vec::new();
    let mut backfills = Vec::new();
    for (index, record) in records.iter().enumerate() {
        match committed(index, record) {
            Ok(Some(commit)) => commits.push(commit),
            Ok(None) => backfills.extend(backfill_steps(index, record)),
            Err(error) => {
                failures
                    .refused(kv, FUNCTION, (index, record), Skipped::UNREADABLE, &error)
                    .await;
            }
        }
    }
    let mut lookups = Lookups::default();
    // A mirror's last revision is its origin's: raised before the copies land, so that a
    // reader who sees the copies sees it too. A lookup that fails here fails again below,
    // where the record is retried or set aside.
    let mut raised: BTreeMap<String, u64> = BTreeMap::new();
    for commit in &commits {
        let Ok(Some(_)) = lookups.live(kv, &commit.bucket, commit.incarnation).await else {
            continue;
        };
        let Ok(targets) = lookups.targets(kv, &commit.bucket).await else {
            continue;
        };
        for target in targets
            .iter()
            .filter(|target| target.config.mirror.is_some())
        {
            let top = raised.entry(target.config.bucket.clone()).or_default();
            *top = (*top).max(commit.revision);
        }
    }
    for (bucket, revision) in raised {
        kv.store.raise_last_revision(&bucket, revision).await?;
    }
    // Copies in stream order. The first a retry can cure stops the rest, since a later
    // revision of its key must not reach a mirror before it; one a target refuses for good is
    // set aside, and the others go on.
    let mut live_commits = Vec::new();
    for commit in &commits {
        let record = (commit.index, &records[commit.index]);
        let looked_up = async {
            let Some(origin) = lookups.live(kv, &commit.bucket, commit.incarnation).await? else {
                return Ok(None);
            };
            let targets = lookups.targets(kv, &commit.bucket).await?;
            Ok::<_, KvError>(Some((origin, targets)))
        }
        .await;
        let (origin, targets) = match looked_up {
            Ok(Some(found)) => found,
            Ok(None) => continue,
            Err(error) => {
                failures
                    .refused(kv, FUNCTION, record, commit.skipped(""), &error)
                    .await;
                if failures.retried(commit.index) {
                    break;
                }
                continue;
            }
        };
        for target in &targets {
            if let Err(error) = copy_into(kv, target, &commit.copy(), deadline).await {
                let skipped = Skipped {
                    target: &target.config.bucket,
                    ..commit.skipped("")
                };
                failures
                    .refused(kv, FUNCTION, record, skipped, &error)
                    .await;
                if failures.retried(commit.index) {
                    break;
                }
            }
        }
        if failures.retried(commit.index) {
            break;
        }
        live_commits.push((commit, origin.config));
    }
    let mut events: Vec<(&Committed, Event)> = Vec::new();
    for (commit, config) in &live_commits {
        match republished(config, commit) {
            Ok(Some(event)) => events.push((commit, event)),
            Ok(None) => {}
            Err(error) => {
                let record = (commit.index, &records[commit.index]);
                failures
                    .refused(kv, FUNCTION, record, commit.skipped(EVENT_TARGET), &error)
                    .await;
            }
        }
    }
    let mut published = 0;
    if !events.is_empty() {
        let bus = kv.bus.as_ref().ok_or_else(|| {
            KvError::Internal("kv-items-replicate has no EventBridge client".to_string())
        })?;
        let (commits_of_events, events): (Vec<&Committed>, Vec<Event>) = events.into_iter().unzip();
        for (commit, outcome) in commits_of_events
            .into_iter()
            .zip(bus.publish(&events).await)
        {
            let error = match outcome {
                Ok(()) => {
                    published += 1;
                    crate::model::metrics::add(|counts| &counts.events_put, 1);
                    continue;
                }
                Err(Refusal::Retry(why)) => KvError::Unavailable(why),
                Err(Refusal::Never(why)) => KvError::InvalidParameter(why),
            };
            let record = (commit.index, &records[commit.index]);
            failures
                .refused(kv, FUNCTION, record, commit.skipped(EVENT_TARGET), &error)
                .await;
        }
    }
    // Flows waiting on these keys, per bucket: one read of its waiters each.
    let mut changed: BTreeMap<(&str, u64), Vec<(&Committed, ChangedKey<'_>)>> = BTreeMap::new();
    for (commit, _) in &live_commits {
        if failures.retried(commit.index) {
            continue;
        }
        let Some(incarnation) = commit.incarnation.or_else(|| {
            lookups
                .activity
                .get(&commit.bucket)
                .cloned()
                .flatten()
                .map(|activity| activity.incarnation)
        }) else {
            continue;
        };
        if !lookups.may_have_waiters(&commit.bucket) {
            continue;
        }
        changed
            .entry((commit.bucket.as_str(), incarnation))
            .or_default()
            .push((
                commit,
                ChangedKey {
                    key: &commit.key,
                    revision: commit.revision,
                    op: commit.op,
                    value: commit.value.as_deref(),
                },
            ));
    }
    let mut resumed = 0;
    for ((bucket, incarnation), changes) in changed {
        let keys: Vec<ChangedKey<'_>> = changes.iter().map(|(_, change)| *change).collect();
        match waiters::wake(kv, bucket, incarnation, &keys, deadline).await {
            Ok(count) => resumed += count,
            Err(error) => {
                if let Some((first, _)) = changes.first() {
                    let record = (first.index, &records[first.index]);
                    failures
                        .refused(kv, FUNCTION, record, first.skipped(WAITERS_TARGET), &error)
                        .await;
                }
            }
        }
    }
    // Backfill slices, bounded by the invocation's work budget; each hands on to the next
    // through the stream by moving its cursor.
    let budget = deadline.min(Instant::now() + kv.purge_budget);
    for step in backfills {
        if failures.retried(step.index) {
            continue;
        }
        let record = (step.index, &records[step.index]);
        let mut refused = Vec::new();
        let outcome = async {
            let Some(target) = lookups.live(kv, &step.target, step.incarnation).await? else {
                return Ok(());
            };
            let next = backfill_slice(
                kv,
                &target,
                &step.origin,
                &step.cursor,
                budget,
                &mut refused,
            )
            .await?;
            kv.store
                .set_backfill(&step.target, &step.origin, next.as_deref())
                .await?;
            Ok::<_, KvError>(())
        }
        .await;
        for (key, revision, error) in &refused {
            let skipped = Skipped {
                bucket: &step.origin,
                key,
                revision: Some(*revision),
                target: &step.target,
            };
            failures.refused(kv, FUNCTION, record, skipped, error).await;
        }
        if let Err(error) = outcome {
            let skipped = Skipped {
                bucket: &step.origin,
                key: &step.cursor,
                revision: None,
                target: &step.target,
            };
            failures
                .refused(kv, FUNCTION, record, skipped, &error)
                .await;
        }
    }
    Ok(Replicated {
        batch_item_failures: failures
            .first_retry
            .map(|index| BatchItemFailure::of_record(records.get(index)))
            .into_iter()
            .collect(),
        published,
        resumed,
        set_aside: failures.set_aside,
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
