//! The response envelope every function returns: `{"status_code": N, "body": {...}}`.

use crate::error::{KvError, Unavailable};
use serde_json::{json, Value};

pub fn ok(body: Value) -> Value {
    json!({"status_code": 200, "body": body})
}

/// Turns an operation's outcome into the Lambda result: caller errors are envelopes, storage
/// failures are the `KvUnavailable` Lambda error.
pub fn respond(outcome: Result<Value, KvError>) -> Result<Value, Unavailable> {
    match outcome {
        Ok(body) => Ok(ok(body)),
        Err(KvError::Unavailable(message)) => Err(Unavailable(message)),
        Err(error) => Ok(json!({"status_code": error.status_code(), "body": error.body()})),
    }
}
