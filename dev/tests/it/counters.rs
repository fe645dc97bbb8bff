//! kv-key-increment (SPEC "For flows"): one atomic step for counters, through the same write
//! path as a put, with a fixed window when it carries a `ttl`.

use kv::Function;
use kv_dev::support::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

async fn increment(kv: &kv::Kv, payload: Value) -> Value {
    call(kv, Function::KeyIncrement, payload).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_containers_incrementing_one_counter_fifty_times_each_reach_exactly_800() {
    let kv = container();
    let name = bucket(&kv, "counter", json!({"history": 5})).await;
    let mut containers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let name = name.clone();
        containers.spawn(async move {
            // A container of its own: its own client, connections and caches.
            let kv = container();
            let mut seen = Vec::new();
            for _ in 0..50 {
                let answer = increment(&kv, json!({"bucket": name, "key": "hits"})).await;
                assert_eq!(status(&answer), 200, "{answer}");
                let body = &answer["body"];
                seen.push((
                    body["value"].as_i64().expect("value"),
                    body["revision"].as_u64().expect("revision"),
                ));
            }
            seen
        });
    }
    let mut values = BTreeSet::new();
    let mut revisions = BTreeSet::new();
    while let Some(seen) = containers.join_next().await {
        for (value, revision) in seen.expect("a container panicked") {
            assert!(values.insert(value), "value {value} returned twice");
            assert!(
                revisions.insert(revision),
                "revision {revision} returned twice"
            );
        }
    }
    assert_eq!(values.len(), 800);
    assert_eq!(values.first(), Some(&1));
    assert_eq!(values.last(), Some(&800));
    let got = call(
        &kv,
        Function::KeyGet,
        json!({"bucket": name, "key": "hits"}),
    )
    .await;
    assert_eq!(got["body"]["body"]["value"], "800", "{got}");
    let parsed = call(
        &kv,
        Function::KeyGet,
        json!({"bucket": name, "key": "hits", "json": true}),
    )
    .await;
    assert_eq!(parsed["body"]["body"]["value"], 800, "{parsed}");
    // Each increment is a revision of its own: the history keeps the last five values.
    let history = call(
        &kv,
        Function::KeyHistory,
        json!({"bucket": name, "key": "hits"}),
    )
    .await;
    let kept: Vec<&Value> = history["body"]["body"]["results"]
        .as_array()
        .map(|entries| entries.iter().map(|entry| &entry["value"]).collect())
        .unwrap_or_default();
    assert_eq!(kept, ["796", "797", "798", "799", "800"], "{history}");
}

#[tokio::test]
async fn a_window_starts_with_the_counter_and_restarts_at_by_once_it_expires() {
    let kv = container();
    let name = bucket(&kv, "window", json!({})).await;
    let window = Duration::from_millis(1500);
    let payload = json!({"bucket": name, "key": "calls", "by": 5, "ttl": window.as_nanos() as u64});
    let first = increment(&kv, payload.clone()).await;
    // The window started during the call, so it ends at the latest a window after its answer.
    let answered = Instant::now();
    assert_eq!(first["body"]["value"], 5, "{first}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = increment(&kv, payload.clone()).await;
    assert_eq!(second["body"]["value"], 10, "{second}");

    // The window is the first increment's: a later one does not extend it.
    let end = answered + window + Duration::from_millis(100);
    tokio::time::sleep(end.saturating_duration_since(Instant::now())).await;
    let gone = call(
        &kv,
        Function::KeyGet,
        json!({"bucket": name, "key": "calls"}),
    )
    .await;
    assert_error(&gone, 404, "key_not_found");
    let restarted = increment(&kv, payload).await;
    assert_eq!(restarted["body"]["value"], 5, "{restarted}");
    assert!(
        restarted["body"]["revision"].as_u64() > second["body"]["revision"].as_u64(),
        "{restarted}"
    );
}

#[tokio::test]
async fn counters_go_down_start_from_zero_and_refuse_what_is_not_an_integer() {
    let kv = container();
    let name = bucket(&kv, "counts", json!({"compression": true})).await;
    let down = increment(&kv, json!({"bucket": name, "key": "stock", "by": -3})).await;
    assert_eq!(down["body"]["value"], -3, "{down}");
    put(&kv, &name, "stock", json!("40")).await;
    let up = increment(&kv, json!({"bucket": name, "key": "stock", "by": 2})).await;
    assert_eq!(up["body"]["value"], 42, "{up}");
    let deleted = call(
        &kv,
        Function::KeyDelete,
        json!({"bucket": name, "key": "stock"}),
    )
    .await;
    assert_eq!(status(&deleted), 200);
    let again = increment(&kv, json!({"bucket": name, "key": "stock"})).await;
    assert_eq!(again["body"]["value"], 1, "{again}");
    let text = put(&kv, &name, "label", json!("forty-two")).await;
    let refused = increment(&kv, json!({"bucket": name, "key": "label"})).await;
    assert_error(&refused, 409, "not_a_counter");
    assert_eq!(refused["body"]["current_revision"], text, "{refused}");
    let object = put(&kv, &name, "doc", json!({"n": 1})).await;
    let refused = increment(&kv, json!({"bucket": name, "key": "doc"})).await;
    assert_eq!(refused["body"]["current_revision"], object, "{refused}");
    put(&kv, &name, "big", json!(i64::MAX.to_string())).await;
    let overflow = increment(&kv, json!({"bucket": name, "key": "big"})).await;
    assert_error(&overflow, 400, "invalid_parameter");
    for bad in [
        json!({"by": 1.5}),
        json!({"by": "1"}),
        json!({"ttl": 0}),
        json!({"revision": 1}),
    ] {
        let mut payload = json!({"bucket": name, "key": "stock"});
        payload
            .as_object_mut()
            .expect("object")
            .extend(bad.as_object().cloned().unwrap_or_default());
        let refused = increment(&kv, payload.clone()).await;
        assert_error(&refused, 400, "invalid_parameter");
    }
    let missing = increment(&kv, json!({"bucket": unique("nowhere"), "key": "k"})).await;
    assert_error(&missing, 404, "bucket_not_found");
}

#[tokio::test]
async fn an_increment_in_a_bucket_with_max_bytes_moves_its_usage() {
    let kv = container();
    let name = bucket(&kv, "counted", json!({"max_bytes": 4})).await;
    for expected in 1..=9 {
        let answer = increment(&kv, json!({"bucket": name, "key": "n"})).await;
        assert_eq!(answer["body"]["value"], expected, "{answer}");
    }
    assert_eq!(usage(&kv, &name).await, (1, 1));
    let next = increment(&kv, json!({"bucket": name, "key": "n"})).await;
    assert_eq!(next["body"]["value"], 10);
    assert_eq!(usage(&kv, &name).await, (1, 2));
}
