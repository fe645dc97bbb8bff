//! The in-process half: each case calls the handler as the Lambda runtime would
//! (`kv::lambda::dispatch::handle`) and the raw SDK call that is its floor against a plain table,
//! alternately, through one metered client.

use crate::units::{self, Capture, Captured, IndexModel, Item};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use kv::{Function, Kv};
use kv_dev::meter::Meter;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The raw call a case is compared with, on the plain table (`pk` + `sk`, value in `v`).
#[derive(Debug, Clone)]
pub enum Baseline {
    None,
    /// Strongly consistent GetItem.
    GetItem {
        pk: String,
    },
    PutItem {
        pk: String,
        value: Vec<u8>,
    },
    /// DeleteItem of an item of the value's size (put back, unmeasured, before each call).
    DeleteItem {
        pk: String,
        value: Vec<u8>,
    },
    /// One strongly consistent Query page of the partition.
    QueryPage {
        pk: String,
        limit: i32,
    },
    /// Every page of the partition, strongly consistent.
    QueryAll {
        pk: String,
    },
    /// One strongly consistent Scan page of the buckets table.
    ScanBuckets,
    /// Exactly the request kv-key-get sends, raw: the `GetItem` of the key's head.
    LatestRevision {
        bucket: String,
        key: String,
    },
}

impl Baseline {
    pub fn name(&self) -> &'static str {
        match self {
            Baseline::None => "-",
            Baseline::GetItem { .. } => "GetItem",
            Baseline::PutItem { .. } => "PutItem",
            Baseline::DeleteItem { .. } => "DeleteItem",
            Baseline::QueryPage { .. } => "Query page",
            Baseline::QueryAll { .. } => "Query (all pages)",
            Baseline::ScanBuckets => "Scan page",
            Baseline::LatestRevision { .. } => "GetItem of the head",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Case {
    pub op: &'static str,
    pub variant: String,
    pub value_bytes: usize,
    pub stored_bytes: Option<usize>,
    pub history: Option<i64>,
    pub compression: Option<bool>,
    pub function: Function,
    /// Served by the container whose memory cache keeps entries for the whole run.
    pub memory_hit: bool,
    pub event: Value,
    /// An unmeasured handler call before each measured one (a put before each delete).
    pub prepare: Option<(Function, Value)>,
    pub baseline: Baseline,
    /// The handler's own DynamoDB request sent raw, to split the handler's time into its
    /// code and its choice of request.
    pub shadow: Baseline,
    /// Key partitions of the items table, and single items (table, key), that the operation
    /// writes, read before and after to price its writes.
    pub partitions: Vec<String>,
    pub singles: Vec<(String, Item)>,
}

#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub iterations: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub requests: f64,
    /// Sequential groups of requests (parallel requests share one round trip), the fewest seen
    /// over the calls that were priced.
    pub round_trips: f64,
    /// Requests per iteration by operation, e.g. {"GetItem": 1.0}.
    pub operations: BTreeMap<String, f64>,
    pub rcu: f64,
    pub wcu: f64,
    /// What DynamoDB Local itself reported for writes (transactions under-reported).
    pub local_wcu: f64,
    /// Where the units go, request by request: (what, units, "RCU" or "WCU").
    pub parts: Vec<(String, f64, &'static str)>,
    /// Plain write requests by operation: (operation, AWS's model, DynamoDB Local's report),
    /// per call; the two should agree.
    pub plain_writes: Vec<(String, f64, f64)>,
    /// Written items the snapshots did not cover (should be 0).
    pub uncovered: usize,
}

#[derive(Debug, Clone)]
pub struct Row {
    pub case: Case,
    pub handler: Measured,
    pub baseline: Option<Measured>,
    pub shadow: Option<Measured>,
    /// For a get: the size of the item it reads (the key's head), in DynamoDB's accounting.
    pub read_item_bytes: Option<usize>,
}

impl Row {
    pub fn ratio(&self) -> Option<f64> {
        let baseline = self.baseline.as_ref()?;
        (baseline.p50 > Duration::ZERO)
            .then(|| self.handler.p50.as_secs_f64() / baseline.p50.as_secs_f64())
    }
}

pub struct Bench {
    pub kv: Kv,
    pub memory_kv: Kv,
    /// The metered client, also the baselines' client.
    pub client: Client,
    /// An unmetered client for setup and snapshots.
    pub observer: Client,
    pub meter: Meter,
    pub capture: Capture,
    pub plain_table: String,
    pub buckets_table: String,
    pub items_table: String,
    pub indexes: Vec<IndexModel>,
    pub row_budget: Duration,
    /// The KV tables' settings, for containers started during the run.
    pub settings: kv::model::config::Settings,
}

pub fn s(text: impl Into<String>) -> AttributeValue {
    AttributeValue::S(text.into())
}

pub fn n(number: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

fn percentile(sorted: &[Duration], percent: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

impl Bench {
    /// Calls a handler and insists on a 200: a benchmark of refusals would measure nothing.
    pub async fn call(&self, kv: &Kv, function: Function, event: Value) -> Value {
        let shown = event.to_string();
        let response = kv::lambda::dispatch::handle(kv, function, event)
            .await
            .unwrap_or_else(|error| panic!("{} {shown}: KvUnavailable {error}", function.name()));
        assert_eq!(
            response["status_code"],
            200,
            "{} {}: {response}",
            function.name(),
            shown.chars().take(200).collect::<String>()
        );
        response
    }

    pub async fn plain_put(&self, pk: &str, sk: u64, value: &[u8]) {
        self.client
            .put_item()
            .table_name(&self.plain_table)
            .item("pk", s(pk))
            .item("sk", n(sk))
            .item("v", AttributeValue::B(Blob::new(value)))
            .send()
            .await
            .expect("plain PutItem");
    }

    async fn baseline_once(&self, baseline: &Baseline) -> Duration {
        match baseline {
            Baseline::None => Duration::ZERO,
            Baseline::GetItem { pk } => {
                let started = Instant::now();
                let found = self
                    .client
                    .get_item()
                    .table_name(&self.plain_table)
                    .key("pk", s(pk))
                    .key("sk", n(0))
                    .consistent_read(true)
                    .send()
                    .await
                    .expect("baseline GetItem");
                let took = started.elapsed();
                assert!(found.item().is_some(), "baseline item {pk} missing");
                took
            }
            Baseline::PutItem { pk, value } => {
                let started = Instant::now();
                self.plain_put(pk, 0, value).await;
                started.elapsed()
            }
            Baseline::DeleteItem { pk, value } => {
                self.plain_put(pk, 0, value).await;
                self.meter.take();
                self.capture.take();
                let started = Instant::now();
                self.client
                    .delete_item()
                    .table_name(&self.plain_table)
                    .key("pk", s(pk))
                    .key("sk", n(0))
                    .send()
                    .await
                    .expect("baseline DeleteItem");
                started.elapsed()
            }
            Baseline::QueryPage { pk, limit } => {
                let started = Instant::now();
                self.client
                    .query()
                    .table_name(&self.plain_table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(pk))
                    .consistent_read(true)
                    .limit(*limit)
                    .send()
                    .await
                    .expect("baseline Query");
                started.elapsed()
            }
            Baseline::QueryAll { pk } => {
                let started = Instant::now();
                let mut start = None;
                loop {
                    let page = self
                        .client
                        .query()
                        .table_name(&self.plain_table)
                        .key_condition_expression("pk = :pk")
                        .expression_attribute_values(":pk", s(pk))
                        .consistent_read(true)
                        .set_exclusive_start_key(start.take())
                        .send()
                        .await
                        .expect("baseline Query");
                    match page.last_evaluated_key() {
                        Some(next) => start = Some(next.clone()),
                        None => break,
                    }
                }
                started.elapsed()
            }
            Baseline::ScanBuckets => {
                let started = Instant::now();
                self.client
                    .scan()
                    .table_name(&self.buckets_table)
                    .consistent_read(true)
                    .send()
                    .await
                    .expect("baseline Scan");
                started.elapsed()
            }
            Baseline::LatestRevision { bucket, key } => {
                let started = Instant::now();
                let head = kv::store::heads::head_read(
                    &self.client,
                    &self.items_table,
                    &kv::store::items::key_pk(bucket, key),
                    true,
                )
                .send()
                .await
                .expect("shadow GetItem");
                let took = started.elapsed();
                assert!(head.item().is_some(), "no head of {bucket}/{key}");
                took
            }
        }
    }

    fn container(&self, case: &Case) -> &Kv {
        if case.memory_hit {
            &self.memory_kv
        } else {
            &self.kv
        }
    }

    async fn handler_once(&self, case: &Case) -> Duration {
        let kv = self.container(case);
        if let Some((function, event)) = &case.prepare {
            self.call(kv, *function, event.clone()).await;
        }
        let event = case.event.clone();
        self.meter.take();
        self.capture.take();
        let started = Instant::now();
        let response = kv::lambda::dispatch::handle(kv, case.function, event).await;
        let took = started.elapsed();
        match response {
            Ok(response) if response["status_code"] == 200 => took,
            other => panic!("{} {}: {other:?}", case.op, case.variant),
        }
    }

    /// Requests, units and where they go, over a few calls priced with before/after snapshots.
    async fn account(&self, case: &Case, rounds: usize) -> Measured {
        let mut measured = Measured::default();
        for round in 0..rounds {
            let kv = self.container(case);
            if let Some((function, event)) = &case.prepare {
                self.call(kv, *function, event.clone()).await;
            }
            let before = units::snapshot(
                &self.observer,
                &self.items_table,
                &case.partitions,
                &case.singles,
            )
            .await;
            self.meter.take();
            self.capture.take();
            self.call(kv, case.function, case.event.clone()).await;
            self.meter.take();
            let captured = self.capture.take();
            // The fewest seen: requests sent together count as one round trip only when they
            // overlap in time, which a busy machine can keep them from doing; it never makes
            // sequential requests overlap.
            let trips = captured.round_trips() as f64;
            measured.round_trips = if round == 0 {
                trips
            } else {
                measured.round_trips.min(trips)
            };
            let after = units::snapshot(
                &self.observer,
                &self.items_table,
                &case.partitions,
                &case.singles,
            )
            .await;
            let mut parts = Vec::new();
            let (mut rcu, mut local_wcu) = (0.0, 0.0);
            for (operation, (count, read, write)) in &captured.reported {
                rcu += read;
                local_wcu += write;
                if *read > 0.0 {
                    parts.push((format!("{operation} x{count}"), *read, "RCU"));
                }
            }
            let priced = units::price_writes(
                &captured.writes,
                &before,
                &after,
                &self.items_table,
                &self.indexes,
            );
            let wcu = priced.total;
            measured.uncovered += priced.uncovered;
            parts.extend(priced.parts.iter().map(|part| {
                (
                    format!("{}: {}", part.request, part.what),
                    part.units,
                    "WCU",
                )
            }));
            if round + 1 == rounds {
                measured.plain_writes = priced
                    .plain
                    .iter()
                    .map(|(operation, model)| {
                        let local = captured
                            .reported
                            .get(*operation)
                            .map(|reported| reported.2)
                            .unwrap_or(0.0);
                        (operation.to_string(), *model, local)
                    })
                    .collect();
            }
            measured.rcu += rcu / rounds as f64;
            measured.wcu += wcu / rounds as f64;
            measured.local_wcu += local_wcu / rounds as f64;
            if round + 1 == rounds {
                measured.parts = parts;
            }
        }
        measured
    }

    /// The items (table and key) one call of `function` with `event` writes, as its requests
    /// name them.
    pub async fn written_keys(
        &self,
        kv: &Kv,
        function: Function,
        event: Value,
    ) -> (BTreeSet<String>, Captured) {
        self.meter.take();
        self.capture.take();
        self.call(kv, function, event).await;
        self.meter.take();
        let captured = self.capture.take();
        (captured.written_keys(), captured)
    }

    async fn account_baseline(&self, baseline: &Baseline, rounds: usize) -> Measured {
        let mut measured = Measured::default();
        for round in 0..rounds {
            self.baseline_once(baseline).await;
            self.meter.take();
            let captured = self.capture.take();
            // The fewest seen: requests sent together count as one round trip only when they
            // overlap in time, which a busy machine can keep them from doing; it never makes
            // sequential requests overlap.
            let trips = captured.round_trips() as f64;
            measured.round_trips = if round == 0 {
                trips
            } else {
                measured.round_trips.min(trips)
            };
            let mut parts = Vec::new();
            for (operation, (count, read, write)) in &captured.reported {
                measured.rcu += read / rounds as f64;
                measured.wcu += write / rounds as f64;
                measured.local_wcu += write / rounds as f64;
                *measured
                    .operations
                    .entry(operation.to_string())
                    .or_default() += *count as f64 / rounds as f64;
                if *read > 0.0 {
                    parts.push((format!("{operation} x{count}"), *read, "RCU"));
                }
                if *write > 0.0 {
                    parts.push((format!("{operation} x{count}"), *write, "WCU"));
                }
            }
            if round + 1 == rounds {
                measured.parts = parts;
            }
        }
        measured
    }

    pub async fn run(&self, case: Case) -> Row {
        let has_baseline = !matches!(case.baseline, Baseline::None);
        let has_shadow = !matches!(case.shadow, Baseline::None);
        // Warm up, and size the run to the time budget.
        let started = Instant::now();
        let warmups = 5;
        for _ in 0..warmups {
            self.handler_once(&case).await;
            self.baseline_once(&case.baseline).await;
            self.baseline_once(&case.shadow).await;
        }
        let per_iteration = started.elapsed() / warmups;
        let (least, most) = if case.memory_hit {
            (1_000, 50_000)
        } else {
            (20, 400)
        };
        let iterations = (self.row_budget.as_secs_f64() / per_iteration.as_secs_f64().max(1e-7))
            .clamp(least as f64, most as f64) as usize;

        let mut handler = if case.memory_hit {
            Measured::default()
        } else {
            self.account(&case, 3).await
        };
        let mut baseline = if has_baseline {
            Some(self.account_baseline(&case.baseline, 2).await)
        } else {
            None
        };

        let mut handler_times = Vec::with_capacity(iterations);
        let mut baseline_times = Vec::with_capacity(iterations);
        let mut shadow_times = Vec::with_capacity(iterations);
        let mut requests = 0usize;
        let mut operations: BTreeMap<String, f64> = BTreeMap::new();
        let mut baseline_requests = 0usize;
        for iteration in 0..iterations {
            // Rotate which goes first, so none always follows another.
            for turn in 0..3 {
                let slot = (iteration + turn) % 3;
                if slot == 2 {
                    if has_shadow {
                        shadow_times.push(self.baseline_once(&case.shadow).await);
                    }
                    continue;
                }
                let handler_turn = slot == 0;
                if handler_turn {
                    handler_times.push(self.handler_once(&case).await);
                    let reading = self.meter.take();
                    requests += reading.requests.len();
                    for request in &reading.requests {
                        *operations.entry(request.operation.clone()).or_default() += 1.0;
                    }
                } else if has_baseline {
                    self.meter.take();
                    baseline_times.push(self.baseline_once(&case.baseline).await);
                    baseline_requests += self.meter.take().requests.len();
                }
            }
        }
        self.capture.take();
        self.meter.take();
        handler_times.sort();
        baseline_times.sort();
        shadow_times.sort();
        let shadow = has_shadow.then(|| Measured {
            iterations: shadow_times.len(),
            p50: percentile(&shadow_times, 50),
            p99: percentile(&shadow_times, 99),
            requests: 1.0,
            ..Measured::default()
        });
        handler.iterations = iterations;
        handler.p50 = percentile(&handler_times, 50);
        handler.p99 = percentile(&handler_times, 99);
        handler.requests = requests as f64 / iterations as f64;
        handler.operations = operations
            .into_iter()
            .map(|(operation, count)| (operation, count / iterations as f64))
            .collect();
        if let Some(baseline) = baseline.as_mut() {
            baseline.iterations = baseline_times.len();
            baseline.p50 = percentile(&baseline_times, 50);
            baseline.p99 = percentile(&baseline_times, 99);
            baseline.requests = baseline_requests as f64 / baseline_times.len().max(1) as f64;
        }
        let read_item_bytes = match &case.shadow {
            Baseline::LatestRevision { bucket, key } => kv::store::heads::head_read(
                &self.observer,
                &self.items_table,
                &kv::store::items::key_pk(bucket, key),
                true,
            )
            .send()
            .await
            .ok()
            .and_then(|found| found.item().map(units::item_size)),
            _ => None,
        };
        Row {
            case,
            handler,
            baseline,
            shadow,
            read_item_bytes,
        }
    }
}
