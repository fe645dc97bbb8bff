//! The engine against scripted functions: paths, templates, Choice rules, Retry and Catch,
//! Succeed and Fail, the transition limit.

use super::*;
use serde_json::json;
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Functions that answer from a script, one answer per call, and remember their requests.
#[derive(Default)]
struct Script {
    answers: RefCell<BTreeMap<String, Vec<Result<Value, TaskFailure>>>>,
    calls: RefCell<Vec<(String, Value)>>,
}

impl Script {
    fn answer(self, function: &str, answer: Result<Value, TaskFailure>) -> Self {
        self.answers
            .borrow_mut()
            .entry(function.to_string())
            .or_default()
            .push(answer);
        self
    }

    fn calls(&self) -> Vec<(String, Value)> {
        self.calls.borrow().clone()
    }
}

impl Invoke for Script {
    async fn invoke(&self, function: &str, payload: Value) -> Result<Value, TaskFailure> {
        self.calls
            .borrow_mut()
            .push((function.to_string(), payload));
        let mut answers = self.answers.borrow_mut();
        let queue = answers.entry(function.to_string()).or_default();
        if queue.is_empty() {
            return Err(failure("Unscripted", function));
        }
        queue.remove(0)
    }
}

fn failure(error_type: &str, message: &str) -> TaskFailure {
    TaskFailure {
        error_type: error_type.into(),
        message: message.into(),
    }
}

/// Remembers every transition, retry delay and state entered.
#[derive(Default)]
struct Seen {
    entered: Vec<String>,
    transitions: Vec<(String, String)>,
    delays: Vec<Duration>,
    waited: Vec<Duration>,
}

impl Hooks for Seen {
    async fn before_state(&mut self, state: &str) {
        self.entered.push(state.to_string());
    }

    fn event(&mut self, event: &Event<'_>) {
        match event {
            Event::Transition { state, transition } => self
                .transitions
                .push((state.to_string(), transition.label())),
            Event::Retry { delay, .. } => self.delays.push(*delay),
            _ => {}
        }
    }

    async fn backoff(&mut self, delay: Duration) {
        self.waited.push(delay);
    }
}

fn definition(value: Value) -> Definition {
    Definition::new(value).expect("a valid definition")
}

fn run(definition: &Definition, input: Value, script: &Script) -> (Outcome, Seen) {
    let mut seen = Seen::default();
    let outcome = block_on(definition.execute(input, script, &mut seen));
    (outcome, seen)
}

fn failed(error: &str) -> impl Fn(&Outcome) -> bool + '_ {
    move |outcome| matches!(outcome, Outcome::Failed(failure) if failure.error == error)
}

/// One Task calling kv-key-get with the given extra fields.
fn task(extra: Value) -> Value {
    let mut state = json!({"Type": "Task", "Resource": "${KvKeyGetFunctionArn}", "End": true});
    if let (Some(state), Some(extra)) = (state.as_object_mut(), extra.as_object()) {
        state.extend(extra.clone());
    }
    json!({"StartAt": "T", "States": {"T": state, "Caught": {"Type": "Succeed"}}})
}

#[test]
fn maps_placeholders_to_function_names() {
    assert_eq!(
        function_name("${KvKeyGetFunctionArn}").as_deref(),
        Some("kv-key-get")
    );
    assert_eq!(
        function_name("${KvBucketCreateFunctionArn}").as_deref(),
        Some("kv-bucket-create")
    );
    for resource in [
        "",
        "${}",
        "${FunctionArn}",
        "${kvKeyGetFunctionArn}",
        "${Kv-KeyFunctionArn}",
        "${KvKeyGet}",
        "arn:aws:lambda:us-east-1:123:function:kv-key-get",
        "${KvKeyGetFunctionArn",
    ] {
        assert_eq!(function_name(resource), None, "{resource}");
    }
}

#[test]
fn refuses_definitions_that_do_not_hold_together() {
    let succeed = json!({"Type": "Succeed"});
    for (value, why) in [
        (json!(null), "StartAt"),
        (json!({"StartAt": "A"}), "States must be an object"),
        (json!({"StartAt": "B", "States": {"A": succeed}}), "StartAt"),
        (
            json!({"StartAt": "A", "States": {"A": {"Type": "Map"}}}),
            "unsupported state type",
        ),
        (
            json!({"StartAt": "A", "States": {"A": {"Type": "Pass"}}}),
            "A: Next",
        ),
        (
            json!({"StartAt": "A", "States": {"A": {"Type": "Pass", "Next": "Z"}}}),
            "A: Next",
        ),
        (
            json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "arn:x", "End": true}}}),
            "unsupported Task resource",
        ),
        (
            json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "${KvKeyGetFunctionArn}", "End": true, "Catch": [{"ErrorEquals": ["States.ALL"]}]}}}),
            "Catch Next",
        ),
        (
            json!({"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": []}}}),
            "Choices",
        ),
        (
            json!({"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": [{"Next": "Z"}]}}}),
            "Choice Next",
        ),
        (
            json!({"StartAt": "A", "States": {"A": {"Type": "Choice", "Choices": [{"Next": "A"}], "Default": 1}}}),
            "Default",
        ),
    ] {
        let error = Definition::new(value.clone()).expect_err(why);
        assert!(error.0.contains(why), "{value}: {error}");
    }
}

#[test]
fn every_definition_of_the_project_loads() {
    let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../statemachines");
    let mut loaded = 0;
    for entry in std::fs::read_dir(folder).unwrap().flatten() {
        let path = entry.path();
        if path.to_string_lossy().ends_with(".asl.json") {
            let value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            Definition::new(value).unwrap_or_else(|error| panic!("{path:?}: {error}"));
            loaded += 1;
        }
    }
    assert!(loaded > 0);
}

#[test]
fn pass_templates_and_paths_shape_the_data() {
    let flow = definition(json!({
        "StartAt": "Shape",
        "States": {
            "Shape": {
                "Type": "Pass",
                "InputPath": "$.in",
                "Parameters": {
                    "id.$": "$.id",
                    "fixed": "x",
                    "nested": {"first.$": "$.list[0]", "quoted.$": "$['odd key']"},
                    "list": [{"id.$": "$.id"}, 2]
                },
                "ResultPath": "$.shaped",
                "Next": "Result"
            },
            "Result": {"Type": "Pass", "Result": {"r": 1}, "ResultPath": "$.shaped.more", "Next": "Out"},
            "Out": {"Type": "Pass", "OutputPath": "$.shaped", "Next": "Discard"},
            "Discard": {"Type": "Pass", "Result": "ignored", "ResultPath": null, "End": true}
        }
    }));
    let input = json!({"in": {"id": 7, "list": ["a"], "odd key": true}});
    let (outcome, seen) = run(&flow, input, &Script::default());
    assert_eq!(
        outcome,
        Outcome::Succeeded(json!({
            "id": 7, "fixed": "x", "nested": {"first": "a", "quoted": true},
            "list": [{"id": 7}, 2], "more": {"r": 1}
        }))
    );
    assert_eq!(seen.entered, ["Shape", "Result", "Out", "Discard"]);
    let labels: Vec<&str> = seen.transitions.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(labels, ["Next", "Next", "Next", "End"]);
}

#[test]
fn null_paths_mean_nothing_in_and_nothing_out() {
    let flow = definition(json!({
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "InputPath": null, "ResultPath": "$.seen", "Next": "B"},
            "B": {"Type": "Pass", "OutputPath": null, "End": true}
        }
    }));
    let (outcome, _) = run(&flow, json!({"x": 1}), &Script::default());
    assert_eq!(outcome, Outcome::Succeeded(json!({})));
    let flow = definition(json!({
        "StartAt": "A",
        "States": {"A": {"Type": "Pass", "InputPath": null, "ResultPath": "$.seen", "End": true}}
    }));
    let (outcome, _) = run(&flow, json!({"x": 1}), &Script::default());
    assert_eq!(outcome, Outcome::Succeeded(json!({"x": 1, "seen": {}})));
}

#[test]
fn a_missing_path_or_an_unsupported_one_is_a_runtime_error() {
    for (state, why) in [
        (
            json!({"Type": "Pass", "InputPath": "$.missing", "End": true}),
            "does not exist",
        ),
        (
            json!({"Type": "Pass", "OutputPath": "$.missing", "End": true}),
            "does not exist",
        ),
        (
            json!({"Type": "Pass", "Parameters": {"a.$": "$.missing"}, "End": true}),
            "does not exist",
        ),
        (
            json!({"Type": "Pass", "Parameters": {"a.$": "$$.Map.Item.Value"}, "End": true}),
            "does not exist",
        ),
        (
            json!({"Type": "Pass", "Parameters": {"a.$": "$$.list[*]"}, "End": true}),
            "unsupported path",
        ),
        (
            json!({"Type": "Pass", "Parameters": {"a.$": "States.Hash($.x, 'SHA-1')"}, "End": true}),
            "not supported",
        ),
        (
            json!({"Type": "Pass", "Parameters": {"a.$": 1}, "End": true}),
            "must be a path",
        ),
        (
            json!({"Type": "Pass", "ResultPath": "$.x.y", "End": true}),
            "does not fit",
        ),
        (
            json!({"Type": "Pass", "ResultPath": "$.list[0]", "End": true}),
            "cannot index",
        ),
        (
            json!({"Type": "Pass", "ResultPath": 3, "End": true}),
            "string or null",
        ),
    ] {
        let flow = definition(json!({"StartAt": "A", "States": {"A": state.clone()}}));
        let (outcome, _) = run(&flow, json!({"x": 1, "list": [1]}), &Script::default());
        let Outcome::Failed(failure) = &outcome else {
            panic!("{state}: {outcome:?}");
        };
        assert_eq!(failure.error, RUNTIME_ERROR, "{state}");
        assert!(failure.cause.contains(why), "{state}: {}", failure.cause);
    }
}

fn choose(rule: Value, input: Value) -> Outcome {
    let mut rule = rule;
    if let Some(rule) = rule.as_object_mut() {
        rule.insert("Next".into(), json!("Yes"));
    }
    let flow = definition(json!({
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [rule], "Default": "No"},
            "Yes": {"Type": "Pass", "Result": "yes", "End": true},
            "No": {"Type": "Pass", "Result": "no", "End": true}
        }
    }));
    run(&flow, input, &Script::default()).0
}

#[test]
fn choice_rules_compare_by_type() {
    let input = json!({"n": 5, "s": "five", "b": true, "z": null, "o": {"n": 5}});
    let yes = |rule: Value| choose(rule, input.clone()) == Outcome::Succeeded(json!("yes"));
    assert!(yes(json!({"Variable": "$.n", "NumericEquals": 5})));
    assert!(yes(json!({"Variable": "$.n", "NumericEquals": 5.0})));
    assert!(!yes(json!({"Variable": "$.s", "NumericEquals": 5})));
    assert!(yes(json!({"Variable": "$.n", "NumericLessThan": 6})));
    assert!(!yes(json!({"Variable": "$.n", "NumericLessThan": 5})));
    assert!(yes(json!({"Variable": "$.n", "NumericLessThanEquals": 5})));
    assert!(yes(json!({"Variable": "$.n", "NumericGreaterThan": 4})));
    assert!(yes(
        json!({"Variable": "$.n", "NumericGreaterThanEquals": 5})
    ));
    assert!(!yes(
        json!({"Variable": "$.n", "NumericGreaterThanEquals": 6})
    ));
    assert!(!yes(
        json!({"Variable": "$.b", "NumericGreaterThanEquals": 0})
    ));
    assert!(yes(json!({"Variable": "$.s", "StringEquals": "five"})));
    assert!(!yes(json!({"Variable": "$.n", "StringEquals": 5})));
    assert!(yes(json!({"Variable": "$.b", "BooleanEquals": true})));
    assert!(!yes(json!({"Variable": "$.s", "BooleanEquals": true})));
    assert!(yes(json!({"Variable": "$.z", "IsNull": true})));
    assert!(yes(json!({"Variable": "$.n", "IsNull": false})));
    assert!(yes(json!({"Variable": "$.o.n", "IsPresent": true})));
    assert!(yes(json!({"Variable": "$.missing", "IsPresent": false})));
    assert!(yes(json!({"And": [
        {"Variable": "$.n", "NumericEquals": 5},
        {"Not": {"Variable": "$.s", "StringEquals": "six"}}
    ]})));
    assert!(!yes(json!({"And": [
        {"Variable": "$.n", "NumericEquals": 5},
        {"Variable": "$.s", "StringEquals": "six"}
    ]})));
    assert!(yes(json!({"Or": [
        {"Variable": "$.s", "StringEquals": "six"},
        {"Variable": "$.b", "BooleanEquals": true}
    ]})));
    assert!(!yes(
        json!({"Or": [{"Variable": "$.s", "StringEquals": "six"}]})
    ));
}

#[test]
fn choice_rules_that_cannot_be_evaluated_are_runtime_errors() {
    let input = json!({"n": 5});
    for rule in [
        json!({"Variable": "$.missing", "NumericEquals": 5}),
        json!({"Variable": "$.n", "NumericEqualsPath": "$.n"}),
        json!({"Variable": "n", "NumericEquals": 5}),
        json!({"NumericEquals": 5}),
        json!({"Or": [{"Variable": "$.missing", "IsNull": true}]}),
    ] {
        let outcome = choose(rule.clone(), input.clone());
        assert!(failed(RUNTIME_ERROR)(&outcome), "{rule}: {outcome:?}");
    }
}

#[test]
fn choice_takes_the_first_match_then_the_default_and_fails_without_one() {
    let flow = |default: bool| {
        let mut choice = json!({"Type": "Choice", "Choices": [
            {"Variable": "$.n", "NumericLessThan": 10, "Next": "Small"},
            {"Variable": "$.n", "NumericLessThan": 100, "Next": "Medium"}
        ]});
        if default {
            choice["Default"] = json!("Large");
        }
        definition(json!({
            "StartAt": "C",
            "States": {
                "C": choice,
                "Small": {"Type": "Pass", "Result": "small", "End": true},
                "Medium": {"Type": "Pass", "Result": "medium", "End": true},
                "Large": {"Type": "Pass", "Result": "large", "End": true}
            }
        }))
    };
    let with_default = flow(true);
    for (n, expected, label) in [
        (1, "small", "Choices[0]"),
        (50, "medium", "Choices[1]"),
        (500, "large", "Default"),
    ] {
        let (outcome, seen) = run(&with_default, json!({"n": n}), &Script::default());
        assert_eq!(outcome, Outcome::Succeeded(json!(expected)));
        assert_eq!(seen.transitions[0], ("C".to_string(), label.to_string()));
    }
    let (outcome, _) = run(&flow(false), json!({"n": 500}), &Script::default());
    assert!(failed(NO_CHOICE_MATCHED)(&outcome), "{outcome:?}");
}

#[test]
fn a_task_calls_its_function_with_the_parameters_and_places_the_result() {
    let flow = definition(task(json!({
        "Parameters": {"bucket": "b", "key.$": "$.id"},
        "ResultSelector": {"code.$": "$.status_code"},
        "ResultPath": "$.got"
    })));
    let script =
        Script::default().answer("kv-key-get", Ok(json!({"status_code": 404, "body": {}})));
    let (outcome, _) = run(&flow, json!({"id": "k"}), &script);
    assert_eq!(
        outcome,
        Outcome::Succeeded(json!({"id": "k", "got": {"code": 404}}))
    );
    assert_eq!(
        script.calls(),
        [("kv-key-get".to_string(), json!({"bucket": "b", "key": "k"}))]
    );
    // Without Parameters the (effective) input is the payload; without ResultPath the result
    // replaces it.
    let flow = definition(task(json!({"InputPath": "$.request"})));
    let script = Script::default().answer("kv-key-get", Ok(json!({"status_code": 200})));
    let (outcome, _) = run(&flow, json!({"request": {"key": "k"}, "other": 1}), &script);
    assert_eq!(outcome, Outcome::Succeeded(json!({"status_code": 200})));
    assert_eq!(script.calls()[0].1, json!({"key": "k"}));
}

#[test]
fn retries_back_off_and_stop_at_max_attempts() {
    let flow = definition(task(json!({
        "Retry": [
            {"ErrorEquals": ["KvUnavailable"], "IntervalSeconds": 1, "BackoffRate": 2,
             "MaxAttempts": 4, "MaxDelaySeconds": 3},
            {"ErrorEquals": ["States.ALL"], "MaxAttempts": 1}
        ]
    })));
    let unavailable = || Err(failure("KvUnavailable", "down"));
    let mut script = Script::default();
    for _ in 0..4 {
        script = script.answer("kv-key-get", unavailable());
    }
    let script = script.answer("kv-key-get", Ok(json!({"status_code": 200})));
    let (outcome, seen) = run(&flow, json!({}), &script);
    assert_eq!(outcome, Outcome::Succeeded(json!({"status_code": 200})));
    let seconds =
        |delays: &[Duration]| delays.iter().map(Duration::as_secs_f64).collect::<Vec<_>>();
    assert_eq!(seconds(&seen.delays), [1.0, 2.0, 3.0, 3.0]);
    assert_eq!(seen.waited, seen.delays);

    // Used up, the first matching retrier does not hand over to the broader one.
    let mut script = Script::default();
    for _ in 0..6 {
        script = script.answer("kv-key-get", unavailable());
    }
    let (outcome, seen) = run(&flow, json!({}), &script);
    assert_eq!(
        outcome,
        Outcome::Failed(Failure {
            error: "KvUnavailable".into(),
            cause: "down".into()
        })
    );
    assert_eq!(script.calls().len(), 5);
    assert_eq!(seen.delays.len(), 4);

    // MaxAttempts 0 never retries; an error no retrier names is not retried.
    let flow = definition(task(
        json!({"Retry": [{"ErrorEquals": ["KvUnavailable"], "MaxAttempts": 0}]}),
    ));
    let script = Script::default().answer("kv-key-get", unavailable());
    let (outcome, seen) = run(&flow, json!({}), &script);
    assert!(failed("KvUnavailable")(&outcome));
    assert!(seen.delays.is_empty());
    let script = Script::default().answer("kv-key-get", Err(failure("KvInternal", "broken")));
    let (outcome, _) = run(&flow, json!({}), &script);
    assert!(failed("KvInternal")(&outcome));
}

#[test]
fn retry_delays_are_never_invalid() {
    for (retrier, expected) in [
        (json!({}), 1.0),
        (json!({"IntervalSeconds": -5}), 0.0),
        (json!({"IntervalSeconds": 1e308, "BackoffRate": 1e308}), 0.0),
        (json!({"IntervalSeconds": 2, "BackoffRate": 0.5}), 2.0),
    ] {
        assert_eq!(
            retry_delay(&retrier, 0).as_secs_f64(),
            expected,
            "{retrier}"
        );
    }
    assert_eq!(
        retry_delay(&json!({"MaxDelaySeconds": 5}), u64::MAX).as_secs_f64(),
        5.0
    );
}

#[test]
fn catch_puts_the_error_at_its_result_path_and_goes_on() {
    let flow = definition(task(json!({
        "Retry": [{"ErrorEquals": ["KvUnavailable"], "MaxAttempts": 1}],
        "Catch": [
            {"ErrorEquals": ["KvInternal"], "Next": "Caught"},
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Caught"}
        ]
    })));
    let script = Script::default()
        .answer("kv-key-get", Err(failure("KvUnavailable", "down")))
        .answer("kv-key-get", Err(failure("KvUnavailable", "still down")));
    let (outcome, seen) = run(&flow, json!({"id": 1}), &script);
    assert_eq!(
        outcome,
        Outcome::Succeeded(
            json!({"id": 1, "error": {"Error": "KvUnavailable", "Cause": "still down"}})
        )
    );
    assert_eq!(
        seen.transitions,
        [
            ("T".to_string(), "Catch[1]".to_string()),
            ("Caught".to_string(), "End".to_string())
        ]
    );
    // Without ResultPath the error replaces the data.
    let script = Script::default().answer("kv-key-get", Err(failure("KvInternal", "broken")));
    let (outcome, _) = run(&flow, json!({"id": 1}), &script);
    assert_eq!(
        outcome,
        Outcome::Succeeded(json!({"Error": "KvInternal", "Cause": "broken"}))
    );
    // States.TaskFailed is any function error too.
    let flow = definition(task(
        json!({"Catch": [{"ErrorEquals": ["States.TaskFailed"], "Next": "Caught"}]}),
    ));
    let script =
        Script::default().answer("kv-key-get", Err(failure("Lambda.ServiceException", "")));
    assert!(matches!(
        run(&flow, json!({}), &script).0,
        Outcome::Succeeded(_)
    ));
}

#[test]
fn fail_and_succeed_end_the_execution() {
    let flow = definition(json!({
        "StartAt": "C",
        "States": {
            "C": {"Type": "Choice", "Choices": [
                {"Variable": "$.fixed", "IsPresent": true, "Next": "Fixed"},
                {"Variable": "$.done", "IsPresent": true, "Next": "Done"}
            ], "Default": "FromData"},
            "Fixed": {"Type": "Fail", "Error": "Broken", "Cause": "because"},
            "FromData": {"Type": "Fail", "ErrorPath": "$.got.code", "CausePath": "$.got.detail"},
            "Done": {"Type": "Succeed", "OutputPath": "$.done"}
        }
    }));
    let (outcome, seen) = run(&flow, json!({"fixed": 1}), &Script::default());
    assert_eq!(
        outcome,
        Outcome::Failed(Failure {
            error: "Broken".into(),
            cause: "because".into()
        })
    );
    assert_eq!(
        seen.transitions.last(),
        Some(&("Fixed".to_string(), "End".to_string()))
    );
    let input = json!({"got": {"code": "bucket_exists", "detail": {"n": 1}}});
    let (outcome, _) = run(&flow, input, &Script::default());
    assert_eq!(
        outcome,
        Outcome::Failed(Failure {
            error: "bucket_exists".into(),
            cause: r#"{"n":1}"#.into()
        })
    );
    let (outcome, _) = run(&flow, json!({"got": {}}), &Script::default());
    assert!(failed(RUNTIME_ERROR)(&outcome));
    let (outcome, seen) = run(&flow, json!({"done": {"ok": true}}), &Script::default());
    assert_eq!(outcome, Outcome::Succeeded(json!({"ok": true})));
    assert_eq!(
        seen.transitions.last(),
        Some(&("Done".to_string(), "End".to_string()))
    );
    assert_eq!(outcome.status(), "SUCCEEDED");
}

#[test]
fn a_loop_that_does_not_end_stops_at_the_transition_limit() {
    let flow = definition(json!({
        "StartAt": "A",
        "States": {
            "A": {"Type": "Pass", "Next": "B"},
            "B": {"Type": "Pass", "Next": "A"}
        }
    }));
    let (outcome, seen) = run(&flow, json!({}), &Script::default());
    assert!(failed(RUNTIME_ERROR)(&outcome), "{outcome:?}");
    assert_eq!(seen.entered.len(), MAX_TRANSITIONS);
    let (outcome, seen) = run(&flow.with_max_transitions(3), json!({}), &Script::default());
    let Outcome::Failed(failure) = outcome else {
        panic!("a loop succeeded");
    };
    assert!(
        failure.cause.contains("more than 3 transitions"),
        "{}",
        failure.cause
    );
    assert_eq!(seen.entered, ["A", "B", "A"]);
}

#[test]
fn transitions_lists_what_a_definition_declares() {
    let flow = definition(json!({
        "StartAt": "T",
        "States": {
            "T": {"Type": "Task", "Resource": "${KvKeyGetFunctionArn}", "Next": "C",
                  "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "F"}]},
            "C": {"Type": "Choice", "Choices": [{"Variable": "$.a", "IsPresent": true, "Next": "S"}],
                  "Default": "P"},
            "P": {"Type": "Pass", "End": true},
            "S": {"Type": "Succeed"},
            "F": {"Type": "Fail"}
        }
    }));
    let all: Vec<(String, String)> = flow.transitions().into_iter().collect();
    let expected: Vec<(String, String)> = [
        ("C", "Choices[0]"),
        ("C", "Default"),
        ("F", "End"),
        ("P", "End"),
        ("S", "End"),
        ("T", "Catch[0]"),
        ("T", "Next"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(all, expected);
}
