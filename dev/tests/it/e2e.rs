//! The Step Functions definitions (`statemachines/*.asl.json`) against the functions.
//!
//! - Each definition is walked state by state by a small interpreter of the Amazon States
//!   Language (Task, Choice, Pass, Succeed, Fail; paths, payload templates, Retry, Catch) whose
//!   Tasks call the functions' handlers in-process against DynamoDB Local. The executions of
//!   `statemachines/examples.json` (what `make run` plays) must end as they say; the scenarios
//!   below add the refusals, the races and an unavailable store, so that every transition of
//!   every definition is taken.
//! - Every path a definition reads from a Task's result must exist in a real response of that
//!   Task's function, recorded during those walks.
//! - One smoke test runs the real binaries under `cargo lambda watch`'s runtime API and calls
//!   them through its Invoke API, checking the JSON logs carry the request id on every line and
//!   never a value.

use kv::model::config::Settings;
use kv::model::error::{INTERNAL_ERROR_TYPE, UNAVAILABLE_ERROR_TYPE};
use kv::{Function, Kv};
use kv_dev::sam;
use kv_dev::support::*;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MAX_TRANSITIONS: usize = 200;

// ------------------------------------------------------------------------------- definitions

struct Flow {
    /// `statemachines/NAME.asl.json`
    file: String,
    definition: Value,
    /// `${Placeholder}` -> the function its Task states invoke.
    functions: BTreeMap<String, Function>,
}

impl Flow {
    fn state(&self, name: &str) -> &Value {
        let state = &self.definition["States"][name];
        assert!(state.is_object(), "{}: no state {name}", self.file);
        state
    }
}

/// Every state machine of the template, with its definition and functions.
fn flows() -> BTreeMap<String, Flow> {
    let template = sam::template();
    sam::state_machines(&template)
        .iter()
        .map(|machine| {
            let text =
                std::fs::read_to_string(sam::root().join(&machine.definition)).expect("definition");
            let functions = sam::substituted_functions(&template, machine)
                .into_iter()
                .map(|(placeholder, binary)| {
                    let function = sam::function_named(&binary)
                        .unwrap_or_else(|| panic!("{binary} is not a KV function"));
                    (placeholder, function)
                })
                .collect();
            let file = machine
                .definition
                .trim_start_matches("statemachines/")
                .to_string();
            let flow = Flow {
                file: file.clone(),
                definition: serde_json::from_str(&text).expect("definition is JSON"),
                functions,
            };
            (file, flow)
        })
        .collect()
}

// ------------------------------------------------------------------------------- paths

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Field(String),
    Index(usize),
}

/// The JSONPath subset definitions may use: `$`, `.field`, `[index]`, `['field']`.
fn parse_path(path: &str) -> Result<Vec<Segment>, String> {
    let unsupported = || format!("unsupported path {path:?}");
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

fn read_segments<'a>(data: &'a Value, segments: &[Segment]) -> Option<&'a Value> {
    segments
        .iter()
        .try_fold(data, |value, segment| match segment {
            Segment::Field(field) => value.as_object()?.get(field),
            Segment::Index(index) => value.as_array()?.get(*index),
        })
}

/// What Step Functions calls a runtime error: the execution fails with `States.Runtime`.
type Runtime<T> = Result<T, String>;

fn read(data: &Value, path: &str) -> Runtime<Option<Value>> {
    Ok(read_segments(data, &parse_path(path)?).cloned())
}

fn require(data: &Value, path: &str, state: &str) -> Runtime<Value> {
    read(data, path)?.ok_or_else(|| format!("{state}: the path {path} does not exist in {data}"))
}

/// ResultPath: `null` discards the result, `$` replaces the input, `$.a.b` sets a field.
fn write(data: &Value, path: &Value, result: Value) -> Runtime<Value> {
    let Some(path) = path.as_str() else {
        return Ok(data.clone());
    };
    let segments = parse_path(path)?;
    if segments.is_empty() {
        return Ok(result);
    }
    let mut data = data.clone();
    let mut target = &mut data;
    for (position, segment) in segments.iter().enumerate() {
        let Segment::Field(field) = segment else {
            return Err(format!("ResultPath {path} cannot index an array"));
        };
        let object = target
            .as_object_mut()
            .ok_or_else(|| format!("ResultPath {path} does not fit the input"))?;
        if position + 1 == segments.len() {
            object.insert(field.clone(), result);
            break;
        }
        target = object
            .entry(field.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    Ok(data)
}

/// A payload template: `"key.$": "$.path"` takes the value at the path.
fn template(value: &Value, data: &Value, state: &str) -> Runtime<Value> {
    Ok(match value {
        Value::Object(object) => {
            let mut out = Map::new();
            for (key, item) in object {
                match key.strip_suffix(".$") {
                    Some(name) => {
                        let path = item.as_str().unwrap_or_default();
                        if path.starts_with("States.") {
                            return Err(format!("{state}: intrinsic functions are not supported"));
                        }
                        out.insert(name.to_string(), require(data, path, state)?);
                    }
                    None => {
                        out.insert(key.clone(), template(item, data, state)?);
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| template(item, data, state))
                .collect::<Runtime<_>>()?,
        ),
        other => other.clone(),
    })
}

fn matches(rule: &Value, data: &Value, state: &str) -> Runtime<bool> {
    if let Some(all) = rule["And"].as_array() {
        for inner in all {
            if !matches(inner, data, state)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if let Some(any) = rule["Or"].as_array() {
        for inner in any {
            if matches(inner, data, state)? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    if rule["Not"].is_object() {
        return Ok(!matches(&rule["Not"], data, state)?);
    }
    let variable = rule["Variable"].as_str().unwrap_or_default();
    let value = read(data, variable)?;
    if let Some(present) = rule["IsPresent"].as_bool() {
        return Ok(value.is_some() == present);
    }
    let value = value.ok_or_else(|| format!("{state}: the variable {variable} does not exist"))?;
    let number = |expected: &Value| value.as_f64().zip(expected.as_f64());
    if let Some(expected) = rule.get("StringEquals") {
        return Ok(value.as_str().is_some() && &value == expected);
    }
    if let Some(expected) = rule.get("NumericEquals") {
        return Ok(number(expected).is_some_and(|(a, b)| a == b));
    }
    if let Some(expected) = rule.get("NumericGreaterThanEquals") {
        return Ok(number(expected).is_some_and(|(a, b)| a >= b));
    }
    if let Some(expected) = rule.get("NumericLessThan") {
        return Ok(number(expected).is_some_and(|(a, b)| a < b));
    }
    if let Some(expected) = rule.get("BooleanEquals") {
        return Ok(value.is_boolean() && &value == expected);
    }
    Err(format!("{state}: unsupported Choice rule {rule}"))
}

// ------------------------------------------------------------------------------- executions

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    Succeeded(Value),
    Failed { error: String, cause: String },
}

/// Before entering `state` for the first time, another caller invokes `function`: a race.
#[derive(Clone)]
struct Race {
    state: &'static str,
    function: Function,
    payload: Value,
}

/// What the walks saw: the transitions taken and every response of every function.
#[derive(Default)]
struct Record {
    /// (definition, state, transition): `Next`, `Choices[i]`, `Default`, `Catch[i]`, `End`.
    taken: BTreeSet<(String, String, String)>,
    responses: BTreeMap<&'static str, Vec<Value>>,
    retries: usize,
}

enum Step {
    Next(String, Value),
    End(Outcome),
}

async fn execute(
    flow: &Flow,
    kv: &Kv,
    input: Value,
    race: Option<&Race>,
    record: &mut Record,
) -> Outcome {
    let mut name = flow.definition["StartAt"]
        .as_str()
        .expect("StartAt")
        .to_string();
    let mut data = input;
    let mut raced = false;
    for _ in 0..MAX_TRANSITIONS {
        if let Some(race) = race.filter(|race| race.state == name && !raced) {
            raced = true;
            let response = call(kv, race.function, race.payload.clone()).await;
            assert_eq!(status(&response), 200, "the race itself failed: {response}");
        }
        match run_state(flow, kv, &name, data, record).await {
            Ok(Step::Next(next, output)) => {
                name = next;
                data = output;
            }
            Ok(Step::End(outcome)) => return outcome,
            Err(cause) => {
                return Outcome::Failed {
                    error: "States.Runtime".into(),
                    cause,
                }
            }
        }
    }
    panic!("{}: more than {MAX_TRANSITIONS} transitions", flow.file)
}

async fn run_state(
    flow: &Flow,
    kv: &Kv,
    name: &str,
    data: Value,
    record: &mut Record,
) -> Runtime<Step> {
    let state = flow.state(name);
    let mut take = |transition: String| {
        record
            .taken
            .insert((flow.file.clone(), name.to_string(), transition));
    };
    let input = match &state["InputPath"] {
        Value::Null if state.get("InputPath").is_some() => json!({}),
        Value::String(path) => require(&data, path, name)?,
        _ => data.clone(),
    };
    let kind = state["Type"].as_str().unwrap_or_default();
    let data = match kind {
        "Pass" => {
            let result = match state.get("Parameters") {
                Some(parameters) => template(parameters, &input, name)?,
                None => state.get("Result").cloned().unwrap_or(input),
            };
            write(
                &data,
                state.get("ResultPath").unwrap_or(&json!("$")),
                result,
            )?
        }
        "Task" => {
            let resource = state["Resource"].as_str().unwrap_or_default();
            let function = *flow
                .functions
                .get(resource)
                .unwrap_or_else(|| panic!("{}: {name}: unknown resource {resource}", flow.file));
            let payload = match state.get("Parameters") {
                Some(parameters) => template(parameters, &input, name)?,
                None => input,
            };
            let retriers = state["Retry"].as_array().cloned().unwrap_or_default();
            let mut attempts = vec![0; retriers.len()];
            let handles = |names: &Value, error_type: &str| {
                names
                    .as_array()
                    .is_some_and(|names| names.iter().any(|n| n == error_type || n == "States.ALL"))
            };
            let result = loop {
                match invoke(kv, function, payload.clone()).await {
                    Ok(response) => {
                        record
                            .responses
                            .entry(function.name())
                            .or_default()
                            .push(response.clone());
                        break response;
                    }
                    Err(error) => {
                        let error_type = error.error_type();
                        let retrier = retriers
                            .iter()
                            .position(|r| handles(&r["ErrorEquals"], error_type));
                        if let Some(index) = retrier {
                            let max = retriers[index]["MaxAttempts"].as_u64().unwrap_or(3);
                            if attempts[index] < max {
                                attempts[index] += 1;
                                record.retries += 1;
                                continue;
                            }
                        }
                        let catchers = state["Catch"].as_array().cloned().unwrap_or_default();
                        let Some(index) = catchers
                            .iter()
                            .position(|c| handles(&c["ErrorEquals"], error_type))
                        else {
                            return Ok(Step::End(Outcome::Failed {
                                error: error_type.into(),
                                cause: error.to_string(),
                            }));
                        };
                        take(format!("Catch[{index}]"));
                        let catcher = &catchers[index];
                        let caught = json!({"Error": error_type, "Cause": error.to_string()});
                        let path = catcher.get("ResultPath").unwrap_or(&json!("$")).clone();
                        let next = catcher["Next"].as_str().expect("Catch Next").to_string();
                        return Ok(Step::Next(next, write(&data, &path, caught)?));
                    }
                }
            };
            let result = match state.get("ResultSelector") {
                Some(selector) => template(selector, &result, name)?,
                None => result,
            };
            write(
                &data,
                state.get("ResultPath").unwrap_or(&json!("$")),
                result,
            )?
        }
        "Choice" => {
            for (index, rule) in state["Choices"]
                .as_array()
                .expect("Choices")
                .iter()
                .enumerate()
            {
                if matches(rule, &input, name)? {
                    take(format!("Choices[{index}]"));
                    let next = rule["Next"].as_str().expect("Next").to_string();
                    return Ok(Step::Next(next, data));
                }
            }
            let Some(default) = state["Default"].as_str() else {
                return Ok(Step::End(Outcome::Failed {
                    error: "States.NoChoiceMatched".into(),
                    cause: format!("{name}: no rule matched"),
                }));
            };
            take("Default".into());
            return Ok(Step::Next(default.to_string(), data));
        }
        "Succeed" => {
            take("End".into());
            return Ok(Step::End(Outcome::Succeeded(data)));
        }
        "Fail" => {
            take("End".into());
            let text = |path: &str, fixed: &str| -> Runtime<String> {
                Ok(match state[path].as_str() {
                    Some(path) => match require(&data, path, name)? {
                        Value::String(text) => text,
                        other => other.to_string(),
                    },
                    None => state[fixed].as_str().unwrap_or_default().to_string(),
                })
            };
            return Ok(Step::End(Outcome::Failed {
                error: text("ErrorPath", "Error")?,
                cause: text("CausePath", "Cause")?,
            }));
        }
        other => return Err(format!("{name}: unsupported state type {other}")),
    };
    let data = match &state["OutputPath"] {
        Value::String(path) => require(&data, path, name)?,
        Value::Null if state.get("OutputPath").is_some() => json!({}),
        _ => data,
    };
    if state["End"] == json!(true) {
        take("End".into());
        return Ok(Step::End(Outcome::Succeeded(data)));
    }
    take("Next".into());
    let next = state["Next"].as_str().expect("Next or End").to_string();
    Ok(Step::Next(next, data))
}

/// Every transition a definition declares.
fn transitions(flow: &Flow) -> BTreeSet<(String, String, String)> {
    let mut all = BTreeSet::new();
    for (name, state) in flow.definition["States"].as_object().expect("States") {
        let mut add = |transition: String| {
            all.insert((flow.file.clone(), name.clone(), transition));
        };
        match state["Type"].as_str().unwrap_or_default() {
            "Choice" => {
                for index in 0..state["Choices"].as_array().map_or(0, Vec::len) {
                    add(format!("Choices[{index}]"));
                }
                if state.get("Default").is_some() {
                    add("Default".into());
                }
            }
            "Succeed" | "Fail" => add("End".into()),
            _ => {
                add(if state["End"] == json!(true) {
                    "End"
                } else {
                    "Next"
                }
                .into());
                for index in 0..state["Catch"].as_array().map_or(0, Vec::len) {
                    add(format!("Catch[{index}]"));
                }
            }
        }
    }
    all
}

/// `expected` is contained in `actual`: objects by their fields, anything else by equality.
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(actual), Value::Object(expected)) => expected.iter().all(|(key, value)| {
            actual
                .get(key)
                .is_some_and(|present| contains(present, value))
        }),
        _ => actual == expected,
    }
}

// ------------------------------------------------------------------------------- scenarios

#[derive(Clone)]
enum Expect {
    /// The output contains this.
    Succeeds(Value),
    /// Fails with this error.
    Fails(&'static str),
}

#[derive(Clone)]
struct Run {
    name: String,
    input: Value,
    race: Option<Race>,
    expect: Expect,
}

/// Executions of one definition, in order, in fresh tables (or in tables that do not exist).
struct World {
    flow: &'static str,
    runs: Vec<Run>,
    store: Store,
}

/// The store a world's executions meet.
#[derive(Clone, Copy)]
enum Store {
    /// Fresh tables.
    Ready,
    /// Nothing answers at the endpoint: every call is `KvUnavailable`.
    Unreachable,
    /// DynamoDB answers, but the tables do not exist: every call is `KvInternal`.
    TablesMissing,
}

fn run(name: &str, input: Value, expect: Expect) -> Run {
    Run {
        name: name.to_string(),
        input,
        race: None,
        expect,
    }
}

fn raced(name: &str, input: Value, race: Race, expect: Expect) -> Run {
    Run {
        race: Some(race),
        ..run(name, input, expect)
    }
}

fn world(flow: &'static str, runs: Vec<Run>) -> World {
    World {
        flow,
        runs,
        store: Store::Ready,
    }
}

/// `make run`'s executions: one world per definition.
fn examples() -> Vec<World> {
    let text = std::fs::read_to_string(sam::root().join("statemachines/examples.json"))
        .expect("statemachines/examples.json");
    let examples: Value = serde_json::from_str(&text).expect("examples.json is JSON");
    examples["flows"]
        .as_array()
        .expect("flows")
        .iter()
        .map(|flow| {
            let file: &'static str = flow["definition"].as_str().unwrap().to_string().leak();
            let runs = flow["executions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|execution| {
                    let expect = &execution["expect"];
                    let expect = match expect["status"].as_str().unwrap_or("SUCCEEDED") {
                        "SUCCEEDED" => Expect::Succeeds(expect["output"].clone()),
                        _ => Expect::Fails(
                            expect["error"]["Error"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string()
                                .leak(),
                        ),
                    };
                    run(
                        execution["name"].as_str().unwrap(),
                        execution["input"].clone(),
                        expect,
                    )
                })
                .collect();
            world(file, runs)
        })
        .collect()
}

/// What the examples do not reach: refusals, races and an unavailable store.
fn scenarios() -> Vec<World> {
    use Expect::{Fails, Succeeds};
    let prefs = json!({"theme": "dark"});
    vec![
        world(
            "user-preferences.asl.json",
            vec![
                run(
                    "a user id that is not a valid key is refused",
                    json!({"user_id": "user 123", "preferences": prefs}),
                    Fails("invalid_key"),
                ),
                run(
                    "preferences saved as a plain string cannot be loaded as JSON",
                    json!({"user_id": "user_789", "preferences": "dark"}),
                    Fails("value_not_json"),
                ),
            ],
        ),
        world(
            "user-preferences.asl.json",
            vec![raced(
                "someone creates the bucket with another configuration first",
                json!({"user_id": "user_123", "preferences": prefs}),
                Race {
                    state: "CreatePreferencesBucket",
                    function: Function::BucketCreate,
                    payload: json!({"bucket": "user-preferences"}),
                },
                Fails("bucket_exists"),
            )],
        ),
        world(
            "api-cache.asl.json",
            vec![run(
                "a cache key that is not a valid key: served from the origin, not cached",
                json!({"cache_key": "cache product 456", "product_id": "456"}),
                Succeeds(json!({"source": "origin"})),
            )],
        ),
        world(
            "api-cache.asl.json",
            vec![raced(
                "the cache bucket exists with another configuration: served from the origin",
                json!({"cache_key": "cache_product_456", "product_id": "456"}),
                Race {
                    state: "CreateCacheBucket",
                    function: Function::BucketCreate,
                    payload: json!({"bucket": "api-cache"}),
                },
                Succeeds(json!({"source": "origin"})),
            )],
        ),
        world(
            "feature-flags.asl.json",
            vec![
                run(
                    "set a flag",
                    json!({"flag": "new-checkout", "set": {"enabled": true}}),
                    Succeeds(json!({"enabled": true, "revision": 1})),
                ),
                run(
                    "set another flag: the bucket exists, the flag does not",
                    json!({"flag": "dark-mode", "set": {"enabled": false}}),
                    Succeeds(json!({"flag": "dark-mode", "enabled": false})),
                ),
                run(
                    "a revision no longer kept: the latest value",
                    json!({"flag": "new-checkout", "revision": 999}),
                    Succeeds(json!({"enabled": true})),
                ),
                run(
                    "an unknown flag is off",
                    json!({"flag": "no-such-flag"}),
                    Succeeds(json!({"enabled": false})),
                ),
                run(
                    "a flag name that is not a valid key is off",
                    json!({"flag": "new checkout"}),
                    Succeeds(json!({"enabled": false})),
                ),
                run(
                    "setting a flag name that is not a valid key is refused",
                    json!({"flag": "new checkout", "set": {"enabled": true}}),
                    Fails("invalid_key"),
                ),
                run(
                    "a flag value must be an object",
                    json!({"flag": "new-checkout", "set": true}),
                    Fails("invalid_value"),
                ),
                run(
                    "a flag value over the bucket's 1 KB limit is refused",
                    json!({"flag": "new-checkout", "set": {"enabled": true, "note": "x".repeat(1100)}}),
                    Fails("value_too_large"),
                ),
            ],
        ),
        world(
            "feature-flags.asl.json",
            vec![
                run(
                    "set a flag",
                    json!({"flag": "new-checkout", "set": {"enabled": false}}),
                    Succeeds(json!({"enabled": false})),
                ),
                raced(
                    "someone changes it between the read and the compare-and-set: read again, then set",
                    json!({"flag": "new-checkout", "set": {"enabled": true}}),
                    Race {
                        state: "ChangeFlag",
                        function: Function::KeyPut,
                        payload: json!({"bucket": "feature-flags", "key": "new-checkout", "value": {"enabled": false}}),
                    },
                    Succeeds(json!({"enabled": true})),
                ),
                raced(
                    "someone creates a new flag first: read it, then compare-and-set",
                    json!({"flag": "dark-mode", "set": {"enabled": true}}),
                    Race {
                        state: "SetNewFlag",
                        function: Function::KeyPut,
                        payload: json!({"bucket": "feature-flags", "key": "dark-mode", "value": {"enabled": false}}),
                    },
                    Succeeds(json!({"flag": "dark-mode", "enabled": true})),
                ),
            ],
        ),
        world(
            "feature-flags.asl.json",
            vec![raced(
                "the flags bucket exists with another configuration",
                json!({"flag": "new-checkout", "set": {"enabled": true}}),
                Race {
                    state: "CreateFlagsBucket",
                    function: Function::BucketCreate,
                    payload: json!({"bucket": "feature-flags"}),
                },
                Fails("bucket_exists"),
            )],
        ),
        World {
            flow: "user-preferences.asl.json",
            store: Store::Unreachable,
            runs: vec![
                run(
                    "storing needs the store: the execution fails with KvUnavailable after the retries",
                    json!({"user_id": "user_123", "preferences": prefs}),
                    Fails(UNAVAILABLE_ERROR_TYPE),
                ),
                run(
                    "logging in without the store: the defaults",
                    json!({"user_id": "user_123"}),
                    Succeeds(json!({"source": "defaults"})),
                ),
            ],
        },
        World {
            flow: "api-cache.asl.json",
            store: Store::Unreachable,
            runs: vec![run(
                "without the cache: served from the origin",
                json!({"cache_key": "cache_product_456", "product_id": "456"}),
                Succeeds(json!({"source": "origin"})),
            )],
        },
        World {
            flow: "feature-flags.asl.json",
            store: Store::Unreachable,
            runs: vec![
                run(
                    "checking without the store: off",
                    json!({"flag": "new-checkout"}),
                    Succeeds(json!({"enabled": false})),
                ),
                run(
                    "checking a revision without the store: off",
                    json!({"flag": "new-checkout", "revision": 1}),
                    Succeeds(json!({"enabled": false})),
                ),
            ],
        },
        World {
            flow: "user-preferences.asl.json",
            store: Store::TablesMissing,
            runs: vec![run(
                "a broken deployment (no tables) fails with KvInternal, not retried, not hidden",
                json!({"user_id": "user_123"}),
                Fails(INTERNAL_ERROR_TYPE),
            )],
        },
    ]
}

/// A container in fresh tables, or facing an unreachable store or missing tables.
async fn container_for(store: Store) -> Kv {
    let settings = Settings::with_tables(&unique("flow-buckets"), &unique("flow-items"));
    match store {
        Store::Ready => {
            kv::store::schema::ensure_tables(&client(), &settings)
                .await
                .expect("create the tables");
            Kv::new(client(), &settings)
        }
        Store::TablesMissing => Kv::new(client(), &settings),
        Store::Unreachable => {
            // A closed port refuses at once; without the SDK's own retries each call fails
            // fast, and the flow's Retry is what is exercised.
            let closed = format!("http://127.0.0.1:{}", free_port());
            let config = config_for(&closed)
                .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
                .build();
            Kv::new(aws_sdk_dynamodb::Client::from_conf(config), &settings)
        }
    }
}

async fn play(flows: &BTreeMap<String, Flow>, worlds: Vec<World>) -> (Record, Vec<String>) {
    let mut record = Record::default();
    let mut problems = Vec::new();
    for world in worlds {
        let flow = flows
            .get(world.flow)
            .unwrap_or_else(|| panic!("{} is not a state machine of the template", world.flow));
        let kv = container_for(world.store).await;
        for run in world.runs {
            let outcome =
                execute(flow, &kv, run.input.clone(), run.race.as_ref(), &mut record).await;
            let ok = match (&run.expect, &outcome) {
                (Expect::Succeeds(expected), Outcome::Succeeded(output)) => {
                    contains(output, expected)
                }
                (Expect::Fails(expected), Outcome::Failed { error, .. }) => error == expected,
                _ => false,
            };
            if !ok {
                problems.push(format!("{} / {}: {:?}", flow.file, run.name, outcome));
            }
        }
    }
    (record, problems)
}

/// (state, path) pairs.
type Reads = Vec<(String, String)>;

/// Every path a definition reads, with the state that reads it; ResultSelector paths read the
/// Task's own result and are returned separately.
fn read_paths(flow: &Flow) -> (Reads, Reads) {
    fn from_template(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                for (key, item) in object {
                    match (key.ends_with(".$"), item) {
                        (true, Value::String(path)) => out.push(path.clone()),
                        _ => from_template(item, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| from_template(item, out)),
            _ => {}
        }
    }
    fn from_rule(rule: &Value, out: &mut Vec<String>) {
        if let Some(path) = rule["Variable"].as_str() {
            out.push(path.to_string());
        }
        for inner in ["And", "Or"] {
            for nested in rule[inner].as_array().into_iter().flatten() {
                from_rule(nested, out);
            }
        }
        if rule["Not"].is_object() {
            from_rule(&rule["Not"], out);
        }
    }
    let mut reads = Vec::new();
    let mut selected = Vec::new();
    for (name, state) in flow.definition["States"].as_object().unwrap() {
        let mut paths = Vec::new();
        for field in ["InputPath", "OutputPath", "ErrorPath", "CausePath"] {
            if let Some(path) = state[field].as_str() {
                paths.push(path.to_string());
            }
        }
        from_template(&state["Parameters"], &mut paths);
        for rule in state["Choices"].as_array().into_iter().flatten() {
            from_rule(rule, &mut paths);
        }
        reads.extend(paths.into_iter().map(|path| (name.clone(), path)));
        let mut own = Vec::new();
        from_template(&state["ResultSelector"], &mut own);
        selected.extend(own.into_iter().map(|path| (name.clone(), path)));
    }
    (reads, selected)
}

// ------------------------------------------------------------------------------- tests

#[tokio::test]
async fn flows_take_every_transition_and_read_only_what_the_functions_return() {
    let flows = flows();
    let mut worlds = examples();
    worlds.extend(scenarios());
    let started = Instant::now();
    let (record, problems) = play(&flows, worlds).await;
    assert!(
        problems.is_empty(),
        "unexpected outcomes:\n{}",
        problems.join("\n")
    );
    assert!(record.retries > 0, "KvUnavailable was never retried");
    eprintln!("flows played in {:?}", started.elapsed());

    // Every transition of every definition was taken.
    let mut untaken = Vec::new();
    for flow in flows.values() {
        for transition in transitions(flow).difference(&record.taken) {
            untaken.push(format!("{transition:?}"));
        }
    }
    assert!(
        untaken.is_empty(),
        "transitions no execution took (add a scenario):\n{}",
        untaken.join("\n")
    );

    // Every path read from a Task's result exists in a real response of its function.
    let mut unknown = Vec::new();
    for flow in flows.values() {
        let mut results: BTreeMap<String, Vec<Function>> = BTreeMap::new();
        for (name, state) in flow.definition["States"].as_object().unwrap() {
            if state["Type"] != "Task" {
                continue;
            }
            let path = state["ResultPath"].as_str().unwrap_or_default();
            let segments = parse_path(path).unwrap_or_default();
            assert!(
                matches!(segments.as_slice(), [Segment::Field(_)]),
                "{}: {name}: a Task's ResultPath must be one field, like $.loaded, not {path:?}",
                flow.file
            );
            let function = flow.functions[state["Resource"].as_str().unwrap()];
            let writers = results.entry(path.to_string()).or_default();
            if !writers.contains(&function) {
                writers.push(function);
            }
        }
        let (reads, selected) = read_paths(flow);
        let check =
            |state: &str, function: Function, rest: &[Segment], unknown: &mut Vec<String>| {
                let seen = record.responses.get(function.name()).map(Vec::as_slice);
                let found = seen
                    .unwrap_or_default()
                    .iter()
                    .any(|response| read_segments(response, rest).is_some());
                if !found {
                    unknown.push(format!(
                        "{}: {state} reads {rest:?} of {}'s result, which no response had",
                        flow.file,
                        function.name()
                    ));
                }
            };
        for (state, path) in reads {
            let segments = parse_path(&path).expect("supported path");
            let Some(Segment::Field(first)) = segments.first() else {
                continue;
            };
            if let Some(functions) = results.get(&format!("$.{first}")) {
                for function in functions {
                    check(&state, *function, &segments[1..], &mut unknown);
                }
            }
        }
        for (state, path) in selected {
            let function = flow.functions[flow.state(&state)["Resource"].as_str().unwrap()];
            check(&state, function, &parse_path(&path).unwrap(), &mut unknown);
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
}

#[test]
fn every_definition_has_examples() {
    let flows = flows();
    let played: BTreeSet<String> = examples()
        .iter()
        .map(|world| world.flow.to_string())
        .collect();
    for file in flows.keys() {
        assert!(
            played.contains(file),
            "statemachines/examples.json plays no execution of {file}"
        );
    }
}

// ------------------------------------------------------------------------------- the runtime

/// One HTTP/1.1 request: (status, body).
fn http_post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("headers");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut decoded = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            decoded.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        decoded
    } else {
        body.to_string()
    };
    (status, body)
}

/// The binaries under `cargo lambda watch --only-lambda-apis`: the real runtime API and the
/// real Invoke API, without compiling anything (the binaries are the ones `cargo test` built).
#[test]
fn the_binaries_serve_the_invoke_api_and_log_json_with_request_ids() {
    let root = sam::root();
    let installed = Command::new("cargo-lambda")
        .args(["lambda", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(installed, "cargo-lambda not found: run `make tools`");
    let invoke_port = free_port();
    let mut watch = Command::new("cargo-lambda");
    watch
        .current_dir(&root)
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
        ])
        .args(["--invoke-port", &invoke_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut watch = spawn_owned(watch);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", invoke_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let logs = std::env::temp_dir().join(format!("kv-e2e-logs-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let bucket = unique("smoke");
    let secret = format!("value-that-must-not-be-logged-{}", std::process::id());
    // (function, binary, items table): kv-key-list is given a table that does not exist.
    let functions = [
        (
            "kv-bucket-create",
            function_binary("kv-bucket-create"),
            ITEMS_TABLE,
        ),
        ("kv-key-put", function_binary("kv-key-put"), ITEMS_TABLE),
        ("kv-key-get", function_binary("kv-key-get"), ITEMS_TABLE),
        (
            "kv-key-list",
            function_binary("kv-key-list"),
            "no-such-table",
        ),
    ];
    let mut processes = Vec::new();
    for (name, binary, items) in functions {
        let mut command = Command::new(binary);
        command
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{invoke_port}/.rt/{name}"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env_remove("AWS_LAMBDA_LOG_LEVEL")
            .env_remove("RUST_LOG")
            .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("KV_BUCKETS_TABLE", BUCKETS_TABLE)
            .env("KV_ITEMS_TABLE", items)
            .stdout(std::fs::File::create(logs.join(name)).unwrap())
            .stderr(Stdio::null());
        processes.push((name, spawn_owned(command)));
    }

    let invoke = |name: &str, payload: Value| {
        http_post(
            invoke_port,
            &format!("/2015-03-31/functions/{name}/invocations"),
            &payload.to_string(),
        )
    };
    let (code, body) = invoke("kv-bucket-create", json!({"bucket": bucket}));
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, created["status_code"].as_u64()),
        (200, Some(200)),
        "{body}"
    );
    let (code, body) = invoke(
        "kv-key-put",
        json!({"bucket": bucket, "key": "user_123", "value": {"secret": secret}}),
    );
    assert_eq!(code, 200);
    let put: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(put["body"]["revision"], 1, "{put}");
    let (_, body) = invoke(
        "kv-key-get",
        json!({"bucket": bucket, "key": "user_123", "json": true}),
    );
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        got["body"]["body"]["value"]["secret"],
        secret.as_str(),
        "{got}"
    );
    let (_, body) = invoke("kv-key-get", json!({"bucket": bucket, "key": "user_456"}));
    let missing: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(missing["status_code"], 404, "{missing}");
    // A missing table is a broken deployment: a Lambda error of its own type, which the flows
    // do not retry, naming what is wrong.
    let (code, body) = invoke("kv-key-list", json!({"bucket": bucket}));
    assert_eq!(code, 500, "{body}");
    let failure: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(failure["errorType"], INTERNAL_ERROR_TYPE, "{failure}");
    assert!(
        failure["errorMessage"]
            .as_str()
            .is_some_and(|message| message.contains("ResourceNotFoundException")),
        "{failure}"
    );

    for (_, process) in &mut processes {
        let _ = process.kill();
        let _ = process.wait();
    }
    let _ = watch.kill();
    let _ = watch.wait();

    // Every line is JSON with the invocation's request id; no value is ever logged.
    let invocations = [
        ("kv-bucket-create", 1),
        ("kv-key-put", 1),
        ("kv-key-get", 2),
        ("kv-key-list", 1),
    ];
    for (name, count) in invocations {
        let text = std::fs::read_to_string(logs.join(name)).unwrap();
        assert!(!text.contains(&secret), "{name} logged a value:\n{text}");
        let mut request_ids = BTreeSet::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("{name} logged a line that is not JSON: {line}"));
            let request_id = entry["span"]["requestId"].as_str().unwrap_or_default();
            assert!(
                !request_id.is_empty(),
                "{name}: a line without the request id: {line}"
            );
            request_ids.insert(request_id.to_string());
        }
        assert_eq!(
            request_ids.len(),
            count,
            "{name}: one request id per invocation:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&logs);
}
