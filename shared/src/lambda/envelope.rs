//! The response envelope every function returns: `{"status_code": N, "body": {...}}`.

use crate::lambda::error::FunctionError;
use crate::model::error::KvError;
use serde_json::{json, Value};

pub fn ok(body: Value) -> Value {
    json!({"status_code": 200, "body": body})
}

/// Turns an operation's outcome into the Lambda result: caller errors are envelopes, failures
/// the caller cannot act on are Lambda errors.
pub fn respond(outcome: Result<Value, KvError>) -> Result<Value, FunctionError> {
    match outcome {
        Ok(body) => Ok(ok(body)),
        Err(KvError::Unavailable(message)) => Err(FunctionError::Unavailable(message)),
        Err(KvError::Internal(message)) => Err(FunctionError::Internal(message)),
        Err(error) => Ok(json!({"status_code": error.status_code(), "body": error.body()})),
    }
}
