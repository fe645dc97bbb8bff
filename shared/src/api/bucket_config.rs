//! kv-bucket-create's parameters read into a `BucketConfig`: every rule of the configuration's
//! fields, with the 400 wording that names the offending field.

use crate::api::params::{as_bool, as_int, as_str, Params};
use crate::model::config::*;
use crate::model::error::KvError;
use crate::model::validate::{self, truncate, type_name};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub fn bucket_config(params: &Params) -> Result<BucketConfig, KvError> {
    let bucket = params.required_str("bucket")?;
    validate::bucket_name(bucket)?;
    let limit = |name: &str| -> Result<i64, KvError> {
        match params.opt_int(name, -1, i64::MAX)? {
            None | Some(-1) => Ok(-1),
            Some(0) => Err(KvError::param(format!(
                "Parameter '{name}' must be -1 (unlimited) or greater than 0, got 0"
            ))),
            Some(bytes) => Ok(bytes),
        }
    };
    let storage = match params.opt_str("storage")? {
        None | Some("file") => Storage::File,
        Some("memory") => Storage::Memory,
        Some(other) => {
            return Err(KvError::param(format!(
                "Parameter 'storage' must be 'file' or 'memory' (lowercase), got '{}'",
                truncate(other)
            )))
        }
    };
    let mirror = params
        .raw("mirror")
        .map(|value| stream_source("mirror", value))
        .transpose()?;
    let sources = match params.raw("sources") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| stream_source(&format!("sources[{index}]"), item))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(KvError::param(format!(
                "Parameter 'sources' must be an array of objects, got {}",
                type_name(other)
            )))
        }
    };
    if mirror.is_some() && !sources.is_empty() {
        // NATS refuses a stream that both mirrors and sources: a mirror is an exact copy.
        return Err(KvError::param(
            "Parameters 'mirror' and 'sources' cannot be used together: a mirror is a read-only copy of one bucket",
        ));
    }
    Ok(BucketConfig {
        bucket: bucket.to_string(),
        description: params.opt_str("description")?.unwrap_or("").to_string(),
        ttl: params.opt_int("ttl", 0, i64::MAX)?.unwrap_or(0),
        history: params.opt_int("history", 1, MAX_HISTORY)?.unwrap_or(1),
        max_bytes: limit("max_bytes")?,
        max_value_size: limit("max_value_size")?,
        storage,
        num_replicas: params
            .opt_int("num_replicas", 1, MAX_REPLICAS)?
            .unwrap_or(1),
        compression: params.opt_bool("compression")?.unwrap_or(false),
        metadata: string_map("metadata", params.raw("metadata"))?,
        placement: params.raw("placement").map(placement).transpose()?,
        mirror,
        republish: params.raw("republish").map(republish).transpose()?,
        sources,
    })
}

fn object<'a>(
    name: &str,
    value: &'a Value,
    accepted: &[&str],
) -> Result<&'a Map<String, Value>, KvError> {
    let Value::Object(map) = value else {
        return Err(KvError::param(format!(
            "Parameter '{name}' must be an object, got {}",
            type_name(value)
        )));
    };
    if let Some(unknown) = map.keys().find(|field| !accepted.contains(&field.as_str())) {
        return Err(KvError::param(format!(
            "Unknown field '{}' in '{name}'; accepted fields: {}",
            truncate(unknown),
            accepted.join(", ")
        )));
    }
    Ok(map)
}

fn field<'a>(map: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    map.get(name).filter(|value| !value.is_null())
}

fn opt_string(
    parent: &str,
    map: &Map<String, Value>,
    name: &str,
) -> Result<Option<String>, KvError> {
    field(map, name)
        .map(|value| as_str(&format!("{parent}.{name}"), value).map(str::to_string))
        .transpose()
}

fn string_map(name: &str, value: Option<&Value>) -> Result<BTreeMap<String, String>, KvError> {
    let Some(value) = value else {
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
            as_str(&format!("{name}.{}", truncate(key)), value)
                .map(|text| (key.clone(), text.to_string()))
        })
        .collect()
}

fn string_list(name: &str, value: Option<&Value>) -> Result<Vec<String>, KvError> {
    match value {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| as_str(&format!("{name}[{index}]"), item).map(str::to_string))
            .collect(),
        Some(other) => Err(KvError::param(format!(
            "Parameter '{name}' must be an array of strings, got {}",
            type_name(other)
        ))),
    }
}

fn placement(value: &Value) -> Result<Placement, KvError> {
    let map = object("placement", value, &["cluster", "tags"])?;
    Ok(Placement {
        cluster: opt_string("placement", map, "cluster")?,
        tags: string_list("placement.tags", field(map, "tags"))?,
    })
}

fn stream_source(name: &str, value: &Value) -> Result<StreamSource, KvError> {
    let map = object(
        name,
        value,
        &[
            "name",
            "domain",
            "filter_subject",
            "opt_start_seq",
            "opt_start_time",
            "subject_transforms",
        ],
    )?;
    let source_name = match field(map, "name") {
        None => {
            return Err(KvError::param(format!(
                "Parameter '{name}.name' is required: the bucket to copy from"
            )))
        }
        Some(value) => as_str(&format!("{name}.name"), value)?,
    };
    validate::bucket_name(source_name).map_err(|error| {
        KvError::param(format!(
            "Parameter '{name}.name' must be a bucket name: {error}"
        ))
    })?;
    let int = |field_name: &str| {
        field(map, field_name)
            .map(|value| as_int(&format!("{name}.{field_name}"), value, 0, i64::MAX))
            .transpose()
    };
    let transforms = match field(map, "subject_transforms") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let path = format!("{name}.subject_transforms[{index}]");
                let transform = object(&path, item, &["src", "dest"])?;
                Ok(SubjectTransform {
                    src: opt_string(&path, transform, "src")?.unwrap_or_default(),
                    dest: opt_string(&path, transform, "dest")?.ok_or_else(|| {
                        KvError::param(format!("Parameter '{path}.dest' is required"))
                    })?,
                })
            })
            .collect::<Result<_, KvError>>()?,
        Some(other) => {
            return Err(KvError::param(format!(
                "Parameter '{name}.subject_transforms' must be an array of {{src, dest}} objects, got {}",
                type_name(other)
            )))
        }
    };
    Ok(StreamSource {
        name: source_name.to_string(),
        domain: opt_string(name, map, "domain")?,
        filter_subject: opt_string(name, map, "filter_subject")?,
        opt_start_seq: int("opt_start_seq")?,
        opt_start_time: int("opt_start_time")?,
        subject_transforms: transforms,
    })
}

fn republish(value: &Value) -> Result<Republish, KvError> {
    let map = object(
        "republish",
        value,
        &["src", "source", "dest", "headers_only"],
    )?;
    if field(map, "src").is_some() && field(map, "source").is_some() {
        return Err(KvError::param(
            "Parameter 'republish' takes 'src' or its alias 'source', not both",
        ));
    }
    let src = match opt_string("republish", map, "src")? {
        Some(src) => src,
        None => opt_string("republish", map, "source")?.unwrap_or_else(|| ">".to_string()),
    };
    let dest = opt_string("republish", map, "dest")?.ok_or_else(|| {
        KvError::param("Parameter 'republish.dest' is required: the subject to republish to")
    })?;
    let headers_only = field(map, "headers_only")
        .map(|value| as_bool("republish.headers_only", value))
        .transpose()?
        .unwrap_or(false);
    Ok(Republish {
        src,
        dest,
        headers_only,
    })
}
