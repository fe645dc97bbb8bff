//! Least privilege, checked against what the code really does. Every ready event of `events/`
//! is played through its function's handler against DynamoDB Local, with a client that records
//! the IAM permission of each request it sends (`kv_dev::meter::Meter`). Each function's
//! inline policy in `template.yaml` must grant exactly the actions and resources recorded for
//! it: none missing (the deployed function would fail with AccessDenied), none unused.
//!
//! The events are the scenarios, success and error paths alike, so they are checked too: an
//! event named `FUNCTION.json` or `FUNCTION-DESCRIPTION.json` must succeed (200), and one named
//! `FUNCTION-CODE.json`, where CODE is an error code with dashes (`kv-key-get-key-not-found`),
//! must return that error. Each event runs in fresh tables after the success events of
//! `kv-bucket-create` and `kv-key-put`, in file-name order, which create the buckets and keys
//! the others refer to (events/README.md). A `kv-bucket-purge` event's buckets are first marked
//! deleting at the time its records show, as the stream only sends such records.

use kv::model::config::Settings;
use kv::{Function, Kv};
use kv_dev::meter::Meter;
use kv_dev::sam;
use kv_dev::support::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// The contract's error codes and their status (SPEC.md).
const ERROR_CODES: &[(&str, u64)] = &[
    ("invalid_parameter", 400),
    ("invalid_bucket_name", 400),
    ("invalid_key", 400),
    ("invalid_value", 400),
    ("bucket_exists", 400),
    ("bucket_not_found", 404),
    ("key_not_found", 404),
    ("revision_mismatch", 409),
    ("key_exists", 409),
    ("not_a_counter", 409),
    ("value_too_large", 413),
    ("bucket_full", 413),
    ("value_not_json", 422),
];

/// The functions whose success events prepare the store for every other event (a watch's
/// waiter is what kv-items-replicate's event resumes).
const SETUP_FUNCTIONS: &[Function] =
    &[Function::BucketCreate, Function::KeyPut, Function::KeyWatch];

#[derive(Debug, Clone)]
struct Event {
    file: String,
    function: Function,
    payload: Value,
    /// None: a 200; Some: the error code and its status.
    expect: Option<(&'static str, u64)>,
}

/// Every `events/*.json`, in file-name order, with its function and expected outcome.
fn events() -> Vec<Event> {
    let dir = sam::root().join("events");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("events/")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let stem = file.trim_end_matches(".json");
            let function = Function::ALL
                .into_iter()
                .filter(|function| {
                    stem == function.name() || stem.starts_with(&format!("{}-", function.name()))
                })
                .max_by_key(|function| function.name().len())
                .unwrap_or_else(|| panic!("events/{file} does not start with a function's name"));
            let description = stem[function.name().len()..].trim_start_matches('-');
            let code = description.replace('-', "_");
            let expect = ERROR_CODES
                .iter()
                .find(|(known, _)| *known == code)
                .map(|(known, status)| (*known, *status));
            let text = std::fs::read_to_string(dir.join(&file)).unwrap();
            let payload = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("events/{file} is not JSON: {error}"));
            Event {
                file,
                function,
                payload,
                expect,
            }
        })
        .collect()
}

/// Fresh tables and a container whose client records every request.
struct World {
    kv: Kv,
    meter: Meter,
    settings: Settings,
}

async fn world() -> World {
    let settings = Settings::with_tables(&unique("policy-buckets"), &unique("policy-items"));
    kv::store::schema::ensure_tables(&client(), &settings)
        .await
        .expect("create the tables");
    let meter = Meter::new();
    let metered = aws_sdk_dynamodb::Client::from_conf(
        config_for(endpoint()).interceptor(meter.clone()).build(),
    );
    let mut kv = Kv::new(metered, &settings);
    // Step Functions as moto plays it: it takes any task token.
    kv.tokens = Some(kv::tokens::TaskTokens::new(kv_dev::moto::Moto::sfn_client(
        &kv_dev::moto::Moto::shared().endpoint,
    )));
    World {
        kv,
        meter,
        settings,
    }
}

type Grants = BTreeSet<(String, String)>;

/// What a function's requests were: the permissions they needed and the operations they were.
#[derive(Debug, Default, Clone)]
struct Used {
    grants: Grants,
    operations: BTreeSet<String>,
}

impl Used {
    fn extend(&mut self, other: Used) {
        self.grants.extend(other.grants);
        self.operations.extend(other.operations);
    }
}

impl World {
    /// Invokes the handler; returns its response and the permissions its requests needed, with
    /// the tables named by their template logical ids.
    async fn invoke(&self, function: Function, payload: Value) -> (Value, Used) {
        self.meter.take();
        let response = invoke(&self.kv, function, payload.clone())
            .await
            .unwrap_or_else(|error| panic!("{} {payload} failed: {error}", function.name()));
        let requests = self.meter.take().requests;
        let used = Used {
            operations: requests
                .iter()
                .map(|request| request.operation.clone())
                .collect(),
            grants: requests
                .into_iter()
                .flat_map(|request| request.permissions)
                .map(|permission| (permission.action, self.logical(&permission.resource)))
                .collect(),
        };
        (response, used)
    }

    /// Deletes the event's tables so that DynamoDB Local does not carry 114 of them for the
    /// rest of the suite.
    async fn drop_tables(&self) {
        let client = client();
        for table in [&self.settings.buckets_table, &self.settings.items_table] {
            // A table left behind costs DynamoDB Local memory, not correctness.
            let _ = client
                .delete_table()
                .table_name(table.as_str())
                .send()
                .await;
        }
    }

    fn logical(&self, resource: &str) -> String {
        let (table, index) = match resource.split_once('/') {
            Some((table, index)) => (table, format!("/{index}")),
            None => (resource, String::new()),
        };
        let logical = if table == self.settings.buckets_table {
            "BucketsTable"
        } else if table == self.settings.items_table {
            "ItemsTable"
        } else {
            panic!("a request to a table the function was not configured with: {resource}")
        };
        format!("{logical}{index}")
    }
}

/// Plays one event in fresh tables after the setup events: what each function needed, and
/// what was not as the event's name says.
async fn play(event: Event, setup: Vec<Event>) -> (BTreeMap<String, Used>, Option<String>) {
    let world = world().await;
    let mut used: BTreeMap<String, Used> = BTreeMap::new();
    for step in &setup {
        let (response, grants) = world.invoke(step.function, step.payload.clone()).await;
        assert_eq!(
            status(&response),
            200,
            "setup event events/{} failed: {response}",
            step.file
        );
        used.entry(step.function.name().into())
            .or_default()
            .extend(grants);
    }
    if event.function == Function::BucketPurge {
        // The stream sends the purger only buckets already being deleted, since the time the
        // record's new image shows.
        for record in event.payload["Records"].as_array().into_iter().flatten() {
            let image = &record["dynamodb"]["NewImage"];
            let bucket = image["bucket"]["S"]
                .as_str()
                .expect("a bucket in the record");
            let since: u64 = image["deleting"]["N"]
                .as_str()
                .and_then(|n| n.parse().ok())
                .expect("deleting");
            world
                .kv
                .store
                .mark_deleting(bucket, since)
                .await
                .expect("mark the bucket deleting");
        }
    }
    let (response, grants) = world.invoke(event.function, event.payload.clone()).await;
    used.entry(event.function.name().into())
        .or_default()
        .extend(grants);
    let (want_code, want_status) = event.expect.unwrap_or(("", 200));
    // A stream consumer's answer is Lambda's partial batch response, not an envelope.
    let problem = if event.function.answers_stream_batches() {
        (response["batchItemFailures"] != serde_json::json!([])).then(|| {
            format!(
                "events/{}: expected every record processed, got {response}",
                event.file
            )
        })
    } else if status(&response) != want_status || code(&response) != want_code {
        Some(format!(
            "events/{}: expected {want_status} {want_code}, got {response}",
            event.file
        ))
    } else if want_status != 200 && response["body"]["error"].as_str().unwrap_or("").is_empty() {
        Some(format!("events/{}: an error without a message", event.file))
    } else {
        None
    };
    world.drop_tables().await;
    (used, problem)
}

/// How many events play at once. Each creates two tables and replays the setup events; all 57
/// at once, beside the rest of the suite, kept DynamoDB Local from answering a transaction within
/// the client's 10 s (CI, 2026-12-07).
const EVENTS_AT_ONCE: usize = 8;

/// Plays every event, each in its own tables, a few at a time.
async fn play_events() -> BTreeMap<String, Used> {
    let events = events();
    let setup: Vec<Event> = events
        .iter()
        .filter(|event| SETUP_FUNCTIONS.contains(&event.function) && event.expect.is_none())
        .cloned()
        .collect();
    let turns = std::sync::Arc::new(tokio::sync::Semaphore::new(EVENTS_AT_ONCE));
    let mut runs = tokio::task::JoinSet::new();
    for event in events {
        let turns = turns.clone();
        let setup = setup.clone();
        runs.spawn(async move {
            let _turn = turns
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            play(event, setup).await
        });
    }
    let mut used: BTreeMap<String, Used> = BTreeMap::new();
    let mut problems = Vec::new();
    while let Some(run) = runs.join_next().await {
        let (grants, problem) = run.expect("an event run panicked");
        for (function, grants) in grants {
            used.entry(function).or_default().extend(grants);
        }
        problems.extend(problem);
    }
    problems.sort();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    used
}

#[tokio::test]
async fn every_event_has_the_outcome_its_name_says_and_each_policy_grants_exactly_what_is_used() {
    let used = play_events().await;
    let template = sam::template();
    let mut problems = Vec::new();
    for (logical_id, resource) in sam::resources(&template, "AWS::Serverless::Function") {
        let binary = sam::text(&resource["Metadata"]["BuildProperties"]["Binary"]);
        let (outside, granted): (Grants, Grants) = sam::allowed(&resource)
            .into_iter()
            .partition(|(_, resource)| resource == sam::EVENT_BUS || resource == sam::ANY_RESOURCE);
        let (bus_grants, token_grants): (Grants, Grants) = outside
            .into_iter()
            .partition(|(_, resource)| resource == sam::EVENT_BUS);
        // The meter sees DynamoDB's requests only; EventBridge's grant follows the function's
        // declaration, which decides whether its container has an EventBridge client.
        let publishes = Function::ALL
            .into_iter()
            .any(|function| function.name() == binary && function.publishes_events());
        let wanted_bus: Grants = publishes
            .then(|| ("events:PutEvents".to_string(), sam::EVENT_BUS.to_string()))
            .into_iter()
            .collect();
        if bus_grants != wanted_bus {
            problems.push(format!(
                "{logical_id} ({binary}) grants {bus_grants:?} on the event bus; it needs {wanted_bus:?}"
            ));
        }
        // Likewise Step Functions' grants follow the function's declared use of task tokens.
        let wanted_tokens: Grants = Function::ALL
            .into_iter()
            .filter(|function| function.name() == binary)
            .flat_map(|function| function.task_token_actions())
            .map(|action| (action.to_string(), sam::ANY_RESOURCE.to_string()))
            .collect();
        if token_grants != wanted_tokens {
            problems.push(format!(
                "{logical_id} ({binary}) grants {token_grants:?} for task tokens; it needs {wanted_tokens:?}"
            ));
        }
        let Some(used) = used.get(&binary) else {
            problems.push(format!(
                "{logical_id} ({binary}): no event exercises it; add events/{binary}*.json"
            ));
            continue;
        };
        let missing: Vec<_> = used.grants.difference(&granted).collect();
        let unused: Vec<_> = granted.difference(&used.grants).collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{logical_id} ({binary}) is missing {missing:?} (AccessDenied when deployed)"
            ));
        }
        if !unused.is_empty() {
            problems.push(format!(
                "{logical_id} ({binary}) grants {unused:?}, which no scenario uses"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    the_warm_up_rehearses_what_the_scenarios_send(&used);
}

/// Init rehearses each function's operations so its first invocation costs what a warm one
/// does (`kv::lambda::runtime::rehearsal`): the list must be exactly what the events' requests
/// were, so that it fails here when an operation changes what it sends.
fn the_warm_up_rehearses_what_the_scenarios_send(used: &BTreeMap<String, Used>) {
    let mut problems = Vec::new();
    for function in Function::ALL {
        let (connections, listed) = kv::lambda::runtime::rehearsal(function);
        let listed: BTreeSet<String> = listed.iter().map(|op| format!("{op:?}")).collect();
        let sent = used
            .get(function.name())
            .map(|used| used.operations.clone())
            .unwrap_or_default();
        // Init opens its connections with GetItems, which rehearses GetItem too.
        let mut rehearsed = listed.clone();
        if connections > 0 {
            rehearsed.insert("GetItem".to_string());
        }
        let missing: Vec<_> = sent.difference(&rehearsed).collect();
        let unused: Vec<_> = listed.difference(&sent).collect();
        if !missing.is_empty() || !unused.is_empty() {
            problems.push(format!(
                "{}: init does not rehearse {missing:?} that the events sent, and rehearses {unused:?} that they did not",
                function.name()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_function_has_a_success_event() {
    let events = events();
    for function in Function::ALL {
        assert!(
            events
                .iter()
                .any(|event| event.function == function && event.expect.is_none()),
            "no success event for {}: add events/{}.json",
            function.name(),
            function.name()
        );
    }
}
