//! From an event to a result: parse the parameters, run the operation, wrap the envelope.

use crate::api::function::Function;
use crate::api::params::Params;
use crate::api::requests::Request;
use crate::lambda::envelope;
use crate::lambda::error::FunctionError;
use crate::model::config::Settings;
use crate::model::error::KvError;
use crate::ops;
use crate::ops::state::Kv;
use lambda_runtime::LambdaEvent;
use serde::Serialize;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

pub async fn handle(kv: &Kv, function: Function, event: Value) -> Result<Value, FunctionError> {
    handle_until(kv, entry(function), event, Instant::now() + kv.purge_budget).await
}

/// `deadline` bounds work that can be handed on (purging a deleted bucket).
async fn handle_until(
    kv: &Kv,
    entry: Entry,
    event: Value,
    deadline: Instant,
) -> Result<Value, FunctionError> {
    let function = entry.function;
    let outcome = match Params::from_event(function, event) {
        Ok(params) => (entry.operation)(kv, &params, deadline).await,
        Err(error) => Err(error),
    };
    answer(function, outcome)
}

/// Logs an outcome and makes it the function's result.
pub fn answer(function: Function, outcome: Result<Value, KvError>) -> Result<Value, FunctionError> {
    crate::model::metrics::count(|counts| {
        counts.set_outcome(crate::lambda::metrics::outcome(&outcome))
    });
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

/// `handle_event`, measured as the function's binary measures each invocation: the answer and
/// its metric record.
pub async fn handle_event_measured(
    kv: &Kv,
    function: Function,
    event: LambdaEvent<Value>,
) -> (Result<Value, FunctionError>, Value) {
    let namespace = &kv.metrics_namespace;
    crate::lambda::metrics::measured(function, namespace, handle_event(kv, function, event)).await
}

/// What tests call with a `LambdaEvent`, as Lambda would call the function's binary.
pub async fn handle_event(
    kv: &Kv,
    function: Function,
    event: LambdaEvent<Value>,
) -> Result<Value, FunctionError> {
    handle_entry_event(kv, entry(function), event).await
}

/// The Lambda entry point: what `service_fn` calls. Work is bounded by the invocation's
/// deadline, less a margin to answer in.
pub async fn handle_entry_event(
    kv: &Kv,
    entry: Entry,
    event: LambdaEvent<Value>,
) -> Result<Value, FunctionError> {
    let budget = Instant::now() + kv.purge_budget;
    let deadline = match invocation_time_left(event.context.deadline) {
        Some(left) => budget.min(Instant::now() + left.saturating_sub(ANSWER_MARGIN)),
        None => budget,
    };
    handle_until(kv, entry, event.payload, deadline).await
}

/// What an invocation keeps of its time to finish a response and return it.
const ANSWER_MARGIN: Duration = Duration::from_millis(500);

/// The time left before Lambda's deadline (epoch ms); None when the context has none (a test
/// or a local runtime that does not set it).
fn invocation_time_left(deadline_ms: u64) -> Option<Duration> {
    let now_ms = crate::model::time::ns_to_ms(crate::model::time::now_ns());
    (deadline_ms > now_ms).then(|| Duration::from_millis(deadline_ms - now_ms))
}

pub type OpFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, KvError>> + Send + 'a>>;

/// A function's operation: reads its typed request from the parameters, runs it (`deadline`
/// bounds work that can be handed on) and encodes its answer. Boxed, so that each binary's
/// future stays small and its type shallow.
pub type Operation = for<'a> fn(&'a Kv, &Params, Instant) -> OpFuture<'a>;

/// What a container needs beyond `Kv::new` (an EventBridge client for the function that
/// republishes), prepared during init.
pub type Equip = for<'a> fn(&'a mut Kv, &'a Settings) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// What a function's binary runs. Each binary names its own entry (`functions/*.rs`), so it
/// links its own operation and none of the others'.
#[derive(Clone, Copy)]
pub struct Entry {
    pub function: Function,
    pub operation: Operation,
    pub equip: Equip,
}

fn nothing_to_equip<'a>(_: &'a mut Kv, _: &'a Settings) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    Box::pin(std::future::ready(()))
}

macro_rules! entry {
    ($name:ident, $function:ident, |$kv:ident, $deadline:ident| $operation:expr) => {
        entry!(
            $name,
            $function,
            |$kv, $deadline| $operation,
            nothing_to_equip
        );
    };
    ($name:ident, $function:ident, |$kv:ident, $deadline:ident| $operation:expr, $equip:expr) => {
        pub const $name: Entry = Entry {
            function: Function::$function,
            operation: |$kv, params, $deadline| op(params, $operation),
            equip: $equip,
        };
    };
}

entry!(BUCKET_CREATE, BucketCreate, |kv, _deadline| |config| {
    ops::bucket_create::run(kv, config)
});
entry!(KEY_PUT, KeyPut, |kv, deadline| |request| ops::key_put::run(
    kv, request, deadline
));
entry!(
    KEY_GET,
    KeyGet,
    |kv, _deadline| |request| ops::key_get::run(kv, request)
);
entry!(BUCKET_LIST, BucketList, |kv, _deadline| |request| {
    ops::bucket_list::run(kv, request)
});
entry!(KEY_LIST, KeyList, |kv, _deadline| |request| {
    ops::key_list::run(kv, request)
});
entry!(KEY_DELETE, KeyDelete, |kv, deadline| |request| {
    ops::key_delete::run(kv, request, deadline)
});
entry!(KEY_HISTORY, KeyHistory, |kv, _deadline| |request| {
    ops::key_history::run(kv, request)
});
entry!(BUCKET_INFO, BucketInfo, |kv, _deadline| |request| {
    ops::bucket_info::run(kv, request)
});
entry!(BUCKET_DELETE, BucketDelete, |kv, deadline| |request| {
    ops::bucket_delete::run(kv, request, deadline)
});
entry!(KEY_INCREMENT, KeyIncrement, |kv, deadline| |request| {
    ops::key_increment::run(kv, request, deadline)
});
/// kv-key-watch answers its flow through the task token, refusals included: a flow waiting on
/// a token would otherwise wait out its timeout for a call that was refused at once.
pub const KEY_WATCH: Entry = Entry {
    function: Function::KeyWatch,
    operation: |kv, params, _deadline| {
        let token = ops::key_watch::task_token_of(params);
        let answer = op(params, |request| ops::key_watch::run(kv, request));
        Box::pin(ops::key_watch::failing_the_task(kv, token, answer))
    },
    equip: |kv, _settings| {
        Box::pin(async move {
            let config = crate::store::client::shared_config().await;
            kv.tokens = Some(crate::tokens::TaskTokens::from_config(&config));
        })
    },
};
entry!(BUCKET_PURGE, BucketPurge, |kv, deadline| |batch| {
    ops::bucket_delete::run_purger(kv, batch, deadline)
});
entry!(EXPIRY_SWEEP, ExpirySweep, |kv, deadline| |event| {
    ops::expiry_sweep::run(kv, event, deadline)
});
entry!(ITEMS_STREAM, ItemsStream, |kv, _deadline| |batch| {
    ops::items_stream::run(kv, batch)
});
entry!(
    ITEMS_REPLICATE,
    ItemsReplicate,
    |kv, deadline| |batch| ops::items_replicate::run(kv, batch, deadline),
    |kv, settings| Box::pin(async move {
        // One load of the configuration for both clients.
        let config = crate::store::client::shared_config().await;
        kv.bus = Some(crate::bus::EventBus::from_config(
            &config,
            &settings.event_bus,
        ));
        kv.tokens = Some(crate::tokens::TaskTokens::from_config(&config));
    })
);

/// Every function's entry, for callers that serve them all (the tests, the bench).
pub fn entry(function: Function) -> Entry {
    match function {
        Function::BucketCreate => BUCKET_CREATE,
        Function::KeyPut => KEY_PUT,
        Function::KeyGet => KEY_GET,
        Function::BucketList => BUCKET_LIST,
        Function::KeyList => KEY_LIST,
        Function::KeyDelete => KEY_DELETE,
        Function::KeyHistory => KEY_HISTORY,
        Function::BucketInfo => BUCKET_INFO,
        Function::BucketDelete => BUCKET_DELETE,
        Function::KeyIncrement => KEY_INCREMENT,
        Function::KeyWatch => KEY_WATCH,
        Function::BucketPurge => BUCKET_PURGE,
        Function::ExpirySweep => EXPIRY_SWEEP,
        Function::ItemsStream => ITEMS_STREAM,
        Function::ItemsReplicate => ITEMS_REPLICATE,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_has_its_own_entry() {
        for function in Function::ALL {
            assert_eq!(entry(function).function, function, "{}", function.name());
        }
    }
}
