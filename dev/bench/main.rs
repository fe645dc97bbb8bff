//! `make bench`: the numbers that matter, against a DynamoDB Local started here and stopped
//! after. It prints one table and writes it as JSON (`target/bench.json`); it asserts nothing
//! but that every call it measures succeeds.
//!
//! In process, for every operation and value shape: DynamoDB requests and round trips per call
//! (counted at the SDK by `kv_dev::meter::Meter`), read units (as DynamoDB Local reports
//! them) and write units (every write request priced by AWS's model in `units.rs`, beside
//! DynamoDB Local's figure for plain writes), and p50/p99 latency of `kv::lambda::dispatch::handle`, each
//! beside the raw SDK call that is its floor on a plain table; the items two puts to different
//! keys of one bucket both write; the targets of the write path, in steady state. Then cold
//! starts of every function's release binary against a local Lambda Runtime API (`cold.rs`), and
//! their stripped sizes.
//!
//! Environment: `KV_BENCH_ROW_SECONDS` (time per row, default 1.5; 0 skips the in-process
//! rows), `KV_BENCH_COLD_RUNS`
//! (processes per function, default 9; 0 skips cold starts), `KV_BENCH_COLD_PAUSE_MS` (idle
//! time before each warm call, default 20, so that warm calls, like the first, follow a pause),
//! `KV_BENCH_JSON` (output path),
//! `KV_BENCH_ONLY` (comma-separated row ops and function names to run, e.g.
//! `get,kv-key-get`; default everything), `KV_BENCH_CHILD_ENV` (extra `NAME=VALUE;...` for
//! the function processes), `KV_BENCH_BIN_DIR` (where the release binaries are; default
//! beside this one).
//!
//! Adding a row is one `Case` in `cases()`; adding a function to the cold-start table is one
//! arm in `cold_event()` (the compiler asks for it when `Function` grows).

mod cold;
mod consumers;
mod inproc;
mod local;
mod units;

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use inproc::{n, s, Baseline, Bench, Case, Measured, Row};
use kv::model::config::Settings;
use kv::{Function, Kv};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [100, 4 * 1024, 100 * 1024];
const HISTORIES: [i64; 2] = [1, 64];
const PLAIN_TABLE: &str = "kv-bench-plain";
const REGION: &str = "us-east-1";
/// DynamoDB Local keeps one database per access key unless started with -sharedDb (it is);
/// the in-process client and the function processes use the same key anyway.
const ACCESS_KEY: &str = "AKIDKVBENCH";
const SECRET_KEY: &str = "kv-bench-secret";
const SESSION_TOKEN: &str = "kv-bench-session";

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Whether `KV_BENCH_ONLY` selects this row op or function (everything when unset).
fn selected(name: &str) -> bool {
    match std::env::var("KV_BENCH_ONLY") {
        Ok(list) if !list.trim().is_empty() => list.split(',').any(|item| item.trim() == name),
        _ => true,
    }
}

fn size_label(bytes: usize) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// A value that looks like what flows store: JSON-ish records, compressible as such text is.
fn value_text(size: usize, seed: u64) -> String {
    const THEMES: [&str; 4] = ["dark", "light", "system", "contrast"];
    const LANGS: [&str; 5] = ["en-US", "de-DE", "fr-FR", "ja-JP", "pt-BR"];
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut text = String::with_capacity(size + 128);
    text.push('[');
    while text.len() < size {
        let _ = write!(
            text,
            r#"{{"user":"u{:06}","theme":"{}","lang":"{}","score":{},"seen":{}}},"#,
            rng.u32(..1_000_000),
            THEMES[rng.usize(..THEMES.len())],
            LANGS[rng.usize(..LANGS.len())],
            rng.u32(..100_000),
            1_760_000_000_000u64 + rng.u64(..1_000_000_000),
        );
    }
    text.truncate(size);
    text
}

fn stored_len(text: &str, compression: bool) -> usize {
    kv::model::codec::encode(text, compression).0.len()
}

/// The items a write to `bucket` may write besides its key's partition: the bucket's usage
/// item and its bucket item (the revision counter).
fn bucket_singles(bench: &Bench, bucket: &str) -> Vec<(String, units::Item)> {
    vec![
        (
            bench.items_table.clone(),
            [
                (kv::store::items::PK.to_string(), s(bucket)),
                (kv::store::items::REVISION.to_string(), n(0)),
            ]
            .into(),
        ),
        (
            bench.buckets_table.clone(),
            [(kv::store::items::BUCKET.to_string(), s(bucket))].into(),
        ),
    ]
}

/// A bucket with `max_bytes` far above what the bench writes: its usage moves with each write.
const MAX_BYTES: i64 = 1 << 30;
/// The largest value the get target covers ("up to 3.9 KB").
const GET_TARGET_BYTES: usize = 3900;

async fn create_plain_table(client: &aws_sdk_dynamodb::Client) {
    let attribute = |name: &str, kind| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(kind)
            .build()
            .expect("attribute")
    };
    let key = |name: &str, kind| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
            .expect("key")
    };
    client
        .create_table()
        .table_name(PLAIN_TABLE)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk", ScalarAttributeType::S))
        .attribute_definitions(attribute("sk", ScalarAttributeType::N))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .send()
        .await
        .expect("create the plain table");
}

/// DynamoDB Local is a JVM: it answers several times slower until its code is compiled, so
/// every kind of request the functions send is run for a while first.
async fn warm_up(bench: &Bench) {
    bench
        .call(
            &bench.kv,
            Function::BucketCreate,
            json!({"bucket": "warmup"}),
        )
        .await;
    let value = value_text(1000, 1);
    let started = Instant::now();
    let mut round = 0u64;
    while started.elapsed() < Duration::from_secs(5) {
        let key = format!("k{}", round % 50);
        let on_key = json!({"bucket": "warmup", "key": key});
        let mut put = on_key.clone();
        put["value"] = json!(value);
        bench.call(&bench.kv, Function::KeyPut, put).await;
        bench
            .call(&bench.kv, Function::KeyGet, on_key.clone())
            .await;
        bench
            .plain_put("warmup", round % 50, value.as_bytes())
            .await;
        if round % 5 == 0 {
            let bucket = json!({"bucket": "warmup"});
            bench
                .call(&bench.kv, Function::KeyList, bucket.clone())
                .await;
            bench.call(&bench.kv, Function::BucketInfo, bucket).await;
            bench
                .call(&bench.kv, Function::KeyHistory, on_key.clone())
                .await;
            bench.call(&bench.kv, Function::KeyDelete, on_key).await;
            bench.call(&bench.kv, Function::BucketList, json!({})).await;
        }
        round += 1;
    }
}

/// Creates the buckets and data every case needs, and returns the cases in table order.
async fn cases(bench: &Bench) -> Vec<Case> {
    let mut puts = Vec::new();
    let mut gets = Vec::new();
    let mut deletes = Vec::new();
    let mut histories = Vec::new();
    for (index, size) in SIZES.iter().copied().enumerate() {
        let text = value_text(size, 100 + index as u64);
        let raw = text.as_bytes().to_vec();
        for history in HISTORIES {
            for compression in [false, true] {
                let bucket = format!(
                    "b{size}-h{history}-{}",
                    if compression { "lz4" } else { "raw" }
                );
                let variant = format!(
                    "{} h{history}{}",
                    size_label(size),
                    if compression { " lz4" } else { "" }
                );
                bench
                    .call(
                        &bench.kv,
                        Function::BucketCreate,
                        json!({"bucket": bucket, "history": history, "compression": compression}),
                    )
                    .await;
                let put = json!({"bucket": bucket, "key": "k1", "value": text});
                let delete_put = json!({"bucket": bucket, "key": "d1", "value": text});
                let history_put = json!({"bucket": bucket, "key": "h1", "value": text});
                // Fill the history, so every measured write also trims. (This container's
                // first write to each bucket is also done here: measured writes are steady
                // state.) Trimmed revisions are deleted by the stream consumer, which the bench
                // does not run, so kv-key-history reads a key ("h1") written only here.
                for _ in 0..history {
                    bench.call(&bench.kv, Function::KeyPut, put.clone()).await;
                    bench
                        .call(&bench.kv, Function::KeyPut, delete_put.clone())
                        .await;
                    bench
                        .call(&bench.kv, Function::KeyPut, history_put.clone())
                        .await;
                }
                for sk in 0..history as u64 {
                    bench.plain_put(&format!("hist/{bucket}"), sk, &raw).await;
                }
                bench.plain_put(&format!("get/{bucket}"), 0, &raw).await;
                let shape = |op: &'static str| Case {
                    op,
                    variant: variant.clone(),
                    value_bytes: size,
                    stored_bytes: Some(stored_len(&text, compression)),
                    history: Some(history),
                    compression: Some(compression),
                    function: Function::KeyGet,
                    memory_hit: false,
                    event: json!({"bucket": bucket, "key": "k1"}),
                    prepare: None,
                    baseline: Baseline::None,
                    shadow: Baseline::None,
                    partitions: Vec::new(),
                    singles: Vec::new(),
                };
                puts.push(Case {
                    function: Function::KeyPut,
                    event: put.clone(),
                    baseline: Baseline::PutItem {
                        pk: format!("put/{bucket}"),
                        value: raw.clone(),
                    },
                    partitions: vec![format!("{bucket}/k1")],
                    singles: bucket_singles(bench, &bucket),
                    ..shape("put")
                });
                gets.push(Case {
                    baseline: Baseline::GetItem {
                        pk: format!("get/{bucket}"),
                    },
                    shadow: Baseline::LatestRevision {
                        bucket: bucket.clone(),
                        key: "k1".to_string(),
                    },
                    ..shape("get")
                });
                deletes.push(Case {
                    function: Function::KeyDelete,
                    event: json!({"bucket": bucket, "key": "d1"}),
                    prepare: Some((Function::KeyPut, delete_put)),
                    baseline: Baseline::DeleteItem {
                        pk: format!("del/{bucket}"),
                        value: raw.clone(),
                    },
                    partitions: vec![format!("{bucket}/d1")],
                    singles: bucket_singles(bench, &bucket),
                    ..shape("delete")
                });
                histories.push(Case {
                    function: Function::KeyHistory,
                    event: json!({"bucket": bucket, "key": "h1"}),
                    baseline: Baseline::QueryAll {
                        pk: format!("hist/{bucket}"),
                    },
                    variant: format!("{variant} ({history} revisions)"),
                    ..shape("history")
                });
            }
        }
    }

    // A bucket with max_bytes (100 B values, history 1): head and usage in one transaction.
    {
        let bucket = "b100-h1-maxbytes";
        let text = value_text(100, 150);
        bench
            .call(
                &bench.kv,
                Function::BucketCreate,
                json!({"bucket": bucket, "max_bytes": MAX_BYTES}),
            )
            .await;
        let put = json!({"bucket": bucket, "key": "k1", "value": text});
        let delete_put = json!({"bucket": bucket, "key": "d1", "value": text});
        bench.call(&bench.kv, Function::KeyPut, put.clone()).await;
        bench
            .call(&bench.kv, Function::KeyPut, delete_put.clone())
            .await;
        let shape = |op: &'static str| Case {
            op,
            variant: "100 B h1 max_bytes".to_string(),
            value_bytes: 100,
            stored_bytes: Some(stored_len(&text, false)),
            history: Some(1),
            compression: Some(false),
            function: Function::KeyPut,
            memory_hit: false,
            event: put.clone(),
            prepare: None,
            baseline: Baseline::None,
            shadow: Baseline::None,
            partitions: Vec::new(),
            singles: bucket_singles(bench, bucket),
        };
        puts.push(Case {
            baseline: Baseline::PutItem {
                pk: format!("put/{bucket}"),
                value: text.as_bytes().to_vec(),
            },
            partitions: vec![format!("{bucket}/k1")],
            ..shape("put")
        });
        deletes.push(Case {
            function: Function::KeyDelete,
            event: json!({"bucket": bucket, "key": "d1"}),
            prepare: Some((Function::KeyPut, delete_put)),
            baseline: Baseline::DeleteItem {
                pk: format!("del/{bucket}"),
                value: text.as_bytes().to_vec(),
            },
            partitions: vec![format!("{bucket}/d1")],
            ..shape("delete")
        });
    }
    // The largest value the get target covers, at both histories (the head carries the list
    // of retained revisions beside the value).
    for history in HISTORIES {
        let bucket = format!("b{GET_TARGET_BYTES}-h{history}-raw");
        let text = value_text(GET_TARGET_BYTES, 160 + history as u64);
        bench
            .call(
                &bench.kv,
                Function::BucketCreate,
                json!({"bucket": bucket, "history": history}),
            )
            .await;
        for _ in 0..history {
            bench
                .call(
                    &bench.kv,
                    Function::KeyPut,
                    json!({"bucket": bucket, "key": "k1", "value": text}),
                )
                .await;
        }
        bench
            .plain_put(&format!("get/{bucket}"), 0, text.as_bytes())
            .await;
        gets.push(Case {
            op: "get",
            variant: format!("{} h{history}", size_label(GET_TARGET_BYTES)),
            value_bytes: GET_TARGET_BYTES,
            stored_bytes: Some(GET_TARGET_BYTES),
            history: Some(history),
            compression: Some(false),
            function: Function::KeyGet,
            memory_hit: false,
            event: json!({"bucket": bucket, "key": "k1"}),
            prepare: None,
            baseline: Baseline::GetItem {
                pk: format!("get/{bucket}"),
            },
            shadow: Baseline::LatestRevision {
                bucket: bucket.clone(),
                key: "k1".to_string(),
            },
            partitions: Vec::new(),
            singles: Vec::new(),
        });
    }

    let mut memory = Vec::new();
    bench
        .call(
            &bench.memory_kv,
            Function::BucketCreate,
            json!({"bucket": "mem", "storage": "memory"}),
        )
        .await;
    for (index, size) in SIZES.iter().copied().enumerate() {
        let key = format!("m{size}");
        let text = value_text(size, 200 + index as u64);
        bench
            .call(
                &bench.memory_kv,
                Function::KeyPut,
                json!({"bucket": "mem", "key": key, "value": text}),
            )
            .await;
        memory.push(Case {
            op: "get memory (cache hit)",
            variant: size_label(size),
            value_bytes: size,
            stored_bytes: None,
            history: Some(1),
            compression: Some(false),
            function: Function::KeyGet,
            memory_hit: true,
            event: json!({"bucket": "mem", "key": key}),
            prepare: None,
            baseline: Baseline::None,
            shadow: Baseline::None,
            partitions: Vec::new(),
            singles: Vec::new(),
        });
    }

    let mut lists = Vec::new();
    for (index, size) in SIZES.iter().copied().enumerate() {
        let bucket = format!("list{size}");
        let text = value_text(size, 300 + index as u64);
        bench
            .call(&bench.kv, Function::BucketCreate, json!({"bucket": bucket}))
            .await;
        for key in 0..100 {
            bench
                .call(
                    &bench.kv,
                    Function::KeyPut,
                    json!({"bucket": bucket, "key": format!("key.{key:03}"), "value": text}),
                )
                .await;
            bench
                .plain_put(&format!("list/{bucket}"), key, text.as_bytes())
                .await;
        }
        lists.push(Case {
            op: "key-list",
            variant: format!("100 keys x {}", size_label(size)),
            value_bytes: size,
            stored_bytes: None,
            history: Some(1),
            compression: Some(false),
            function: Function::KeyList,
            memory_hit: false,
            event: json!({"bucket": bucket, "limit": 100}),
            prepare: None,
            baseline: Baseline::QueryPage {
                pk: format!("list/{bucket}"),
                limit: 100,
            },
            shadow: Baseline::None,
            partitions: Vec::new(),
            singles: Vec::new(),
        });
    }

    let bucket_count = bench
        .observer
        .scan()
        .table_name(&bench.buckets_table)
        .select(aws_sdk_dynamodb::types::Select::Count)
        .consistent_read(true)
        .send()
        .await
        .map(|page| page.count())
        .unwrap_or(0);
    let bucket_list = Case {
        op: "bucket-list",
        variant: format!("{bucket_count} buckets"),
        value_bytes: 0,
        stored_bytes: None,
        history: None,
        compression: None,
        function: Function::BucketList,
        memory_hit: false,
        event: json!({}),
        prepare: None,
        baseline: Baseline::ScanBuckets,
        shadow: Baseline::None,
        partitions: Vec::new(),
        singles: Vec::new(),
    };

    let mut all = Vec::new();
    all.extend(puts);
    all.extend(gets);
    all.extend(memory);
    all.extend(deletes);
    all.extend(histories);
    all.extend(lists);
    all.push(bucket_list);
    all
}

/// What two puts to different keys of one bucket both write, for each kind of bucket, from
/// the keys of the items their requests write. Each key is written once first, so both
/// measured puts replace a value (and the container knows the bucket).
async fn shared_items(bench: &Bench) -> Vec<Shared> {
    let kinds = [
        ("history 1, no max_bytes", "b100-h1-raw"),
        ("history 64, no max_bytes", "b100-h64-raw"),
        ("history 1, max_bytes", "b100-h1-maxbytes"),
    ];
    let text = value_text(100, 170);
    let mut out = Vec::new();
    for (bucket_kind, bucket) in kinds {
        let event = |key: &str| json!({"bucket": bucket, "key": key, "value": text});
        for key in ["shared.a", "shared.b"] {
            bench.call(&bench.kv, Function::KeyPut, event(key)).await;
        }
        let (a, _) = bench
            .written_keys(&bench.kv, Function::KeyPut, event("shared.a"))
            .await;
        let (b, _) = bench
            .written_keys(&bench.kv, Function::KeyPut, event("shared.b"))
            .await;
        out.push(Shared {
            bucket_kind,
            bucket: bucket.to_string(),
            both: a.intersection(&b).cloned().collect(),
            counter: units::describe_key(
                &bench.buckets_table,
                &[(kv::store::items::BUCKET.to_string(), s(bucket))].into(),
            ),
        });
    }
    out
}

/// A fresh container's first put to a history-1 bucket (it reads the head: it does not know
/// the bucket's history yet), then its second.
async fn first_write(bench: &Bench) -> FirstWrite {
    let fresh = Kv::new(bench.client.clone(), &bench.settings);
    let bucket = "b100-h1-raw";
    let event = json!({"bucket": bucket, "key": "first", "value": value_text(100, 180)});
    let mut seen = Vec::new();
    for _ in 0..2 {
        bench.meter.take();
        bench.capture.take();
        bench.call(&fresh, Function::KeyPut, event.clone()).await;
        let reading = bench.meter.take();
        let captured = bench.capture.take();
        let operations: Vec<&str> = reading
            .requests
            .iter()
            .map(|request| request.operation.as_str())
            .collect();
        seen.push((
            reading.requests.len(),
            captured.round_trips(),
            operations.join(", "),
        ));
    }
    FirstWrite {
        bucket: bucket.to_string(),
        second: seen.pop().unwrap_or_default(),
        first: seen.pop().unwrap_or_default(),
    }
}

/// The event each function's cold start is measured with (`run`-th process, `index`-th call).
fn cold_event(function: Function, run: usize, index: usize) -> Value {
    match function {
        Function::BucketCreate => json!({"bucket": format!("cold-new-{run}-{index}")}),
        Function::KeyPut => json!({"bucket": "cold", "key": "k", "value": value_text(100, 7)}),
        Function::KeyGet => json!({"bucket": "cold", "key": "k"}),
        Function::BucketList => json!({}),
        Function::KeyList => json!({"bucket": "cold"}),
        Function::KeyDelete => json!({"bucket": "cold", "key": "gone"}),
        Function::KeyHistory => json!({"bucket": "cold", "key": "k"}),
        Function::BucketInfo => json!({"bucket": "cold"}),
        Function::BucketDelete => json!({"bucket": format!("cold-del-{run}-{index}")}),
        Function::KeyIncrement => json!({"bucket": "cold", "key": "counter"}),
        // A waiter that waits: the key does not change while the bench runs.
        Function::KeyWatch => {
            json!({"bucket": "cold", "key": "watched", "task_token": format!("cold-{run}-{index}")})
        }
        Function::BucketPurge | Function::ItemsStream | Function::ItemsReplicate => {
            json!({"Records": []})
        }
        Function::ExpirySweep => json!({"source": "aws.events", "detail-type": "Scheduled Event"}),
    }
}

/// Warm calls per process: a bucket-delete waits out its index settle time (1 s) each time.
fn warm_calls(function: Function) -> usize {
    match function {
        Function::BucketDelete => 2,
        _ => 10,
    }
}

#[derive(Debug, Clone)]
struct ColdResult {
    function: &'static str,
    binary_bytes: u64,
    runs: Vec<cold::ColdRun>,
    error: Option<String>,
}

fn median(mut values: Vec<Duration>) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    values[(values.len() - 1) / 2]
}

impl ColdResult {
    fn init(&self) -> Duration {
        median(self.runs.iter().map(|run| run.init).collect())
    }
    fn init_max(&self) -> Duration {
        self.runs
            .iter()
            .map(|run| run.init)
            .max()
            .unwrap_or_default()
    }
    fn first_response(&self) -> Duration {
        median(self.runs.iter().map(|run| run.first_response).collect())
    }
    fn first_invocation(&self) -> Duration {
        median(self.runs.iter().map(|run| run.first_invocation).collect())
    }
    fn warm(&self) -> Duration {
        median(
            self.runs
                .iter()
                .flat_map(|run| run.warm.iter().copied())
                .collect(),
        )
    }
    /// Each process's second call: sampled once per process like the first, so the gap between
    /// it and the warm median shows how far one-per-process samples spread by themselves.
    fn second_invocation(&self) -> Duration {
        median(
            self.runs
                .iter()
                .filter_map(|run| run.warm.first().copied())
                .collect(),
        )
    }
    fn penalty_ms(&self) -> f64 {
        (self.first_invocation().as_secs_f64() - self.warm().as_secs_f64()) * 1e3
    }
    fn max_of(&self, field: impl Fn(&cold::ColdRun) -> usize) -> usize {
        self.runs.iter().map(field).max().unwrap_or(0)
    }
}

async fn prepare_cold(bench: &Bench, runs: usize) {
    bench
        .call(
            &bench.kv,
            Function::BucketCreate,
            json!({"bucket": "cold", "history": 5}),
        )
        .await;
    for key in ["k", "gone"] {
        bench
            .call(
                &bench.kv,
                Function::KeyPut,
                json!({"bucket": "cold", "key": key, "value": value_text(100, 7)}),
            )
            .await;
    }
    for run in 0..runs {
        for index in 0..=warm_calls(Function::BucketDelete) {
            bench
                .call(
                    &bench.kv,
                    Function::BucketCreate,
                    json!({"bucket": format!("cold-del-{run}-{index}")}),
                )
                .await;
        }
    }
}

fn cold_starts(
    bin_dir: &Path,
    dynamo_port: u16,
    runs: usize,
    pause: Duration,
    logs: &Path,
) -> Vec<ColdResult> {
    let proxy = local::CountingProxy::start(dynamo_port);
    let probe = local::Probe::start();
    let vars: Vec<(String, String)> = [
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_string()),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME",
            "2026/01/01/[$LATEST]kvbench".to_string(),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand".to_string()),
        ("AWS_REGION", REGION.to_string()),
        ("AWS_DEFAULT_REGION", REGION.to_string()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN.to_string()),
        (
            "AWS_ENDPOINT_URL_DYNAMODB",
            format!("http://127.0.0.1:{}", proxy.port),
        ),
        // Where a credential or region lookup the environment should have made needless
        // would go; the probe counts any connection.
        (
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{}", probe.port),
        ),
        ("LAMBDA_TASK_ROOT", "/var/task".to_string()),
        ("TZ", ":UTC".to_string()),
        ("LANG", "en_US.UTF-8".to_string()),
        ("PATH", "/usr/local/bin:/usr/bin/:/bin".to_string()),
        ("_HANDLER", "bootstrap".to_string()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .chain(
        std::env::var("KV_BENCH_CHILD_ENV")
            .unwrap_or_default()
            .split(';')
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, value)| (name.trim().to_string(), value.to_string())),
    )
    .collect();
    let _ = std::fs::create_dir_all(logs);
    let mut results = Vec::new();
    for function in Function::ALL {
        let name = function.name();
        if !selected(name) {
            continue;
        }
        let binary = bin_dir.join(name);
        let mut result = ColdResult {
            function: name,
            binary_bytes: 0,
            runs: Vec::new(),
            error: None,
        };
        if !binary.is_file() {
            result.error = Some(format!(
                "{} missing: run `cargo build --release --bins`",
                binary.display()
            ));
            results.push(result);
            continue;
        }
        result.binary_bytes = cold::stripped_size(&binary);
        let env = cold::Environment {
            vars: vars.clone(),
            pause,
            proxy: &proxy,
            probe: &probe,
            log: &logs.join(format!("{name}.log")),
        };
        for run in 0..runs {
            let events: Vec<String> = (0..=warm_calls(function))
                .map(|index| cold_event(function, run, index).to_string())
                .collect();
            match cold::run_once(&binary, name, &events, &env) {
                Ok(measured) => result.runs.push(measured),
                Err(error) => {
                    result.error = Some(error);
                    break;
                }
            }
        }
        eprintln!(
            "[bench] cold start {name}: init {} first response {}",
            fmt_duration(result.init()),
            fmt_duration(result.first_response())
        );
        results.push(result);
    }
    results
}

fn fmt_duration(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.1}us")
    } else {
        format!("{:.2}ms", micros / 1000.0)
    }
}

fn fmt_units(units: f64) -> String {
    if units == units.round() {
        format!("{units:.0}")
    } else {
        format!("{units:.1}")
    }
}

fn fmt_count(count: f64) -> String {
    if (count - count.round()).abs() < 0.005 {
        format!("{count:.0}")
    } else {
        format!("{count:.2}")
    }
}

fn fmt_mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            widths[index] = widths[index].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let mut out = String::from("|");
        for (index, cell) in cells.iter().enumerate() {
            let pad = widths[index] - cell.chars().count();
            // Text left, numbers right.
            if index < 2 {
                let _ = write!(out, " {cell}{} |", " ".repeat(pad));
            } else {
                let _ = write!(out, " {}{cell} |", " ".repeat(pad));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('|');
    for (index, width) in widths.iter().enumerate() {
        let dashes = "-".repeat(*width);
        if index < 2 {
            let _ = write!(out, " {dashes} |");
        } else {
            let _ = write!(out, " {}: |", &dashes[1..]);
        }
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn measured_json(measured: &Measured) -> Value {
    json!({
        "iterations": measured.iterations,
        "p50_us": measured.p50.as_secs_f64() * 1e6,
        "p99_us": measured.p99.as_secs_f64() * 1e6,
        "requests": measured.requests,
        "round_trips": measured.round_trips,
        "operations": measured.operations,
        "rcu": measured.rcu,
        "wcu": measured.wcu,
        "wcu_reported_by_dynamodb_local": measured.local_wcu,
        "units": measured.parts.iter().map(|(what, units, kind)| json!({"what": what, "units": units, "kind": kind})).collect::<Vec<_>>(),
        "plain_writes_model_vs_dynamodb_local": measured.plain_writes.iter().map(|(operation, model, local)| json!({"operation": operation, "model": model, "dynamodb_local": local})).collect::<Vec<_>>(),
        "uncovered_written_items": measured.uncovered,
    })
}

struct Target {
    name: String,
    met: bool,
    measured: String,
}

/// A cost target: at most these requests, round trips and units per call.
struct Cost {
    name: &'static str,
    op: &'static str,
    variant: &'static str,
    requests: f64,
    round_trips: f64,
    wcu: f64,
    rcu: f64,
}

/// The write and read targets of the write path (steady state: the container has written to
/// the bucket before, so it knows the bucket's history).
const COSTS: [Cost; 7] = [
    Cost {
        name: "put 100 B, history 1, no max_bytes: 2 requests / 2 round trips, <= 4 WCU, <= 0.5 RCU",
        op: "put",
        variant: "100 B h1",
        requests: 2.0,
        round_trips: 2.0,
        wcu: 4.0,
        rcu: 0.5,
    },
    Cost {
        name: "put 100 B, history 64: <= 5 requests / 2 round trips, <= 6 WCU, <= 0.5 RCU",
        op: "put",
        variant: "100 B h64",
        requests: 5.0,
        round_trips: 2.0,
        wcu: 6.0,
        rcu: 0.5,
    },
    Cost {
        name: "put 4 KiB, history 1: 2 requests / 2 round trips, <= 8 WCU, <= 0.5 RCU",
        op: "put",
        variant: "4 KiB h1",
        requests: 2.0,
        round_trips: 2.0,
        wcu: 8.0,
        rcu: 0.5,
    },
    Cost {
        name: "put 4 KiB, history 1, LZ4: 2 requests / 2 round trips, <= 5 WCU, <= 0.5 RCU",
        op: "put",
        variant: "4 KiB h1 lz4",
        requests: 2.0,
        round_trips: 2.0,
        wcu: 5.0,
        rcu: 0.5,
    },
    Cost {
        name: "put 100 B, bucket with max_bytes: <= 3 requests / 2 round trips, <= 7 WCU, <= 0.5 RCU",
        op: "put",
        variant: "100 B h1 max_bytes",
        requests: 3.0,
        round_trips: 2.0,
        wcu: 7.0,
        rcu: 0.5,
    },
    Cost {
        name: "delete (100 B value, history 1): <= 3 requests / 2 round trips, <= 3 WCU, <= 0.5 RCU",
        op: "delete",
        variant: "100 B h1",
        requests: 3.0,
        round_trips: 2.0,
        wcu: 3.0,
        rcu: 0.5,
    },
    Cost {
        name: "delete (100 B value, history 64), held to the history-64 put's target: <= 5 requests / 2 round trips, <= 6 WCU, <= 0.5 RCU",
        op: "delete",
        variant: "100 B h64",
        requests: 5.0,
        round_trips: 2.0,
        wcu: 6.0,
        rcu: 0.5,
    },
];

/// "requests 2 (PutItem 1, UpdateItem 1), round trips 2, WCU 4, RCU 0".
fn cost_measured(measured: &Measured) -> String {
    let operations: Vec<String> = measured
        .operations
        .iter()
        .map(|(operation, count)| format!("{operation} {}", fmt_count(*count)))
        .collect();
    format!(
        "requests {} ({}), round trips {}, WCU {}, RCU {}",
        fmt_count(measured.requests),
        operations.join(", "),
        fmt_count(measured.round_trips),
        fmt_units(measured.wcu),
        fmt_units(measured.rcu)
    )
}

/// What two puts to different keys of one bucket both write, per kind of bucket.
#[derive(Debug, Clone)]
struct Shared {
    bucket_kind: &'static str,
    bucket: String,
    /// Items both puts wrote.
    both: Vec<String>,
    /// The bucket's counter item, which every write of the bucket updates by design.
    counter: String,
}

impl Shared {
    fn only_counter(&self) -> bool {
        self.both.iter().all(|item| *item == self.counter)
    }
}

/// A container's first write to a bucket, then its second.
#[derive(Debug, Clone)]
struct FirstWrite {
    bucket: String,
    first: (usize, usize, String),
    second: (usize, usize, String),
}

fn targets(
    rows: &[Row],
    cold: &[ColdResult],
    shared: &[Shared],
    first_write: Option<&FirstWrite>,
) -> Vec<Target> {
    let mut out = Vec::new();
    let find = |op: &'static str| rows.iter().filter(move |row| row.case.op == op);
    for cost in &COSTS {
        let Some(row) = find(cost.op).find(|row| row.case.variant == cost.variant) else {
            continue;
        };
        let h = &row.handler;
        let within = |value: f64, limit: f64| value <= limit + 1e-9;
        out.push(Target {
            name: cost.name.to_string(),
            met: within(h.requests, cost.requests)
                && within(h.round_trips, cost.round_trips)
                && within(h.wcu, cost.wcu)
                && within(h.rcu, cost.rcu)
                && h.uncovered == 0,
            measured: cost_measured(h),
        });
    }
    for row in find("get").filter(|row| row.case.value_bytes <= GET_TARGET_BYTES) {
        let h = &row.handler;
        let one_get_item = h.operations.len() == 1
            && h.operations
                .get("GetItem")
                .is_some_and(|count| (count - 1.0).abs() < 1e-9);
        out.push(Target {
            name: format!(
                "get {}: 1 GetItem / 1 round trip, 0 WCU, 1 RCU",
                row.case.variant
            ),
            met: one_get_item
                && (h.round_trips - 1.0).abs() < 1e-9
                && h.wcu == 0.0
                && h.rcu <= 1.0 + 1e-9,
            measured: format!(
                "{}; head item {}",
                cost_measured(h),
                row.read_item_bytes
                    .map(|bytes| format!("{bytes} B"))
                    .unwrap_or_else(|| "-".to_string())
            ),
        });
    }
    for row in find("get").filter(|row| row.case.value_bytes <= 4096) {
        let h = &row.handler;
        let ratio = row.ratio().unwrap_or(f64::NAN);
        out.push(Target {
            name: format!("get {}: handler / GetItem p50 <= 1.10", row.case.variant),
            met: ratio <= 1.10,
            measured: format!(
                "ratio {ratio:.2} (to the same GetItem of the head sent raw: {})",
                row.shadow
                    .as_ref()
                    .map(|shadow| format!("{:.2}", h.p50.as_secs_f64() / shadow.p50.as_secs_f64()))
                    .unwrap_or_else(|| "-".to_string())
            ),
        });
    }
    for found in shared {
        out.push(Target {
            name: format!(
                "puts to two keys of one bucket ({}): no shared item but the bucket's counter",
                found.bucket_kind
            ),
            met: found.only_counter(),
            measured: format!("both write {{{}}}", found.both.join(", ")),
        });
    }
    if let Some(first) = first_write {
        out.push(Target {
            name: format!(
                "a container's first put to a bucket ({}) and its second, history 1",
                first.bucket
            ),
            met: first.second.0 <= 2,
            measured: format!(
                "first: {} requests / {} round trips ({}); second: {} / {} ({})",
                first.first.0,
                first.first.1,
                first.first.2,
                first.second.0,
                first.second.1,
                first.second.2
            ),
        });
    }
    for row in find("get memory (cache hit)") {
        let h = &row.handler;
        out.push(Target {
            name: format!("memory get {}: 0 requests, < 20 us", row.case.variant),
            met: h.requests == 0.0 && h.p50 < Duration::from_micros(20),
            measured: format!(
                "{} requests, p50 {} p99 {}",
                fmt_count(h.requests),
                fmt_duration(h.p50),
                fmt_duration(h.p99)
            ),
        });
    }
    for row in find("key-list") {
        let h = &row.handler;
        out.push(Target {
            name: format!("key-list {}: 1 request per page", row.case.variant),
            met: h.requests <= 1.0,
            measured: format!(
                "{} requests in {} round trip(s)",
                fmt_count(h.requests),
                fmt_count(h.round_trips)
            ),
        });
    }
    for result in cold {
        if let Some(error) = &result.error {
            out.push(Target {
                name: format!("cold start {}", result.function),
                met: false,
                measured: error.clone(),
            });
            continue;
        }
        out.push(Target {
            name: format!(
                "cold start {}: init < 30 ms, no DynamoDB API call or metadata lookup in init",
                result.function
            ),
            met: result.init_max() < Duration::from_millis(30)
                && result.max_of(|run| run.api_calls_in_init) == 0
                && result.max_of(|run| run.metadata_lookups) == 0,
            measured: format!(
                "init p50 {} max {}, {} API calls and {} connections in init, {} metadata lookups",
                fmt_duration(result.init()),
                fmt_duration(result.init_max()),
                result.max_of(|run| run.api_calls_in_init),
                result.max_of(|run| run.connections_in_init),
                result.max_of(|run| run.metadata_lookups)
            ),
        });
        // A first call is one sample per process, so allow for DynamoDB Local's spread.
        let allowance_ms = (result.warm().as_secs_f64() * 1e3 * 0.1).max(1.0);
        out.push(Target {
            name: format!(
                "cold start {}: first call within max(1 ms, 10%) of a warm one",
                result.function
            ),
            met: result.penalty_ms() <= allowance_ms,
            measured: format!(
                "1st call {} vs warm {} (2nd call {}): penalty {:.2}ms; {} connections opened by the calls",
                fmt_duration(result.first_invocation()),
                fmt_duration(result.warm()),
                fmt_duration(result.second_invocation()),
                result.penalty_ms(),
                result.max_of(|run| run.connections_in_calls)
            ),
        });
        out.push(Target {
            name: format!("binary {}: stripped < 8 MB", result.function),
            met: result.binary_bytes < 8_000_000,
            measured: fmt_mb(result.binary_bytes),
        });
    }
    out
}

fn report(
    rows: &[Row],
    cold: &[ColdResult],
    shared: &[Shared],
    first_write: Option<&FirstWrite>,
    meta: &Value,
    json_path: &Path,
) {
    let header = [
        "op", "variant", "stored", "req", "trips", "RCU", "WCU", "p50", "p99", "baseline", "b.RCU",
        "b.WCU", "b.p50", "b.p99", "ratio",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let h = &row.handler;
            let b = row.baseline.as_ref();
            let dash = || "-".to_string();
            vec![
                row.case.op.to_string(),
                row.case.variant.clone(),
                row.case
                    .stored_bytes
                    .map(|bytes| bytes.to_string())
                    .unwrap_or_else(dash),
                fmt_count(h.requests),
                fmt_count(h.round_trips),
                fmt_units(h.rcu),
                fmt_units(h.wcu),
                fmt_duration(h.p50),
                fmt_duration(h.p99),
                row.case.baseline.name().to_string(),
                b.map(|b| fmt_units(b.rcu)).unwrap_or_else(dash),
                b.map(|b| fmt_units(b.wcu)).unwrap_or_else(dash),
                b.map(|b| fmt_duration(b.p50)).unwrap_or_else(dash),
                b.map(|b| fmt_duration(b.p99)).unwrap_or_else(dash),
                row.ratio()
                    .map(|ratio| format!("{ratio:.2}"))
                    .unwrap_or_else(dash),
            ]
        })
        .collect();
    println!(
        "\nIn process: kv::lambda::dispatch::handle vs the raw SDK call (ratio = p50 / baseline p50)\n"
    );
    print!("{}", table(&header, &cells));

    println!(
        "\nWhere the units go, request by request (writes priced by AWS's model: 1 WCU per started \
         KB outside a transaction, 2 inside, plus 1 per KB of each index entry that changes; reads \
         as DynamoDB Local reports them; steady state)\n"
    );
    for row in rows.iter().filter(|row| {
        matches!(row.case.op, "put" | "delete")
            && row.case.value_bytes <= 4096
            && (row.case.compression == Some(false) || row.case.variant.contains("4 KiB"))
    }) {
        println!(
            "{} {}: {} RCU + {} WCU",
            row.case.op,
            row.case.variant,
            fmt_units(row.handler.rcu),
            fmt_units(row.handler.wcu),
        );
        for (what, units, kind) in &row.handler.parts {
            println!("    {what}: {} {kind}", fmt_units(*units));
        }
        let checks: Vec<String> = row
            .handler
            .plain_writes
            .iter()
            .map(|(operation, model, local)| {
                format!(
                    "{operation} {} ({})",
                    fmt_units(*local),
                    if (model - local).abs() < 1e-9 {
                        "= model".to_string()
                    } else {
                        format!("model {}", fmt_units(*model))
                    }
                )
            })
            .collect();
        if !checks.is_empty() {
            println!(
                "    DynamoDB Local's own figure for the plain writes: {}",
                checks.join(", ")
            );
        }
        if row.handler.uncovered > 0 {
            println!(
                "    ({} written items were outside the snapshots: priced as absent)",
                row.handler.uncovered
            );
        }
    }

    if !shared.is_empty() || first_write.is_some() {
        println!("\nItems written by two puts to different keys of one bucket (from the requests' keys)\n");
        for found in shared {
            println!(
                "{} ({}): both write {{{}}}",
                found.bucket_kind,
                found.bucket,
                found.both.join(", ")
            );
        }
        if let Some(first) = first_write {
            println!(
                "\nA container's first put to {}: {} requests / {} round trips ({}); its second: {} / {} ({})",
                first.bucket,
                first.first.0,
                first.first.1,
                first.first.2,
                first.second.0,
                first.second.1,
                first.second.2
            );
        }
    }

    let gets: Vec<&Row> = rows.iter().filter(|row| row.shadow.is_some()).collect();
    if !gets.is_empty() {
        println!(
            "\nget: the handler's time = its own request sent raw + the handler's code (p50)\n"
        );
        let header = [
            "op",
            "variant",
            "handler",
            "head item",
            "same GetItem raw",
            "GetItem (floor)",
            "handler code",
            "head vs plain item",
        ];
        let cells: Vec<Vec<String>> = gets
            .iter()
            .map(|row| {
                let handler = row.handler.p50.as_secs_f64();
                let shadow = row
                    .shadow
                    .as_ref()
                    .map(|m| m.p50.as_secs_f64())
                    .unwrap_or(0.0);
                let floor = row
                    .baseline
                    .as_ref()
                    .map(|m| m.p50.as_secs_f64())
                    .unwrap_or(0.0);
                vec![
                    row.case.op.to_string(),
                    row.case.variant.clone(),
                    fmt_duration(row.handler.p50),
                    row.read_item_bytes
                        .map(|bytes| format!("{bytes} B"))
                        .unwrap_or_else(|| "-".to_string()),
                    fmt_duration(Duration::from_secs_f64(shadow)),
                    fmt_duration(Duration::from_secs_f64(floor)),
                    format!("{:+.0}us", (handler - shadow) * 1e6),
                    format!("{:+.0}us", (shadow - floor) * 1e6),
                ]
            })
            .collect();
        print!("{}", table(&header, &cells));
    }

    if !cold.is_empty() {
        let header = [
            "function",
            "stripped",
            "init p50",
            "init max",
            "1st response",
            "1st call",
            "2nd call",
            "warm call",
            "penalty",
            "init: API calls",
            "init: conns",
            "calls: conns",
            "IMDS",
        ];
        let cells: Vec<Vec<String>> = cold
            .iter()
            .map(|result| {
                if let Some(error) = &result.error {
                    let mut row = vec![result.function.to_string(), error.clone()];
                    row.resize(header.len(), "-".to_string());
                    return row;
                }
                vec![
                    result.function.to_string(),
                    fmt_mb(result.binary_bytes),
                    fmt_duration(result.init()),
                    fmt_duration(result.init_max()),
                    fmt_duration(result.first_response()),
                    fmt_duration(result.first_invocation()),
                    fmt_duration(result.second_invocation()),
                    fmt_duration(result.warm()),
                    format!("{:.2}ms", result.penalty_ms()),
                    result.max_of(|run| run.api_calls_in_init).to_string(),
                    result.max_of(|run| run.connections_in_init).to_string(),
                    result.max_of(|run| run.connections_in_calls).to_string(),
                    result.max_of(|run| run.metadata_lookups).to_string(),
                ]
            })
            .collect();
        println!(
            "\nCold starts: release binaries against a local Runtime API ({} processes each, p50; \
             penalty = 1st call - warm call, each call after {} ms idle; the 2nd call, sampled \
             once per process like the 1st, shows the spread of such samples)\n",
            cold.first().map(|r| r.runs.len()).unwrap_or(0),
            meta["cold_pause_ms"]
        );
        print!("{}", table(&header, &cells));
    }

    let checks = targets(rows, cold, shared, first_write);
    println!("\nTargets\n");
    for check in &checks {
        println!(
            "[{}] {}: {}",
            if check.met { "met" } else { "GAP" },
            check.name,
            check.measured
        );
    }

    let document = json!({
        "meta": meta,
        "rows": rows.iter().map(|row| json!({
            "op": row.case.op,
            "variant": row.case.variant,
            "value_bytes": row.case.value_bytes,
            "stored_bytes": row.case.stored_bytes,
            "history": row.case.history,
            "compression": row.case.compression,
            "handler": measured_json(&row.handler),
            "baseline": row.baseline.as_ref().map(|b| {
                let mut value = measured_json(b);
                value["call"] = json!(row.case.baseline.name());
                value
            }),
            "ratio_p50": row.ratio(),
            "read_item_bytes": row.read_item_bytes,
            "same_request_raw": row.shadow.as_ref().map(|shadow| json!({
                "call": row.case.shadow.name(),
                "iterations": shadow.iterations,
                "p50_us": shadow.p50.as_secs_f64() * 1e6,
                "p99_us": shadow.p99.as_secs_f64() * 1e6,
            })),
        })).collect::<Vec<_>>(),
        "cold_start": cold.iter().map(|result| json!({
            "function": result.function,
            "stripped_bytes": result.binary_bytes,
            "error": result.error,
            "processes": result.runs.len(),
            "init_ms_p50": result.init().as_secs_f64() * 1e3,
            "init_ms_max": result.init_max().as_secs_f64() * 1e3,
            "first_response_ms_p50": result.first_response().as_secs_f64() * 1e3,
            "first_invocation_ms_p50": result.first_invocation().as_secs_f64() * 1e3,
            "warm_invocation_ms_p50": result.warm().as_secs_f64() * 1e3,
            "first_request_penalty_ms": result.penalty_ms(),
            "second_invocation_ms_p50": result.second_invocation().as_secs_f64() * 1e3,
            "dynamodb_api_calls_in_init": result.max_of(|run| run.api_calls_in_init),
            "dynamodb_other_requests_in_init": result.max_of(|run| run.other_requests_in_init),
            "dynamodb_connections_in_init": result.max_of(|run| run.connections_in_init),
            "dynamodb_connections_in_calls": result.max_of(|run| run.connections_in_calls),
            "metadata_lookups": result.max_of(|run| run.metadata_lookups),
            "runs": result.runs.iter().map(|run| json!({
                "init_ms": run.init.as_secs_f64() * 1e3,
                "first_response_ms": run.first_response.as_secs_f64() * 1e3,
                "first_invocation_ms": run.first_invocation.as_secs_f64() * 1e3,
                "warm_ms": run.warm.iter().map(|d| d.as_secs_f64() * 1e3).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "shared_items": shared.iter().map(|found| json!({
            "bucket_kind": found.bucket_kind,
            "bucket": found.bucket,
            "written_by_both": found.both,
        })).collect::<Vec<_>>(),
        "targets": checks.iter().map(|check| json!({
            "target": check.name, "met": check.met, "measured": check.measured,
        })).collect::<Vec<_>>(),
    });
    match serde_json::to_string_pretty(&document)
        .map_err(|error| error.to_string())
        .and_then(|text| std::fs::write(json_path, text).map_err(|error| error.to_string()))
    {
        Ok(()) => println!("\nJSON: {}", json_path.display()),
        Err(error) => eprintln!("could not write {}: {error}", json_path.display()),
    }
}

fn main() {
    let root = kv_dev::root();
    let exe = std::env::current_exe().expect("own path");
    let own_dir = exe.parent().expect("binary folder").to_path_buf();
    let bin_dir = std::env::var("KV_BENCH_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| own_dir.clone());
    let target_dir = own_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.join("target"));
    let json_path = std::env::var("KV_BENCH_JSON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| target_dir.join("bench.json"));
    let row_budget = Duration::from_secs_f64(env_number("KV_BENCH_ROW_SECONDS", 1.5));
    let cold_runs = env_number("KV_BENCH_COLD_RUNS", 9.0) as usize;
    let cold_pause = Duration::from_secs_f64(env_number("KV_BENCH_COLD_PAUSE_MS", 20.0) / 1e3);

    eprintln!("[bench] starting DynamoDB Local");
    let dynamo = local::DynamoLocal::start(&root);
    // The in-process client reads the same environment a function does; set it before any
    // thread starts.
    for (name, value) in [
        ("AWS_REGION", REGION.to_string()),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
        ("AWS_SESSION_TOKEN", SESSION_TOKEN.to_string()),
        ("AWS_ENDPOINT_URL_DYNAMODB", dynamo.endpoint()),
    ] {
        std::env::set_var(name, value);
    }
    for name in [
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "KV_BUCKETS_TABLE",
        "KV_ITEMS_TABLE",
    ] {
        std::env::remove_var(name);
    }
    // Handlers log a line per call in Lambda; format them here too, into nothing.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::sink)
        .with_max_level(tracing::Level::INFO)
        .try_init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (rows, shared, first, bench) = runtime.block_on(async {
        let meter = kv_dev::meter::Meter::new();
        let capture = units::Capture::default();
        let config = kv::store::client::config_from_env()
            .await
            .interceptor(meter.clone())
            .interceptor(capture.clone())
            .build();
        let client = aws_sdk_dynamodb::Client::from_conf(config);
        let observer =
            aws_sdk_dynamodb::Client::from_conf(kv::store::client::config_from_env().await.build());
        let settings = Settings::with_tables(
            kv::model::config::DEFAULT_BUCKETS_TABLE,
            kv::model::config::DEFAULT_ITEMS_TABLE,
        );
        kv::store::schema::ensure_tables(&observer, &settings)
            .await
            .expect("create the KV tables");
        create_plain_table(&observer).await;
        let memory_settings = Settings {
            memory_cache_staleness_ms: 3_600_000,
            ..settings.clone()
        };
        let bench = Bench {
            kv: Kv::new(client.clone(), &settings),
            memory_kv: Kv::new(client.clone(), &memory_settings),
            client,
            observer,
            meter,
            capture,
            plain_table: PLAIN_TABLE.to_string(),
            buckets_table: settings.buckets_table.clone(),
            items_table: settings.items_table.clone(),
            indexes: units::item_indexes(),
            row_budget,
            settings: settings.clone(),
        };
        eprintln!("[bench] warming up DynamoDB Local");
        warm_up(&bench).await;
        let cases = if row_budget.is_zero() {
            Vec::new()
        } else {
            eprintln!("[bench] preparing data");
            cases(&bench).await
        };
        let mut rows = Vec::new();
        for case in cases.into_iter().filter(|case| selected(case.op)) {
            let label = format!("{} {}", case.op, case.variant);
            let row = bench.run(case).await;
            eprintln!(
                "[bench] {label}: {} req, p50 {}",
                fmt_count(row.handler.requests),
                fmt_duration(row.handler.p50)
            );
            rows.push(row);
        }
        let (shared, first) = if !row_budget.is_zero() && selected("put") {
            eprintln!("[bench] items two puts share; a container's first put");
            (shared_items(&bench).await, Some(first_write(&bench).await))
        } else {
            (Vec::new(), None)
        };
        if cold_runs > 0 {
            prepare_cold(&bench, cold_runs).await;
        }
        (rows, shared, first, bench)
    });

    let cold = if cold_runs > 0 {
        cold_starts(
            &bin_dir,
            dynamo.port,
            cold_runs,
            cold_pause,
            &target_dir.join("bench-logs"),
        )
    } else {
        Vec::new()
    };
    drop(bench);
    drop(runtime);
    let meta = json!({
        "command": "make bench",
        "dynamodb_local": "in memory, -sharedDb, on loopback",
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "row_seconds": row_budget.as_secs_f64(),
        "cold_runs": cold_runs,
        "cold_pause_ms": cold_pause.as_secs_f64() * 1e3,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    });
    report(&rows, &cold, &shared, first.as_ref(), &meta, &json_path);
    drop(dynamo);
    if selected("consumers") {
        let seconds = env_number("KV_BENCH_CONSUMER_SECONDS", 4.0) as u64;
        eprintln!("[bench] the stream consumers at 1, 10 and 100 puts/s per bucket");
        consumer_report(&consumers::measure(&[1, 10, 100], seconds.max(1)));
    }
}

/// The stream consumers' cost per put and per bucket per batch (`consumers.rs`).
fn consumer_report(rows: &[consumers::ConsumerRow]) {
    let per = |value: f64, count: usize| {
        if count == 0 {
            "-".to_string()
        } else {
            format!("{:.3}", value / count as f64)
        }
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let (stream, replicate) = (&row.stream, &row.replicate);
            vec![
                row.rate.to_string(),
                format!("{:.1}", row.reached),
                row.puts.to_string(),
                format!("{}/{}", stream.batches, replicate.batches),
                per(stream.write_units + replicate.write_units, row.puts),
                per(stream.read_units + replicate.read_units, row.puts),
                per(stream.requests as f64, stream.bucket_batches),
                per(replicate.requests as f64, replicate.bucket_batches),
            ]
        })
        .collect();
    println!();
    println!("Stream consumers: 100 B puts over 10 buckets (history 1, nothing to copy, republish or wake)");
    println!(
        "{}",
        table(
            &[
                "puts/s/bucket",
                "reached",
                "puts",
                "batches s/r",
                "WCU/put",
                "RCU/put",
                "stream req/bucket/batch",
                "replicate req/bucket/batch",
            ],
            &cells,
        )
    );
    println!("Units by AWS's model (2 WCU per transaction item, items under 1 KB; 1 RCU per consistent read).");
    for row in rows {
        let listed = |spent: &consumers::Spent| {
            spent
                .operations
                .iter()
                .map(|(operation, count)| format!("{operation} {count}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "  {} puts/s/bucket: kv-items-stream {}; kv-items-replicate {}",
            row.rate,
            listed(&row.stream),
            listed(&row.replicate)
        );
    }
}
