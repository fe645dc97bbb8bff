//! `idempotency_key` on kv-key-put, kv-key-delete and kv-key-increment (SPEC "For flows"): a
//! repeat within 10 minutes returns the first call's outcome and writes nothing, whether the
//! first call's answer reached the flow or not, in any container.

use kv::{Function, Kv};
use kv_dev::fault_proxy::{Fault, FaultProxy, Rule};
use kv_dev::support::*;
use serde_json::{json, Value};
use std::time::Duration;

fn container_at(endpoint: &str) -> Kv {
    Kv::new(client_for(endpoint), &settings())
}

async fn history(kv: &Kv, bucket: &str, key: &str) -> Vec<Value> {
    let answer = call(
        kv,
        Function::KeyHistory,
        json!({"bucket": bucket, "key": key}),
    )
    .await;
    answer["body"]["body"]["results"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn a_repeat_returns_the_first_outcome_and_writes_nothing_in_any_container() {
    let (first, second) = (container(), container());
    let name = bucket(&first, "idem", json!({"history": 10})).await;
    let put = |value: &str, key: &str| json!({"bucket": name, "key": "order", "value": value, "idempotency_key": key});
    let stored = call(&first, Function::KeyPut, put("paid", "exec-1/Pay/t0")).await;
    assert_eq!(status(&stored), 200, "{stored}");
    let repeat = call(&second, Function::KeyPut, put("paid", "exec-1/Pay/t0")).await;
    assert_eq!(repeat, stored);
    assert_eq!(history(&first, &name, "order").await.len(), 1);
    // Another key writes again.
    let next = call(&first, Function::KeyPut, put("shipped", "exec-1/Ship/t1")).await;
    assert!(next["body"]["revision"].as_u64() > stored["body"]["revision"].as_u64());

    // A create-if-absent (revision 0) retried after it succeeded is not a 409 for its own lock.
    let lock = json!({"bucket": name, "key": "lock", "value": "me", "revision": 0, "idempotency_key": "exec-2/Acquire/t0"});
    let acquired = call(&first, Function::KeyPut, lock.clone()).await;
    assert_eq!(status(&acquired), 200, "{acquired}");
    assert_eq!(call(&second, Function::KeyPut, lock).await, acquired);

    // Increments and deletes too; the same key for another call is refused.
    let hit = json!({"bucket": name, "key": "hits", "by": 3, "idempotency_key": "exec-3/Count/t0"});
    let counted = call(&first, Function::KeyIncrement, hit.clone()).await;
    assert_eq!(counted["body"]["value"], 3, "{counted}");
    assert_eq!(call(&second, Function::KeyIncrement, hit).await, counted);
    let drop = json!({"bucket": name, "key": "order", "idempotency_key": "exec-4/Cancel/t0"});
    let deleted = call(&first, Function::KeyDelete, drop.clone()).await;
    assert_eq!(status(&deleted), 200, "{deleted}");
    assert_eq!(call(&second, Function::KeyDelete, drop).await, deleted);
    assert_eq!(history(&first, &name, "order").await.len(), 3);
    let misused = call(&first, Function::KeyPut, put("other", "exec-3/Count/t0")).await;
    assert_error(&misused, 400, "invalid_parameter");
    let too_long = call(&first, Function::KeyPut, put("x", &"k".repeat(129))).await;
    assert_error(&too_long, 400, "invalid_parameter");
    // Unused keys never expire a claim: the same key with the same call keeps its outcome.
    let counted_again = call(
        &first,
        Function::KeyIncrement,
        json!({"bucket": name, "key": "hits", "by": 3, "idempotency_key": "exec-3/Count/t0"}),
    )
    .await;
    assert_eq!(counted_again, counted);
}

#[tokio::test]
async fn after_ten_minutes_the_same_key_writes_again() {
    let kv = container();
    let name = bucket(&kv, "idem-expiry", json!({})).await;
    let hit = json!({"bucket": name, "key": "hits", "idempotency_key": "exec/Count/t0"});
    let first = call(&kv, Function::KeyIncrement, hit.clone()).await;
    assert_eq!(first["body"]["value"], 1);
    // Ten minutes pass for the claim: its expiry is moved to the past.
    let past = kv::model::time::now_ns() - 1;
    client()
        .update_item()
        .table_name(ITEMS_TABLE)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S(kv::store::claims::claim_pk(
                &name,
                "exec/Count/t0",
            )),
        )
        .key(
            "rev",
            aws_sdk_dynamodb::types::AttributeValue::N("-1".into()),
        )
        .update_expression("SET #x = :past")
        .expression_attribute_names("#x", "x")
        .expression_attribute_values(
            ":past",
            aws_sdk_dynamodb::types::AttributeValue::N(past.to_string()),
        )
        .send()
        .await
        .expect("age the claim");
    let again = call(&kv, Function::KeyIncrement, hit).await;
    assert_eq!(again["body"]["value"], 2, "{again}");
}

/// The first call's write landed but every answer to it was lost: the flow sees a
/// `KvUnavailable` (or the function's own timeout) and retries; the retry answers the
/// revision the first call stored, and the key holds it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_a_lost_response_is_stored_once_with_the_same_revision() {
    let proxy = FaultProxy::start(endpoint(), 23).await;
    let kv = container_at(&proxy.url());
    let name = bucket(&kv, "idem-lost", json!({"history": 5})).await;
    let payload =
        json!({"bucket": name, "key": "k", "value": "once", "idempotency_key": "exec/Put/t0"});
    // One lost answer: the function sends the same transaction again and hears it landed.
    proxy.set(
        Rule::new(Fault::DropResponse)
            .on("TransactWriteItems")
            .times(1),
    );
    let first = invoke(&kv, Function::KeyPut, payload.clone())
        .await
        .expect("answered");
    assert_eq!(status(&first), 200, "{first}");
    let repeat = call(&kv, Function::KeyPut, payload.clone()).await;
    assert_eq!(repeat, first);
    // Every answer lost: the function cannot tell, says so, and the flow's retry finds out.
    let other =
        json!({"bucket": name, "key": "k2", "value": "once", "idempotency_key": "exec/Put/t1"});
    proxy.set(Rule::new(Fault::DropResponse).on("TransactWriteItems"));
    let unanswered = invoke(&kv, Function::KeyPut, other.clone()).await;
    proxy.clear();
    let retried = call(&kv, Function::KeyPut, other).await;
    assert_eq!(status(&retried), 200, "{retried}");
    if let Ok(answer) = &unanswered {
        assert_eq!(answer, &retried, "the first call answered another revision");
    }
    let direct = container();
    for (key, answer) in [("k", &first), ("k2", &retried)] {
        let kept = history(&direct, &name, key).await;
        assert_eq!(kept.len(), 1, "{key}: {kept:?}");
        assert_eq!(kept[0]["revision"], answer["body"]["revision"], "{key}");
    }
}

/// The function timed out while DynamoDB applied its write (Lambda ended the invocation; the
/// answer never came): the flow's retry gets the revision that was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_after_the_function_timed_out_is_stored_once_with_the_same_revision() {
    let proxy = FaultProxy::start(endpoint(), 29).await;
    let kv = container_at(&proxy.url());
    let name = bucket(&kv, "idem-timeout", json!({})).await;
    let payload = json!({"bucket": name, "key": "n", "by": 7, "idempotency_key": "exec/Add/t0"});
    proxy.set(
        Rule::new(Fault::ApplyThenHang)
            .on("TransactWriteItems")
            .times(1),
    );
    let timed_out = tokio::time::timeout(
        Duration::from_secs(2),
        invoke(&kv, Function::KeyIncrement, payload.clone()),
    )
    .await;
    assert!(timed_out.is_err(), "the first call answered: {timed_out:?}");
    proxy.clear();
    let retried = call(&container(), Function::KeyIncrement, payload).await;
    assert_eq!(status(&retried), 200, "{retried}");
    assert_eq!(retried["body"]["value"], 7, "{retried}");
    let kept = history(&container(), &name, "n").await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["revision"], retried["body"]["revision"]);
    assert_eq!(kept[0]["value"], "7");
}
