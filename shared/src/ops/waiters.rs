//! Waking kv-key-watch's waiters: which change resumes a waiter, the output its flow gets, and
//! resuming every waiter of a bucket that a batch of committed revisions passes.

use crate::api::requests::Watched;
use crate::api::responses::Change;
use crate::model::error::KvError;
use crate::model::revision::Op;
use crate::model::time;
use crate::ops::state::Kv;
use crate::store::waiters::Waiter;
use crate::tokens::{NotResumed, TaskTokens, MAX_OUTPUT_BYTES};
use std::time::Instant;

/// How many flows are resumed at once: Step Functions' `SendTaskSuccess` takes hundreds a
/// second per account, and 10,000 waiters on one key resume in about 10,000 / 32 round trips.
const RESUMING_AT_ONCE: usize = 32;

/// Whether a revision of a key the waiter watches resumes it: a later revision, or the expiry
/// of the very revision it waits after, unless it saw that one expired already.
pub fn wakes(waiter: &Waiter, revision: u64, op: Op) -> bool {
    revision > waiter.after
        || (op == Op::Expired && revision == waiter.after && !waiter.expiry_seen)
}

/// The output a resumed flow gets, as JSON text: the value left out (`too_large`) when the
/// whole would pass Step Functions' limit on a task's output.
pub fn output(change: &Change) -> Result<String, KvError> {
    let encode = |change: &Change| {
        serde_json::to_string(change)
            .map_err(|error| KvError::Internal(format!("Could not encode a change: {error}")))
    };
    let text = encode(change)?;
    if text.len() <= MAX_OUTPUT_BYTES {
        return Ok(text);
    }
    encode(&Change {
        value: None,
        too_large: true,
        ..change.clone()
    })
}

/// Resumes each waiter with its change, `RESUMING_AT_ONCE` at a time, and returns the ids of
/// those done with: resumed, or whose token no longer waits. A failure a retry may cure stops
/// the rest (they stay for the stream's next delivery) and is returned beside them.
pub async fn resume_all(
    tokens: &TaskTokens,
    wakes: Vec<(Waiter, Change)>,
    deadline: Instant,
) -> (Vec<u64>, Option<KvError>) {
    let mut done = Vec::new();
    let mut pending = wakes.into_iter();
    let mut running = tokio::task::JoinSet::new();
    let mut failure = None;
    loop {
        while failure.is_none() && running.len() < RESUMING_AT_ONCE && Instant::now() < deadline {
            let Some((waiter, change)) = pending.next() else {
                break;
            };
            let tokens = tokens.clone();
            running.spawn(crate::model::metrics::inherited(async move {
                let outcome = match output(&change) {
                    Ok(text) => tokens.resume(&waiter.task_token, &text).await,
                    Err(error) => Err(NotResumed::Gone(error.to_string())),
                };
                (waiter.id, outcome)
            }));
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        match joined {
            Ok((id, Ok(()))) => {
                crate::model::metrics::add(|counts| &counts.waiters_resumed, 1);
                done.push(id)
            }
            Ok((id, Err(NotResumed::Gone(why)))) => {
                tracing::info!(waiter = id, reason = %why, "waiter dropped: its token no longer waits");
                done.push(id);
            }
            Ok((_, Err(NotResumed::Retry(why)))) => {
                failure.get_or_insert(KvError::Unavailable(why));
            }
            Err(panicked) => {
                failure.get_or_insert(KvError::Internal(format!(
                    "Resuming a flow failed: {panicked}"
                )));
            }
        }
    }
    if failure.is_none() && pending.len() > 0 {
        failure = Some(KvError::Unavailable(
            "The invocation's time ran out before every waiting flow was resumed".to_string(),
        ));
    }
    (done, failure)
}

/// A committed revision as a waiter's flow sees it.
#[derive(Debug, Clone, Copy)]
pub struct ChangedKey<'a> {
    pub key: &'a str,
    pub revision: u64,
    pub op: Op,
    pub value: Option<&'a str>,
}

/// Resumes every live waiter of `bucket` that one of `commits` (in revision order per key)
/// passes, with the first that does, and forgets it; drops expired waiters and those of
/// another incarnation of the bucket.
pub async fn wake(
    kv: &Kv,
    bucket: &str,
    incarnation: u64,
    commits: &[ChangedKey<'_>],
    deadline: Instant,
) -> Result<usize, KvError> {
    let waiters = kv.store.waiters(bucket).await?;
    if waiters.is_empty() {
        return Ok(0);
    }
    let now_ns = time::now_ns();
    let mut stale = Vec::new();
    let mut resumes = Vec::new();
    for waiter in waiters {
        if waiter.expires_ns < now_ns || waiter.incarnation != incarnation {
            stale.push(waiter.id);
            continue;
        }
        // Parsed once per waiter, not once per commit.
        let watched = Watched::stored(&waiter.pattern, waiter.is_filter);
        let first = commits
            .iter()
            .filter(|commit| {
                watched.matches(commit.key) && wakes(&waiter, commit.revision, commit.op)
            })
            .min_by_key(|commit| commit.revision);
        if let Some(commit) = first {
            let change = Change {
                key: commit.key.to_string(),
                value: commit.value.map(str::to_string),
                revision: commit.revision,
                operation: commit.op.as_str(),
                too_large: false,
            };
            resumes.push((waiter, change));
        }
    }
    let woken = resumes.len();
    let tokens = match (&kv.tokens, woken) {
        (_, 0) => None,
        (Some(tokens), _) => Some(tokens),
        (None, _) => {
            return Err(KvError::Internal(
                "This function has no Step Functions client to resume flows".to_string(),
            ))
        }
    };
    let (done, failure) = match tokens {
        Some(tokens) => resume_all(tokens, resumes, deadline).await,
        None => (Vec::new(), None),
    };
    stale.extend(done);
    kv.store.remove_waiters(bucket, &stale).await?;
    match failure {
        Some(error) => Err(error),
        None => Ok(woken),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter(pattern: &str, is_filter: bool, after: u64, expiry_seen: bool) -> Waiter {
        Waiter {
            id: 1,
            pattern: pattern.into(),
            is_filter,
            after,
            expiry_seen,
            task_token: "t".into(),
            expires_ns: u64::MAX,
            incarnation: 1,
        }
    }

    #[test]
    fn later_revisions_and_the_expiry_of_the_one_waited_after_wake() {
        let plain = waiter("lock", false, 7, false);
        assert!(!wakes(&plain, 7, Op::Put));
        assert!(wakes(&plain, 8, Op::Del));
        assert!(wakes(&plain, 7, Op::Expired));
        assert!(!wakes(&waiter("lock", false, 7, true), 7, Op::Expired));
        assert!(!wakes(&plain, 6, Op::Expired));
    }

    #[test]
    fn keys_and_filters() {
        let watches = |pattern: &str, is_filter: bool, key: &str| {
            Watched::stored(pattern, is_filter).matches(key)
        };
        assert!(watches("a.b", false, "a.b"));
        assert!(!watches("a.b", false, "a.c"));
        assert!(watches("a.*", true, "a.c"));
        assert!(watches("a.>", true, "a.c.d"));
        assert!(!watches("a.*", true, "b.c"));
    }

    #[test]
    fn an_output_too_large_leaves_the_value_out() {
        let change = Change {
            key: "k".into(),
            value: Some("x".repeat(MAX_OUTPUT_BYTES)),
            revision: 3,
            operation: "PUT",
            too_large: false,
        };
        let text = output(&change).expect("output");
        assert!(text.len() < 200, "{text}");
        assert!(text.contains("\"too_large\":true") && text.contains("\"value\":null"));
        let small = output(&Change {
            value: Some("v".into()),
            ..change
        })
        .expect("output");
        assert_eq!(
            small,
            r#"{"key":"k","value":"v","revision":3,"operation":"PUT"}"#
        );
    }
}
