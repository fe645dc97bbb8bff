//! From an event to a result: parse the parameters, run the operation, wrap the envelope.

use crate::api::function::Function;
use crate::api::params::Params;
use crate::api::requests::Request;
use crate::lambda::envelope;
use crate::model::error::{FunctionError, KvError};
use crate::ops;
use crate::ops::state::Kv;
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

pub async fn handle(kv: &Kv, function: Function, event: Value) -> Result<Value, FunctionError> {
    handle_until(kv, function, event, Instant::now() + kv.purge_budget).await
}

/// `deadline` bounds work that can be handed on (purging a deleted bucket).
pub async fn handle_until(
    kv: &Kv,
    function: Function,
    event: Value,
    deadline: Instant,
) -> Result<Value, FunctionError> {
    let outcome = match Params::from_event(function, event) {
        Ok(params) => run(kv, function, params, deadline).await,
        Err(error) => Err(error),
    };
    match &outcome {
        Ok(_) => tracing::info!(function = function.name(), status_code = 200, "done"),
        Err(KvError::Unavailable(message)) => {
            tracing::error!(function = function.name(), error = %message, "storage unavailable")
        }
        Err(KvError::Internal(message)) => {
            tracing::error!(function = function.name(), error = %message, "internal error")
        }
        Err(error) => tracing::info!(
            function = function.name(),
            status_code = error.status_code(),
            code = error.code(),
            "refused"
        ),
    }
    match (function.answers_stream_batches(), outcome) {
        // Lambda's event source mapping reads `batchItemFailures` at the top of the result.
        (true, Ok(result)) => Ok(result),
        (_, outcome) => envelope::respond(outcome),
    }
}

/// The Lambda entry point: what `service_fn` calls and what tests call with a `LambdaEvent`.
/// Work is bounded by the invocation's deadline, less a margin to answer in.
pub async fn handle_event(
    kv: &Kv,
    function: Function,
    event: LambdaEvent<Value>,
) -> Result<Value, FunctionError> {
    let budget = Instant::now() + kv.purge_budget;
    let deadline = match invocation_time_left(event.context.deadline) {
        Some(left) => budget.min(Instant::now() + left.saturating_sub(ANSWER_MARGIN)),
        None => budget,
    };
    handle_until(kv, function, event.payload, deadline).await
}

/// What an invocation keeps of its time to finish a response and return it.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// The time left before Lambda's deadline (epoch ms); None when the context has none (a test
/// or a local runtime that does not set it).
fn invocation_time_left(deadline_ms: u64) -> Option<Duration> {
    let now_ms = crate::model::time::ns_to_ms(crate::model::time::now_ns());
    (deadline_ms > now_ms).then(|| Duration::from_millis(deadline_ms - now_ms))
}

type OpFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, KvError>> + Send + 'a>>;

/// Boxed so each binary's future stays small and its type shallow, whichever op it runs.
fn run(kv: &Kv, function: Function, params: Params, deadline: Instant) -> OpFuture<'_> {
    match function {
        Function::BucketCreate => op(&params, |config| ops::bucket_create::run(kv, config)),
        Function::KeyPut => op(&params, |request| ops::key_put::run(kv, request, deadline)),
        Function::KeyGet => op(&params, |request| ops::key_get::run(kv, request)),
        Function::BucketList => op(&params, |request| ops::bucket_list::run(kv, request)),
        Function::KeyList => op(&params, |request| ops::key_list::run(kv, request)),
        Function::KeyDelete => op(&params, |request| {
            ops::key_delete::run(kv, request, deadline)
        }),
        Function::KeyHistory => op(&params, |request| ops::key_history::run(kv, request)),
        Function::BucketInfo => op(&params, |request| ops::bucket_info::run(kv, request)),
        Function::BucketDelete => op(&params, |request| {
            ops::bucket_delete::run(kv, request, deadline)
        }),
        Function::BucketPurge => op(&params, |batch| {
            ops::bucket_delete::run_purger(kv, batch, deadline)
        }),
        Function::ExpirySweep => op(&params, |event| ops::expiry_sweep::run(kv, event, deadline)),
        Function::ItemsStream => op(&params, |batch| ops::items_stream::run(kv, batch)),
        Function::ItemsReplicate => op(&params, |batch| {
            ops::items_replicate::run(kv, batch, deadline)
        }),
    }
}

/// Reads the operation's typed request, runs it, and turns its typed answer into JSON.
fn op<'a, R, T, F>(params: &Params, operation: impl FnOnce(R) -> F) -> OpFuture<'a>
where
    R: Request,
    T: Serialize,
    F: Future<Output = Result<T, KvError>> + Send + 'a,
{
    match R::read(params) {
        Ok(request) => {
            let running = operation(request);
            Box::pin(async move {
                let answer = running.await?;
                serde_json::to_value(answer).map_err(|error| {
                    KvError::Internal(format!("Could not encode the answer: {error}"))
                })
            })
        }
        Err(error) => Box::pin(std::future::ready(Err(error))),
    }
}
