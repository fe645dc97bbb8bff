//! Step Functions' task-token API, as the engine plays it: a Task with `.waitForTaskToken`
//! gets a token here ([`TaskTokens::issue`]) and waits ([`TaskTokens::wait`]) until a function
//! calls `SendTaskSuccess` or `SendTaskFailure` with it over HTTP, as the AWS SDK does
//! (`AWS_ENDPOINT_URL_SFN`), or until its timeout.
//!
//! The protocol is Step Functions' JSON 1.0: `POST /` with `X-Amz-Target:
//! AWSStepFunctions.SendTaskSuccess` (`{"taskToken", "output"}`), `.SendTaskFailure`
//! (`{"taskToken", "error", "cause"}`) or `.SendTaskHeartbeat` (`{"taskToken"}`), answered
//! `200 {}`, or 400 with `{"__type": NAME, "message": ...}` as AWS answers: `TaskTimedOut` for
//! a token whose task is no longer waiting (completed, timed out, or its execution stopped),
//! `TaskDoesNotExist` for one never issued, `InvalidToken` for one that is not a token at all,
//! `InvalidOutput` for output that is not JSON. Unlike moto, which accepts any token, a test
//! can rely on what it answers, and [`TaskTokens::calls`] shows every call.

use crate::TaskFailure;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// A task that did not hear back within its `TimeoutSeconds` fails with this error.
pub const TIMEOUT_ERROR: &str = "States.Timeout";
const TOKEN_PREFIX: &str = "kvflow-";
/// Largest request body accepted (Step Functions' own limit on an output is 256 KB).
const MAX_BODY: usize = 1024 * 1024;

/// One call received, and what it was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCall {
    /// `SendTaskSuccess`, `SendTaskFailure`, `SendTaskHeartbeat`, or what else was asked.
    pub target: String,
    pub token: String,
    pub body: Value,
    /// 200, or the error's `__type`.
    pub answer: String,
}

#[derive(Debug)]
struct Task {
    execution: String,
    /// The outcome sent, until the waiter takes it.
    outcome: Option<Result<Value, TaskFailure>>,
    /// No longer waiting: completed, timed out or cancelled. Later sends are `TaskTimedOut`.
    closed: bool,
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
struct State {
    tasks: HashMap<String, Task>,
    calls: Vec<TokenCall>,
    issued: u64,
}

#[derive(Debug)]
pub struct TaskTokens {
    port: u16,
    state: Mutex<State>,
}

impl TaskTokens {
    /// Serves the API on a free loopback port.
    pub fn serve() -> std::io::Result<Arc<TaskTokens>> {
        TaskTokens::serve_on(0)
    }

    /// Serves the API on this loopback port (0: a free one).
    pub fn serve_on(port: u16) -> std::io::Result<Arc<TaskTokens>> {
        let listener = TcpListener::bind(("127.0.0.1", port))?;
        let tokens = Arc::new(TaskTokens {
            port: listener.local_addr()?.port(),
            state: Mutex::new(State::default()),
        });
        let serving = tokens.clone();
        std::thread::spawn(move || {
            for connection in listener.incoming().flatten() {
                let serving = serving.clone();
                std::thread::spawn(move || serving.serve_connection(connection));
            }
        });
        Ok(tokens)
    }

    /// What functions get as `AWS_ENDPOINT_URL_SFN`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the map consistent: every change is
        // one insert or one field.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A new token for a task of `execution`, waiting from now.
    pub fn issue(&self, execution: &str) -> String {
        let mut state = self.state();
        state.issued += 1;
        let token = format!(
            "{TOKEN_PREFIX}{:016x}{:016x}",
            random(state.issued),
            random(!state.issued)
        );
        state.tasks.insert(
            token.clone(),
            Task {
                execution: execution.to_string(),
                outcome: None,
                closed: false,
                waker: None,
            },
        );
        token
    }

    /// Waits for the outcome sent with `token`; past `timeout`, a `States.Timeout` failure,
    /// after which the token is refused as timed out. Works under any executor.
    pub fn wait(self: &Arc<Self>, token: &str, timeout: Option<Duration>) -> TokenWait {
        TokenWait {
            tokens: self.clone(),
            token: token.to_string(),
            deadline: timeout.map(|timeout| Instant::now() + timeout),
            timer_started: false,
        }
    }

    /// The task stops waiting (its execution was stopped): later sends are `TaskTimedOut`.
    pub fn cancel(&self, token: &str) {
        if let Some(task) = self.state().tasks.get_mut(token) {
            task.closed = true;
            task.outcome = None;
        }
    }

    /// Cancels every task of an execution.
    pub fn cancel_execution(&self, execution: &str) {
        for task in self.state().tasks.values_mut() {
            if task.execution == execution {
                task.closed = true;
                task.outcome = None;
            }
        }
    }

    /// Every call received so far, in order.
    pub fn calls(&self) -> Vec<TokenCall> {
        self.state().calls.clone()
    }

    /// Answers one API call: (HTTP status, body).
    pub fn answer(&self, target: &str, body: &[u8]) -> (u16, Value) {
        let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let token = request["taskToken"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let operation = target.strip_prefix("AWSStepFunctions.").unwrap_or(target);
        let outcome = match operation {
            "SendTaskSuccess" => match request["output"]
                .as_str()
                .map(serde_json::from_str::<Value>)
            {
                Some(Ok(output)) => Some(Ok(output)),
                _ => {
                    return self.record(
                        operation,
                        token,
                        request,
                        Err(("InvalidOutput", "The output is not JSON")),
                    )
                }
            },
            "SendTaskFailure" => Some(Err(TaskFailure {
                error_type: request["error"].as_str().unwrap_or_default().to_string(),
                message: request["cause"].as_str().unwrap_or_default().to_string(),
            })),
            "SendTaskHeartbeat" => None,
            _ => {
                return self.record(
                    operation,
                    token,
                    request,
                    Err((
                        "UnknownOperationException",
                        "Not an operation of this engine",
                    )),
                )
            }
        };
        let refusal = {
            let mut state = self.state();
            match state.tasks.get_mut(&token) {
                None if token.starts_with(TOKEN_PREFIX) => {
                    Some(("TaskDoesNotExist", "No task has this token"))
                }
                None => Some(("InvalidToken", "Not a task token of this engine")),
                Some(task) if task.closed => {
                    Some(("TaskTimedOut", "The task is no longer waiting"))
                }
                Some(task) => {
                    if let Some(outcome) = outcome {
                        task.outcome = Some(outcome);
                        task.closed = true;
                        if let Some(waker) = task.waker.take() {
                            waker.wake();
                        }
                    }
                    None
                }
            }
        };
        match refusal {
            Some(refusal) => self.record(operation, token, request, Err(refusal)),
            None => self.record(operation, token, request, Ok(())),
        }
    }

    fn record(
        &self,
        target: &str,
        token: String,
        body: Value,
        answer: Result<(), (&str, &str)>,
    ) -> (u16, Value) {
        let (status, reply, name) = match answer {
            Ok(()) => (200, json!({}), "200".to_string()),
            Err((name, message)) => (
                400,
                json!({"__type": name, "message": message}),
                name.to_string(),
            ),
        };
        self.state().calls.push(TokenCall {
            target: target.to_string(),
            token,
            body,
            answer: name,
        });
        (status, reply)
    }

    /// HTTP/1.1 requests on one connection, kept alive as the SDK's client keeps it.
    fn serve_connection(&self, connection: TcpStream) {
        let Ok(writer) = connection.try_clone() else {
            return;
        };
        let mut writer = writer;
        let mut reader = BufReader::new(connection);
        loop {
            let mut request_line = String::new();
            match reader.read_line(&mut request_line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let (mut length, mut target, mut close) = (0usize, String::new(), false);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    let value = value.trim();
                    match name.trim().to_ascii_lowercase().as_str() {
                        // A length that cannot be read leaves the next request's start
                        // unknown: the connection cannot go on.
                        "content-length" => match value.parse() {
                            Ok(parsed) => length = parsed,
                            Err(_) => return,
                        },
                        "x-amz-target" => target = value.to_string(),
                        "connection" => close = value.eq_ignore_ascii_case("close"),
                        _ => {}
                    }
                }
            }
            if length > MAX_BODY {
                return;
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let (status, reply) = self.answer(&target, &body);
            let text = reply.to_string();
            let error_type = reply["__type"]
                .as_str()
                .map(|name| format!("x-amzn-ErrorType: {name}\r\n"))
                .unwrap_or_default();
            let reason = if status == 200 { "OK" } else { "Bad Request" };
            let written = write!(
                writer,
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.0\r\n{error_type}Content-Length: {}\r\n\r\n{text}",
                text.len()
            );
            if written.is_err() || writer.flush().is_err() || close {
                return;
            }
        }
    }
}

/// A cheap, well-spread 64-bit value: tokens need to be distinct and not guessable by a test
/// that did not get them, not cryptographically strong.
pub(crate) fn random(seed: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(seed);
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

/// The future of [`TaskTokens::wait`].
pub struct TokenWait {
    tokens: Arc<TaskTokens>,
    token: String,
    deadline: Option<Instant>,
    timer_started: bool,
}

impl Future for TokenWait {
    type Output = Result<Value, TaskFailure>;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut state = this.tokens.state();
        let Some(task) = state.tasks.get_mut(&this.token) else {
            return Poll::Ready(Err(TaskFailure {
                error_type: "States.Runtime".into(),
                message: format!("no task has the token {}", this.token),
            }));
        };
        if let Some(outcome) = task.outcome.take() {
            return Poll::Ready(outcome);
        }
        if task.closed {
            return Poll::Ready(Err(TaskFailure {
                error_type: TIMEOUT_ERROR.into(),
                message: "The task was cancelled or has timed out".into(),
            }));
        }
        if this
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            task.closed = true;
            return Poll::Ready(Err(TaskFailure {
                error_type: TIMEOUT_ERROR.into(),
                message: "The task did not hear back within its TimeoutSeconds".into(),
            }));
        }
        task.waker = Some(context.waker().clone());
        drop(state);
        if let (Some(deadline), false) = (this.deadline, this.timer_started) {
            this.timer_started = true;
            // The timer wakes whichever waker the last poll left, not the first one: an
            // executor may move the future to another task.
            let (tokens, token) = (this.tokens.clone(), this.token.clone());
            std::thread::spawn(move || {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                let waker = tokens
                    .state()
                    .tasks
                    .get_mut(&token)
                    .and_then(|task| task.waker.take());
                if let Some(waker) = waker {
                    waker.wake();
                }
            });
        }
        Poll::Pending
    }
}

/// A wait given up before its outcome (its execution was dropped, as a stopped one is) closes
/// the task: a later send is told `TaskTimedOut` instead of being accepted and lost.
impl Drop for TokenWait {
    fn drop(&mut self) {
        if let Some(task) = self.tokens.state().tasks.get_mut(&self.token) {
            if task.outcome.is_none() {
                task.closed = true;
            }
            task.waker = None;
        }
    }
}
