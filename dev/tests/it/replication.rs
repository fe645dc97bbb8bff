//! Republish end to end: the items table's stream, played by `make streams`' runner, delivers
//! each revision to kv-items-replicate, whose EventBridge client puts it on the bus of a moto
//! server; a rule routes the events to an SQS queue, read back here.

use kv::Function;
use kv_dev::fault_proxy::{ErrorReply, Fault, FaultProxy, Rule};
use kv_dev::moto::Moto;
use kv_dev::support::stream_pump::follow_replication;
use kv_dev::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The contract's lag: a revision reaches the event bus within 5 s locally.
const LAG: Duration = Duration::from_secs(5);

/// A queue receiving every republished event of `bucket`.
fn queue(moto: &Moto, bucket: &str) -> String {
    moto.queue_for(
        "default",
        &unique("republished"),
        json!({"source": ["kv.republish"], "detail": {"bucket": [bucket]}}),
    )
}

fn container_at(endpoint: &str) -> kv::Kv {
    kv::Kv::new(client_for(endpoint), &settings())
}

fn summary(event: &Value) -> (String, String, String, Value) {
    (
        event["detail-type"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        event["detail"]["key"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        event["detail"]["operation"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        event["detail"]["value"].clone(),
    )
}

#[tokio::test]
async fn republish_puts_each_matching_revision_on_the_bus_within_the_lag() {
    let moto = Moto::start();
    let endpoint = private_endpoint();
    follow_replication(&endpoint, &moto.endpoint);
    let kv = container_at(&endpoint);
    let name = bucket(
        &kv,
        "republish",
        json!({"history": 5, "republish": {"src": "orders.*", "dest": "shop.>"}}),
    )
    .await;
    let quiet = bucket(
        &kv,
        "headers",
        json!({"republish": {"source": ">", "dest": "meta.>", "headers_only": true}}),
    )
    .await;
    let (events_of_name, events_of_quiet) = (queue(&moto, &name), queue(&moto, &quiet));

    let written = Instant::now();
    let first = put(&kv, &name, "orders.1", json!({"total": 5})).await;
    put(&kv, &name, "customers.7", json!("not republished")).await;
    let second = put(&kv, &name, "orders.1", json!("paid")).await;
    let deleted = call(
        &kv,
        Function::KeyDelete,
        json!({"bucket": name, "key": "orders.1"}),
    )
    .await;
    assert_eq!(status(&deleted), 200, "{deleted}");
    let purged = call(
        &kv,
        Function::KeyDelete,
        json!({"bucket": name, "key": "orders.2", "purge": true}),
    )
    .await;
    assert_eq!(status(&purged), 200, "{purged}");
    let events = moto.wait_for(&events_of_name, 4, LAG);
    assert!(written.elapsed() < LAG, "took {:?}", written.elapsed());
    let seen: Vec<_> = events.iter().map(summary).collect();
    assert_eq!(
        seen,
        vec![
            (
                "shop.orders.1".into(),
                "orders.1".into(),
                "PUT".into(),
                json!(r#"{"total":5}"#)
            ),
            (
                "shop.orders.1".into(),
                "orders.1".into(),
                "PUT".into(),
                json!("paid")
            ),
            (
                "shop.orders.1".into(),
                "orders.1".into(),
                "DEL".into(),
                Value::Null
            ),
            (
                "shop.orders.2".into(),
                "orders.2".into(),
                "PURGE".into(),
                Value::Null
            ),
        ],
        "{events:#?}"
    );
    let revisions: Vec<u64> = events
        .iter()
        .map(|event| event["detail"]["revision"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(&revisions[..2], &[first, second]);
    assert!(
        revisions.windows(2).all(|pair| pair[0] < pair[1]),
        "{revisions:?}"
    );
    assert_eq!(events[0]["source"], "kv.republish");
    assert_eq!(events[0]["detail"]["bucket"], name.as_str());
    assert_eq!(events[0]["detail"]["size"], 11);

    // Headers only: everything but the value; a value too large for an event is sent the same
    // way, and says why.
    put(&kv, &quiet, "a.b", json!("secret")).await;
    let large = "x".repeat(300 * 1024);
    put(&kv, &name, "orders.3", json!(large)).await;
    let quiet_events = moto.wait_for(&events_of_quiet, 1, LAG);
    assert_eq!(quiet_events.len(), 1, "{quiet_events:?}");
    let detail = &quiet_events[0]["detail"];
    assert_eq!(quiet_events[0]["detail-type"], "meta.a.b");
    assert_eq!(
        (
            &detail["headers_only"],
            &detail["too_large"],
            &detail["size"]
        ),
        (&json!(true), &json!(false), &json!(6))
    );
    assert!(detail.get("value").is_none(), "{detail}");
    let large_events = moto.wait_for(&events_of_name, 1, LAG);
    let detail = &large_events[0]["detail"];
    assert_eq!(
        (
            &detail["headers_only"],
            &detail["too_large"],
            &detail["size"]
        ),
        (&json!(true), &json!(true), &json!(300 * 1024))
    );
    assert!(detail.get("value").is_none());
}

/// EventBridge fails the second `PutEvents` of a batch (every attempt of the SDK's): the batch
/// reports its first unpublished record, Lambda's runner delivers from there again, and every
/// revision reaches the bus once, in order.
// Two workers: the proxy's tasks run on this runtime while the test blocks reading the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_halfway_through_a_batch_delivers_the_rest_once_in_order() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint, 7).await;
    let endpoint = private_endpoint();
    let kv = container_at(&endpoint);
    let name = bucket(&kv, "halfway", json!({"republish": {"dest": "all.>"}})).await;
    let events_of_name = queue(&moto, &name);
    let mut revisions = Vec::new();
    for index in 0..15 {
        revisions.push(
            put(
                &kv,
                &name,
                &format!("k{}", index % 4),
                json!(format!("v{index}")),
            )
            .await,
        );
    }
    proxy.set(Rule::new(Fault::Pass).on("PutEvents").times(1));
    proxy.add(
        Rule::new(Fault::Error(ErrorReply::InternalServerError))
            .on("PutEvents")
            .times(3),
    );
    // Started after the writes, so that its first batch holds all fifteen (ten per PutEvents).
    follow_replication(&endpoint, &proxy.url());
    let events = moto.wait_for(&events_of_name, 15, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    let late = moto.drain(&events_of_name);
    assert!(late.is_empty(), "published twice: {late:?}");
    // Once each, and each key's revisions in order (the bus promises no order across keys).
    let mut published: Vec<(String, u64)> = events
        .iter()
        .map(|event| {
            let detail = &event["detail"];
            (
                detail["key"].as_str().unwrap_or_default().to_string(),
                detail["revision"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    for key in ["k0", "k1", "k2", "k3"] {
        let of_key: Vec<u64> = published
            .iter()
            .filter(|(of, _)| of == key)
            .map(|(_, revision)| *revision)
            .collect();
        assert!(
            of_key.windows(2).all(|pair| pair[0] < pair[1]),
            "{key}: {of_key:?}"
        );
    }
    published.sort_by_key(|(_, revision)| *revision);
    let published: Vec<u64> = published
        .into_iter()
        .map(|(_, revision)| revision)
        .collect();
    assert_eq!(published, revisions);
    let stats = proxy.stats();
    assert!(
        stats.errors_of(ErrorReply::InternalServerError) >= 3,
        "the fault never fired: {stats:?}"
    );
}
