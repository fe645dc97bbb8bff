//! A bucket's configuration (read from kv-bucket-create's parameters by `api::bucket_config`),
//! stored with the bucket and returned in `config` with every default filled in; and the
//! functions' settings from the environment.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const MAX_HISTORY: i64 = 64;
pub const MAX_REPLICAS: i64 = 5;

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
}

pub const DEFAULT_BUCKETS_TABLE: &str = "kv-buckets";
pub const DEFAULT_ITEMS_TABLE: &str = "kv-items";
/// The account's default bus.
pub const DEFAULT_EVENT_BUS: &str = "default";

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
        Ok(Settings {
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
}
