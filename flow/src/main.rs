//! `kv-flow`: walks Step Functions definitions against the functions through the Lambda Invoke
//! API (`cargo lambda watch`), printing each step. `make run` plays the examples with it;
//! `make local` prints how to run one flow.
//!
//!     kv-flow run [--host H] --port N [--sfn-port P] DEFINITION INPUT
//!     kv-flow examples [--host H] --port N [--sfn-port P] [EXAMPLES]
//!
//! While it runs it serves Step Functions' task-token API (`SendTaskSuccess`...) on loopback
//! port P (default: a free one), which the functions must be given as `AWS_ENDPOINT_URL_SFN` for
//! `.waitForTaskToken` Tasks to resume.
//!
//! Exit status: 0 as expected, 1 an execution failed (`run`) or ended otherwise than expected
//! (`examples`), 2 a usage error or a file that cannot be read.

use kv_flow::examples::Examples;
use kv_flow::invoke_api::InvokeApi;
use kv_flow::task_tokens::TaskTokens;
use kv_flow::{block_on, Definition, Event, Execution, Hooks, Outcome, Transition};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage:
  kv-flow run [--host H] --port N [--sfn-port P] DEFINITION INPUT    one execution; INPUT is JSON
  kv-flow examples [--host H] --port N [--sfn-port P] [EXAMPLES]     every execution of EXAMPLES
                                                      (default statemachines/examples.json)
  --sfn-port P: where the task-token API is served while flows run (default: a free port)";

/// A reason to stop before walking anything: exit status 2.
struct Usage(String);

fn main() -> ExitCode {
    match command(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(Usage(message)) => {
            eprintln!("kv-flow: {message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn command(args: Vec<String>) -> Result<ExitCode, Usage> {
    let mut host = "127.0.0.1".to_string();
    let mut port = None;
    let mut sfn_port = 0;
    let mut positional = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--host" => host = args.next().ok_or(Usage("--host needs a value".into()))?,
            "--port" => {
                let value = args.next().unwrap_or_default();
                port = Some(
                    value
                        .parse::<u16>()
                        .map_err(|_| Usage(format!("--port {value:?} is not a port")))?,
                );
            }
            "--sfn-port" => {
                let value = args.next().unwrap_or_default();
                sfn_port = value
                    .parse::<u16>()
                    .map_err(|_| Usage(format!("--sfn-port {value:?} is not a port")))?;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            flag if flag.starts_with("--") => return Err(Usage(format!("unknown option {flag}"))),
            _ => positional.push(arg),
        }
    }
    let port = port.ok_or(Usage("--port is required".into()))?;
    let api = InvokeApi::new(&host, port);
    let printer = Printer::new();
    let serve_tokens = || {
        let tokens = TaskTokens::serve_on(sfn_port).map_err(|error| {
            Usage(format!(
                "cannot serve the task-token API on port {sfn_port}: {error}"
            ))
        })?;
        // Without --sfn-port the port is a free one: the functions must be told where it is.
        println!(
            "task-token API (AWS_ENDPOINT_URL_SFN): {}",
            tokens.endpoint()
        );
        Ok::<_, Usage>(tokens)
    };
    match positional
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["run", file, input] => {
            let definition = load_definition(Path::new(file))?;
            let input: Value = serde_json::from_str(input)
                .map_err(|error| Usage(format!("INPUT is not JSON: {error}")))?;
            let execution =
                Execution::new(&machine_name(Path::new(file))).with_tokens(serve_tokens()?);
            let outcome =
                block_on(definition.execute_in(input, &api, &mut printer.clone(), &execution));
            println!(
                "{}  {}",
                outcome.status(),
                show_json(&outcome.output(), "  ")
            );
            Ok(match outcome {
                Outcome::Succeeded(_) => ExitCode::SUCCESS,
                Outcome::Failed(_) => ExitCode::from(1),
            })
        }
        ["examples"] => play_examples(
            Path::new("statemachines/examples.json"),
            &api,
            &printer,
            &serve_tokens()?,
        ),
        ["examples", file] => play_examples(Path::new(file), &api, &printer, &serve_tokens()?),
        _ => Err(Usage("unexpected arguments".into())),
    }
}

fn read(path: &Path) -> Result<String, Usage> {
    std::fs::read_to_string(path).map_err(|error| Usage(format!("{}: {error}", path.display())))
}

fn load_definition(path: &Path) -> Result<Definition, Usage> {
    let value: Value = serde_json::from_str(&read(path)?)
        .map_err(|error| Usage(format!("{}: {error}", path.display())))?;
    Definition::new(value).map_err(|error| Usage(format!("{}: {error}", path.display())))
}

/// `statemachines/mutex.asl.json` -> `mutex`: the state machine's name in execution ids.
fn machine_name(path: &Path) -> String {
    let file = path
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or("flow");
    file.trim_end_matches(".json")
        .trim_end_matches(".asl")
        .to_string()
}

/// Every execution of examples.json in order (a group of them together), each checked against
/// its `expect`.
fn play_examples(
    file: &Path,
    api: &InvokeApi,
    printer: &Printer,
    tokens: &Arc<TaskTokens>,
) -> Result<ExitCode, Usage> {
    let started = Instant::now();
    let examples = Examples::parse(&read(file)?)
        .map_err(|error| Usage(format!("{}: {error}", file.display())))?;
    let folder = file.parent().unwrap_or(Path::new("."));
    // Every definition is loaded before the first execution: a broken one stops nothing halfway.
    let mut flows = Vec::new();
    for flow in &examples.flows {
        let path: PathBuf = folder.join(&flow.definition);
        let text = read(&path)?;
        let comment = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|value| value["Comment"].as_str().map(str::to_string))
            .unwrap_or_default();
        // An execution's own definition, loaded up front too.
        let mut own = std::collections::HashMap::new();
        for execution in &flow.executions {
            if let Some(file) = &execution.definition {
                let path = folder.join(file);
                let definition = load_definition(&path)?;
                own.insert(file.clone(), (definition, machine_name(&path)));
            }
        }
        flows.push((flow, load_definition(&path)?, path, comment, own));
    }
    let mut problems = Vec::new();
    let mut executions = 0;
    for (flow, definition, path, comment, own) in flows {
        println!();
        printer.step(&format!("{}  ({})", flow.title, path.display()));
        println!("    {comment}");
        for group in flow.groups() {
            let together = group.len() > 1;
            for execution in &group {
                executions += 1;
                println!();
                println!(
                    "  {}{}",
                    printer.paint("1;35", &format!("▶ {}", execution.name)),
                    if together && execution.start_after_ms > 0 {
                        format!("  (together, {} ms later)", execution.start_after_ms)
                    } else if together {
                        "  (together)".to_string()
                    } else {
                        String::new()
                    }
                );
                println!("    input {}", show_json(&execution.input, &" ".repeat(10)));
                if let Some(file) = &execution.definition {
                    println!("    definition {file}");
                }
            }
            // A group's executions run at once, each on a thread of its own, as Step Functions
            // runs executions; their steps interleave, each line tagged with its execution.
            let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
                let (definition, path, own) = (&definition, &path, &own);
                let runs: Vec<_> = group
                    .iter()
                    .enumerate()
                    .map(|(index, execution)| {
                        let mut hooks =
                            printer.tagged(together.then(|| format!("[{}] ", index + 1)));
                        let (definition, machine) =
                            match execution.definition.as_ref().and_then(|file| own.get(file)) {
                                Some((definition, machine)) => (definition, machine.clone()),
                                None => (definition, machine_name(path)),
                            };
                        let run = Execution::new(&machine).with_tokens(tokens.clone());
                        scope.spawn(move || {
                            std::thread::sleep(Duration::from_millis(execution.start_after_ms));
                            block_on(definition.execute_in(
                                execution.input.clone(),
                                api,
                                &mut hooks,
                                &run,
                            ))
                        })
                    })
                    .collect();
                runs.into_iter()
                    .map(|run| {
                        run.join().unwrap_or_else(|_| {
                            Outcome::Failed(kv_flow::Failure {
                                error: kv_flow::RUNTIME_ERROR.into(),
                                cause: "the execution's thread panicked".into(),
                            })
                        })
                    })
                    .collect()
            });
            for (index, (execution, outcome)) in group.iter().zip(outcomes).enumerate() {
                let ok = execution.expect.met_by(&outcome);
                let mark = if ok {
                    printer.paint("32", "✔")
                } else {
                    printer.paint("31", "✘ unexpected")
                };
                let tag = if together {
                    format!("[{}] ", index + 1)
                } else {
                    String::new()
                };
                println!(
                    "  {tag}{mark} {}  {}",
                    outcome.status(),
                    show_json(&outcome.output(), &" ".repeat(6))
                );
                if !ok {
                    problems.push(format!(
                        "{} / {}: got {} {}, expected {}",
                        flow.title,
                        execution.name,
                        outcome.status(),
                        outcome.output(),
                        execution.expect
                    ));
                }
            }
        }
    }
    println!();
    if problems.is_empty() {
        printer.step(&format!(
            "{executions} executions as expected in {:.0} s",
            started.elapsed().as_secs_f64()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        println!("{}", printer.paint("31", &format!("✘ {problem}")));
    }
    Ok(ExitCode::from(1))
}

/// Prints each step as it happens (tagged with its execution when several run at once);
/// really waits out Retry's backoff and Wait states.
#[derive(Clone)]
struct Printer {
    color: bool,
    tag: String,
    /// The state waiting for its token: its next Task event is the output sent, not the
    /// function's response.
    waiting: Option<String>,
}

impl Printer {
    fn new() -> Self {
        Printer {
            color: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            tag: String::new(),
            waiting: None,
        }
    }

    fn tagged(&self, tag: Option<String>) -> Printer {
        Printer {
            tag: tag.unwrap_or_default(),
            waiting: None,
            ..self.clone()
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    /// A Task's call to its function through the Invoke API, and its request.
    fn call(&self, state: &str, function: &str, request: &Value, margin: &str) {
        let call = format!("POST /2015-03-31/functions/{function}/invocations");
        println!(
            "{}    {}  {}",
            self.tag,
            self.paint("1", state),
            self.paint("2", &call)
        );
        println!("{}      request   {}", self.tag, show_json(request, margin));
    }

    fn step(&self, text: &str) {
        println!("{}{}", self.paint("1;34", "==> "), self.paint("1", text));
    }
}

impl Hooks for Printer {
    fn event(&mut self, event: &Event<'_>) {
        let margin = " ".repeat(16);
        match event {
            Event::Task {
                state,
                function,
                request,
                response,
            } if self.waiting.as_deref() == Some(*state) => {
                self.waiting = None;
                println!(
                    "{}      {}  {}",
                    self.tag,
                    self.paint("32", "resumed with"),
                    show_json(response, &margin)
                );
            }
            Event::Task {
                state,
                function,
                request,
                response,
            } => {
                self.call(state, function, request, &margin);
                let code = if response["status_code"] == 200 {
                    "32"
                } else {
                    "33"
                };
                println!(
                    "{}      {}  {}",
                    self.tag,
                    self.paint(code, "response"),
                    show_json(response, &margin)
                );
            }
            Event::Waiting {
                state,
                function,
                request,
                token,
                timeout,
            } => {
                self.waiting = Some(state.to_string());
                self.call(state, function, request, &margin);
                let until = timeout.map_or("no timeout".to_string(), |timeout| {
                    format!("times out in {} s", timeout.as_secs())
                });
                println!(
                    "{}      {}  {token}, waiting for SendTaskSuccess/Failure ({until})",
                    self.tag,
                    self.paint("36", "token issued"),
                );
            }
            Event::TaskFailed { state, failure, .. } if self.waiting.as_deref() == Some(*state) => {
                self.waiting = None;
                let what = if failure.error_type == kv_flow::task_tokens::TIMEOUT_ERROR {
                    "timed out"
                } else {
                    "failed by SendTaskFailure"
                };
                println!(
                    "{}      {}  {}: {}",
                    self.tag,
                    self.paint("31", what),
                    failure.error_type,
                    failure.message
                );
            }
            Event::TaskFailed {
                state,
                function,
                request,
                failure,
            } => {
                println!("{}    {}  {function}", self.tag, self.paint("1", state));
                println!(
                    "{}      request   {}",
                    self.tag,
                    show_json(request, &margin)
                );
                println!(
                    "{}      {}     {}: {}",
                    self.tag,
                    self.paint("31", "error"),
                    failure.error_type,
                    failure.message
                );
            }
            Event::Retry { delay, .. } => {
                println!("{}      retrying in {:.0} s", self.tag, delay.as_secs_f64());
            }
            Event::Pass { state, .. } => {
                println!("{}    {}  (Pass)", self.tag, self.paint("1", state))
            }
            Event::Fail { state, .. } => {
                println!("{}    {}  (Fail)", self.tag, self.paint("31", state))
            }
            Event::Transition { state, transition } => match transition {
                Transition::Choice { next, .. } | Transition::Default(next) => {
                    println!("{}    {} -> {next}", self.tag, self.paint("36", state));
                }
                Transition::Catch { error, next, .. } => {
                    println!("{}      caught {error} -> {next}", self.tag);
                }
                Transition::Next(_) | Transition::End => {}
            },
        }
    }

    async fn backoff(&mut self, delay: Duration) {
        std::thread::sleep(delay);
    }

    async fn wait(&mut self, delay: Duration) {
        println!("{}      waiting {:.1} s", self.tag, delay.as_secs_f64());
        std::thread::sleep(delay);
    }
}

/// JSON as Python's `json.dumps` writes it (`, ` and `: `), which reads better than compact.
fn dumps(value: &Value) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(dumps).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(object) => {
            let fields: Vec<String> = object
                .iter()
                .map(|(key, item)| format!("{}: {}", Value::from(key.as_str()), dumps(item)))
                .collect();
            format!("{{{}}}", fields.join(", "))
        }
        other => other.to_string(),
    }
}

/// One line when it fits, otherwise nested one level at a time, short parts sharing lines up to
/// the width.
fn show_json(value: &Value, indent: &str) -> String {
    const WIDTH: usize = 110;
    fn layout(item: &Value, margin: &str) -> String {
        let line = dumps(item);
        let parts: Vec<String>;
        let inner = format!("{margin}  ");
        let (opening, closing) = match item {
            Value::Object(object) if !object.is_empty() => {
                parts = object
                    .iter()
                    .map(|(key, part)| {
                        format!("{}: {}", Value::from(key.as_str()), layout(part, &inner))
                    })
                    .collect();
                ("{", "}")
            }
            Value::Array(items) if !items.is_empty() => {
                parts = items.iter().map(|part| layout(part, &inner)).collect();
                ("[", "]")
            }
            _ => return line,
        };
        if margin.chars().count() + line.chars().count() <= WIDTH {
            return line;
        }
        let mut lines: Vec<String> = Vec::new();
        for part in parts {
            match lines.last_mut() {
                Some(last)
                    if !part.contains('\n')
                        && !last.contains('\n')
                        && inner.chars().count()
                            + last.chars().count()
                            + part.chars().count()
                            + 3
                            <= WIDTH =>
                {
                    last.push_str(", ");
                    last.push_str(&part);
                }
                _ => lines.push(part),
            }
        }
        let body: Vec<String> = lines.iter().map(|line| format!("{inner}{line}")).collect();
        format!("{opening}\n{}\n{margin}{closing}", body.join(",\n"))
    }
    layout(value, indent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn short_json_stays_on_one_line() {
        let value = json!({"a": [1, "é"], "b": {}});
        assert_eq!(show_json(&value, "  "), r#"{"a": [1, "é"], "b": {}}"#);
    }

    #[test]
    fn long_json_is_nested_with_short_parts_sharing_lines() {
        let value = json!({"short": 1, "other": 2, "long": "x".repeat(120)});
        let shown = show_json(&value, "");
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "{");
        assert_eq!(lines[1], r#"  "short": 1, "other": 2,"#);
        assert!(lines[2].starts_with(r#"  "long": "xxx"#));
        assert_eq!(lines[3], "}");
    }

    #[test]
    fn arguments_are_checked() {
        let run = |args: &[&str]| command(args.iter().map(|arg| arg.to_string()).collect());
        assert!(run(&["run"]).is_err());
        assert!(run(&["run", "--port", "x", "d", "{}"]).is_err());
        assert!(run(&["run", "--port", "99999", "d", "{}"]).is_err());
        assert!(run(&["--port", "1", "walk"]).is_err());
        assert!(run(&["--port", "1", "--verbose", "examples"]).is_err());
        assert!(run(&["--port", "1", "run", "/no/such/file", "{}"]).is_err());
        assert!(run(&["--port", "1", "examples", "/no/such/examples.json"]).is_err());
    }
}
