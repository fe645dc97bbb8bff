//! Reading an event's parameters, one reader per kind of parameter: each checks the type and
//! range and words the 400 that names the parameter. `requests` says which reader each
//! parameter of each function goes through.

use crate::api::function::Function;
use crate::model::error::KvError;
use crate::model::validate::{self, truncate, type_name};
use serde_json::{Map, Value};

/// The parameter object of one invocation (after unwrapping the flow-step form), or an object
/// nested in it (`mirror`, `sources[0]`), whose parameters are named by their path.
#[derive(Debug)]
pub struct Params {
    map: Map<String, Value>,
    /// `""` at the top, `"mirror."` inside `mirror`.
    path: String,
}

impl Params {
    /// Accepts either the parameter object itself or `{"function": NAME, "params": {...}}`,
    /// and rejects any parameter the function does not know (a misspelt `ttl_seconds` must not
    /// silently become "no TTL").
    pub fn from_event(function: Function, event: Value) -> Result<Params, KvError> {
        let Value::Object(mut map) = event else {
            return Err(KvError::param(format!(
                "The event must be a JSON object of parameters, got {}",
                type_name(&event)
            )));
        };
        if map.contains_key("function") {
            map = unwrap_flow_step(function, map)?;
        }
        let accepted = function.accepted_params();
        let mut unknown: Vec<&str> = map
            .keys()
            .map(String::as_str)
            .filter(|name| !accepted.contains(name))
            .collect();
        if !unknown.is_empty() {
            unknown.sort_unstable();
            let list = if accepted.is_empty() {
                "none".to_string()
            } else {
                accepted.join(", ")
            };
            return Err(KvError::param(format!(
                "Unknown parameter{} {} for {}; accepted parameters: {}",
                if unknown.len() > 1 { "s" } else { "" },
                unknown
                    .iter()
                    .map(|name| format!("'{}'", truncate(name)))
                    .collect::<Vec<_>>()
                    .join(", "),
                function.name(),
                list
            )));
        }
        Ok(Params {
            map,
            path: String::new(),
        })
    }

    /// The object at parameter `name` (a path such as `mirror` or `sources[0]`), whose fields
    /// must be among `accepted`.
    pub fn nested(name: &str, value: &Value, accepted: &[&str]) -> Result<Params, KvError> {
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
        Ok(Params {
            map: map.clone(),
            path: format!("{name}."),
        })
    }

    /// How a message names the parameter: its path from the top of the event.
    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.path)
    }

    /// A present, non-null parameter; null reads as absent because Step Functions passes nulls
    /// for unset JSONPath results.
    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|value| !value.is_null())
    }

    /// A parameter that is accepted and not read (the fields of a scheduled event).
    pub fn unread(&self, name: &str) -> Result<Option<Value>, KvError> {
        Ok(self.raw(name).cloned())
    }

    /// The `Records` of a DynamoDB stream event, for the functions a stream feeds.
    pub fn stream_records(&self, name: &str) -> Result<Vec<Value>, KvError> {
        match self.raw(name) {
            Some(Value::Array(records)) => Ok(records.clone()),
            Some(other) => Err(KvError::param(format!(
                "Parameter '{name}' must be the array of a DynamoDB stream event, got {}",
                type_name(other)
            ))),
            None => Err(KvError::param(format!(
                "Missing required parameter '{name}' (a DynamoDB stream event)"
            ))),
        }
    }

    pub fn required_str(&self, name: &str) -> Result<String, KvError> {
        match self.raw(name) {
            None => Err(KvError::param(format!(
                "Missing required parameter '{}'",
                self.path(name)
            ))),
            Some(value) => as_str(&self.path(name), value),
        }
    }

    /// A bucket's name, checked against the naming rules.
    pub fn bucket(&self, name: &str) -> Result<String, KvError> {
        let bucket = self.required_str(name)?;
        validate::bucket_name(&bucket)?;
        Ok(bucket)
    }

    /// A key, checked against the naming rules.
    pub fn key(&self, name: &str) -> Result<String, KvError> {
        let key = self.required_str(name)?;
        validate::key(&key)?;
        Ok(key)
    }

    /// A value to store: a string as it is, an object or array as its JSON text (null is an
    /// error here, not "absent": it is a value the store cannot hold).
    pub fn value(&self, name: &str) -> Result<String, KvError> {
        validate::value_text(self.map.get(name))
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<String>, KvError> {
        self.raw(name)
            .map(|value| as_str(&self.path(name), value))
            .transpose()
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, KvError> {
        self.raw(name)
            .map(|value| as_bool(&self.path(name), value))
            .transpose()
    }

    /// A boolean that is false when absent.
    pub fn flag(&self, name: &str) -> Result<bool, KvError> {
        Ok(self.opt_bool(name)?.unwrap_or(false))
    }

    /// An optional integer within `min..=max`; the message states the range.
    pub fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, KvError> {
        self.raw(name)
            .map(|value| as_int(&self.path(name), value, min, max))
            .transpose()
    }

    /// An integer within `min..=max`, `default` when absent.
    pub fn int_or(&self, name: &str, min: i64, max: i64, default: i64) -> Result<i64, KvError> {
        Ok(self.opt_int(name, min, max)?.unwrap_or(default))
    }

    /// An optional revision (a bucket's sequence number), at least `min`.
    pub fn opt_revision(&self, name: &str, min: i64) -> Result<Option<u64>, KvError> {
        Ok(self
            .opt_int(name, min, i64::MAX)?
            .map(|revision| revision.unsigned_abs()))
    }

    /// A revision (sequence number) to start after, 0 when absent.
    pub fn revision_or_zero(&self, name: &str) -> Result<u64, KvError> {
        Ok(self.opt_revision(name, 0)?.unwrap_or(0))
    }
}

fn unwrap_flow_step(
    function: Function,
    mut map: Map<String, Value>,
) -> Result<Map<String, Value>, KvError> {
    match map.remove("function") {
        Some(Value::String(name)) if name == function.name() => {}
        Some(Value::String(name)) => {
            return Err(KvError::param(format!(
                "This is {}, but the event names function '{}'",
                function.name(),
                truncate(&name)
            )))
        }
        Some(other) => {
            return Err(KvError::param(format!(
                "Parameter 'function' must be a string naming {}, got {}",
                function.name(),
                type_name(&other)
            )))
        }
        None => {}
    }
    let params = match map.remove("params") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(params)) => params,
        Some(other) => {
            return Err(KvError::param(format!(
                "Parameter 'params' must be an object of parameters, got {}",
                type_name(&other)
            )))
        }
    };
    if let Some(extra) = map.keys().next() {
        return Err(KvError::param(format!(
            "Unknown parameter '{}' beside 'function' and 'params'; put parameters inside 'params'",
            truncate(extra)
        )));
    }
    Ok(params)
}

pub fn as_str(name: &str, value: &Value) -> Result<String, KvError> {
    value.as_str().map(str::to_string).ok_or_else(|| {
        KvError::param(format!(
            "Parameter '{name}' must be a string, got {}",
            type_name(value)
        ))
    })
}

pub fn as_bool(name: &str, value: &Value) -> Result<bool, KvError> {
    value.as_bool().ok_or_else(|| {
        KvError::param(format!(
            "Parameter '{name}' must be true or false, got {}",
            type_name(value)
        ))
    })
}

pub fn as_int(name: &str, value: &Value, min: i64, max: i64) -> Result<i64, KvError> {
    let out_of_range = || {
        KvError::param(format!(
            "Parameter '{name}' must be an integer from {min} to {max}, got {}",
            describe(value)
        ))
    };
    let Value::Number(number) = value else {
        return Err(KvError::param(format!(
            "Parameter '{name}' must be an integer, got {}",
            type_name(value)
        )));
    };
    match number.as_i64() {
        Some(int) if (min..=max).contains(&int) => Ok(int),
        Some(_) => Err(out_of_range()),
        None if number.is_u64() => Err(out_of_range()),
        None => Err(KvError::param(format!(
            "Parameter '{name}' must be a whole number, got {number}"
        ))),
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::Number(number) => number.to_string(),
        other => type_name(other).to_string(),
    }
}
