//! Turning SDK failures into the error the caller sees: storage failures become `Unavailable`.

use crate::error::KvError;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

pub fn unavailable<E, R>(operation: &str, error: SdkError<E, R>) -> KvError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let detail = match error.code() {
        Some("ResourceNotFoundException") => format!(
            "a KV table does not exist ({}); create the tables first (make tables)",
            error.message().unwrap_or("table not found")
        ),
        Some(code) => format!("{code}: {}", error.message().unwrap_or("")),
        None => DisplayErrorContext(&error).to_string(),
    };
    KvError::Unavailable(format!("DynamoDB {operation} failed: {detail}"))
}

/// True when the request was refused by its own condition expression.
pub fn is_condition_failure<E, R>(error: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    error.code() == Some("ConditionalCheckFailedException")
}
