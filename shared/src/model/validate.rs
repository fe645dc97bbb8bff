//! The naming rules for buckets and keys, and what a storable value is.

use crate::model::error::KvError;
use serde_json::Value;

pub use crate::model::limits::{MAX_BUCKET_NAME_LEN, MAX_KEY_BYTES};

pub fn bucket_name(name: &str) -> Result<(), KvError> {
    if name.is_empty() || name.len() > MAX_BUCKET_NAME_LEN {
        return Err(KvError::InvalidBucketName(format!(
            "Parameter 'bucket' must be 1 to {MAX_BUCKET_NAME_LEN} characters, got {}",
            name.chars().count()
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(KvError::InvalidBucketName(format!(
            "Parameter 'bucket' may only contain letters, digits, '-' and '_'; '{}' has {:?}",
            truncate(name),
            bad
        )));
    }
    Ok(())
}

pub fn key(key: &str) -> Result<(), KvError> {
    let invalid = |why: String| {
        Err(KvError::InvalidKey(format!(
            "Invalid key '{}': {why}",
            truncate(key)
        )))
    };
    if key.is_empty() {
        return Err(KvError::InvalidKey(
            "Parameter 'key' must not be empty".to_string(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvError::InvalidKey(format!(
            "Parameter 'key' must be at most {MAX_KEY_BYTES} bytes, got {}",
            key.len()
        )));
    }
    if let Some(bad) = key
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '=' | '.')))
    {
        return invalid(format!(
            "only letters, digits and - / _ = . are allowed, found {bad:?}"
        ));
    }
    if key.starts_with('.') || key.ends_with('.') {
        return invalid("a key may not start or end with '.'".to_string());
    }
    if key.contains("..") {
        return invalid("a key may not contain '..' (empty tokens)".to_string());
    }
    Ok(())
}

/// The text stored for a value: strings as they are, objects and arrays as their JSON text.
pub fn value_text(value: Option<&Value>) -> Result<String, KvError> {
    match value {
        None => Err(KvError::param("Missing required parameter 'value'")),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(structured @ (Value::Object(_) | Value::Array(_))) => {
            Ok(structured.to_string())
        }
        Some(other) => Err(KvError::InvalidValue(format!(
            "Parameter 'value' must be a string, an object or an array, got {}; wrap it in an object (e.g. {{\"value\": {other}}}) or convert it to a string",
            type_name(other)
        ))),
    }
}

pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Keeps echoed user input short enough to read in a flow's error output.
pub fn truncate(text: &str) -> String {
    const MAX: usize = 64;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bucket_names() {
        assert!(bucket_name("user-preferences_2").is_ok());
        assert!(bucket_name(&"a".repeat(255)).is_ok());
        for bad in ["", "a.b", "a b", "ä", "a/b", &"a".repeat(256)] {
            assert!(bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys() {
        for good in ["user_123", "a.b.c", "a/b=c-d", "x", &"k".repeat(1024)] {
            assert!(key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "a b",
            "a*",
            "a>",
            "é",
            &"k".repeat(1025),
        ] {
            assert!(key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values() {
        assert_eq!(value_text(Some(&json!("hi"))).unwrap(), "hi");
        assert_eq!(value_text(Some(&json!({"a": 1}))).unwrap(), r#"{"a":1}"#);
        assert_eq!(value_text(Some(&json!([1, 2]))).unwrap(), "[1,2]");
        for bad in [json!(1), json!(true), Value::Null] {
            assert!(matches!(
                value_text(Some(&bad)),
                Err(KvError::InvalidValue(_))
            ));
        }
    }
}
