//! kv-key-watch (SPEC "For flows"): a flow's task token waits in DynamoDB until a matching key
//! passes `after_revision`; the items table's stream (kv-items-replicate, through the runner of
//! `make streams`) resumes it with `SendTaskSuccess`. Step Functions' task-token API is played
//! by kv-flow's engine (`kv_flow::task_tokens`), which knows the tokens it issued, unlike moto.

use kv::{Function, Kv};
use kv_dev::moto::Moto;
use kv_dev::support::stream_pump::{follow_waking, settled_at};
use kv_dev::support::*;
use kv_flow::task_tokens::TaskTokens;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a resumption may take here: the stream's delivery, within the contract's 5 s,
/// with room for the two cores the suite shares.
const RESUMED_WITHIN: Duration = Duration::from_secs(30);

struct Setup {
    _local: PrivateLocal,
    endpoint: String,
    tokens: Arc<TaskTokens>,
    kv: Kv,
}

/// A DynamoDB Local of its own whose stream resumes flows through `tokens`, and a container
/// that can resume them itself (a key already past).
fn setup() -> Setup {
    let local = private_endpoint();
    let endpoint = local.to_string();
    let tokens = TaskTokens::serve().expect("task-token API");
    follow_waking(&endpoint, &tokens.endpoint());
    let mut kv = Kv::new(client_for(&endpoint), &settings());
    kv.tokens = Some(kv::tokens::TaskTokens::new(Moto::sfn_client(
        &tokens.endpoint(),
    )));
    Setup {
        _local: local,
        endpoint,
        tokens,
        kv,
    }
}

impl Setup {
    /// Registers a waiter for a new token; returns the token.
    async fn watch(&self, params: Value) -> String {
        let token = self.tokens.issue("watch-test");
        let mut params = params;
        params["task_token"] = json!(token);
        let answer = call(&self.kv, Function::KeyWatch, params).await;
        assert_eq!(status(&answer), 200, "{answer}");
        token
    }

    async fn resumed(&self, token: &str) -> Value {
        match self.tokens.wait(token, Some(RESUMED_WITHIN)).await {
            Ok(output) => output,
            Err(failure) => panic!("not resumed: {failure:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_before_and_after_a_write_on_a_key_and_on_a_filter_resume_with_it() {
    let setup = setup();
    let kv = &setup.kv;
    let name = bucket(kv, "watched", json!({"history": 5})).await;
    let before = setup
        .watch(json!({"bucket": name, "key": "orders.1"}))
        .await;
    let filtered = setup
        .watch(json!({"bucket": name, "key": "orders.*"}))
        .await;
    let other = setup
        .watch(json!({"bucket": name, "key": "orders.2"}))
        .await;
    let written = Instant::now();
    let revision = put(kv, &name, "orders.1", json!({"total": 5})).await;
    let expected = json!({"key": "orders.1", "value": r#"{"total":5}"#, "revision": revision, "operation": "PUT"});
    assert_eq!(setup.resumed(&before).await, expected);
    println!("resumed {:?} after the write", written.elapsed());
    assert_eq!(setup.resumed(&filtered).await, expected);
    // A waiter registered after the write, from before it, resumes at once.
    let after = setup
        .watch(json!({"bucket": name, "key": "orders.1", "after_revision": revision - 1}))
        .await;
    assert_eq!(setup.resumed(&after).await, expected);
    let after_filter = setup
        .watch(json!({"bucket": name, "key": "orders.>", "after_revision": 0}))
        .await;
    assert_eq!(setup.resumed(&after_filter).await["key"], "orders.1");
    // The other key's waiter still waits: nothing was sent with its token.
    let sent = setup.tokens.calls();
    assert!(sent.iter().all(|call| call.token != other), "{sent:?}");
    let second = put(kv, &name, "orders.2", json!("b")).await;
    assert_eq!(setup.resumed(&other).await["revision"], second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_purges_and_expiries_resume_waiters() {
    let setup = setup();
    let kv = &setup.kv;
    let name = bucket(kv, "watched-end", json!({"history": 3})).await;
    put(kv, &name, "gone", json!("v")).await;
    put(kv, &name, "purged", json!("v")).await;
    let deleted = setup.watch(json!({"bucket": name, "key": "gone"})).await;
    let purged = setup.watch(json!({"bucket": name, "key": "purged"})).await;
    let marker = call(
        kv,
        Function::KeyDelete,
        json!({"bucket": name, "key": "gone"}),
    )
    .await;
    let purge = call(
        kv,
        Function::KeyDelete,
        json!({"bucket": name, "key": "purged", "purge": true}),
    )
    .await;
    let resumed = setup.resumed(&deleted).await;
    assert_eq!(
        resumed,
        json!({"key": "gone", "value": null, "revision": marker["body"]["revision"], "operation": "DEL"})
    );
    let resumed = setup.resumed(&purged).await;
    assert_eq!(resumed["operation"], "PURGE");
    assert_eq!(resumed["revision"], purge["body"]["revision"]);

    // An expiry: the lease of a lock ends.
    let lock = call(
        kv,
        Function::KeyPut,
        json!({"bucket": name, "key": "lock", "value": "a", "revision": 0, "ttl": 1_000_000_000u64}),
    )
    .await;
    let held = lock["body"]["revision"].as_u64().expect("revision");
    let waiting = setup
        .watch(json!({"bucket": name, "key": "lock", "after_revision": held}))
        .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The sweeper (every minute on AWS) marks it expired; the stream resumes the waiter.
    let swept = call(kv, Function::ExpirySweep, json!({})).await;
    assert_eq!(status(&swept), 200, "{swept}");
    let resumed = setup.resumed(&waiting).await;
    assert_eq!(
        resumed,
        json!({"key": "lock", "value": null, "revision": held, "operation": "EXPIRED"})
    );
    // Watching a value already expired (not yet swept) resumes at once as its expiry.
    put_with_ttl(kv, &name, "short", 1_000_000).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let at_once = setup
        .watch(json!({"bucket": name, "key": "short", "after_revision": 0}))
        .await;
    assert_eq!(setup.resumed(&at_once).await["operation"], "EXPIRED");
}

async fn put_with_ttl(kv: &Kv, bucket: &str, key: &str, ttl_ns: u64) -> u64 {
    let answer = call(
        kv,
        Function::KeyPut,
        json!({"bucket": bucket, "key": key, "value": "v", "ttl": ttl_ns}),
    )
    .await;
    answer["body"]["revision"].as_u64().expect("revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_waiters_on_one_key_all_resume() {
    let setup = Arc::new(setup());
    let name = bucket(&setup.kv, "crowd", json!({})).await;
    let mut registering = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let setup = setup.clone();
        let name = name.clone();
        registering.spawn(async move {
            let mut kv = Kv::new(client_for(&setup.endpoint), &settings());
            kv.tokens = Some(kv::tokens::TaskTokens::new(Moto::sfn_client(
                &setup.tokens.endpoint(),
            )));
            let mut tokens = Vec::new();
            for _ in 0..(1000 / 16 + usize::from(worker < 1000 % 16)) {
                let token = setup.tokens.issue("crowd");
                let answer = call(
                    &kv,
                    Function::KeyWatch,
                    json!({"bucket": name, "key": "go", "task_token": token}),
                )
                .await;
                assert_eq!(status(&answer), 200, "{answer}");
                tokens.push(token);
            }
            tokens
        });
    }
    let mut tokens = Vec::new();
    while let Some(registered) = registering.join_next().await {
        tokens.extend(registered.expect("registering panicked"));
    }
    assert_eq!(tokens.len(), 1000);
    let written = Instant::now();
    let revision = put(&setup.kv, &name, "go", json!("now")).await;
    let mut waits = tokio::task::JoinSet::new();
    for token in tokens {
        let setup = setup.clone();
        waits.spawn(async move { setup.resumed(&token).await });
    }
    while let Some(resumed) = waits.join_next().await {
        assert_eq!(resumed.expect("wait panicked")["revision"], revision);
    }
    println!(
        "1,000 waiters resumed {:?} after the write",
        written.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_token_is_dropped_without_failing_the_stream() {
    let setup = setup();
    let kv = &setup.kv;
    let name = bucket(kv, "cancelled", json!({})).await;
    let cancelled = setup.watch(json!({"bucket": name, "key": "k"})).await;
    let live = setup.watch(json!({"bucket": name, "key": "k"})).await;
    setup.tokens.cancel(&cancelled);
    put(kv, &name, "k", json!("v")).await;
    assert_eq!(setup.resumed(&live).await["key"], "k");
    // Both waiters are gone, and no batch reported a failure.
    let deadline = Instant::now() + RESUMED_WITHIN;
    while !kv.store.waiters(&name).await.expect("waiters").is_empty() {
        assert!(Instant::now() < deadline, "a waiter stayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for batch in kv_dev::support::stream_pump::replication_delivered_at(&setup.endpoint) {
        assert!(batch.get("Records").is_some());
    }
    let failures = kv_dev::support::stream_pump::replication_failures_at(&setup.endpoint);
    assert_eq!(failures, 0, "a batch reported failures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_watch_fails_its_task_with_the_code() {
    let setup = setup();
    let token = setup.tokens.issue("refused");
    let answer = call(
        &setup.kv,
        Function::KeyWatch,
        json!({"bucket": unique("missing"), "key": "k", "task_token": token}),
    )
    .await;
    assert_error(&answer, 404, "bucket_not_found");
    let failure = setup
        .tokens
        .wait(&token, Some(RESUMED_WITHIN))
        .await
        .expect_err("the task failed");
    assert_eq!(failure.error_type, "bucket_not_found");
    let token = setup.tokens.issue("refused");
    let answer = call(
        &setup.kv,
        Function::KeyWatch,
        json!({"bucket": "b", "key": "a..b", "task_token": token}),
    )
    .await;
    assert_error(&answer, 400, "invalid_key");
    let failure = setup
        .tokens
        .wait(&token, Some(RESUMED_WITHIN))
        .await
        .expect_err("failed");
    assert_eq!(failure.error_type, "invalid_key");
}

/// The bucket's count of waiters, as its usage item holds it.
async fn waiting(setup: &Setup, bucket: &str) -> i64 {
    let item = client_for(&setup.endpoint)
        .get_item()
        .table_name(ITEMS_TABLE)
        .key(kv::store::items::PK, kv::store::items::s(bucket))
        .key(kv::store::items::REVISION, kv::store::items::n(0))
        .consistent_read(true)
        .send()
        .await
        .expect("usage item");
    item.item()
        .and_then(|item| kv::store::items::get_i64(item, kv::store::items::WAITING))
        .unwrap_or(0)
}

/// SPEC "Limits and bad input": a bucket holds at most `MAX_WAITERS_PER_BUCKET` waiting flows;
/// one more is a 429 `too_many_waiters` whose task is failed with that code. Resumed waiters
/// leave the count. Task tokens are taken up to Step Functions' own 2048 characters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_holds_a_bounded_number_of_waiters() {
    use kv::model::limits::{MAX_TASK_TOKEN_CHARS, MAX_WAITERS_PER_BUCKET};
    let setup = setup();
    let name = bucket(&setup.kv, "bounded", json!({})).await;
    let first = setup.watch(json!({"bucket": name, "key": "go"})).await;
    let second = setup.watch(json!({"bucket": name, "key": "go.>"})).await;
    assert_eq!(waiting(&setup, &name).await, 2);
    put(&setup.kv, &name, "go", json!("now")).await;
    setup.resumed(&first).await;
    let started = Instant::now();
    while waiting(&setup, &name).await != 1 {
        assert!(started.elapsed() < RESUMED_WITHIN, "the count stayed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // As if the bucket held the most it may.
    client_for(&setup.endpoint)
        .update_item()
        .table_name(ITEMS_TABLE)
        .key(kv::store::items::PK, kv::store::items::s(&name))
        .key(kv::store::items::REVISION, kv::store::items::n(0))
        .update_expression("SET #waiting = :max")
        .expression_attribute_names("#waiting", kv::store::items::WAITING)
        .expression_attribute_values(":max", kv::store::items::n(MAX_WAITERS_PER_BUCKET))
        .send()
        .await
        .expect("set the count");
    let token = setup.tokens.issue("one too many");
    let answer = call(
        &setup.kv,
        Function::KeyWatch,
        json!({"bucket": name, "key": "other", "task_token": token}),
    )
    .await;
    assert_error(&answer, 429, "too_many_waiters");
    let message = answer["body"]["error"].as_str().unwrap_or_default();
    assert!(
        message.contains(&MAX_WAITERS_PER_BUCKET.to_string()),
        "{message}"
    );
    let failure = setup
        .tokens
        .wait(&token, Some(RESUMED_WITHIN))
        .await
        .expect_err("the task failed");
    assert_eq!(failure.error_type, "too_many_waiters");
    drop(second);

    let other = bucket(&setup.kv, "long-tokens", json!({})).await;
    let longest = "t".repeat(MAX_TASK_TOKEN_CHARS);
    let answer = call(
        &setup.kv,
        Function::KeyWatch,
        json!({"bucket": other, "key": "k", "task_token": longest}),
    )
    .await;
    assert_eq!(status(&answer), 200, "{answer}");
    let answer = call(
        &setup.kv,
        Function::KeyWatch,
        json!({"bucket": other, "key": "k", "task_token": format!("{longest}t")}),
    )
    .await;
    assert_error(&answer, 400, "invalid_parameter");
}

/// DynamoDB's own TTL sweep on, as `make tables` leaves it, and coming before the project's
/// sweeper (AWS's may come at any time after an expiry): it must never take a head the
/// project's sweeper has not emptied, nor the older revisions the head lists, nor a `max_bytes` bucket's
/// bytes with it. 10 runs (a bucket counted by the stream and a `max_bytes` one each) of 10
/// keys, each key a kept value and a lease that expires with a flow waiting on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_dynamodbs_ttl_sweep_on_expiries_resume_waiters_keep_older_revisions_and_count_exactly(
) {
    const RUNS: usize = 10;
    const KEYS: usize = 10;
    const LEASE_NS: u64 = 3_000_000_000;
    let setup = setup();
    dynamodb_ttl_sweep(&setup.endpoint, true).await;
    let kv = &setup.kv;
    let mut buckets = Vec::new();
    for run in 0..RUNS {
        for config in [
            json!({"history": 3}),
            json!({"history": 3, "max_bytes": 1_000_000}),
        ] {
            buckets.push(bucket(kv, &format!("ttl-on-{run}"), config).await);
        }
    }
    let mut kept = Vec::new();
    for name in &buckets {
        for key in 0..KEYS {
            let key = format!("k{key}");
            kept.push(put(kv, name, &key, json!("kept")).await);
        }
    }
    settled_at(&setup.endpoint).await;
    let mut before = Vec::new();
    for name in &buckets {
        before.push(listed_usage(kv, name).await);
    }
    let mut leases = Vec::new();
    for name in &buckets {
        for key in 0..KEYS {
            let key = format!("k{key}");
            let lease = put_with_ttl(kv, name, &key, LEASE_NS).await;
            let token = setup
                .watch(json!({"bucket": name, "key": key, "after_revision": lease}))
                .await;
            leases.push((name.clone(), key, lease, token));
        }
    }
    // AWS's sweep may delete an expired item at any time after its expiry: here it comes first.
    // DynamoDB Local's own sweep is on too, but it deletes no item of a table shaped like the
    // items table (`dynamodb_ttl_sweep_now`), so AWS's is played as well.
    tokio::time::sleep(Duration::from_nanos(LEASE_NS) + Duration::from_secs(1)).await;
    dynamodb_ttl_sweep_now(&setup.endpoint).await;
    // DynamoDB's sweep came first, and left every head as it was.
    for (name, key, lease, _) in &leases {
        let head = kv
            .store
            .read_head(name, key, true)
            .await
            .expect("read head");
        let latest = head
            .latest
            .unwrap_or_else(|| panic!("{name}/{key}: head deleted"));
        assert_eq!(
            (latest.revision, latest.op),
            (*lease, kv::model::revision::Op::Put)
        );
    }

    let swept = call(kv, Function::ExpirySweep, json!({})).await;
    assert_eq!(status(&swept), 200, "{swept}");
    assert_eq!(swept["body"]["expired"], RUNS * 2 * KEYS, "{swept}");
    assert_eq!(swept["body"]["complete"], true, "{swept}");
    for ((name, key, lease, token), first) in leases.iter().zip(&kept) {
        assert_eq!(
            setup.resumed(token).await,
            json!({"key": key, "value": null, "revision": lease, "operation": "EXPIRED"}),
            "{name}/{key}"
        );
        let history = call(
            kv,
            Function::KeyHistory,
            json!({"bucket": name, "key": key}),
        )
        .await;
        assert_eq!(status(&history), 200, "{history}");
        let results = &history["body"]["body"]["results"];
        assert_eq!(
            results.as_array().map(Vec::len),
            Some(1),
            "{name}/{key}: {history}"
        );
        assert_eq!(results[0]["revision"], *first, "{name}/{key}: {history}");
        assert_eq!(results[0]["value"], "kept", "{name}/{key}: {history}");
    }
    settled_at(&setup.endpoint).await;
    for (name, (_, bytes)) in buckets.iter().zip(before) {
        assert_eq!(listed_usage(kv, name).await, (0, bytes), "{name}");
    }
}
