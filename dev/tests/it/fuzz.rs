//! Random JSON to every function: always a 4xx envelope with a readable message, or a 200
//! where the input happens to be valid; never a panic, a 5xx or a KvUnavailable.

use kv::Function;
use kv_dev::support::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Map, Value};

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1e300)),
        Just(json!("")),
        "\\PC{0,40}".prop_map(Value::String),
        "[a-z0-9._>*-]{0,12}".prop_map(Value::String),
        Just(json!("🦀\u{0}\u{202e}ß")),
        Just(json!("x".repeat(5000))),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(8, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|map| Value::Object(map.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Events shaped like the function's own: its parameter names with random values, so the
/// fuzzer reaches past the unknown-parameter check into each parameter's validation.
fn event_for(function: Function) -> impl Strategy<Value = Value> {
    let names: Vec<&'static str> = function.accepted_params().to_vec();
    let shaped =
        prop::collection::vec((prop::sample::select(names), any_json()), 0..6).prop_map(|pairs| {
            Value::Object(
                pairs
                    .into_iter()
                    .map(|(name, value)| (name.to_string(), value))
                    .collect(),
            )
        });
    let deep = (1usize..120).prop_map(|depth| {
        let mut value = json!("bottom");
        for _ in 0..depth {
            value = json!({"value": value});
        }
        value
    });
    prop_oneof![
        4 => shaped,
        2 => any_json(),
        1 => deep,
        1 => any_json().prop_map(move |params| json!({"function": function.name(), "params": params})),
    ]
}

#[test]
fn random_events_never_panic_or_fail() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let kv = container();
    // A real bucket, so events that name it get past bucket lookups into the writes.
    let bucket = unique("fuzz");
    runtime.block_on(async {
        let response = call(
            &kv,
            Function::BucketCreate,
            json!({"bucket": bucket, "max_value_size": 4096}),
        )
        .await;
        assert_eq!(status(&response), 200);
    });
    for function in Function::ALL {
        let mut runner = TestRunner::new(Config {
            cases: 96,
            failure_persistence: None,
            ..Config::default()
        });
        let strategy = event_for(function).prop_map({
            let bucket = bucket.clone();
            move |mut event| {
                // Half the time, aim at the real bucket.
                if let Some(map) = event.as_object_mut() {
                    if map.get("bucket").is_some_and(Value::is_string) && fastrand::bool() {
                        map.insert("bucket".into(), json!(bucket));
                    }
                }
                event
            }
        });
        runner
            .run(&strategy, |event| {
                let response = runtime.block_on(invoke(&kv, function, event.clone()));
                let response = response.map_err(|error| {
                    TestCaseError::fail(format!(
                        "{} {event}: KvUnavailable {error}",
                        function.name()
                    ))
                })?;
                // A stream consumer answers Lambda's partial batch response, not an envelope.
                if function.answers_stream_batches() && response.get("batchItemFailures").is_some()
                {
                    return Ok(());
                }
                let status = response["status_code"].as_u64().unwrap_or(0);
                prop_assert!(
                    status == 200 || (400..500).contains(&status),
                    "{} {event} -> {response}",
                    function.name()
                );
                if status != 200 {
                    let message = response["body"]["error"].as_str().unwrap_or("");
                    prop_assert!(
                        !message.is_empty() && message.len() < 600,
                        "unreadable message: {response}"
                    );
                    prop_assert!(!response["body"]["code"].as_str().unwrap_or("").is_empty());
                }
                Ok(())
            })
            .unwrap_or_else(|failure| panic!("{}: {failure}", function.name()));
    }
}
