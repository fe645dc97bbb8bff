//! Cold starts: each function's release binary is started as Lambda starts it, against a
//! minimal Lambda Runtime API served here on loopback (HTTP/1.1: `GET .../invocation/next`
//! hands out events, `POST .../invocation/{id}/response` and `/error` take results).
//!
//! Init is the time from exec to the binary's first `next` poll (what Lambda reports as Init
//! Duration); the first response is from exec to the first result. The first invocation's own
//! latency (event handed out to result) minus a warm invocation's is the first-request penalty.

use crate::local::{CountingProxy, Event, Probe};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Default)]
struct ApiState {
    queue: VecDeque<(String, String)>,
    polls: Vec<Instant>,
    sent: HashMap<String, Instant>,
    /// (request id, when the result arrived, the result or the error body)
    done: Vec<(String, Instant, Result<String, String>)>,
    init_error: Option<String>,
    closed: bool,
    /// Idle time before each event after the first, as a warm container sees between
    /// invocations (and as DynamoDB Local sees while a process starts).
    pause: Duration,
}

/// The local Runtime API for one process.
pub struct RuntimeApi {
    pub port: u16,
    state: Arc<(Mutex<ApiState>, Condvar)>,
}

struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut length = 0usize;
    let mut chunked = false;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "content-length" {
            length = value.parse().ok()?;
        } else if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
            let mut chunk = vec![0u8; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some(Request { method, path, body })
}

fn reply(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) -> bool {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    stream.write_all(&message).is_ok()
}

/// The Runtime API's answer to a posted result or error.
fn accepted(writer: &mut TcpStream) -> bool {
    let headers = [("Content-Type", "application/json".to_string())];
    reply(writer, "202 Accepted", &headers, br#"{"status":"OK"}"#)
}

fn serve(stream: TcpStream, state: Arc<(Mutex<ApiState>, Condvar)>, function: String) {
    let _ = stream.set_nodelay(true);
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let (lock, changed) = &*state;
    while let Some(request) = read_request(&mut reader) {
        let now = Instant::now();
        let path = request.path.as_str();
        if request.method == "GET" && path == "/2018-06-01/runtime/invocation/next" {
            let mut guard = lock.lock().unwrap();
            guard.polls.push(now);
            changed.notify_all();
            let (id, event) = loop {
                if guard.closed {
                    return;
                }
                if let Some(next) = guard.queue.pop_front() {
                    break next;
                }
                guard = changed.wait(guard).unwrap();
            };
            if let Some((_, last, _)) = guard.done.last() {
                let resume = *last + guard.pause;
                drop(guard);
                std::thread::sleep(resume.saturating_duration_since(Instant::now()));
                guard = lock.lock().unwrap();
            }
            let deadline = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis()
                + 900_000;
            guard.sent.insert(id.clone(), Instant::now());
            drop(guard);
            let headers = [
                ("Content-Type", "application/json".to_string()),
                ("Lambda-Runtime-Aws-Request-Id", id),
                ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
                (
                    "Lambda-Runtime-Invoked-Function-Arn",
                    format!("arn:aws:lambda:us-east-1:123456789012:function:{function}"),
                ),
                (
                    "Lambda-Runtime-Trace-Id",
                    "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0".to_string(),
                ),
            ];
            if !reply(&mut writer, "200 OK", &headers, event.as_bytes()) {
                return;
            }
        } else if request.method == "POST" && path.starts_with("/2018-06-01/runtime/invocation/") {
            let rest = &path["/2018-06-01/runtime/invocation/".len()..];
            let (id, kind) = rest.split_once('/').unwrap_or((rest, ""));
            let body = String::from_utf8_lossy(&request.body).into_owned();
            let result = if kind == "response" {
                Ok(body)
            } else {
                Err(body)
            };
            let mut guard = lock.lock().unwrap();
            guard.done.push((id.to_string(), now, result));
            changed.notify_all();
            drop(guard);
            if !accepted(&mut writer) {
                return;
            }
        } else if request.method == "POST" && path == "/2018-06-01/runtime/init/error" {
            let mut guard = lock.lock().unwrap();
            guard.init_error = Some(String::from_utf8_lossy(&request.body).into_owned());
            changed.notify_all();
            drop(guard);
            if !accepted(&mut writer) {
                return;
            }
        } else if !reply(&mut writer, "404 Not Found", &[], b"") {
            return;
        }
    }
}

impl RuntimeApi {
    pub fn start(function: &str, events: &[String], pause: Duration) -> RuntimeApi {
        let listener = TcpListener::bind("127.0.0.1:0").expect("runtime API port");
        let port = listener.local_addr().expect("runtime API address").port();
        let state = Arc::new((Mutex::new(ApiState::default()), Condvar::new()));
        {
            let mut guard = state.0.lock().unwrap();
            guard.pause = pause;
            for (index, event) in events.iter().enumerate() {
                guard
                    .queue
                    .push_back((format!("bench-{index:04}"), event.clone()));
            }
        }
        let shared = state.clone();
        let name = function.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if shared.0.lock().unwrap().closed {
                    break;
                }
                let (state, name) = (shared.clone(), name.clone());
                std::thread::spawn(move || serve(stream, state, name));
            }
        });
        RuntimeApi { port, state }
    }

    fn close(&self) {
        self.state.0.lock().unwrap().closed = true;
        self.state.1.notify_all();
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.close();
    }
}

/// One process's life, from exec.
#[derive(Debug, Clone)]
pub struct ColdRun {
    pub init: Duration,
    pub first_response: Duration,
    /// The first invocation alone: event handed out to result received.
    pub first_invocation: Duration,
    /// Later invocations, the same way.
    pub warm: Vec<Duration>,
    /// DynamoDB connections opened before the first poll, and by the invocations after it.
    pub connections_in_init: usize,
    pub connections_in_calls: usize,
    /// DynamoDB API calls (`POST`) and other requests (the health check) before the first poll.
    pub api_calls_in_init: usize,
    pub other_requests_in_init: usize,
    /// Connections to the stand-in EC2 metadata endpoint (credential or region lookups).
    pub metadata_lookups: usize,
}

pub struct Environment<'a> {
    pub vars: Vec<(String, String)>,
    pub pause: Duration,
    pub proxy: &'a CountingProxy,
    pub probe: &'a Probe,
    pub log: &'a Path,
}

pub fn run_once(
    binary: &Path,
    function: &str,
    events: &[String],
    env: &Environment<'_>,
) -> Result<ColdRun, String> {
    let api = RuntimeApi::start(function, events, env.pause);
    let log = std::fs::File::create(env.log).map_err(|error| error.to_string())?;
    let mut command = Command::new(binary);
    command
        .env_clear()
        .envs(env.vars.iter().map(|(name, value)| (name, value)))
        .env("AWS_LAMBDA_FUNCTION_NAME", function)
        .env(
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        )
        .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{}", api.port))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|error| error.to_string())?)
        .stderr(log);
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|error| format!("{}: {error}", binary.display()))?;
    let deadline = started + Duration::from_secs(60);
    let outcome = {
        let (lock, changed) = &*api.state;
        let mut guard = lock.lock().unwrap();
        loop {
            if let Some(error) = &guard.init_error {
                break Err(format!("init error: {error}"));
            }
            if guard.done.len() >= events.len() {
                break Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                break Err(format!("exited early with {status}"));
            }
            if Instant::now() > deadline {
                break Err("timed out".to_string());
            }
            guard = changed
                .wait_timeout(guard, Duration::from_millis(50))
                .unwrap()
                .0;
        }
    };
    let finished = Instant::now();
    let _ = child.kill();
    let _ = child.wait();
    outcome.map_err(|error| format!("{function}: {error} (log: {})", env.log.display()))?;

    let guard = api.state.0.lock().unwrap();
    if let Some((id, _, Err(error))) = guard.done.iter().find(|(_, _, result)| result.is_err()) {
        return Err(format!("{function}: invocation {id} failed: {error}"));
    }
    let init_at = *guard.polls.first().ok_or("no poll")?;
    let latency = |index: usize| -> Duration {
        let (id, at, _) = &guard.done[index];
        at.duration_since(guard.sent[id])
    };
    let count = |kind, from, until| env.proxy.count(kind, from, until);
    Ok(ColdRun {
        init: init_at - started,
        first_response: guard.done[0].1 - started,
        first_invocation: latency(0),
        warm: (1..guard.done.len()).map(latency).collect(),
        connections_in_init: count(Event::Connect, started, init_at),
        connections_in_calls: count(Event::Connect, init_at, finished),
        api_calls_in_init: count(Event::ApiCall, started, init_at),
        other_requests_in_init: count(Event::OtherRequest, started, init_at),
        metadata_lookups: env.probe.count(started, finished),
    })
}

/// The binary's size without symbols: `strip` of a copy, or the file itself if that fails.
pub fn stripped_size(binary: &Path) -> u64 {
    let copy = std::env::temp_dir().join(format!("kv-bench-strip-{}", std::process::id()));
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&copy)
        .arg(binary)
        .status()
        .is_ok_and(|status| status.success());
    let size = if stripped {
        std::fs::metadata(&copy).map(|m| m.len()).unwrap_or(0)
    } else {
        std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0)
    };
    let _ = std::fs::remove_file(&copy);
    size
}
