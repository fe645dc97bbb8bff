//! kv-expiry-sweep, run every minute: takes values past their expiry out of their heads, so
//! that they leave the counts, kv-key-list and kv-key-history within a minute, however late
//! DynamoDB's own TTL sweep is (on AWS, days). The heads to look at come from the sparse
//! `by-expiry` index; each is changed only if it still holds the expired value, so a write that
//! replaced it meanwhile is never touched. The change reaches the items table's stream as an
//! expiry (`op` EXPIRED), which updates the counts.

use crate::api::requests::ScheduledEvent;
use crate::api::responses::SweepDone;
use crate::model::error::KvError;
use crate::model::revision::{HeadEntry, Op};
use crate::model::time;
use crate::ops::state::Kv;
use crate::store::items::EXPIRY_SHARDS;
use std::time::Instant;

pub async fn run(kv: &Kv, _event: ScheduledEvent, deadline: Instant) -> Result<SweepDone, KvError> {
    let now_ns = time::now_ns();
    let now_secs = now_ns / 1_000_000_000;
    let (mut examined, mut expired) = (0u64, 0u64);
    let mut complete = true;
    'shards: for shard in 0..EXPIRY_SHARDS {
        let shard = format!("x{shard}");
        let mut start = None;
        loop {
            if Instant::now() >= deadline {
                // The next scheduled run goes on where this one stopped.
                complete = false;
                break 'shards;
            }
            let (pks, next) = kv.store.expired_heads(&shard, now_secs, start).await?;
            for pk in pks {
                examined += 1;
                expired += u64::from(expire(kv, &pk, now_ns).await?);
            }
            match next {
                Some(next) => start = Some(next),
                None => break,
            }
        }
    }
    Ok(SweepDone {
        message: "Expiry sweep done",
        examined,
        expired,
        complete,
    })
}

/// Expires the head of `pk` if its latest value is past its expiry; true when it did.
async fn expire(kv: &Kv, pk: &str, now_ns: u64) -> Result<bool, KvError> {
    let head = kv.store.read_head_of(pk, true).await?;
    let Some(latest) = &head.latest else {
        return Ok(false);
    };
    if latest.op != Op::Put || !time::is_expired(latest.expiry_ns, now_ns) {
        return Ok(false);
    }
    Ok(kv
        .store
        .expire_head(
            pk,
            &head,
            &expired_entries(&head.entries, latest.revision, now_ns),
            now_ns,
        )
        .await?)
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
