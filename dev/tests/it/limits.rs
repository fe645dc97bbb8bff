//! SPEC "Limits and bad input": every size the contract bounds is refused before anything is
//! written, with a 4xx naming the parameter and the limit, and every page of kv-key-list,
//! kv-key-history and kv-bucket-list fits in Step Functions' 256 KB.

use kv::model::limits::{MAX_CONFIG_BYTES, MAX_UNCOMPRESSED_VALUE_BYTES};
use kv::Function::{BucketCreate, BucketInfo, BucketList, KeyHistory, KeyList, KeyPut};
use kv::Kv;
use kv_dev::support::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Step Functions' limit on a state's data: what a flow can take from one answer.
const STATE_DATA_BYTES: usize = 256 * 1024;

fn answer_size(answer: &Value) -> usize {
    answer.to_string().len()
}

#[tokio::test]
async fn a_configuration_past_its_limit_is_413_config_too_large_and_nothing_is_created() {
    let kv = container();
    let metadata = json!({"big": "m".repeat(450 * 1024)});
    let cases = [
        ("metadata", json!({"metadata": metadata})),
        (
            "description",
            json!({"description": "d".repeat(500 * 1024)}),
        ),
        (
            "sources",
            json!({"sources": (0..200).map(|index| json!({"name": format!("origin-{index}"), "filter_subject": "a.b.c.>"})).collect::<Vec<_>>()}),
        ),
    ];
    for (part, extra) in cases {
        let name = unique("too-large");
        let mut params = json!({"bucket": name});
        params
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let refused = call(&kv, BucketCreate, params).await;
        assert_error(&refused, 413, "config_too_large");
        let message = refused["body"]["error"].as_str().unwrap();
        assert!(
            message.contains(&format!("'{part}'"))
                && message.contains(&MAX_CONFIG_BYTES.to_string()),
            "{message}"
        );
        assert_error(
            &call(&kv, BucketInfo, json!({"bucket": name})).await,
            404,
            "bucket_not_found",
        );
    }
    // 4 KB of metadata is within it.
    let metadata: BTreeMap<String, String> = (0..8)
        .map(|index| (format!("k{index}"), "v".repeat(500)))
        .collect();
    bucket(&kv, "metadata-4k", json!({"metadata": metadata})).await;
}

#[tokio::test]
async fn a_compression_bucket_bounds_the_uncompressed_value() {
    let kv = container();
    let name = bucket(&kv, "compressed", json!({"compression": true})).await;
    // A few KB compressed; over the limit once expanded.
    let value = "a".repeat(MAX_UNCOMPRESSED_VALUE_BYTES + 1);
    let refused = call(
        &kv,
        KeyPut,
        json!({"bucket": name, "key": "huge", "value": value}),
    )
    .await;
    assert_error(&refused, 413, "value_too_large");
    let message = refused["body"]["error"].as_str().unwrap();
    assert!(
        message.contains(&MAX_UNCOMPRESSED_VALUE_BYTES.to_string()),
        "{message}"
    );
    assert_error(
        &call(&kv, KeyHistory, json!({"bucket": name, "key": "huge"})).await,
        404,
        "key_not_found",
    );
    put(
        &kv,
        &name,
        "fits",
        json!("a".repeat(MAX_UNCOMPRESSED_VALUE_BYTES)),
    )
    .await;
}

#[tokio::test]
async fn key_list_pages_fit_a_state_and_walk_every_key_once() {
    let kv = container();
    let name = bucket(&kv, "large-values", json!({})).await;
    let mut written = Vec::new();
    for index in 0..5 {
        let key = format!("k{index}");
        put(
            &kv,
            &name,
            &key,
            json!(format!("{index}").repeat(100 * 1024)),
        )
        .await;
        written.push(key);
    }
    put(&kv, &name, "huge", json!("h".repeat(300 * 1024))).await;
    written.push("huge".to_string());

    let (mut listed, mut pages, mut last_sequence) = (Vec::new(), 0, 0);
    loop {
        let page = call(
            &kv,
            KeyList,
            json!({"bucket": name, "last_sequence": last_sequence}),
        )
        .await;
        assert_eq!(status(&page), 200, "{page}");
        assert!(
            answer_size(&page) <= STATE_DATA_BYTES,
            "{}",
            answer_size(&page)
        );
        pages += 1;
        let body = &page["body"]["body"];
        for entry in body["results"].as_array().unwrap() {
            let key = entry["key"].as_str().unwrap().to_string();
            if key == "huge" {
                assert_eq!(
                    (entry.get("value"), &entry["too_large"]),
                    (None, &json!(true))
                );
            } else {
                assert_eq!(entry["value"].as_str().unwrap().len(), 100 * 1024);
                assert!(entry.get("too_large").is_none(), "{entry}");
            }
            listed.push(key);
        }
        last_sequence = body["last_sequence"].as_u64().unwrap();
        if body["has_more"] != true {
            break;
        }
        assert!(pages < 10, "no end to the pages");
    }
    assert_eq!(listed, written);
    // Two 100 KB values fit an answer, three do not.
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn key_history_pages_fit_a_state_and_walk_every_revision_once() {
    let kv = container();
    let name = bucket(&kv, "long-history", json!({"history": 10})).await;
    let mut revisions = Vec::new();
    for index in 0..6 {
        revisions.push(
            put(
                &kv,
                &name,
                "doc",
                json!(format!("{index}").repeat(100 * 1024)),
            )
            .await,
        );
    }
    let (mut seen, mut pages, mut last_sequence) = (Vec::new(), 0, 0);
    loop {
        let page = call(
            &kv,
            KeyHistory,
            json!({"bucket": name, "key": "doc", "last_sequence": last_sequence}),
        )
        .await;
        assert_eq!(status(&page), 200, "{page}");
        assert!(
            answer_size(&page) <= STATE_DATA_BYTES,
            "{}",
            answer_size(&page)
        );
        pages += 1;
        let body = &page["body"]["body"];
        assert_eq!(body["results_total"], 6);
        seen.extend(
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|entry| entry["revision"].as_u64().unwrap()),
        );
        last_sequence = body["last_sequence"].as_u64().unwrap();
        if body["has_more"] != true {
            break;
        }
        assert!(pages < 10, "no end to the pages");
    }
    assert_eq!(seen, revisions);
    assert_eq!(pages, 3);
}

#[tokio::test]
async fn bucket_list_answers_fit_a_state_and_walk_every_bucket_once() {
    let endpoint = private_endpoint();
    let kv = Kv::new(client_for(&endpoint), &settings());
    let metadata: BTreeMap<String, String> = (0..12)
        .map(|index| (format!("k{index}"), "v".repeat(500)))
        .collect();
    let mut created = Vec::new();
    for _ in 0..40 {
        created.push(bucket(&kv, "listed", json!({"metadata": metadata})).await);
    }
    let (mut listed, mut answers) = (Vec::new(), 0);
    let mut params = json!({});
    loop {
        let answer = call(&kv, BucketList, params.clone()).await;
        assert_eq!(status(&answer), 200, "{answer}");
        assert!(
            answer_size(&answer) <= STATE_DATA_BYTES,
            "{}",
            answer_size(&answer)
        );
        answers += 1;
        let body = &answer["body"]["body"];
        listed.extend(
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|entry| entry["name"].as_str().unwrap().to_string()),
        );
        if body["has_more"] != true {
            break;
        }
        params = json!({"start_after": body["start_after"]});
        assert!(answers < 10, "no end to the answers");
    }
    assert!(answers > 1, "40 buckets of 6 KB metadata fit one answer?");
    listed.sort();
    created.sort();
    assert_eq!(listed, created);
}
