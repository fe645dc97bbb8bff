//! Deleting keys and buckets, key history and bucket info, against DynamoDB Local.

use kv::model::revision::Op;
use kv::store::items;
use kv::Function::{
    BucketCreate, BucketDelete, BucketInfo, BucketPurge, KeyDelete, KeyGet, KeyHistory, KeyList,
    KeyPut,
};
use kv::Kv;
use kv_dev::support::*;
use serde_json::{json, Value};
use std::time::Duration;

/// kv-bucket-info's body, once the stream has delivered every write made before the call.
async fn info(kv: &Kv, bucket: &str) -> Value {
    settled().await;
    let response = call(kv, BucketInfo, json!({"bucket": bucket})).await;
    assert_eq!(status(&response), 200, "{response}");
    response["body"]["body"].clone()
}

async fn history(kv: &Kv, bucket: &str, key: &str) -> Vec<(u64, String, Value)> {
    let response = call(kv, KeyHistory, json!({"bucket": bucket, "key": key})).await;
    assert_eq!(status(&response), 200, "{response}");
    response["body"]["body"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            (
                entry["revision"].as_u64().unwrap(),
                entry["operation"].as_str().unwrap().to_string(),
                entry["value"].clone(),
            )
        })
        .collect()
}

fn listed_keys(response: &Value) -> Vec<String> {
    response["body"]["body"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["key"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn delete_writes_a_marker_and_frees_the_key() {
    let kv = container();
    let name = bucket(&kv, "delete", json!({"history": 5})).await;
    let first = put(&kv, &name, "k", json!("12345")).await;
    put(&kv, &name, "other", json!("xy")).await;
    assert_eq!(
        (
            info(&kv, &name).await["entry_total"].clone(),
            info(&kv, &name).await["bytes"].clone()
        ),
        (json!(2), json!(7))
    );

    let deleted = call(&kv, KeyDelete, json!({"bucket": name, "key": "k"})).await;
    assert_eq!(status(&deleted), 200, "{deleted}");
    assert_eq!(deleted["body"]["message"], "Key deleted successfully");
    let marker = deleted["body"]["revision"].as_u64().unwrap();
    assert!(marker > first);

    assert_error(
        &call(&kv, KeyGet, json!({"bucket": name, "key": "k"})).await,
        404,
        "key_not_found",
    );
    assert_eq!(
        listed_keys(&call(&kv, KeyList, json!({"bucket": name})).await),
        vec!["other"]
    );
    let usage = info(&kv, &name).await;
    // The marker counts toward history, so the old value's bytes stay until it is trimmed.
    assert_eq!(
        (usage["entry_total"].clone(), usage["bytes"].clone()),
        (json!(1), json!(7))
    );
    // The old revision is still readable by number, as history.
    let old = call(
        &kv,
        KeyGet,
        json!({"bucket": name, "key": "k", "revision": first}),
    )
    .await;
    assert_eq!(old["body"]["body"]["value"], "12345");
    assert_eq!(
        history(&kv, &name, "k").await,
        vec![
            (first, "PUT".into(), json!("12345")),
            (marker, "DEL".into(), Value::Null)
        ]
    );

    let again = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "k", "value": "back", "revision": 0}),
    )
    .await;
    assert_eq!(status(&again), 200, "{again}");
    assert_eq!(info(&kv, &name).await["entry_total"], 2);

    // Compare-and-set on delete.
    let stale = call(
        &kv,
        KeyDelete,
        json!({"bucket": name, "key": "k", "revision": first}),
    )
    .await;
    assert_error(&stale, 409, "revision_mismatch");
    let current = stale["body"]["current_revision"].as_u64().unwrap();
    let ok = call(
        &kv,
        KeyDelete,
        json!({"bucket": name, "key": "k", "revision": current}),
    )
    .await;
    assert_eq!(status(&ok), 200, "{ok}");

    // As NATS does: a key never written gets a marker of its own, so a retried or blind
    // cleanup never branches on a 404.
    let never = call(&kv, KeyDelete, json!({"bucket": name, "key": "never"})).await;
    assert_eq!(status(&never), 200, "{never}");
    let marker = never["body"]["revision"].as_u64().unwrap();
    assert_eq!(
        history(&kv, &name, "never").await,
        vec![(marker, "DEL".into(), Value::Null)]
    );
    assert_error(
        &call(&kv, KeyGet, json!({"bucket": name, "key": "never"})).await,
        404,
        "key_not_found",
    );
    assert_error(
        &call(
            &kv,
            KeyDelete,
            json!({"bucket": unique("nope"), "key": "k"}),
        )
        .await,
        404,
        "bucket_not_found",
    );
    for bad in [
        json!({"bucket": name}),
        json!({"bucket": name, "key": "k", "purge": "yes"}),
        json!({"bucket": name, "key": "k", "revision": -1}),
        json!({"bucket": name, "key": "k", "value": "v"}),
    ] {
        assert_error(&call(&kv, KeyDelete, bad).await, 400, "invalid_parameter");
    }
    assert_error(
        &call(&kv, KeyDelete, json!({"bucket": name, "key": "a..b"})).await,
        400,
        "invalid_key",
    );
}

#[tokio::test]
async fn purge_leaves_exactly_one_marker() {
    let kv = container();
    let name = bucket(&kv, "purge", json!({"history": 10})).await;
    for index in 0..4 {
        put(&kv, &name, "k", json!(format!("value-{index}"))).await;
    }
    let purged = call(
        &kv,
        KeyDelete,
        json!({"bucket": name, "key": "k", "purge": true}),
    )
    .await;
    assert_eq!(status(&purged), 200, "{purged}");
    assert_eq!(purged["body"]["message"], "Key purged successfully");
    let marker = purged["body"]["revision"].as_u64().unwrap();
    assert_eq!(
        history(&kv, &name, "k").await,
        vec![(marker, "PURGE".into(), Value::Null)]
    );
    let usage = info(&kv, &name).await;
    assert_eq!(
        (usage["entry_total"].clone(), usage["bytes"].clone()),
        (json!(0), json!(0))
    );
    assert_error(
        &call(&kv, KeyGet, json!({"bucket": name, "key": "k"})).await,
        404,
        "key_not_found",
    );
    let revision = put(&kv, &name, "k", json!("fresh")).await;
    assert_eq!(history(&kv, &name, "k").await.len(), 2);
    assert!(revision > marker);
}

#[tokio::test]
async fn history_lists_retained_revisions_oldest_first() {
    let kv = container();
    let name = bucket(&kv, "hist", json!({"history": 3})).await;
    let mut revisions = Vec::new();
    for index in 0..5 {
        revisions.push(put(&kv, &name, "cfg", json!({"version": index})).await);
    }
    let entries = history(&kv, &name, "cfg").await;
    assert_eq!(
        entries.iter().map(|entry| entry.0).collect::<Vec<_>>(),
        revisions[2..].to_vec()
    );
    assert_eq!(entries[0].2, json!(r#"{"version":2}"#));
    let parsed = call(
        &kv,
        KeyHistory,
        json!({"bucket": name, "key": "cfg", "json": true}),
    )
    .await;
    let results = parsed["body"]["body"]["results"].as_array().unwrap();
    assert_eq!(results[2]["value"], json!({"version": 4}));
    assert!(results[0]["created"].as_u64().unwrap() > 0);
    assert_eq!(parsed["body"]["metadata"]["Bucket"], name);
    assert_eq!(parsed["body"]["body"]["key"], "cfg");

    put(&kv, &name, "text", json!("not json")).await;
    assert_error(
        &call(
            &kv,
            KeyHistory,
            json!({"bucket": name, "key": "text", "json": true}),
        )
        .await,
        422,
        "value_not_json",
    );
    assert_error(
        &call(&kv, KeyHistory, json!({"bucket": name, "key": "never"})).await,
        404,
        "key_not_found",
    );
    assert_error(
        &call(
            &kv,
            KeyHistory,
            json!({"bucket": unique("nope"), "key": "k"}),
        )
        .await,
        404,
        "bucket_not_found",
    );
    assert_error(
        &call(&kv, KeyHistory, json!({"bucket": name})).await,
        400,
        "invalid_parameter",
    );

    // Expired revisions are left out.
    let short = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "session", "value": "a", "ttl": 300_000_000}),
    )
    .await;
    assert_eq!(status(&short), 200);
    let kept = put(&kv, &name, "session", json!("b")).await;
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(
        history(&kv, &name, "session").await,
        vec![(kept, "PUT".into(), json!("b"))]
    );
}

#[tokio::test]
async fn bucket_info_reports_configuration_and_usage() {
    let kv = container();
    let name = bucket(
        &kv,
        "info",
        json!({"history": 2, "description": "flags", "metadata": {"team": "a"}}),
    )
    .await;
    let empty = info(&kv, &name).await;
    assert_eq!(
        (empty["entry_total"].clone(), empty["bytes"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(
        (
            empty["first_sequence"].clone(),
            empty["last_sequence"].clone()
        ),
        (json!(0), json!(0))
    );
    let first = put(&kv, &name, "a", json!("123")).await;
    put(&kv, &name, "b", json!("4567")).await;
    let last = put(&kv, &name, "b", json!("89")).await;
    let body = info(&kv, &name).await;
    assert_eq!(body["name"], name);
    assert_eq!(body["description"], "flags");
    assert_eq!(body["metadata"], json!({"team": "a"}));
    assert_eq!(body["config"]["history"], 2);
    assert_eq!(body["entry_total"], 2);
    assert_eq!(body["bytes"], 3 + 4 + 2);
    assert_eq!(body["first_sequence"], first);
    assert_eq!(body["last_sequence"], last);
    assert!(body["created"].as_u64().unwrap() > 0);
    assert_error(
        &call(&kv, BucketInfo, json!({"bucket": unique("nope")})).await,
        404,
        "bucket_not_found",
    );
    assert_error(
        &call(&kv, BucketInfo, json!({})).await,
        400,
        "invalid_parameter",
    );
    assert_error(
        &call(&kv, BucketInfo, json!({"bucket": "a b"})).await,
        400,
        "invalid_bucket_name",
    );
}

#[tokio::test]
async fn small_bucket_delete_finishes_in_one_call_and_the_name_can_be_reused() {
    let kv = container();
    let name = bucket(&kv, "small", json!({"history": 3})).await;
    for index in 0..10 {
        put(&kv, &name, &format!("k{index}"), json!("v")).await;
    }
    put(&kv, &name, "k0", json!("v2")).await;
    call(&kv, KeyDelete, json!({"bucket": name, "key": "k1"})).await;
    let deleted = call(&kv, BucketDelete, json!({"bucket": name})).await;
    assert_eq!(status(&deleted), 200, "{deleted}");
    assert_eq!(deleted["body"]["purged"], true);
    assert_eq!(deleted["body"]["keys_removed"], 10);
    assert_eq!(items_left(&name).await, 0);
    assert_error(
        &call(&kv, BucketInfo, json!({"bucket": name})).await,
        404,
        "bucket_not_found",
    );
    // Sent again (its answer lost, say), the delete answers as it did.
    let again = call(&kv, BucketDelete, json!({"bucket": name})).await;
    assert_eq!(status(&again), 200, "{again}");
    assert_error(
        &call(&kv, KeyGet, json!({"bucket": name, "key": "k0"})).await,
        404,
        "bucket_not_found",
    );

    let recreated = call(&kv, BucketCreate, json!({"bucket": name})).await;
    assert_eq!(status(&recreated), 200, "{recreated}");
    assert_error(
        &call(&kv, KeyGet, json!({"bucket": name, "key": "k0"})).await,
        404,
        "key_not_found",
    );
    assert_eq!(
        listed_keys(&call(&kv, KeyList, json!({"bucket": name})).await),
        Vec::<String>::new()
    );
    let usage = info(&kv, &name).await;
    assert_eq!(
        (usage["entry_total"].clone(), usage["bytes"].clone()),
        (json!(0), json!(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_bucket_delete_returns_quickly_and_the_purger_finishes() {
    let kv = container();
    let name = bucket(&kv, "large", json!({"history": 2})).await;
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let kv = container();
            for index in 0..40 {
                put(&kv, &name, &format!("w{writer}.k{index}"), json!("value")).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // A container with almost no time budget: the call marks the bucket and hands the rest on.
    let hurried = Kv::new(
        client(),
        &kv::model::config::Settings {
            purge_budget_ms: 1,
            ..settings()
        },
    );
    let deleted = call(&hurried, BucketDelete, json!({"bucket": name})).await;
    assert_eq!(status(&deleted), 200, "{deleted}");
    assert_eq!(deleted["body"]["purged"], false);

    // The bucket is gone for callers at once, and its name cannot be taken yet.
    assert_error(
        &call(
            &kv,
            KeyPut,
            json!({"bucket": name, "key": "new", "value": "v"}),
        )
        .await,
        404,
        "bucket_not_found",
    );
    assert_error(
        &call(&kv, KeyList, json!({"bucket": name})).await,
        404,
        "bucket_not_found",
    );
    assert_error(
        &call(&kv, BucketInfo, json!({"bucket": name})).await,
        404,
        "bucket_not_found",
    );
    let listed = listed_buckets(&kv).await;
    assert!(
        !listed.iter().any(|entry| entry["name"] == name.as_str()),
        "deleting bucket still listed"
    );
    let refused = call(&kv, BucketCreate, json!({"bucket": name})).await;
    assert_error(&refused, 400, "bucket_exists");
    assert!(items_left(&name).await > 0);

    // The stream hands the bucket item's new image to the purger until it is done.
    let deleting_since = client()
        .get_item()
        .table_name(BUCKETS_TABLE)
        .key(items::BUCKET, items::s(&name))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .and_then(|item| items::get_u64(item, items::DELETING))
        .expect("marked deleting");
    let stream_event = json!({"Records": [{
        "eventName": "MODIFY",
        "dynamodb": {"NewImage": {"bucket": {"S": name}, "deleting": {"N": deleting_since.to_string()}, "purge_round": {"N": "1"}}}
    }]});
    // A record of another deletion of the same name (a stale one) is ignored.
    let stale = json!({"Records": [{"dynamodb": {"NewImage": {"bucket": {"S": name}, "deleting": {"N": "1"}}}}]});
    assert_eq!(
        call(&kv, BucketPurge, stale).await["body"]["results"],
        json!([])
    );
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds < 50, "purger never finished");
        let step = call(&hurried, BucketPurge, stream_event.clone()).await;
        assert_eq!(status(&step), 200, "{step}");
        if step["body"]["results"][0]["purged"] == true {
            break;
        }
        // With a 1 ms budget each round does one page; a real invocation does many.
        if rounds > 3 {
            let step = call(&kv, BucketPurge, stream_event.clone()).await;
            if step["body"]["results"][0]["purged"] == true {
                break;
            }
        }
    }
    assert_eq!(items_left(&name).await, 0);
    assert_error(
        &call(&kv, BucketPurge, json!({"Records": 5})).await,
        400,
        "invalid_parameter",
    );
    // A record about another table change (no deletion) is ignored.
    let ignored = call(
        &kv,
        BucketPurge,
        json!({"Records": [{"dynamodb": {"NewImage": {"bucket": {"S": "x"}}}}]}),
    )
    .await;
    assert_eq!(ignored["body"]["results"], json!([]));

    let recreated = call(&kv, BucketCreate, json!({"bucket": name, "history": 2})).await;
    assert_eq!(status(&recreated), 200, "{recreated}");
    assert_error(
        &call(&kv, KeyGet, json!({"bucket": name, "key": "w0.k0"})).await,
        404,
        "key_not_found",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn puts_racing_a_bucket_delete_never_resurrect_it() {
    let kv = container();
    let name = bucket(&kv, "race", json!({})).await;
    let mut writers = Vec::new();
    for writer in 0..8 {
        let name = name.clone();
        writers.push(tokio::spawn(async move {
            let kv = container();
            let mut outcomes = Vec::new();
            for index in 0..30 {
                let response = call(
                    &kv,
                    KeyPut,
                    json!({"bucket": name, "key": format!("w{writer}-{index}"), "value": "v"}),
                )
                .await;
                outcomes.push(status(&response));
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let deleted = call(&kv, BucketDelete, json!({"bucket": name})).await;
    assert_eq!(status(&deleted), 200, "{deleted}");
    assert_eq!(deleted["body"]["purged"], true);
    let mut statuses = Vec::new();
    for writer in writers {
        statuses.extend(writer.await.unwrap());
    }
    assert!(
        statuses
            .iter()
            .all(|status| *status == 200 || *status == 404),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&404),
        "the delete happened after every put; make the race tighter"
    );
    // Let any put that was in flight during the delete finish, then check nothing came back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(items_left(&name).await, 0);
    assert_error(
        &call(&kv, BucketInfo, json!({"bucket": name})).await,
        404,
        "bucket_not_found",
    );
    let record = client()
        .get_item()
        .table_name(BUCKETS_TABLE)
        .key(items::BUCKET, items::s(&name))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    assert!(record.item().is_none(), "bucket item resurrected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_racing_puts_keep_history_in_revision_order() {
    let name = bucket(&container(), "del-race", json!({"history": 64})).await;
    let seed = put(&container(), &name, "k", json!("seed")).await;
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let name = name.clone();
        tasks.push(tokio::spawn(async move {
            let kv = container();
            let mut done = Vec::new();
            for index in 0..6 {
                let response = if (writer + index) % 3 == 0 {
                    call(&kv, KeyDelete, json!({"bucket": name, "key": "k"})).await
                } else {
                    call(
                        &kv,
                        KeyPut,
                        json!({"bucket": name, "key": "k", "value": format!("{writer}-{index}")}),
                    )
                    .await
                };
                assert_eq!(status(&response), 200, "{response}");
                let op = if (writer + index) % 3 == 0 {
                    "DEL"
                } else {
                    "PUT"
                };
                done.push((
                    response["body"]["revision"].as_u64().unwrap(),
                    op.to_string(),
                ));
            }
            done
        }));
    }
    let mut expected = vec![(seed, "PUT".to_string())];
    for task in tasks {
        expected.extend(task.await.unwrap());
    }
    expected.sort();
    let stored: Vec<(u64, String)> = history(&container(), &name, "k")
        .await
        .into_iter()
        .map(|(revision, operation, _)| (revision, operation))
        .collect();
    assert_eq!(stored, expected);
    let latest = expected.last().unwrap();
    let get = call(&container(), KeyGet, json!({"bucket": name, "key": "k"})).await;
    if latest.1 == "DEL" {
        assert_error(&get, 404, "key_not_found");
    } else {
        assert_eq!(get["body"]["metadata"]["revision"], latest.0);
    }
    let live = u64::from(latest.1 == "PUT");
    assert_eq!(info(&container(), &name).await["entry_total"], live);
}

#[tokio::test]
async fn a_write_from_before_a_delete_never_lands_in_the_recreated_bucket() {
    use kv::model::revision::{HeadEntry, Stored};
    use kv::store::{CommitError, HeadCondition, HeadWrite};
    let kv = container();
    let name = bucket(&kv, "incarnation", json!({})).await;
    // A writer takes its revision, then stalls while the bucket is deleted and re-created.
    let stalled = kv.store.allocate_revision(&name, None).await.unwrap();
    let allocated_ms = stalled.last_allocated_ms.unwrap();
    let deleted = call(&kv, BucketDelete, json!({"bucket": name})).await;
    assert_eq!(deleted["body"]["purged"], true, "{deleted}");
    assert_eq!(
        status(&call(&kv, BucketCreate, json!({"bucket": name})).await),
        200
    );
    let entries = [HeadEntry {
        revision: stalled.last_revision,
        size: 1,
        expiry_ns: None,
        op: Op::Put,
    }];
    let latest = Stored {
        revision: stalled.last_revision,
        bytes: b"x".to_vec(),
        compressed: false,
        created_ms: 0,
        expiry_ns: None,
        op: Op::Put,
        memory: false,
    };
    let late = kv
        .store
        .put_head(&HeadWrite {
            bucket: &name,
            key: "late",
            incarnation: stalled.created_ms,
            allocated_ms,
            latest: &latest,
            entries: &entries,
            exact_counts: false,
            condition: HeadCondition::Older,
            source: None,
        })
        .await;
    // The delete waited until every write of the old bucket had landed or could no longer be
    // sent: this one's revision is too old to be written.
    assert!(matches!(late, Err(CommitError::WindowClosed)), "{late:?}");
    assert_error(
        &call(&kv, KeyGet, json!({"bucket": name, "key": "late"})).await,
        404,
        "key_not_found",
    );
}

/// A stream batch reads its copy targets, then kv-bucket-delete removes them and they are
/// created again under the same names: the batch's copies, routed by the old configuration,
/// land nowhere (a source copy's revision is refused by incarnation, a mirror's commit window
/// will not open). A copy routed by the new configuration still lands.
#[tokio::test]
async fn copies_routed_before_a_delete_never_land_in_the_recreated_bucket() {
    use kv::ops::copies::{copy_into, Copy};
    let kv = container();
    let origin = bucket(&kv, "copied", json!({})).await;
    let configs = [
        json!({"sources": [{"name": origin}]}),
        json!({"mirror": {"name": origin}}),
    ];
    let mut targets = Vec::new();
    for (prefix, config) in ["sourcing", "mirroring"].into_iter().zip(configs) {
        let name = bucket(&kv, prefix, config.clone()).await;
        let stale = kv.store.read_bucket(&name).await.unwrap().unwrap();
        let deleted = call(&kv, BucketDelete, json!({"bucket": name})).await;
        assert_eq!(deleted["body"]["purged"], true, "{deleted}");
        let mut params = config;
        params["bucket"] = json!(name);
        assert_eq!(status(&call(&kv, BucketCreate, params).await), 200);
        targets.push((name, stale));
    }
    let copy = |key| Copy {
        origin: &origin,
        key,
        revision: 1,
        op: Op::Put,
        text: "from before the delete",
        created_ms: kv::model::time::ns_to_ms(kv::model::time::now_ns()),
        expiry_ns: None,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    for (name, stale) in &targets {
        let before = items_left(name).await;
        copy_into(&kv, stale, &copy("late"), deadline)
            .await
            .unwrap();
        assert_error(
            &call(&kv, KeyGet, json!({"bucket": name, "key": "late"})).await,
            404,
            "key_not_found",
        );
        let listed = call(&kv, KeyList, json!({"bucket": name})).await;
        assert_eq!(listed_keys(&listed), Vec::<String>::new(), "{listed}");
        assert_eq!(
            items_left(name).await,
            before,
            "{name}: an old copy was stored"
        );
        assert_eq!(info(&kv, name).await["entry_total"], 0);
        // The same copy, routed by the bucket as it is now, is a copy like any other.
        let live = kv.store.read_bucket(name).await.unwrap().unwrap();
        copy_into(&kv, &live, &copy("fresh"), deadline)
            .await
            .unwrap();
        let read = call(&kv, KeyGet, json!({"bucket": name, "key": "fresh"})).await;
        assert_eq!(status(&read), 200, "{name}: {read}");
    }
}

#[tokio::test]
async fn the_expiry_sweeper_alone_takes_expired_values_out() {
    // The harness's tables have DynamoDB's own TTL sweep off (as good as on AWS, where it may
    // come days late): what leaves here, the project's sweeper took out.
    let kv = container();
    let name = bucket(&kv, "expiry", json!({"history": 3})).await;
    let first = put(&kv, &name, "short", json!("v1")).await;
    let expiring = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "short", "value": "v2", "ttl": 1_000_000_000u64}),
    )
    .await;
    assert_eq!(status(&expiring), 200, "{expiring}");
    let kept = put(&kv, &name, "long", json!("stays")).await;
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let swept = call(
        &kv,
        kv::Function::ExpirySweep,
        json!({"source": "aws.events"}),
    )
    .await;
    assert_eq!(status(&swept), 200, "{swept}");
    // At least this test's value: the suite's other tests share the tables.
    assert!(swept["body"]["expired"].as_u64() >= Some(1), "{swept}");

    // The head lost its value and its index entries; the latest is an expiry.
    let head = kv.store.read_head(&name, "short", true).await.unwrap();
    let latest = head.latest.unwrap();
    assert_eq!(latest.op, Op::Expired);
    assert!(latest.bytes.is_empty());
    let (listed, _) = kv.store.latest_page(&name, 0, 10).await.unwrap();
    let listed: Vec<u64> = listed
        .iter()
        .filter_map(|entry| items::get_u64(entry, items::HEAD_REVISION))
        .collect();
    assert_eq!(
        listed,
        vec![kept],
        "the key-list index still lists the expired key"
    );
    assert_eq!(
        history(&kv, &name, "short").await,
        vec![(first, "PUT".into(), json!("v1"))]
    );
    assert_error(
        &call(&kv, KeyGet, json!({"bucket": name, "key": "short"})).await,
        404,
        "key_not_found",
    );
    // No live value: a create succeeds. A second sweep finds nothing more to do.
    let created = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "short", "value": "v3", "revision": 0}),
    )
    .await;
    assert_eq!(status(&created), 200, "{created}");
    let again = call(&kv, kv::Function::ExpirySweep, json!({})).await;
    assert_eq!(status(&again), 200, "{again}");
    let head = kv.store.read_head(&name, "short", true).await.unwrap();
    assert_eq!(head.latest.map(|latest| latest.op), Some(Op::Put));
    // The counts followed, through the stream: v1 (history) + v3 + "stays"; two live keys.
    let counted = info(&kv, &name).await;
    assert_eq!(
        (counted["entry_total"].clone(), counted["bytes"].clone()),
        (json!(2), json!(2 + 2 + 5)),
        "{counted}"
    );
}

#[tokio::test]
async fn a_writer_stopped_between_its_head_and_its_archive_loses_no_history() {
    use kv::model::revision::{HeadEntry, Stored};
    use kv::store::{HeadCondition, HeadWrite};
    let kv = container();
    let name = bucket(&kv, "stopped", json!({"history": 3})).await;
    let first = put(&kv, &name, "k", json!("one")).await;
    // A writer commits its head and stops before archiving the value it replaced.
    let head = kv.store.read_head(&name, "k", true).await.unwrap();
    let next = kv.store.allocate_revision(&name, None).await.unwrap();
    let latest = Stored {
        revision: next.last_revision,
        bytes: b"two".to_vec(),
        compressed: false,
        created_ms: 1,
        expiry_ns: None,
        op: Op::Put,
        memory: false,
    };
    let entries = [
        head.entries[0],
        HeadEntry {
            revision: next.last_revision,
            size: 3,
            expiry_ns: None,
            op: Op::Put,
        },
    ];
    kv.store
        .put_head(&HeadWrite {
            bucket: &name,
            key: "k",
            incarnation: next.created_ms,
            allocated_ms: next.last_allocated_ms.unwrap(),
            latest: &latest,
            entries: &entries,
            exact_counts: false,
            condition: HeadCondition::At(first),
            source: None,
        })
        .await
        .unwrap();
    // The stream carries the replaced value in the head's old image: once it has run, the
    // history holds every revision with its value.
    settled().await;
    assert_eq!(
        history(&kv, &name, "k").await,
        vec![
            (first, "PUT".into(), json!("one")),
            (next.last_revision, "PUT".into(), json!("two"))
        ]
    );
}

/// (entry_total, bytes) of a bucket recomputed from its heads as stored.
async fn recount(kv: &Kv, bucket: &str, keys: &[String]) -> (u64, u64) {
    let store = &kv.store;
    let (mut live, mut bytes) = (0, 0);
    for key in keys {
        let head = store.read_head(bucket, key, true).await.unwrap();
        bytes += head.entries.iter().map(|entry| entry.size).sum::<u64>();
        live += u64::from(head.latest_entry().is_some_and(|entry| entry.op == Op::Put));
    }
    (live, bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_from_the_stream_equal_a_recount_and_redelivery_changes_nothing() {
    // Its own DynamoDB Local: the replay below sends every batch of the stream again, and
    // other tests' batches must not be part of it.
    let endpoint = private_endpoint();
    let kv = Kv::new(client_for(&endpoint), &settings());
    let buckets = [
        bucket(&kv, "recount-h1", json!({})).await,
        bucket(&kv, "recount-h3", json!({"history": 3})).await,
    ];
    let keys: Vec<String> = (0..6).map(|index| format!("k{index}")).collect();
    let mut rng = fastrand::Rng::with_seed(20261128);
    for step in 0..120 {
        if step == 60 {
            // The first bucket is deleted (its purge waits out writes still in flight) and
            // created again: the old incarnation's changes must not reach the new counts.
            let deleted = call(&kv, BucketDelete, json!({"bucket": buckets[0]})).await;
            assert_eq!(deleted["body"]["purged"], true, "{deleted}");
            let created = call(&kv, BucketCreate, json!({"bucket": buckets[0]})).await;
            assert_eq!(status(&created), 200, "{created}");
        }
        let bucket = &buckets[rng.usize(..buckets.len())];
        let key = &keys[rng.usize(..keys.len())];
        let response = match rng.u8(..10) {
            0..=5 => {
                let mut params =
                    json!({"bucket": bucket, "key": key, "value": "v".repeat(rng.usize(1..60))});
                if rng.u8(..5) == 0 {
                    // Expires within the run: the sweeper takes it out.
                    params["ttl"] = json!(200_000_000u64);
                }
                call(&kv, KeyPut, params).await
            }
            6 | 7 => call(&kv, KeyDelete, json!({"bucket": bucket, "key": key})).await,
            _ => {
                call(
                    &kv,
                    KeyDelete,
                    json!({"bucket": bucket, "key": key, "purge": true}),
                )
                .await
            }
        };
        assert_eq!(status(&response), 200, "step {step}: {response}");
    }
    tokio::time::sleep(Duration::from_millis(250)).await;
    let swept = call(&kv, kv::Function::ExpirySweep, json!({})).await;
    assert_eq!(status(&swept), 200, "{swept}");
    stream_pump::settled_at(&endpoint).await;
    let mut counted = Vec::new();
    for bucket in &buckets {
        let body = info(&kv, bucket).await;
        let reported = (
            body["entry_total"].as_u64().unwrap(),
            body["bytes"].as_u64().unwrap(),
        );
        assert_eq!(reported, recount(&kv, bucket, &keys).await, "{bucket}");
        counted.push(reported);
    }
    // Every batch delivered again, as Lambda may: nothing changes.
    for batch in stream_pump::delivered_at(&endpoint) {
        let result = invoke(&kv, kv::Function::ItemsStream, batch).await.unwrap();
        assert_eq!(result["batchItemFailures"], json!([]), "{result}");
    }
    for (bucket, before) in buckets.iter().zip(&counted) {
        let body = info(&kv, bucket).await;
        assert_eq!(
            (
                body["entry_total"].as_u64().unwrap(),
                body["bytes"].as_u64().unwrap()
            ),
            *before,
            "{bucket} changed when its batches came again"
        );
    }
}

/// SPEC "Nothing stalls the stream": a batch is idempotent however late it comes again. Each
/// write here is a batch of its own (the stream settles between them), so the first batch is
/// delivered again after 19 later batches of its bucket, then every batch again in reverse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delivered_again_after_any_number_of_later_batches_changes_no_count() {
    let endpoint = private_endpoint();
    let kv = Kv::new(client_for(&endpoint), &settings());
    let name = bucket(&kv, "late-redelivery", json!({})).await;
    let keys: Vec<String> = (0..8).map(|index| format!("k{index}")).collect();
    for step in 0..20 {
        let key = &keys[step % keys.len()];
        let response = match step % 5 {
            4 => call(&kv, KeyDelete, json!({"bucket": name, "key": key})).await,
            _ => {
                let value = "v".repeat(1 + step);
                call(
                    &kv,
                    KeyPut,
                    json!({"bucket": name, "key": key, "value": value}),
                )
                .await
            }
        };
        assert_eq!(status(&response), 200, "step {step}: {response}");
        stream_pump::settled_at(&endpoint).await;
    }
    let exact = recount(&kv, &name, &keys).await;
    let counted = |body: Value| {
        (
            body["entry_total"].as_u64().unwrap(),
            body["bytes"].as_u64().unwrap(),
        )
    };
    assert_eq!(counted(info(&kv, &name).await), exact);
    let ours: Vec<Value> = stream_pump::delivered_at(&endpoint)
        .into_iter()
        .filter(|batch| batch.to_string().contains(&name))
        .collect();
    assert!(ours.len() >= 20, "{} batches of the bucket", ours.len());
    let again = std::iter::once(ours[0].clone()).chain(ours.iter().rev().cloned());
    for batch in again {
        let result = invoke(&kv, kv::Function::ItemsStream, batch).await.unwrap();
        assert_eq!(result["batchItemFailures"], json!([]), "{result}");
        assert_eq!(
            counted(info(&kv, &name).await),
            exact,
            "a batch delivered again changed the counts"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_sweeper_credits_a_max_bytes_bucket_at_once() {
    let kv = container();
    let name = bucket(&kv, "expiry-exact", json!({"max_bytes": 100, "history": 2})).await;
    let expiring = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "a", "value": "x".repeat(60), "ttl": 1_000_000_000u64}),
    )
    .await;
    assert_eq!(status(&expiring), 200, "{expiring}");
    put(&kv, &name, "b", json!("y".repeat(30))).await;
    let c = json!({"bucket": name, "key": "c", "value": "z".repeat(60)});
    assert_error(&call(&kv, KeyPut, c.clone()).await, 413, "bucket_full");
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    let swept = call(&kv, kv::Function::ExpirySweep, json!({})).await;
    assert_eq!(status(&swept), 200, "{swept}");
    // Exact at once, without the stream: the usage item moved with the head.
    assert_eq!(listed_usage(&kv, &name).await, (1, 30));
    let written = call(&kv, KeyPut, c).await;
    assert_eq!(status(&written), 200, "{written}");
    // Sweeping again credits nothing twice.
    let again = call(&kv, kv::Function::ExpirySweep, json!({})).await;
    assert_eq!(status(&again), 200, "{again}");
    assert_eq!(listed_usage(&kv, &name).await, (2, 90));
    // The key's next write finds no expired revision left to credit.
    put(&kv, &name, "a", json!("w")).await;
    assert_eq!(listed_usage(&kv, &name).await, (3, 91));
}

/// Many expiries at once: 20,000 heads whose values have expired, over the 16 shards of the
/// `by-expiry` index, all taken out by the runs one schedule makes within 2 minutes (one a
/// minute, each within its 55 s timeout). The heads are copies of one a kv-key-put wrote, put
/// in by `BatchWriteItem`, in a DynamoDB Local of their own whose stream nobody follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_expiries_over_every_shard_are_swept_within_two_minutes() {
    use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
    const HEADS: usize = 20_000;
    let local = private_endpoint_unfollowed();
    let raw = client_for(&local);
    let mut kv = Kv::new(client_for(&local), &settings());
    // The function's timeout (template.yaml) less the runtime's margin to answer in.
    kv.purge_budget = Duration::from_millis(54_500);
    let name = bucket(&kv, "expiries", json!({})).await;
    let written = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "k0", "value": "v", "ttl": 1_000_000u64}),
    )
    .await;
    assert_eq!(status(&written), 200, "{written}");
    let head = raw
        .get_item()
        .table_name(ITEMS_TABLE)
        .key(items::PK, AttributeValue::S(items::key_pk(&name, "k0")))
        .key(items::REVISION, AttributeValue::N("0".into()))
        .send()
        .await
        .expect("read the head")
        .item
        .expect("the head");
    let mut writers = tokio::task::JoinSet::new();
    let copies: Vec<usize> = (1..HEADS).collect();
    for chunk in copies.chunks(HEADS / 8) {
        let (raw, head, name, chunk) = (raw.clone(), head.clone(), name.clone(), chunk.to_vec());
        writers.spawn(async move {
            for batch in chunk.chunks(25) {
                let mut unprocessed: Vec<WriteRequest> = batch
                    .iter()
                    .map(|index| {
                        let pk = items::key_pk(&name, &format!("k{index}"));
                        let mut item = head.clone();
                        item.insert(
                            items::EXPIRY_SHARD.into(),
                            AttributeValue::S(items::expiry_shard(&pk)),
                        );
                        item.insert(items::PK.into(), AttributeValue::S(pk));
                        let put = PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .expect("put");
                        WriteRequest::builder().put_request(put).build()
                    })
                    .collect();
                while !unprocessed.is_empty() {
                    let output = raw
                        .batch_write_item()
                        .request_items(ITEMS_TABLE, unprocessed)
                        .send()
                        .await
                        .expect("write heads");
                    unprocessed = output
                        .unprocessed_items()
                        .and_then(|left| left.get(ITEMS_TABLE))
                        .cloned()
                        .unwrap_or_default();
                }
            }
        });
    }
    while let Some(written) = writers.join_next().await {
        written.expect("a writer panicked");
    }
    let shards: std::collections::BTreeSet<String> = (0..HEADS)
        .map(|index| items::expiry_shard(&items::key_pk(&name, &format!("k{index}"))))
        .collect();
    assert_eq!(shards.len(), items::EXPIRY_SHARDS as usize);

    let started = std::time::Instant::now();
    let (mut runs, mut expired) = (0, 0);
    loop {
        let swept = call(&kv, kv::Function::ExpirySweep, json!({})).await;
        assert_eq!(status(&swept), 200, "{swept}");
        assert_eq!(swept["body"]["failed"], 0, "{swept}");
        runs += 1;
        expired += swept["body"]["expired"].as_u64().expect("expired");
        if swept["body"]["complete"] == true {
            break;
        }
        assert!(runs < 2, "two runs did not sweep every expiry: {swept}");
    }
    let took = started.elapsed();
    eprintln!("{HEADS} expiries swept in {runs} run(s), {took:?}");
    assert_eq!(expired, HEADS as u64);
    assert!(took < Duration::from_secs(120), "{took:?}");
    let left = raw
        .scan()
        .table_name(ITEMS_TABLE)
        .index_name(items::BY_EXPIRY_INDEX)
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .expect("count the expiry index");
    assert_eq!(left.count(), 0, "expiring heads left in the index");
}

/// Once kv-bucket-delete has marked a bucket, every function that names it answers 404
/// `bucket_not_found`, although its items are still there until the purge reaches them: a
/// container that has not seen the bucket at once, one that read it live within the last
/// `LIVE_FOR` (1 s) once that has passed.
#[tokio::test]
async fn a_bucket_being_purged_serves_nothing_through_any_function() {
    use kv::Function::{KeyIncrement, KeyWatch};
    let warm = container();
    let name = bucket(&warm, "purging", json!({"history": 3})).await;
    let revision = put(&warm, &name, "k", json!("old")).await;
    let counted = call(
        &warm,
        KeyIncrement,
        json!({"bucket": name, "key": "n", "by": 1}),
    )
    .await;
    assert_eq!(status(&counted), 200, "{counted}");
    // The warm container has read the bucket live.
    let read = call(&warm, KeyGet, json!({"bucket": name, "key": "k"})).await;
    assert_eq!(status(&read), 200, "{read}");
    let now_ms = kv::model::time::ns_to_ms(kv::model::time::now_ns());
    warm.store
        .mark_deleting(&name, now_ms)
        .await
        .expect("mark the bucket deleting")
        .expect("the bucket");
    // What kv-bucket-delete does before its purge starts.
    warm.store
        .delete_usage(&name)
        .await
        .expect("delete the usage");
    let calls = [
        (KeyGet, json!({"bucket": name, "key": "k"})),
        (
            KeyGet,
            json!({"bucket": name, "key": "k", "revision": revision}),
        ),
        (KeyGet, json!({"bucket": name, "key": "missing"})),
        (KeyHistory, json!({"bucket": name, "key": "k"})),
        (KeyList, json!({"bucket": name})),
        (BucketInfo, json!({"bucket": name})),
        (KeyPut, json!({"bucket": name, "key": "k", "value": "new"})),
        (KeyDelete, json!({"bucket": name, "key": "k"})),
        (KeyIncrement, json!({"bucket": name, "key": "n", "by": 1})),
        (
            KeyWatch,
            json!({"bucket": name, "key": "k", "task_token": "t".repeat(10)}),
        ),
    ];
    let cold = container();
    for (function, payload) in &calls {
        assert_error(
            &call(&cold, *function, payload.clone()).await,
            404,
            "bucket_not_found",
        );
    }
    tokio::time::sleep(kv::model::cache::LIVE_FOR).await;
    for (function, payload) in &calls {
        assert_error(
            &call(&warm, *function, payload.clone()).await,
            404,
            "bucket_not_found",
        );
    }
    // Nothing of it was touched by the refused calls: the items wait for the purge.
    assert_eq!(stored_revisions(&name, "k").await.len(), 1);
}

/// A flow whose kv-bucket-delete answer was lost sends it again: the retry answers 200 as the
/// first did, though the purge has finished and the name is free; a bucket that never existed
/// is still 404.
#[tokio::test]
async fn a_delete_sent_again_after_its_answer_was_lost_answers_200() {
    let kv = container();
    let name = bucket(&kv, "deleted-twice", json!({})).await;
    put(&kv, &name, "k", json!("v")).await;
    let first = call(&kv, BucketDelete, json!({"bucket": name})).await;
    assert_eq!(status(&first), 200, "{first}");
    let done = |answer: &Value| answer["body"]["purged"] == true;
    // As kv-bucket-delete hands on what does not fit, its retries finish the purge.
    let mut again = call(&kv, BucketDelete, json!({"bucket": name})).await;
    for _ in 0..30 {
        if done(&again) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        again = call(&kv, BucketDelete, json!({"bucket": name})).await;
    }
    assert_eq!(status(&again), 200, "{again}");
    assert!(done(&again), "{again}");
    assert_error(
        &call(&kv, BucketInfo, json!({"bucket": name})).await,
        404,
        "bucket_not_found",
    );
    let retried = call(&kv, BucketDelete, json!({"bucket": name})).await;
    assert_eq!(status(&retried), 200, "{retried}");
    assert_eq!(
        retried["body"]["message"], first["body"]["message"],
        "{retried}"
    );
    assert_error(
        &call(
            &kv,
            BucketDelete,
            json!({"bucket": unique("never-created")}),
        )
        .await,
        404,
        "bucket_not_found",
    );
}
