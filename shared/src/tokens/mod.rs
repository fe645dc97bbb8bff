//! AWS Step Functions' task tokens, where kv-key-watch's waiters resume their flows:
//! `SendTaskSuccess` with the change each waited for.

use aws_sdk_sfn::error::ProvideErrorMetadata;
use aws_sdk_sfn::Client;

/// Step Functions' limits on a task's output, and on a failure's error name and cause.
pub const MAX_ERROR_CHARS: usize = 256;
pub const MAX_CAUSE_CHARS: usize = 32_768;
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;

/// Why a flow was not resumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotResumed {
    /// The token no longer waits: its task timed out, its execution stopped, it was already
    /// resumed, or it never existed. The waiter is dropped.
    Gone(String),
    /// Throttled, unreachable or failing: sending again may work.
    Retry(String),
}

#[derive(Debug, Clone)]
pub struct TaskTokens {
    client: Client,
}

impl TaskTokens {
    pub fn new(client: Client) -> TaskTokens {
        TaskTokens { client }
    }

    /// The client from the shared configuration (`AWS_ENDPOINT_URL_SFN` for a local engine).
    pub fn from_config(config: &aws_config::SdkConfig) -> TaskTokens {
        TaskTokens::new(Client::new(config))
    }

    /// Resumes the flow waiting on `token` with `output` (JSON text).
    pub async fn resume(&self, token: &str, output: &str) -> Result<(), NotResumed> {
        let sent = self
            .client
            .send_task_success()
            .task_token(token)
            .output(output)
            .send()
            .await;
        answered("SendTaskSuccess", sent)
    }

    /// Fails the task waiting on `token` with `error` (a name its flow's Catch can match) and
    /// `cause`.
    pub async fn fail(&self, token: &str, error: &str, cause: &str) -> Result<(), NotResumed> {
        let error_name: String = error.chars().take(MAX_ERROR_CHARS).collect();
        let cause: String = cause.chars().take(MAX_CAUSE_CHARS).collect();
        let sent = self
            .client
            .send_task_failure()
            .task_token(token)
            .error(error_name)
            .cause(cause)
            .send()
            .await;
        answered("SendTaskFailure", sent)
    }
}

/// Step Functions' answer: done, or why not. The refusals that mean the token no longer waits
/// (its task timed out, its execution stopped, it was resumed already, it never existed) are
/// `Gone`; the rest may pass on a later try.
fn answered<T, E: ProvideErrorMetadata + std::fmt::Display>(
    operation: &str,
    sent: Result<T, E>,
) -> Result<(), NotResumed> {
    let error = match sent {
        Ok(_) => return Ok(()),
        Err(error) => error,
    };
    let why = format!(
        "{operation}: {}",
        error
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| error.to_string())
    );
    match error.code() {
        Some("TaskTimedOut" | "TaskDoesNotExist" | "InvalidToken" | "InvalidOutput") => {
            Err(NotResumed::Gone(why))
        }
        _ => Err(NotResumed::Retry(why)),
    }
}
