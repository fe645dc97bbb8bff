//! Writing a revision of a key (a value now; delete markers later) with NATS KV's guarantees:
//! one bucket-wide sequence, compare-and-set, per-key history, and exact usage accounting.
//!
//! A write takes two round trips. First, in parallel: `UpdateItem` on the bucket hands out the
//! next revision and returns the configuration, and `GetItem` reads the key's small head.
//! Then one `TransactWriteItems` commits the new revision, the head (conditional on the head
//! being unchanged, which serialises writers of the key), the index marker of the replaced
//! value, the revisions pushed out of history, and the bucket's usage (conditional on
//! `max_bytes`). A writer that loses the race re-reads the head and tries again; if a later
//! revision than its own was committed meanwhile, it takes a new revision, so a key's
//! revisions always increase in commit order.

use crate::config::BucketConfig;
use crate::dynamo::items::{Head, HeadEntry, Op, MAX_ITEM_BYTES};
use crate::dynamo::store::{Commit, CommitError};
use crate::error::KvError;
use crate::handler::Kv;
use crate::{codec, time};
use std::time::{Duration, Instant};

/// Enough for heavy contention on one key (each lost race costs one retry); past it the write
/// reports `KvUnavailable` so the flow's Retry takes over.
const MAX_ATTEMPTS: u32 = 200;

pub struct WriteRequest<'a> {
    pub bucket: &'a str,
    pub key: &'a str,
    pub op: Op,
    pub text: &'a str,
    /// Compare-and-set: 0 = only if the key has no live value, N = only if its latest is N.
    pub expected: Option<u64>,
    /// This revision's own TTL in ns, overriding the bucket's when > 0.
    pub ttl_ns: Option<i64>,
    /// When the caller must have its answer (the invocation's deadline).
    pub deadline: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub revision: u64,
    pub created_ms: u64,
    pub expiry_ns: Option<u64>,
    pub memory: bool,
}

/// What one commit attempt changes, derived from the head alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub entries: Vec<HeadEntry>,
    pub unmark: Option<u64>,
    pub trimmed: Vec<u64>,
    pub bytes_delta: i64,
    pub keys_delta: i64,
}

pub fn plan(head: &Head, new: HeadEntry, history: usize, now_ns: u64) -> Plan {
    let previous = head.latest().copied();
    let mut entries = Vec::with_capacity(head.entries.len() + 1);
    let mut trimmed = Vec::new();
    for entry in &head.entries {
        // Expired revisions leave with the next write, so their bytes are credited then.
        if new.op == Op::Purge || time::is_expired(entry.expiry_ns, now_ns) {
            trimmed.push(*entry);
        } else {
            entries.push(*entry);
        }
    }
    entries.push(new);
    let excess = entries.len().saturating_sub(history.max(1));
    trimmed.extend(entries.drain(..excess));
    let unmark = previous
        .filter(|entry| entry.op == Op::Put && entries.iter().any(|kept| kept.rev == entry.rev))
        .map(|entry| entry.rev);
    let freed: u64 = trimmed.iter().map(|entry| entry.size).sum();
    let counted =
        |entry: Option<HeadEntry>| i64::from(entry.is_some_and(|entry| entry.op == Op::Put));
    Plan {
        entries,
        unmark,
        trimmed: trimmed.iter().map(|entry| entry.rev).collect(),
        bytes_delta: to_i64(new.size) - to_i64(freed),
        keys_delta: counted(Some(new)) - counted(previous),
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub fn check_compare_and_set(head: &Head, expected: u64, now_ns: u64) -> Result<(), KvError> {
    let current = head.current_revision();
    if expected == 0 {
        let live = head
            .latest()
            .is_some_and(|entry| entry.op == Op::Put && !time::is_expired(entry.expiry_ns, now_ns));
        if live {
            return Err(KvError::KeyExists { current });
        }
    } else if current != expected {
        return Err(KvError::RevisionMismatch { expected, current });
    }
    Ok(())
}

fn check_limits(config: &BucketConfig, size: u64) -> Result<(), KvError> {
    if config.max_value_size > 0 && to_i64(size) > config.max_value_size {
        return Err(KvError::ValueTooLarge(format!(
            "Value is {size} bytes, larger than the bucket's max_value_size of {} bytes",
            config.max_value_size
        )));
    }
    if config.max_bytes > 0 && to_i64(size) > config.max_bytes {
        return Err(KvError::BucketFull(format!(
            "Value is {size} bytes, more than the bucket's max_bytes of {} bytes",
            config.max_bytes
        )));
    }
    Ok(())
}

fn backoff(attempt: u32) -> Duration {
    let ceiling_us = 2_000u64 << attempt.min(5);
    Duration::from_micros(fastrand::u64(500..ceiling_us))
}

/// How long a write keeps sending a commit whose outcome is unknown, from the first time it
/// was.
const SETTLE_BUDGET: Duration = Duration::from_secs(8);
/// When settling must end, counted from the write's start: with the last check, inside
/// Lambda's 15 s timeout even after a first send that used the client's whole 10 s.
const SETTLE_HORIZON: Duration = Duration::from_secs(12);
/// How long the last check of an unknown outcome, one consistent read of the head, may take.
const LAST_CHECK: Duration = Duration::from_secs(2);

/// A `ClientRequestToken` for one commit attempt (DynamoDB takes up to 36 characters).
fn request_token() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// The attempt among `attempts` that the head shows committed, if any: its revision is the
/// key's latest or still in its history. Revisions are handed out once, so a revision this
/// call attempted and the head names can only be this call's write.
fn landed(head: &Head, attempts: &[Written]) -> Option<Written> {
    attempts
        .iter()
        .find(|attempt| {
            head.cur == Some(attempt.revision)
                || head
                    .entries
                    .iter()
                    .any(|entry| entry.rev == attempt.revision)
        })
        .cloned()
}

/// Sends one commit, and while its outcome is unknown sends it again with the same token
/// (which DynamoDB applies at most once) until DynamoDB says how it went or the time to settle
/// runs out. `settle_by` is set when a write first meets an unknown outcome and bounds every
/// later send of the call. The flag says whether any send's outcome was unknown: then a
/// refusal may hide an earlier send that landed, and the caller must look at the head before
/// believing it.
async fn commit_settled(
    kv: &Kv,
    commit: &Commit<'_>,
    started: Instant,
    deadline: Instant,
    settle_by: &mut Option<Instant>,
) -> (Result<(), CommitError>, bool) {
    let token = request_token();
    let mut was_unknown = false;
    let mut attempt = 0;
    loop {
        let outcome = match *settle_by {
            // A first send is bounded by the client's own timeouts.
            None => kv.store.commit(commit, &token).await,
            Some(settle_by) => {
                let remaining = settle_by.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, kv.store.commit(commit, &token)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(CommitError::OutcomeUnknown(KvError::Unavailable(
                        "DynamoDB TransactWriteItems did not answer in time".to_string(),
                    ))),
                }
            }
        };
        match outcome {
            Err(CommitError::OutcomeUnknown(error)) => {
                was_unknown = true;
                let settle_by = *settle_by.get_or_insert_with(|| {
                    (Instant::now() + SETTLE_BUDGET)
                        .min(started + SETTLE_HORIZON)
                        .min(deadline.checked_sub(LAST_CHECK).unwrap_or(deadline))
                });
                let pause = backoff(attempt).max(Duration::from_millis(50));
                if Instant::now() + pause >= settle_by {
                    return (Err(CommitError::OutcomeUnknown(error)), true);
                }
                tracing::warn!(error = %error, "write outcome unknown; sending it again with its token");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            settled => return (settled, was_unknown),
        }
    }
}

pub async fn write(kv: &Kv, request: WriteRequest<'_>) -> Result<Written, KvError> {
    let started = Instant::now();
    let store = &kv.store;
    let mut settle_by = None;
    let (allocated, head) = tokio::join!(
        store.allocate_revision(request.bucket),
        store.read_head(request.bucket, request.key, false)
    );
    let bucket = allocated?;
    let mut head = head?;
    let config = &bucket.config;
    let size = request.text.len() as u64;
    check_limits(config, size)?;
    let (stored, compressed) = codec::encode(request.text, config.compression);
    let storage_limit = MAX_ITEM_BYTES.saturating_sub(crate::dynamo::items::revision_overhead(
        request.bucket,
        request.key,
    ));
    if stored.len() > storage_limit {
        return Err(KvError::ValueTooLarge(format!(
            "Value is {size} bytes ({} stored), more than the {storage_limit} bytes one DynamoDB item can hold for this key (items are limited to {} KB)",
            stored.len(),
            MAX_ITEM_BYTES / 1024
        )));
    }
    // Markers never expire: a delete must not be undone by the TTL sweep revealing an older value.
    let ttl_ns = match request.op {
        Op::Put => request.ttl_ns.filter(|ttl| *ttl > 0).unwrap_or(config.ttl),
        Op::Del | Op::Purge => 0,
    };
    let memory = config.storage == crate::config::Storage::Memory;
    let history = usize::try_from(config.history).unwrap_or(1);
    let mut revision = bucket.seq;
    let mut consistent = false;
    // Commits of this call whose outcome was unknown when last sent: until the head shows
    // otherwise, any of them may be the one that landed, and answering anything but its
    // revision would store the value twice or refuse a write that succeeded.
    let mut unsettled: Vec<Written> = Vec::new();
    let mut last_failure = None;

    for attempt in 0..MAX_ATTEMPTS {
        if let Some(written) = landed(&head, &unsettled) {
            return Ok(written);
        }
        let now_ns = time::now_ns();
        if let Some(expected) = request.expected {
            if let Err(refused) = check_compare_and_set(&head, expected, now_ns) {
                if consistent {
                    return Err(refused);
                }
                // The first head read was eventually consistent: confirm before refusing.
                head = store.read_head(request.bucket, request.key, true).await?;
                consistent = true;
                continue;
            }
        }
        if head.current_revision() >= revision {
            revision = store.allocate_revision(request.bucket).await?.seq;
        }
        let expiry_ns = time::expiry_ns(now_ns, ttl_ns);
        let new = HeadEntry {
            rev: revision,
            size,
            expiry_ns,
            op: request.op,
        };
        let plan = plan(&head, new, history, now_ns);
        let bytes_ceiling = (config.max_bytes > 0 && plan.bytes_delta > 0)
            .then(|| config.max_bytes - plan.bytes_delta);
        let created_ms = time::ns_to_ms(now_ns);
        let commit = Commit {
            bucket: request.bucket,
            incarnation: bucket.created_ms,
            key: request.key,
            expected_cur: head.cur,
            entries: &plan.entries,
            rev: revision,
            stored: &stored,
            compressed,
            created_ms,
            expiry_ns,
            op: request.op,
            memory,
            unmark: plan.unmark,
            trimmed: plan.trimmed,
            bytes_delta: plan.bytes_delta,
            keys_delta: plan.keys_delta,
            bytes_ceiling,
        };
        let written = Written {
            revision,
            created_ms,
            expiry_ns,
            memory,
        };
        let (outcome, was_unknown) =
            commit_settled(kv, &commit, started, request.deadline, &mut settle_by).await;
        let refusal = match outcome {
            Ok(()) => return Ok(written),
            Err(CommitError::OutcomeUnknown(error)) => {
                unsettled.push(written);
                last_failure = Some(error);
                break;
            }
            Err(refusal) => refusal,
        };
        if was_unknown {
            // A send whose outcome was unknown may have landed before this refusal; the
            // refusal may even be caused by it (the head or the usage already moved).
            unsettled.push(written);
            let head = store.read_head(request.bucket, request.key, true).await?;
            if let Some(written) = landed(&head, &unsettled) {
                return Ok(written);
            }
        }
        match refusal {
            // Losers of a race back off with jitter so they do not collide again in lockstep.
            CommitError::HeadChanged if attempt == 0 => {}
            CommitError::HeadChanged => tokio::time::sleep(backoff(attempt)).await,
            CommitError::Contention(error) => {
                last_failure = Some(error);
                tokio::time::sleep(backoff(attempt)).await
            }
            CommitError::BucketFull { used } => {
                return Err(KvError::BucketFull(format!(
                    "Bucket '{}' holds {used} bytes; writing {size} more bytes would exceed its max_bytes of {}",
                    request.bucket, config.max_bytes
                )))
            }
            CommitError::BucketGone => {
                return Err(KvError::BucketNotFound(request.bucket.to_string()))
            }
            CommitError::Failed(error) | CommitError::OutcomeUnknown(error) => return Err(error),
        }
        if Instant::now() >= request.deadline {
            break;
        }
        // The race was lost to a commit that most likely holds a later revision than ours, so
        // a fresh revision is taken alongside the re-read instead of after it (a number left
        // unused is only a gap in the sequence).
        let (fresh_head, fresh_revision) = tokio::join!(
            store.read_head(request.bucket, request.key, true),
            store.allocate_revision(request.bucket)
        );
        head = fresh_head?;
        revision = fresh_revision?.seq;
        consistent = true;
    }
    if !unsettled.is_empty() {
        // The last word: the head, read consistently. If it names none of this call's
        // attempts, one may still be in flight, so the answer is that nobody knows yet.
        let last_look = tokio::time::timeout(
            LAST_CHECK,
            store.read_head(request.bucket, request.key, true),
        )
        .await;
        if let Ok(Ok(head)) = last_look {
            if let Some(written) = landed(&head, &unsettled) {
                return Ok(written);
            }
        }
        let cause = last_failure
            .map(|error| error.to_string())
            .unwrap_or_default();
        return Err(KvError::Unavailable(format!(
            "Could not confirm whether the write of key '{}' was stored: DynamoDB did not settle it within {} s ({cause}). Read the key before writing it again.",
            request.key,
            SETTLE_BUDGET.as_secs()
        )));
    }
    Err(last_failure.unwrap_or_else(|| {
        KvError::Unavailable(format!(
            "Gave up writing key '{}' after {MAX_ATTEMPTS} attempts: too many concurrent writers",
            request.key
        ))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(rev: u64, size: u64, op: Op) -> HeadEntry {
        HeadEntry {
            rev,
            size,
            expiry_ns: None,
            op,
        }
    }

    fn head(entries: Vec<HeadEntry>) -> Head {
        Head {
            cur: entries.last().map(|entry| entry.rev),
            entries,
        }
    }

    #[test]
    fn first_write_adds_one_key() {
        let plan = plan(&Head::default(), entry(1, 5, Op::Put), 1, 0);
        assert_eq!(plan.entries, vec![entry(1, 5, Op::Put)]);
        assert_eq!((plan.bytes_delta, plan.keys_delta), (5, 1));
        assert!(plan.trimmed.is_empty() && plan.unmark.is_none());
    }

    #[test]
    fn history_one_replaces_and_credits() {
        let plan = plan(
            &head(vec![entry(1, 5, Op::Put)]),
            entry(4, 3, Op::Put),
            1,
            0,
        );
        assert_eq!(plan.trimmed, vec![1]);
        assert_eq!(plan.unmark, None);
        assert_eq!((plan.bytes_delta, plan.keys_delta), (-2, 0));
    }

    #[test]
    fn longer_history_keeps_and_unmarks() {
        let old = head(vec![entry(1, 5, Op::Put), entry(2, 6, Op::Put)]);
        let plan = plan(&old, entry(3, 7, Op::Put), 3, 0);
        assert_eq!(plan.entries.len(), 3);
        assert_eq!(plan.unmark, Some(2));
        assert_eq!((plan.bytes_delta, plan.keys_delta), (7, 0));
        let plan = super::plan(&old, entry(3, 7, Op::Put), 2, 0);
        assert_eq!(plan.trimmed, vec![1]);
        assert_eq!(plan.bytes_delta, 2);
    }

    #[test]
    fn markers_and_expiry() {
        let old = head(vec![entry(1, 5, Op::Put), entry(2, 6, Op::Put)]);
        let deleted = plan(&old, entry(3, 0, Op::Del), 5, 0);
        assert_eq!((deleted.bytes_delta, deleted.keys_delta), (0, -1));
        let purged = plan(&old, entry(3, 0, Op::Purge), 5, 0);
        assert_eq!(purged.trimmed, vec![1, 2]);
        assert_eq!((purged.bytes_delta, purged.keys_delta), (-11, -1));
        let expiring = head(vec![HeadEntry {
            expiry_ns: Some(10),
            ..entry(1, 5, Op::Put)
        }]);
        let after = plan(&expiring, entry(2, 1, Op::Put), 5, 10);
        assert_eq!(after.trimmed, vec![1]);
        assert_eq!((after.bytes_delta, after.keys_delta), (-4, 0));
    }

    #[test]
    fn compare_and_set_rules() {
        let live = head(vec![entry(7, 1, Op::Put)]);
        assert!(check_compare_and_set(&Head::default(), 0, 0).is_ok());
        assert_eq!(
            check_compare_and_set(&live, 0, 0),
            Err(KvError::KeyExists { current: 7 })
        );
        assert!(check_compare_and_set(&live, 7, 0).is_ok());
        assert_eq!(
            check_compare_and_set(&live, 6, 0),
            Err(KvError::RevisionMismatch {
                expected: 6,
                current: 7
            })
        );
        let deleted = head(vec![entry(8, 0, Op::Del)]);
        assert!(check_compare_and_set(&deleted, 0, 0).is_ok());
    }
}
