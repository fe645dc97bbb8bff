//! One error enum for everything a caller can act on, and the names of the Lambda errors for
//! the rest: `KvUnavailable` (a retry can cure it) and `KvInternal` (it cannot). The Lambda
//! error itself is made at the edge (`lambda::error`).

use serde_json::{json, Value};

/// An outcome the caller can branch on: it becomes a status-code envelope, never a Lambda error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidBucketName(String),
    #[error("{0}")]
    InvalidKey(String),
    #[error("{0}")]
    InvalidValue(String),
    #[error("Bucket already exists: {0}")]
    BucketExists(String),
    #[error("Bucket not found: {0}")]
    BucketNotFound(String),
    #[error("Key not found")]
    KeyNotFound,
    #[error("Revision mismatch: expected revision {expected}, but the key's latest revision is {current}")]
    RevisionMismatch { expected: u64, current: u64 },
    #[error("Key already exists with a live value at revision {current}")]
    KeyExists { current: u64 },
    #[error(
        "The key's value at revision {current} is not an integer, so it cannot be incremented"
    )]
    NotACounter { current: u64 },
    #[error("{0}")]
    ValueTooLarge(String),
    #[error("{0}")]
    BucketFull(String),
    #[error("{0}")]
    ConfigTooLarge(String),
    #[error("{0}")]
    TooManyWaiters(String),
    #[error("{0}")]
    ValueNotJson(String),
    /// DynamoDB failed in a way a retry can cure (throttling, an unreachable or silent
    /// endpoint) after the SDK's retries: a Lambda error flows `Retry`.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else that is not the caller's doing (a missing table, a request DynamoDB refuses
    /// as malformed, a corrupt item): a Lambda error a retry would only repeat.
    #[error("{0}")]
    Internal(String),
}

impl KvError {
    pub fn status_code(&self) -> u16 {
        match self {
            KvError::InvalidParameter(_)
            | KvError::InvalidBucketName(_)
            | KvError::InvalidKey(_)
            | KvError::InvalidValue(_)
            | KvError::BucketExists(_) => 400,
            KvError::BucketNotFound(_) | KvError::KeyNotFound => 404,
            KvError::RevisionMismatch { .. }
            | KvError::KeyExists { .. }
            | KvError::NotACounter { .. } => 409,
            KvError::ValueTooLarge(_) | KvError::BucketFull(_) | KvError::ConfigTooLarge(_) => 413,
            KvError::TooManyWaiters(_) => 429,
            KvError::ValueNotJson(_) => 422,
            KvError::Unavailable(_) => 503,
            KvError::Internal(_) => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            KvError::InvalidParameter(_) => "invalid_parameter",
            KvError::InvalidBucketName(_) => "invalid_bucket_name",
            KvError::InvalidKey(_) => "invalid_key",
            KvError::InvalidValue(_) => "invalid_value",
            KvError::BucketExists(_) => "bucket_exists",
            KvError::BucketNotFound(_) => "bucket_not_found",
            KvError::KeyNotFound => "key_not_found",
            KvError::RevisionMismatch { .. } => "revision_mismatch",
            KvError::KeyExists { .. } => "key_exists",
            KvError::NotACounter { .. } => "not_a_counter",
            KvError::ValueTooLarge(_) => "value_too_large",
            KvError::BucketFull(_) => "bucket_full",
            KvError::ConfigTooLarge(_) => "config_too_large",
            KvError::TooManyWaiters(_) => "too_many_waiters",
            KvError::ValueNotJson(_) => "value_not_json",
            KvError::Unavailable(_) => "unavailable",
            KvError::Internal(_) => "internal",
        }
    }

    /// The envelope body: `error` for people, `code` for machines, and the current revision on
    /// compare-and-set failures so a flow can retry with it.
    pub fn body(&self) -> Value {
        let mut body = json!({"error": self.to_string(), "code": self.code()});
        match self {
            KvError::RevisionMismatch { current, .. }
            | KvError::KeyExists { current }
            | KvError::NotACounter { current } => {
                body["current_revision"] = json!(current);
            }
            _ => {}
        }
        body
    }

    pub fn param(message: impl Into<String>) -> Self {
        KvError::InvalidParameter(message.into())
    }
}

/// The `errorType` of a failure a retry can cure: what a Step Functions `Retry` names.
pub const UNAVAILABLE_ERROR_TYPE: &str = "KvUnavailable";
/// The `errorType` of a failure a retry would only repeat.
pub const INTERNAL_ERROR_TYPE: &str = "KvInternal";
