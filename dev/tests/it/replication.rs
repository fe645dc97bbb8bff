//! Republish end to end: the items table's stream, played by `make streams`' runner, delivers
//! each revision to kv-items-replicate, whose EventBridge client puts it on the bus of a moto
//! server; a rule routes the events to an SQS queue, read back here.

use kv::Function;
use kv_dev::fault_proxy::{ErrorReply, Fault, FaultProxy, Rule};
use kv_dev::moto::Moto;
use kv_dev::support::stream_pump::{follow_replication, replication_failures_at};
use kv_dev::support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The contract's lag: a revision reaches the event bus within 5 s locally.
/// The contract's bound on replication, asserted where a test measures it.
const LAG: Duration = Duration::from_secs(5);
/// How long a test waits for what replication must eventually show: well past the lag, as the
/// suite shares two cores with the JVMs, runners and containers of the tests beside it.
const PATIENCE: Duration = Duration::from_secs(30);

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
        json!({"history": 5, "republish": {"src": "orders.*", "dest": "shop.orders.$1"}}),
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
    let events = moto.wait_for(&events_of_name, 4, PATIENCE);
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
    let quiet_events = moto.wait_for(&events_of_quiet, 1, PATIENCE);
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
    let large_events = moto.wait_for(&events_of_name, 1, PATIENCE);
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

/// SPEC "Nothing stalls the stream": a copy its target refuses for good (a value over a source
/// target's `max_value_size`) and an event EventBridge can never take (a detail-type over 128
/// characters) are set aside with their reason and skipped. The mirror of the same origin, the
/// later copies and the later events arrive within the lag, and no batch is retried.
#[tokio::test]
async fn records_no_target_can_take_are_set_aside_and_the_stream_goes_on() {
    let moto = Moto::shared();
    let endpoint = private_endpoint();
    follow_replication(&endpoint, &moto.endpoint);
    let kv = container_at(&endpoint);
    let origin = bucket(&kv, "o", json!({"republish": {"src": ">", "dest": "kv.>"}})).await;
    let mirror = bucket(&kv, "m", json!({"mirror": {"name": origin}})).await;
    let small = bucket(
        &kv,
        "q",
        json!({"sources": [{"name": origin}], "max_value_size": 4}),
    )
    .await;
    let events_of_origin = queue(moto, &origin);
    let long_key = "k".repeat(200);
    let written = Instant::now();
    let big = put(&kv, &origin, "big", json!("0123456789")).await;
    let long = put(&kv, &origin, &long_key, json!("abc")).await;
    put(&kv, &origin, "fits", json!("abc")).await;
    eventually(PATIENCE, "the copies that fit", || {
        let (kv, mirror, small, long_key) = (&kv, &mirror, &small, &long_key);
        async move {
            let mirrored = [
                history_of(kv, mirror, "big").await.len(),
                history_of(kv, mirror, long_key).await.len(),
                history_of(kv, mirror, "fits").await.len(),
            ];
            let sourced = [
                history_of(kv, small, long_key).await.len(),
                history_of(kv, small, "fits").await.len(),
            ];
            (mirrored == [1, 1, 1] && sourced == [1, 1])
                .then_some(())
                .ok_or(format!("mirror {mirrored:?}, source target {sourced:?}"))
        }
    })
    .await;
    assert!(written.elapsed() < LAG, "took {:?}", written.elapsed());
    let events = moto.wait_for(&events_of_origin, 2, PATIENCE);
    let keys: Vec<&str> = events
        .iter()
        .map(|event| event["detail"]["key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(keys, ["big", "fits"], "{events:?}");
    assert!(history_of(&kv, &small, "big").await.is_empty());

    let mut aside: Vec<_> = kv
        .store
        .set_aside_records()
        .await
        .expect("list set-aside records")
        .into_iter()
        .filter(|record| record.bucket == origin)
        .collect();
    // The stream and the target's backfill may both meet `big`: it is set aside once.
    aside.sort_by_key(|record| record.revision);
    let seen: Vec<(&str, Option<u64>, &str)> = aside
        .iter()
        .map(|record| (record.key.as_str(), record.revision, record.target.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("big", Some(big), small.as_str()),
            (long_key.as_str(), Some(long), "eventbridge")
        ],
        "{aside:?}"
    );
    assert!(aside[0].reason.contains("max_value_size"), "{aside:?}");
    assert!(aside[1].reason.contains("128"), "{aside:?}");
    assert!(aside
        .iter()
        .all(|record| record.function == "kv-items-replicate" && !record.record_id.is_empty()));
    assert_eq!(replication_failures_at(&endpoint), 0);
}

/// Every retained revision of a key, as kv-key-history shows it: (revision, operation, value).
async fn history_of(kv: &kv::Kv, bucket: &str, key: &str) -> Vec<(u64, String, Value)> {
    let response = call(
        kv,
        Function::KeyHistory,
        json!({"bucket": bucket, "key": key}),
    )
    .await;
    response["body"]["body"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            (
                entry["revision"].as_u64().unwrap_or(0),
                entry["operation"].as_str().unwrap_or_default().to_string(),
                entry["value"].clone(),
            )
        })
        .collect()
}

/// Waits until `check` holds, or fails the test after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if started.elapsed() > within => panic!("{what} not within {within:?}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn a_mirror_holds_its_origin_with_its_revisions_history_deletes_and_purges() {
    let endpoint = private_endpoint();
    follow_replication(&endpoint, &Moto::shared().endpoint);
    let kv = container_at(&endpoint);
    let origin = bucket(&kv, "origin", json!({"history": 5})).await;
    // Before the mirror exists: the backfill copies these.
    put(&kv, &origin, "a.one", json!("1")).await;
    put(&kv, &origin, "a.one", json!("2")).await;
    put(&kv, &origin, "b.two", json!({"n": 2})).await;
    let copy = bucket(
        &kv,
        "mirror",
        json!({"history": 5, "mirror": {"name": origin}}),
    )
    .await;
    // After: the stream copies these.
    put(&kv, &origin, "a.one", json!("3")).await;
    let deleted = call(
        &kv,
        Function::KeyDelete,
        json!({"bucket": origin, "key": "b.two"}),
    )
    .await;
    assert_eq!(status(&deleted), 200);
    put(&kv, &origin, "c.three", json!("x")).await;
    put(&kv, &origin, "c.three", json!("y")).await;
    let purged = call(
        &kv,
        Function::KeyDelete,
        json!({"bucket": origin, "key": "c.three", "purge": true}),
    )
    .await;
    assert_eq!(status(&purged), 200);
    let written = Instant::now();
    for key in ["a.one", "b.two", "c.three"] {
        let want = history_of(&kv, &origin, key).await;
        assert!(!want.is_empty());
        eventually(PATIENCE, &format!("{copy}/{key} as in {origin}"), || {
            let (kv, copy, want) = (&kv, &copy, &want);
            async move {
                let got = history_of(kv, copy, key).await;
                (&got == want)
                    .then_some(())
                    .ok_or(format!("{got:?} != {want:?}"))
            }
        })
        .await;
    }
    assert!(written.elapsed() < LAG, "took {:?}", written.elapsed());
    let info = |bucket: String| {
        let kv = &kv;
        async move { call(kv, Function::BucketInfo, json!({"bucket": bucket})).await }
    };
    assert_eq!(
        info(copy.clone()).await["body"]["body"]["last_sequence"],
        info(origin.clone()).await["body"]["body"]["last_sequence"]
    );
    // Read-only to callers.
    let refused = call(
        &kv,
        Function::KeyPut,
        json!({"bucket": copy, "key": "a.one", "value": "no"}),
    )
    .await;
    assert_error(&refused, 400, "invalid_parameter");
    assert!(
        refused["body"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("mirror of '{origin}'")),
        "{refused}"
    );
    let refused = call(
        &kv,
        Function::KeyDelete,
        json!({"bucket": copy, "key": "a.one"}),
    )
    .await;
    assert_error(&refused, 400, "invalid_parameter");
}

#[tokio::test]
async fn a_mirror_applies_its_filter_start_and_transforms() {
    let endpoint = private_endpoint();
    follow_replication(&endpoint, &Moto::shared().endpoint);
    let kv = container_at(&endpoint);
    let origin = bucket(&kv, "origin", json!({})).await;
    let early = put(&kv, &origin, "orders.1", json!("early")).await;
    let start = put(&kv, &origin, "orders.2", json!("at start")).await;
    put(&kv, &origin, "users.1", json!("filtered out")).await;
    let copy = bucket(
        &kv,
        "mirror",
        json!({"mirror": {
            "name": origin,
            "filter_subject": "orders.*",
            "opt_start_seq": start,
            "subject_transforms": [{"src": "orders.*", "dest": "shop.orders.{{wildcard(1)}}"}]
        }}),
    )
    .await;
    put(&kv, &origin, "orders.3", json!("later")).await;
    put(&kv, &origin, "users.2", json!("filtered out")).await;
    eventually(PATIENCE, "the mirror's keys", || {
        let (kv, copy) = (&kv, &copy);
        async move {
            let keys = listed_keys(kv, copy).await;
            (keys == ["shop.orders.2", "shop.orders.3"])
                .then_some(())
                .ok_or(format!("{keys:?}"))
        }
    })
    .await;
    let got = call(
        &kv,
        Function::KeyGet,
        json!({"bucket": copy, "key": "shop.orders.2"}),
    )
    .await;
    assert_eq!(got["body"]["metadata"]["revision"], start);
    assert!(early < start);
    // The same from a start time: the revisions written at or after it.
    let at_start = call(
        &kv,
        Function::KeyGet,
        json!({"bucket": origin, "key": "orders.2"}),
    )
    .await;
    let since = at_start["body"]["metadata"]["created"]
        .as_u64()
        .unwrap_or(0);
    let timed = bucket(
        &kv,
        "timed",
        json!({"mirror": {"name": origin, "opt_start_time": since, "filter_subject": "orders.>"}}),
    )
    .await;
    eventually(PATIENCE, "the timed mirror's keys", || {
        let (kv, timed) = (&kv, &timed);
        async move {
            let keys = listed_keys(kv, timed).await;
            // orders.1 was written before `since`, unless within the same millisecond.
            (keys.ends_with(&["orders.2".to_string(), "orders.3".to_string()]) && keys.len() <= 3)
                .then_some(())
                .ok_or(format!("{keys:?}"))
        }
    })
    .await;
}

#[tokio::test]
async fn sources_gather_two_buckets_beside_the_targets_own_writes() {
    let endpoint = private_endpoint();
    follow_replication(&endpoint, &Moto::shared().endpoint);
    let kv = container_at(&endpoint);
    let east = bucket(&kv, "east", json!({})).await;
    let west = bucket(&kv, "west", json!({})).await;
    put(&kv, &east, "stock.apples", json!("10")).await;
    let all = bucket(
        &kv,
        "all",
        json!({"history": 10, "sources": [
            {"name": east, "subject_transforms": [{"src": "stock.*", "dest": "east.{{wildcard(1)}}"}]},
            {"name": west, "subject_transforms": [{"src": "stock.*", "dest": "west.{{wildcard(1)}}"}]}
        ]}),
    )
    .await;
    put(&kv, &west, "stock.pears", json!("4")).await;
    put(&kv, &east, "stock.apples", json!("9")).await;
    let own = put(&kv, &all, "note", json!("own write")).await;
    eventually(PATIENCE, "the target's keys", || {
        let (kv, all) = (&kv, &all);
        async move {
            let apples = history_of(kv, all, "east.apples").await;
            let pears = history_of(kv, all, "west.pears").await;
            let values: Vec<&Value> = apples.iter().map(|entry| &entry.2).collect();
            (values == [&json!("10"), &json!("9")] && pears.len() == 1)
                .then_some(())
                .ok_or(format!("{apples:?} {pears:?}"))
        }
    })
    .await;
    // Each arriving revision got the target's own number.
    let apples = history_of(&kv, &all, "east.apples").await;
    let note = history_of(&kv, &all, "note").await;
    assert_eq!(note[0].0, own);
    let mut numbers: Vec<u64> = apples.iter().map(|entry| entry.0).collect();
    numbers.push(own);
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers.len(), 3, "{apples:?} {note:?}");
}

#[tokio::test]
async fn a_cycle_of_copies_is_refused_at_create() {
    let kv = container();
    let first = bucket(&kv, "ring-a", json!({})).await;
    let second = bucket(&kv, "ring-b", json!({"sources": [{"name": first}]})).await;
    let third = unique("ring-c");
    // first <- second <- third is fine; a bucket copying from itself is not.
    let own = call(
        &kv,
        Function::BucketCreate,
        json!({"bucket": third, "mirror": {"name": third}}),
    )
    .await;
    assert_error(&own, 400, "invalid_parameter");
    let fine = call(
        &kv,
        Function::BucketCreate,
        json!({"bucket": third, "sources": [{"name": second}]}),
    )
    .await;
    assert_eq!(status(&fine), 200, "{fine}");
    // Deleting `first` and creating it again as a copy of `third` would close the ring.
    let deleted = call(&kv, Function::BucketDelete, json!({"bucket": first})).await;
    assert_eq!(status(&deleted), 200, "{deleted}");
    let ring = call(
        &kv,
        Function::BucketCreate,
        json!({"bucket": first, "sources": [{"name": third}]}),
    )
    .await;
    assert_error(&ring, 400, "invalid_parameter");
    assert!(
        ring["body"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cycle"),
        "{ring}"
    );
    let missing = call(
        &kv,
        Function::BucketCreate,
        json!({"bucket": unique("orphan"), "mirror": {"name": unique("nowhere")}}),
    )
    .await;
    assert_error(&missing, 404, "bucket_not_found");
}

/// A backfill larger than one invocation's budget: each slice moves the cursor, the stream
/// brings the next, and the mirror ends with every key.
#[tokio::test]
async fn a_large_backfill_is_handed_on_across_invocations() {
    let endpoint = private_endpoint();
    kv_dev::support::stream_pump::follow_replication_with(
        &endpoint,
        &Moto::shared().endpoint,
        Some(Duration::from_millis(200)),
    );
    let kv = container_at(&endpoint);
    let origin = bucket(&kv, "big-origin", json!({})).await;
    const KEYS: usize = 150;
    let mut writes = tokio::task::JoinSet::new();
    for index in 0..KEYS {
        let (endpoint, origin) = (endpoint.to_string(), origin.clone());
        writes.spawn(async move {
            let kv = container_at(&endpoint);
            put(
                &kv,
                &origin,
                &format!("k{index:04}"),
                json!(format!("v{index}")),
            )
            .await
        });
        if writes.len() >= 16 {
            writes.join_next().await;
        }
    }
    while writes.join_next().await.is_some() {}
    let copy = bucket(&kv, "big-mirror", json!({"mirror": {"name": origin}})).await;
    let usage_pk = json!({"S": copy});
    eventually(Duration::from_secs(60), "the backfill", || {
        let (kv, copy) = (&kv, &copy);
        async move {
            let listed = call(
                kv,
                Function::KeyList,
                json!({"bucket": copy, "limit": 1000}),
            )
            .await;
            let count = listed["body"]["body"]["results"]
                .as_array()
                .map_or(0, Vec::len);
            (count == KEYS).then_some(()).ok_or(format!("{count} keys"))
        }
    })
    .await;
    let slices = kv_dev::support::stream_pump::replication_delivered_at(&endpoint)
        .iter()
        .flat_map(|batch| batch["Records"].as_array().cloned().unwrap_or_default())
        .filter(|record| {
            record["dynamodb"]["Keys"]["pk"] == usage_pk
                && record["dynamodb"]["NewImage"]["bf"].is_object()
        })
        .count();
    assert!(slices > 2, "the backfill took {slices} invocations");
    let got = call(
        &kv,
        Function::KeyGet,
        json!({"bucket": copy, "key": "k0123"}),
    )
    .await;
    assert_eq!(got["body"]["body"]["value"], "v123");
}

/// Every batch the replication consumer was given, delivered again: mirrors and source
/// targets do not change (copies apply once); republish may put events again (at least once).
#[tokio::test]
async fn redelivered_batches_change_no_mirror_or_source() {
    let endpoint = private_endpoint();
    follow_replication(&endpoint, &Moto::shared().endpoint);
    let kv = container_at(&endpoint);
    let origin = bucket(&kv, "origin", json!({"history": 3})).await;
    put(&kv, &origin, "a", json!("before")).await;
    let copy = bucket(
        &kv,
        "mirror",
        json!({"history": 3, "mirror": {"name": origin}}),
    )
    .await;
    let gathered = bucket(
        &kv,
        "gathered",
        json!({"history": 5, "sources": [{"name": origin}]}),
    )
    .await;
    for round in 0..4 {
        put(&kv, &origin, "a", json!(format!("v{round}"))).await;
        put(&kv, &origin, "b", json!(format!("w{round}"))).await;
    }
    call(
        &kv,
        Function::KeyDelete,
        json!({"bucket": origin, "key": "b"}),
    )
    .await;
    let want = (
        history_of(&kv, &origin, "a").await,
        history_of(&kv, &origin, "b").await,
    );
    eventually(PATIENCE, "the copies", || {
        let (kv, copy, gathered, want) = (&kv, &copy, &gathered, &want);
        async move {
            let mirrored = (
                history_of(kv, copy, "a").await,
                history_of(kv, copy, "b").await,
            );
            let sourced = history_of(kv, gathered, "b").await;
            (&mirrored == want && sourced.last().is_some_and(|last| last.1 == "DEL"))
                .then_some(())
                .ok_or(format!("{mirrored:?} {sourced:?}"))
        }
    })
    .await;
    // The copies show before their batch's invocation has answered: wait for it to end.
    let mut batches = Vec::new();
    let started = Instant::now();
    while started.elapsed() < LAG {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = kv_dev::support::stream_pump::replication_delivered_at(&endpoint);
        if !now.is_empty() && now.len() == batches.len() {
            break;
        }
        batches = now;
    }
    assert!(!batches.is_empty());
    let before = snapshot(&kv, &[&copy, &gathered]).await;
    let mut replayer = container_at(&endpoint);
    replayer.bus = Some(kv::bus::EventBus::new(
        Moto::eventbridge_client(&Moto::shared().endpoint),
        "default",
    ));
    for batch in batches {
        let answer = invoke(&replayer, Function::ItemsReplicate, batch)
            .await
            .expect("a batch delivered again");
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    }
    assert_eq!(snapshot(&kv, &[&copy, &gathered]).await, before);
}

/// An expiry in the origin: republished as EXPIRED by the sweeper's change, and the mirror's
/// copy, which carries the same expiry, is gone for readers at the same moment.
#[tokio::test]
async fn an_expiry_is_republished_and_mirrored() {
    let moto = Moto::shared();
    let endpoint = private_endpoint();
    follow_replication(&endpoint, &moto.endpoint);
    let kv = container_at(&endpoint);
    let origin = bucket(&kv, "expiring", json!({"republish": {"dest": "exp.>"}})).await;
    let copy = bucket(&kv, "mirror", json!({"mirror": {"name": origin}})).await;
    let events = queue(moto, &origin);
    // Long enough for the copy to show on a loaded machine before it expires.
    put_with_ttl(&kv, &origin, "session", 6_000_000_000).await;
    // The expiry counts from the write, which ended before this.
    let expires_by = Instant::now() + Duration::from_millis(6100);
    eventually(PATIENCE, "the copy", || {
        let (kv, copy) = (&kv, &copy);
        async move {
            let got = call(
                kv,
                Function::KeyGet,
                json!({"bucket": copy, "key": "session"}),
            )
            .await;
            (status(&got) == 200).then_some(()).ok_or(got.to_string())
        }
    })
    .await;
    tokio::time::sleep(expires_by.saturating_duration_since(Instant::now())).await;
    let gone = call(
        &kv,
        Function::KeyGet,
        json!({"bucket": copy, "key": "session"}),
    )
    .await;
    assert_error(&gone, 404, "key_not_found");
    let swept = call(&kv, Function::ExpirySweep, json!({})).await;
    assert!(
        swept["body"]["expired"].as_u64().unwrap_or(0) >= 1,
        "{swept}"
    );
    let seen: Vec<String> = moto
        .wait_for(&events, 2, PATIENCE)
        .iter()
        .map(|event| {
            event["detail"]["operation"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(seen, ["PUT", "EXPIRED"]);
}

/// The buckets' histories of keys `a` and `b` and their last revisions.
async fn snapshot(kv: &kv::Kv, buckets: &[&String]) -> Vec<Value> {
    let mut seen = Vec::new();
    for bucket in buckets {
        for key in ["a", "b"] {
            seen.push(json!(format!("{:?}", history_of(kv, bucket, key).await)));
        }
        let info = call(kv, Function::BucketInfo, json!({"bucket": bucket})).await;
        seen.push(info["body"]["body"]["last_sequence"].clone());
    }
    seen
}

async fn put_with_ttl(kv: &kv::Kv, bucket: &str, key: &str, ttl_ns: i64) {
    let response = call(
        kv,
        Function::KeyPut,
        json!({"bucket": bucket, "key": key, "value": "short-lived", "ttl": ttl_ns}),
    )
    .await;
    assert_eq!(status(&response), 200, "{response}");
}

/// The bucket's live keys, as kv-key-list's first page shows them.
async fn listed_keys(kv: &kv::Kv, bucket: &str) -> Vec<String> {
    let listed = call(kv, Function::KeyList, json!({"bucket": bucket})).await;
    listed["body"]["body"]["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| entry["key"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The stream records of `bucket` that kv-items-stream has been delivered so far, as one batch.
async fn batch_of(bucket: &str) -> Value {
    settled().await;
    let records: Vec<Value> = kv_dev::support::stream_pump::delivered_at(endpoint())
        .iter()
        .flat_map(|batch| batch["Records"].as_array().cloned().unwrap_or_default())
        .filter(|record| {
            kv::store::stream_images::record_pk(record).starts_with(&format!("{bucket}/"))
        })
        .collect();
    assert!(!records.is_empty(), "no record of {bucket} on the stream");
    json!({ "Records": records })
}

/// #20's floor for replication: a bucket with no mirror, source, republish or waiter costs
/// kv-items-replicate one read per batch (its usage item: incarnation, feeds, waiters), its
/// configuration coming from the container's cache after the first batch. With a waiter the
/// waiters are read too.
#[tokio::test]
async fn a_bucket_with_nothing_to_replicate_costs_one_read_per_batch() {
    let (kv, meter) = metered_container();
    let name = bucket(&kv, "quiet", json!({})).await;
    for index in 0..3 {
        put(&kv, &name, &format!("k{index}"), json!("v")).await;
    }
    let batch = batch_of(&name).await;
    let mut sent = Vec::new();
    for _ in 0..3 {
        meter.take();
        let answer = invoke(&kv, Function::ItemsReplicate, batch.clone())
            .await
            .unwrap();
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
        sent.push(meter.take().operations());
    }
    // The first batch reads the configuration once; later ones only the usage item.
    assert_eq!(sent[0], ["GetItem", "GetItem"], "{sent:?}");
    assert_eq!(sent[1], ["GetItem"], "{sent:?}");
    assert_eq!(sent[2], ["GetItem"], "{sent:?}");

    // A flow counted as waiting on the bucket: its waiters are read (and none matches here).
    let waited = bucket(&kv, "waited", json!({})).await;
    put(&kv, &waited, "k", json!("v")).await;
    let batch = batch_of(&waited).await;
    kv.store
        .add_waiter(
            &waited,
            &kv::store::waiters::Waiter {
                id: 0,
                pattern: "other".into(),
                is_filter: false,
                after: 0,
                expiry_seen: false,
                task_token: "token".into(),
                expires_ns: kv::model::time::now_ns() + 60_000_000_000,
                incarnation: kv
                    .store
                    .read_bucket(&waited)
                    .await
                    .unwrap()
                    .unwrap()
                    .created_ms,
            },
            10,
        )
        .await
        .unwrap();
    meter.take();
    let answer = invoke(&kv, Function::ItemsReplicate, batch).await.unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    let operations = meter.take().operations();
    assert!(operations.contains(&"Query".to_string()), "{operations:?}");
}
