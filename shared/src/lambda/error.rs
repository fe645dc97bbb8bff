//! The Lambda error a function returns when it has no answer for the caller, and its
//! conversion to the runtime's `Diagnostic`: the one place the model's errors meet Lambda.

use crate::model::error::{INTERNAL_ERROR_TYPE, UNAVAILABLE_ERROR_TYPE};
use lambda_runtime::Diagnostic;

/// The Lambda error a function returns when it has no answer for the caller. Its `errorType`
/// is what a Step Functions `Retry` or `Catch` names: `KvUnavailable` is worth retrying,
/// `KvInternal` is not.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl FunctionError {
    pub fn error_type(&self) -> &'static str {
        match self {
            FunctionError::Unavailable(_) => UNAVAILABLE_ERROR_TYPE,
            FunctionError::Internal(_) => INTERNAL_ERROR_TYPE,
        }
    }
}

impl From<FunctionError> for Diagnostic {
    fn from(error: FunctionError) -> Self {
        Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}
