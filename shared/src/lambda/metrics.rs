//! One CloudWatch Embedded Metric Format record per invocation, written to stdout (a line of
//! JSON, which Lambda hands to CloudWatch Logs, which extracts the metrics) before the
//! invocation answers. It names the function and the outcome, never a bucket, a key or a value:
//! per-tenant dimensions would multiply the metrics' cost and show tenants' names.
//!
//! Dimensions are few on purpose (each combination is a custom metric, billed monthly):
//! latency by function and outcome (its sample count is the invocations), by outcome alone (the
//! `KvInternal` alarm over every function), and every other figure by function alone.

use crate::api::function::Function;
use crate::model::error::KvError;
use crate::model::metrics::Counts;
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::time::Duration;

pub const FUNCTION: &str = "Function";
pub const OUTCOME: &str = "Outcome";
pub const LATENCY: &str = "Latency";
/// The dimension sets of `LATENCY`...
pub const LATENCY_DIMENSIONS: [&[&str]; 2] = [&[FUNCTION, OUTCOME], &[OUTCOME]];
/// ... and of every other figure.
pub const FIGURE_DIMENSIONS: [&[&str]; 1] = [&[FUNCTION]];

/// A figure of the record: its name, unit and where its value comes from.
pub struct Figure {
    pub name: &'static str,
    pub unit: &'static str,
    value: fn(&Counts) -> Value,
}

fn load(counter: &std::sync::atomic::AtomicU64) -> Value {
    Value::from(counter.load(Ordering::Relaxed))
}

/// A figure read from one counter of `Counts`.
macro_rules! counted {
    ($name:literal, $unit:literal, $counter:ident) => {
        Figure {
            name: $name,
            unit: $unit,
            value: |counts| load(&counts.$counter),
        }
    };
}

/// What every function reports, by function.
pub const EVERY_FUNCTION: [Figure; 7] = [
    counted!("DynamoDBRequests", "Count", requests),
    Figure {
        name: "ReadCapacityUnits",
        unit: "Count",
        value: |counts| Value::from(counts.read_units()),
    },
    Figure {
        name: "WriteCapacityUnits",
        unit: "Count",
        value: |counts| Value::from(counts.write_units()),
    },
    counted!("WriteAttempts", "Count", write_attempts),
    counted!("WriteConflicts", "Count", write_conflicts),
    counted!("CacheHits", "Count", cache_hits),
    counted!("CacheMisses", "Count", cache_misses),
];

/// What the stream consumers report besides, by function.
pub const STREAM_CONSUMERS: [Figure; 5] = [
    counted!("Records", "Count", records),
    counted!("RecordsSetAside", "Count", records_set_aside),
    counted!("OldestRecordAge", "Milliseconds", oldest_record_age_ms),
    counted!("WaitersResumed", "Count", waiters_resumed),
    counted!("EventsPut", "Count", events_put),
];

/// What the expiry sweeper reports besides.
pub const SWEEPER: [Figure; 2] = [
    counted!("ValuesExpired", "Count", values_expired),
    counted!("ExpiryLateness", "Milliseconds", expiry_lateness_ms),
];

/// The figures a function's records carry besides latency.
pub fn figures(function: Function) -> Vec<&'static Figure> {
    let mut figures: Vec<&Figure> = EVERY_FUNCTION.iter().collect();
    match function {
        Function::ItemsStream | Function::ItemsReplicate | Function::BucketPurge => {
            figures.extend(STREAM_CONSUMERS.iter())
        }
        Function::ExpirySweep => figures.extend(SWEEPER.iter()),
        _ => {}
    }
    figures
}

/// The outcome dimension of an answer: its status code, or the Lambda error's type.
pub fn outcome(result: &Result<Value, KvError>) -> String {
    match result {
        Ok(_) => "200".into(),
        Err(KvError::Unavailable(_)) => "KvUnavailable".into(),
        Err(KvError::Internal(_)) => "KvInternal".into(),
        Err(error) => error.status_code().to_string(),
    }
}

/// The invocation's record.
pub fn record(
    function: Function,
    namespace: &str,
    latency: Duration,
    counts: &Counts,
    timestamp_ms: u64,
) -> Value {
    let figures = figures(function);
    let definitions = |figures: &[&Figure]| -> Vec<Value> {
        figures
            .iter()
            .map(|figure| json!({"Name": figure.name, "Unit": figure.unit}))
            .collect()
    };
    let latency_only = json!([{"Name": LATENCY, "Unit": "Milliseconds"}]);
    let mut record = Map::new();
    record.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [
                {"Namespace": namespace, "Dimensions": LATENCY_DIMENSIONS, "Metrics": latency_only},
                {"Namespace": namespace, "Dimensions": FIGURE_DIMENSIONS, "Metrics": definitions(&figures)},
            ],
        }),
    );
    record.insert(FUNCTION.into(), json!(function.name()));
    record.insert(
        OUTCOME.into(),
        json!(counts.outcome().unwrap_or_else(|| "KvInternal".into())),
    );
    record.insert(
        LATENCY.into(),
        json!((latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0),
    );
    for figure in figures {
        record.insert(figure.name.into(), (figure.value)(counts));
    }
    Value::Object(record)
}

/// Writes the record out as one line of stdout, where Lambda's log agent takes it.
pub fn emit(record: &Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    // A lost metric line must never fail the invocation it describes.
    let _ = writeln!(out, "{record}");
    let _ = out.flush();
}

/// Runs one invocation in a scope of its own; returns its answer and its record.
pub async fn measured<T>(
    function: Function,
    namespace: &str,
    work: impl std::future::Future<Output = T>,
) -> (T, Value) {
    let counts = std::sync::Arc::new(Counts::default());
    let started = std::time::Instant::now();
    let answer = crate::model::metrics::measured(counts.clone(), work).await;
    let now_ms = crate::model::time::ns_to_ms(crate::model::time::now_ns());
    (
        answer,
        record(function, namespace, started.elapsed(), &counts, now_ms),
    )
}
