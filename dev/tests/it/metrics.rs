//! The functions' metric records (SPEC "Operations"): one CloudWatch Embedded Metric Format
//! record per invocation, valid as CloudWatch reads it, whose counts are what a meter of the
//! same client saw and whose outcome is what the caller was answered, naming no bucket, key or
//! value. The records of the real binaries are checked in `e2e` (one per invocation).

use kv::lambda::dispatch::handle_event_measured;
use kv::lambda::metrics::figures;
use kv::Function::{self, *};
use kv_dev::emf;
use kv_dev::support::*;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

/// Invokes through the measured path; checks the record and returns the answer and the record.
async fn measured(
    kv: &kv::Kv,
    meter: &kv_dev::meter::Meter,
    function: Function,
    payload: Value,
    secrets: &[&str],
) -> (Value, Value) {
    meter.take();
    let (answer, record) = handle_event_measured(
        kv,
        function,
        LambdaEvent::new(payload.clone(), Context::default()),
    )
    .await;
    let seen = meter.take();
    let problems = emf::problems(&record);
    assert!(
        problems.is_empty(),
        "{}: {problems:?} in {record}",
        function.name()
    );
    assert_eq!(record["Function"], function.name(), "{record}");
    let outcome = match &answer {
        Ok(answer) if function.answers_stream_batches() => {
            assert!(answer.get("batchItemFailures").is_some(), "{answer}");
            "200".to_string()
        }
        Ok(answer) => answer["status_code"].to_string(),
        Err(error) => format!("{error:?}")
            .split('(')
            .next()
            .map(|kind| format!("Kv{kind}"))
            .unwrap_or_default(),
    };
    assert_eq!(record["Outcome"], outcome.as_str(), "{payload}: {record}");
    assert_eq!(
        record["DynamoDBRequests"],
        seen.requests.len(),
        "{payload}: {record} vs {:?}",
        seen.requests
    );
    let close = |a: &Value, b: f64| (a.as_f64().unwrap_or(-1.0) - b).abs() < 1e-6;
    assert!(
        close(&record["ReadCapacityUnits"], seen.read_units),
        "{record} vs {seen:?}"
    );
    assert!(
        close(&record["WriteCapacityUnits"], seen.write_units),
        "{record} vs {seen:?}"
    );
    // Only the function's own figures, each declared once, under the namespace.
    let declared = emf::declared(&record);
    assert!(declared
        .iter()
        .all(|(namespace, _, _)| namespace == &kv.metrics_namespace));
    let mut names: Vec<String> = declared
        .iter()
        .filter(|(_, set, _)| set == &["Function".to_string()])
        .flat_map(|(_, _, metrics)| metrics.clone())
        .collect();
    names.sort();
    let mut wanted: Vec<String> = figures(function)
        .iter()
        .map(|figure| figure.name.to_string())
        .collect();
    wanted.sort();
    assert_eq!(names, wanted, "{record}");
    let text = record.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} in {record}");
    }
    (
        answer.unwrap_or_else(|error| json!({"error": error.to_string()})),
        record,
    )
}

#[tokio::test]
async fn every_invocation_has_one_record_whose_counts_match_the_meter_and_name_no_tenant() {
    let (mut kv, meter) = metered_container();
    // Step Functions as moto plays it, for kv-key-watch: it takes any task token.
    kv.tokens = Some(kv::tokens::TaskTokens::new(kv_dev::moto::Moto::sfn_client(
        &kv_dev::moto::Moto::shared().endpoint,
    )));
    let kv = kv;
    let name = unique("metered");
    let key = "user.secret-key";
    let value = "value-that-must-not-be-in-a-metric";
    let secrets = [name.as_str(), key, value];
    let run = |function, payload| measured(&kv, &meter, function, payload, &secrets);

    let (created, _) = run(
        BucketCreate,
        json!({"bucket": name, "storage": "memory", "history": 2}),
    )
    .await;
    assert_eq!(created["status_code"], 200, "{created}");
    let (_, written) = run(KeyPut, json!({"bucket": name, "key": key, "value": value})).await;
    assert_eq!(written["WriteAttempts"], 1, "{written}");
    assert_eq!(written["WriteConflicts"], 0, "{written}");
    // A memory bucket's value this container wrote comes from its cache; one another container
    // wrote goes to DynamoDB once, then comes from the cache too.
    let (_, hit) = run(KeyGet, json!({"bucket": name, "key": key})).await;
    assert_eq!(
        (hit["CacheHits"].clone(), hit["DynamoDBRequests"].clone()),
        (json!(1), json!(0)),
        "{hit}"
    );
    put(&container(), &name, "elsewhere", json!("v")).await;
    let (_, missed) = run(KeyGet, json!({"bucket": name, "key": "elsewhere"})).await;
    assert_eq!(
        (missed["CacheMisses"].clone(), missed["CacheHits"].clone()),
        (json!(1), json!(0)),
        "{missed}"
    );
    let (_, hit) = run(KeyGet, json!({"bucket": name, "key": "elsewhere"})).await;
    assert_eq!(hit["CacheHits"], 1, "{hit}");
    let (_, absent) = run(KeyGet, json!({"bucket": name, "key": "absent"})).await;
    assert_eq!(absent["Outcome"], "404", "{absent}");
    let (_, refused) = run(KeyPut, json!({"bucket": name, "key": "", "value": "x"})).await;
    assert_eq!(
        (
            refused["Outcome"].clone(),
            refused["DynamoDBRequests"].clone()
        ),
        (json!("400"), json!(0)),
        "{refused}"
    );
    let idle = unique("metered-idle");
    let (created, _) = run(BucketCreate, json!({"bucket": idle})).await;
    assert_eq!(created["status_code"], 200, "{created}");
    let (_, counted) = run(
        KeyIncrement,
        json!({"bucket": name, "key": "hits", "by": 2}),
    )
    .await;
    assert_eq!(counted["Outcome"], "200", "{counted}");
    for (function, payload) in [
        (KeyHistory, json!({"bucket": name, "key": key})),
        (KeyList, json!({"bucket": name})),
        (BucketInfo, json!({"bucket": name})),
        (BucketList, json!({})),
        (KeyDelete, json!({"bucket": name, "key": key})),
        (ExpirySweep, json!({})),
        // A bucket never written is deleted at once (a written one waits for its writes to land).
        (BucketDelete, json!({"bucket": idle})),
    ] {
        let (_, record) = run(function, payload).await;
        assert_eq!(record["Outcome"], "200", "{record}");
        assert!(
            record["Latency"].as_f64().is_some_and(|ms| ms > 0.0),
            "{record}"
        );
    }
    let (_, watching) = run(
        KeyWatch,
        json!({"bucket": name, "key": "watched", "task_token": "t".repeat(20)}),
    )
    .await;
    assert_eq!(watching["Outcome"], "200", "{watching}");
    // The stream consumers' batches (the events of events/): their records, and the age of the
    // oldest record (the events' are old).
    for (function, file) in [
        (ItemsStream, "kv-items-stream.json"),
        (ItemsReplicate, "kv-items-replicate.json"),
        (BucketPurge, "kv-bucket-purge.json"),
    ] {
        let batch: Value = serde_json::from_str(
            &std::fs::read_to_string(kv_dev::root().join("events").join(file)).expect("the event"),
        )
        .expect("JSON");
        let (_, consumed) = run(function, batch.clone()).await;
        assert_eq!(consumed["Outcome"], "200", "{consumed}");
        assert_eq!(
            consumed["Records"],
            batch["Records"].as_array().map_or(0, Vec::len),
            "{consumed}"
        );
        if function != BucketPurge {
            assert!(
                consumed["OldestRecordAge"].as_u64() > Some(60_000),
                "{consumed}"
            );
        }
    }
}
