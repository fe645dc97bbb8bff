//! The items table's stream, delivered to this test process's functions as Lambda would do it:
//! `scripts/streams.py` (what `make streams` runs) polls DynamoDB Local's stream and invokes
//! `kv-items-stream` (or, with `follow_replication`, `kv-items-replicate`) through a small
//! Lambda Invoke API served here, which runs the handler in-process. `settled()` waits until
//! everything written before it has been counted.

use super::{endpoint, settings, spawn_owned, BUCKETS_TABLE, ITEMS_TABLE};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The contract's bound: counts include a write within 5 s of it.
pub const COUNTS_WITHIN: Duration = Duration::from_secs(5);

const FENCE_BUCKET: &str = "stream-fence";
const FENCE_KEY: &str = "fence";

struct Pump {
    kv: kv::Kv,
    runtime: tokio::runtime::Runtime,
    /// The highest revision of the fence key whose stream record the consumer has processed.
    fence_seen: AtomicU64,
    /// Every batch delivered and processed, in order, for tests that deliver them again.
    delivered: Mutex<Vec<Value>>,
    /// The stream runner's process, killed when its DynamoDB Local is stopped.
    runner: OnceLock<u32>,
    /// Batches answered with a partial batch failure.
    failed_batches: AtomicU64,
}

/// Starts following the stream of the DynamoDB Local at `endpoint`, if not yet.
pub fn follow(endpoint: &str) {
    pump(endpoint);
}

/// Starts delivering the stream of the DynamoDB Local at `endpoint` to kv-items-replicate,
/// whose container puts its events on EventBridge at `eventbridge` (moto, or a proxy in front
/// of it). One per endpoint: the first call's `eventbridge` stays.
pub fn follow_replication(endpoint: &str, eventbridge: &str) {
    follow_replication_with(endpoint, eventbridge, None);
}

/// `follow_replication` with a backfill budget per invocation other than the default.
pub fn follow_replication_with(endpoint: &str, eventbridge: &str, budget: Option<Duration>) {
    let eventbridge = eventbridge.to_string();
    pump_of(endpoint, "kv-items-replicate", move |kv| {
        kv.bus = Some(kv::bus::EventBus::new(
            crate::moto::Moto::eventbridge_client(&eventbridge),
            kv::model::config::DEFAULT_EVENT_BUS,
        ));
        if let Some(budget) = budget {
            kv.purge_budget = budget;
        }
    });
}

/// `follow_replication` whose container also resumes waiting flows through the Step Functions
/// task-token API at `sfn` (kv-flow's engine in the tests), its events going to the shared moto.
pub fn follow_waking(endpoint: &str, sfn: &str) {
    let (eventbridge, sfn) = (
        crate::moto::Moto::shared().endpoint.clone(),
        sfn.to_string(),
    );
    pump_of(endpoint, "kv-items-replicate", move |kv| {
        kv.bus = Some(kv::bus::EventBus::new(
            crate::moto::Moto::eventbridge_client(&eventbridge),
            kv::model::config::DEFAULT_EVENT_BUS,
        ));
        kv.tokens = Some(kv::tokens::TaskTokens::new(crate::moto::Moto::sfn_client(
            &sfn,
        )));
    });
}

/// Starts delivering the stream of the DynamoDB Local at `endpoint` to `function` (for example
/// `kv-items-stream`) in a container whose client records every request in `meter`: what the
/// stream's consumers cost, for the bench. Call it before anything else follows that stream.
pub fn follow_metered(endpoint: &str, function: &'static str, meter: crate::meter::Meter) {
    let endpoint_of_client = endpoint.to_string();
    pump_of(endpoint, function, move |kv| {
        let config = super::config_for(&endpoint_of_client)
            .interceptor(meter)
            .build();
        kv.store = kv::store::Store::new(aws_sdk_dynamodb::Client::from_conf(config), &settings());
    });
}

/// How many batches the pump of `endpoint` has delivered to `function`.
pub fn batches_delivered(endpoint: &str, function: &'static str) -> usize {
    pump_of(endpoint, function, |_| {})
        .delivered
        .lock()
        .map(|delivered| delivered.len())
        .unwrap_or(0)
}

/// How many batches kv-items-replicate on `endpoint` answered with a partial batch failure.
pub fn replication_failures_at(endpoint: &str) -> u64 {
    pump_of(endpoint, "kv-items-replicate", |_| {})
        .failed_batches
        .load(Ordering::SeqCst)
}

/// Every batch delivered so far to kv-items-replicate on `endpoint`, in order.
pub fn replication_delivered_at(endpoint: &str) -> Vec<Value> {
    pump_of(endpoint, "kv-items-replicate", |_| {})
        .delivered
        .lock()
        .map(|delivered| delivered.clone())
        .unwrap_or_default()
}

/// The counts pump of the DynamoDB Local at `endpoint`, started on first use.
fn pump(endpoint: &str) -> &'static Pump {
    pump_of(endpoint, "kv-items-stream", |_| {})
}

/// The pump delivering `endpoint`'s stream to `function`, started on first use with a
/// container that `equip` completes.
fn pump_of(
    endpoint: &str,
    function: &'static str,
    equip: impl FnOnce(&mut kv::Kv) + Send + 'static,
) -> &'static Pump {
    let mut pumps = pumps().lock().expect("pumps");
    let endpoint = endpoint.to_string();
    pumps
        .entry((endpoint.clone(), function))
        .or_insert_with(|| {
            // Started from a plain thread: tests call this from inside their own tokio runtime.
            std::thread::spawn(move || start(endpoint, function, equip))
                .join()
                .expect("stream pump started")
        })
}

type Pumps = Mutex<HashMap<(String, &'static str), &'static Pump>>;

fn pumps() -> &'static Pumps {
    static PUMPS: OnceLock<Pumps> = OnceLock::new();
    PUMPS.get_or_init(Default::default)
}

/// Stops the stream runners of the DynamoDB Local at `endpoint`, which is going away. Their
/// in-process containers stay (a few idle threads), as a test may still hold one.
pub fn stop_at(endpoint: &str) {
    let Ok(mut pumps) = pumps().lock() else {
        return;
    };
    pumps.retain(|(of, _), pump| {
        if of != endpoint {
            return true;
        }
        if let Some(&pid) = pump.runner.get() {
            super::kill(pid);
        }
        false
    });
}

fn start(
    endpoint: String,
    function: &'static str,
    equip: impl FnOnce(&mut kv::Kv),
) -> &'static Pump {
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("pump runtime");
        // Built inside the pump's own runtime: a client first used from a test's runtime would
        // keep timers and connections on it, which end with that test.
        let kv = runtime.block_on(async {
            let mut kv = kv::Kv::new(super::client_for(&endpoint), &settings());
            equip(&mut kv);
            kv
        });
        let pump: &'static Pump = Box::leak(Box::new(Pump {
            kv,
            runtime,
            fence_seen: AtomicU64::new(0),
            delivered: Mutex::new(Vec::new()),
            runner: OnceLock::new(),
            failed_batches: AtomicU64::new(0),
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("invoke API listener");
        let port = listener.local_addr().expect("address").port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve(pump, stream));
            }
        });
        let root = crate::root();
        let port_of_dynamodb = endpoint.rsplit(':').next().unwrap_or_default().to_string();
        let log = std::env::temp_dir().join(format!(
            "kv-stream-pump-{}-{port_of_dynamodb}-{function}.log",
            std::process::id()
        ));
        let log = std::fs::File::create(&log).expect("pump log");
        let mut runner = Command::new("python3");
        runner
            .arg(root.join("scripts/streams.py"))
            .args(["--only", function, "--poll-interval", "0.05"])
            .env("AWS_ENDPOINT_URL_DYNAMODB", &endpoint)
            .env(
                "AWS_ENDPOINT_URL_LAMBDA",
                format!("http://127.0.0.1:{port}"),
            )
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("KV_BUCKETS_TABLE", BUCKETS_TABLE)
            .env("KV_ITEMS_TABLE", ITEMS_TABLE)
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("pump log"))
            .stderr(log);
        // The runner dies with the thread that started it (PR_SET_PDEATHSIG), so that thread
        // lives as long as the test process, waiting on it.
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut child = spawn_owned(runner);
            let _ = ready.send(child.id());
            let _ = child.wait();
        });
        let _ = pump
            .runner
            .set(started.recv().expect("stream runner thread"));
        pump
    }
}

/// One Invoke API request: `POST /2015-03-31/functions/NAME/invocations`.
fn serve(pump: &'static Pump, stream: TcpStream) {
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(stream) => stream,
        Err(_) => return,
    });
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let name = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|path| path.strip_prefix("/2015-03-31/functions/"))
        .and_then(|path| path.strip_suffix("/invocations"))
        .unwrap_or_default();
    let function = kv::Function::ALL
        .into_iter()
        .find(|function| function.name() == name);
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, error_header, answer) = match function {
        None => (
            404,
            false,
            json!({"Type": "User", "message": format!("no function {name}")}),
        ),
        Some(function) => {
            let outcome = pump.runtime.block_on(kv::lambda::dispatch::handle(
                &pump.kv,
                function,
                payload.clone(),
            ));
            match outcome {
                Ok(result) => {
                    note_fence(pump, &payload);
                    if result["batchItemFailures"]
                        .as_array()
                        .is_some_and(|failures| !failures.is_empty())
                    {
                        pump.failed_batches.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Ok(mut delivered) = pump.delivered.lock() {
                        delivered.push(payload.clone());
                    }
                    (200, false, result)
                }
                Err(error) => {
                    let diagnostic: lambda_runtime::Diagnostic = error.into();
                    (
                        200,
                        true,
                        json!({"errorType": diagnostic.error_type, "errorMessage": diagnostic.error_message}),
                    )
                }
            }
        }
    };
    let text = answer.to_string();
    let mut writer = stream;
    let _ = write!(
        writer,
        "HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n{text}",
        text.len(),
        if error_header {
            "X-Amz-Function-Error: Unhandled\r\n"
        } else {
            ""
        },
    );
}

/// Remembers the fence key's revision when a delivered batch held it.
fn note_fence(pump: &Pump, payload: &Value) {
    let fence = kv::store::items::key_pk(FENCE_BUCKET, FENCE_KEY);
    for record in payload["Records"].as_array().into_iter().flatten() {
        let image = &record["dynamodb"]["NewImage"];
        if image["pk"]["S"] == fence.as_str() {
            if let Some(revision) = image["cur"]["N"].as_str().and_then(|n| n.parse().ok()) {
                pump.fence_seen.fetch_max(revision, Ordering::SeqCst);
            }
        }
    }
}

/// Waits until every write made before the call has reached the counts through the stream:
/// a write to a fence key, then its stream record, seen processed. Fails the test past the
/// contract's 5 s.
pub async fn settled() {
    settled_at(endpoint()).await
}

/// `settled`, allowing the stream longer than the contract's 5 s: for tests that saturate
/// DynamoDB Local (and the two cores it shares with them) with writers, where the consumer's
/// requests queue behind theirs; those tests check the counts, not how fresh they are.
pub async fn settled_within(bound: Duration) {
    settle(endpoint(), bound).await
}

/// `settled` for another DynamoDB Local than this binary's own.
pub async fn settled_at(endpoint: &str) {
    settle(endpoint, COUNTS_WITHIN).await
}

/// `settled_at`, allowing the stream `bound`: for a bench that writes faster than DynamoDB
/// Local's stream is read.
pub async fn settled_at_within(endpoint: &str, bound: Duration) {
    settle(endpoint, bound).await
}

async fn settle(endpoint: &str, bound: Duration) {
    let pump = pump(endpoint);
    let kv = kv::Kv::new(super::client_for(endpoint), &settings());
    let created = super::call(
        &kv,
        kv::Function::BucketCreate,
        json!({"bucket": FENCE_BUCKET}),
    )
    .await;
    assert_eq!(super::status(&created), 200, "{created}");
    let revision = super::put(&kv, FENCE_BUCKET, FENCE_KEY, json!("fence")).await;
    let started = Instant::now();
    while pump.fence_seen.load(Ordering::SeqCst) < revision {
        assert!(
            started.elapsed() < bound,
            "the stream did not deliver a write within {bound:?} (see the pump's log in the temp folder)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every batch the pump of the DynamoDB Local at `endpoint` has delivered so far, in order.
pub fn delivered_at(endpoint: &str) -> Vec<Value> {
    pump(endpoint)
        .delivered
        .lock()
        .map(|delivered| delivered.clone())
        .unwrap_or_default()
}
