//! AWS Step Functions' task tokens, where kv-key-watch's waiters resume their flows:
//! `SendTaskSuccess` with the change each waited for.

use aws_sdk_sfn::error::ProvideErrorMetadata;
use aws_sdk_sfn::operation::send_task_success::SendTaskSuccessError;
use aws_sdk_sfn::Client;

/// Step Functions' limit on a task's output.
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

    /// The client from the standard environment (`AWS_ENDPOINT_URL_SFN` for a local engine),
    /// with the same HTTPS stack and time bounds as DynamoDB's.
    pub async fn from_env() -> TaskTokens {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(crate::store::client::http_client())
            .timeout_config(crate::store::client::timeouts())
            .load()
            .await;
        TaskTokens::new(Client::new(&config))
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
        let error = match sent {
            Ok(_) => return Ok(()),
            Err(error) => error,
        };
        let why = format!(
            "SendTaskSuccess: {}",
            error
                .message()
                .map(str::to_string)
                .unwrap_or_else(|| error.to_string())
        );
        Err(match error.as_service_error() {
            Some(
                SendTaskSuccessError::TaskTimedOut(_)
                | SendTaskSuccessError::TaskDoesNotExist(_)
                | SendTaskSuccessError::InvalidToken(_)
                | SendTaskSuccessError::InvalidOutput(_),
            ) => NotResumed::Gone(why),
            _ => NotResumed::Retry(why),
        })
    }
}
