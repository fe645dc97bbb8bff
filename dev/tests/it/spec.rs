//! Every parameter, response and error of the contract, through the handlers, against
//! DynamoDB Local.

use kv::store::items;
use kv::Function::{BucketCreate, BucketList, KeyGet, KeyList, KeyPut};
use kv::Kv;
use kv_dev::support::*;
use serde_json::{json, Value};

async fn create(kv: &Kv, params: Value) -> Value {
    let response = call(kv, BucketCreate, params).await;
    assert_eq!(status(&response), 200, "{response}");
    response
}

async fn get(kv: &Kv, params: Value) -> Value {
    call(kv, KeyGet, params).await
}

// ---------------------------------------------------------------- kv-bucket-create

#[tokio::test]
async fn bucket_create_fills_in_defaults() {
    let kv = container();
    let name = unique("defaults");
    let response = create(&kv, json!({"bucket": name})).await;
    assert_eq!(response["body"]["message"], "Bucket created successfully");
    assert_eq!(
        response["body"]["config"],
        json!({
            "bucket": name, "description": "", "ttl": 0, "history": 1, "max_bytes": -1,
            "max_value_size": -1, "storage": "file", "num_replicas": 1, "compression": false,
            "metadata": {}, "placement": null, "mirror": null, "republish": null, "sources": []
        })
    );
}

#[tokio::test]
async fn bucket_create_stores_every_parameter() {
    // A deployment that can give five replicas and this placement (see placement.rs).
    let kv = Kv::new(
        client(),
        &kv::model::config::Settings {
            replica_regions: vec!["eu-west-1".into()],
            cluster: "east".into(),
            placement_tags: vec!["ssd".into(), "fast".into()],
            ..settings()
        },
    );
    let name = unique("full");
    // A source must exist: the new bucket's origin learns of it in the same transaction.
    let origin = unique("flags-eu");
    create(&kv, json!({"bucket": origin})).await;
    let params = json!({
        "bucket": name, "description": "Feature flags", "ttl": 2_592_000_000_000_000i64,
        "history": 64, "max_bytes": 1_048_576, "max_value_size": 1024, "storage": "memory",
        "num_replicas": 5, "compression": true, "metadata": {"team": "growth", "tier": "1"},
        "placement": {"cluster": "east", "tags": ["ssd", "fast"]},
        "republish": {"source": "flags.>", "dest": "audit.flags.>", "headers_only": true},
        "sources": [{"name": origin, "filter_subject": "a.>", "opt_start_seq": 3,
                     "opt_start_time": 1_700_000_000_000i64,
                     "subject_transforms": [{"src": "a.>", "dest": "b.>"}]}]
    });
    let response = create(&kv, params).await;
    let config = &response["body"]["config"];
    assert_eq!(config["ttl"], 2_592_000_000_000_000i64);
    assert_eq!(config["history"], 64);
    assert_eq!(config["max_bytes"], 1_048_576);
    assert_eq!(config["max_value_size"], 1024);
    assert_eq!(config["storage"], "memory");
    assert_eq!(config["num_replicas"], 5);
    assert_eq!(config["compression"], true);
    assert_eq!(config["metadata"], json!({"team": "growth", "tier": "1"}));
    assert_eq!(
        config["placement"],
        json!({"cluster": "east", "tags": ["ssd", "fast"]})
    );
    assert_eq!(
        config["republish"],
        json!({"src": "flags.>", "dest": "audit.flags.>", "headers_only": true})
    );
    assert_eq!(config["sources"][0]["name"], origin.as_str());
    assert_eq!(
        config["sources"][0]["subject_transforms"],
        json!([{"src": "a.>", "dest": "b.>"}])
    );

    let mirrored = unique("mirror");
    let response = create(
        &kv,
        json!({"bucket": mirrored, "mirror": {"name": name, "opt_start_seq": 1}}),
    )
    .await;
    assert_eq!(response["body"]["config"]["mirror"]["name"], name);

    let entry = listed_buckets(&kv)
        .await
        .into_iter()
        .find(|entry| entry["name"] == name)
        .expect("listed");
    assert_eq!(entry["config"], *config);
    assert_eq!(entry["description"], "Feature flags");
    assert_eq!(entry["metadata"], json!({"team": "growth", "tier": "1"}));
}

#[tokio::test]
async fn bucket_create_validates_every_parameter() {
    let kv = container();
    let cases: Vec<(Value, &str)> = vec![
        (json!({}), "invalid_parameter"),
        (json!({"bucket": 5}), "invalid_parameter"),
        (json!({"bucket": ""}), "invalid_bucket_name"),
        (json!({"bucket": "has space"}), "invalid_bucket_name"),
        (json!({"bucket": "dots.not.allowed"}), "invalid_bucket_name"),
        (json!({"bucket": "x".repeat(256)}), "invalid_bucket_name"),
        (
            json!({"bucket": "ok", "description": 1}),
            "invalid_parameter",
        ),
        (json!({"bucket": "ok", "ttl": -1}), "invalid_parameter"),
        (json!({"bucket": "ok", "ttl": 1.5}), "invalid_parameter"),
        (json!({"bucket": "ok", "ttl": "1h"}), "invalid_parameter"),
        (json!({"bucket": "ok", "history": 0}), "invalid_parameter"),
        (json!({"bucket": "ok", "history": 65}), "invalid_parameter"),
        (json!({"bucket": "ok", "max_bytes": 0}), "invalid_parameter"),
        (
            json!({"bucket": "ok", "max_bytes": -2}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "max_value_size": 0}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "max_value_size": u64::MAX}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "storage": "Memory"}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "storage": "disk"}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "num_replicas": 0}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "num_replicas": 6}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "compression": "yes"}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "metadata": {"a": 1}}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "metadata": ["a"]}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "placement": "east"}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "placement": {"tags": "ssd"}}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "placement": {"zone": "a"}}),
            "invalid_parameter",
        ),
        (json!({"bucket": "ok", "mirror": {}}), "invalid_parameter"),
        (
            json!({"bucket": "ok", "mirror": {"name": "a", "opt_start_seq": -1}}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "mirror": {"name": "a", "subject_transforms": [{"src": "a"}]}}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "republish": {"src": "a"}}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "republish": {"dest": "a", "headers_only": 1}}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "sources": {"name": "a"}}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "sources": [{"domain": "a"}]}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "mirror": {"name": "a", "domain": "eu"}}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "republish": {"src": "a.*", "dest": "b.$2"}}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "ok", "mirror": {"name": "a"}, "sources": [{"name": "b"}]}),
            "invalid_parameter",
        ),
        (json!({"bucket_name": "ok"}), "invalid_parameter"),
        (
            json!({"bucket": "ok", "ttl_seconds": 60}),
            "invalid_parameter",
        ),
        (json!("ok"), "invalid_parameter"),
        (
            json!({"function": "kv-key-put", "params": {"bucket": "ok"}}),
            "invalid_parameter",
        ),
        (
            json!({"function": "kv-bucket-create", "params": "ok"}),
            "invalid_parameter",
        ),
    ];
    for (params, expected) in cases {
        let response = call(&kv, BucketCreate, params.clone()).await;
        assert_eq!(status(&response), 400, "{params} -> {response}");
        assert_eq!(code(&response), expected, "{params} -> {response}");
    }
    let response = call(
        &kv,
        BucketCreate,
        json!({"bucket": "ok", "ttl_seconds": 60}),
    )
    .await;
    let message = response["body"]["error"].as_str().unwrap();
    assert!(
        message.contains("'ttl_seconds'") && message.contains("ttl, history"),
        "{message}"
    );
    let response = call(&kv, BucketCreate, json!({"bucket": "ok", "history": 65})).await;
    let message = response["body"]["error"].as_str().unwrap();
    assert!(
        message.contains("'history'") && message.contains("64"),
        "{message}"
    );
}

#[tokio::test]
async fn bucket_create_is_safe_to_retry_and_names_are_permanent() {
    let kv = container();
    let name = unique("retry");
    let params = json!({"bucket": name, "history": 5, "description": "d"});
    let first = create(&kv, params.clone()).await;
    let again = create(&kv, params).await;
    assert_eq!(first, again);
    let flow_step = json!({"function": "kv-bucket-create", "params": {"bucket": name, "history": 5, "description": "d"}});
    create(&kv, flow_step).await;
    let different = call(&kv, BucketCreate, json!({"bucket": name, "history": 6})).await;
    assert_error(&different, 400, "bucket_exists");
    assert!(different["body"]["error"]
        .as_str()
        .unwrap()
        .starts_with("Bucket already exists"));
}

// ---------------------------------------------------------------- kv-key-put / kv-key-get

#[tokio::test]
async fn put_and_get_strings_objects_and_arrays() {
    let kv = container();
    let name = bucket(&kv, "values", json!({})).await;
    let first = put(&kv, &name, "greeting", json!("Hello World")).await;
    let second = put(&kv, &name, "user_123", json!({"name": "John", "age": 30})).await;
    let third = put(&kv, &name, "list", json!([1, 2, 3, 4])).await;
    let empty = put(&kv, &name, "empty", json!("")).await;
    assert_eq!((first, second, third, empty), (1, 2, 3, 4));

    let response = get(&kv, json!({"bucket": name, "key": "user_123"})).await;
    assert_eq!(status(&response), 200);
    let body = &response["body"];
    assert_eq!(body["body"]["key"], "user_123");
    assert_eq!(body["body"]["value"], r#"{"name":"John","age":30}"#);
    assert_eq!(body["metadata"]["Bucket"], name);
    assert_eq!(body["metadata"]["revision"], 2);
    let created = body["metadata"]["created"].as_u64().unwrap();
    let now_ms = kv::model::time::ns_to_ms(kv::model::time::now_ns());
    assert!(
        created <= now_ms && created + 60_000 > now_ms,
        "created {created}"
    );

    let parsed = get(
        &kv,
        json!({"bucket": name, "key": "user_123", "json": true}),
    )
    .await;
    assert_eq!(
        parsed["body"]["body"]["value"],
        json!({"name": "John", "age": 30})
    );
    let list = get(&kv, json!({"bucket": name, "key": "list", "json": true})).await;
    assert_eq!(list["body"]["body"]["value"], json!([1, 2, 3, 4]));
    let text = get(
        &kv,
        json!({"bucket": name, "key": "greeting", "json": false}),
    )
    .await;
    assert_eq!(text["body"]["body"]["value"], "Hello World");
    let empty = get(&kv, json!({"bucket": name, "key": "empty"})).await;
    assert_eq!(empty["body"]["body"]["value"], "");

    let not_json = get(
        &kv,
        json!({"bucket": name, "key": "greeting", "json": true}),
    )
    .await;
    assert_error(&not_json, 422, "value_not_json");

    let flow_step = get(
        &kv,
        json!({"function": "kv-key-get", "params": {"bucket": name, "key": "greeting"}}),
    )
    .await;
    assert_eq!(flow_step["body"]["body"]["value"], "Hello World");
}

#[tokio::test]
async fn put_and_get_refuse_bad_input() {
    let kv = container();
    let name = bucket(&kv, "badput", json!({})).await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"key": "k", "value": "v"}), "invalid_parameter"),
        (json!({"bucket": name, "value": "v"}), "invalid_parameter"),
        (json!({"bucket": name, "key": "k"}), "invalid_parameter"),
        (
            json!({"bucket": name, "key": "k", "value": 42}),
            "invalid_value",
        ),
        (
            json!({"bucket": name, "key": "k", "value": true}),
            "invalid_value",
        ),
        (
            json!({"bucket": name, "key": "k", "value": null}),
            "invalid_value",
        ),
        (
            json!({"bucket": name, "key": "", "value": "v"}),
            "invalid_key",
        ),
        (
            json!({"bucket": name, "key": ".k", "value": "v"}),
            "invalid_key",
        ),
        (
            json!({"bucket": name, "key": "k.", "value": "v"}),
            "invalid_key",
        ),
        (
            json!({"bucket": name, "key": "a..b", "value": "v"}),
            "invalid_key",
        ),
        (
            json!({"bucket": name, "key": "a b", "value": "v"}),
            "invalid_key",
        ),
        (
            json!({"bucket": name, "key": "a*", "value": "v"}),
            "invalid_key",
        ),
        (
            json!({"bucket": name, "key": "k".repeat(1025), "value": "v"}),
            "invalid_key",
        ),
        (
            json!({"bucket": name, "key": 7, "value": "v"}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": name, "key": "k", "value": "v", "revision": -1}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": name, "key": "k", "value": "v", "revision": "1"}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": name, "key": "k", "value": "v", "ttl": -5}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": name, "key": "k", "value": "v", "ttl_seconds": 5}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": "bad name", "key": "k", "value": "v"}),
            "invalid_bucket_name",
        ),
    ];
    for (params, expected) in cases {
        let response = call(&kv, KeyPut, params.clone()).await;
        assert_eq!(status(&response), 400, "{params} -> {response}");
        assert_eq!(code(&response), expected, "{params} -> {response}");
    }
    let wrapped = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "k", "value": 42}),
    )
    .await;
    assert!(wrapped["body"]["error"]
        .as_str()
        .unwrap()
        .contains("wrap it in an object"));

    let get_cases: Vec<(Value, &str)> = vec![
        (json!({"bucket": name}), "invalid_parameter"),
        (json!({"key": "k"}), "invalid_parameter"),
        (
            json!({"bucket": name, "key": "k", "json": "yes"}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": name, "key": "k", "revision": 0}),
            "invalid_parameter",
        ),
        (
            json!({"bucket": name, "key": "..", "revision": 1}),
            "invalid_key",
        ),
        (
            json!({"bucket": name, "key": "k", "extra": 1}),
            "invalid_parameter",
        ),
    ];
    for (params, expected) in get_cases {
        let response = get(&kv, params.clone()).await;
        assert_eq!(status(&response), 400, "{params} -> {response}");
        assert_eq!(code(&response), expected, "{params} -> {response}");
    }
}

#[tokio::test]
async fn missing_buckets_and_keys_are_404s() {
    let kv = container();
    let name = bucket(&kv, "missing", json!({})).await;
    let absent = unique("absent");
    assert_error(
        &call(
            &kv,
            KeyPut,
            json!({"bucket": absent, "key": "k", "value": "v"}),
        )
        .await,
        404,
        "bucket_not_found",
    );
    assert_error(
        &get(&kv, json!({"bucket": absent, "key": "k"})).await,
        404,
        "bucket_not_found",
    );
    assert_error(
        &call(&kv, KeyList, json!({"bucket": absent})).await,
        404,
        "bucket_not_found",
    );
    let missing_key = get(&kv, json!({"bucket": name, "key": "nope"})).await;
    assert_error(&missing_key, 404, "key_not_found");
    assert_eq!(missing_key["body"]["error"], "Key not found");
}

#[tokio::test]
async fn compare_and_set() {
    let kv = container();
    let name = bucket(&kv, "cas", json!({})).await;
    let created = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "k", "value": "a", "revision": 0}),
    )
    .await;
    assert_eq!(status(&created), 200);
    let revision = created["body"]["revision"].as_u64().unwrap();

    let exists = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "k", "value": "b", "revision": 0}),
    )
    .await;
    assert_error(&exists, 409, "key_exists");
    assert_eq!(exists["body"]["current_revision"], revision);

    let stale = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "k", "value": "b", "revision": revision + 7}),
    )
    .await;
    assert_error(&stale, 409, "revision_mismatch");
    assert_eq!(stale["body"]["current_revision"], revision);

    let updated = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "k", "value": "b", "revision": revision}),
    )
    .await;
    assert_eq!(status(&updated), 200);
    assert!(updated["body"]["revision"].as_u64().unwrap() > revision);

    let never_written = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "other", "value": "b", "revision": 3}),
    )
    .await;
    assert_error(&never_written, 409, "revision_mismatch");
    assert_eq!(never_written["body"]["current_revision"], 0);
}

#[tokio::test]
async fn history_keeps_exactly_the_last_revisions() {
    let kv = container();
    let name = bucket(&kv, "history", json!({"history": 3})).await;
    let mut revisions = Vec::new();
    for index in 0..6 {
        revisions.push(put(&kv, &name, "flag", json!(format!("v{index}"))).await);
    }
    put(&kv, &name, "other", json!("x")).await;
    for (index, revision) in revisions.iter().enumerate() {
        let response = get(
            &kv,
            json!({"bucket": name, "key": "flag", "revision": revision}),
        )
        .await;
        if index < 3 {
            assert_error(&response, 404, "key_not_found");
        } else {
            assert_eq!(
                response["body"]["body"]["value"],
                format!("v{index}"),
                "{response}"
            );
            assert_eq!(response["body"]["metadata"]["revision"], *revision);
        }
    }
    let other_rev = revisions[5] + 1;
    let other_key = get(
        &kv,
        json!({"bucket": name, "key": "flag", "revision": other_rev}),
    )
    .await;
    assert_error(&other_key, 404, "key_not_found");
    let latest = get(&kv, json!({"bucket": name, "key": "flag"})).await;
    assert_eq!(latest["body"]["body"]["value"], "v5");

    let stored = stored_revisions(&name, "flag")
        .await
        .iter()
        .map(|revision| revision.revision)
        .collect::<Vec<_>>();
    assert_eq!(stored, revisions[3..].to_vec());
    let usage = usage(&kv, &name).await;
    assert_eq!(usage, (2, 2 * 3 + 1));
}

#[tokio::test]
async fn size_limits_are_413s() {
    let kv = container();
    let name = bucket(
        &kv,
        "limits",
        json!({"max_value_size": 10, "max_bytes": 25}),
    )
    .await;
    let too_large = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "k", "value": "x".repeat(11)}),
    )
    .await;
    assert_error(&too_large, 413, "value_too_large");
    assert!(too_large["body"]["error"]
        .as_str()
        .unwrap()
        .contains("max_value_size of 10"));
    put(&kv, &name, "a", json!("x".repeat(10))).await;
    put(&kv, &name, "b", json!("x".repeat(10))).await;
    let full = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "c", "value": "x".repeat(10)}),
    )
    .await;
    assert_error(&full, 413, "bucket_full");
    assert!(full["body"]["error"]
        .as_str()
        .unwrap()
        .contains("max_bytes of 25"));
    // Replacing a value credits the old one first (history 1), so this fits.
    put(&kv, &name, "a", json!("y".repeat(10))).await;
    put(&kv, &name, "c", json!("z".repeat(5))).await;
    assert_eq!(usage(&kv, &name).await, (3, 25));

    let unlimited = bucket(&kv, "storage-limit", json!({})).await;
    let huge = call(
        &kv,
        KeyPut,
        json!({"bucket": unlimited, "key": "k", "value": "x".repeat(500 * 1024)}),
    )
    .await;
    assert_error(&huge, 413, "value_too_large");
    assert!(
        huge["body"]["error"].as_str().unwrap().contains("400 KB"),
        "{huge}"
    );
    let just_fits = "y".repeat(399 * 1024);
    put(&kv, &unlimited, "big", json!(just_fits)).await;
    let back = get(&kv, json!({"bucket": unlimited, "key": "big"})).await;
    assert_eq!(
        back["body"]["body"]["value"].as_str().unwrap().len(),
        just_fits.len()
    );
}

#[tokio::test]
async fn compression_is_transparent() {
    let kv = container();
    let name = bucket(
        &kv,
        "compressed",
        json!({"compression": true, "max_value_size": 2_000_000}),
    )
    .await;
    let value = "The quick brown fox jumps over the lazy dog. ".repeat(20_000);
    assert!(value.len() > 400 * 1024);
    put(&kv, &name, "doc", json!(value)).await;
    let back = get(&kv, json!({"bucket": name, "key": "doc"})).await;
    assert_eq!(back["body"]["body"]["value"].as_str().unwrap(), value);
    // Listed without its value: alone it would pass the 256 KB an answer holds.
    let listed = call(&kv, KeyList, json!({"bucket": name})).await;
    let entry = &listed["body"]["body"]["results"][0];
    assert_eq!(
        (&entry["key"], entry.get("value"), &entry["too_large"]),
        (&json!("doc"), None, &json!(true)),
        "{entry}"
    );
    assert_eq!(usage(&kv, &name).await, (1, value.len() as u64));

    let item = client()
        .get_item()
        .table_name(ITEMS_TABLE)
        .key(items::PK, items::s(items::key_pk(&name, "doc")))
        .key(items::REVISION, items::n(0))
        .send()
        .await
        .unwrap();
    let item = item.item().unwrap();
    let stored = item[items::VALUE].as_b().unwrap().as_ref().len();
    assert!(
        stored * 20 < value.len(),
        "stored {stored} bytes of {}",
        value.len()
    );
    assert_eq!(item[items::COMPRESSED].as_bool().ok(), Some(&true));
}

#[tokio::test]
async fn expired_values_are_never_returned() {
    let kv = container();
    let name = bucket(&kv, "ttl", json!({"ttl": 1_500_000_000i64})).await;
    put(&kv, &name, "session", json!("abc")).await;
    let forever = bucket(&kv, "ttl-key", json!({})).await;
    let response = call(
        &kv,
        KeyPut,
        json!({"bucket": forever, "key": "short", "value": "v", "ttl": 1_500_000_000i64}),
    )
    .await;
    assert_eq!(status(&response), 200);
    put(&kv, &forever, "long", json!("v")).await;

    assert_eq!(
        status(&get(&kv, json!({"bucket": name, "key": "session"})).await),
        200
    );
    assert_eq!(
        status(&get(&kv, json!({"bucket": forever, "key": "short"})).await),
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    assert_error(
        &get(&kv, json!({"bucket": name, "key": "session"})).await,
        404,
        "key_not_found",
    );
    assert_error(
        &get(&kv, json!({"bucket": forever, "key": "short"})).await,
        404,
        "key_not_found",
    );
    assert_eq!(
        status(&get(&kv, json!({"bucket": forever, "key": "long"})).await),
        200
    );
    let listed = call(&kv, KeyList, json!({"bucket": forever})).await;
    let keys: Vec<&str> = listed["body"]["body"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|result| result["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["long"]);

    // The head is still in the table: the 404 came from the exact expiry, not the TTL sweep.
    let item = client()
        .get_item()
        .table_name(ITEMS_TABLE)
        .key(items::PK, items::s(items::key_pk(&name, "session")))
        .key(items::REVISION, items::n(0))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    let item = item.item().expect("expired item still stored");
    assert!(items::get_u64(item, items::EXPIRY_NS).is_some(), "{item:?}");
    // Nor will DynamoDB's sweep take it: a head carries no `ttl`, the expiry sweeper empties it.
    assert_eq!(items::get_u64(item, items::TTL), None, "{item:?}");

    // A new write after expiry is a fresh key for compare-and-set.
    let again = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "session", "value": "new", "revision": 0}),
    )
    .await;
    assert_eq!(status(&again), 200, "{again}");
}

#[tokio::test]
async fn memory_buckets_serve_reads_from_the_container_cache() {
    let reader = Kv::new(
        client(),
        &kv::model::config::Settings {
            memory_cache_staleness_ms: 400,
            ..settings()
        },
    );
    let writer = container();
    let name = bucket(&writer, "memory", json!({"storage": "memory"})).await;
    put(&writer, &name, "page", json!("v1")).await;
    assert_eq!(
        get(&reader, json!({"bucket": name, "key": "page"})).await["body"]["body"]["value"],
        "v1"
    );
    put(&writer, &name, "page", json!("v2")).await;
    // Within the staleness bound the reader's cache answers.
    assert_eq!(
        get(&reader, json!({"bucket": name, "key": "page"})).await["body"]["body"]["value"],
        "v1"
    );
    // The writer's own container sees its write at once.
    assert_eq!(
        get(&writer, json!({"bucket": name, "key": "page"})).await["body"]["body"]["value"],
        "v2"
    );
    tokio::time::sleep(std::time::Duration::from_millis(450)).await;
    assert_eq!(
        get(&reader, json!({"bucket": name, "key": "page"})).await["body"]["body"]["value"],
        "v2"
    );

    // File buckets are never cached.
    let file = bucket(&writer, "file", json!({})).await;
    put(&writer, &file, "page", json!("v1")).await;
    get(&reader, json!({"bucket": file, "key": "page"})).await;
    put(&writer, &file, "page", json!("v2")).await;
    assert_eq!(
        get(&reader, json!({"bucket": file, "key": "page"})).await["body"]["body"]["value"],
        "v2"
    );
}

#[tokio::test]
async fn request_counts_per_operation() {
    let (kv, meter) = metered_container();
    let name = bucket(&kv, "metered", json!({"history": 3})).await;
    let memory = bucket(&kv, "metered-memory", json!({"storage": "memory"})).await;
    put(&kv, &name, "k", json!("v")).await;
    put(&kv, &memory, "k", json!("v")).await;
    meter.take();

    put(&kv, &name, "k", json!("v2")).await;
    let reading = meter.take();
    let operations: Vec<&str> = reading
        .requests
        .iter()
        .map(|request| request.operation.as_str())
        .collect();
    // History above 1: the revision beside the head's read, then the replaced value archived
    // beside the head's write.
    assert_eq!(operations.len(), 4, "{operations:?}");
    assert!(operations[..2].contains(&"UpdateItem") && operations[..2].contains(&"GetItem"));
    let mut last_two = operations[2..].to_vec();
    last_two.sort_unstable();
    assert_eq!(last_two, ["PutItem", "UpdateItem"], "{operations:?}");

    // History 1 (once the container knows the bucket): the revision, then the head. Nothing
    // else, and no item that a put to another key writes but the bucket's counter.
    let single = bucket(&kv, "metered-single", json!({})).await;
    put(&kv, &single, "a", json!("v")).await;
    meter.take();
    put(&kv, &single, "b", json!("v")).await;
    let operations = meter.take().operations();
    assert_eq!(operations, ["UpdateItem", "UpdateItem"]);

    assert_eq!(
        status(&get(&kv, json!({"bucket": name, "key": "k"})).await),
        200
    );
    // The key's head, and the bucket's item beside it (a bucket being deleted serves nothing):
    // the container reads the bucket at most once a second, so a get right after is 1 request.
    let reading = meter.take();
    assert_eq!(reading.requests.len(), 2, "{reading:?}");
    assert_eq!(reading.read_units, 2.0);
    assert_eq!(
        status(&get(&kv, json!({"bucket": name, "key": "k"})).await),
        200
    );
    let reading = meter.take();
    assert_eq!(reading.requests.len(), 1, "{reading:?}");
    assert_eq!(reading.requests[0].operation, "GetItem");
    assert_eq!(reading.read_units, 1.0);

    assert_eq!(
        status(&get(&kv, json!({"bucket": memory, "key": "k"})).await),
        200
    );
    assert!(
        meter.take().requests.is_empty(),
        "a memory-bucket cache hit sends no request"
    );

    assert_eq!(
        status(&call(&kv, KeyList, json!({"bucket": name})).await),
        200
    );
    let reading = meter.take();
    let mut operations: Vec<&str> = reading
        .requests
        .iter()
        .map(|request| request.operation.as_str())
        .collect();
    operations.sort_unstable();
    assert_eq!(operations, vec!["GetItem", "Query"]);
}

// ---------------------------------------------------------------- kv-key-list

#[tokio::test]
async fn key_list_pages_by_sequence() {
    let kv = container();
    let name = bucket(&kv, "list", json!({"history": 2})).await;
    for index in 0..25 {
        put(&kv, &name, &format!("key.{index:02}"), json!({"n": index})).await;
    }
    // Rewriting a key moves it to the end of the sequence.
    let moved = put(&kv, &name, "key.00", json!("moved")).await;
    settled().await;

    let mut seen = Vec::new();
    let mut last_sequence = 0;
    let mut pages = 0;
    loop {
        let response = call(
            &kv,
            KeyList,
            json!({"bucket": name, "last_sequence": last_sequence, "limit": 10}),
        )
        .await;
        assert_eq!(status(&response), 200, "{response}");
        assert_eq!(response["body"]["metadata"]["Bucket"], name);
        let body = &response["body"]["body"];
        assert_eq!(body["results_total"], 25);
        for result in body["results"].as_array().unwrap() {
            assert!(result["value"].is_string());
            seen.push((
                result["key"].as_str().unwrap().to_string(),
                result["sequence"].as_u64().unwrap(),
            ));
        }
        last_sequence = body["last_sequence"].as_u64().unwrap();
        pages += 1;
        if !body["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 25);
    assert!(
        seen.windows(2).all(|pair| pair[0].1 < pair[1].1),
        "not in sequence order"
    );
    assert_eq!(seen.last().unwrap(), &("key.00".to_string(), moved));
    let mut keys: Vec<_> = seen.iter().map(|(key, _)| key.clone()).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 25);

    let first = call(&kv, KeyList, json!({"bucket": name})).await;
    assert_eq!(first["body"]["body"]["results"][0]["value"], r#"{"n":1}"#);
    let end = call(
        &kv,
        KeyList,
        json!({"bucket": name, "last_sequence": moved}),
    )
    .await;
    assert_eq!(end["body"]["body"]["results"], json!([]));
    assert_eq!(end["body"]["body"]["has_more"], false);
    assert_eq!(end["body"]["body"]["last_sequence"], moved);
}

#[tokio::test]
async fn key_list_filters_with_subject_patterns() {
    let kv = container();
    let name = bucket(&kv, "filter", json!({})).await;
    for key in [
        "users.1.name",
        "users.1.email",
        "users.2.name",
        "orders.1",
        "users",
    ] {
        put(&kv, &name, key, json!("v")).await;
    }
    let keys = |response: Value| -> Vec<String> {
        response["body"]["body"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|result| result["key"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        keys(
            call(
                &kv,
                KeyList,
                json!({"bucket": name, "filter": "users.*.name"})
            )
            .await
        ),
        vec!["users.1.name", "users.2.name"]
    );
    assert_eq!(
        keys(call(&kv, KeyList, json!({"bucket": name, "filter": "users.>"})).await).len(),
        3
    );
    assert_eq!(
        keys(call(&kv, KeyList, json!({"bucket": name, "filter": "orders.1"})).await),
        vec!["orders.1"]
    );
    assert_eq!(
        keys(call(&kv, KeyList, json!({"bucket": name, "filter": ">"})).await).len(),
        5
    );
    for bad in [
        json!({"bucket": name, "filter": "a.>.b"}),
        json!({"bucket": name, "filter": ""}),
        json!({"bucket": name, "filter": 3}),
    ] {
        assert_error(&call(&kv, KeyList, bad).await, 400, "invalid_parameter");
    }
}

#[tokio::test]
async fn key_list_validates_parameters() {
    let kv = container();
    let name = bucket(&kv, "listparams", json!({})).await;
    for params in [
        json!({}),
        json!({"bucket": name, "limit": 0}),
        json!({"bucket": name, "limit": 1001}),
        json!({"bucket": name, "limit": "10"}),
        json!({"bucket": name, "last_sequence": -1}),
        json!({"bucket": name, "cursor": 1}),
    ] {
        assert_error(&call(&kv, KeyList, params).await, 400, "invalid_parameter");
    }
    assert_error(
        &call(&kv, KeyList, json!({"bucket": "no way"})).await,
        400,
        "invalid_bucket_name",
    );
    let response = call(&kv, KeyList, json!({"bucket": name, "limit": 1000})).await;
    assert_eq!(
        response["body"]["body"],
        json!({"results_total": 0, "results": [], "last_sequence": 0, "has_more": false})
    );
}

// ---------------------------------------------------------------- kv-bucket-list

#[tokio::test]
async fn bucket_list_reports_usage_and_pages() {
    let kv = container();
    let name = bucket(
        &kv,
        "usage",
        json!({"description": "cache", "metadata": {"owner": "me"}}),
    )
    .await;
    put(&kv, &name, "a", json!("12345")).await;
    put(&kv, &name, "b", json!({"x": 1})).await;
    put(&kv, &name, "a", json!("123")).await;
    assert_eq!(usage(&kv, &name).await, (2, 3 + 7));

    let listed = call(&kv, BucketList, json!({})).await;
    assert_eq!(status(&listed), 200);
    assert_eq!(listed["body"]["metadata"], json!({}));
    let results = listed["body"]["body"]["results"].as_array().unwrap();
    assert_eq!(listed["body"]["body"]["results_total"], results.len());
    let every = listed_buckets(&kv).await;
    let entry = every.iter().find(|entry| entry["name"] == name).unwrap();
    for field in [
        "name",
        "description",
        "entry_total",
        "bytes",
        "created",
        "metadata",
        "config",
    ] {
        assert!(entry.get(field).is_some(), "{field} missing in {entry}");
    }
    assert_eq!(entry["metadata"], json!({"owner": "me"}));

    for _ in 0..3 {
        bucket(&kv, "page", json!({})).await;
    }
    let mut names = Vec::new();
    let mut start_after: Option<String> = None;
    loop {
        let mut params = json!({"limit": 2});
        if let Some(after) = &start_after {
            params["start_after"] = json!(after);
        }
        let page = call(&kv, BucketList, params).await;
        assert_eq!(status(&page), 200, "{page}");
        let body = &page["body"]["body"];
        let results = body["results"].as_array().unwrap();
        assert!(results.len() <= 2);
        names.extend(
            results
                .iter()
                .map(|entry| entry["name"].as_str().unwrap().to_string()),
        );
        if !body["has_more"].as_bool().unwrap() {
            break;
        }
        start_after = Some(body["start_after"].as_str().unwrap().to_string());
    }
    let everything = call(&kv, BucketList, json!({})).await;
    let whole: Vec<String> = everything["body"]["body"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["name"].as_str().unwrap().to_string())
        .collect();
    // An answer that holds every bucket (no `has_more`: it fits in 256 KB) is in name order.
    if everything["body"]["body"].get("has_more").is_none() {
        assert!(
            whole.windows(2).all(|pair| pair[0] < pair[1]),
            "unpaged list is sorted by name"
        );
    }
    let mut all: Vec<String> = listed_buckets(&kv)
        .await
        .iter()
        .map(|entry| entry["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    all.sort();
    // Other tests create buckets concurrently, so every bucket of the full list must appear in
    // the paged walk unless it was created after the walk passed its position.
    assert!(names.len() >= 4 && names.iter().all(|name| all.contains(name)));
    for params in [
        json!({"limit": 0}),
        json!({"limit": 1001}),
        json!({"start_after": 5}),
        json!({"start_after": "a b"}),
        json!({"bucket": "x"}),
    ] {
        assert_error(
            &call(&kv, BucketList, params).await,
            400,
            "invalid_parameter",
        );
    }
}

// ---------------------------------------------------------------- storage failures

#[tokio::test]
async fn a_silent_endpoint_becomes_kv_unavailable_before_the_lambda_timeout() {
    // Accepts connections and never answers, as a stalled network path does.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let silent = format!("http://{}", listener.local_addr().expect("address"));
    let kv = Kv::new(client_for(&silent), &settings());
    let started = std::time::Instant::now();
    let error = invoke(&kv, KeyGet, json!({"bucket": "b", "key": "k"}))
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    let diagnostic: lambda_runtime::Diagnostic = error.into();
    assert_eq!(diagnostic.error_type, "KvUnavailable");
    // template.yaml gives the request functions 15 s.
    assert!(
        elapsed < std::time::Duration::from_secs(12),
        "gave up after {elapsed:?}"
    );
    drop(listener);
}

#[tokio::test]
async fn storage_failures_are_typed_lambda_errors() {
    let closed = format!("http://127.0.0.1:{}", free_port());
    let kv = Kv::new(client_for(&closed), &settings());
    let error = invoke(&kv, KeyGet, json!({"bucket": "b", "key": "k"}))
        .await
        .unwrap_err();
    let diagnostic: lambda_runtime::Diagnostic = error.into();
    assert_eq!(diagnostic.error_type, "KvUnavailable");
    assert!(
        diagnostic.error_message.contains("DynamoDB"),
        "{}",
        diagnostic.error_message
    );

    let missing_tables = Kv::new(
        client(),
        &kv::model::config::Settings::with_tables("no-such-buckets", "no-such-items"),
    );
    let error = invoke(
        &missing_tables,
        KeyPut,
        json!({"bucket": "b", "key": "k", "value": "v"}),
    )
    .await
    .unwrap_err();
    // A missing table is not cured by retrying: KvInternal, which the flows do not retry.
    let diagnostic: lambda_runtime::Diagnostic = error.into();
    assert_eq!(diagnostic.error_type, "KvInternal");
    assert!(
        diagnostic
            .error_message
            .contains("ResourceNotFoundException")
            && diagnostic.error_message.contains("make tables"),
        "{}",
        diagnostic.error_message
    );
    // Bad input is still a 400 envelope when storage is down: validation needs no storage.
    let response = invoke(&kv, KeyGet, json!({"bucket": "b"})).await.unwrap();
    assert_error(&response, 400, "invalid_parameter");
}

// ---------------------------------------------------------------- keys and buckets at their limits

/// A key of exactly `MAX_KEY_BYTES` bytes using every character a key may hold, in tokens
/// separated by single dots (never first, last or doubled).
fn longest_key(seed: usize) -> String {
    let alphabet: Vec<char> = ('a'..='z')
        .chain('A'..='Z')
        .chain('0'..='9')
        .chain(['-', '/', '_', '='])
        .collect();
    let mut key = String::new();
    let mut index = seed;
    while key.len() < kv::model::validate::MAX_KEY_BYTES {
        let dot = key.len() % 9 == 8 && key.len() + 1 < kv::model::validate::MAX_KEY_BYTES;
        key.push(if dot {
            '.'
        } else {
            index += 1;
            alphabet[index % alphabet.len()]
        });
    }
    assert!(kv::model::validate::key(&key).is_ok(), "{key}");
    key
}

/// A bucket name no other test uses, padded to the longest a name may be.
fn longest_bucket_name(prefix: &str) -> String {
    let mut name = unique(prefix);
    let fill = "abcdefghijklmnopqrstuvwxyz_ABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789";
    while name.len() < kv::model::validate::MAX_BUCKET_NAME_LEN {
        let next = fill.as_bytes()[name.len() % fill.len()] as char;
        name.push(next);
    }
    name
}

#[tokio::test]
async fn the_longest_keys_work_in_the_longest_bucket_names_through_every_function() {
    use kv::Function::{BucketDelete, BucketInfo, KeyDelete, KeyHistory};
    let kv = container();
    let name = longest_bucket_name("limits");
    assert_eq!(name.len(), 255);
    let created = call(&kv, BucketCreate, json!({"bucket": name, "history": 5})).await;
    assert_eq!(status(&created), 200, "{created}");
    let keys = [longest_key(0), longest_key(7), longest_key(31)];
    let mut revisions = Vec::new();
    for (index, key) in keys.iter().enumerate() {
        assert_eq!(key.len(), 1024);
        let first = put(&kv, &name, key, json!(format!("first-{index}"))).await;
        let second = put(&kv, &name, key, json!({"second": index})).await;
        revisions.push((first, second));
    }
    for (index, key) in keys.iter().enumerate() {
        let (first, second) = revisions[index];
        let latest = call(
            &kv,
            KeyGet,
            json!({"bucket": name, "key": key, "json": true}),
        )
        .await;
        assert_eq!(status(&latest), 200, "{latest}");
        assert_eq!(latest["body"]["body"]["key"], json!(key));
        assert_eq!(latest["body"]["body"]["value"], json!({"second": index}));
        let old = call(
            &kv,
            KeyGet,
            json!({"bucket": name, "key": key, "revision": first}),
        )
        .await;
        assert_eq!(
            old["body"]["body"]["value"],
            json!(format!("first-{index}"))
        );
        let history = call(&kv, KeyHistory, json!({"bucket": name, "key": key})).await;
        let listed: Vec<u64> = history["body"]["body"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["revision"].as_u64().unwrap())
            .collect();
        assert_eq!(listed, vec![first, second], "{history}");
        // Compare-and-set at the limits too.
        let stale = call(
            &kv,
            KeyPut,
            json!({"bucket": name, "key": key, "value": "x", "revision": first}),
        )
        .await;
        assert_error(&stale, 409, "revision_mismatch");
    }

    let first_token = keys[0].split('.').next().unwrap().to_string();
    for (filter, expected) in [
        (None, 3),
        (Some(keys[1].clone()), 1),
        (Some(format!("{first_token}.>")), 1),
        (Some("*.>".to_string()), 3),
    ] {
        let mut params = json!({"bucket": name});
        if let Some(filter) = &filter {
            params["filter"] = json!(filter);
        }
        let listed = call(&kv, KeyList, params).await;
        assert_eq!(status(&listed), 200, "{listed}");
        let results = listed["body"]["body"]["results"].as_array().unwrap();
        assert_eq!(results.len(), expected, "filter {filter:?}: {listed}");
        assert!(results
            .iter()
            .all(|entry| keys.iter().any(|key| entry["key"] == json!(key))));
    }
    settled().await;
    let info = call(&kv, BucketInfo, json!({"bucket": name})).await;
    assert_eq!(info["body"]["body"]["entry_total"], 3, "{info}");
    assert_eq!(usage(&kv, &name).await.0, 3);

    let deleted = call(&kv, KeyDelete, json!({"bucket": name, "key": keys[0]})).await;
    assert_eq!(status(&deleted), 200, "{deleted}");
    let purged = call(
        &kv,
        KeyDelete,
        json!({"bucket": name, "key": keys[1], "purge": true}),
    )
    .await;
    assert_eq!(status(&purged), 200, "{purged}");
    for key in &keys[..2] {
        assert_error(
            &call(&kv, KeyGet, json!({"bucket": name, "key": key})).await,
            404,
            "key_not_found",
        );
    }
    assert_eq!(usage(&kv, &name).await.0, 1);

    let removed = call(&kv, BucketDelete, json!({"bucket": name})).await;
    assert_eq!(status(&removed), 200, "{removed}");
    assert_eq!(removed["body"]["purged"], true, "{removed}");
    for key in &keys {
        assert!(stored_revisions(&name, key).await.is_empty());
    }
    let again = call(&kv, BucketCreate, json!({"bucket": name})).await;
    assert_eq!(status(&again), 200, "{again}");
}

#[tokio::test]
async fn values_near_the_item_limit_with_the_longest_key_and_bucket_name() {
    let kv = container();
    let name = longest_bucket_name("itemlimit");
    let created = call(&kv, BucketCreate, json!({"bucket": name})).await;
    assert_eq!(status(&created), 200, "{created}");
    let key = longest_key(3);
    let limit = items::MAX_ITEM_BYTES - items::head_overhead(&name, &key, 1);
    // The largest value the 413 message promises fits is stored and read back whole.
    let fits = "v".repeat(limit);
    let stored = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": key, "value": fits}),
    )
    .await;
    assert_eq!(status(&stored), 200, "{stored}");
    let read = call(&kv, KeyGet, json!({"bucket": name, "key": key})).await;
    assert_eq!(
        read["body"]["body"]["value"].as_str().map(str::len),
        Some(limit)
    );
    // One byte more is a 413 that names the real limit for this key, not a DynamoDB error.
    let over = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": key, "value": "v".repeat(limit + 1)}),
    )
    .await;
    assert_error(&over, 413, "value_too_large");
    let message = over["body"]["error"].as_str().unwrap();
    assert!(message.contains(&format!("{limit} bytes")), "{message}");
    // And the bucket still counts only the value that was stored.
    assert_eq!(usage(&kv, &name).await, (1, limit as u64));
}
