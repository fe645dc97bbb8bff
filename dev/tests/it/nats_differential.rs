//! Differential test against a real NATS JetStream KV: the same random sequences of operations
//! run on `nats-server -js` (through tests/nats/driver.py and nats-py) and on our functions
//! (in-process, against DynamoDB Local), and every operation's outcome must agree.
//!
//! What is compared, operation by operation: the outcome class (success, key not found, wrong
//! last revision), values, the revision each write got, each read's revision, a key's history
//! (revisions, operations PUT/DEL/PURGE, values, oldest first) and the live keys with their
//! values and revisions, in order, with and without a subject filter.
//!
//! What is normalised, and why the contract allows it:
//! - Revisions are compared by rank, not by number: a revision becomes the ordinal of the
//!   successful write that produced it (1 for the run's first successful write). Both stores
//!   number a bucket's writes with one increasing sequence, but ours may skip numbers (SPEC
//!   "Revisions": strictly increasing, not contiguous) while NATS's stream sequence does not.
//!   A revision that no write of the run produced stays visible as "unknown".
//! - Revisions that an operation names (get at a revision, update/delete at a revision) are
//!   given symbolically ("the key's latest write", "its write before that", "another key's
//!   latest write", "one never written") and each side resolves them from its own writes.
//! - NATS values are bytes, ours are strings: the driver answers NATS's bytes as UTF-8 text
//!   (only text is written), and markers' empty payloads as null as our history shows them.
//! - NATS answers one error for every failed compare-and-set (wrong last sequence); ours names
//!   the case: 409 `key_exists` for a create (`revision: 0`), 409 `revision_mismatch` for an
//!   update or delete at a revision. Each maps to NATS's error for that operation only.
//! - nats-py raises NoKeysError for the keys of an empty bucket; ours lists none (200). Both
//!   mean "no live keys". For history, NoKeysError is NATS's "key not found".
//!
//! Runs: every history setting in HISTORIES with every seed in SEEDS. A failure prints the seed,
//! the history and the operations up to the first difference; `NATS_DIFF_SEED=S` (and
//! `NATS_DIFF_HISTORY=H`) runs just that sequence.

use kv::Function::{KeyDelete, KeyGet, KeyHistory, KeyList, KeyPut};
use kv::Kv;
use kv_dev::support::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const HISTORIES: [i64; 4] = [1, 3, 10, 64];
const SEEDS: [u64; 3] = [0x5eed_0001, 0x5eed_0002, 0x5eed_0003];
const OPS_PER_RUN: usize = 120;
/// Keys, some with dots so that subject filters pick some of them.
pub(crate) const KEYS: [&str; 6] = [
    "alpha",
    "beta",
    "user.1",
    "user.2",
    "user.admin.x",
    "order-7",
];
const FILTERS: [&str; 6] = ["user.*", "user.>", "*", ">", "alpha", "user.*.x"];
/// A revision no run reaches: a few hundred writes at most.
const NEVER: u64 = 1_000_000_000;

/// A revision that an operation names, resolved by each side from its own writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum At {
    /// The key's latest successful write (a marker included).
    Latest,
    /// The key's successful write this many before its latest.
    Older(usize),
    /// The latest successful write of any other key.
    OtherKey,
    /// A revision that was never written.
    Never,
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Put {
        key: &'static str,
        value: String,
    },
    Create {
        key: &'static str,
        value: String,
    },
    Update {
        key: &'static str,
        value: String,
        at: At,
    },
    Delete {
        key: &'static str,
        at: Option<At>,
    },
    Purge {
        key: &'static str,
    },
    Get {
        key: &'static str,
        at: Option<At>,
    },
    History {
        key: &'static str,
    },
    Keys {
        filter: Option<&'static str>,
    },
}

impl Op {
    fn key(&self) -> Option<&'static str> {
        match self {
            Op::Put { key, .. }
            | Op::Create { key, .. }
            | Op::Update { key, .. }
            | Op::Delete { key, .. }
            | Op::Purge { key }
            | Op::Get { key, .. }
            | Op::History { key } => Some(key),
            Op::Keys { .. } => None,
        }
    }

    /// The operation's name, with how it names a revision, for the tally of what was covered.
    fn kind(&self) -> String {
        let name = match self {
            Op::Put { .. } => "put",
            Op::Create { .. } => "create",
            Op::Update { .. } => "update",
            Op::Delete { .. } => "delete",
            Op::Purge { .. } => "purge",
            Op::Get { .. } => "get",
            Op::History { .. } => "history",
            Op::Keys { filter: None } => "keys",
            Op::Keys { filter: Some(_) } => "keys filtered",
        };
        match self {
            Op::Update { at, .. }
            | Op::Delete { at: Some(at), .. }
            | Op::Get { at: Some(at), .. } => {
                let at = format!("{at:?}");
                format!("{name} at {}", at.split('(').next().unwrap_or_default())
            }
            _ => name.to_string(),
        }
    }

    pub(crate) fn writes(&self) -> bool {
        matches!(
            self,
            Op::Put { .. }
                | Op::Create { .. }
                | Op::Update { .. }
                | Op::Delete { .. }
                | Op::Purge { .. }
        )
    }
}

pub(crate) fn generate(seed: u64, count: usize) -> Vec<Op> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut ops = Vec::with_capacity(count);
    for index in 0..count {
        let key = KEYS[rng.usize(..KEYS.len())];
        // Mostly distinct values, so a value read back tells which write it came from; now and
        // then an empty one and one beyond ASCII.
        let value = match rng.u32(..20) {
            0 => String::new(),
            1 => format!("grüße {index} →"),
            _ => format!("v{index}"),
        };
        let at = |rng: &mut fastrand::Rng| match rng.u32(..10) {
            0..=4 => At::Latest,
            5..=6 => At::Older(rng.usize(1..=3)),
            7 => At::OtherKey,
            _ => At::Never,
        };
        let op = match rng.u32(..100) {
            0..=19 => Op::Put { key, value },
            20..=29 => Op::Create { key, value },
            30..=43 => Op::Update {
                key,
                value,
                at: at(&mut rng),
            },
            44..=53 => Op::Delete {
                key,
                at: (rng.u32(..3) == 0).then(|| at(&mut rng)),
            },
            54..=57 => Op::Purge { key },
            58..=77 => Op::Get {
                key,
                at: rng.bool().then(|| at(&mut rng)),
            },
            78..=89 => Op::History { key },
            _ => Op::Keys {
                filter: rng.bool().then(|| FILTERS[rng.usize(..FILTERS.len())]),
            },
        };
        ops.push(op);
    }
    ops
}

/// One side's successful writes, in order: resolves named revisions and ranks revisions.
#[derive(Default)]
pub(crate) struct Writes(Vec<(&'static str, u64)>);

impl Writes {
    fn resolve(&self, key: &str, at: At) -> u64 {
        let mut of_key = self.0.iter().rev().filter(|(k, _)| *k == key);
        let found = match at {
            At::Latest => of_key.next(),
            At::Older(back) => of_key.nth(back),
            At::OtherKey => self.0.iter().rev().find(|(k, _)| *k != key),
            At::Never => None,
        };
        found.map_or(NEVER, |(_, revision)| *revision)
    }

    /// The ordinal of the write that produced `revision` (0 stays 0: "no revision").
    pub(crate) fn rank(&self, revision: &Value) -> Value {
        match revision.as_u64() {
            Some(0) => json!(0),
            Some(number) => match self.0.iter().position(|(_, r)| *r == number) {
                Some(position) => json!(position + 1),
                None => json!(format!("unknown revision {number}")),
            },
            None => revision.clone(),
        }
    }

    /// Records a successful write and answers its normalised outcome.
    fn wrote(&mut self, key: &'static str, revision: &Value) -> Value {
        match revision.as_u64() {
            Some(number) => {
                self.0.push((key, number));
                json!({"ok": true, "rev": self.0.len()})
            }
            None => json!({"ok": "without a revision", "revision": revision}),
        }
    }
}

/// History or listing entries as [rank, key, operation, value] rows.
fn rows(writes: &Writes, entries: &[Value], revision_field: &str) -> Value {
    entries
        .iter()
        .map(|entry| {
            json!([
                writes.rank(&entry[revision_field]),
                entry["key"],
                entry.get("operation").cloned().unwrap_or(json!("PUT")),
                entry["value"]
            ])
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// NATS side

fn nats_server_binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|path| path.is_file())
        .expect("nats-server not installed: run `make tools`")
}

/// nats-server with JetStream on a free loopback port and a fresh store, and the Python driver
/// connected to it; both are killed (and the store removed) when this is dropped, and die with
/// the test process in any case.
pub(crate) struct Nats {
    server: Child,
    driver: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    store: PathBuf,
}

impl Nats {
    pub(crate) fn start() -> Nats {
        let port = free_port();
        // Per server: the suite's NATS tests may run at once in this process.
        let store =
            std::env::temp_dir().join(format!("nats-differential-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&store);
        let mut command = Command::new(nats_server_binary());
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let server = spawn_owned(command);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let script = kv_dev::root().join("dev/tests/it/nats/driver.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .arg(format!("nats://127.0.0.1:{port}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut driver = spawn_owned(command);
        let input = driver.stdin.take().expect("driver stdin");
        let output = BufReader::new(driver.stdout.take().expect("driver stdout"));
        Nats {
            server,
            driver,
            input,
            output,
            store,
        }
    }

    /// One operation, one answer (the driver bounds every NATS call by its own timeout).
    pub(crate) fn run(&mut self, op: Value) -> Value {
        writeln!(self.input, "{op}").expect("write to the NATS driver");
        self.input.flush().expect("flush the NATS driver's input");
        let mut line = String::new();
        self.output
            .read_line(&mut line)
            .expect("read from the NATS driver");
        assert!(
            !line.is_empty(),
            "the NATS driver exited (see its stderr above) at {op}"
        );
        serde_json::from_str(&line)
            .unwrap_or_else(|error| panic!("driver answered {line:?}: {error}"))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// NATS's answer to `op`, normalised.
pub(crate) fn nats_outcome(nats: &mut Nats, bucket: &str, op: &Op, writes: &mut Writes) -> Value {
    let request = match op {
        Op::Put { key, value } => json!({"op": "put", "key": key, "value": value}),
        Op::Create { key, value } => json!({"op": "create", "key": key, "value": value}),
        Op::Update { key, value, at } => {
            json!({"op": "update", "key": key, "value": value, "last": writes.resolve(key, *at)})
        }
        Op::Delete { key, at } => {
            json!({"op": "delete", "key": key, "last": at.map(|at| writes.resolve(key, at))})
        }
        Op::Purge { key } => json!({"op": "purge", "key": key}),
        Op::Get { key, at } => {
            json!({"op": "get", "key": key, "revision": at.map(|at| writes.resolve(key, at))})
        }
        Op::History { key } => json!({"op": "history", "key": key}),
        Op::Keys { filter } => json!({"op": "keys", "filter": filter}),
    };
    let mut request = request;
    request["bucket"] = json!(bucket);
    let answer = nats.run(request);
    if answer["ok"] != true {
        return match answer["error"].as_str() {
            Some("not_found") => json!({"error": "not_found"}),
            Some("wrong_last_sequence") => {
                json!({"error": "wrong_last_sequence", "current": writes.rank(&answer["current"])})
            }
            _ => json!({"error": "other", "nats": answer}),
        };
    }
    match op {
        _ if op.writes() => writes.wrote(op.key().unwrap(), &answer["revision"]),
        Op::Get { .. } => {
            json!({"ok": true, "value": answer["value"], "rev": writes.rank(&answer["revision"])})
        }
        Op::History { .. } => {
            let entries = answer["entries"].as_array().cloned().unwrap_or_default();
            json!({"ok": true, "entries": rows(writes, &entries, "revision")})
        }
        Op::Keys { filter } => {
            let entries = answer["entries"].as_array().cloned().unwrap_or_default();
            let mut outcome = json!({"ok": true, "entries": rows(writes, &entries, "revision")});
            if filter.is_none() {
                let mut keys: Vec<String> = answer["keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|key| key.as_str().unwrap_or_default().to_string())
                    .collect();
                keys.sort();
                outcome["keys"] = json!(keys);
            }
            outcome
        }
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------------
// Our side

/// Our functions' answer to `op`, normalised.
pub(crate) async fn our_outcome(kv: &Kv, bucket: &str, op: &Op, writes: &mut Writes) -> Value {
    let (function, params) = match op {
        Op::Put { key, value } => (KeyPut, json!({"key": key, "value": value})),
        Op::Create { key, value } => (KeyPut, json!({"key": key, "value": value, "revision": 0})),
        Op::Update { key, value, at } => (
            KeyPut,
            json!({"key": key, "value": value, "revision": writes.resolve(key, *at)}),
        ),
        Op::Delete { key, at } => match at {
            Some(at) => (
                KeyDelete,
                json!({"key": key, "revision": writes.resolve(key, *at)}),
            ),
            None => (KeyDelete, json!({"key": key})),
        },
        Op::Purge { key } => (KeyDelete, json!({"key": key, "purge": true})),
        Op::Get { key, at } => match at {
            Some(at) => (
                KeyGet,
                json!({"key": key, "revision": writes.resolve(key, *at)}),
            ),
            None => (KeyGet, json!({"key": key})),
        },
        Op::History { key } => (KeyHistory, json!({"key": key})),
        Op::Keys { filter } => match filter {
            Some(filter) => (KeyList, json!({"filter": filter})),
            None => (KeyList, json!({})),
        },
    };
    let mut params = params;
    params["bucket"] = json!(bucket);
    let response = call(kv, function, params).await;
    let body = &response["body"];
    if status(&response) != 200 {
        // Our 409s name the compare-and-set that failed; NATS has one error for both.
        return match (status(&response), code(&response), op) {
            (404, "key_not_found", Op::Get { .. } | Op::History { .. }) => {
                json!({"error": "not_found"})
            }
            (409, "key_exists", Op::Create { .. })
            | (409, "revision_mismatch", Op::Update { .. } | Op::Delete { .. }) => {
                json!({"error": "wrong_last_sequence", "current": writes.rank(&body["current_revision"])})
            }
            _ => json!({"error": "other", "ours": response}),
        };
    }
    match op {
        _ if op.writes() => writes.wrote(op.key().unwrap(), &body["revision"]),
        Op::Get { .. } => json!({
            "ok": true,
            "value": body["body"]["value"],
            "rev": writes.rank(&body["metadata"]["revision"]),
        }),
        Op::History { key } => {
            let mut entries = body["body"]["results"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for entry in &mut entries {
                entry["key"] = json!(key);
            }
            json!({"ok": true, "entries": rows(writes, &entries, "revision")})
        }
        Op::Keys { filter } => {
            assert_eq!(body["body"]["has_more"], false, "{response}");
            let entries = body["body"]["results"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut outcome = json!({"ok": true, "entries": rows(writes, &entries, "sequence")});
            if filter.is_none() {
                let mut keys: Vec<String> = entries
                    .iter()
                    .map(|entry| entry["key"].as_str().unwrap_or_default().to_string())
                    .collect();
                keys.sort();
                outcome["keys"] = json!(keys);
            }
            outcome
        }
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------------

/// Runs one sequence on both sides; the first difference, described, if any.
/// Counts each operation kind's outcome classes into `tally`.
async fn run_sequence(
    nats: &mut Nats,
    kv: &Kv,
    history: i64,
    seed: u64,
    tally: &mut BTreeMap<(String, String), usize>,
) -> Option<String> {
    let ops = generate(seed, OPS_PER_RUN);
    let nats_bucket = unique("natsdiff");
    let created = nats.run(json!({"op": "bucket", "bucket": nats_bucket, "history": history}));
    assert_eq!(created["ok"], true, "NATS bucket: {created}");
    let ours = bucket(kv, "natsdiff", json!({"history": history})).await;
    let (mut nats_writes, mut our_writes) = (Writes::default(), Writes::default());
    for (index, op) in ops.iter().enumerate() {
        let theirs = nats_outcome(nats, &nats_bucket, op, &mut nats_writes);
        let mine = our_outcome(kv, &ours, op, &mut our_writes).await;
        let class = mine["error"].as_str().unwrap_or("ok").to_string();
        *tally.entry((op.kind(), class)).or_default() += 1;
        if theirs != mine {
            let steps: Vec<String> = ops[..=index]
                .iter()
                .enumerate()
                .map(|(i, op)| format!("  #{i}: {op:?}"))
                .collect();
            return Some(format!(
                "history {history}, seed {seed:#x} (NATS_DIFF_SEED={seed} NATS_DIFF_HISTORY={history}): operation #{index} differs\n\
                 operations:\n{}\n  NATS: {theirs}\n  ours: {mine}",
                steps.join("\n")
            ));
        }
    }
    None
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok().map(|n| n.to_string()),
        None => Some(text.to_string()),
    };
    parsed.and_then(|text| text.parse().ok())
}

#[tokio::test]
async fn same_outcomes_as_nats_jetstream_kv() {
    let started = Instant::now();
    let mut nats = Nats::start();
    let kv = container();
    let seeds: Vec<u64> = env_number("NATS_DIFF_SEED").map_or(SEEDS.to_vec(), |seed| vec![seed]);
    let histories: Vec<i64> =
        env_number("NATS_DIFF_HISTORY").map_or(HISTORIES.to_vec(), |history| vec![history]);
    let mut differences = Vec::new();
    let mut tally = BTreeMap::new();
    for &history in &histories {
        for &seed in &seeds {
            let run = Instant::now();
            if let Some(difference) = run_sequence(&mut nats, &kv, history, seed, &mut tally).await
            {
                differences.push(difference);
            }
            eprintln!(
                "history {history}, seed {seed:#x}: {OPS_PER_RUN} operations in {:?}",
                run.elapsed()
            );
        }
    }
    eprintln!("outcomes compared (operation, outcome: count):");
    for ((kind, class), count) in &tally {
        eprintln!("  {kind}, {class}: {count}");
    }
    eprintln!("differential run took {:?}", started.elapsed());
    assert!(
        differences.is_empty(),
        "{} of {} sequences differ from NATS:\n\n{}",
        differences.len(),
        histories.len() * seeds.len(),
        differences.join("\n\n")
    );
}
