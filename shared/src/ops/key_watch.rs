//! kv-key-watch: keeps a flow's task token as a waiter on a key (or the keys a filter matches)
//! and returns; the items table's stream resumes the flow when a matching key passes
//! `after_revision` (`ops::waiters`). A key already past it resumes the flow at once, from here.
//!
//! The waiter is stored before the key is looked at, so no change is missed: a write the look
//! does not see commits after the waiter exists, and the stream's replication, reading the
//! waiters after that commit, finds it. A flow resumed by both gets the first; Step Functions
//! refuses the second, which drops the waiter.

use crate::api::params::Params;
use crate::api::requests::{KeyWatch, Watched};
use crate::api::responses::{Change, Watching};
use crate::model::error::{KvError, INTERNAL_ERROR_TYPE, UNAVAILABLE_ERROR_TYPE};
use crate::model::limits::MAX_WAITERS_PER_BUCKET;
use crate::model::revision::{Head, Op};
use crate::model::time;
use crate::ops::state::Kv;
use crate::ops::waiters::{output, wakes};
use crate::store::items::{self, get_str, get_u64};
use crate::store::waiters::{Admission, Waiter};
use crate::tokens::NotResumed;
use serde_json::Value;
use std::future::Future;

/// Step Functions' longest execution, and so the longest a waiter is kept.
pub const MAX_WAIT_NS: u64 = 365 * 24 * 3600 * 1_000_000_000;
/// Index entries read per page when a filter looks for a key already past.
const PAGE: i32 = 100;

pub async fn run(kv: &Kv, request: KeyWatch) -> Result<Watching, KvError> {
    let KeyWatch {
        bucket,
        key,
        after_revision,
        task_token,
    } = request;
    let record = kv
        .store
        .read_bucket(&bucket)
        .await?
        .filter(|record| record.deleting_ms.is_none())
        .ok_or_else(|| KvError::BucketNotFound(bucket.clone()))?;
    let now_ns = time::now_ns();
    // By default a waiter waits for the next change: after the key's latest revision (for a
    // filter, the bucket's last), and not for the expiry of a value already expired.
    let (after, expiry_seen) = match (after_revision, &key.filter) {
        (Some(after), _) => (after, false),
        (None, Some(_)) => (record.last_revision, false),
        (None, None) => {
            let head = kv.store.read_head(&bucket, &key.pattern, true).await?;
            (head.current_revision(), expired(&head, now_ns))
        }
    };
    let waiter = Waiter {
        id: 0,
        pattern: key.pattern.clone(),
        is_filter: key.filter.is_some(),
        after,
        expiry_seen,
        task_token,
        expires_ns: now_ns.saturating_add(MAX_WAIT_NS),
        incarnation: record.created_ms,
    };
    let id = match kv
        .store
        .add_waiter(&bucket, &waiter, MAX_WAITERS_PER_BUCKET)
        .await?
    {
        Admission::Added(id) => id,
        Admission::Full { max } => {
            return Err(KvError::TooManyWaiters(format!(
                "Bucket '{bucket}' already holds {max} waiting flows, the most a bucket may hold; wait on a filter, or in another bucket"
            )))
        }
        Admission::NoBucket => return Err(KvError::BucketNotFound(bucket)),
    };
    let waiter = Waiter { id, ..waiter };
    let passed = match key.filter {
        None => {
            let head = kv.store.read_head(&bucket, &key.pattern, true).await?;
            change_of(&waiter, &key.pattern, &head, now_ns)?
        }
        Some(_) => first_live_match(kv, &bucket, &key, &waiter, now_ns).await?,
    };
    let Some(change) = passed else {
        return Ok(Watching {
            message: "Waiting for a change",
            after_revision: after,
            resumed_with: None,
        });
    };
    let tokens = kv.tokens.as_ref().ok_or_else(|| {
        KvError::Internal("kv-key-watch has no Step Functions client".to_string())
    })?;
    match tokens.resume(&waiter.task_token, &output(&change)?).await {
        Ok(()) | Err(NotResumed::Gone(_)) => {}
        // The waiter stays: the stream resumes it at the key's next change, and the flow's
        // Retry on KvUnavailable would register again.
        Err(NotResumed::Retry(why)) => return Err(KvError::Unavailable(why)),
    }
    kv.store.remove_waiters(&bucket, &[id]).await?;
    Ok(Watching {
        message: "Resumed at once: the key had already changed",
        after_revision: after,
        resumed_with: Some(change),
    })
}

/// The call's task token as sent, if it is a string, even when the call is refused.
pub fn task_token_of(params: &Params) -> Option<String> {
    params
        .raw("task_token")
        .and_then(Value::as_str)
        .filter(|token| !token.is_empty())
        .map(str::to_string)
}

/// The answer, and for a refusal or a failure the waiting task failed with its `code` (for
/// example `bucket_not_found`), or `KvUnavailable` / `KvInternal`, which its Catch or Retry
/// can name.
pub async fn failing_the_task(
    kv: &Kv,
    token: Option<String>,
    answer: impl Future<Output = Result<Value, KvError>>,
) -> Result<Value, KvError> {
    let outcome = answer.await;
    if let (Err(error), Some(token), Some(tokens)) = (&outcome, token, &kv.tokens) {
        let name = match error {
            KvError::Unavailable(_) => UNAVAILABLE_ERROR_TYPE,
            KvError::Internal(_) => INTERNAL_ERROR_TYPE,
            refused => refused.code(),
        };
        if let Err(NotResumed::Retry(why)) = tokens.fail(&token, name, &error.to_string()).await {
            tracing::warn!(reason = %why, "could not fail the waiting task");
        }
    }
    outcome
}

/// Whether the head's latest is a value past its expiry, or the marker of one.
fn expired(head: &Head, now_ns: u64) -> bool {
    head.latest.as_ref().is_some_and(|latest| {
        latest.op == Op::Expired
            || (latest.op == Op::Put && time::is_expired(latest.expiry_ns, now_ns))
    })
}

/// The change the head shows the waiter, if it passes what it waits after. A value that has
/// expired shows as its expiry, even before the sweeper has marked it.
fn change_of(
    waiter: &Waiter,
    key: &str,
    head: &Head,
    now_ns: u64,
) -> Result<Option<Change>, KvError> {
    let Some(latest) = &head.latest else {
        return Ok(None);
    };
    let op = if expired(head, now_ns) {
        Op::Expired
    } else {
        latest.op
    };
    if !wakes(waiter, latest.revision, op) {
        return Ok(None);
    }
    let value = match op {
        Op::Put => Some(latest.decode(key)?.text),
        Op::Del | Op::Purge | Op::Expired => None,
    };
    Ok(Some(Change {
        key: key.to_string(),
        value,
        revision: latest.revision,
        operation: op.as_str(),
        too_large: false,
    }))
}

/// For a filter: the live key with the lowest revision past the waiter's, through the
/// key-list index (deletes are not in it, so only values count as already past).
async fn first_live_match(
    kv: &Kv,
    bucket: &str,
    watched: &Watched,
    waiter: &Waiter,
    now_ns: u64,
) -> Result<Option<Change>, KvError> {
    let mut cursor = waiter.after;
    loop {
        let (entries, more) = kv.store.latest_page(bucket, cursor, PAGE).await?;
        for entry in &entries {
            let pk = get_str(entry, items::PK).unwrap_or_default();
            cursor = get_u64(entry, items::HEAD_REVISION).unwrap_or(cursor);
            let Some(key) = items::key_from_pk(bucket, pk) else {
                continue;
            };
            if !watched.matches(key) {
                continue;
            }
            let head = kv.store.read_head(bucket, key, true).await?;
            if let Some(change) = change_of(waiter, key, &head, now_ns)? {
                return Ok(Some(change));
            }
        }
        if !more || entries.is_empty() {
            return Ok(None);
        }
    }
}
