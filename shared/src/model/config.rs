//! A bucket's configuration (read from kv-bucket-create's parameters by `api::bucket_config`),
//! stored with the bucket and returned in `config` with every default filled in; and the
//! functions' settings from the environment.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use crate::model::limits::{MAX_HISTORY, MAX_REPLICAS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    File,
    Memory,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketConfig {
    pub bucket: String,
    pub description: String,
    /// Nanoseconds; 0 means values never expire.
    pub ttl: i64,
    pub history: i64,
    /// -1 means unlimited.
    pub max_bytes: i64,
    /// -1 means unlimited.
    pub max_value_size: i64,
    pub storage: Storage,
    pub num_replicas: i64,
    pub compression: bool,
    pub metadata: BTreeMap<String, String>,
    pub placement: Option<Placement>,
    pub mirror: Option<StreamSource>,
    pub republish: Option<Republish>,
    pub sources: Vec<StreamSource>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub cluster: Option<String>,
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSource {
    pub name: String,
    pub domain: Option<String>,
    pub filter_subject: Option<String>,
    pub opt_start_seq: Option<i64>,
    pub opt_start_time: Option<i64>,
    pub subject_transforms: Vec<SubjectTransform>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectTransform {
    pub src: String,
    pub dest: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Republish {
    pub src: String,
    pub dest: String,
    pub headers_only: bool,
}

impl BucketConfig {
    /// The buckets this one copies from: its mirror's origin, or its sources, each once.
    pub fn origins(&self) -> Vec<&str> {
        let mut origins: Vec<&str> = self
            .mirror
            .iter()
            .chain(&self.sources)
            .map(|source| source.name.as_str())
            .collect();
        origins.sort_unstable();
        origins.dedup();
        origins
    }

    /// How this bucket copies from `origin`, if it does.
    pub fn copies_from(&self, origin: &str) -> Option<&StreamSource> {
        self.mirror
            .iter()
            .chain(&self.sources)
            .find(|source| source.name == origin)
    }
}

/// Where the functions find their tables and how the memory cache behaves, from the environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub buckets_table: String,
    pub items_table: String,
    pub memory_cache_staleness_ms: u64,
    pub memory_cache_max_bytes: usize,
    /// How long one kv-bucket-delete or purger invocation keeps purging before it hands the
    /// rest on (always also bounded by the Lambda deadline).
    pub purge_budget_ms: u64,
    /// The EventBridge bus that buckets' `republish` puts their revisions on.
    pub event_bus: String,
    /// The region the functions and the items table live in (`AWS_REGION`, which Lambda sets).
    pub home_region: String,
    /// The other regions the items table is replicated to as a global table
    /// (`KV_REPLICA_REGIONS`, comma-separated; none by default). Never contains `home_region`.
    pub replica_regions: Vec<String>,
    /// The name a bucket's `placement.cluster` must give (`KV_CLUSTER`; the home region by
    /// default, since one deployment is one region's DynamoDB).
    pub cluster: String,
    /// The tags a bucket's `placement.tags` may ask for (`KV_PLACEMENT_TAGS`, comma-separated).
    pub placement_tags: Vec<String>,
    /// The CloudWatch namespace of the functions' metric records (`KV_METRICS_NAMESPACE`; the
    /// template gives each stack its own, so that two stacks' metrics never mix).
    pub metrics_namespace: String,
}

/// The metric records' namespace when the environment names none (local runs).
pub const DEFAULT_METRICS_NAMESPACE: &str = "KeyValue";

pub const DEFAULT_BUCKETS_TABLE: &str = "kv-buckets";
pub const DEFAULT_ITEMS_TABLE: &str = "kv-items";
/// The account's default bus.
pub const DEFAULT_EVENT_BUS: &str = "default";
/// Lambda always sets `AWS_REGION`; this is for tools and tests, whose clients use this region
/// against DynamoDB Local.
pub const DEFAULT_REGION: &str = "us-east-1";

impl Settings {
    /// The settings from the environment. A variable that is set but not a number is an error
    /// naming it: silently falling back to the default would hide a typo in the template.
    pub fn from_env() -> Result<Settings, String> {
        Settings::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, String> {
        let var = |name: &str| lookup(name).filter(|value| !value.is_empty());
        let defaults = Settings::defaults();
        let number = |name: &str, default: u64| -> Result<u64, String> {
            match var(name) {
                None => Ok(default),
                Some(text) => text.trim().parse().map_err(|_| {
                    format!("Environment variable {name} must be a whole number, not '{text}'")
                }),
            }
        };
        let home_region = var("AWS_REGION").unwrap_or(defaults.home_region);
        let mut replica_regions = Vec::new();
        for region in list(var("KV_REPLICA_REGIONS")) {
            // A region name goes into messages and is compared with the SDK's region names: a
            // stray character is a typo in the template, not a region.
            if !region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return Err(format!(
                    "Environment variable KV_REPLICA_REGIONS must list region names such as eu-west-1, not '{region}'"
                ));
            }
            // The home region always holds the table; naming it again adds no copies.
            if region != home_region && !replica_regions.contains(&region) {
                replica_regions.push(region);
            }
        }
        Ok(Settings {
            cluster: var("KV_CLUSTER").unwrap_or_else(|| home_region.clone()),
            placement_tags: list(var("KV_PLACEMENT_TAGS")),
            home_region,
            replica_regions,
            buckets_table: var("KV_BUCKETS_TABLE").unwrap_or(defaults.buckets_table),
            items_table: var("KV_ITEMS_TABLE").unwrap_or(defaults.items_table),
            memory_cache_staleness_ms: number(
                "KV_MEMORY_CACHE_MS",
                defaults.memory_cache_staleness_ms,
            )?,
            memory_cache_max_bytes: usize::try_from(number(
                "KV_MEMORY_CACHE_MAX_BYTES",
                defaults.memory_cache_max_bytes as u64,
            )?)
            .map_err(|_| {
                "Environment variable KV_MEMORY_CACHE_MAX_BYTES is too large".to_string()
            })?,
            purge_budget_ms: number("KV_PURGE_BUDGET_MS", defaults.purge_budget_ms)?,
            event_bus: var("KV_EVENT_BUS").unwrap_or(defaults.event_bus),
            metrics_namespace: var("KV_METRICS_NAMESPACE").unwrap_or(defaults.metrics_namespace),
        })
    }

    fn defaults() -> Settings {
        Settings {
            buckets_table: DEFAULT_BUCKETS_TABLE.into(),
            items_table: DEFAULT_ITEMS_TABLE.into(),
            memory_cache_staleness_ms: 1000,
            memory_cache_max_bytes: 64 * 1024 * 1024,
            purge_budget_ms: 60_000,
            event_bus: DEFAULT_EVENT_BUS.into(),
            home_region: DEFAULT_REGION.into(),
            replica_regions: Vec::new(),
            cluster: DEFAULT_REGION.into(),
            placement_tags: Vec::new(),
            metrics_namespace: DEFAULT_METRICS_NAMESPACE.into(),
        }
    }

    /// Default settings on the given tables (tests and tools that make their own tables).
    pub fn with_tables(buckets_table: &str, items_table: &str) -> Settings {
        Settings {
            buckets_table: buckets_table.into(),
            items_table: items_table.into(),
            ..Settings::defaults()
        }
    }
}

/// A comma-separated variable's items, trimmed, without empty ones: the template joins an empty
/// `CommaDelimitedList` parameter into "".
fn list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod settings_tests {
    use super::*;

    #[test]
    fn a_malformed_variable_is_an_error_naming_it() {
        let error =
            Settings::from_vars(|name| (name == "KV_MEMORY_CACHE_MS").then(|| "abc".into()))
                .expect_err("abc is not a number");
        assert!(
            error.contains("KV_MEMORY_CACHE_MS") && error.contains("abc"),
            "{error}"
        );
        let settings =
            Settings::from_vars(|name| (name == "KV_PURGE_BUDGET_MS").then(|| "500".into()))
                .expect("500 is a number");
        assert_eq!(settings.purge_budget_ms, 500);
        assert_eq!(settings.memory_cache_staleness_ms, 1000);
    }

    #[test]
    fn the_deployment_comes_from_the_region_and_the_kv_variables() {
        let settings = Settings::from_vars(|_| None).expect("no variables, the defaults");
        assert_eq!(settings.home_region, DEFAULT_REGION);
        assert!(settings.replica_regions.is_empty());
        assert_eq!(settings.cluster, DEFAULT_REGION);
        assert!(settings.placement_tags.is_empty());

        let vars = |name: &str| match name {
            "AWS_REGION" => Some("eu-west-1".to_string()),
            // As the template joins them; the home region and a repeat add nothing.
            "KV_REPLICA_REGIONS" => Some("us-east-1, eu-west-1,,us-east-1,ap-south-1".into()),
            "KV_PLACEMENT_TAGS" => Some("ssd, fast".into()),
            _ => None,
        };
        let settings = Settings::from_vars(vars).expect("valid variables");
        assert_eq!(settings.home_region, "eu-west-1");
        assert_eq!(settings.replica_regions, ["us-east-1", "ap-south-1"]);
        // The cluster is the home region unless named.
        assert_eq!(settings.cluster, "eu-west-1");
        assert_eq!(settings.placement_tags, ["ssd", "fast"]);

        let named = Settings::from_vars(|name| (name == "KV_CLUSTER").then(|| "east".into()))
            .expect("a cluster name");
        assert_eq!(named.cluster, "east");

        let error =
            Settings::from_vars(|name| (name == "KV_REPLICA_REGIONS").then(|| "eu west 1".into()))
                .expect_err("not a region name");
        assert!(
            error.contains("KV_REPLICA_REGIONS") && error.contains("eu west 1"),
            "{error}"
        );
    }
}
