//! kv-expiry-sweep, run every minute: takes values past their expiry out of their heads, so
//! that they leave the counts, kv-key-list and kv-key-history within a minute, however late
//! DynamoDB's own TTL sweep is (on AWS, days). The heads to look at come from the sparse
//! `by-expiry` index; each is changed only if it still holds the expired value, so a write that
//! replaced it meanwhile is never touched. The change reaches the items table's stream as an
//! expiry (`op` EXPIRED), which updates the counts. DynamoDB's sweep never races it: heads carry
//! no `ttl` (`store::items::head_attributes`).

use crate::api::requests::ScheduledEvent;
use crate::api::responses::SweepDone;
use crate::model::error::KvError;
use crate::model::metrics;
use crate::model::revision::{HeadEntry, Op};
use crate::model::time;
use crate::ops::state::Kv;
use crate::store::errors::StoreError;
use crate::store::items::EXPIRY_SHARDS;
use crate::store::Store;
use std::time::Instant;

/// What one shard's sweep did.
#[derive(Debug, Default)]
struct ShardSwept {
    examined: u64,
    expired: u64,
    /// The deadline came before the shard's last page.
    cut_short: bool,
    /// Heads that could not be looked at or changed; the next run tries them again.
    failed: u64,
    first_error: Option<StoreError>,
}

/// Sweeps every shard at once, each on its own: one shard's errors or backlog neither stop
/// nor delay the others, and a run that ends at its deadline has made progress in all of them.
pub async fn run(kv: &Kv, _event: ScheduledEvent, deadline: Instant) -> Result<SweepDone, KvError> {
    let now_ns = time::now_ns();
    let mut shards = tokio::task::JoinSet::new();
    for shard in 0..EXPIRY_SHARDS {
        let store = kv.store.clone();
        shards.spawn(metrics::inherited(async move {
            sweep_shard(&store, &format!("x{shard}"), now_ns, deadline).await
        }));
    }
    let mut done = SweepDone {
        message: "Expiry sweep done",
        examined: 0,
        expired: 0,
        failed: 0,
        complete: true,
    };
    let mut first_error = None;
    let mut failed_shards = 0;
    while let Some(joined) = shards.join_next().await {
        let swept =
            joined.map_err(|error| KvError::Internal(format!("Sweep task failed: {error}")))?;
        done.examined += swept.examined;
        done.expired += swept.expired;
        done.failed += swept.failed;
        done.complete &= !swept.cut_short && swept.failed == 0;
        if let Some(error) = swept.first_error {
            failed_shards += 1;
            first_error.get_or_insert(error);
        }
    }
    match first_error {
        // Nothing could be swept anywhere: the store is down, and the run is a failure.
        Some(error) if failed_shards == EXPIRY_SHARDS && done.expired == 0 => Err(error.into()),
        _ => Ok(done),
    }
}

/// Expires what the shard lists as expired, page by page, until the deadline. A head that
/// cannot be expired is counted and passed over; a page that cannot be read ends the shard's
/// part of this run.
async fn sweep_shard(store: &Store, shard: &str, now_ns: u64, deadline: Instant) -> ShardSwept {
    let now_secs = now_ns / 1_000_000_000;
    let mut swept = ShardSwept::default();
    let mut start = None;
    loop {
        if Instant::now() >= deadline {
            // The next scheduled run goes on where this one stopped.
            swept.cut_short = true;
            return swept;
        }
        let (pks, next) = match store.expired_heads(shard, now_secs, start).await {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(shard, error = %error, "expiry shard not swept");
                swept.failed += 1;
                swept.first_error.get_or_insert(error);
                return swept;
            }
        };
        for pk in pks {
            swept.examined += 1;
            match expire(store, &pk, now_ns).await {
                Ok(expired) => swept.expired += u64::from(expired),
                Err(error) => {
                    tracing::warn!(shard, error = %error, "expired head not swept");
                    swept.failed += 1;
                    swept.first_error.get_or_insert(error);
                }
            }
        }
        match next {
            Some(next) => start = Some(next),
            None => return swept,
        }
    }
}

/// Expires the head of `pk` if its latest value is past its expiry; true when it did.
async fn expire(store: &Store, pk: &str, now_ns: u64) -> Result<bool, StoreError> {
    let head = store.read_head_of(pk, true).await?;
    let Some(latest) = &head.latest else {
        return Ok(false);
    };
    if latest.op != Op::Put || !time::is_expired(latest.expiry_ns, now_ns) {
        return Ok(false);
    }
    let expired = store
        .expire_head(
            pk,
            &head,
            &expired_entries(&head.entries, latest.revision, now_ns),
            now_ns,
        )
        .await?;
    if expired {
        let late_ms = now_ns.saturating_sub(latest.expiry_ns.unwrap_or(now_ns)) / 1_000_000;
        metrics::add(|counts| &counts.values_expired, 1);
        metrics::raise(|counts| &counts.expiry_lateness_ms, late_ms);
    }
    Ok(expired)
}

/// The retained list once expired values are gone: expired older values leave it, and the
/// latest stays as an EXPIRED entry of no size (the key's revision is still its latest).
pub fn expired_entries(entries: &[HeadEntry], latest: u64, now_ns: u64) -> Vec<HeadEntry> {
    entries
        .iter()
        .filter_map(|entry| {
            if entry.revision == latest {
                Some(HeadEntry {
                    size: 0,
                    op: Op::Expired,
                    ..*entry
                })
            } else if entry.op == Op::Put && time::is_expired(entry.expiry_ns, now_ns) {
                None
            } else {
                Some(*entry)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(revision: u64, expiry_ns: Option<u64>, op: Op) -> HeadEntry {
        HeadEntry {
            revision,
            size: 10,
            expiry_ns,
            op,
        }
    }

    #[test]
    fn expired_values_leave_and_the_latest_becomes_an_expiry() {
        let entries = [
            entry(1, Some(5), Op::Put),
            entry(2, None, Op::Put),
            entry(3, None, Op::Del),
            entry(4, Some(9), Op::Put),
        ];
        let left = expired_entries(&entries, 4, 10);
        assert_eq!(
            left,
            vec![
                entry(2, None, Op::Put),
                entry(3, None, Op::Del),
                HeadEntry {
                    size: 0,
                    ..entry(4, Some(9), Op::Expired)
                },
            ]
        );
    }
}
