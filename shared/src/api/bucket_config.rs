//! kv-bucket-create's parameters read into a `BucketConfig`: every rule of the configuration's
//! fields, with the 400 wording that names the offending field.

use crate::api::params::{as_str, Params};
use crate::api::requests::{request, Request};
use crate::model::config::*;
use crate::model::error::KvError;
use crate::model::limits::{encoded_len, MAX_CONFIG_BYTES};
use crate::model::subject_map::{RepublishMap, SourceMap};
use crate::model::validate::{self, truncate, type_name};
use serde_json::Value;
use std::collections::BTreeMap;

request! {
    impl BucketConfig then bucket_rules {
        bucket = bucket,
        description = str_or_empty,
        ttl = int_or(0, i64::MAX, 0),
        history = int_or(1, MAX_HISTORY, 1),
        max_bytes = limit,
        max_value_size = limit,
        storage = storage,
        num_replicas = int_or(1, MAX_REPLICAS, 1),
        compression = flag,
        metadata = string_map,
        placement = opt_placement,
        mirror = opt_stream_source,
        republish = opt_republish,
        sources = stream_sources,
    }
}

request! {
    impl Placement {
        cluster = opt_str,
        tags = string_list,
    }
}

request! {
    impl StreamSource {
        name = source_bucket,
        domain = opt_str,
        filter_subject = opt_str,
        opt_start_seq = opt_int(0, i64::MAX),
        opt_start_time = opt_int(0, i64::MAX),
        subject_transforms = subject_transforms,
    }
}

request! {
    impl SubjectTransform {
        src = str_or_empty,
        dest = required_str,
    }
}

request! {
    /// `republish` as sent: `source` is an alias of `src`.
    pub struct RepublishParams {
        src: Option<String> = opt_str,
        source: Option<String> = opt_str,
        dest: String = required_str,
        headers_only: bool = flag,
    }
}

/// The rules across fields: NATS refuses a stream that both mirrors and sources (a mirror is
/// an exact copy), and every subject mapping must be one nats-server accepts.
fn bucket_rules(config: &BucketConfig) -> Result<(), KvError> {
    config_size(config)?;
    if config.mirror.is_some() && !config.sources.is_empty() {
        return Err(KvError::param(
            "Parameters 'mirror' and 'sources' cannot be used together: a mirror is a read-only copy of one bucket",
        ));
    }
    if let Some(republish) = &config.republish {
        RepublishMap::new(&config.bucket, &republish.src, &republish.dest)
            .map_err(|why| KvError::param(format!("Parameter 'republish': {why}")))?;
    }
    let copies = config
        .mirror
        .iter()
        .map(|mirror| ("mirror".to_string(), mirror))
        .chain(
            config
                .sources
                .iter()
                .enumerate()
                .map(|(index, source)| (format!("sources[{index}]"), source)),
        );
    for (path, source) in copies {
        // A NATS domain is another JetStream cluster; here every bucket lives in this
        // deployment's tables, and a copy from elsewhere would silently be a copy from here.
        if let Some(domain) = &source.domain {
            return Err(KvError::param(format!(
                "Parameter '{path}.domain' ('{}') is not supported: this deployment copies only between its own buckets",
                truncate(domain)
            )));
        }
        SourceMap::new(
            &source.name,
            source.filter_subject.as_deref(),
            &source.subject_transforms,
        )
        .map_err(|why| KvError::param(format!("Parameter '{path}': {why}")))?;
    }
    Ok(())
}

/// A configuration within `MAX_CONFIG_BYTES` as stored, or a 413 naming its largest part.
fn config_size(config: &BucketConfig) -> Result<(), KvError> {
    let size = encoded_len(config);
    if size <= MAX_CONFIG_BYTES {
        return Ok(());
    }
    let parts = [
        ("description", encoded_len(&config.description)),
        ("metadata", encoded_len(&config.metadata)),
        ("mirror", encoded_len(&config.mirror)),
        ("sources", encoded_len(&config.sources)),
        ("republish", encoded_len(&config.republish)),
        ("placement", encoded_len(&config.placement)),
    ];
    let (largest, largest_size) = parts
        .into_iter()
        .max_by_key(|(_, size)| *size)
        .unwrap_or(("metadata", 0));
    Err(KvError::ConfigTooLarge(format!(
        "The bucket's configuration is {size} bytes as stored, more than the limit of {MAX_CONFIG_BYTES} bytes; parameter '{largest}' takes {largest_size} of them"
    )))
}

/// Reads the object at `name` into `T`, with `T`'s fields as the only accepted ones.
fn nested<T: Request>(name: &str, value: &Value) -> Result<T, KvError> {
    T::read(&Params::nested(name, value, T::FIELDS)?)
}

impl Params {
    fn str_or_empty(&self, name: &str) -> Result<String, KvError> {
        Ok(self.opt_str(name)?.unwrap_or_default())
    }

    /// A size limit: -1 (the default) means unlimited; 0 would refuse everything.
    fn limit(&self, name: &str) -> Result<i64, KvError> {
        match self.opt_int(name, -1, i64::MAX)? {
            None | Some(-1) => Ok(-1),
            Some(0) => Err(KvError::param(format!(
                "Parameter '{name}' must be -1 (unlimited) or greater than 0, got 0"
            ))),
            Some(bytes) => Ok(bytes),
        }
    }

    fn storage(&self, name: &str) -> Result<Storage, KvError> {
        match self.opt_str(name)?.as_deref() {
            None | Some("file") => Ok(Storage::File),
            Some("memory") => Ok(Storage::Memory),
            Some(other) => Err(KvError::param(format!(
                "Parameter '{name}' must be 'file' or 'memory' (lowercase), got '{}'",
                truncate(other)
            ))),
        }
    }

    fn string_map(&self, name: &str) -> Result<BTreeMap<String, String>, KvError> {
        let Some(value) = self.raw(name) else {
            return Ok(BTreeMap::new());
        };
        let Value::Object(map) = value else {
            return Err(KvError::param(format!(
                "Parameter '{name}' must be an object of string values, got {}",
                type_name(value)
            )));
        };
        map.iter()
            .map(|(key, value)| {
                as_str(&format!("{name}.{}", truncate(key)), value).map(|text| (key.clone(), text))
            })
            .collect()
    }

    fn string_list(&self, name: &str) -> Result<Vec<String>, KvError> {
        self.array(name, "strings", as_str)
    }

    fn opt_placement(&self, name: &str) -> Result<Option<Placement>, KvError> {
        self.opt_nested(name)
    }

    fn opt_stream_source(&self, name: &str) -> Result<Option<StreamSource>, KvError> {
        self.opt_nested(name)
    }

    fn stream_sources(&self, name: &str) -> Result<Vec<StreamSource>, KvError> {
        self.array(name, "objects", nested)
    }

    fn opt_nested<T: Request>(&self, name: &str) -> Result<Option<T>, KvError> {
        let path = self.path(name);
        self.raw(name).map(|value| nested(&path, value)).transpose()
    }

    /// An array (empty when absent) whose items are read by `item`, each named by its path
    /// (`sources[1]`); `of_what` says what the items must be.
    fn array<T>(
        &self,
        name: &str,
        of_what: &str,
        item: impl Fn(&str, &Value) -> Result<T, KvError>,
    ) -> Result<Vec<T>, KvError> {
        let path = self.path(name);
        match self.raw(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(index, value)| item(&format!("{path}[{index}]"), value))
                .collect(),
            Some(other) => Err(KvError::param(format!(
                "Parameter '{path}' must be an array of {of_what}, got {}",
                type_name(other)
            ))),
        }
    }

    fn opt_republish(&self, name: &str) -> Result<Option<Republish>, KvError> {
        let Some(value) = self.raw(name) else {
            return Ok(None);
        };
        let sent: RepublishParams = nested(&self.path(name), value)?;
        let src = match (sent.src, sent.source) {
            (Some(_), Some(_)) => {
                return Err(KvError::param(format!(
                    "Parameter '{name}' takes 'src' or its alias 'source', not both"
                )))
            }
            (Some(src), None) | (None, Some(src)) => src,
            (None, None) => ">".to_string(),
        };
        Ok(Some(Republish {
            src,
            dest: sent.dest,
            headers_only: sent.headers_only,
        }))
    }

    /// The bucket a mirror or source copies from.
    fn source_bucket(&self, name: &str) -> Result<String, KvError> {
        let path = self.path(name);
        let bucket = self.opt_str(name)?.ok_or_else(|| {
            KvError::param(format!(
                "Parameter '{path}' is required: the bucket to copy from"
            ))
        })?;
        validate::bucket_name(&bucket).map_err(|error| {
            KvError::param(format!("Parameter '{path}' must be a bucket name: {error}"))
        })?;
        Ok(bucket)
    }

    fn subject_transforms(&self, name: &str) -> Result<Vec<SubjectTransform>, KvError> {
        self.array(name, "{src, dest} objects", nested)
    }
}
