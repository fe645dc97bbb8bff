//! Reading a function's event into typed parameters, with errors that name the parameter.

use crate::api::function::Function;
use crate::model::error::KvError;
use crate::model::validate::{truncate, type_name};
use serde_json::{Map, Value};

/// The parameter object of one invocation, after unwrapping the flow-step form.
#[derive(Debug)]
pub struct Params {
    map: Map<String, Value>,
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
        Ok(Params { map })
    }

    /// A present, non-null parameter; null reads as absent because Step Functions passes nulls
    /// for unset JSONPath results.
    fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name).filter(|value| !value.is_null())
    }

    pub fn raw(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }

    /// The `Records` of a DynamoDB stream event, for the functions a stream feeds.
    pub fn stream_records(&self) -> Result<&Vec<Value>, KvError> {
        match self.raw("Records") {
            Some(Value::Array(records)) => Ok(records),
            Some(other) => Err(KvError::param(format!(
                "Parameter 'Records' must be the array of a DynamoDB stream event, got {}",
                type_name(other)
            ))),
            None => Err(KvError::param(
                "Missing required parameter 'Records' (a DynamoDB stream event)",
            )),
        }
    }

    /// The parameter as sent, null included, for parameters where null is itself an error.
    pub fn raw_with_null(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    pub fn required_str(&self, name: &str) -> Result<&str, KvError> {
        match self.get(name) {
            None => Err(KvError::param(format!(
                "Missing required parameter '{name}'"
            ))),
            Some(value) => as_str(name, value),
        }
    }

    /// The required `bucket`, checked against the naming rules.
    pub fn bucket(&self) -> Result<&str, KvError> {
        let bucket = self.required_str("bucket")?;
        crate::model::validate::bucket_name(bucket)?;
        Ok(bucket)
    }

    /// The required `bucket` and `key`, both checked against the naming rules.
    pub fn bucket_and_key(&self) -> Result<(&str, &str), KvError> {
        let bucket = self.bucket()?;
        let key = self.required_str("key")?;
        crate::model::validate::key(key)?;
        Ok((bucket, key))
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<&str>, KvError> {
        self.get(name).map(|value| as_str(name, value)).transpose()
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, KvError> {
        self.get(name).map(|value| as_bool(name, value)).transpose()
    }

    /// An optional integer within `min..=max`; the message states the range.
    pub fn opt_int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, KvError> {
        self.get(name)
            .map(|value| as_int(name, value, min, max))
            .transpose()
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

pub fn as_str<'a>(name: &str, value: &'a Value) -> Result<&'a str, KvError> {
    value.as_str().ok_or_else(|| {
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
