//! `make streams` (scripts/streams.py) for real: DynamoDB Local, the kv-bucket-purge binary
//! under `cargo lambda watch --only-lambda-apis`, and the runner between them.
//!
//! A bucket of a few hundred keys is deleted by a container with a 1 ms purge budget, so
//! kv-bucket-delete hands the whole purge on at once; the runner must then deliver the buckets
//! table's stream to kv-bucket-purge, round after round, until the bucket is gone. The
//! runner's own logic (filters, batching, retries, bisection, partial failures, shards,
//! schedules) is unit-tested in scripts/test_streams.py, which `make test` runs.

use kv::store::items;
use kv::Function::{BucketCreate, BucketDelete};
use kv::Kv;
use kv_dev::sam;
use kv_dev::support::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The budget of each kv-bucket-purge invocation: 1 ms, so each round purges the one page an
/// invocation always does, and the purge takes several rounds through the stream.
const PURGE_ROUND_BUDGET_MS: &str = "1";
const KEYS: usize = 300;

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The runner's JSON lines so far.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<Value>>>);

impl Lines {
    fn follow(&self, child: &mut Child) {
        let stdout = child.stdout.take().expect("runner stdout");
        let lines = self.0.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let parsed = serde_json::from_str(&line)
                    .unwrap_or_else(|_| panic!("the runner wrote a line that is not JSON: {line}"));
                lines.lock().unwrap().push(parsed);
            }
        });
    }

    fn of(&self, event: &str) -> Vec<Value> {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .filter(|line| line["event"] == event)
            .cloned()
            .collect()
    }

    fn all(&self) -> String {
        let lines = self.0.lock().unwrap();
        lines
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn runner(endpoint: &str, invoke_port: u16) -> Command {
    let mut command = Command::new("python3");
    command
        .current_dir(sam::root())
        .args([
            "scripts/streams.py",
            "--only",
            "kv-bucket-purge",
            "--poll-interval",
            "0.1",
        ])
        .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        .env(
            "AWS_ENDPOINT_URL_LAMBDA",
            format!("http://127.0.0.1:{invoke_port}"),
        )
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("KV_BUCKETS_TABLE", BUCKETS_TABLE)
        .env("KV_ITEMS_TABLE", ITEMS_TABLE)
        .stdout(Stdio::piped());
    command
}

async fn bucket_item_exists(bucket: &str) -> bool {
    client()
        .get_item()
        .table_name(BUCKETS_TABLE)
        .key(items::BUCKET, items::s(bucket))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_bucket_delete_is_finished_through_the_stream() {
    let started = Instant::now();
    let endpoint = endpoint();

    // The purger under cargo lambda watch's runtime API, as Lambda would run it.
    let invoke_port = free_port();
    let mut watch = Command::new("cargo-lambda");
    watch
        .current_dir(sam::root())
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
        ])
        .args(["--invoke-port", &invoke_port.to_string()])
        .env("KV_PURGE_BUDGET_MS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut watch = spawn_owned(watch);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", invoke_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut purger = Command::new(function_binary("kv-bucket-purge"));
    purger
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{invoke_port}/.rt/kv-bucket-purge"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "kv-bucket-purge")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "local")
        .env("AWS_SECRET_ACCESS_KEY", "local")
        .env("KV_BUCKETS_TABLE", BUCKETS_TABLE)
        .env("KV_ITEMS_TABLE", ITEMS_TABLE)
        .env("KV_PURGE_BUDGET_MS", PURGE_ROUND_BUDGET_MS)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut purger = spawn_owned(purger);

    let mut runner = spawn_owned(runner(endpoint, invoke_port));
    let lines = Lines::default();
    lines.follow(&mut runner);

    // A bucket with a few hundred keys, written by 6 containers at once.
    let kv = container();
    let name = bucket(&kv, "streams", json!({})).await;
    let mut writers = Vec::new();
    for writer in 0..6 {
        let name = name.clone();
        writers.push(tokio::spawn(async move {
            let kv = container();
            for index in (writer..KEYS).step_by(6) {
                put(&kv, &name, &format!("k.{index}"), json!("value")).await;
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert!(items_left(&name).await > KEYS);

    // kv-bucket-delete with no time to purge: it marks the bucket and hands everything on.
    let hurried = Kv::new(
        client(),
        &kv::model::config::Settings {
            purge_budget_ms: 1,
            ..settings()
        },
    );
    let deleted = call(&hurried, BucketDelete, json!({"bucket": name})).await;
    assert_eq!(status(&deleted), 200, "{deleted}");
    assert_eq!(deleted["body"]["purged"], false, "{deleted}");
    let handed_on = Instant::now();

    // The runner delivers the bucket item's changes to kv-bucket-purge until it is gone.
    let deadline = Instant::now() + Duration::from_secs(90);
    while bucket_item_exists(&name).await {
        assert!(
            Instant::now() < deadline,
            "the purge did not finish through the stream; runner said:\n{}",
            lines.all()
        );
        assert!(
            runner.try_wait().unwrap().is_none(),
            "the runner exited:\n{}",
            lines.all()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let finished_in = handed_on.elapsed();
    assert_eq!(items_left(&name).await, 0, "items of {name} left behind");
    let again = call(&kv, BucketCreate, json!({"bucket": name})).await;
    assert_eq!(status(&again), 200, "{again}");

    // Several rounds, each an invocation of kv-bucket-purge with records of that bucket only
    // (the filter leaves out the bucket's creation and the re-creation).
    let deliveries: Vec<Value> = lines
        .of("delivery")
        .into_iter()
        .filter(|line| line["function"] == "kv-bucket-purge")
        .collect();
    let ok = deliveries
        .iter()
        .filter(|line| line["outcome"] == "ok")
        .count();
    assert!(
        ok >= 2,
        "expected several purge rounds, got:\n{}",
        lines.all()
    );
    assert!(
        deliveries.iter().all(|line| line["outcome"] == "ok"
            && line["records"]
                .as_u64()
                .is_some_and(|n| (1..=10).contains(&n))),
        "{}",
        lines.all()
    );
    assert!(lines.of("on-failure").is_empty(), "{}", lines.all());
    assert!(lines.of("error").is_empty(), "{}", lines.all());

    // SIGTERM: the runner stops at once and cleanly.
    let pid = runner.id() as libc::pid_t;
    // SAFETY: signalling a child process this test started and has not yet reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = runner.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "the runner ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "the runner exited with {exit}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(lines.of("stopped").len(), 1, "{}", lines.all());

    stop(&mut purger);
    stop(&mut watch);
    eprintln!(
        "{KEYS} keys purged in {ok} rounds through the stream in {:.1} s (test {:.1} s)",
        finished_in.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The runner names the tables as the functions do when the environment does not
/// (kv::model::config's defaults), and maps each stream event to a function binary that exists.
#[test]
fn the_runner_reads_the_templates_stream_events() {
    let output = Command::new("python3")
        .current_dir(sam::root())
        .args(["scripts/streams.py", "--plan"])
        .env_remove("KV_BUCKETS_TABLE")
        .env_remove("KV_ITEMS_TABLE")
        .output()
        .expect("python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let plan: Value = serde_json::from_slice(&output.stdout).expect("the plan is JSON");
    let streams = plan["streams"].as_array().expect("streams");
    assert!(!streams.is_empty());
    for stream in streams {
        let function = stream["function"].as_str().unwrap();
        assert!(
            sam::function_named(function).is_some(),
            "{function} is not a KV function"
        );
        let table = stream["table"].as_str().unwrap();
        assert!(
            [
                kv::model::config::DEFAULT_BUCKETS_TABLE,
                kv::model::config::DEFAULT_ITEMS_TABLE
            ]
            .contains(&table),
            "{table}"
        );
    }
    let purge = streams
        .iter()
        .find(|stream| stream["function"] == "kv-bucket-purge")
        .expect("kv-bucket-purge is fed by a stream");
    assert_eq!(purge["table"], kv::model::config::DEFAULT_BUCKETS_TABLE);
}
