//! Many Lambda containers writing at once: each writer has its own SDK client, as separate
//! containers would, all against one DynamoDB Local.

use kv::Function::{BucketCreate, BucketInfo, KeyGet, KeyPut};
use kv_dev::support::*;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};

const WRITERS: usize = 16;
const PUTS_EACH: usize = 50;
/// How long the stream may take to catch up here: these tests keep DynamoDB Local saturated,
/// so the consumer's requests wait behind the writers' (the counts' 5 s bound is checked by
/// the other suites).
const LOADED_STREAM: std::time::Duration = std::time::Duration::from_secs(60);

async fn create(bucket: &str, history: u64) {
    let response = call(
        &container(),
        BucketCreate,
        json!({"bucket": bucket, "history": history}),
    )
    .await;
    assert_eq!(status(&response), 200, "{response}");
}

/// Runs WRITERS writers, each in its own container, each doing PUTS_EACH puts; returns every
/// (writer, index, key, revision) in the order each writer saw its commits.
async fn run_writers(
    bucket: &str,
    key_of: fn(usize, usize) -> String,
) -> Vec<(usize, usize, String, u64)> {
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let bucket = bucket.to_string();
        tasks.push(tokio::spawn(async move {
            let kv = container();
            let mut written = Vec::new();
            for index in 0..PUTS_EACH {
                let key = key_of(writer, index);
                let value = format!("w{writer:02}-i{index:02}");
                let response = call(
                    &kv,
                    KeyPut,
                    json!({"bucket": bucket, "key": key, "value": value}),
                )
                .await;
                assert_eq!(status(&response), 200, "{response}");
                written.push((
                    writer,
                    index,
                    key,
                    response["body"]["revision"].as_u64().unwrap(),
                ));
            }
            written
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("writer"));
    }
    all
}

fn assert_unique_and_ordered(written: &[(usize, usize, String, u64)]) {
    let revisions: HashSet<u64> = written.iter().map(|entry| entry.3).collect();
    assert_eq!(
        revisions.len(),
        WRITERS * PUTS_EACH,
        "a revision was handed out twice"
    );
    for writer in 0..WRITERS {
        let own: Vec<u64> = written
            .iter()
            .filter(|entry| entry.0 == writer)
            .map(|entry| entry.3)
            .collect();
        assert!(
            own.windows(2).all(|pair| pair[0] < pair[1]),
            "writer {writer} saw revisions go back: {own:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_one_key() {
    let bucket = unique("one-key");
    let history = 5;
    create(&bucket, history).await;
    let written = run_writers(&bucket, |_, _| "hot".to_string()).await;
    assert_unique_and_ordered(&written);

    // Exactly `history` revisions remain, and they are the highest ones handed out: no write
    // that committed later carries a smaller revision.
    let mut revisions: Vec<u64> = written.iter().map(|entry| entry.3).collect();
    revisions.sort_unstable();
    let newest: Vec<u64> = revisions[revisions.len() - history as usize..].to_vec();
    let stored: Vec<(u64, String)> = stored_revisions(&bucket, "hot")
        .await
        .into_iter()
        .map(|revision| (revision.revision, revision.text))
        .collect();
    assert_eq!(
        stored.iter().map(|entry| entry.0).collect::<Vec<_>>(),
        newest
    );
    let by_revision: BTreeMap<u64, String> = written
        .iter()
        .map(|(writer, index, _, revision)| (*revision, format!("w{writer:02}-i{index:02}")))
        .collect();
    for (revision, text) in &stored {
        assert_eq!(
            &by_revision[revision], text,
            "revision {revision} holds another write's value"
        );
    }
    let latest = call(
        &container(),
        KeyGet,
        json!({"bucket": bucket, "key": "hot"}),
    )
    .await;
    assert_eq!(
        latest["body"]["metadata"]["revision"],
        *newest.last().unwrap()
    );
    stream_pump::settled_within(LOADED_STREAM).await;
    assert_eq!(listed_usage(&container(), &bucket).await, (1, 7 * history));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_many_keys() {
    let bucket = unique("many-keys");
    let history = 2;
    create(&bucket, history).await;
    // 20 keys shared by all writers, so keys see contention and history trimming.
    let written = run_writers(&bucket, |writer, index| {
        format!("k{:02}", (writer * 7 + index) % 20)
    })
    .await;
    assert_unique_and_ordered(&written);
    let mut expected_bytes = 0;
    for key in (0..20).map(|index| format!("k{index:02}")) {
        let mut revisions: Vec<u64> = written
            .iter()
            .filter(|entry| entry.2 == key)
            .map(|entry| entry.3)
            .collect();
        revisions.sort_unstable();
        let keep = revisions.len().min(history as usize);
        let stored: Vec<u64> = stored_revisions(&bucket, &key)
            .await
            .iter()
            .map(|revision| revision.revision)
            .collect();
        assert_eq!(
            stored,
            revisions[revisions.len() - keep..].to_vec(),
            "key {key}"
        );
        expected_bytes += 7 * keep as u64;
    }
    stream_pump::settled_within(LOADED_STREAM).await;
    assert_eq!(
        listed_usage(&container(), &bucket).await,
        (20, expected_bytes)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compare_and_set_has_exactly_one_winner() {
    let bucket = unique("cas-race");
    create(&bucket, 10).await;
    let kv = container();
    let first = call(
        &kv,
        KeyPut,
        json!({"bucket": bucket, "key": "counter", "value": "0", "revision": 0}),
    )
    .await;
    let mut expected = first["body"]["revision"].as_u64().unwrap();
    for round in 0..10 {
        let mut tasks = Vec::new();
        for writer in 0..WRITERS {
            let bucket = bucket.clone();
            tasks.push(tokio::spawn(async move {
                let kv = container();
                call(&kv, KeyPut, json!({"bucket": bucket, "key": "counter", "value": format!("{round}-{writer}"), "revision": expected})).await
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let response = task.await.unwrap();
            match status(&response) {
                200 => winners.push(response["body"]["revision"].as_u64().unwrap()),
                409 => {
                    assert_eq!(code(&response), "revision_mismatch", "{response}");
                    assert!(response["body"]["current_revision"].as_u64().unwrap() > expected);
                }
                _ => panic!("unexpected {response}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        expected = winners[0];
    }
    // Only one writer can create a key with revision 0.
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let bucket = bucket.clone();
        tasks.push(tokio::spawn(async move {
            call(&container(), KeyPut, json!({"bucket": bucket, "key": "lock", "value": format!("{writer}"), "revision": 0})).await
        }));
    }
    let mut created = 0;
    for task in tasks {
        let response = task.await.unwrap();
        match status(&response) {
            200 => created += 1,
            409 => assert_eq!(code(&response), "key_exists"),
            _ => panic!("unexpected {response}"),
        }
    }
    assert_eq!(created, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_on_many_buckets() {
    // History 1: the path with no read and no transaction. Every writer writes to every
    // bucket, so buckets share nothing and each bucket's counter serves many containers.
    let buckets: Vec<String> = (0..4)
        .map(|index| unique(&format!("many-buckets-{index}")))
        .collect();
    for bucket in &buckets {
        create(bucket, 1).await;
    }
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let buckets = buckets.clone();
        tasks.push(tokio::spawn(async move {
            let kv = container();
            let mut written = Vec::new();
            for index in 0..20 {
                let bucket = &buckets[(writer + index) % buckets.len()];
                let key = format!("k{:02}", (writer * 3 + index) % 10);
                let value = format!("w{writer:02}-i{index:02}");
                let response = call(
                    &kv,
                    KeyPut,
                    json!({"bucket": bucket, "key": key, "value": value}),
                )
                .await;
                assert_eq!(status(&response), 200, "{response}");
                written.push((
                    bucket.clone(),
                    key,
                    value,
                    response["body"]["revision"].as_u64().unwrap(),
                ));
            }
            written
        }));
    }
    let mut written = Vec::new();
    for task in tasks {
        written.extend(task.await.expect("writer"));
    }
    // The counts come from the stream: wait until it has delivered every write.
    stream_pump::settled_within(LOADED_STREAM).await;
    for bucket in &buckets {
        let mine: Vec<&(String, String, String, u64)> =
            written.iter().filter(|entry| &entry.0 == bucket).collect();
        let revisions: HashSet<u64> = mine.iter().map(|entry| entry.3).collect();
        assert_eq!(
            revisions.len(),
            mine.len(),
            "{bucket}: a revision handed out twice"
        );
        // Each key holds its highest acknowledged revision's value (or a later one's, if a
        // write was overtaken in order), and the counts match the keys' values.
        let mut expected_bytes = 0;
        let mut keys = 0;
        for key in (0..10).map(|index| format!("k{index:02}")) {
            let Some(newest) = mine
                .iter()
                .filter(|entry| entry.1 == key)
                .max_by_key(|entry| entry.3)
            else {
                continue;
            };
            let stored = stored_revisions(bucket, &key).await;
            assert_eq!(
                stored.len(),
                1,
                "{bucket}/{key}: history 1 keeps one revision"
            );
            assert_eq!(stored[0].revision, newest.3, "{bucket}/{key}");
            assert_eq!(stored[0].text, newest.2, "{bucket}/{key}");
            expected_bytes += stored[0].text.len() as u64;
            keys += 1;
        }
        assert_eq!(
            listed_usage(&container(), bucket).await,
            (keys, expected_bytes),
            "{bucket}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_writers_near_max_bytes_never_pass_it() {
    let bucket = unique("near-limit");
    let max_bytes = 400;
    let created = call(
        &container(),
        BucketCreate,
        json!({"bucket": bucket, "history": 2, "max_bytes": max_bytes}),
    )
    .await;
    assert_eq!(status(&created), 200, "{created}");
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let bucket = bucket.clone();
        tasks.push(tokio::spawn(async move {
            let kv = container();
            let mut outcomes = Vec::new();
            for index in 0..8 {
                let value = format!("{writer:02}-{index}-{}", "x".repeat(10 + (writer + index) % 20));
                let response = call(
                    &kv,
                    KeyPut,
                    json!({"bucket": bucket, "key": format!("k{}", (writer + index) % 12), "value": value}),
                )
                .await;
                outcomes.push(status(&response));
                if status(&response) != 200 {
                    assert_eq!(code(&response), "bucket_full", "{response}");
                }
                // The exact count never passes the limit, at any moment.
                let info = call(&kv, BucketInfo, json!({"bucket": bucket})).await;
                let used = info["body"]["body"]["bytes"].as_u64().unwrap();
                assert!(used <= max_bytes, "bytes {used} past max_bytes {max_bytes}");
            }
            outcomes
        }));
    }
    let mut refused = 0;
    for task in tasks {
        refused += task
            .await
            .expect("writer")
            .iter()
            .filter(|status| **status == 413)
            .count();
    }
    assert!(
        refused > 0,
        "the limit was never reached: the test proves nothing"
    );
    // And the count is exactly what the heads hold.
    let mut bytes = 0;
    for key in (0..12).map(|index| format!("k{index}")) {
        bytes += stored_revisions(&bucket, &key)
            .await
            .iter()
            .map(|revision| revision.text.len() as u64)
            .sum::<u64>();
    }
    stream_pump::settled_within(LOADED_STREAM).await;
    assert_eq!(listed_usage(&container(), &bucket).await.1, bytes);
}
