//! What a container keeps between invocations, handed to every operation.

use crate::bus::EventBus;
use crate::model::cache::{BucketConfigs, LiveBuckets, MemoryCache, WriteShapes};
use crate::model::config::Settings;
use crate::model::placement::Deployment;
use crate::store::Store;
use crate::tokens::TaskTokens;
use std::time::Duration;

/// What a container keeps between invocations: the DynamoDB client (and its connection pool),
/// the `memory` bucket cache, for the function that republishes the EventBridge client, and for
/// those that resume flows the Step Functions client.
pub struct Kv {
    pub store: Store,
    pub bus: Option<EventBus>,
    pub tokens: Option<TaskTokens>,
    pub cache: MemoryCache,
    pub write_shapes: WriteShapes,
    pub live_buckets: LiveBuckets,
    /// Buckets' configurations by incarnation, for the stream's replication.
    pub bucket_configs: BucketConfigs,
    /// Commit windows this container opened on mirrors, reused by later copies.
    pub commit_windows: crate::ops::copies::CommitWindows,
    /// Where this container's metric records go (`Settings::metrics_namespace`).
    pub metrics_namespace: String,
    pub purge_budget: Duration,
    /// What buckets' `num_replicas` and `placement` can ask of this deployment.
    pub deployment: Deployment,
}

impl Kv {
    pub fn new(client: aws_sdk_dynamodb::Client, settings: &Settings) -> Kv {
        Kv {
            store: Store::new(client, settings),
            bus: None,
            tokens: None,
            cache: MemoryCache::new(
                Duration::from_millis(settings.memory_cache_staleness_ms),
                settings.memory_cache_max_bytes,
            ),
            write_shapes: WriteShapes::default(),
            live_buckets: LiveBuckets::default(),
            bucket_configs: BucketConfigs::default(),
            commit_windows: Default::default(),
            metrics_namespace: settings.metrics_namespace.clone(),
            purge_budget: Duration::from_millis(settings.purge_budget_ms),
            deployment: Deployment::from_settings(settings),
        }
    }
}
