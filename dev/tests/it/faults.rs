//! Fault injection: several Lambda containers writing at once while DynamoDB misbehaves, through
//! a proxy on loopback (tests/support/fault_proxy.rs) or a DynamoDB Local killed mid-load. Then,
//! through an unproxied container and the table itself, the contract is checked (SPEC "A write
//! is applied once", "Errors", "Counts"):
//! - no acknowledged write is lost: its revision holds its value (or its delete marker), or the
//!   key has at least `history` later revisions that pushed it out;
//! - no revision is acknowledged to two calls, and no call's value is stored under two revisions
//!   (every value is unique to its call; the proxy's log of applied transactions shows values
//!   that history has since trimmed);
//! - no false 409: a refused compare-and-set whose own value was applied (the 409's
//!   `current_revision` is then usually the caller's own write);
//! - no ghost write: a call answered with an error whose value was applied anyway (the function
//!   must find out before it answers while DynamoDB can still be asked);
//! - `entry_total` and `bytes` of kv-bucket-info and kv-bucket-list equal a recomputation from
//!   the items, and every head agrees with its key's revision items;
//! - every outcome is a 200, a 4xx the call could cause, or a Lambda error `KvUnavailable` or
//!   `KvInternal` whose message is a sentence, not SDK text.

use kv::model::revision::{self, Op};
use kv::store::items;
use kv::Function::{BucketCreate, BucketInfo, KeyDelete, KeyGet, KeyPut};
use kv::Kv;
use kv_dev::fault_proxy::{ErrorReply, Fault, FaultProxy, Rule};
use kv_dev::support::{config_for, settings, status, unique};
use lambda_runtime::Diagnostic;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longer than any call may take: a call still running then is a failure of its own.
const CALL_LIMIT: Duration = Duration::from_secs(60);

/// Text that only SDK internals produce: never in a message a caller sees.
const SDK_LEAKS: [&str; 10] = [
    "SdkError",
    "ServiceError {",
    "DispatchFailure",
    "ConnectorError",
    "TimeoutError",
    "ResponseError",
    "ConstructionFailure",
    "hyper::",
    "{ kind:",
    "raw: Response",
];

fn container_at(endpoint: &str) -> Kv {
    Kv::new(
        aws_sdk_dynamodb::Client::from_conf(config_for(endpoint).build()),
        &settings(),
    )
}

#[derive(Debug, Clone)]
struct BucketSpec {
    name: String,
    history: u64,
    max_bytes: Option<u64>,
}

async fn create_buckets(kv: &Kv, tag: &str) -> Vec<BucketSpec> {
    let specs = [(1, None), (5, None), (3, Some(1500))];
    let mut buckets = Vec::new();
    for (history, max_bytes) in specs {
        let name = unique(&format!("{tag}-h{history}"));
        let mut params = json!({"bucket": name, "history": history});
        if let Some(max_bytes) = max_bytes {
            params["max_bytes"] = json!(max_bytes);
        }
        let response = kv_dev::support::call(kv, BucketCreate, params).await;
        assert_eq!(status(&response), 200, "{response}");
        buckets.push(BucketSpec {
            name,
            history,
            max_bytes,
        });
    }
    buckets
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Put,
    /// Compare-and-set put with `revision: N` (0: only if the key has no live value).
    CasPut(u64),
    Delete,
}

#[derive(Debug, Clone)]
enum Outcome {
    Written(u64),
    Refused {
        status: u64,
        code: String,
        current: Option<u64>,
        /// Shown in reports, through Debug.
        #[allow(dead_code)]
        body: Value,
    },
    Failed {
        error_type: String,
        message: String,
    },
}

#[derive(Debug, Clone)]
struct Call {
    writer: usize,
    bucket: usize,
    key: String,
    kind: Kind,
    /// Unique to this call (empty for deletes).
    value: String,
    outcome: Outcome,
    elapsed: Duration,
    ended: Instant,
}

impl Call {
    fn describe(&self) -> String {
        format!(
            "writer {} {:?} key '{}' value '{}' -> {:?} after {:.1} s",
            self.writer,
            self.kind,
            self.key,
            self.value,
            self.outcome,
            self.elapsed.as_secs_f64()
        )
    }
}

/// One function call, bounded in time, as a flow would see its outcome.
async fn attempt(kv: &Kv, function: kv::Function, payload: Value) -> (Outcome, Duration) {
    let started = Instant::now();
    let result =
        tokio::time::timeout(CALL_LIMIT, kv_dev::support::invoke(kv, function, payload)).await;
    let outcome = match result {
        Err(_) => Outcome::Failed {
            error_type: "(none: the call did not end)".into(),
            message: format!("no answer in {} s", CALL_LIMIT.as_secs()),
        },
        Ok(Err(error)) => {
            let diagnostic = Diagnostic::from(error);
            Outcome::Failed {
                error_type: diagnostic.error_type,
                message: diagnostic.error_message,
            }
        }
        Ok(Ok(response)) => match response["status_code"].as_u64() {
            Some(200) => match response["body"]["revision"].as_u64() {
                Some(revision) => Outcome::Written(revision),
                None => Outcome::Refused {
                    status: 200,
                    code: "(200 without a revision)".into(),
                    current: None,
                    body: response,
                },
            },
            Some(code) => Outcome::Refused {
                status: code,
                code: kv_dev::support::code(&response).to_string(),
                current: response["body"]["current_revision"].as_u64(),
                body: response["body"].clone(),
            },
            None => Outcome::Refused {
                status: 0,
                code: "(no status_code)".into(),
                current: None,
                body: response,
            },
        },
    };
    (outcome, started.elapsed())
}

#[derive(Clone)]
struct Load {
    tag: String,
    writers: usize,
    /// Calls per writer at most; writers also stop once `stop` is set.
    calls_each: usize,
    stop: Arc<AtomicBool>,
    seed: u64,
}

/// Each writer is its own container against `endpoint`, mixing puts, compare-and-set puts and
/// deletes over keys every writer shares and keys of its own, in every bucket.
async fn run_load(endpoint: &str, buckets: &[BucketSpec], load: &Load) -> Vec<Call> {
    let mut tasks = Vec::new();
    for writer in 0..load.writers {
        let endpoint = endpoint.to_string();
        let buckets = buckets.to_vec();
        let load = load.clone();
        tasks.push(tokio::spawn(async move {
            let kv = container_at(&endpoint);
            let mut rng = fastrand::Rng::with_seed(load.seed * 1000 + writer as u64);
            let mut seen: HashMap<(usize, String), u64> = HashMap::new();
            let mut calls = Vec::new();
            for index in 0..load.calls_each {
                if load.stop.load(Ordering::Relaxed) {
                    break;
                }
                let bucket = rng.usize(..buckets.len());
                let key = if rng.bool() {
                    format!("shared.k{}", rng.usize(..2))
                } else {
                    format!("own.w{writer}.k{}", rng.usize(..2))
                };
                let roll = rng.u32(..100);
                let kind = match roll {
                    0..45 => Kind::Put,
                    45..65 => Kind::CasPut(seen.get(&(bucket, key.clone())).copied().unwrap_or(1)),
                    65..80 => Kind::CasPut(0),
                    _ => Kind::Delete,
                };
                let name = &buckets[bucket].name;
                let (function, payload, value) = match kind {
                    Kind::Delete => (
                        KeyDelete,
                        json!({"bucket": name, "key": key}),
                        String::new(),
                    ),
                    _ => {
                        let value = format!(
                            "{}.w{writer}.c{index}.{}",
                            load.tag,
                            "x".repeat(rng.usize(..60))
                        );
                        let mut payload = json!({"bucket": name, "key": key, "value": value});
                        if let Kind::CasPut(revision) = kind {
                            payload["revision"] = json!(revision);
                        }
                        (KeyPut, payload, value)
                    }
                };
                let (outcome, elapsed) = attempt(&kv, function, payload).await;
                match &outcome {
                    // As a flow's Retry would, wait a little before the next call.
                    Outcome::Failed { .. } => tokio::time::sleep(Duration::from_millis(250)).await,
                    Outcome::Written(revision) => {
                        seen.insert((bucket, key.clone()), *revision);
                    }
                    Outcome::Refused {
                        current: Some(current),
                        ..
                    } => {
                        seen.insert((bucket, key.clone()), *current);
                    }
                    _ => {}
                }
                calls.push(Call {
                    writer,
                    bucket,
                    key,
                    kind,
                    value,
                    outcome,
                    elapsed,
                    ended: Instant::now(),
                });
            }
            calls
        }));
    }
    let mut calls = Vec::new();
    for task in tasks {
        calls.extend(task.await.expect("writer"));
    }
    calls
}

/// A revision of a key as applied: from the table, or from the proxy's log.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Applied {
    pk: String,
    revision: u64,
    value: Option<String>,
}

/// Every revision the logged writes put: heads (at their `cur`) and archived revisions
/// (usage items are left out).
fn applied_from_log(log: &[Value]) -> Vec<Applied> {
    let mut applied = Vec::new();
    for body in log {
        let written: Vec<Value> = match body["TransactItems"].as_array() {
            Some(writes) => writes
                .iter()
                .map(|write| match write.get("Update") {
                    Some(update) => update_as_item(update),
                    None => write["Put"]["Item"].clone(),
                })
                .collect(),
            None if body.get("UpdateExpression").is_some() => vec![update_as_item(body)],
            None => vec![body["Item"].clone()],
        };
        for item in &written {
            let pk = item[items::PK]["S"].as_str().unwrap_or("");
            let number = |name: &str| -> u64 {
                item[name]["N"]
                    .as_str()
                    .and_then(|number| number.parse().ok())
                    .unwrap_or(0)
            };
            let revision = match number(items::REVISION) {
                0 => number(items::HEAD_REVISION),
                archived => archived,
            };
            if revision == 0 || !pk.contains('/') {
                continue;
            }
            let value = match item[items::OP]["S"].as_str() {
                Some(_) => None,
                None => item[items::VALUE]["B"]
                    .as_str()
                    .and_then(base64_decode)
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned()),
            };
            applied.push(Applied {
                pk: pk.to_string(),
                revision,
                value,
            });
        }
    }
    applied
}

/// The item a head's update writes: its key and the attributes its `SET #sN = :sN` set.
fn update_as_item(update: &Value) -> Value {
    let mut item = update["Key"].clone();
    let values = &update["ExpressionAttributeValues"];
    for (placeholder, name) in update["ExpressionAttributeNames"]
        .as_object()
        .into_iter()
        .flatten()
    {
        if let (Some(index), Some(name)) = (placeholder.strip_prefix("#s"), name.as_str()) {
            item[name] = values[format!(":s{index}")].clone();
        }
    }
    item
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let sextet = |byte: u8| -> Option<u32> {
        Some(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let digits = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut word = 0u32;
        for (index, byte) in chunk.iter().enumerate() {
            word |= sextet(*byte)? << (18 - 6 * index);
        }
        let bytes = word.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// One key as stored: its head and the retained revisions it lists (its own latest and the
/// archived ones), as readers see them.
struct StoredKey {
    head: revision::Head,
    revisions: Vec<revision::Revision>,
}

async fn read_key(client: &aws_sdk_dynamodb::Client, bucket: &str, key: &str) -> StoredKey {
    let store = kv::store::Store::new(client.clone(), &kv_dev::support::settings());
    let (head, retained) = store
        .history(bucket, key)
        .await
        .expect("read a key's history");
    StoredKey {
        head,
        revisions: retained
            .iter()
            .map(|stored| stored.decode(key).expect("stored revision"))
            .collect(),
    }
}

/// (entry_total, bytes) from kv-bucket-info and from kv-bucket-list.
async fn reported_usage(kv: &Kv, bucket: &str) -> ((u64, u64), (u64, u64)) {
    let info = kv_dev::support::call(kv, BucketInfo, json!({"bucket": bucket})).await;
    assert_eq!(status(&info), 200, "{info}");
    let info = &info["body"]["body"];
    let entry = kv_dev::support::listed_buckets(kv)
        .await
        .into_iter()
        .find(|entry| entry["name"] == bucket)
        .unwrap_or_else(|| panic!("{bucket} not listed"));
    let pair = |value: &Value| {
        (
            value["entry_total"].as_u64().unwrap_or(u64::MAX),
            value["bytes"].as_u64().unwrap_or(u64::MAX),
        )
    };
    (pair(info), pair(&entry))
}

fn is_sentence(message: &str) -> bool {
    message.chars().next().is_some_and(char::is_uppercase)
        && message.split_whitespace().count() >= 3
}

/// What one scenario found: violations of the contract, and notes that are not.
#[derive(Default)]
struct Report {
    /// Each distinct violation, with how many times it was seen.
    violations: Vec<(String, usize)>,
    notes: Vec<String>,
}

impl Report {
    fn violation(&mut self, text: String) {
        match self.violations.iter_mut().find(|(seen, _)| *seen == text) {
            Some((_, count)) => *count += 1,
            None => self.violations.push((text, 1)),
        }
    }

    fn finish(self, scenario: &str, summary: &str) {
        let mut text = format!("== {scenario}: {summary}\n");
        for note in &self.notes {
            let _ = writeln!(text, "   note: {note}");
        }
        for (violation, count) in &self.violations {
            let times = if *count > 1 {
                format!(" ({count} calls)")
            } else {
                String::new()
            };
            let _ = writeln!(text, "   VIOLATION{times}: {violation}");
        }
        eprintln!("{text}");
        let total: usize = self.violations.iter().map(|(_, count)| count).sum();
        assert!(
            self.violations.is_empty(),
            "{scenario}: {total} violations of the contract (report above)"
        );
    }
}

/// Whether an error answer is only allowed while DynamoDB cannot be asked (a crash), or never
/// for a write that was applied (DynamoDB stayed reachable behind the faults).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ghosts {
    Forbidden,
    Noted,
}

/// Checks the calls against the table (read through `endpoint`, unproxied) and the proxy's log.
async fn verify(
    endpoint: &str,
    buckets: &[BucketSpec],
    calls: &[Call],
    log: Option<&[Value]>,
    ghosts: Ghosts,
    report: &mut Report,
) {
    let kv = container_at(endpoint);
    let client = aws_sdk_dynamodb::Client::from_conf(config_for(endpoint).build());
    // Counts, trims and repaired archives follow from the stream: wait for it.
    kv_dev::support::stream_pump::settled_at(endpoint).await;

    // Outcomes: a 200, a 4xx this call could cause, or a classified, readable Lambda error.
    for call in calls {
        match &call.outcome {
            Outcome::Written(_) => {}
            Outcome::Refused { status, code, .. } => {
                let allowed = match (status, code.as_str(), call.kind) {
                    (409, "revision_mismatch", Kind::CasPut(n)) => n > 0,
                    (409, "key_exists", Kind::CasPut(0)) => true,
                    (413, "bucket_full", Kind::Put | Kind::CasPut(_)) => {
                        buckets[call.bucket].max_bytes.is_some()
                    }
                    _ => false,
                };
                if !allowed {
                    report.violation(format!(
                        "not a 4xx this call can cause: {}",
                        call.describe()
                    ));
                }
            }
            Outcome::Failed {
                error_type,
                message,
            } => {
                if error_type != "KvUnavailable" && error_type != "KvInternal" {
                    report.violation(format!("error type '{error_type}': {}", call.describe()));
                }
                if let Some(leak) = SDK_LEAKS.iter().find(|leak| message.contains(*leak)) {
                    report.violation(format!(
                        "raw SDK text ('{leak}') in the error message: {message}"
                    ));
                } else if !is_sentence(message) {
                    report.violation(format!("error message is not a sentence: '{message}'"));
                }
            }
        }
    }

    // The table as it is now, key by key.
    let mut stored: BTreeMap<(usize, String), StoredKey> = BTreeMap::new();
    let keys: BTreeSet<(usize, String)> = calls
        .iter()
        .map(|call| (call.bucket, call.key.clone()))
        .collect();
    for (bucket, key) in &keys {
        let read = read_key(&client, &buckets[*bucket].name, key).await;
        stored.insert((*bucket, key.clone()), read);
    }

    // Every revision ever applied: the table's, and the proxy's log (which still shows the
    // ones history trimmed since).
    let mut applied: BTreeSet<Applied> = BTreeSet::new();
    for ((bucket, key), read) in &stored {
        for revision in &read.revisions {
            applied.insert(Applied {
                pk: items::key_pk(&buckets[*bucket].name, key),
                revision: revision.revision,
                value: (revision.op == Op::Put).then(|| revision.text.clone()),
            });
        }
    }
    if let Some(log) = log {
        applied.extend(applied_from_log(log));
    }
    let mut revisions_of_value: HashMap<&str, BTreeSet<(&str, u64)>> = HashMap::new();
    for entry in &applied {
        if let Some(value) = &entry.value {
            revisions_of_value
                .entry(value.as_str())
                .or_default()
                .insert((entry.pk.as_str(), entry.revision));
        }
    }

    // No value under two revisions.
    for call in calls.iter().filter(|call| !call.value.is_empty()) {
        if let Some(revisions) = revisions_of_value.get(call.value.as_str()) {
            if revisions.len() > 1 {
                report.violation(format!(
                    "one call's value stored under {} revisions {:?}: {}",
                    revisions.len(),
                    revisions
                        .iter()
                        .map(|(_, revision)| revision)
                        .collect::<Vec<_>>(),
                    call.describe()
                ));
            }
        }
    }

    // Acknowledged writes: one call per revision, and each one kept or overtaken.
    let mut acknowledged: HashMap<(usize, u64), &Call> = HashMap::new();
    for call in calls {
        let Outcome::Written(revision) = call.outcome else {
            continue;
        };
        if let Some(other) = acknowledged.insert((call.bucket, revision), call) {
            report.violation(format!(
                "revision {revision} acknowledged to two calls: {} and {}",
                other.describe(),
                call.describe()
            ));
        }
        let spec = &buckets[call.bucket];
        let read = &stored[&(call.bucket, call.key.clone())];
        match read
            .revisions
            .iter()
            .find(|stored| stored.revision == revision)
        {
            Some(found) => {
                let right = match call.kind {
                    Kind::Delete => found.op == Op::Del,
                    _ => found.op == Op::Put && found.text == call.value,
                };
                if !right {
                    report.violation(format!(
                        "revision {revision} holds {:?} '{}', not this call's write: {}",
                        found.op,
                        found.text,
                        call.describe()
                    ));
                }
            }
            None => {
                let later = read
                    .revisions
                    .iter()
                    .filter(|stored| stored.revision > revision)
                    .count() as u64;
                if later < spec.history {
                    report.violation(format!(
                        "acknowledged write lost: revision {revision} is gone with only {later} later revisions (history {}): {}",
                        spec.history,
                        call.describe()
                    ));
                }
            }
        }
    }

    // Refusals and errors must not hide a write of the call's own.
    for call in calls.iter().filter(|call| !call.value.is_empty()) {
        let Some(revisions) = revisions_of_value.get(call.value.as_str()) else {
            continue;
        };
        let applied_revisions: Vec<u64> = revisions.iter().map(|(_, revision)| *revision).collect();
        match &call.outcome {
            Outcome::Written(_) => {}
            Outcome::Refused {
                status: 409,
                current,
                ..
            } => {
                let own = current.is_some_and(|current| applied_revisions.contains(&current));
                report.violation(format!(
                    "false 409: the call's own value was applied at revision {applied_revisions:?}{}: {}",
                    if own {
                        " (= the 409's current_revision)"
                    } else {
                        ""
                    },
                    call.describe()
                ));
            }
            Outcome::Refused { .. } => report.violation(format!(
                "refused, yet its value was applied at revision {applied_revisions:?}: {}",
                call.describe()
            )),
            Outcome::Failed { .. } => {
                let text = format!(
                    "ghost write: answered an error, yet its value was applied at revision {applied_revisions:?}: {}",
                    call.describe()
                );
                match ghosts {
                    Ghosts::Forbidden => report.violation(text),
                    Ghosts::Noted => report.notes.push(text),
                }
            }
        }
    }

    // Heads agree with their revision items; history is bounded; usage is exact.
    for (index, spec) in buckets.iter().enumerate() {
        let mut live_keys = 0u64;
        let mut bytes = 0u64;
        for ((bucket, key), read) in &stored {
            if *bucket != index {
                continue;
            }
            let applied_revisions: Vec<u64> = read
                .revisions
                .iter()
                .map(|stored| stored.revision)
                .collect();
            let head_revisions: Vec<u64> = read
                .head
                .entries
                .iter()
                .map(|entry| entry.revision)
                .collect();
            if applied_revisions != head_revisions
                || read.head.latest_revision != applied_revisions.last().copied()
            {
                report.violation(format!(
                    "{}/{key}: head (latest {:?}, entries {head_revisions:?}) disagrees with the revision items {applied_revisions:?}",
                    spec.name, read.head.latest_revision
                ));
            }
            if applied_revisions.len() as u64 > spec.history {
                report.violation(format!(
                    "{}/{key}: {} revisions kept, history is {}",
                    spec.name,
                    applied_revisions.len(),
                    spec.history
                ));
            }
            if read.revisions.last().is_some_and(|last| last.op == Op::Put) {
                live_keys += 1;
            }
            bytes += read
                .revisions
                .iter()
                .map(|stored| stored.text.len() as u64)
                .sum::<u64>();
        }
        if let Some(max_bytes) = spec.max_bytes {
            if bytes > max_bytes {
                report.violation(format!(
                    "{} holds {bytes} bytes, past its max_bytes {max_bytes}",
                    spec.name
                ));
            }
        }
        let (info, listed) = reported_usage(&kv, &spec.name).await;
        for (function, reported) in [("kv-bucket-info", info), ("kv-bucket-list", listed)] {
            if reported != (live_keys, bytes) {
                report.violation(format!(
                    "{} {}: (entry_total, bytes) = {reported:?}, the table holds ({live_keys}, {bytes})",
                    function, spec.name
                ));
            }
        }
    }
}

fn summarize(calls: &[Call]) -> String {
    let mut written = 0;
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    for call in calls {
        match &call.outcome {
            Outcome::Written(_) => written += 1,
            Outcome::Refused { status, code, .. } => {
                *refused.entry(format!("{status} {code}")).or_default() += 1
            }
            Outcome::Failed { error_type, .. } => {
                *failed.entry(error_type.clone()).or_default() += 1
            }
        }
    }
    let slowest = calls
        .iter()
        .map(|call| call.elapsed)
        .max()
        .unwrap_or_default();
    format!(
        "{} calls: {written} written, refused {refused:?}, failed {failed:?}, slowest {:.1} s",
        calls.len(),
        slowest.as_secs_f64()
    )
}

/// Runs the standard load through a proxy with `rules`, then checks everything unproxied.
async fn proxied_scenario(
    scenario: &str,
    seed: u64,
    rules: Vec<Rule>,
    writers: usize,
    calls_each: usize,
    fired: impl Fn(&kv_dev::fault_proxy::Stats) -> bool,
) {
    let started = Instant::now();
    let direct = kv_dev::support::endpoint();
    let buckets = create_buckets(&container_at(direct), scenario).await;
    let proxy = FaultProxy::start(direct, seed).await;
    for rule in rules {
        proxy.add(rule);
    }
    let load = Load {
        tag: scenario.to_string(),
        writers,
        calls_each,
        stop: Arc::default(),
        seed,
    };
    let calls = run_load(&proxy.url(), &buckets, &load).await;
    proxy.clear();
    assert!(
        proxy.settle(Duration::from_secs(30)).await,
        "delayed transactions still pending"
    );
    let stats = proxy.stats();
    let mut report = Report::default();
    report.notes.push(format!("proxy: {stats:?}"));
    verify(
        direct,
        &buckets,
        &calls,
        Some(&proxy.applied()),
        Ghosts::Forbidden,
        &mut report,
    )
    .await;
    assert!(
        fired(&stats),
        "{scenario}: the fault never fired: {stats:?}"
    );
    let summary = format!(
        "{} in {:.1} s",
        summarize(&calls),
        started.elapsed().as_secs_f64()
    );
    report.finish(scenario, &summary);
}

/// DynamoDB applied the transaction, the caller never heard: the SDK's retry (same token) is
/// answered by DynamoDB's idempotency, and when every attempt loses its answer the function
/// must find out before it answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_dropped_after_dynamodb_applied_the_write() {
    proxied_scenario(
        "dropped",
        11,
        vec![
            Rule::new(Fault::DropResponse)
                .on("TransactWriteItems")
                .probability(0.5),
            // Head writes (UpdateItem) and archives (PutItem) outside a transaction.
            Rule::new(Fault::DropResponse)
                .on("PutItem")
                .probability(0.5),
            Rule::new(Fault::DropResponse)
                .on("UpdateItem")
                .when(|request| request.body["TableName"] == kv_dev::support::ITEMS_TABLE)
                .probability(0.5),
            Rule::new(Fault::DropResponse)
                .on("UpdateItem")
                .probability(0.15),
        ],
        6,
        20,
        |stats| stats.dropped > 0,
    )
    .await;
}

/// AWS's answer to a transaction still running: 500 at once, the transaction commits a few
/// seconds later, and repeats with its token get TransactionInProgressException until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_in_progress_commit_late() {
    proxied_scenario(
        "inprogress",
        23,
        vec![
            Rule::new(Fault::InProgress {
                delay: Duration::from_millis(1500),
            })
            .on("TransactWriteItems")
            .probability(0.08),
            Rule::new(Fault::InProgress {
                delay: Duration::from_secs(3),
            })
            .on("TransactWriteItems")
            .probability(0.08),
        ],
        6,
        14,
        |stats| stats.in_progress > 0 && stats.in_progress_refused > 0,
    )
    .await;
}

/// Errors DynamoDB answers without applying anything, on every operation: what the SDK's
/// retries do not absorb must come out as KvUnavailable, and nothing may be lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_server_errors_and_throttling() {
    proxied_scenario(
        "errors",
        37,
        vec![
            Rule::new(Fault::Error(ErrorReply::InternalServerError)).probability(0.12),
            Rule::new(Fault::Error(ErrorReply::Throttling)).probability(0.12),
            Rule::new(Fault::Error(ErrorReply::ThroughputExceeded)).probability(0.12),
        ],
        6,
        20,
        |stats| {
            [
                ErrorReply::InternalServerError,
                ErrorReply::Throttling,
                ErrorReply::ThroughputExceeded,
            ]
            .iter()
            .all(|kind| stats.errors_of(*kind) > 0)
        },
    )
    .await;
}

/// An endpoint that accepts and never answers: every call ends as KvUnavailable in about the
/// client's 10 s operation timeout; a commit that never reached DynamoDB leaves no trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_endpoint_ends_as_unavailable() {
    const BOUND: Duration = Duration::from_secs(15);
    let started = Instant::now();
    let direct = kv_dev::support::endpoint();
    let buckets = create_buckets(&container_at(direct), "silent").await;
    let all_silent = FaultProxy::start(direct, 5).await;
    all_silent.set(Rule::new(Fault::Hang));
    let commit_silent = FaultProxy::start(direct, 6).await;
    // The head's write: the UpdateItem of the items table (the revision's is of the buckets one).
    commit_silent.set(
        Rule::new(Fault::Hang)
            .on("UpdateItem")
            .when(|request| request.body["TableName"] == kv_dev::support::ITEMS_TABLE),
    );

    let bucket = buckets[1].name.clone();
    let mut tasks = Vec::new();
    let requests = [
        (&all_silent, KeyPut, Kind::Put, "k.all"),
        (&all_silent, KeyGet, Kind::Put, "k.all"),
        (&all_silent, BucketInfo, Kind::Put, ""),
        (&commit_silent, KeyPut, Kind::Put, "k.commit"),
        (&commit_silent, KeyPut, Kind::CasPut(0), "k.cas"),
        (&commit_silent, KeyDelete, Kind::Delete, "k.commit"),
    ];
    for (index, (proxy, function, kind, key)) in requests.into_iter().enumerate() {
        let kv = container_at(&proxy.url());
        let value = format!("silent.c{index}");
        let mut payload = json!({"bucket": bucket, "key": key, "value": value});
        match (function, kind) {
            (KeyPut, Kind::CasPut(revision)) => payload["revision"] = json!(revision),
            (KeyPut, _) => {}
            (BucketInfo, _) => payload = json!({"bucket": bucket}),
            _ => payload = json!({"bucket": bucket, "key": key}),
        }
        let value = if function == KeyPut {
            value
        } else {
            String::new()
        };
        tasks.push(tokio::spawn(async move {
            let (outcome, elapsed) = attempt(&kv, function, payload).await;
            (function, key, kind, value, outcome, elapsed)
        }));
    }
    let mut report = Report::default();
    let mut calls = Vec::new();
    for task in tasks {
        let (function, key, kind, value, outcome, elapsed) = task.await.expect("call");
        let unavailable =
            matches!(&outcome, Outcome::Failed { error_type, .. } if error_type == "KvUnavailable");
        if !unavailable || elapsed > BOUND {
            report.violation(format!(
                "{} through a silent endpoint: {outcome:?} after {:.1} s (want KvUnavailable within {} s)",
                function.name(),
                elapsed.as_secs_f64(),
                BOUND.as_secs()
            ));
        }
        if !key.is_empty() && function != KeyGet {
            calls.push(Call {
                writer: 0,
                bucket: 1,
                key: key.to_string(),
                kind,
                value,
                outcome,
                elapsed,
                ended: Instant::now(),
            });
        } else if let Outcome::Failed { message, .. } = &outcome {
            if let Some(leak) = SDK_LEAKS.iter().find(|leak| message.contains(*leak)) {
                report.violation(format!(
                    "raw SDK text ('{leak}') in {}'s error message: {message}",
                    function.name()
                ));
            }
        }
    }
    let stats = (all_silent.stats(), commit_silent.stats());
    report.notes.push(format!("proxies: {stats:?}"));
    assert!(
        stats.0.hung > 0 && stats.1.hung > 0,
        "nothing hung: {stats:?}"
    );
    drop((all_silent, commit_silent));
    verify(
        direct,
        &buckets,
        &calls,
        None,
        Ghosts::Forbidden,
        &mut report,
    )
    .await;
    let summary = format!(
        "{} in {:.1} s",
        summarize(&calls),
        started.elapsed().as_secs_f64()
    );
    report.finish("silent endpoint", &summary);
}

/// DynamoDB Local on disk (`-dbPath`), killed (SIGKILL) mid-load and started again on the same
/// port with the same data. Calls that meet the outage may fail as KvUnavailable, and one whose
/// commit was cut off may not be able to tell (noted, not counted); nothing acknowledged may be
/// lost, nothing stored twice, and the counts must be exact afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_killed_and_restarted_mid_load() {
    let started = Instant::now();
    let local = kv_dev::support::PersistentLocal::start().await;
    let endpoint = local.endpoint();
    let buckets = create_buckets(&container_at(&endpoint), "restart").await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = Load {
        tag: "restart".into(),
        writers: 6,
        calls_each: 400,
        stop: stop.clone(),
        seed: 51,
    };
    let writers = {
        let endpoint = endpoint.clone();
        let buckets = buckets.clone();
        tokio::spawn(async move { run_load(&endpoint, &buckets, &load).await })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    local.kill().await;
    let killed_at = Instant::now();
    let killed = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    local.restart().await;
    let serving = Instant::now();
    let restarted = started.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let calls = writers.await.expect("writers");
    let mut report = Report::default();
    report.notes.push(format!(
        "killed at {:.1} s, serving again at {:.1} s",
        killed.as_secs_f64(),
        restarted.as_secs_f64()
    ));
    // A call meets the outage when it was in flight while DynamoDB was down: it failed, or the
    // SDK's retries carried it over the restart. Either must leave the data exact.
    let met = calls
        .iter()
        .filter(|call| call.ended >= killed_at && call.ended - call.elapsed <= serving)
        .count();
    assert!(met > 0, "no call met the outage: {}", summarize(&calls));
    report
        .notes
        .push(format!("{met} calls in flight during the outage"));
    let written_after = calls
        .iter()
        .filter(|call| call.ended > serving && matches!(call.outcome, Outcome::Written(_)))
        .count();
    assert!(
        written_after > 0,
        "no write after the restart: {}",
        summarize(&calls)
    );
    report.notes.push(format!(
        "{written_after} writes acknowledged after the restart"
    ));
    verify(
        &endpoint,
        &buckets,
        &calls,
        None,
        Ghosts::Noted,
        &mut report,
    )
    .await;
    let summary = format!(
        "{} in {:.1} s",
        summarize(&calls),
        started.elapsed().as_secs_f64()
    );
    report.finish("killed and restarted", &summary);
}

/// The proxy itself: its errors are DynamoDB errors to the SDK (which retries them), `times`
/// and `when` narrow a rule, and the counts say what fired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_rules_fire_as_programmed() {
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    let proxy = FaultProxy::start(kv_dev::support::endpoint(), 1).await;
    let client = aws_sdk_dynamodb::Client::from_conf(config_for(&proxy.url()).build());
    proxy.set(
        Rule::new(Fault::Error(ErrorReply::InternalServerError))
            .on("ListTables")
            .times(2),
    );
    client
        .list_tables()
        .send()
        .await
        .expect("third attempt passes");
    proxy.set(
        Rule::new(Fault::Error(ErrorReply::Throttling))
            .on("ListTables")
            .when(|request| request.body["Limit"] == 7),
    );
    let error = client.list_tables().limit(7).send().await.unwrap_err();
    assert_eq!(error.code(), Some("ThrottlingException"), "{error:?}");
    client
        .list_tables()
        .limit(8)
        .send()
        .await
        .expect("other requests pass");
    let stats = proxy.stats();
    assert_eq!(
        stats.errors_of(ErrorReply::InternalServerError),
        2,
        "{stats:?}"
    );
    assert_eq!(stats.errors_of(ErrorReply::Throttling), 3, "{stats:?}");
    assert_eq!(stats.requests["ListTables"], 7, "{stats:?}");
    assert_eq!(stats.forwarded, 2, "{stats:?}");
}
