//! The wiring every function binary shares: logging, one SDK client, the Lambda runtime loop.

use crate::api::function::Function;
use crate::lambda::dispatch::{answer, handle_entry_event, Entry};
use crate::model::config::Settings;
use crate::model::error::KvError;
use crate::model::limits::MAX_JSON_DEPTH;
use crate::ops::state::Kv;
use crate::store::client::DynamoDbOperation;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::value::RawValue;
use serde_json::Value;

pub async fn run(entry: Entry) -> Result<(), lambda_runtime::Error> {
    let function = entry.function;
    crate::lambda::logging::init();
    // A misconfigured function fails its init, where the deployment shows it, instead of
    // running on a default the template did not ask for.
    let settings = Settings::from_env().map_err(|message| {
        tracing::error!(%message, "configuration");
        lambda_runtime::Error::from(message)
    })?;
    let client = crate::store::client::from_env().await;
    // During init, so the first invocation costs what a warm one does: the client's lazy parts
    // are built and the connections it will use are open.
    let (connections, operations) = rehearsal(function);
    crate::store::client::warm_up(&client, &settings.items_table, connections, operations).await;
    let mut kv = Kv::new(client, &settings);
    (entry.equip)(&mut kv, &settings).await;
    let kv = &kv;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<Box<RawValue>>| async move {
            let (raw, context) = event.into_parts();
            let namespace = &kv.metrics_namespace;
            let (answered, record) = crate::lambda::metrics::measured(function, namespace, async {
                match parse_event(&raw) {
                    Ok(payload) => {
                        handle_entry_event(kv, entry, LambdaEvent::new(payload, context)).await
                    }
                    Err(refused) => answer(function, Err(refused)),
                }
            })
            .await;
            // Before the answer: Lambda may freeze the container as soon as it has it.
            crate::lambda::metrics::emit(&record);
            answered
        },
    ))
    .await
}

/// The event as JSON. Lambda hands over valid JSON only, but it may nest deeper than the
/// parser goes (`MAX_JSON_DEPTH`), which is the caller's value, not a runtime failure.
pub fn parse_event(raw: &RawValue) -> Result<Value, KvError> {
    serde_json::from_str(raw.get()).map_err(|error| match error.to_string() {
        why if why.contains("recursion limit") => KvError::InvalidValue(format!(
            "The event nests JSON deeper than {MAX_JSON_DEPTH} levels; send a deeper document as a string value"
        )),
        why => KvError::InvalidValue(format!("The event is not valid JSON: {why}")),
    })
}

/// What one invocation of the function uses (see `ops`): the most DynamoDB requests it keeps
/// in flight at once (as many connections are opened during init) and the operations it sends.
/// Were this to fall behind `ops`, the first invocation would pay for it; the policy test
/// (dev/tests/it/policy.rs) fails when it differs from what the events of `events/` send.
pub fn rehearsal(function: Function) -> (usize, &'static [DynamoDbOperation]) {
    use DynamoDbOperation::*;
    match function {
        // UpdateItem (revision) alongside GetItem (head), then the head's PutItem alongside the
        // archive's (history above 1), or the head and usage transaction (max_bytes).
        Function::KeyPut | Function::KeyDelete => {
            (2, &[UpdateItem, GetItem, PutItem, TransactWriteItems])
        }
        // As a put, in a transaction with its claim when it carries an idempotency key; the
        // bucket and the claim when a repeat is refused.
        Function::KeyIncrement => (2, &[UpdateItem, GetItem, TransactWriteItems]),
        // The bucket and the head, the bucket's count of waiters, the waiter, the head again;
        // a filter's index page; the waiter's removal when the key had already changed.
        Function::KeyWatch => (2, &[GetItem, UpdateItem, PutItem, Query, BatchWriteItem]),
        // The head, or the head alongside an archived revision.
        Function::KeyGet => (2, &[GetItem]),
        // The index Query alongside the usage GetItem, then large values' heads.
        Function::KeyList => (2, &[Query, GetItem, BatchGetItem]),
        Function::KeyHistory => (1, &[Query, GetItem]),
        // Bucket, usage and first live revision at once.
        Function::BucketInfo => (3, &[GetItem, Query]),
        // Scan, then BatchGetItem at once: the Scan's connection may not be back in the pool.
        Function::BucketList => (2, &[Scan, BatchGetItem]),
        Function::BucketCreate => (1, &[TransactWriteItems]),
        // A count per bucket (its usage and the batch's token, one transaction), then trimmed
        // revisions' deletes alongside archives; a record it cannot read is set aside.
        Function::ItemsStream => (2, &[TransactWriteItems, BatchWriteItem, PutItem]),
        // Configurations and feeds; copies into mirrors (head, archive) and sources (the write
        // path); backfill pages (the origin's keys and histories) and cursors; the waiters of
        // changed buckets, and removing those resumed.
        Function::ItemsReplicate => (
            2,
            &[
                GetItem,
                Query,
                UpdateItem,
                PutItem,
                TransactWriteItems,
                BatchWriteItem,
            ],
        ),
        // The index Query, then each expired head's GetItem and UpdateItem.
        Function::ExpirySweep => (1, &[Query, GetItem, UpdateItem]),
        // The purge, and the tombstone a finished one leaves (read by a delete's retry).
        Function::BucketDelete => (
            1,
            &[
                UpdateItem,
                DeleteItem,
                Query,
                BatchWriteItem,
                PutItem,
                GetItem,
            ],
        ),
        Function::BucketPurge => (1, &[UpdateItem, DeleteItem, Query, BatchWriteItem, PutItem]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Box<RawValue> {
        let text = format!(
            "{{\"bucket\": \"b\", \"key\": \"k\", \"value\": {}1{}}}",
            "[".repeat(depth),
            "]".repeat(depth)
        );
        RawValue::from_string(text).expect("the raw event reads as text")
    }

    #[test]
    fn an_event_nested_past_the_parser_is_an_invalid_value() {
        assert!(parse_event(&nested(100)).is_ok());
        match parse_event(&nested(200)) {
            Err(KvError::InvalidValue(message)) => {
                assert!(message.contains("128"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}
