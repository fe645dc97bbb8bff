//! The one engine of the project's Step Functions flows: the subset of the Amazon States
//! Language that `statemachines/*.asl.json` use, walked state by state.
//!
//! - States: Task, Choice, Pass, Wait, Succeed, Fail. Fields: InputPath, Parameters,
//!   ResultSelector, ResultPath, OutputPath, Retry, Catch, ErrorPath, CausePath, and a Task's
//!   TimeoutSeconds. Paths: `$`, `.field`, `[index]`, `['field']`, and `$$.` for the context
//!   object (`Execution.Id`, `Execution.Name`, `State.Name`, `State.EnteredTime`,
//!   `State.RetryCount`, `Task.Token`). Intrinsics in templates: `States.Format`,
//!   `States.JsonToString`, `States.StringToJson`. Anything else is refused (a `States.Runtime`
//!   failure, or a [`DefinitionError`] when loading), so a definition cannot silently rely on a
//!   feature this engine does not implement.
//! - Task resources: `${XFunctionArn}` (the function's result is the Task's),
//!   `arn:aws:states:::lambda:invoke` with `FunctionName` and `Payload` (the result is
//!   `{"Payload": response, "StatusCode": 200}`, as AWS wraps it), and
//!   `arn:aws:states:::lambda:invoke.waitForTaskToken` with `FunctionName` and `Payload`: the
//!   function is called with a fresh task token in its payload (`$$.Task.Token`) and the Task
//!   waits until `SendTaskSuccess` or `SendTaskFailure` comes back through [`task_tokens`], or its
//!   `TimeoutSeconds` pass (`States.Timeout`). A plain Task's `TimeoutSeconds(Path)` bounds its
//!   call. `States.TaskFailed` matches every error but `States.Timeout`; `States.ALL` matches
//!   all.
//! - A Task calls a function through [`Invoke`]: in-process handlers in `dev/tests/it/e2e.rs`,
//!   the Lambda Invoke API ([`invoke_api`]) in the `kv-flow` binary that `make run` uses.
//! - [`Hooks`] see every step ([`Event`]), run before each state (the tests inject races there)
//!   and wait out Retry's backoff (the tests do not wait).
//!
//! Not implemented, because no definition uses them: Map, Parallel, the other intrinsic
//! functions, JSONata, `HeartbeatSeconds` (a heartbeat is answered but changes nothing), the
//! other service integrations (`.sync`, SDK integrations); Retry's jitter (the delay is the
//! nominal one, so that a walk is reproducible).

pub mod examples;
mod intrinsics;
pub mod invoke_api;
mod path;
pub mod task_tokens;

pub use path::{parse_path, read, write, PathError, Segment, WriteError};

use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use task_tokens::{TaskTokens, TIMEOUT_ERROR};

/// The resource of a Task that waits for its token to come back.
pub const WAIT_FOR_TASK_TOKEN: &str = "arn:aws:states:::lambda:invoke.waitForTaskToken";
/// The service integration's plain form: `FunctionName` and `Payload` in Parameters, and a
/// result wrapped as AWS wraps it (`{"Payload": response, "StatusCode": 200}`).
pub const LAMBDA_INVOKE: &str = "arn:aws:states:::lambda:invoke";

/// Transitions after which a walk fails: the definitions' loops (a compare-and-set that lost a
/// race reads again) end in a few rounds, so this many means a loop that does not end.
pub const MAX_TRANSITIONS: usize = 200;

/// What Step Functions calls a runtime error: a path that does not exist, a result that does not
/// fit, a Choice that matches no rule... The execution fails with this error.
pub const RUNTIME_ERROR: &str = "States.Runtime";
pub const NO_CHOICE_MATCHED: &str = "States.NoChoiceMatched";

/// A Task's function failed: a Lambda error (`errorType`, `errorMessage`), such as
/// `KvUnavailable`, or Lambda's own (`Lambda.ServiceException`...). Retry and Catch match
/// `error_type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub error_type: String,
    pub message: String,
}

/// How a Task calls a function, by the name [`function_name`] gives its resource.
pub trait Invoke {
    fn invoke(
        &self,
        function: &str,
        payload: Value,
    ) -> impl Future<Output = Result<Value, TaskFailure>>;
}

/// What a walk shows its caller and lets it do between states.
pub trait Hooks {
    /// Runs before each state is entered.
    fn before_state(&mut self, _state: &str) -> impl Future<Output = ()> {
        async {}
    }

    fn event(&mut self, _event: &Event<'_>) {}

    /// Waits before a retry.
    fn backoff(&mut self, _delay: Duration) -> impl Future<Output = ()> {
        async {}
    }

    /// Waits out a Wait state.
    fn wait(&mut self, _delay: Duration) -> impl Future<Output = ()> {
        async {}
    }
}

/// One execution: its identity (the context object's `Execution`) and the task-token service
/// its `.waitForTaskToken` Tasks wait on.
#[derive(Debug, Clone)]
pub struct Execution {
    pub id: String,
    pub name: String,
    pub tokens: Option<Arc<TaskTokens>>,
}

impl Execution {
    /// A new execution of the state machine `machine`, with a name of its own.
    pub fn new(machine: &str) -> Execution {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        // UUID-shaped and random: names also go into idempotency keys, and a pid and a counter
        // repeat from one run of `make run` to the next against the same table.
        let seed = NEXT.fetch_add(1, Ordering::Relaxed) ^ (u64::from(std::process::id()) << 32);
        let (high, low) = (task_tokens::random(seed), task_tokens::random(!seed));
        let name = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            high >> 32,
            (high >> 16) & 0xffff,
            high & 0xffff,
            low >> 48,
            low & 0xffff_ffff_ffff
        );
        Execution {
            id: format!("arn:aws:states:local:000000000000:execution:{machine}:{name}"),
            name,
            tokens: None,
        }
    }

    pub fn with_tokens(mut self, tokens: Arc<TaskTokens>) -> Execution {
        self.tokens = Some(tokens);
        self
    }

    /// The context object as a state entered now sees it.
    fn context(&self, state: &str, retry_count: u64, token: Option<&str>) -> Value {
        let mut context = json!({
            "Execution": {"Id": self.id, "Name": self.name},
            "State": {"Name": state, "EnteredTime": intrinsics::now_iso8601(), "RetryCount": retry_count},
        });
        if let Some(token) = token {
            context["Task"] = json!({"Token": token});
        }
        context
    }
}

/// Hooks that see nothing and do not wait.
pub struct NoHooks;

impl Hooks for NoHooks {}

/// One step of a walk, in the order they happen.
#[derive(Debug)]
pub enum Event<'a> {
    Pass {
        state: &'a str,
        result: &'a Value,
    },
    Task {
        state: &'a str,
        function: &'a str,
        request: &'a Value,
        response: &'a Value,
    },
    TaskFailed {
        state: &'a str,
        function: &'a str,
        request: &'a Value,
        failure: &'a TaskFailure,
    },
    /// Followed by [`Hooks::backoff`] and the call again. `attempt` counts from 1 per retrier.
    Retry {
        state: &'a str,
        failure: &'a TaskFailure,
        attempt: u64,
        delay: Duration,
    },
    /// A `.waitForTaskToken` Task's function took its token: the Task now waits for it (or
    /// its `timeout`). A [`Event::Task`] with the output sent follows, or a
    /// [`Event::TaskFailed`].
    Waiting {
        state: &'a str,
        function: &'a str,
        request: &'a Value,
        token: &'a str,
        timeout: Option<Duration>,
    },
    /// A Fail state, just before its `End` transition.
    Fail {
        state: &'a str,
        failure: &'a Failure,
    },
    Transition {
        state: &'a str,
        transition: Transition<'a>,
    },
}

/// How a walk leaves a state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition<'a> {
    Next(&'a str),
    Choice {
        index: usize,
        next: &'a str,
    },
    Default(&'a str),
    Catch {
        index: usize,
        error: &'a str,
        next: &'a str,
    },
    /// `End: true`, Succeed or Fail.
    End,
}

impl Transition<'_> {
    /// The name [`Definition::transitions`] gives it: `Next`, `Choices[i]`, `Default`,
    /// `Catch[i]`, `End`.
    pub fn label(&self) -> String {
        match self {
            Transition::Next(_) => "Next".into(),
            Transition::Choice { index, .. } => format!("Choices[{index}]"),
            Transition::Default(_) => "Default".into(),
            Transition::Catch { index, .. } => format!("Catch[{index}]"),
            Transition::End => "End".into(),
        }
    }
}

/// A failed execution's error and cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub error: String,
    pub cause: String,
}

impl Failure {
    fn runtime(cause: impl Into<String>) -> Self {
        Failure {
            error: RUNTIME_ERROR.into(),
            cause: cause.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    Failed(Failure),
}

impl Outcome {
    /// `SUCCEEDED` or `FAILED`, as Step Functions names an execution's status.
    pub fn status(&self) -> &'static str {
        match self {
            Outcome::Succeeded(_) => "SUCCEEDED",
            Outcome::Failed(_) => "FAILED",
        }
    }

    /// The output, or `{"Error": ..., "Cause": ...}` as DescribeExecution shows a failure.
    pub fn output(&self) -> Value {
        match self {
            Outcome::Succeeded(output) => output.clone(),
            Outcome::Failed(failure) => json!({"Error": failure.error, "Cause": failure.cause}),
        }
    }
}

/// `${KvKeyGetFunctionArn}` -> `kv-key-get`: the one mapping of a Task's resource to the function
/// it invokes. At deployment `template.yaml`'s `DefinitionSubstitutions` replace the placeholder
/// with `!GetAtt KvKeyGetFunction.Arn`, a function built from `kv-key-get`; dev/tests/it/template.rs
/// and dev/tests/it/e2e.rs check every state machine of the template keeps to this.
pub fn function_name(resource: &str) -> Option<String> {
    let name = resource.strip_prefix("${")?.strip_suffix("FunctionArn}")?;
    let mut characters = name.chars();
    if !characters.next()?.is_ascii_uppercase() || !name.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return None;
    }
    let mut out = String::new();
    for (index, character) in name.chars().enumerate() {
        if character.is_ascii_uppercase() && index > 0 {
            out.push('-');
        }
        out.push(character.to_ascii_lowercase());
    }
    Some(out)
}

/// A definition that does not hold together, or uses what the engine does not implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError(pub String);

impl fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DefinitionError {}

const STATE_TYPES: [&str; 6] = ["Task", "Pass", "Choice", "Wait", "Succeed", "Fail"];

/// A state machine's definition, checked so that a walk only meets states that exist.
#[derive(Debug, Clone)]
pub struct Definition {
    start_at: String,
    states: Map<String, Value>,
    max_transitions: usize,
}

impl Definition {
    pub fn new(definition: Value) -> Result<Self, DefinitionError> {
        let error = |text: String| Err(DefinitionError(text));
        let Some(start_at) = definition["StartAt"].as_str() else {
            return error("StartAt must be a state's name".into());
        };
        let Some(states) = definition["States"].as_object() else {
            return error("States must be an object".into());
        };
        let exists = |name: &Value, what: &str| match name.as_str() {
            Some(name) if states.get(name).is_some_and(Value::is_object) => Ok(()),
            _ => Err(DefinitionError(format!("{what} {name} is not a state"))),
        };
        exists(&definition["StartAt"], "StartAt")?;
        for (name, state) in states {
            let kind = state["Type"].as_str().unwrap_or_default();
            if !STATE_TYPES.contains(&kind) {
                return error(format!("{name}: unsupported state type {}", state["Type"]));
            }
            let field = |field: &str| format!("{name}: {field}");
            match kind {
                "Task" | "Pass" | "Wait" => {
                    if state["End"] != json!(true) {
                        exists(&state["Next"], &field("Next"))?;
                    }
                    if kind == "Task" && task_function(state).is_none() {
                        let resource = state["Resource"].as_str().unwrap_or_default();
                        return error(format!(
                            "{name}: unsupported Task resource {resource:?} (a placeholder \
                             ${{<Function>FunctionArn}}, or {LAMBDA_INVOKE} or \
                             {WAIT_FOR_TASK_TOKEN} with a FunctionName placeholder and a \
                             Payload)"
                        ));
                    }
                    for catcher in state["Catch"].as_array().into_iter().flatten() {
                        exists(&catcher["Next"], &field("Catch Next"))?;
                    }
                }
                "Choice" => {
                    let Some(choices) = state["Choices"].as_array().filter(|c| !c.is_empty())
                    else {
                        return error(format!("{name}: Choices must be a non-empty array"));
                    };
                    for choice in choices {
                        exists(&choice["Next"], &field("Choice Next"))?;
                    }
                    if state.get("Default").is_some() {
                        exists(&state["Default"], &field("Default"))?;
                    }
                }
                _ => {}
            }
        }
        Ok(Definition {
            start_at: start_at.to_string(),
            states: states.clone(),
            max_transitions: MAX_TRANSITIONS,
        })
    }

    /// A walk fails with `States.Runtime` after this many transitions (default
    /// [`MAX_TRANSITIONS`]).
    pub fn with_max_transitions(mut self, max: usize) -> Self {
        self.max_transitions = max;
        self
    }

    pub fn states(&self) -> &Map<String, Value> {
        &self.states
    }

    pub fn state(&self, name: &str) -> Option<&Value> {
        self.states.get(name)
    }

    /// Every (state, [`Transition::label`]) the definition declares: what a set of walks must
    /// take to have covered it.
    pub fn transitions(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (name, state) in &self.states {
            let mut add = |transition: String| {
                all.insert((name.clone(), transition));
            };
            match state["Type"].as_str().unwrap_or_default() {
                "Choice" => {
                    for index in 0..state["Choices"].as_array().map_or(0, Vec::len) {
                        add(format!("Choices[{index}]"));
                    }
                    if state.get("Default").is_some() {
                        add("Default".into());
                    }
                }
                "Succeed" | "Fail" => add("End".into()),
                _ => {
                    add(if state["End"] == json!(true) {
                        "End"
                    } else {
                        "Next"
                    }
                    .into());
                    for index in 0..state["Catch"].as_array().map_or(0, Vec::len) {
                        add(format!("Catch[{index}]"));
                    }
                }
            }
        }
        all
    }

    /// Walks the definition from `StartAt` with this input, as an execution with no task-token
    /// service.
    pub async fn execute(
        &self,
        input: Value,
        invoke: &impl Invoke,
        hooks: &mut impl Hooks,
    ) -> Outcome {
        self.execute_in(input, invoke, hooks, &Execution::new("flow"))
            .await
    }

    /// Walks the definition from `StartAt` with this input, as `execution`.
    pub async fn execute_in(
        &self,
        input: Value,
        invoke: &impl Invoke,
        hooks: &mut impl Hooks,
        execution: &Execution,
    ) -> Outcome {
        let mut name = self.start_at.clone();
        let mut data = input;
        for _ in 0..self.max_transitions {
            hooks.before_state(&name).await;
            match self.run_state(&name, data, invoke, hooks, execution).await {
                Ok(Step::Next(next, output)) => {
                    name = next;
                    data = output;
                }
                Ok(Step::End(outcome)) => return outcome,
                Err(failure) => return Outcome::Failed(failure),
            }
        }
        Outcome::Failed(Failure::runtime(format!(
            "more than {} transitions",
            self.max_transitions
        )))
    }

    async fn run_state(
        &self,
        name: &str,
        data: Value,
        invoke: &impl Invoke,
        hooks: &mut impl Hooks,
        execution: &Execution,
    ) -> Result<Step, Failure> {
        let Some(state) = self.states.get(name) else {
            return Err(Failure::runtime(format!("no state {name}")));
        };
        let input = match state.get("InputPath") {
            Some(Value::Null) => json!({}),
            Some(path) => require(&data, path, name)?,
            None => data.clone(),
        };
        let kind = state["Type"].as_str().unwrap_or_default();
        let data = match kind {
            "Pass" => {
                let context = execution.context(name, 0, None);
                let result = match state.get("Parameters") {
                    Some(parameters) => template(parameters, &input, &context, name)?,
                    None => state.get("Result").cloned().unwrap_or(input),
                };
                hooks.event(&Event::Pass {
                    state: name,
                    result: &result,
                });
                write_result(&data, state.get("ResultPath"), result, name)?
            }
            "Wait" => {
                let seconds = match (state.get("Seconds"), state.get("SecondsPath")) {
                    (Some(seconds), _) => seconds.clone(),
                    (None, Some(path)) => require(&input, path, name)?,
                    (None, None) => {
                        return Err(Failure::runtime(format!("{name}: a Wait without Seconds")))
                    }
                };
                let delay = seconds
                    .as_f64()
                    .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                    .ok_or_else(|| {
                        Failure::runtime(format!("{name}: {seconds} is not a number of seconds"))
                    })?;
                hooks.wait(delay).await;
                data
            }
            "Task" => {
                let result = match call_task(name, state, &input, invoke, hooks, execution).await? {
                    Called::Result(result) => result,
                    Called::Caught {
                        index,
                        catcher,
                        failure,
                    } => {
                        let next = next_of(catcher, "Next", name)?;
                        hooks.event(&Event::Transition {
                            state: name,
                            transition: Transition::Catch {
                                index,
                                error: &failure.error_type,
                                next: &next,
                            },
                        });
                        let caught = json!({"Error": failure.error_type, "Cause": failure.message});
                        let data = write_result(&data, catcher.get("ResultPath"), caught, name)?;
                        return Ok(Step::Next(next, data));
                    }
                };
                let result = match state.get("ResultSelector") {
                    Some(selector) => {
                        template(selector, &result, &execution.context(name, 0, None), name)?
                    }
                    None => result,
                };
                write_result(&data, state.get("ResultPath"), result, name)?
            }
            "Choice" => {
                let choices = state["Choices"].as_array().map_or(&[][..], Vec::as_slice);
                for (index, rule) in choices.iter().enumerate() {
                    if matches(rule, &input, name)? {
                        let next = next_of(rule, "Next", name)?;
                        hooks.event(&Event::Transition {
                            state: name,
                            transition: Transition::Choice { index, next: &next },
                        });
                        return Ok(Step::Next(next, data));
                    }
                }
                if state.get("Default").is_none() {
                    return Err(Failure {
                        error: NO_CHOICE_MATCHED.into(),
                        cause: format!("{name}: no rule matched and there is no Default"),
                    });
                }
                let next = next_of(state, "Default", name)?;
                hooks.event(&Event::Transition {
                    state: name,
                    transition: Transition::Default(&next),
                });
                return Ok(Step::Next(next, data));
            }
            "Succeed" => {
                // Succeed applies InputPath and OutputPath like any other state.
                let output = output_path(state, input, name)?;
                hooks.event(&Event::Transition {
                    state: name,
                    transition: Transition::End,
                });
                return Ok(Step::End(Outcome::Succeeded(output)));
            }
            "Fail" => {
                let text = |path_field: &str, fixed: &str| -> Result<String, Failure> {
                    Ok(match state.get(path_field) {
                        Some(path) => match require(&data, path, name)? {
                            Value::String(text) => text,
                            other => other.to_string(),
                        },
                        None => state[fixed].as_str().unwrap_or_default().to_string(),
                    })
                };
                let failure = Failure {
                    error: text("ErrorPath", "Error")?,
                    cause: text("CausePath", "Cause")?,
                };
                hooks.event(&Event::Fail {
                    state: name,
                    failure: &failure,
                });
                hooks.event(&Event::Transition {
                    state: name,
                    transition: Transition::End,
                });
                return Ok(Step::End(Outcome::Failed(failure)));
            }
            other => {
                return Err(Failure::runtime(format!(
                    "{name}: unsupported state type {other}"
                )))
            }
        };
        let data = output_path(state, data, name)?;
        if state["End"] == json!(true) {
            hooks.event(&Event::Transition {
                state: name,
                transition: Transition::End,
            });
            return Ok(Step::End(Outcome::Succeeded(data)));
        }
        let next = next_of(state, "Next", name)?;
        hooks.event(&Event::Transition {
            state: name,
            transition: Transition::Next(&next),
        });
        Ok(Step::Next(next, data))
    }
}

enum Step {
    Next(String, Value),
    End(Outcome),
}

enum Called<'a> {
    Result(Value),
    Caught {
        index: usize,
        catcher: &'a Value,
        failure: TaskFailure,
    },
}

/// Calls a Task's function under its Retry policy; a failure no retrier absorbs goes to the first
/// catcher that matches it, or fails the execution with the function's error.
async fn call_task<'a>(
    name: &str,
    state: &'a Value,
    input: &Value,
    invoke: &impl Invoke,
    hooks: &mut impl Hooks,
    execution: &Execution,
) -> Result<Called<'a>, Failure> {
    let resource = state["Resource"].as_str().unwrap_or_default();
    let function = task_function(state)
        .ok_or_else(|| Failure::runtime(format!("{name}: unsupported Task resource {resource}")))?;
    let waits = resource == WAIT_FOR_TASK_TOKEN;
    let integrated = waits || resource == LAMBDA_INVOKE;
    let timeout = match (state.get("TimeoutSeconds"), state.get("TimeoutSecondsPath")) {
        (Some(seconds), _) => Some(seconds.clone()),
        (None, Some(path)) => Some(require(input, path, name)?),
        (None, None) => None,
    }
    .map(|seconds| {
        seconds.as_u64().map(Duration::from_secs).ok_or_else(|| {
            Failure::runtime(format!(
                "{name}: TimeoutSeconds {seconds} is not a whole number"
            ))
        })
    })
    .transpose()?;
    let tokens = match (waits, &execution.tokens) {
        (false, _) => None,
        (true, Some(tokens)) => Some(tokens),
        (true, None) => {
            return Err(Failure::runtime(format!(
                "{name}: a .waitForTaskToken Task needs the task-token service, which this execution has not"
            )))
        }
    };
    let retriers = state["Retry"].as_array().map_or(&[][..], Vec::as_slice);
    let mut attempts = vec![0_u64; retriers.len()];
    let mut retries = 0;
    loop {
        // Each attempt of a waiting Task gets a token of its own, as in Step Functions.
        let token = tokens.map(|tokens| tokens.issue(&execution.id));
        let context = execution.context(name, retries, token.as_deref());
        let payload = match (integrated, state.get("Parameters")) {
            (true, Some(parameters)) => {
                template(parameters, input, &context, name)?["Payload"].take()
            }
            (false, Some(parameters)) => template(parameters, input, &context, name)?,
            (_, None) => input.clone(),
        };
        // A waiting Task's timeout counts the wait for its token, not the function's call.
        let call_timeout = if waits { None } else { timeout };
        let called = match within(call_timeout, invoke.invoke(&function, payload.clone())).await {
            Ok(response) => match (tokens, &token) {
                // The function's own answer is not the Task's result: the token's is.
                (Some(tokens), Some(token)) => {
                    hooks.event(&Event::Waiting {
                        state: name,
                        function: &function,
                        request: &payload,
                        token,
                        timeout,
                    });
                    tokens.wait(token, timeout).await.inspect(|output| {
                        hooks.event(&Event::Task {
                            state: name,
                            function: &function,
                            request: &payload,
                            response: output,
                        });
                    })
                }
                _ => {
                    hooks.event(&Event::Task {
                        state: name,
                        function: &function,
                        request: &payload,
                        response: &response,
                    });
                    Ok(if integrated {
                        json!({"Payload": response, "StatusCode": 200})
                    } else {
                        response
                    })
                }
            },
            Err(failure) => Err(failure),
        };
        let failure = match called {
            Ok(result) => return Ok(Called::Result(result)),
            Err(failure) => failure,
        };
        retries += 1;
        hooks.event(&Event::TaskFailed {
            state: name,
            function: &function,
            request: &payload,
            failure: &failure,
        });
        // Only the first retrier that names the error counts, even when it is used up: as in
        // Step Functions, a later, broader one does not take over.
        let retrier = retriers
            .iter()
            .position(|retrier| handles(&retrier["ErrorEquals"], &failure.error_type));
        if let Some(index) = retrier {
            let retrier = &retriers[index];
            let max = retrier["MaxAttempts"].as_u64().unwrap_or(3);
            if attempts[index] < max {
                let delay = retry_delay(retrier, attempts[index]);
                attempts[index] += 1;
                hooks.event(&Event::Retry {
                    state: name,
                    failure: &failure,
                    attempt: attempts[index],
                    delay,
                });
                hooks.backoff(delay).await;
                continue;
            }
        }
        let catchers = state["Catch"].as_array().map_or(&[][..], Vec::as_slice);
        let caught = catchers
            .iter()
            .enumerate()
            .find(|(_, catcher)| handles(&catcher["ErrorEquals"], &failure.error_type));
        return match caught {
            Some((index, catcher)) => Ok(Called::Caught {
                index,
                catcher,
                failure,
            }),
            None => Err(Failure {
                error: failure.error_type,
                cause: failure.message,
            }),
        };
    }
}

/// `future`, failed with `States.Timeout` once `timeout` has passed, as Step Functions stops
/// waiting then. A call that blocks inside its poll (the Invoke API's) cannot be cut short:
/// it still fails if it ended past the deadline, so the outcome is the same, only later.
async fn within<F>(timeout: Option<Duration>, future: F) -> Result<Value, TaskFailure>
where
    F: Future<Output = Result<Value, TaskFailure>>,
{
    struct Within<F> {
        future: std::pin::Pin<Box<F>>,
        deadline: Option<std::time::Instant>,
        /// The last poll's waker, which the timer wakes: an executor may move the future.
        waker: Option<Arc<std::sync::Mutex<std::task::Waker>>>,
    }
    impl<F: Future<Output = Result<Value, TaskFailure>>> Future for Within<F> {
        type Output = F::Output;
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            context: &mut std::task::Context<'_>,
        ) -> std::task::Poll<F::Output> {
            let ready = self.future.as_mut().poll(context);
            let Some(deadline) = self.deadline else {
                return ready;
            };
            let late = std::time::Instant::now() >= deadline;
            if let (std::task::Poll::Ready(output), false) = (&ready, late) {
                return std::task::Poll::Ready(output.clone());
            }
            if late {
                return std::task::Poll::Ready(Err(TaskFailure {
                    error_type: TIMEOUT_ERROR.into(),
                    message: "The task did not finish within its TimeoutSeconds".into(),
                }));
            }
            match &self.waker {
                Some(waker) => {
                    *waker
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner()) = context.waker().clone();
                }
                None => {
                    // One sleeper per timed call: Tasks with a timeout are few, and this works
                    // under any executor.
                    let waker = Arc::new(std::sync::Mutex::new(context.waker().clone()));
                    self.waker = Some(waker.clone());
                    std::thread::spawn(move || {
                        std::thread::sleep(
                            deadline.saturating_duration_since(std::time::Instant::now()),
                        );
                        waker
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner())
                            .wake_by_ref();
                    });
                }
            }
            std::task::Poll::Pending
        }
    }
    Within {
        future: Box::pin(future),
        deadline: timeout.map(|timeout| std::time::Instant::now() + timeout),
        waker: None,
    }
    .await
}

/// `States.ALL` matches any error; `States.TaskFailed` any but a timeout, as in Step Functions.
fn handles(names: &Value, error_type: &str) -> bool {
    names.as_array().is_some_and(|names| {
        names.iter().any(|name| {
            name == error_type
                || name == "States.ALL"
                || (name == "States.TaskFailed" && error_type != TIMEOUT_ERROR)
        })
    })
}

/// The function a Task calls: its `${XFunctionArn}` resource, or the `FunctionName` of a
/// `.waitForTaskToken` Task.
fn task_function(state: &Value) -> Option<String> {
    match state["Resource"].as_str()? {
        LAMBDA_INVOKE | WAIT_FOR_TASK_TOKEN if has_payload(&state["Parameters"]) => {
            function_name(state["Parameters"]["FunctionName"].as_str()?)
        }
        resource => function_name(resource),
    }
}

/// A service-integration Task sends only its `Payload` (or `Payload.$`): without one, a
/// misspelt field would silently send nothing.
fn has_payload(parameters: &Value) -> bool {
    parameters["Payload"].is_object() || parameters["Payload.$"].is_string()
}

/// IntervalSeconds × BackoffRate^retries, at most MaxDelaySeconds. Without jitter: a walk is
/// reproducible, and the longest wait is what one sees.
fn retry_delay(retrier: &Value, retries: u64) -> Duration {
    let interval = retrier["IntervalSeconds"].as_f64().unwrap_or(1.0);
    let rate = retrier["BackoffRate"].as_f64().unwrap_or(2.0);
    let exponent = i32::try_from(retries).unwrap_or(i32::MAX);
    let mut seconds = interval * rate.powi(exponent);
    if let Some(max) = retrier["MaxDelaySeconds"].as_f64() {
        seconds = seconds.min(max);
    }
    // A definition's numbers are not trusted to make a valid Duration (negative, NaN, huge).
    Duration::try_from_secs_f64(seconds).unwrap_or(Duration::ZERO)
}

fn next_of(value: &Value, field: &str, state: &str) -> Result<String, Failure> {
    value[field]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Failure::runtime(format!("{state}: no {field}")))
}

fn require(data: &Value, path: &Value, state: &str) -> Result<Value, Failure> {
    let Some(text) = path.as_str() else {
        return Err(Failure::runtime(format!(
            "{state}: a path must be a string: {path}"
        )));
    };
    let segments =
        parse_path(text).map_err(|error| Failure::runtime(format!("{state}: {error}")))?;
    read(data, &segments).cloned().ok_or_else(|| {
        Failure::runtime(format!("{state}: the path {text} does not exist in {data}"))
    })
}

/// ResultPath: absent is `$`, `null` discards the result.
fn write_result(
    data: &Value,
    path: Option<&Value>,
    result: Value,
    state: &str,
) -> Result<Value, Failure> {
    match path {
        None => Ok(result),
        Some(Value::Null) => Ok(data.clone()),
        Some(Value::String(path)) => {
            write(data, path, result).map_err(|error| Failure::runtime(format!("{state}: {error}")))
        }
        Some(other) => Err(Failure::runtime(format!(
            "{state}: ResultPath must be a string or null: {other}"
        ))),
    }
}

/// OutputPath: absent is `$`, `null` is `{}`.
fn output_path(state: &Value, data: Value, name: &str) -> Result<Value, Failure> {
    match state.get("OutputPath") {
        None => Ok(data),
        Some(Value::Null) => Ok(json!({})),
        Some(path) => require(&data, path, name),
    }
}

/// A payload template (Parameters, ResultSelector): `"key.$": "$.path"` takes the value at the
/// path, `"$$.path"` the context object's, `"States.Format(...)"` an intrinsic's result;
/// everything else is copied.
fn template(value: &Value, data: &Value, context: &Value, state: &str) -> Result<Value, Failure> {
    Ok(match value {
        Value::Object(object) => {
            let mut out = Map::new();
            for (key, item) in object {
                match key.strip_suffix(".$") {
                    Some(name) => {
                        let Some(expression) = item.as_str() else {
                            return Err(Failure::runtime(format!(
                                "{state}: {key} must be a path or an intrinsic function"
                            )));
                        };
                        out.insert(
                            name.to_string(),
                            evaluate(expression, data, context, state)?,
                        );
                    }
                    None => {
                        out.insert(key.clone(), template(item, data, context, state)?);
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| template(item, data, context, state))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// A path of the state's input, a `$$.` path of the context object, or an intrinsic.
fn evaluate(
    expression: &str,
    data: &Value,
    context: &Value,
    state: &str,
) -> Result<Value, Failure> {
    if expression.starts_with("States.") {
        return intrinsics::call(expression, &|path| evaluate(path, data, context, state))
            .map_err(|why| Failure::runtime(format!("{state}: {why}")));
    }
    match expression.strip_prefix('$') {
        Some(rest) if rest.starts_with('$') => require(context, &Value::from(rest), state),
        _ => require(data, &Value::from(expression), state),
    }
}

/// A Choice rule: And, Or, Not, IsPresent, IsNull and the comparisons below. Comparing a value of
/// another type is false, as in Step Functions; a variable that does not exist is a runtime error
/// except for IsPresent.
fn matches(rule: &Value, data: &Value, state: &str) -> Result<bool, Failure> {
    if let Some(all) = rule["And"].as_array() {
        for inner in all {
            if !matches(inner, data, state)? {
                return Ok(false);
            }
        }
        return Ok(true);
    }
    if let Some(any) = rule["Or"].as_array() {
        for inner in any {
            if matches(inner, data, state)? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    if rule["Not"].is_object() {
        return Ok(!matches(&rule["Not"], data, state)?);
    }
    let Some(variable) = rule["Variable"].as_str() else {
        return Err(Failure::runtime(format!(
            "{state}: a Choice rule without Variable: {rule}"
        )));
    };
    let segments =
        parse_path(variable).map_err(|error| Failure::runtime(format!("{state}: {error}")))?;
    let value = read(data, &segments);
    if let Some(present) = rule["IsPresent"].as_bool() {
        return Ok(value.is_some() == present);
    }
    let Some(value) = value else {
        return Err(Failure::runtime(format!(
            "{state}: the variable {variable} does not exist"
        )));
    };
    if let Some(null) = rule["IsNull"].as_bool() {
        return Ok(value.is_null() == null);
    }
    let numbers = |expected: &Value| value.as_f64().zip(expected.as_f64());
    type Compare = fn(f64, f64) -> bool;
    let comparisons: [(&str, Compare); 5] = [
        ("NumericEquals", |a, b| a == b),
        ("NumericLessThan", |a, b| a < b),
        ("NumericLessThanEquals", |a, b| a <= b),
        ("NumericGreaterThan", |a, b| a > b),
        ("NumericGreaterThanEquals", |a, b| a >= b),
    ];
    for (operator, compare) in comparisons {
        if let Some(expected) = rule.get(operator) {
            return Ok(numbers(expected).is_some_and(|(a, b)| compare(a, b)));
        }
    }
    if let Some(expected) = rule.get("StringEquals") {
        return Ok(value.is_string() && value == expected);
    }
    if let Some(expected) = rule.get("BooleanEquals") {
        return Ok(value.is_boolean() && value == expected);
    }
    Err(Failure::runtime(format!(
        "{state}: unsupported Choice rule {rule}"
    )))
}

/// Runs a walk to its end on this thread, for callers without an async runtime whose [`Invoke`]
/// blocks (the `kv-flow` binary with [`invoke_api::InvokeApi`]): every future is then ready when
/// polled, or wakes this thread.
pub fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_tokens;
