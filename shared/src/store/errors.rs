//! The store's own errors, and turning SDK failures into them. Only what a retry can cure is
//! `Unavailable`; everything else DynamoDB refuses is `Internal`, which a retry would only
//! repeat. Refusals the caller's input caused (an item too large) are recognised where the
//! request is built. The operations map these to the API's codes (`ops::errors`).

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// Why the store could not do what it was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// DynamoDB failed in a way a retry can cure (throttling, an unreachable or silent
    /// endpoint), after the SDK's retries.
    #[error("{0}")]
    Unavailable(String),
    /// A retry would fail the same way: a missing table, a refused or unbuildable request, a
    /// corrupt item.
    #[error("{0}")]
    Internal(String),
    /// The bucket has no item (never created, or deleted meanwhile).
    #[error("{0}")]
    BucketNotFound(String),
    /// DynamoDB refused an item as too large; the message states the real limit.
    #[error("{0}")]
    ItemTooLarge(String),
}

/// DynamoDB error codes that mean "not now": throttling, capacity, a busy or failing service, or
/// a transaction that collided with another. A later attempt can succeed.
const RETRYABLE_CODES: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "LimitExceededException",
    "TransactionConflictException",
    "TransactionInProgressException",
    "ReplicatedWriteConflictException",
];

/// How a failed request ended, as far as the caller can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// DynamoDB answered that it did not apply the request, and a retry can succeed.
    Refused,
    /// The request may or may not have been applied (no answer, a lost or unreadable response,
    /// a server error, a transaction still in progress); a retry can succeed.
    OutcomeUnknown,
    /// A retry would fail the same way: a missing table, missing permissions, a request
    /// DynamoDB considers malformed, a request we could not build.
    Permanent,
}

pub fn classify<E>(error: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata,
{
    match error {
        SdkError::ConstructionFailure(_) => Failure::Permanent,
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Failure::OutcomeUnknown
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            match error.code() {
                Some("TransactionInProgressException") => Failure::OutcomeUnknown,
                _ if status >= 500 => Failure::OutcomeUnknown,
                Some(code) if RETRYABLE_CODES.contains(&code) => Failure::Refused,
                _ => Failure::Permanent,
            }
        }
        _ => Failure::OutcomeUnknown,
    }
}

/// The error a failed request becomes: `Unavailable` when a retry can cure it, else `Internal`,
/// each naming the operation and DynamoDB's error code (never the SDK's debug dump).
pub fn storage_error<E>(operation: &str, error: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let detail = describe(&error);
    match classify(&error) {
        Failure::Refused | Failure::OutcomeUnknown => {
            StoreError::Unavailable(format!("DynamoDB {operation} failed: {detail}"))
        }
        Failure::Permanent => {
            StoreError::Internal(format!("DynamoDB refused {operation}: {detail}"))
        }
    }
}

/// A sentence for the log and the Lambda error: the code and message DynamoDB sent, or what went
/// wrong on the way there.
pub fn describe<E>(error: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(_) => match (error.code(), error.message()) {
            (Some("ResourceNotFoundException"), message) => format!(
                "ResourceNotFoundException: a KV table does not exist ({}); create the tables first (make tables)",
                message.unwrap_or("table not found")
            ),
            (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
            (Some(code), _) => code.to_string(),
            (None, _) => "an error response without a code".to_string(),
        },
        SdkError::TimeoutError(_) => "no answer within the client's timeout".to_string(),
        SdkError::DispatchFailure(failure) => match failure.as_connector_error() {
            Some(connector) if connector.is_timeout() => {
                "the connection timed out".to_string()
            }
            Some(connector) if connector.is_io() => {
                format!("the connection failed ({})", root_cause(connector))
            }
            _ => "the request could not be sent".to_string(),
        },
        SdkError::ResponseError(_) => "the response was lost or unreadable".to_string(),
        SdkError::ConstructionFailure(_) => "the request could not be built".to_string(),
        _ => "an unknown failure".to_string(),
    }
}

/// The innermost error's own words ("Connection refused (os error 111)"), without the chain of
/// wrappers around it.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// True when the request was refused by its own condition expression.
pub fn is_condition_failure<E, R>(error: &SdkError<E, R>) -> bool
where
    E: ProvideErrorMetadata,
{
    error.code() == Some("ConditionalCheckFailedException")
}
