//! `.waitForTaskToken` Tasks, the context object and the task-token API over HTTP, as the
//! functions reach it.

use super::task_tokens::TaskTokens;
use super::*;
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

/// One HTTP client connection to the task-token API, kept alive across calls.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    fn connect(tokens: &TaskTokens) -> Client {
        let port: u16 = tokens
            .endpoint()
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .expect("a port");
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        Client {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    fn send(&mut self, operation: &str, body: Value) -> (u16, Value) {
        let text = body.to_string();
        write!(
            self.writer,
            "POST / HTTP/1.1\r\nHost: local\r\nX-Amz-Target: AWSStepFunctions.{operation}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )
        .expect("write");
        let mut status_line = String::new();
        self.reader.read_line(&mut status_line).expect("status");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status");
        let mut length = 0;
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).expect("header");
            if line.trim().is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse().expect("length");
            }
        }
        let mut answer = vec![0; length];
        self.reader.read_exact(&mut answer).expect("body");
        (status, serde_json::from_slice(&answer).expect("JSON"))
    }
}

fn success(client: &mut Client, token: &str, output: Value) -> (u16, Value) {
    client.send(
        "SendTaskSuccess",
        json!({"taskToken": token, "output": output.to_string()}),
    )
}

#[test]
fn the_api_answers_as_step_functions_does_on_one_kept_alive_connection() {
    let tokens = TaskTokens::serve().expect("serve");
    let mut client = Client::connect(&tokens);
    let token = tokens.issue("run-1");
    let (status, answer) = client.send("SendTaskHeartbeat", json!({"taskToken": token}));
    assert_eq!((status, answer), (200, json!({})));
    let (status, answer) = client.send(
        "SendTaskSuccess",
        json!({"taskToken": token, "output": "not json"}),
    );
    assert_eq!(
        (status, answer["__type"].clone()),
        (400, json!("InvalidOutput"))
    );
    assert_eq!(
        success(&mut client, &token, json!({"a": 1})),
        (200, json!({}))
    );
    let waited = block_on(tokens.wait(&token, None));
    assert_eq!(waited, Ok(json!({"a": 1})));
    // Completed: a second send is refused as timed out, as Step Functions refuses it.
    let (status, answer) = success(&mut client, &token, json!({}));
    assert_eq!(
        (status, answer["__type"].clone()),
        (400, json!("TaskTimedOut"))
    );
    let (_, answer) = success(&mut client, "kvflow-00", json!({}));
    assert_eq!(answer["__type"], "TaskDoesNotExist");
    let (_, answer) = success(&mut client, "garbage", json!({}));
    assert_eq!(answer["__type"], "InvalidToken");
    let cancelled = tokens.issue("run-2");
    tokens.cancel(&cancelled);
    let (_, answer) = success(&mut client, &cancelled, json!({}));
    assert_eq!(answer["__type"], "TaskTimedOut");
    let failed = tokens.issue("run-3");
    let (status, _) = client.send(
        "SendTaskFailure",
        json!({"taskToken": failed, "error": "bucket_not_found", "cause": "no bucket"}),
    );
    assert_eq!(status, 200);
    let failure = block_on(tokens.wait(&failed, None)).expect_err("failed");
    assert_eq!(failure.error_type, "bucket_not_found");
    let answers: Vec<String> = tokens.calls().into_iter().map(|call| call.answer).collect();
    assert_eq!(
        answers,
        [
            "200",
            "InvalidOutput",
            "200",
            "TaskTimedOut",
            "TaskDoesNotExist",
            "InvalidToken",
            "TaskTimedOut",
            "200"
        ]
    );
}

#[test]
fn a_wait_times_out_and_its_token_is_then_refused() {
    let tokens = TaskTokens::serve().expect("serve");
    let token = tokens.issue("run");
    let failure =
        block_on(tokens.wait(&token, Some(Duration::from_millis(50)))).expect_err("timeout");
    assert_eq!(failure.error_type, task_tokens::TIMEOUT_ERROR);
    let (_, answer) = success(&mut Client::connect(&tokens), &token, json!({}));
    assert_eq!(answer["__type"], "TaskTimedOut");
}

#[test]
fn a_thousand_tokens_completed_from_32_connections() {
    let tokens = TaskTokens::serve().expect("serve");
    let issued: Vec<String> = (0..1000).map(|_| tokens.issue("crowd")).collect();
    let distinct: std::collections::BTreeSet<&String> = issued.iter().collect();
    assert_eq!(distinct.len(), 1000);
    std::thread::scope(|scope| {
        for chunk in issued.chunks(1000 / 32 + 1) {
            let tokens = &tokens;
            scope.spawn(move || {
                let mut client = Client::connect(tokens);
                for token in chunk {
                    assert_eq!(success(&mut client, token, json!(token)).0, 200);
                }
            });
        }
    });
    for token in &issued {
        assert_eq!(block_on(tokens.wait(token, None)), Ok(json!(token)));
    }
}

/// A function that resumes its caller: it sends `SendTaskSuccess` (or, for `{"fail": E}`,
/// `SendTaskFailure`) with the token of its payload from another thread, as a stream
/// consumer would later; `{"ignore": true}` sends nothing.
struct Resumer(Arc<TaskTokens>);

impl Invoke for Resumer {
    async fn invoke(&self, _function: &str, payload: Value) -> Result<Value, TaskFailure> {
        let token = payload["task_token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let tokens = self.0.clone();
        if payload["ignore"] != json!(true) {
            std::thread::spawn(move || {
                let mut client = Client::connect(&tokens);
                match payload["fail"].as_str() {
                    Some(error) => {
                        client.send(
                            "SendTaskFailure",
                            json!({"taskToken": token, "error": error, "cause": "refused"}),
                        );
                    }
                    None => {
                        success(&mut client, &token, json!({"resumed": payload["key"]}));
                    }
                }
            });
        }
        Ok(json!({"status_code": 200, "body": {"message": "Waiting for a change"}}))
    }
}

fn waiting_flow(timeout: u64) -> Definition {
    Definition::new(json!({
        "StartAt": "Wait",
        "States": {
            "Wait": {
                "Type": "Task",
                "Resource": WAIT_FOR_TASK_TOKEN,
                "Parameters": {
                    "FunctionName": "${KvKeyWatchFunctionArn}",
                    "Payload": {
                        "key.$": "$.key", "ignore.$": "$.ignore", "fail.$": "$.fail",
                        "task_token.$": "$$.Task.Token",
                        "id.$": "States.Format('{}/{}', $$.Execution.Id, $$.State.Name)"
                    }
                },
                "TimeoutSeconds": timeout,
                "ResultPath": "$.result",
                "Catch": [
                    {"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.error", "Next": "Failed"},
                    {"ErrorEquals": ["States.Timeout"], "ResultPath": "$.error", "Next": "TimedOut"}
                ],
                "End": true
            },
            "Failed": {"Type": "Pass", "Parameters": {"caught.$": "$.error.Error"}, "End": true},
            "TimedOut": {"Type": "Pass", "Parameters": {"timed_out": true}, "End": true}
        }
    }))
    .expect("a valid definition")
}

#[test]
fn a_waiting_task_resumes_with_the_output_sent_fails_with_the_error_or_times_out() {
    let tokens = TaskTokens::serve().expect("serve");
    let resumer = Resumer(tokens.clone());
    let execution = Execution::new("watcher").with_tokens(tokens.clone());
    let flow = waiting_flow(1);
    let input = |extra: Value| {
        let mut input = json!({"key": "k", "ignore": false, "fail": null});
        input
            .as_object_mut()
            .expect("object")
            .extend(extra.as_object().cloned().unwrap_or_default());
        input
    };
    let resumed = block_on(flow.execute_in(input(json!({})), &resumer, &mut NoHooks, &execution));
    assert_eq!(resumed.output()["result"], json!({"resumed": "k"}));
    let failed = block_on(flow.execute_in(
        input(json!({"fail": "bucket_not_found"})),
        &resumer,
        &mut NoHooks,
        &execution,
    ));
    assert_eq!(failed.output(), json!({"caught": "bucket_not_found"}));
    // TaskFailed does not catch a timeout; States.Timeout does.
    let timed_out = block_on(flow.execute_in(
        input(json!({"ignore": true})),
        &resumer,
        &mut NoHooks,
        &execution,
    ));
    assert_eq!(timed_out.output(), json!({"timed_out": true}));
    // The payload carried the token and the context.
    let sent: Vec<TokenCall> = tokens.calls();
    assert_eq!(sent.len(), 2);
    assert!(sent[0].token.starts_with("kvflow-"));
    // Without the service, a waiting Task cannot run.
    let alone = block_on(flow.execute(input(json!({})), &resumer, &mut NoHooks));
    assert!(
        matches!(alone, Outcome::Failed(ref failure) if failure.error == RUNTIME_ERROR),
        "{alone:?}"
    );
}

#[test]
fn context_paths_and_wait_states() {
    #[derive(Default)]
    struct Waits(Vec<Duration>);
    impl Hooks for Waits {
        async fn wait(&mut self, delay: Duration) {
            self.0.push(delay);
        }
    }
    let flow = Definition::new(json!({
        "StartAt": "Hold",
        "States": {
            "Hold": {"Type": "Wait", "SecondsPath": "$.hold", "Next": "Show"},
            "Show": {
                "Type": "Pass",
                "Parameters": {
                    "state.$": "$$.State.Name",
                    "execution.$": "$$.Execution.Name",
                    "entered.$": "$$.State.EnteredTime",
                    "key.$": "States.Format('{}/{}', $$.State.Name, $.hold)"
                },
                "End": true
            }
        }
    }))
    .expect("valid");
    let mut waits = Waits::default();
    let execution = Execution::new("shown");
    let outcome = block_on(flow.execute_in(
        json!({"hold": 2}),
        &Resumer(TaskTokens::serve().expect("serve")),
        &mut waits,
        &execution,
    ));
    assert_eq!(waits.0, [Duration::from_secs(2)]);
    let output = outcome.output();
    assert_eq!(output["state"], "Show");
    assert_eq!(output["execution"], json!(execution.name));
    assert_eq!(output["key"], "Show/2");
    assert!(
        output["entered"]
            .as_str()
            .is_some_and(|time| time.ends_with('Z') && time.len() == 24),
        "{output}"
    );
    assert!(flow
        .transitions()
        .contains(&("Hold".to_string(), "Next".to_string())));
}

#[test]
fn waiting_tasks_are_checked_when_loading() {
    let task = |resource: &str, parameters: Value| json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": resource, "Parameters": parameters, "End": true}}});
    assert!(Definition::new(task(
        WAIT_FOR_TASK_TOKEN,
        json!({"FunctionName": "${KvKeyWatchFunctionArn}", "Payload": {}})
    ))
    .is_ok());
    assert!(Definition::new(task(
        WAIT_FOR_TASK_TOKEN,
        json!({"FunctionName": "arn:aws:lambda:x", "Payload": {}})
    ))
    .is_err());
    assert!(Definition::new(task(
        WAIT_FOR_TASK_TOKEN,
        json!({"FunctionName": "${KvKeyWatchFunctionArn}"})
    ))
    .is_err());
    assert!(Definition::new(task("arn:aws:states:::lambda:invoke.sync", json!({}))).is_err());
}

use task_tokens::TokenCall;

/// Records each payload; `{"fail": E}` fails the token at once (as a function refusing the
/// wait would), anything else leaves it waiting.
#[derive(Default)]
struct Recorder {
    tokens: Option<Arc<TaskTokens>>,
    payloads: std::sync::Mutex<Vec<Value>>,
}

impl Invoke for Recorder {
    async fn invoke(&self, function: &str, payload: Value) -> Result<Value, TaskFailure> {
        self.payloads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(payload.clone());
        if function == "kv-slow" {
            return std::future::pending().await;
        }
        if let (Some(tokens), Some(error)) = (&self.tokens, payload["fail"].as_str()) {
            let body = json!({"taskToken": payload["task_token"], "error": error, "cause": "no"});
            tokens.answer(
                "AWSStepFunctions.SendTaskFailure",
                body.to_string().as_bytes(),
            );
        }
        Ok(json!({"echo": payload}))
    }
}

#[test]
fn each_retry_of_a_waiting_task_gets_a_token_of_its_own() {
    let tokens = TaskTokens::serve().expect("serve");
    let recorder = Recorder {
        tokens: Some(tokens.clone()),
        ..Recorder::default()
    };
    let flow = Definition::new(json!({
        "StartAt": "Watch",
        "States": {"Watch": {
            "Type": "Task",
            "Resource": WAIT_FOR_TASK_TOKEN,
            "Parameters": {"FunctionName": "${KvKeyWatchFunctionArn}", "Payload": {
                "fail": "busy", "task_token.$": "$$.Task.Token", "retry.$": "$$.State.RetryCount"
            }},
            "Retry": [{"ErrorEquals": ["busy"], "MaxAttempts": 2, "IntervalSeconds": 0}],
            "End": true
        }}
    }))
    .expect("valid");
    #[derive(Default)]
    struct Waits(Vec<String>);
    impl Hooks for Waits {
        fn event(&mut self, event: &Event<'_>) {
            if let Event::Waiting { token, .. } = event {
                self.0.push(token.to_string());
            }
        }
    }
    let mut waits = Waits::default();
    let execution = Execution::new("retried").with_tokens(tokens.clone());
    let outcome = block_on(flow.execute_in(json!({}), &recorder, &mut waits, &execution));
    assert!(
        matches!(outcome, Outcome::Failed(ref failure) if failure.error == "busy"),
        "{outcome:?}"
    );
    let payloads = recorder.payloads.lock().expect("payloads").clone();
    let retries: Vec<Value> = payloads.iter().map(|p| p["retry"].clone()).collect();
    assert_eq!(retries, [json!(0), json!(1), json!(2)]);
    let sent: std::collections::BTreeSet<&str> = payloads
        .iter()
        .filter_map(|p| p["task_token"].as_str())
        .collect();
    assert_eq!(sent.len(), 3);
    assert_eq!(waits.0.len(), 3);
    assert!(waits.0.iter().all(|token| sent.contains(token.as_str())));
    // Every failed attempt's token is closed.
    for token in sent {
        let (status, answer) = tokens.answer(
            "AWSStepFunctions.SendTaskSuccess",
            json!({"taskToken": token, "output": "{}"})
                .to_string()
                .as_bytes(),
        );
        assert_eq!(
            (status, answer["__type"].clone()),
            (400, json!("TaskTimedOut"))
        );
    }
}

#[test]
fn plain_lambda_invoke_wraps_the_response_and_plain_tasks_time_out() {
    let flow = Definition::new(json!({
        "StartAt": "Get",
        "States": {
            "Get": {
                "Type": "Task",
                "Resource": LAMBDA_INVOKE,
                "Parameters": {"FunctionName": "${KvKeyGetFunctionArn}", "Payload.$": "$.request"},
                "ResultSelector": {"got.$": "$.Payload.echo", "code.$": "$.StatusCode"},
                "ResultPath": "$.get",
                "Next": "Slow"
            },
            "Slow": {
                "Type": "Task",
                "Resource": "${KvSlowFunctionArn}",
                "TimeoutSeconds": 1,
                "Catch": [
                    {"ErrorEquals": ["States.TaskFailed"], "Next": "Wrong"},
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.slow", "Next": "Done"}
                ],
                "End": true
            },
            "Wrong": {"Type": "Fail", "Error": "TaskFailedCaughtATimeout"},
            "Done": {"Type": "Succeed"}
        }
    }))
    .expect("valid");
    let recorder = Recorder::default();
    let outcome = block_on(flow.execute(json!({"request": {"key": "k"}}), &recorder, &mut NoHooks));
    let output = outcome.output();
    assert_eq!(
        output["get"],
        json!({"got": {"key": "k"}, "code": 200}),
        "{outcome:?}"
    );
    assert_eq!(output["slow"]["Error"], "States.Timeout", "{outcome:?}");
    let payloads = recorder.payloads.lock().expect("payloads").clone();
    assert_eq!(payloads[0], json!({"key": "k"}));
    // Without a Payload, a service integration is refused when loading.
    let task = json!({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": LAMBDA_INVOKE,
        "Parameters": {"FunctionName": "${KvKeyGetFunctionArn}", "Input": {}}, "End": true}}});
    assert!(Definition::new(task).is_err());
}

#[test]
fn intrinsics_and_the_execution_in_templates() {
    let run = |parameters: Value| {
        let flow = Definition::new(json!({
            "StartAt": "P",
            "States": {"P": {"Type": "Pass", "Parameters": parameters, "End": true}}
        }))
        .expect("valid");
        let execution = Execution::new("shown");
        let outcome = block_on(flow.execute_in(
            json!({"a": "x", "n": 2.5, "doc": "{\"k\":[1]}"}),
            &Recorder::default(),
            &mut NoHooks,
            &execution,
        ));
        (outcome, execution)
    };
    let (outcome, execution) = run(json!({
        "quoted.$": "States.Format('it\\'s {} \\{\\} {} {}', $.a, $.n, 3)",
        "parsed.$": "States.StringToJson($.doc)",
        "text.$": "States.JsonToString($.doc)",
        "key.$": "States.Format('{}/{}/{}', $$.Execution.Id, $$.State.Name, $$.State.EnteredTime)",
        "id.$": "$$.Execution.Id"
    }));
    let output = outcome.output();
    assert_eq!(output["quoted"], "it's x {} 2.5 3", "{outcome:?}");
    assert_eq!(output["parsed"], json!({"k": [1]}));
    assert_eq!(output["text"], json!("\"{\\\"k\\\":[1]}\""));
    assert_eq!(output["id"], json!(execution.id));
    assert!(execution
        .id
        .starts_with("arn:aws:states:local:000000000000:execution:shown:"));
    let key = output["key"].as_str().unwrap_or_default();
    assert!(key.starts_with(&format!("{}/P/", execution.id)), "{key}");
    assert_ne!(Execution::new("shown").id, execution.id);
    for broken in [
        "States.Hash($.a, 'SHA-256')",
        "States.Format('{}', $.missing)",
        "States.Format('{} {}', $.a)",
        "States.Format('unterminated, $.a)",
        "States.StringToJson($.a)",
    ] {
        let (outcome, _) = run(json!({"x.$": broken}));
        assert!(
            matches!(outcome, Outcome::Failed(ref failure) if failure.error == RUNTIME_ERROR),
            "{broken}: {outcome:?}"
        );
    }
}

#[test]
fn a_wait_given_up_closes_its_task_and_executions_have_random_names() {
    let tokens = TaskTokens::serve().expect("serve");
    let token = tokens.issue("stopped");
    drop(tokens.wait(&token, None));
    let (_, answer) = success(&mut Client::connect(&tokens), &token, json!({}));
    assert_eq!(answer["__type"], "TaskTimedOut");
    let (first, second) = (Execution::new("m"), Execution::new("m"));
    assert_ne!(first.name, second.name);
    let shape: Vec<usize> = first.name.split('-').map(str::len).collect();
    assert_eq!(shape, [8, 4, 4, 4, 12], "{}", first.name);
    assert_eq!(
        first.id,
        format!(
            "arn:aws:states:local:000000000000:execution:m:{}",
            first.name
        )
    );
}
