//! Writing a revision of a key (a value or a delete marker) with NATS KV's guarantees: one
//! bucket-wide sequence, compare-and-set, per-key history, and usage accounting.
//!
//! The head of a key is its record: the latest value and the list of retained revisions. A
//! write hands out the next revision (`UpdateItem ADD` on the bucket item, which also returns
//! the configuration) and writes the head with one conditional `PutItem`:
//! - history 1, no `max_bytes`: nothing is read first. The head is written if it holds an
//!   older revision (or, for compare-and-set, exactly the expected one); a refusal returns the
//!   head DynamoDB saw, which answers a 409 or shows the write was overtaken in order;
//! - history above 1: the head is read beside the revision, the replaced value is archived as
//!   an item of its own beside the head's write, and the head is written only if it is still
//!   the one read, so the retained list is exact. Trimmed revisions are deleted afterwards, by
//!   the items table's stream consumer, never before;
//! - `max_bytes`: the head and the bucket's usage move together in one transaction, so the
//!   limit is exact at every moment.
//!
//! Elsewhere `bytes` and `entry_total` follow from the heads' changes on the items table's
//! stream (`ops::items_stream`).

use crate::model::config::BucketConfig;
use crate::model::error::KvError;
use crate::model::limits::MAX_UNCOMPRESSED_VALUE_BYTES;
use crate::model::metrics;
use crate::model::revision::{Head, HeadEntry, Op, Stored};
use crate::model::{codec, time};
use crate::ops::state::Kv;
use crate::store::claims::{Claim, ClaimWrite};
use crate::store::errors::StoreError;
use crate::store::items::{COMMIT_WINDOW_MS, MAX_ITEM_BYTES};
use crate::store::{CommitError, HeadCondition, HeadWrite, UsageChange};
use std::time::{Duration, Instant};

/// Enough for heavy contention on one key (each lost race costs one retry, and losers back
/// off further each time); the invocation's deadline bounds the loop first in practice. Past
/// it the write reports `KvUnavailable` so the flow's Retry takes over.
const MAX_ATTEMPTS: u32 = 1000;

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
    /// A copy of a source bucket's revision: (that bucket, its revision). Written at most once.
    pub source: Option<(&'a str, u64)>,
    /// kv-key-increment: the new value is the latest plus `by` (`text` is unused).
    pub increment: Option<Increment>,
    /// The caller's idempotency key: a repeat answers the first call's outcome.
    pub idempotency: Option<Idempotency<'a>>,
    /// The incarnation of the bucket the write was decided for (a copy routed by its target's
    /// configuration): a bucket deleted and re-created since is not written (404).
    pub incarnation: Option<u64>,
}

impl<'a> WriteRequest<'a> {
    /// A value or marker written as it is, with none of the options.
    pub fn plain(bucket: &'a str, key: &'a str, op: Op, text: &'a str, deadline: Instant) -> Self {
        WriteRequest {
            bucket,
            key,
            op,
            text,
            expected: None,
            ttl_ns: None,
            deadline,
            source: None,
            increment: None,
            idempotency: None,
            incarnation: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Increment {
    pub by: i64,
    /// The window of a counter that starts with this write (ns); a live counter keeps its own.
    pub window_ns: Option<i64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    /// The function writing, which a repeat must be too.
    pub function: &'static str,
}

impl<'a> Idempotency<'a> {
    /// The caller's `idempotency_key`, if it sent one, for a write by `function`.
    pub fn of(key: Option<&'a str>, function: crate::api::function::Function) -> Option<Self> {
        key.map(|key| Idempotency {
            key,
            function: function.name(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub revision: u64,
    pub created_ms: u64,
    pub expiry_ns: Option<u64>,
    pub memory: bool,
    /// kv-key-increment's new value.
    pub counter: Option<i64>,
}

impl Written {
    /// The first call's outcome, kept by its claim. `memory` is false: a repeat does not
    /// refresh a cache from it.
    fn claimed(claim: &Claim, idempotency: Idempotency<'_>, key: &str) -> Result<Written, KvError> {
        if claim.function != idempotency.function || claim.key != key {
            return Err(KvError::param(format!(
                "Parameter 'idempotency_key' ('{}') was used within the last 10 minutes by {} on key '{}'; a repeat must be the same call",
                crate::model::validate::truncate(idempotency.key),
                claim.function,
                claim.key
            )));
        }
        Ok(Written {
            revision: claim.revision,
            created_ms: claim.created_ms,
            expiry_ns: None,
            memory: false,
            counter: claim.counter,
        })
    }
}

/// The counter after adding `by` to the head's latest: a missing, deleted or expired value
/// counts as 0; any other value must be an integer's decimal text.
pub fn counter_after(head: &Head, key: &str, by: i64, now_ns: u64) -> Result<i64, KvError> {
    let current = match head.live_value(now_ns) {
        Some(latest) => {
            let text = latest.decode(key)?.text;
            text.trim()
                .parse::<i64>()
                .map_err(|_| KvError::NotACounter {
                    current: latest.revision,
                })?
        }
        None => 0,
    };
    current.checked_add(by).ok_or_else(|| {
        KvError::param(format!(
            "Parameter 'by' ({by}) would take the counter at {current} past the 64-bit integer range"
        ))
    })
}

/// The expiry of an incremented counter: a live counter with an expiry keeps it (a fixed
/// window), a new one starts its window now; without a window, the usual TTL from now.
fn counter_expiry(head: &Head, increment: Increment, ttl_ns: i64, now_ns: u64) -> Option<u64> {
    let window_end = head.live_value(now_ns).and_then(|latest| latest.expiry_ns);
    match (increment.window_ns, window_end) {
        (Some(_), Some(window_end)) => Some(window_end),
        (Some(window), None) => time::expiry_ns(now_ns, window),
        (None, _) => time::expiry_ns(now_ns, ttl_ns),
    }
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
    let previous = head.latest_entry().copied();
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
        .filter(|entry| {
            entry.op == Op::Put && entries.iter().any(|kept| kept.revision == entry.revision)
        })
        .map(|entry| entry.revision);
    let freed: u64 = trimmed.iter().map(|entry| entry.size).sum();
    let counted =
        |entry: Option<HeadEntry>| i64::from(entry.is_some_and(|entry| entry.op == Op::Put));
    Plan {
        entries,
        unmark,
        trimmed: trimmed.iter().map(|entry| entry.revision).collect(),
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
            .latest_entry()
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
    if config.compression && size > MAX_UNCOMPRESSED_VALUE_BYTES as u64 {
        return Err(KvError::ValueTooLarge(format!(
            "Value is {size} bytes; a compression bucket takes values of at most {MAX_UNCOMPRESSED_VALUE_BYTES} bytes uncompressed"
        )));
    }
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
    let ceiling_us = 2_000u64 << attempt.min(6);
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
        .find(|attempt| head.shows(attempt.revision))
        .cloned()
}

/// History 1, no compare-and-set: when the head holds a later revision than every attempt,
/// whatever this call wrote has been replaced in order, exactly as if it had landed and been
/// overtaken, so the call is done (with its last attempt's revision).
fn overtaken_in_order(head: &Head, attempts: &[Written]) -> Option<Written> {
    attempts
        .iter()
        .all(|attempt| head.current_revision() > attempt.revision)
        .then(|| attempts.last().cloned())
        .flatten()
}

/// The answer when neither DynamoDB nor the head can say whether a send of this call landed.
/// A copy from a source bucket that the head already holds (a batch delivered again): the
/// head's latest stands for it, and nothing is written.
fn already_copied(head: &Head, source: Option<(&str, u64)>) -> Option<Written> {
    let (origin, revision) = source?;
    let copied = head
        .sources
        .get(origin)
        .is_some_and(|held| *held >= revision);
    let latest = head.latest.as_ref().filter(|_| copied)?;
    Some(Written {
        revision: latest.revision,
        created_ms: latest.created_ms,
        expiry_ns: latest.expiry_ns,
        memory: latest.memory,
        counter: None,
    })
}

fn unconfirmed(key: &str, why: &str, cause: Option<StoreError>) -> KvError {
    let cause = cause.map(|error| format!(" ({error})")).unwrap_or_default();
    KvError::Unavailable(format!(
        "Could not confirm whether the write of key '{key}' was stored: {why}{cause}. Read the key before writing it again."
    ))
}

/// Sends one head write, and while its outcome is unknown sends it again (a transaction with
/// the same token, which DynamoDB applies at most once; a `PutItem` whose condition a landed
/// copy fails) until DynamoDB says how it went or the time to settle runs out. `settle_by` is
/// set when a write first meets an unknown outcome and bounds every later send of the call.
/// The flag says whether any send's outcome was unknown: then a refusal may hide an earlier
/// send that landed, and the caller must look at the head before believing it.
async fn commit_settled(
    kv: &Kv,
    write: &HeadWrite<'_>,
    usage: Option<&UsageChange>,
    claim: Option<&ClaimWrite<'_>>,
    limits: SendLimits,
    settle_by: &mut Option<Instant>,
) -> (Result<(), CommitError>, bool) {
    let token = request_token();
    let send = || async {
        match (usage, claim) {
            (None, None) => kv.store.put_head(write).await,
            _ => {
                kv.store
                    .put_head_in_transaction(write, usage, claim, &token)
                    .await
            }
        }
    };
    let mut was_unknown = false;
    let mut attempt = 0;
    loop {
        let outcome = match *settle_by {
            // A first send is bounded by the client's own timeouts.
            None => send().await,
            Some(settle_by) => {
                let remaining = settle_by.saturating_duration_since(Instant::now());
                match tokio::time::timeout(remaining, send()).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(CommitError::OutcomeUnknown(StoreError::Unavailable(
                        "DynamoDB did not answer the write in time".to_string(),
                    ))),
                }
            }
        };
        match outcome {
            Err(CommitError::OutcomeUnknown(error)) => {
                was_unknown = true;
                let settle_by = *settle_by.get_or_insert_with(|| limits.settle_by());
                let pause = backoff(attempt).max(Duration::from_millis(50));
                if Instant::now() + pause >= settle_by {
                    return (Err(CommitError::OutcomeUnknown(error)), true);
                }
                tracing::warn!(error = %error, "write outcome unknown; sending it again");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            settled => return (settled, was_unknown),
        }
    }
}

/// What bounds the sends of one commit.
#[derive(Clone, Copy)]
struct SendLimits {
    started: Instant,
    allocated: Instant,
    deadline: Instant,
}

impl SendLimits {
    /// When settling an unknown outcome must stop: 8 s after it began, 12 s after the write
    /// began, before the commit window of the revision closes, and before the deadline less
    /// the time of the last check.
    fn settle_by(self) -> Instant {
        (Instant::now() + SETTLE_BUDGET)
            .min(self.started + SETTLE_HORIZON)
            .min(self.allocated + COMMIT_WINDOW)
            .min(
                self.deadline
                    .checked_sub(LAST_CHECK)
                    .unwrap_or(self.deadline),
            )
    }
}

/// A write never sends a commit later than this after its revision was handed out, which is
/// what lets a bucket delete know when no more writes can land (`WRITES_QUIET_MS`).
const COMMIT_WINDOW: Duration = Duration::from_millis(COMMIT_WINDOW_MS);

pub async fn write(kv: &Kv, request: WriteRequest<'_>) -> Result<Written, KvError> {
    let (bucket, key, idempotency) = (request.bucket, request.key, request.idempotency);
    let mut incarnation = None;
    let outcome = write_once(kv, request, &mut incarnation).await;
    // A repeat of a call that wrote may now be refused (its compare-and-set is stale, the
    // bucket fuller, the counter replaced): the first call's outcome is the answer.
    match (outcome, idempotency, incarnation) {
        (Err(refusal), Some(idempotency), Some(incarnation))
            if (400..500).contains(&refusal.status_code()) =>
        {
            let claim = kv
                .store
                .read_claim(bucket, idempotency.key, incarnation, time::now_ns())
                .await?;
            match claim {
                Some(claim) => Written::claimed(&claim, idempotency, key),
                None => Err(refusal),
            }
        }
        (outcome, _, _) => outcome,
    }
}

/// One write; `incarnation` is set to the bucket's once its revision is handed out.
async fn write_once(
    kv: &Kv,
    request: WriteRequest<'_>,
    incarnation: &mut Option<u64>,
) -> Result<Written, KvError> {
    let started = Instant::now();
    let store = &kv.store;
    // A bucket this container has not written to yet is treated as one that needs the head.
    let read_first =
        request.increment.is_some() || kv.write_shapes.needs_head(request.bucket).unwrap_or(true);
    let (allocated, first_head) = tokio::join!(
        store.allocate_revision(request.bucket, request.incarnation),
        async {
            match read_first {
                true => store
                    .read_head(request.bucket, request.key, false)
                    .await
                    .map(Some),
                false => Ok(None),
            }
        }
    );
    let bucket = allocated?;
    *incarnation = Some(bucket.created_ms);
    let mut allocated_at = Instant::now();
    let mut allocated_ms = time::ns_to_ms(time::now_ns());
    let config = &bucket.config;
    if let Some(mirror) = &config.mirror {
        return Err(KvError::param(format!(
            "Bucket '{}' is a mirror of '{}' and is read-only: write to '{}' instead",
            request.bucket, mirror.name, mirror.name
        )));
    }
    let exact_counts = config.max_bytes > 0;
    let bucket_needs_head = config.history > 1 || exact_counts;
    kv.write_shapes.remember(request.bucket, bucket_needs_head);
    // An increment reads what it adds to, and writes only if that is still the latest.
    let needs_head = bucket_needs_head || request.increment.is_some();
    // The head the plan is made from: None when the write needs none (history 1, no max_bytes).
    let mut head = match (needs_head, first_head?) {
        (false, _) => None,
        (true, Some(head)) => Some(head),
        (true, None) => Some(store.read_head(request.bucket, request.key, false).await?),
    };
    let history = usize::try_from(config.history).unwrap_or(1);
    let storage_limit = MAX_ITEM_BYTES.saturating_sub(crate::store::items::head_overhead(
        request.bucket,
        request.key,
        history,
    ));
    let encode = |text: &str| -> Result<(Vec<u8>, bool, u64), KvError> {
        let size = text.len() as u64;
        check_limits(config, size)?;
        let (stored, compressed) = codec::encode(text, config.compression);
        if stored.len() > storage_limit {
            return Err(KvError::ValueTooLarge(format!(
                "Value is {size} bytes ({} stored), more than the {storage_limit} bytes one DynamoDB item can hold for this key (items are limited to {} KB)",
                stored.len(),
                MAX_ITEM_BYTES / 1024
            )));
        }
        Ok((stored, compressed, size))
    };
    // A value is encoded once; a counter's on each attempt, from the head it adds to.
    let fixed = match request.increment {
        None => Some(encode(request.text)?),
        Some(_) => None,
    };
    // Markers never expire: a delete must not be undone by the TTL sweep revealing an older value.
    let ttl_ns = match request.op {
        Op::Put => request.ttl_ns.filter(|ttl| *ttl > 0).unwrap_or(config.ttl),
        Op::Del | Op::Purge | Op::Expired => 0,
    };
    let memory = config.storage == crate::model::config::Storage::Memory;
    let mut revision = bucket.last_revision;
    let mut consistent = false;
    // Writes of this call whose outcome was unknown when last sent: until the head shows
    // otherwise, any of them may be the one that landed, and answering anything but its
    // revision would store the value twice or refuse a write that succeeded.
    let mut unsettled: Vec<Written> = Vec::new();
    let mut last_failure = None;
    let mut settle_by = None;
    let mut window_closed = false;
    let mut must_reallocate = false;

    for attempt in 0..MAX_ATTEMPTS {
        if let Some(written) = head.as_ref().and_then(|head| landed(head, &unsettled)) {
            return Ok(written);
        }
        if let Some(written) = head
            .as_ref()
            .and_then(|head| already_copied(head, request.source))
        {
            return Ok(written);
        }
        let now_ns = time::now_ns();
        if let (Some(expected), Some(read)) = (request.expected, &head) {
            if let Err(refused) = check_compare_and_set(read, expected, now_ns) {
                if consistent {
                    return Err(refused);
                }
                // The first head read was eventually consistent: confirm before refusing.
                head = Some(store.read_head(request.bucket, request.key, true).await?);
                consistent = true;
                continue;
            }
        }
        let overtaken = head
            .as_ref()
            .is_some_and(|head| head.current_revision() >= revision);
        if overtaken || must_reallocate || window_closed || allocated_at.elapsed() >= COMMIT_WINDOW
        {
            window_closed = false;
            must_reallocate = false;
            // The same incarnation: a bucket re-created meanwhile must not take this write.
            revision = store
                .allocate_revision(request.bucket, Some(bucket.created_ms))
                .await?
                .last_revision;
            allocated_at = Instant::now();
            allocated_ms = time::ns_to_ms(time::now_ns());
        }
        let (stored, compressed, size, counter) = match (&fixed, request.increment, &head) {
            (Some((stored, compressed, size)), _, _) => (stored.clone(), *compressed, *size, None),
            (None, Some(increment), Some(read)) => {
                let counter = counter_after(read, request.key, increment.by, now_ns)?;
                let (stored, compressed, size) = encode(&counter.to_string())?;
                (stored, compressed, size, Some(counter))
            }
            _ => {
                return Err(KvError::Internal(
                    "An increment was planned without the key's head".to_string(),
                ))
            }
        };
        let expiry_ns = match (request.increment, &head) {
            (Some(increment), Some(read)) => counter_expiry(read, increment, ttl_ns, now_ns),
            _ => time::expiry_ns(now_ns, ttl_ns),
        };
        let new = HeadEntry {
            revision,
            size,
            expiry_ns,
            op: request.op,
        };
        let created_ms = time::ns_to_ms(now_ns);
        let latest = Stored {
            revision,
            bytes: stored,
            compressed,
            created_ms,
            expiry_ns,
            op: request.op,
            memory,
        };
        let (entries, archive, usage, condition) = match &head {
            Some(read) => {
                let plan = plan(read, new, history, now_ns);
                // The replaced latest stays in history: it becomes an item of its own.
                let archive = read.latest.as_ref().filter(|previous| {
                    plan.entries
                        .iter()
                        .any(|kept| kept.revision == previous.revision)
                });
                let usage = exact_counts.then(|| UsageChange {
                    incarnation: bucket.created_ms,
                    bytes_delta: plan.bytes_delta,
                    keys_delta: plan.keys_delta,
                    bytes_ceiling: (plan.bytes_delta > 0)
                        .then(|| config.max_bytes - plan.bytes_delta),
                });
                let condition = read
                    .latest_revision
                    .map_or(HeadCondition::Absent, HeadCondition::At);
                (plan.entries, archive, usage, condition)
            }
            None => {
                let condition = match request.expected {
                    Some(0) => HeadCondition::NoLiveValue { now_ns },
                    Some(expected) => HeadCondition::At(expected),
                    None => HeadCondition::Older,
                };
                (vec![new], None, None, condition)
            }
        };
        let write = HeadWrite {
            bucket: request.bucket,
            key: request.key,
            incarnation: bucket.created_ms,
            allocated_ms,
            latest: &latest,
            entries: &entries,
            exact_counts,
            condition,
            source: request.source,
        };
        let written = Written {
            revision,
            created_ms,
            expiry_ns,
            memory,
            counter,
        };
        let claim = request.idempotency.map(|idempotency| ClaimWrite {
            bucket: request.bucket,
            idempotency_key: idempotency.key,
            incarnation: bucket.created_ms,
            claim: Claim {
                function: idempotency.function.to_string(),
                key: request.key.to_string(),
                revision,
                counter,
                created_ms,
            },
            now_ns,
        });
        let limits = SendLimits {
            started,
            allocated: allocated_at,
            deadline: request.deadline,
        };
        let archiving = async {
            match archive {
                Some(previous) => store.archive(request.bucket, request.key, previous).await,
                None => Ok(()),
            }
        };
        metrics::add(|counts| &counts.write_attempts, 1);
        let ((outcome, was_unknown), archived) = tokio::join!(
            commit_settled(
                kv,
                &write,
                usage.as_ref(),
                claim.as_ref(),
                limits,
                &mut settle_by
            ),
            archiving
        );
        if let Err(error) = archived {
            // The head's stream record carries the replaced value: the consumer archives it.
            tracing::warn!(error = %error, "archiving the replaced revision failed; the stream consumer will");
        }
        let refusal = match outcome {
            Ok(()) => return Ok(written),
            Err(CommitError::OutcomeUnknown(error)) => {
                unsettled.push(written);
                last_failure = Some(error);
                break;
            }
            Err(refusal) => refusal,
        };
        if matches!(
            refusal,
            CommitError::HeadChanged(_) | CommitError::Contention(_)
        ) {
            metrics::add(|counts| &counts.write_conflicts, 1);
        }
        if was_unknown {
            unsettled.push(written.clone());
        }
        match refusal {
            CommitError::HeadChanged(seen) => {
                // A refusal carries the head as DynamoDB saw it (none: there was no head), or,
                // if it does not, the head is read again.
                let seen = match seen {
                    Some(seen) => *seen,
                    None if matches!(condition, HeadCondition::Absent) || usage.is_none() => {
                        Head::default()
                    }
                    None => store.read_head(request.bucket, request.key, true).await?,
                };
                if let Some(written) = already_copied(&seen, request.source) {
                    return Ok(written);
                }
                // This call's revision in the head: a send of ours landed (the client's own
                // retry of a request whose answer was lost looks exactly like this).
                if let Some(written) = landed(&seen, std::slice::from_ref(&written))
                    .or_else(|| landed(&seen, &unsettled))
                {
                    return Ok(written);
                }
                if !unsettled
                    .iter()
                    .all(|attempt| seen.rules_out(attempt.revision))
                {
                    // The head has moved on too far to say whether a send of ours landed.
                    if head.is_none() && request.expected.is_none() {
                        if let Some(written) = overtaken_in_order(&seen, &unsettled) {
                            return Ok(written);
                        }
                    }
                    return Err(unconfirmed(
                        request.key,
                        "DynamoDB's answer was lost, and so many writes followed that the key no longer shows whether it landed",
                        last_failure,
                    ));
                }
                // Every send whose outcome was unknown is now known not to have landed.
                unsettled.clear();
                // A head at or past this revision refuses it for ever: take a new one.
                must_reallocate = seen.current_revision() >= revision;
                if head.is_none() {
                    // History 1: the refusal is authoritative. A compare-and-set that fails
                    // against it is a 409; a plain write that met a later revision was
                    // overtaken in order and, as history keeps only the latest, is done.
                    match request.expected {
                        Some(expected) => check_compare_and_set(&seen, expected, now_ns)?,
                        None if seen.current_revision() > revision => return Ok(written),
                        None => {}
                    }
                } else {
                    head = Some(seen);
                    consistent = true;
                }
                if attempt > 0 {
                    // Losers of a race back off with jitter so they do not collide again.
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
            CommitError::Contention(error) => {
                last_failure = Some(error);
                tokio::time::sleep(backoff(attempt)).await;
            }
            CommitError::WindowClosed => window_closed = true,
            CommitError::BucketFull { used } => {
                return Err(KvError::BucketFull(format!(
                    "Bucket '{}' holds {used} bytes; writing {size} more bytes would exceed its max_bytes of {}",
                    request.bucket, config.max_bytes
                )))
            }
            CommitError::BucketGone => {
                return Err(KvError::BucketNotFound(request.bucket.to_string()))
            }
            CommitError::Claimed(claim) => {
                let idempotency = request.idempotency.ok_or_else(|| {
                    KvError::Internal("A claim refused a write that made none".to_string())
                })?;
                return Written::claimed(&claim, idempotency, request.key);
            }
            CommitError::Failed(error) | CommitError::OutcomeUnknown(error) => {
                return Err(error.into())
            }
        }
        if Instant::now() >= request.deadline {
            break;
        }
    }
    if !unsettled.is_empty() {
        // The last word: the head, read consistently. If it names none of this call's
        // attempts, one may still be in flight, so the answer is that nobody knows yet.
        let last_look = tokio::time::timeout(
            LAST_CHECK,
            store.read_head(request.bucket, request.key, true),
        )
        .await;
        if let Ok(Ok(seen)) = last_look {
            if let Some(written) = landed(&seen, &unsettled) {
                return Ok(written);
            }
            if head.is_none() && request.expected.is_none() {
                if let Some(written) = overtaken_in_order(&seen, &unsettled) {
                    return Ok(written);
                }
            }
        }
        let why = format!(
            "DynamoDB did not settle it within {} s",
            SETTLE_BUDGET.as_secs()
        );
        return Err(unconfirmed(request.key, &why, last_failure));
    }
    Err(last_failure.map(KvError::from).unwrap_or_else(|| {
        KvError::Unavailable(format!(
            "Gave up writing key '{}' after {MAX_ATTEMPTS} attempts: too many concurrent writers",
            request.key
        ))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: u64, size: u64, op: Op) -> HeadEntry {
        HeadEntry {
            revision,
            size,
            expiry_ns: None,
            op,
        }
    }

    fn head(entries: Vec<HeadEntry>) -> Head {
        Head {
            latest_revision: entries.last().map(|entry| entry.revision),
            entries,
            latest: None,
            recent: Vec::new(),
            exact_counts: None,
            incarnation: None,
            sources: Default::default(),
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
