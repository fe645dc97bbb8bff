//! What one invocation did, counted where it happens: the store's requests and capacity units
//! (`store::metering`), a write's attempts and conflicts, the memory cache, a stream batch's
//! records. An invocation runs in a scope of its own (`measured`); outside one (init, unit
//! tests) counting does nothing. The Lambda edge writes the counts out once the invocation is
//! done (`lambda::metrics`).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Every figure of one invocation. Capacity units are kept in thousandths, so that they add up
/// exactly in an atomic.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicU64,
    read_milli_units: AtomicU64,
    write_milli_units: AtomicU64,
    pub write_attempts: AtomicU64,
    pub write_conflicts: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub records: AtomicU64,
    pub records_set_aside: AtomicU64,
    pub oldest_record_age_ms: AtomicU64,
    pub waiters_resumed: AtomicU64,
    pub events_put: AtomicU64,
    pub values_expired: AtomicU64,
    pub expiry_lateness_ms: AtomicU64,
    /// The status code, or `KvUnavailable` / `KvInternal`: what the caller was answered.
    outcome: Mutex<Option<String>>,
}

impl Counts {
    pub fn add_units(&self, read: f64, write: f64) {
        let milli = |units: f64| (units.max(0.0) * 1000.0).round() as u64;
        self.read_milli_units
            .fetch_add(milli(read), Ordering::Relaxed);
        self.write_milli_units
            .fetch_add(milli(write), Ordering::Relaxed);
    }

    pub fn read_units(&self) -> f64 {
        self.read_milli_units.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn write_units(&self) -> f64 {
        self.write_milli_units.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn set_outcome(&self, outcome: String) {
        if let Ok(mut kept) = self.outcome.lock() {
            *kept = Some(outcome);
        }
    }

    pub fn outcome(&self) -> Option<String> {
        self.outcome.lock().ok().and_then(|kept| kept.clone())
    }
}

tokio::task_local! {
    static CURRENT: Arc<Counts>;
}

/// Runs `work` as one invocation: everything it counts lands in `counts`.
pub async fn measured<F: Future>(counts: Arc<Counts>, work: F) -> F::Output {
    CURRENT.scope(counts, work).await
}

/// `work` counted in the invocation that spawns it: for tasks an operation spawns, which do not
/// inherit the scope.
pub fn inherited<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let counts = CURRENT.try_with(Arc::clone).ok();
    async move {
        match counts {
            Some(counts) => CURRENT.scope(counts, work).await,
            None => work.await,
        }
    }
}

/// Counts into the current invocation, if there is one.
pub fn count(update: impl FnOnce(&Counts)) {
    let _ = CURRENT.try_with(|counts| update(counts));
}

/// Adds `by` to one counter of the current invocation.
pub fn add(counter: fn(&Counts) -> &AtomicU64, by: u64) {
    count(|counts| {
        counter(counts).fetch_add(by, Ordering::Relaxed);
    });
}

/// Raises one counter of the current invocation to at least `value` (ages, lateness).
pub fn raise(counter: fn(&Counts) -> &AtomicU64, value: u64) {
    count(|counts| {
        counter(counts).fetch_max(value, Ordering::Relaxed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counts_land_in_their_own_invocation_and_its_tasks() {
        let first = Arc::new(Counts::default());
        let second = Arc::new(Counts::default());
        measured(first.clone(), async {
            add(|counts| &counts.requests, 2);
            tokio::spawn(inherited(async { add(|counts| &counts.requests, 1) }))
                .await
                .unwrap();
            raise(|counts| &counts.oldest_record_age_ms, 7);
            raise(|counts| &counts.oldest_record_age_ms, 3);
        })
        .await;
        measured(second.clone(), async { count(|c| c.add_units(0.5, 1.0)) }).await;
        add(|counts| &counts.requests, 100);
        assert_eq!(first.requests.load(Ordering::Relaxed), 3);
        assert_eq!(first.oldest_record_age_ms.load(Ordering::Relaxed), 7);
        assert_eq!(second.requests.load(Ordering::Relaxed), 0);
        assert_eq!((second.read_units(), second.write_units()), (0.5, 1.0));
    }
}
