//! The Step Functions definitions (`statemachines/*.asl.json`) against the functions.
//!
//! - Each definition is walked state by state by kv-flow (flow/), the engine `make run` uses too,
//!   its Tasks calling the functions' handlers in-process against DynamoDB Local. The executions of
//!   `statemachines/examples.json` (what `make run` plays) must end as they say; the scenarios
//!   below add the refusals, the races and an unavailable store, so that every transition of
//!   every definition is taken.
//! - Every path a definition reads from a Task's result must exist in a real response of that
//!   Task's function, recorded during those walks.
//! - One smoke test runs the real binaries under `cargo lambda watch`'s runtime API and calls
//!   them through its Invoke API, checking the JSON logs carry the request id on every line and
//!   never a value.

use kv::model::config::Settings;
use kv::model::error::{INTERNAL_ERROR_TYPE, UNAVAILABLE_ERROR_TYPE};
use kv::{Function, Kv};
use kv_dev::sam;
use kv_dev::support::*;
use kv_flow::examples::{Examples, Expectation};
use kv_flow::task_tokens::TaskTokens;
use kv_flow::{
    parse_path, read, Definition, Event, Execution, Hooks, Invoke, Outcome, Segment, TaskFailure,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------------------- definitions

struct Flow {
    /// `statemachines/NAME.asl.json`
    file: String,
    definition: Definition,
    /// `${Placeholder}` -> the function its Task states invoke.
    functions: BTreeMap<String, Function>,
}

impl Flow {
    fn state(&self, name: &str) -> &Value {
        let state = self.definition.state(name);
        state.unwrap_or_else(|| panic!("{}: no state {name}", self.file))
    }

    fn function(&self, resource: &str) -> Function {
        *self
            .functions
            .get(resource)
            .unwrap_or_else(|| panic!("{}: unknown resource {resource}", self.file))
    }
}

/// The placeholder naming a Task's function: its resource, or a waiting Task's `FunctionName`.
fn task_resource(state: &Value) -> &str {
    match state["Resource"].as_str().unwrap_or_default() {
        kv_flow::WAIT_FOR_TASK_TOKEN => state["Parameters"]["FunctionName"]
            .as_str()
            .unwrap_or_default(),
        resource => resource,
    }
}

/// Every state machine of the template, with its definition and functions.
fn flows() -> BTreeMap<String, Flow> {
    let template = sam::template();
    sam::state_machines(&template)
        .iter()
        .map(|machine| {
            let text =
                std::fs::read_to_string(sam::root().join(&machine.definition)).expect("definition");
            let functions = sam::substituted_functions(&template, machine)
                .into_iter()
                .map(|(placeholder, binary)| {
                    // The engine invokes by kv_flow::function_name; deployment by the template's
                    // substitution. They must name the same function.
                    assert_eq!(
                        kv_flow::function_name(&placeholder).as_deref(),
                        Some(binary.as_str()),
                        "{}: {placeholder} is substituted with {binary}",
                        machine.logical_id
                    );
                    let function = sam::function_named(&binary)
                        .unwrap_or_else(|| panic!("{binary} is not a KV function"));
                    (placeholder, function)
                })
                .collect();
            let file = machine
                .definition
                .trim_start_matches("statemachines/")
                .to_string();
            let value = serde_json::from_str(&text).expect("definition is JSON");
            let definition =
                Definition::new(value).unwrap_or_else(|error| panic!("{file}: {error}"));
            let flow = Flow {
                file: file.clone(),
                definition,
                functions,
            };
            (file, flow)
        })
        .collect()
}

// ------------------------------------------------------------------------------- executions

/// Before entering `state` for the first time, another caller invokes `function`: a race.
#[derive(Clone)]
struct Race {
    state: &'static str,
    function: Function,
    payload: Value,
}

/// What the walks saw: the transitions taken and every response of every function.
#[derive(Default)]
struct Record {
    /// (definition, state, transition): `Next`, `Choices[i]`, `Default`, `Catch[i]`, `End`.
    taken: BTreeSet<(String, String, String)>,
    responses: BTreeMap<String, Vec<Value>>,
    retries: usize,
}

impl Record {
    fn merge(&mut self, other: Record) {
        self.taken.extend(other.taken);
        for (function, responses) in other.responses {
            self.responses
                .entry(function)
                .or_default()
                .extend(responses);
        }
        self.retries += other.retries;
    }
}

/// Tasks call the handlers in-process, as the Lambda runtime would.
struct InProcess<'a> {
    kv: &'a Kv,
}

impl Invoke for InProcess<'_> {
    async fn invoke(&self, function: &str, payload: Value) -> Result<Value, TaskFailure> {
        let function = sam::function_named(function)
            .unwrap_or_else(|| panic!("{function} is not a KV function"));
        invoke(self.kv, function, payload)
            .await
            .map_err(|error| TaskFailure {
                error_type: error.error_type().to_string(),
                message: error.to_string(),
            })
    }
}

/// Records what a walk does, runs its race, and retries at once (the waits prove nothing here).
struct Recorder<'a> {
    file: &'a str,
    kv: &'a Kv,
    race: Option<&'a Race>,
    record: &'a mut Record,
}

impl Hooks for Recorder<'_> {
    async fn before_state(&mut self, state: &str) {
        if let Some(race) = self.race.filter(|race| race.state == state) {
            self.race = None;
            let response = call(self.kv, race.function, race.payload.clone()).await;
            assert_eq!(status(&response), 200, "the race itself failed: {response}");
        }
    }

    /// A Wait state is really waited: a lock's holder holds it while another flow waits.
    async fn wait(&mut self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }

    fn event(&mut self, event: &Event<'_>) {
        match event {
            Event::Transition { state, transition } => {
                self.record.taken.insert((
                    self.file.to_string(),
                    state.to_string(),
                    transition.label(),
                ));
            }
            Event::Task {
                function, response, ..
            } => self
                .record
                .responses
                .entry(function.to_string())
                .or_default()
                .push((*response).clone()),
            Event::Retry { .. } => self.record.retries += 1,
            _ => {}
        }
    }
}

async fn execute(
    flow: &Flow,
    place: &Place,
    input: Value,
    race: Option<&Race>,
    record: &mut Record,
) -> Outcome {
    let kv = &place.kv;
    let mut recorder = Recorder {
        file: &flow.file,
        kv,
        race,
        record,
    };
    let mut execution = Execution::new(flow.file.trim_end_matches(".asl.json"));
    if let Some(tokens) = &place.tokens {
        execution = execution.with_tokens(tokens.clone());
    }
    flow.definition
        .execute_in(input, &InProcess { kv }, &mut recorder, &execution)
        .await
}

/// Every transition a definition declares.
fn transitions(flow: &Flow) -> BTreeSet<(String, String, String)> {
    flow.definition
        .transitions()
        .into_iter()
        .map(|(state, transition)| (flow.file.clone(), state, transition))
        .collect()
}

// ------------------------------------------------------------------------------- scenarios

#[derive(Clone)]
struct Run {
    name: String,
    input: Value,
    race: Option<Race>,
    expect: Expectation,
    /// Starts together with the previous run, this long after the group starts.
    together: Option<Duration>,
}

/// Executions of one definition, in order, in fresh tables (or in tables that do not exist).
struct World {
    flow: &'static str,
    runs: Vec<Run>,
    store: Store,
}

/// The store a world's executions meet.
#[derive(Clone, Copy)]
enum Store {
    /// Fresh tables.
    Ready,
    /// Nothing answers at the endpoint: every call is `KvUnavailable`.
    Unreachable,
    /// DynamoDB answers, but the tables do not exist: every call is `KvInternal`.
    TablesMissing,
    /// A DynamoDB Local of the world's own, whose items stream resumes waiting flows through
    /// the engine's task-token API: for definitions with `.waitForTaskToken` Tasks.
    Watched,
}

fn run(name: &str, input: Value, expect: Expectation) -> Run {
    Run {
        name: name.to_string(),
        input,
        race: None,
        expect,
        together: None,
    }
}

fn raced(name: &str, input: Value, race: Race, expect: Expectation) -> Run {
    Run {
        race: Some(race),
        ..run(name, input, expect)
    }
}

fn world(flow: &'static str, runs: Vec<Run>) -> World {
    World {
        flow,
        runs,
        store: Store::Ready,
    }
}

/// `make run`'s executions: one world per definition.
fn examples() -> Vec<World> {
    let text = std::fs::read_to_string(sam::root().join("statemachines/examples.json"))
        .expect("statemachines/examples.json");
    let examples = Examples::parse(&text).unwrap_or_else(|error| panic!("{error}"));
    examples
        .flows
        .into_iter()
        .map(|flow| {
            let file: &'static str = flow.definition.leak();
            let runs = flow
                .executions
                .into_iter()
                .map(|execution| Run {
                    together: execution
                        .with_previous
                        .then(|| Duration::from_millis(execution.start_after_ms)),
                    ..run(&execution.name, execution.input, execution.expect)
                })
                .collect();
            World {
                store: if waits_for_tokens(file) {
                    Store::Watched
                } else {
                    Store::Ready
                },
                ..world(file, runs)
            }
        })
        .collect()
}

/// What the examples do not reach: refusals, races and an unavailable store.
fn scenarios() -> Vec<World> {
    let prefs = json!({"theme": "dark"});
    vec![
        world(
            "user-preferences.asl.json",
            vec![
                run(
                    "a user id that is not a valid key is refused",
                    json!({"user_id": "user 123", "preferences": prefs}),
                    Expectation::fails("invalid_key"),
                ),
                run(
                    "preferences saved as a plain string cannot be loaded as JSON",
                    json!({"user_id": "user_789", "preferences": "dark"}),
                    Expectation::fails("value_not_json"),
                ),
            ],
        ),
        world(
            "user-preferences.asl.json",
            vec![raced(
                "someone creates the bucket with another configuration first",
                json!({"user_id": "user_123", "preferences": prefs}),
                Race {
                    state: "CreatePreferencesBucket",
                    function: Function::BucketCreate,
                    payload: json!({"bucket": "user-preferences"}),
                },
                Expectation::fails("bucket_exists"),
            )],
        ),
        world(
            "api-cache.asl.json",
            vec![run(
                "a cache key that is not a valid key: served from the origin, not cached",
                json!({"cache_key": "cache product 456", "product_id": "456"}),
                Expectation::succeeds(json!({"source": "origin"})),
            )],
        ),
        world(
            "api-cache.asl.json",
            vec![raced(
                "the cache bucket exists with another configuration: served from the origin",
                json!({"cache_key": "cache_product_456", "product_id": "456"}),
                Race {
                    state: "CreateCacheBucket",
                    function: Function::BucketCreate,
                    payload: json!({"bucket": "api-cache"}),
                },
                Expectation::succeeds(json!({"source": "origin"})),
            )],
        ),
        world(
            "feature-flags.asl.json",
            vec![
                run(
                    "set a flag",
                    json!({"flag": "new-checkout", "set": {"enabled": true}}),
                    Expectation::succeeds(json!({"enabled": true, "revision": 1})),
                ),
                run(
                    "set another flag: the bucket exists, the flag does not",
                    json!({"flag": "dark-mode", "set": {"enabled": false}}),
                    Expectation::succeeds(json!({"flag": "dark-mode", "enabled": false})),
                ),
                run(
                    "a revision no longer kept: the latest value",
                    json!({"flag": "new-checkout", "revision": 999}),
                    Expectation::succeeds(json!({"enabled": true})),
                ),
                run(
                    "an unknown flag is off",
                    json!({"flag": "no-such-flag"}),
                    Expectation::succeeds(json!({"enabled": false})),
                ),
                run(
                    "a flag name that is not a valid key is off",
                    json!({"flag": "new checkout"}),
                    Expectation::succeeds(json!({"enabled": false})),
                ),
                run(
                    "setting a flag name that is not a valid key is refused",
                    json!({"flag": "new checkout", "set": {"enabled": true}}),
                    Expectation::fails("invalid_key"),
                ),
                run(
                    "a flag value must be an object",
                    json!({"flag": "new-checkout", "set": true}),
                    Expectation::fails("invalid_value"),
                ),
                run(
                    "a flag value over the bucket's 1 KB limit is refused",
                    json!({"flag": "new-checkout", "set": {"enabled": true, "note": "x".repeat(1100)}}),
                    Expectation::fails("value_too_large"),
                ),
            ],
        ),
        world(
            "feature-flags.asl.json",
            vec![
                run(
                    "set a flag",
                    json!({"flag": "new-checkout", "set": {"enabled": false}}),
                    Expectation::succeeds(json!({"enabled": false})),
                ),
                raced(
                    "someone changes it between the read and the compare-and-set: read again, then set",
                    json!({"flag": "new-checkout", "set": {"enabled": true}}),
                    Race {
                        state: "ChangeFlag",
                        function: Function::KeyPut,
                        payload: json!({"bucket": "feature-flags", "key": "new-checkout", "value": {"enabled": false}}),
                    },
                    Expectation::succeeds(json!({"enabled": true})),
                ),
                raced(
                    "someone creates a new flag first: read it, then compare-and-set",
                    json!({"flag": "dark-mode", "set": {"enabled": true}}),
                    Race {
                        state: "SetNewFlag",
                        function: Function::KeyPut,
                        payload: json!({"bucket": "feature-flags", "key": "dark-mode", "value": {"enabled": false}}),
                    },
                    Expectation::succeeds(json!({"flag": "dark-mode", "enabled": true})),
                ),
            ],
        ),
        world(
            "feature-flags.asl.json",
            vec![raced(
                "the flags bucket exists with another configuration",
                json!({"flag": "new-checkout", "set": {"enabled": true}}),
                Race {
                    state: "CreateFlagsBucket",
                    function: Function::BucketCreate,
                    payload: json!({"bucket": "feature-flags"}),
                },
                Expectation::fails("bucket_exists"),
            )],
        ),
        World {
            flow: "user-preferences.asl.json",
            store: Store::Unreachable,
            runs: vec![
                run(
                    "storing needs the store: the execution fails with KvUnavailable after the retries",
                    json!({"user_id": "user_123", "preferences": prefs}),
                    Expectation::fails(UNAVAILABLE_ERROR_TYPE),
                ),
                run(
                    "logging in without the store: the defaults",
                    json!({"user_id": "user_123"}),
                    Expectation::succeeds(json!({"source": "defaults"})),
                ),
            ],
        },
        World {
            flow: "api-cache.asl.json",
            store: Store::Unreachable,
            runs: vec![run(
                "without the cache: served from the origin",
                json!({"cache_key": "cache_product_456", "product_id": "456"}),
                Expectation::succeeds(json!({"source": "origin"})),
            )],
        },
        World {
            flow: "feature-flags.asl.json",
            store: Store::Unreachable,
            runs: vec![
                run(
                    "checking without the store: off",
                    json!({"flag": "new-checkout"}),
                    Expectation::succeeds(json!({"enabled": false})),
                ),
                run(
                    "checking a revision without the store: off",
                    json!({"flag": "new-checkout", "revision": 1}),
                    Expectation::succeeds(json!({"enabled": false})),
                ),
            ],
        },
        World {
            flow: "user-preferences.asl.json",
            store: Store::TablesMissing,
            runs: vec![run(
                "a broken deployment (no tables) fails with KvInternal, not retried, not hidden",
                json!({"user_id": "user_123"}),
                Expectation::fails(INTERNAL_ERROR_TYPE),
            )],
        },
        world(
            "rate-limiter.asl.json",
            vec![run(
                "a client id that is not a valid key is refused",
                json!({"client": "api key 1"}),
                Expectation::fails("invalid_key"),
            )],
        ),
        World {
            store: Store::Watched,
            ..world(
                "mutex.asl.json",
                vec![
                    run(
                        "a resource name that is not a valid key is refused",
                        json!({"resource": "nightly report", "owner": "a", "hold_seconds": 0, "wait_seconds": 5}),
                        Expectation::fails("invalid_key"),
                    ),
                    raced(
                        "the lease ended and another owner took the lock before the release",
                        json!({"resource": "cleanup", "owner": "slow", "hold_seconds": 0, "wait_seconds": 5}),
                        Race {
                            state: "Release",
                            function: Function::KeyPut,
                            payload: json!({"bucket": "locks", "key": "cleanup", "value": "intruder"}),
                        },
                        Expectation::fails("LeaseLost"),
                    ),
                    run(
                        "a holder keeps the lock for 3 s...",
                        json!({"resource": "export", "owner": "a", "hold_seconds": 3, "wait_seconds": 60}),
                        Expectation::succeeds(json!({"owner": "a"})),
                    ),
                    Run {
                        together: Some(Duration::from_millis(300)),
                        ..run(
                            "... longer than another will wait for it",
                            json!({"resource": "export", "owner": "b", "hold_seconds": 0, "wait_seconds": 1}),
                            Expectation::fails("LockTimeout"),
                        )
                    },
                ],
            )
        },
        World {
            store: Store::Watched,
            ..world(
                "hand-off.asl.json",
                vec![
                    run(
                        "a job id that is not a valid key is refused",
                        json!({"job": "job 42", "role": "producer", "result": "r"}),
                        Expectation::fails("invalid_key"),
                    ),
                    run(
                        "no result within the wait",
                        json!({"job": "job-43", "role": "consumer", "wait_seconds": 1}),
                        Expectation::fails("NoResult"),
                    ),
                ],
            )
        },
    ]
}

/// Whether a definition has `.waitForTaskToken` Tasks.
fn waits_for_tokens(file: &str) -> bool {
    std::fs::read_to_string(sam::root().join("statemachines").join(file))
        .is_ok_and(|text| text.contains(kv_flow::WAIT_FOR_TASK_TOKEN))
}

/// Where a world's executions run: a container, and for a watched store its own DynamoDB Local
/// (kept while the world runs) and the task-token API its flows wait on.
struct Place {
    kv: Kv,
    tokens: Option<Arc<TaskTokens>>,
    _local: Option<PrivateLocal>,
}

async fn place_for(store: Store) -> Place {
    if let Store::Watched = store {
        let local = private_endpoint();
        let tokens = TaskTokens::serve().expect("the task-token API");
        kv_dev::support::stream_pump::follow_waking(&local, &tokens.endpoint());
        let mut kv = Kv::new(client_for(&local), &settings());
        kv.tokens = Some(kv::tokens::TaskTokens::new(kv_dev::moto::Moto::sfn_client(
            &tokens.endpoint(),
        )));
        return Place {
            kv,
            tokens: Some(tokens),
            _local: Some(local),
        };
    }
    Place {
        kv: container_for(store).await,
        tokens: None,
        _local: None,
    }
}

/// A container in fresh tables, or facing an unreachable store or missing tables.
async fn container_for(store: Store) -> Kv {
    let settings = Settings::with_tables(&unique("flow-buckets"), &unique("flow-items"));
    match store {
        Store::Watched => unreachable!("a watched store is a place of its own"),
        Store::Ready => {
            kv::store::schema::ensure_tables(&client(), &settings)
                .await
                .expect("create the tables");
            Kv::new(client(), &settings)
        }
        Store::TablesMissing => Kv::new(client(), &settings),
        Store::Unreachable => {
            // A closed port refuses at once; without the SDK's own retries each call fails
            // fast, and the flow's Retry is what is exercised.
            let closed = format!("http://127.0.0.1:{}", free_port());
            let config = config_for(&closed)
                .retry_config(aws_sdk_dynamodb::config::retry::RetryConfig::disabled())
                .build();
            Kv::new(aws_sdk_dynamodb::Client::from_conf(config), &settings)
        }
    }
}

async fn play(flows: &BTreeMap<String, Flow>, worlds: Vec<World>) -> (Record, Vec<String>) {
    let mut record = Record::default();
    let mut problems = Vec::new();
    for world in worlds {
        let flow = flows
            .get(world.flow)
            .unwrap_or_else(|| panic!("{} is not a state machine of the template", world.flow));
        let place = place_for(world.store).await;
        // Runs in order; a run `together` with the previous one starts with it.
        let mut groups: Vec<Vec<Run>> = Vec::new();
        for run in world.runs {
            match groups.last_mut() {
                Some(group) if run.together.is_some() => group.push(run),
                _ => groups.push(vec![run]),
            }
        }
        for group in groups {
            let place = &place;
            let outcomes = futures_util::future::join_all(group.iter().map(|run| async move {
                tokio::time::sleep(run.together.unwrap_or_default()).await;
                let mut own = Record::default();
                let outcome =
                    execute(flow, place, run.input.clone(), run.race.as_ref(), &mut own).await;
                (outcome, own)
            }))
            .await;
            for (run, (outcome, own)) in group.iter().zip(outcomes) {
                record.merge(own);
                if !run.expect.met_by(&outcome) {
                    problems.push(format!("{} / {}: {:?}", flow.file, run.name, outcome));
                }
            }
        }
    }
    (record, problems)
}

/// (state, path) pairs.
type Reads = Vec<(String, String)>;

/// Every path a definition reads, with the state that reads it; ResultSelector paths read the
/// Task's own result and are returned separately.
fn read_paths(flow: &Flow) -> (Reads, Reads) {
    fn from_template(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(object) => {
                for (key, item) in object {
                    match (key.ends_with(".$"), item) {
                        // The context object and intrinsics read no Task's result.
                        (true, Value::String(path))
                            if path.starts_with("$$") || path.starts_with("States.") => {}
                        (true, Value::String(path)) => out.push(path.clone()),
                        _ => from_template(item, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|item| from_template(item, out)),
            _ => {}
        }
    }
    fn from_rule(rule: &Value, out: &mut Vec<String>) {
        if let Some(path) = rule["Variable"].as_str() {
            out.push(path.to_string());
        }
        for inner in ["And", "Or"] {
            for nested in rule[inner].as_array().into_iter().flatten() {
                from_rule(nested, out);
            }
        }
        if rule["Not"].is_object() {
            from_rule(&rule["Not"], out);
        }
    }
    let mut reads = Vec::new();
    let mut selected = Vec::new();
    for (name, state) in flow.definition.states() {
        let mut paths = Vec::new();
        for field in ["InputPath", "OutputPath", "ErrorPath", "CausePath"] {
            if let Some(path) = state[field].as_str() {
                paths.push(path.to_string());
            }
        }
        from_template(&state["Parameters"], &mut paths);
        for rule in state["Choices"].as_array().into_iter().flatten() {
            from_rule(rule, &mut paths);
        }
        reads.extend(paths.into_iter().map(|path| (name.clone(), path)));
        let mut own = Vec::new();
        from_template(&state["ResultSelector"], &mut own);
        selected.extend(own.into_iter().map(|path| (name.clone(), path)));
    }
    (reads, selected)
}

// ------------------------------------------------------------------------------- tests

/// When a mutex flow holds the lock: from entering `Work` to its release's answer.
#[derive(Default)]
struct Holding {
    since: Option<Instant>,
    held: Option<(Instant, Instant)>,
}

impl Hooks for Holding {
    async fn before_state(&mut self, state: &str) {
        match state {
            "Work" => self.since = Some(Instant::now()),
            "Released" => self.held = self.since.map(|since| (since, Instant::now())),
            _ => {}
        }
    }

    async fn wait(&mut self, delay: Duration) {
        tokio::time::sleep(delay).await;
    }
}

/// Four flows contend for one mutex: each gets it once, one at a time, each resumed by the
/// stream when the holder before it releases (no polling), with increasing fencing tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contending_flows_hold_the_mutex_one_at_a_time() {
    let flows = flows();
    let flow = flows.get("mutex.asl.json").expect("the mutex flow");
    let place = place_for(Store::Watched).await;
    let runs = futures_util::future::join_all((0..4).map(|index| {
        let place = &place;
        async move {
            tokio::time::sleep(Duration::from_millis(100 * index)).await;
            let mut holding = Holding::default();
            let mut execution = Execution::new("mutex");
            if let Some(tokens) = &place.tokens {
                execution = execution.with_tokens(tokens.clone());
            }
            let input = json!({"resource": "shared-report", "owner": format!("worker-{index}"), "hold_seconds": 1, "wait_seconds": 60});
            let outcome = flow
                .definition
                .execute_in(input, &InProcess { kv: &place.kv }, &mut holding, &execution)
                .await;
            (outcome, holding.held)
        }
    }))
    .await;
    let mut holds = Vec::new();
    for (outcome, held) in runs {
        let Outcome::Succeeded(output) = &outcome else {
            panic!("a contender did not get the lock: {outcome:?}");
        };
        let (from, to) = held.expect("it held the lock");
        holds.push((
            from,
            to,
            output["fencing_token"].as_u64().expect("a fencing token"),
        ));
    }
    holds.sort();
    for pair in holds.windows(2) {
        let ((_, released, token), (taken, _, next_token)) = (pair[0], pair[1]);
        assert!(released <= taken, "two flows held the lock at once");
        assert!(
            token < next_token,
            "fencing tokens must increase: {token}, {next_token}"
        );
    }
    // Everyone after the first waited for a release: resumed through the task-token API.
    let resumed = place.tokens.as_ref().map_or(0, |tokens| {
        tokens
            .calls()
            .iter()
            .filter(|call| call.target == "SendTaskSuccess" && call.answer == "200")
            .count()
    });
    assert!(resumed >= 3, "{resumed} resumptions");
}

#[tokio::test]
async fn flows_take_every_transition_and_read_only_what_the_functions_return() {
    let flows = flows();
    let mut worlds = examples();
    worlds.extend(scenarios());
    let started = Instant::now();
    let (record, problems) = play(&flows, worlds).await;
    assert!(
        problems.is_empty(),
        "unexpected outcomes:\n{}",
        problems.join("\n")
    );
    assert!(record.retries > 0, "KvUnavailable was never retried");
    eprintln!("flows played in {:?}", started.elapsed());

    // Every transition of every definition was taken.
    let mut untaken = Vec::new();
    for flow in flows.values() {
        for transition in transitions(flow).difference(&record.taken) {
            untaken.push(format!("{transition:?}"));
        }
    }
    assert!(
        untaken.is_empty(),
        "transitions no execution took (add a scenario):\n{}",
        untaken.join("\n")
    );

    // Every path read from a Task's result exists in a real response of its function.
    let mut unknown = Vec::new();
    for flow in flows.values() {
        let mut results: BTreeMap<String, Vec<Function>> = BTreeMap::new();
        for (name, state) in flow.definition.states() {
            if state["Type"] != "Task" {
                continue;
            }
            let path = state["ResultPath"].as_str().unwrap_or_default();
            let segments = parse_path(path).unwrap_or_default();
            assert!(
                matches!(segments.as_slice(), [Segment::Field(_)]),
                "{}: {name}: a Task's ResultPath must be one field, like $.loaded, not {path:?}",
                flow.file
            );
            let function = flow.function(task_resource(state));
            let writers = results.entry(path.to_string()).or_default();
            if !writers.contains(&function) {
                writers.push(function);
            }
        }
        let (reads, selected) = read_paths(flow);
        let check =
            |state: &str, function: Function, rest: &[Segment], unknown: &mut Vec<String>| {
                let seen = record.responses.get(function.name()).map(Vec::as_slice);
                let found = seen
                    .unwrap_or_default()
                    .iter()
                    .any(|response| read(response, rest).is_some());
                if !found {
                    unknown.push(format!(
                        "{}: {state} reads {rest:?} of {}'s result, which no response had",
                        flow.file,
                        function.name()
                    ));
                }
            };
        for (state, path) in reads {
            let segments = parse_path(&path).expect("supported path");
            let Some(Segment::Field(first)) = segments.first() else {
                continue;
            };
            if let Some(functions) = results.get(&format!("$.{first}")) {
                for function in functions {
                    check(&state, *function, &segments[1..], &mut unknown);
                }
            }
        }
        for (state, path) in selected {
            let function = flow.function(task_resource(flow.state(&state)));
            check(&state, function, &parse_path(&path).unwrap(), &mut unknown);
        }
    }
    assert!(unknown.is_empty(), "{}", unknown.join("\n"));
}

#[test]
fn every_definition_has_examples() {
    let flows = flows();
    let played: BTreeSet<String> = examples()
        .iter()
        .map(|world| world.flow.to_string())
        .collect();
    for file in flows.keys() {
        assert!(
            played.contains(file),
            "statemachines/examples.json plays no execution of {file}"
        );
    }
}

// ------------------------------------------------------------------------------- the runtime

/// One HTTP/1.1 request: (status, body).
fn http_post(port: u16, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").expect("headers");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut decoded = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            decoded.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        decoded
    } else {
        body.to_string()
    };
    (status, body)
}

/// The binaries under `cargo lambda watch --only-lambda-apis`: the real runtime API and the
/// real Invoke API, without compiling anything (the binaries are the ones `cargo test` built).
#[test]
fn the_binaries_serve_the_invoke_api_and_log_json_with_request_ids() {
    let root = sam::root();
    let installed = Command::new("cargo-lambda")
        .args(["lambda", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    assert!(installed, "cargo-lambda not found: run `make tools`");
    let invoke_port = free_port();
    let mut watch = Command::new("cargo-lambda");
    watch
        .current_dir(&root)
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "--invoke-address",
            "127.0.0.1",
        ])
        .args(["--invoke-port", &invoke_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut watch = spawn_owned(watch);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", invoke_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let logs = std::env::temp_dir().join(format!("kv-e2e-logs-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let bucket = unique("smoke");
    let secret = format!("value-that-must-not-be-logged-{}", std::process::id());
    // (function, binary, items table): kv-key-list is given a table that does not exist.
    let functions = [
        (
            "kv-bucket-create",
            function_binary("kv-bucket-create"),
            ITEMS_TABLE,
        ),
        ("kv-key-put", function_binary("kv-key-put"), ITEMS_TABLE),
        ("kv-key-get", function_binary("kv-key-get"), ITEMS_TABLE),
        (
            "kv-key-list",
            function_binary("kv-key-list"),
            "no-such-table",
        ),
    ];
    let mut processes = Vec::new();
    for (name, binary, items) in functions {
        let mut command = Command::new(binary);
        command
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{invoke_port}/.rt/{name}"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .env_remove("AWS_LAMBDA_LOG_LEVEL")
            .env_remove("RUST_LOG")
            .env("AWS_ENDPOINT_URL_DYNAMODB", endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("KV_BUCKETS_TABLE", BUCKETS_TABLE)
            .env("KV_ITEMS_TABLE", items)
            .stdout(std::fs::File::create(logs.join(name)).unwrap())
            .stderr(Stdio::null());
        processes.push((name, spawn_owned(command)));
    }

    let invoke = |name: &str, payload: Value| {
        http_post(
            invoke_port,
            &format!("/2015-03-31/functions/{name}/invocations"),
            &payload.to_string(),
        )
    };
    let (code, body) = invoke("kv-bucket-create", json!({"bucket": bucket}));
    let created: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (code, created["status_code"].as_u64()),
        (200, Some(200)),
        "{body}"
    );
    let (code, body) = invoke(
        "kv-key-put",
        json!({"bucket": bucket, "key": "user_123", "value": {"secret": secret}}),
    );
    assert_eq!(code, 200);
    let put: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(put["body"]["revision"], 1, "{put}");
    let (_, body) = invoke(
        "kv-key-get",
        json!({"bucket": bucket, "key": "user_123", "json": true}),
    );
    let got: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        got["body"]["body"]["value"]["secret"],
        secret.as_str(),
        "{got}"
    );
    // JSON nested past the parser's limit reaches the handler (the runtime takes the event as
    // text) and is the caller's 400, as an envelope.
    let deep = format!(
        r#"{{"bucket": "{bucket}", "key": "deep", "value": {{"a": {}1{}}}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let (code, body) = http_post(
        invoke_port,
        "/2015-03-31/functions/kv-key-put/invocations",
        &deep,
    );
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            code,
            refused["status_code"].as_u64(),
            refused["body"]["code"].as_str()
        ),
        (200, Some(400), Some("invalid_value")),
        "{body}"
    );
    let (_, body) = invoke("kv-key-get", json!({"bucket": bucket, "key": "user_456"}));
    let missing: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(missing["status_code"], 404, "{missing}");
    // A missing table is a broken deployment: a Lambda error of its own type, which the flows
    // do not retry, naming what is wrong.
    let (code, body) = invoke("kv-key-list", json!({"bucket": bucket}));
    assert_eq!(code, 500, "{body}");
    let failure: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(failure["errorType"], INTERNAL_ERROR_TYPE, "{failure}");
    assert!(
        failure["errorMessage"]
            .as_str()
            .is_some_and(|message| message.contains("ResourceNotFoundException")),
        "{failure}"
    );

    for (_, process) in &mut processes {
        let _ = process.kill();
        let _ = process.wait();
    }
    let _ = watch.kill();
    let _ = watch.wait();

    // Every line is JSON with the invocation's request id; no value is ever logged.
    let invocations = [
        ("kv-bucket-create", 1),
        ("kv-key-put", 2),
        ("kv-key-get", 2),
        ("kv-key-list", 1),
    ];
    for (name, count) in invocations {
        let text = std::fs::read_to_string(logs.join(name)).unwrap();
        assert!(!text.contains(&secret), "{name} logged a value:\n{text}");
        let mut request_ids = BTreeSet::new();
        let mut records = 0;
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            // The invocation's metric record: valid, and naming no bucket.
            if let Some(record) = kv_dev::emf::parse(line) {
                let problems = kv_dev::emf::problems(&record);
                assert!(problems.is_empty(), "{name}: {problems:?} in {line}");
                assert_eq!(record["Function"], name, "{line}");
                assert!(!line.contains(&bucket), "{name}: a bucket name in {line}");
                records += 1;
                continue;
            }
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("{name} logged a line that is not JSON: {line}"));
            let request_id = entry["span"]["requestId"].as_str().unwrap_or_default();
            assert!(
                !request_id.is_empty(),
                "{name}: a line without the request id: {line}"
            );
            request_ids.insert(request_id.to_string());
        }
        assert_eq!(
            request_ids.len(),
            count,
            "{name}: one request id per invocation:\n{text}"
        );
        assert_eq!(
            records, count,
            "{name}: one metric record per invocation:\n{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&logs);
}
