//! What the items table's stream consumers cost per put (issue #20's second table rows): puts
//! of 100 B at a steady rate per bucket over ten buckets with history 1 and nothing to copy,
//! republish or wake, on a DynamoDB Local of its own whose stream `make streams`' runner
//! delivers to kv-items-stream and kv-items-replicate, each in a container whose client
//! records every request.
//!
//! Units are priced by AWS's model rather than DynamoDB Local's report (which under-reports
//! transactions): 2 write units per item of a `TransactWriteItems` and 1 per other write, 1
//! read unit per strongly consistent read, as every item these consumers touch here is under
//! 1 KB. The fence key `support::settled` writes to know the stream caught up adds one put per
//! rate, not counted in the puts.

use kv::Function;
use kv_dev::meter::{Meter, Reading};
use kv_dev::support::{self, stream_pump};
use serde_json::json;
use std::time::{Duration, Instant};

const BUCKETS: usize = 10;
const STREAM: &str = "kv-items-stream";
const REPLICATE: &str = "kv-items-replicate";

pub struct ConsumerRow {
    /// Puts per second per bucket asked for.
    pub rate: u32,
    pub puts: usize,
    /// Puts per second per bucket reached (DynamoDB Local on two cores caps it).
    pub reached: f64,
    pub stream: Spent,
    pub replicate: Spent,
}

#[derive(Default)]
pub struct Spent {
    pub batches: usize,
    /// Each batch's distinct buckets, summed: the work is per bucket per batch.
    pub bucket_batches: usize,
    pub requests: usize,
    pub write_units: f64,
    pub read_units: f64,
    /// Requests per operation, e.g. `TransactWriteItems 34`.
    pub operations: std::collections::BTreeMap<String, usize>,
}

/// The batches delivered to `function` after the first `from`, and their buckets summed.
fn delivered_since(endpoint: &str, function: &'static str, from: usize) -> (usize, usize) {
    let all = match function {
        STREAM => stream_pump::delivered_at(endpoint),
        _ => stream_pump::replication_delivered_at(endpoint),
    };
    let batches = all.get(from..).unwrap_or_default();
    let buckets = batches
        .iter()
        .map(|batch| {
            batch["Records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|record| {
                    let pk = kv::store::stream_images::record_pk(record);
                    pk.split_once('/').map(|(bucket, _)| bucket.to_string())
                })
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        })
        .sum();
    (batches.len(), buckets)
}

fn priced(reading: &Reading, (batches, bucket_batches): (usize, usize)) -> Spent {
    let mut spent = Spent {
        batches,
        bucket_batches,
        requests: reading.requests.len(),
        ..Spent::default()
    };
    for request in &reading.requests {
        *spent
            .operations
            .entry(request.operation.clone())
            .or_default() += 1;
        match request.operation.as_str() {
            "TransactWriteItems" => spent.write_units += 2.0 * request.items as f64,
            "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" => {
                spent.write_units += request.items as f64
            }
            _ => spent.read_units += request.items.max(1) as f64,
        }
    }
    spent
}

/// Waits until kv-items-replicate has had no new batch for a second.
async fn replication_quiet(endpoint: &str) {
    let mut seen = stream_pump::batches_delivered(endpoint, REPLICATE);
    let mut still_since = Instant::now();
    while still_since.elapsed() < Duration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = stream_pump::batches_delivered(endpoint, REPLICATE);
        if now != seen {
            seen = now;
            still_since = Instant::now();
        }
    }
}

pub fn measure(rates: &[u32], seconds: u64) -> Vec<ConsumerRow> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = support::private_endpoint_unfollowed();
    let endpoint = local.to_string();
    let (stream_meter, replicate_meter) = (Meter::new(), Meter::new());
    stream_pump::follow_metered(&endpoint, STREAM, stream_meter.clone());
    stream_pump::follow_metered(&endpoint, REPLICATE, replicate_meter.clone());
    let rows = runtime.block_on(async {
        let kv = kv::Kv::new(support::client_for(&endpoint), &support::settings());
        let mut buckets = Vec::new();
        for _ in 0..BUCKETS {
            buckets.push(support::bucket(&kv, "consumers", json!({})).await);
        }
        let kv = std::sync::Arc::new(kv);
        stream_pump::settled_at(&endpoint).await;
        replication_quiet(&endpoint).await;
        let mut rows = Vec::new();
        for &rate in rates {
            stream_meter.take();
            replicate_meter.take();
            let batches = (
                stream_pump::batches_delivered(&endpoint, STREAM),
                stream_pump::batches_delivered(&endpoint, REPLICATE),
            );
            // Ten ticks a second, each putting a tenth of a second's puts of every bucket.
            let per_tick = (rate as usize * BUCKETS).div_ceil(10);
            let ticks = seconds * 10;
            let started = Instant::now();
            let mut writes = tokio::task::JoinSet::new();
            let mut puts = 0;
            for tick in 0..ticks {
                let due = started + Duration::from_millis(100 * tick);
                tokio::time::sleep_until(due.into()).await;
                for _ in 0..per_tick {
                    let (kv, bucket) = (kv.clone(), buckets[puts % BUCKETS].clone());
                    let key = format!("k{}", puts / BUCKETS % 100);
                    writes.spawn(async move {
                        let params =
                            json!({"bucket": bucket, "key": key, "value": "v".repeat(100)});
                        let response = support::call(&kv, Function::KeyPut, params).await;
                        assert_eq!(support::status(&response), 200, "{response}");
                    });
                    puts += 1;
                    while writes.len() >= 64 {
                        writes.join_next().await;
                    }
                }
            }
            while writes.join_next().await.is_some() {}
            let elapsed = started.elapsed().as_secs_f64();
            stream_pump::settled_at_within(&endpoint, Duration::from_secs(300)).await;
            replication_quiet(&endpoint).await;
            rows.push(ConsumerRow {
                rate,
                puts,
                reached: puts as f64 / BUCKETS as f64 / elapsed,
                stream: priced(
                    &stream_meter.take(),
                    delivered_since(&endpoint, STREAM, batches.0),
                ),
                replicate: priced(
                    &replicate_meter.take(),
                    delivered_since(&endpoint, REPLICATE, batches.1),
                ),
            });
        }
        rows
    });
    drop(runtime);
    drop(local);
    rows
}
