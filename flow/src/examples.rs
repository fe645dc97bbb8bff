//! `statemachines/examples.json`: the executions `make run` plays and `dev/tests/it/e2e.rs`
//! plays too, with what each must end as. Read and checked here, so both hold them to the same
//! rules.
//!
//! Executions run in order, except that one with `"with_previous": true` starts together with
//! the one before it (and so on: a group of them), `start_after_ms` after the group starts; a
//! group ends when all of its executions have. Flows that wait for each other (a hand-off, two
//! contending for a lock) are played that way. An execution may name a `definition` of its own
//! (a file beside examples.json), for a group of different flows: a writer that resumes a
//! waiter, for instance.
//!
//! ```json
//! {"title": "Hand-off", "definition": "waiter.asl.json", "executions": [
//!   {"name": "waits", "input": {"job": "j"}, "expect": {"status": "SUCCEEDED"}},
//!   {"name": "writes", "definition": "writer.asl.json", "with_previous": true,
//!    "start_after_ms": 500, "input": {"job": "j"}, "expect": {"status": "SUCCEEDED"}}
//! ]}
//! ```

use crate::Outcome;
use serde_json::{json, Value};
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct Examples {
    pub flows: Vec<ExampleFlow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExampleFlow {
    pub title: String,
    /// A file name, relative to the folder of examples.json.
    pub definition: String,
    pub executions: Vec<Example>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub name: String,
    pub input: Value,
    pub expect: Expectation,
    /// Starts together with the previous execution.
    pub with_previous: bool,
    /// How long after its group starts this execution starts.
    pub start_after_ms: u64,
    /// A definition other than its flow's, relative to the folder of examples.json.
    pub definition: Option<String>,
}

impl ExampleFlow {
    /// The definition file `execution` runs: its own, or the flow's.
    pub fn definition_of<'a>(&'a self, execution: &'a Example) -> &'a str {
        execution.definition.as_deref().unwrap_or(&self.definition)
    }

    /// The executions in the groups they run in, in order.
    pub fn groups(&self) -> Vec<Vec<&Example>> {
        let mut groups: Vec<Vec<&Example>> = Vec::new();
        for execution in &self.executions {
            match groups.last_mut() {
                Some(group) if execution.with_previous => group.push(execution),
                _ => groups.push(vec![execution]),
            }
        }
        groups
    }
}

/// What an execution must end as: its status, and an output (when it succeeds) or an
/// `{"Error", "Cause"}` (when it fails) containing these, as [`contains`] says.
#[derive(Debug, Clone, PartialEq)]
pub struct Expectation {
    pub succeeds: bool,
    pub output: Value,
    pub error: Value,
}

impl Expectation {
    pub fn succeeds(output: Value) -> Self {
        Expectation {
            succeeds: true,
            output,
            error: json!({}),
        }
    }

    pub fn fails(error: &str) -> Self {
        Expectation {
            succeeds: false,
            output: json!({}),
            error: json!({ "Error": error }),
        }
    }

    pub fn met_by(&self, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::Succeeded(output) => self.succeeds && contains(output, &self.output),
            Outcome::Failed(_) => !self.succeeds && contains(&outcome.output(), &self.error),
        }
    }
}

impl fmt::Display for Expectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.succeeds {
            write!(f, "SUCCEEDED with {}", self.output)
        } else {
            write!(f, "FAILED with {}", self.error)
        }
    }
}

/// `expected` is contained in `actual`: objects by their fields, anything else by equality.
pub fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected.iter().all(|(key, value)| {
            actual
                .get(key)
                .is_some_and(|present| contains(present, value))
        }),
        _ => actual == expected,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExamplesError(pub String);

impl fmt::Display for ExamplesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "examples: {}", self.0)
    }
}

impl std::error::Error for ExamplesError {}

impl Examples {
    pub fn parse(text: &str) -> Result<Self, ExamplesError> {
        let value: Value =
            serde_json::from_str(text).map_err(|error| ExamplesError(error.to_string()))?;
        let fail = |what: String| ExamplesError(what);
        let string = |value: &Value, what: &str| {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| fail(format!("{what} must be a string")))
        };
        let list = |value: &Value, what: &str| {
            value
                .as_array()
                .cloned()
                .ok_or_else(|| fail(format!("{what} must be an array")))
        };
        let mut flows = Vec::new();
        for flow in list(&value["flows"], "flows")? {
            let title = string(&flow["title"], "a flow's title")?;
            let mut executions = Vec::new();
            for execution in list(&flow["executions"], &format!("{title}: executions"))? {
                let name = string(&execution["name"], &format!("{title}: an execution's name"))?;
                let expect = &execution["expect"];
                let empty = || json!({});
                let expect = Expectation {
                    succeeds: match expect["status"].as_str().unwrap_or("SUCCEEDED") {
                        "SUCCEEDED" => true,
                        "FAILED" => false,
                        other => {
                            return Err(fail(format!(
                                "{title} / {name}: status {other:?}, not SUCCEEDED or FAILED"
                            )))
                        }
                    },
                    output: expect.get("output").cloned().unwrap_or_else(empty),
                    error: expect.get("error").cloned().unwrap_or_else(empty),
                };
                let with_previous = match execution.get("with_previous") {
                    None => false,
                    Some(Value::Bool(flag)) if !(*flag && executions.is_empty()) => *flag,
                    Some(_) => {
                        return Err(fail(format!(
                            "{title} / {name}: with_previous must be a boolean, and not on the first execution"
                        )))
                    }
                };
                let start_after_ms = match execution.get("start_after_ms") {
                    None => 0,
                    Some(value) => value.as_u64().ok_or_else(|| {
                        fail(format!(
                            "{title} / {name}: start_after_ms must be a whole number"
                        ))
                    })?,
                };
                let definition = match execution.get("definition") {
                    None => None,
                    Some(Value::String(file)) => Some(file.clone()),
                    Some(_) => {
                        return Err(fail(format!(
                            "{title} / {name}: definition must be a file name"
                        )))
                    }
                };
                executions.push(Example {
                    definition,
                    name,
                    input: execution["input"].clone(),
                    expect,
                    with_previous,
                    start_after_ms,
                });
            }
            flows.push(ExampleFlow {
                definition: string(&flow["definition"], &format!("{title}: definition"))?,
                title,
                executions,
            });
        }
        Ok(Examples { flows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Failure;

    #[test]
    fn contains_compares_objects_by_their_fields() {
        let actual = json!({"a": {"b": 1, "c": [1, 2]}, "d": "x"});
        assert!(contains(&actual, &json!({})));
        assert!(contains(&actual, &json!({"a": {"b": 1}})));
        assert!(contains(&actual, &json!({"a": {"c": [1, 2]}, "d": "x"})));
        assert!(!contains(&actual, &json!({"a": {"c": [1]}})));
        assert!(!contains(&actual, &json!({"a": {"b": 2}})));
        assert!(!contains(&actual, &json!({"e": null})));
        assert!(!contains(&json!(1), &json!({})));
    }

    #[test]
    fn expectations_check_status_and_contents() {
        let succeeded = Outcome::Succeeded(json!({"enabled": true, "revision": 2}));
        let failed = Outcome::Failed(Failure {
            error: "bucket_exists".into(),
            cause: "why".into(),
        });
        assert!(Expectation::succeeds(json!({"enabled": true})).met_by(&succeeded));
        assert!(!Expectation::succeeds(json!({"enabled": false})).met_by(&succeeded));
        assert!(!Expectation::succeeds(json!({})).met_by(&failed));
        assert!(Expectation::fails("bucket_exists").met_by(&failed));
        assert!(!Expectation::fails("invalid_key").met_by(&failed));
        assert!(!Expectation::fails("bucket_exists").met_by(&succeeded));
    }

    #[test]
    fn parses_examples() {
        let examples = Examples::parse(
            r#"{"flows": [{"title": "T", "definition": "d.asl.json", "executions": [
                {"name": "ok", "input": {"a": 1}, "expect": {"output": {"b": 2}}},
                {"name": "ko", "input": {}, "expect": {"status": "FAILED", "error": {"Error": "E"}}}
            ]}]}"#,
        )
        .unwrap();
        let flow = &examples.flows[0];
        assert_eq!(
            (flow.title.as_str(), flow.definition.as_str()),
            ("T", "d.asl.json")
        );
        assert_eq!(flow.executions[0].input, json!({"a": 1}));
        assert_eq!(
            flow.executions[0].expect,
            Expectation::succeeds(json!({"b": 2}))
        );
        assert_eq!(flow.executions[1].expect, Expectation::fails("E"));
        assert_eq!(flow.groups().len(), 2);
    }

    #[test]
    fn executions_with_previous_start_together() {
        let examples = Examples::parse(
            r#"{"flows": [{"title": "T", "definition": "d.asl.json", "executions": [
                {"name": "a", "input": {}},
                {"name": "b", "input": {}, "with_previous": true, "start_after_ms": 500,
                 "definition": "writer.asl.json"},
                {"name": "c", "input": {}}
            ]}]}"#,
        )
        .unwrap();
        let groups = examples.flows[0].groups();
        let names: Vec<Vec<&str>> = groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|execution| execution.name.as_str())
                    .collect()
            })
            .collect();
        assert_eq!(names, [vec!["a", "b"], vec!["c"]]);
        assert_eq!(groups[0][1].start_after_ms, 500);
        let flow = &examples.flows[0];
        assert_eq!(flow.definition_of(groups[0][0]), "d.asl.json");
        assert_eq!(flow.definition_of(groups[0][1]), "writer.asl.json");
    }

    #[test]
    fn refuses_malformed_examples() {
        for text in [
            "",
            "[]",
            r#"{"flows": {}}"#,
            r#"{"flows": [{"definition": "d", "executions": []}]}"#,
            r#"{"flows": [{"title": "T", "definition": "d"}]}"#,
            r#"{"flows": [{"title": "T", "definition": "d", "executions": [{"input": {}}]}]}"#,
            r#"{"flows": [{"title": "T", "definition": "d", "executions": [{"name": "n", "expect": {"status": "DONE"}}]}]}"#,
            r#"{"flows": [{"title": "T", "definition": "d", "executions": [{"name": "n", "with_previous": true}]}]}"#,
            r#"{"flows": [{"title": "T", "definition": "d", "executions": [{"name": "n"}, {"name": "m", "start_after_ms": -1}]}]}"#,
            r#"{"flows": [{"title": "T", "definition": "d", "executions": [{"name": "n", "definition": 1}]}]}"#,
        ] {
            assert!(Examples::parse(text).is_err(), "{text}");
        }
    }
}
