//! The JSONPath subset the definitions may use: `$`, `.field`, `[index]`, `['field']`.

use serde_json::{Map, Value};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Field(String),
    Index(usize),
}

/// A path outside the subset (`$$` context paths, filters, wildcards, slices...). Refused rather
/// than approximated, so a definition cannot silently rely on something the engine lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError {
    pub path: String,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unsupported path {:?}", self.path)
    }
}

impl std::error::Error for PathError {}

pub fn parse_path(path: &str) -> Result<Vec<Segment>, PathError> {
    let unsupported = || PathError {
        path: path.to_string(),
    };
    let mut rest = path.strip_prefix('$').ok_or_else(unsupported)?;
    if rest.starts_with('$') {
        return Err(unsupported());
    }
    let mut segments = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("['") {
            let end = after.find("']").ok_or_else(unsupported)?;
            segments.push(Segment::Field(after[..end].to_string()));
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or_else(unsupported)?;
            let index = after[..end].parse().map_err(|_| unsupported())?;
            segments.push(Segment::Index(index));
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let field = &after[..end];
            if field.is_empty()
                || !field
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(unsupported());
            }
            segments.push(Segment::Field(field.to_string()));
            rest = &after[end..];
        } else {
            return Err(unsupported());
        }
    }
    Ok(segments)
}

/// The value at `segments`, if there is one.
pub fn read<'a>(data: &'a Value, segments: &[Segment]) -> Option<&'a Value> {
    segments
        .iter()
        .try_fold(data, |value, segment| match segment {
            Segment::Field(field) => value.as_object()?.get(field),
            Segment::Index(index) => value.as_array()?.get(*index),
        })
}

/// Why a ResultPath could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteError {
    Unsupported(PathError),
    /// `$.a[0]`: Step Functions does not create array elements either.
    IndexesArray(String),
    /// `$.a.b` where `$.a` is not an object.
    DoesNotFit(String),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Unsupported(error) => error.fmt(f),
            WriteError::IndexesArray(path) => write!(f, "ResultPath {path} cannot index an array"),
            WriteError::DoesNotFit(path) => write!(f, "ResultPath {path} does not fit the input"),
        }
    }
}

impl std::error::Error for WriteError {}

/// ResultPath: `$` replaces the data, `$.a.b` sets a field, creating the objects on the way.
pub fn write(data: &Value, path: &str, result: Value) -> Result<Value, WriteError> {
    let segments = parse_path(path).map_err(WriteError::Unsupported)?;
    let Some((last, parents)) = segments.split_last() else {
        return Ok(result);
    };
    let mut data = data.clone();
    let mut target = &mut data;
    for segment in parents {
        let Segment::Field(field) = segment else {
            return Err(WriteError::IndexesArray(path.to_string()));
        };
        target = target
            .as_object_mut()
            .ok_or_else(|| WriteError::DoesNotFit(path.to_string()))?
            .entry(field.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    let Segment::Field(field) = last else {
        return Err(WriteError::IndexesArray(path.to_string()));
    };
    target
        .as_object_mut()
        .ok_or_else(|| WriteError::DoesNotFit(path.to_string()))?
        .insert(field.clone(), result);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(name: &str) -> Segment {
        Segment::Field(name.to_string())
    }

    #[test]
    fn parses_the_subset() {
        assert_eq!(parse_path("$"), Ok(vec![]));
        assert_eq!(
            parse_path("$.a.b-c[2]['d e']"),
            Ok(vec![
                field("a"),
                field("b-c"),
                Segment::Index(2),
                field("d e")
            ])
        );
    }

    #[test]
    fn refuses_everything_else_without_panicking() {
        for path in [
            "",
            "a",
            "$$.Execution.Id",
            "$.",
            "$..a",
            "$.a[*]",
            "$.a[-1]",
            "$.a[",
            "$['a",
            "$.a b",
            "$.a[0:2]",
            "$.é",
            "$[99999999999999999999999]",
        ] {
            assert!(parse_path(path).is_err(), "{path:?}");
        }
    }

    #[test]
    fn reads_fields_and_indexes() {
        let data = json!({"a": {"b": [10, {"c": true}]}});
        let at = |path: &str| read(&data, &parse_path(path).unwrap()).cloned();
        assert_eq!(at("$"), Some(data.clone()));
        assert_eq!(at("$.a.b[0]"), Some(json!(10)));
        assert_eq!(at("$.a.b[1].c"), Some(json!(true)));
        assert_eq!(at("$.a.b[2]"), None);
        assert_eq!(at("$.a.b.c"), None);
        assert_eq!(at("$.a.b[0].x"), None);
        assert_eq!(at("$.missing"), None);
    }

    #[test]
    fn writes_a_result() {
        let data = json!({"keep": 1, "a": {"old": 2}});
        assert_eq!(write(&data, "$", json!(3)), Ok(json!(3)));
        assert_eq!(
            write(&data, "$.a.new", json!(3)),
            Ok(json!({"keep": 1, "a": {"old": 2, "new": 3}}))
        );
        assert_eq!(
            write(&data, "$.x.y", json!(3)),
            Ok(json!({"keep": 1, "a": {"old": 2}, "x": {"y": 3}}))
        );
        assert_eq!(
            write(&data, "$.keep", json!({"replaced": true})),
            Ok(json!({"keep": {"replaced": true}, "a": {"old": 2}}))
        );
    }

    #[test]
    fn refuses_results_that_do_not_fit() {
        let data = json!({"n": 1, "list": [1]});
        assert!(matches!(
            write(&data, "$.n.x", json!(0)),
            Err(WriteError::DoesNotFit(_))
        ));
        assert!(matches!(
            write(&data, "$.list[0]", json!(0)),
            Err(WriteError::IndexesArray(_))
        ));
        assert!(matches!(
            write(&json!([1]), "$.a", json!(0)),
            Err(WriteError::DoesNotFit(_))
        ));
        assert!(matches!(
            write(&data, "$$", json!(0)),
            Err(WriteError::Unsupported(_))
        ));
    }
}
