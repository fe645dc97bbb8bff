//! The per-container cache that serves reads of `memory` buckets without a DynamoDB request.
//!
//! Every container keeps its own copy, so a value written through another container is seen
//! here at most `staleness` later; a write through this container updates its copy at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedValue {
    pub revision: u64,
    pub text: String,
    pub created_ms: u64,
    pub expiry_ns: Option<u64>,
}

struct Slot {
    value: CachedValue,
    fetched: Instant,
}

pub struct MemoryCache {
    staleness: Duration,
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<(String, String), Slot>,
    bytes: usize,
}

fn slot_bytes(bucket: &str, key: &str, value: &CachedValue) -> usize {
    bucket.len() + key.len() + value.text.len() + 64
}

impl MemoryCache {
    pub fn new(staleness: Duration, max_bytes: usize) -> MemoryCache {
        MemoryCache {
            staleness,
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A value fresher than the staleness bound and not expired at `now_ns`.
    pub fn get(&self, bucket: &str, key: &str, now_ns: u64) -> Option<CachedValue> {
        let inner = self.inner.lock().ok()?;
        let slot = inner.slots.get(&(bucket.to_string(), key.to_string()))?;
        let fresh = slot.fetched.elapsed() < self.staleness;
        let live = !crate::model::time::is_expired(slot.value.expiry_ns, now_ns);
        (fresh && live).then(|| slot.value.clone())
    }

    pub fn put(&self, bucket: &str, key: &str, value: CachedValue) {
        if self.staleness.is_zero() {
            return;
        }
        let size = slot_bytes(bucket, key, &value);
        if size > self.max_bytes {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let id = (bucket.to_string(), key.to_string());
        if let Some(old) = inner.slots.get(&id) {
            // A slower request must not replace a newer revision another request already cached.
            if old.value.revision > value.revision {
                return;
            }
        }
        if let Some(old) = inner.slots.remove(&id) {
            inner.bytes -= slot_bytes(&id.0, &id.1, &old.value);
        }
        if inner.bytes + size > self.max_bytes {
            inner.evict_oldest_half();
        }
        inner.bytes += size;
        inner.slots.insert(
            id,
            Slot {
                value,
                fetched: Instant::now(),
            },
        );
    }

    pub fn remove(&self, bucket: &str, key: &str) {
        if let Ok(mut inner) = self.inner.lock() {
            let id = (bucket.to_string(), key.to_string());
            if let Some(old) = inner.slots.remove(&id) {
                inner.bytes -= slot_bytes(&id.0, &id.1, &old.value);
            }
        }
    }
}

impl Inner {
    /// Eviction is rare and batched: dropping the older half keeps it amortised O(1) per insert.
    fn evict_oldest_half(&mut self) {
        let mut ages: Vec<Instant> = self.slots.values().map(|slot| slot.fetched).collect();
        ages.sort_unstable();
        let Some(cutoff) = ages.get(ages.len() / 2).copied() else {
            return;
        };
        self.slots.retain(|_, slot| slot.fetched >= cutoff);
        self.bytes = self
            .slots
            .iter()
            .map(|((bucket, key), slot)| slot_bytes(bucket, key, &slot.value))
            .sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(revision: u64, text: &str) -> CachedValue {
        CachedValue {
            revision,
            text: text.into(),
            created_ms: 1,
            expiry_ns: None,
        }
    }

    #[test]
    fn serves_fresh_values_and_keeps_the_newest_revision() {
        let cache = MemoryCache::new(Duration::from_secs(60), 1 << 20);
        assert!(cache.get("b", "k", 0).is_none());
        cache.put("b", "k", value(2, "two"));
        cache.put("b", "k", value(1, "one"));
        assert_eq!(cache.get("b", "k", 0).unwrap().text, "two");
        cache.remove("b", "k");
        assert!(cache.get("b", "k", 0).is_none());
    }

    #[test]
    fn respects_expiry_staleness_and_size() {
        let cache = MemoryCache::new(Duration::from_secs(60), 1 << 20);
        cache.put(
            "b",
            "k",
            CachedValue {
                expiry_ns: Some(10),
                ..value(1, "x")
            },
        );
        assert!(cache.get("b", "k", 9).is_some());
        assert!(cache.get("b", "k", 10).is_none());

        let stale = MemoryCache::new(Duration::ZERO, 1 << 20);
        stale.put("b", "k", value(1, "x"));
        assert!(stale.get("b", "k", 0).is_none());

        let small = MemoryCache::new(Duration::from_secs(60), 1000);
        for index in 0..100 {
            small.put("b", &index.to_string(), value(1, "0123456789"));
        }
        assert!(small.inner.lock().unwrap().bytes <= 1000);
        assert!(small.get("b", "99", 0).is_some());
    }
}

/// Per container: whether a bucket's writes need the key's head read first (history above 1,
/// or `max_bytes`), learnt from the configuration each write's revision comes with. A bucket
/// not seen yet is read as if it did; a stale answer costs one more round trip, never a wrong
/// write (the configuration that comes with the revision decides).
#[derive(Default)]
pub struct WriteShapes {
    needs_head: Mutex<HashMap<String, bool>>,
}

/// Enough for any realistic number of buckets per container; past it the map starts over.
const WRITE_SHAPES_MAX: usize = 10_000;

impl WriteShapes {
    pub fn needs_head(&self, bucket: &str) -> Option<bool> {
        self.needs_head.lock().ok()?.get(bucket).copied()
    }

    pub fn remember(&self, bucket: &str, needs_head: bool) {
        if let Ok(mut map) = self.needs_head.lock() {
            if map.len() >= WRITE_SHAPES_MAX && !map.contains_key(bucket) {
                map.clear();
            }
            map.insert(bucket.to_string(), needs_head);
        }
    }
}

/// Per container: buckets seen to exist (not being deleted) in the last `LIVE_FOR`, with their
/// incarnation, so that reads check their bucket at most once a second per container instead
/// of once a call. A bucket deleted meanwhile is served by a container that saw it live for at
/// most that long after the delete.
#[derive(Default)]
pub struct LiveBuckets {
    seen: Mutex<HashMap<String, (u64, Instant)>>,
}

pub const LIVE_FOR: Duration = Duration::from_secs(1);

impl LiveBuckets {
    /// The bucket's incarnation, if it was seen live within `LIVE_FOR`.
    pub fn incarnation(&self, bucket: &str) -> Option<u64> {
        let seen = self.seen.lock().ok()?;
        let (incarnation, at) = seen.get(bucket)?;
        (at.elapsed() < LIVE_FOR).then_some(*incarnation)
    }

    pub fn remember(&self, bucket: &str, incarnation: u64) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= WRITE_SHAPES_MAX && !seen.contains_key(bucket) {
                seen.retain(|_, (_, at)| at.elapsed() < LIVE_FOR);
                if seen.len() >= WRITE_SHAPES_MAX {
                    seen.clear();
                }
            }
            seen.insert(bucket.to_string(), (incarnation, Instant::now()));
        }
    }
}

/// How many buckets' configurations a container keeps (`BucketConfigs`).
pub const CONFIGS_MAX: usize = 10_000;

/// Per container: buckets' configurations by incarnation. A bucket's configuration never
/// changes after it is created, so a cached one is right for as long as the bucket is that
/// incarnation: the caller checks the incarnation (for instance on the usage item it reads
/// anyway) and reads the configuration only for one it has not seen.
#[derive(Default)]
pub struct BucketConfigs {
    kept: Mutex<HashMap<String, (u64, std::sync::Arc<crate::model::config::BucketConfig>)>>,
}

impl BucketConfigs {
    /// The configuration of `bucket`'s incarnation `incarnation`, if this container read it.
    pub fn get(
        &self,
        bucket: &str,
        incarnation: u64,
    ) -> Option<std::sync::Arc<crate::model::config::BucketConfig>> {
        let kept = self.kept.lock().ok()?;
        let (of, config) = kept.get(bucket)?;
        (*of == incarnation).then(|| config.clone())
    }

    pub fn remember(
        &self,
        bucket: &str,
        incarnation: u64,
        config: std::sync::Arc<crate::model::config::BucketConfig>,
    ) {
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() >= CONFIGS_MAX && !kept.contains_key(bucket) {
                kept.clear();
            }
            kept.insert(bucket.to_string(), (incarnation, config));
        }
    }
}

#[cfg(test)]
mod configs_tests {
    use super::*;
    use crate::model::config::{BucketConfig, Storage};

    fn config(history: i64) -> std::sync::Arc<BucketConfig> {
        std::sync::Arc::new(BucketConfig {
            bucket: "b".into(),
            description: String::new(),
            ttl: 0,
            history,
            max_bytes: -1,
            max_value_size: -1,
            storage: Storage::File,
            num_replicas: 1,
            compression: false,
            metadata: Default::default(),
            placement: None,
            mirror: None,
            republish: None,
            sources: Vec::new(),
        })
    }

    #[test]
    fn a_configuration_is_served_only_for_the_incarnation_it_was_read_for() {
        let configs = BucketConfigs::default();
        configs.remember("b", 1, config(1));
        assert_eq!(configs.get("b", 1).map(|kept| kept.history), Some(1));
        // Deleted and created again: the old incarnation's configuration is not served.
        assert!(configs.get("b", 2).is_none());
        configs.remember("b", 2, config(5));
        assert_eq!(configs.get("b", 2).map(|kept| kept.history), Some(5));
        assert!(configs.get("b", 1).is_none());
    }
}
