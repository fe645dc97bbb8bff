//! The wiring every function binary shares: logging, one SDK client, the Lambda runtime loop.

use crate::config::Settings;
use crate::function::Function;
use crate::handler::{handle_event, Kv};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

pub async fn run(function: Function) -> Result<(), lambda_runtime::Error> {
    // JSON lines with the request id when AWS_LAMBDA_LOG_FORMAT=JSON; the level comes from
    // AWS_LAMBDA_LOG_LEVEL, then RUST_LOG.
    lambda_runtime::tracing::init_default_subscriber();
    let settings = Settings::from_env();
    let client = crate::dynamo::client::from_env().await;
    // During init, so the first invocation costs what a warm one does (no network call).
    crate::dynamo::client::warm_up(&client, &settings.items_table).await;
    let kv = Kv::new(client, &settings);
    let kv = &kv;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle_event(kv, function, event).await
    }))
    .await
}
