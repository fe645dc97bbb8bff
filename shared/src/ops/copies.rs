//! Copying revisions into the buckets that mirror or source their bucket, as NATS does:
//!
//! - A mirror keeps its origin's revision numbers, as a NATS mirror keeps its origin's stream
//!   sequence. A head never takes a revision at or below its own, so a copy delivered again,
//!   or one that arrives after a later one, changes nothing: copies apply once, in revision
//!   order per key. Its history, deletes and purges follow the origin's; expiries follow from
//!   the copied expiry times (the mirror's own sweeper). A mirror is read-only to callers.
//! - A source target gives each arriving revision a revision of its own (its own writes go on
//!   beside them). Its head remembers the last revision of each source copied to the key, so
//!   a copy delivered again is not written twice.
//! - Which revisions, under which keys: `filter_subject`, `opt_start_seq`, `opt_start_time`
//!   (epoch ms) and `subject_transforms` of the mirror or source (`model::subject_map`).
//! - Revisions the origin held before the target was created are copied by a backfill that
//!   pages through the origin's keys, a slice per invocation: each slice moves the target's
//!   backfill cursor, and that change reaches the items table's stream, which invokes the next
//!   slice, as bucket deletion hands its purge on.

use super::write::{plan, write, WriteRequest};
use crate::model::codec;
use crate::model::config::StreamSource;
use crate::model::error::KvError;
use crate::model::revision::{HeadEntry, Op, Stored};
use crate::model::subject_map;
use crate::model::time;
use crate::ops::state::Kv;
use crate::store::items::{key_from_pk, COMMIT_WINDOW_MS};
use crate::store::{BucketRecord, CommitError, HeadCondition, HeadWrite};
use std::time::Instant;

/// How many times a mirror's copy re-reads a head that changed under it before it leaves the
/// revision to the stream's retry.
const MIRROR_ATTEMPTS: usize = 8;

/// One revision of an origin bucket to copy.
#[derive(Debug, Clone)]
pub struct Copy<'a> {
    pub origin: &'a str,
    pub key: &'a str,
    pub revision: u64,
    pub op: Op,
    /// The value's text (empty for markers).
    pub text: &'a str,
    pub created_ms: u64,
    pub expiry_ns: Option<u64>,
}

/// The key a revision of the origin takes in a bucket copying it through `source`, or None
/// when the source's start or filter leaves it out.
pub fn route(source: &StreamSource, copy: &Copy<'_>) -> Option<String> {
    let start_seq = source.opt_start_seq.unwrap_or(0).unsigned_abs();
    let start_ms = source.opt_start_time.unwrap_or(0).unsigned_abs();
    if copy.revision < start_seq || copy.created_ms < start_ms {
        return None;
    }
    // Checked when the bucket was created; a stored one that no longer parses copies nothing.
    subject_map::SourceMap::new(
        copy.origin,
        source.filter_subject.as_deref(),
        &source.subject_transforms,
    )
    .ok()?
    .map(copy.key)
}

/// Copies one revision into `target`, which mirrors or sources its origin. A target deleted
/// (or deleted and re-created) since it was read takes nothing: its copies end with it.
pub async fn copy_into(
    kv: &Kv,
    target: &BucketRecord,
    copy: &Copy<'_>,
    deadline: Instant,
) -> Result<(), KvError> {
    match copy_into_live(kv, target, copy, deadline).await {
        Err(KvError::BucketNotFound(_)) => Ok(()),
        copied => copied,
    }
}

async fn copy_into_live(
    kv: &Kv,
    target: &BucketRecord,
    copy: &Copy<'_>,
    deadline: Instant,
) -> Result<(), KvError> {
    let Some(source) = target.config.copies_from(copy.origin) else {
        return Ok(());
    };
    // An expiry is not a revision in NATS: the copy expires by its own copied expiry time.
    if copy.op == Op::Expired {
        return Ok(());
    }
    let Some(key) = route(source, copy) else {
        return Ok(());
    };
    if target.config.mirror.is_some() {
        return mirror(kv, target, &key, copy).await;
    }
    // A copy this key already holds (a batch delivered again, or the backfill meeting the
    // stream) is recognised before a revision is handed out for it, so the target's sequence
    // does not move either; the write's condition still guards a race with another copier.
    let head = kv
        .store
        .read_head(&target.config.bucket, &key, true)
        .await?;
    if head
        .sources
        .get(copy.origin)
        .is_some_and(|held| *held >= copy.revision)
    {
        return Ok(());
    }
    let ttl_ns = copy.expiry_ns.map(|expiry| {
        // What is left of the origin's expiry; a copy already expired lives a nanosecond.
        i64::try_from(expiry.saturating_sub(time::now_ns()).max(1)).unwrap_or(i64::MAX)
    });
    write(
        kv,
        WriteRequest {
            bucket: &target.config.bucket,
            key: &key,
            op: copy.op,
            text: copy.text,
            expected: None,
            ttl_ns,
            deadline,
            source: Some((copy.origin, copy.revision)),
            increment: None,
            idempotency: None,
            incarnation: Some(target.created_ms),
        },
    )
    .await
    .map(|_| ())
}

/// How long a container sends a mirror's copies in a window it opened: half the window, so
/// every copy is sent well before the window closes.
const WINDOW_REUSE_MS: u64 = COMMIT_WINDOW_MS / 2;

/// How many mirrors' windows a container remembers.
const WINDOWS_MAX: usize = 10_000;

/// Per container: the commit window last opened on each mirror (its incarnation, when), so a
/// batch or a backfill slice of many copies opens one, not one per copy.
#[derive(Default)]
pub struct CommitWindows {
    opened: std::sync::Mutex<std::collections::HashMap<String, (u64, u64)>>,
}

/// A commit window on `target`: one this container opened within `WINDOW_REUSE_MS`, or a new
/// one. A window opened before a delete bounds its copies as well as a new one would.
async fn commit_window(kv: &Kv, target: &BucketRecord) -> Result<Option<u64>, KvError> {
    let bucket = &target.config.bucket;
    let now_ms = time::ns_to_ms(time::now_ns());
    let reusable = kv.commit_windows.opened.lock().ok().and_then(|opened| {
        opened
            .get(bucket)
            .filter(|(incarnation, at_ms)| {
                *incarnation == target.created_ms && now_ms.saturating_sub(*at_ms) < WINDOW_REUSE_MS
            })
            .map(|(_, at_ms)| *at_ms)
    });
    if reusable.is_some() {
        return Ok(reusable);
    }
    let opened_ms = kv
        .store
        .open_commit_window(bucket, target.created_ms)
        .await?;
    if let (Some(at_ms), Ok(mut opened)) = (opened_ms, kv.commit_windows.opened.lock()) {
        if opened.len() >= WINDOWS_MAX {
            opened.clear();
        }
        opened.insert(bucket.clone(), (target.created_ms, at_ms));
    }
    Ok(opened_ms)
}

/// Writes the origin's revision, under its own number, as the mirror's latest for `key`.
async fn mirror(kv: &Kv, target: &BucketRecord, key: &str, copy: &Copy<'_>) -> Result<(), KvError> {
    let bucket = &target.config.bucket;
    let history = usize::try_from(target.config.history).unwrap_or(1);
    let (bytes, compressed) = codec::encode(copy.text, target.config.compression);
    let latest = Stored {
        revision: copy.revision,
        bytes,
        compressed,
        created_ms: copy.created_ms,
        expiry_ns: copy.expiry_ns,
        op: copy.op,
        memory: target.config.storage == crate::model::config::Storage::Memory,
    };
    let new = HeadEntry {
        revision: copy.revision,
        size: copy.text.len() as u64,
        expiry_ns: copy.expiry_ns,
        op: copy.op,
    };
    for _ in 0..MIRROR_ATTEMPTS {
        let head = kv.store.read_head(bucket, key, true).await?;
        if head.shows(copy.revision) {
            return Ok(());
        }
        // A mirror's copy takes no revision, so it opens a commit window of its own: a delete
        // of the mirror waits it out before purging, and a mirror deleted (or re-created) since
        // the batch read it gets nothing.
        let Some(opened_ms) = commit_window(kv, target).await? else {
            return Err(KvError::BucketNotFound(bucket.clone()));
        };
        if head.current_revision() > copy.revision {
            // Later revisions arrived first (the backfill meets the stream): this one joins
            // the history where it belongs, if the history still keeps it.
            let Some(entries) = with_older(&head.entries, new, history) else {
                return Ok(());
            };
            kv.store.archive(bucket, key, &latest).await?;
            if kv
                .store
                .set_head_entries(bucket, key, head.current_revision(), &entries)
                .await?
            {
                return Ok(());
            }
            continue;
        }
        let now_ns = time::now_ns();
        let planned = plan(&head, new, history, now_ns);
        if let Some(previous) = head.latest.as_ref().filter(|previous| {
            planned
                .entries
                .iter()
                .any(|kept| kept.revision == previous.revision)
        }) {
            kv.store.archive(bucket, key, previous).await?;
        }
        let write = HeadWrite {
            bucket,
            key,
            incarnation: target.created_ms,
            allocated_ms: opened_ms,
            latest: &latest,
            entries: &planned.entries,
            exact_counts: false,
            condition: head
                .latest_revision
                .map_or(HeadCondition::Absent, HeadCondition::At),
            source: None,
        };
        match kv.store.put_head(&write).await {
            Ok(()) => return Ok(()),
            Err(CommitError::HeadChanged(_)) => continue,
            Err(
                CommitError::Contention(error)
                | CommitError::OutcomeUnknown(error)
                | CommitError::Failed(error),
            ) => return Err(error.into()),
            Err(CommitError::WindowClosed) => continue,
            Err(CommitError::BucketFull { .. } | CommitError::BucketGone) => {
                return Err(KvError::BucketNotFound(bucket.clone()))
            }
            // A mirror's head write carries no idempotency claim.
            Err(CommitError::Claimed(_)) => {
                return Err(KvError::Internal(
                    "A mirror's copy met an idempotency claim it did not make".to_string(),
                ))
            }
        }
    }
    Err(KvError::Unavailable(format!(
        "Mirroring revision {} of '{}' into '{bucket}': the key kept changing",
        copy.revision, copy.key
    )))
}

/// The retained list with an older revision in its place, or None when the list would not
/// keep it: a purge after it dropped it, or `history` later revisions push it out.
fn with_older(entries: &[HeadEntry], older: HeadEntry, history: usize) -> Option<Vec<HeadEntry>> {
    let later: Vec<&HeadEntry> = entries
        .iter()
        .filter(|entry| entry.revision > older.revision)
        .collect();
    if later.len() >= history.max(1) || later.iter().any(|entry| entry.op == Op::Purge) {
        return None;
    }
    let mut kept: Vec<HeadEntry> = entries.to_vec();
    kept.push(older);
    kept.sort_by_key(|entry| entry.revision);
    let excess = kept.len().saturating_sub(history.max(1));
    Some(kept.split_off(excess))
}

/// One slice of `target`'s backfill from `origin`, from after the key `cursor` (empty: the
/// first) until the origin's keys run out or the deadline nears; returns where the next slice
/// starts (None: done). A revision the target refuses for good (a retry cannot cure it) is
/// added to `refused` as (key, revision, why) and skipped, so one key never stops a backfill.
pub async fn backfill_slice(
    kv: &Kv,
    target: &BucketRecord,
    origin: &str,
    cursor: &str,
    deadline: Instant,
    refused: &mut Vec<(String, u64, KvError)>,
) -> Result<Option<String>, KvError> {
    let origin_record = kv.store.read_bucket(origin).await?;
    if origin_record.is_none_or(|record| record.deleting_ms.is_some()) {
        return Ok(None);
    }
    let mut after = (!cursor.is_empty()).then(|| cursor.to_string());
    let mut copied_keys = 0;
    let mut raised = 0;
    loop {
        let (pks, next) = kv.store.key_partitions(origin, after.clone()).await?;
        for pk in &pks {
            // At least one key per slice, so that every slice moves the cursor: an unchanged
            // cursor would not reach the stream, and the backfill would stop.
            if copied_keys > 0 && Instant::now() >= deadline {
                return Ok(Some(after.unwrap_or_default()));
            }
            copied_keys += 1;
            let Some(key) = key_from_pk(origin, pk) else {
                continue;
            };
            let (_, retained) = kv.store.history(origin, key).await?;
            // A mirror's last revision is its origin's, raised before the copies show.
            let newest = retained.iter().map(|stored| stored.revision).max();
            if let Some(newest) = newest.filter(|newest| *newest > raised) {
                if target.config.mirror.is_some() {
                    kv.store
                        .raise_last_revision(&target.config.bucket, newest)
                        .await?;
                }
                raised = newest;
            }
            for stored in retained {
                let number = stored.revision;
                let copied = match stored.decode(key) {
                    Ok(revision) => {
                        let copy = Copy {
                            origin,
                            key,
                            revision: revision.revision,
                            op: revision.op,
                            text: &revision.text,
                            created_ms: revision.created_ms,
                            expiry_ns: revision.expiry_ns,
                        };
                        copy_into(kv, target, &copy, deadline).await
                    }
                    Err(error) => Err(error),
                };
                match copied {
                    Err(error @ KvError::Unavailable(_)) => return Err(error),
                    Err(error) => refused.push((key.to_string(), number, error)),
                    Ok(()) => {}
                }
            }
            after = Some(pk.clone());
        }
        if next.is_none() {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: u64, op: Op) -> HeadEntry {
        HeadEntry {
            revision,
            size: 1,
            expiry_ns: None,
            op,
        }
    }

    #[test]
    fn an_older_revision_joins_the_history_where_it_belongs() {
        let entries = [entry(15, Op::Put), entry(18, Op::Del)];
        let joined = with_older(&entries, entry(3, Op::Put), 10).expect("kept");
        let revisions: Vec<u64> = joined.iter().map(|entry| entry.revision).collect();
        assert_eq!(revisions, [3, 15, 18]);
        // Ten later revisions leave no room for it; a later purge dropped it.
        let full: Vec<HeadEntry> = (10..20).map(|revision| entry(revision, Op::Put)).collect();
        assert!(with_older(&full, entry(3, Op::Put), 10).is_none());
        assert!(with_older(&[entry(9, Op::Purge)], entry(3, Op::Put), 10).is_none());
        // With room for two of three, the oldest goes.
        let two = with_older(
            &[entry(5, Op::Put), entry(7, Op::Put)],
            entry(6, Op::Put),
            2,
        )
        .expect("kept");
        assert_eq!(
            two.iter().map(|entry| entry.revision).collect::<Vec<_>>(),
            [6, 7]
        );
    }
}
