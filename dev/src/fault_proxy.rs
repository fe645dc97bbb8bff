//! A fault-injecting HTTP/1.1 proxy in front of DynamoDB Local, on a free loopback port, written
//! on tokio alone (DynamoDB's JSON 1.0 protocol needs no more than request heads, bodies with a
//! `Content-Length`, and responses read to the end of a `Connection: close` exchange).
//!
//! Rules are set at run time (`set`, `add`, `clear`) and tried in order for each request; the
//! first that matches (operation from `X-Amz-Target`, optional predicate on the parsed request)
//! and fires (its remaining count, then its seeded probability) decides:
//! - `Pass`: forward and answer what DynamoDB answered;
//! - `Error(kind)`: answer a DynamoDB error at once, without forwarding;
//! - `DropResponse`: forward, let DynamoDB apply it, then close the connection unanswered;
//! - `Hang`: accept the request and never answer (until the client gives up or 60 s pass);
//! - `ApplyThenHang`: forward, let DynamoDB apply it, then hold the connection unanswered: a
//!   caller that gives up (a Lambda invocation timing out) never learns that it landed;
//! - `InProgress { delay }`: for `TransactWriteItems`, what AWS does with a transaction still
//!   running: answer HTTP 500 at once and forward the request only after `delay`; until it has
//!   been forwarded, a request with the same `ClientRequestToken` gets 400
//!   `TransactionInProgressException`; after that such requests go through (DynamoDB's own
//!   idempotency answers them). Meanwhile, as on AWS, another transaction that touches one of
//!   its items is cancelled with `TransactionConflict` (DynamoDB Local, which runs transactions
//!   one at a time, would otherwise let it commit first).
//!
//! The proxy counts what it did (`stats`), and logs every `TransactWriteItems` that DynamoDB
//! answered with 2xx, once per `ClientRequestToken` (a replay with the same token applies
//! nothing): `applied` is the list of transactions that really changed the table, whether or
//! not their caller heard the answer. Everything stops when the proxy is dropped.

use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Largest request or response head the proxy accepts.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body (DynamoDB's own request limit is 16 MB).
const MAX_BODY: usize = 16 * 1024 * 1024;
/// How long a forwarded request may take upstream, and how long a hang lasts at most.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_HANG: Duration = Duration::from_secs(60);

/// One request as the rules see it.
#[derive(Debug)]
pub struct Request {
    /// The operation, e.g. `TransactWriteItems` (the part of `X-Amz-Target` after the dot).
    pub operation: String,
    /// The JSON body (Null if it is not JSON).
    pub body: Value,
    head: Vec<(String, String)>,
    request_line: String,
    raw_body: Vec<u8>,
}

impl Request {
    /// `ClientRequestToken` of a `TransactWriteItems`.
    pub fn token(&self) -> Option<&str> {
        self.body["ClientRequestToken"].as_str()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorReply {
    /// HTTP 500 `InternalServerError`.
    InternalServerError,
    /// HTTP 400 `ThrottlingException`.
    Throttling,
    /// HTTP 400 `ProvisionedThroughputExceededException`.
    ThroughputExceeded,
    /// HTTP 400 `TransactionInProgressException` (what `InProgress` answers to a repeat).
    TransactionInProgress,
}

impl ErrorReply {
    fn status(self) -> u16 {
        match self {
            ErrorReply::InternalServerError => 500,
            _ => 400,
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            ErrorReply::InternalServerError => "InternalServerError",
            ErrorReply::Throttling => "ThrottlingException",
            ErrorReply::ThroughputExceeded => "ProvisionedThroughputExceededException",
            ErrorReply::TransactionInProgress => "TransactionInProgressException",
        }
    }

    fn message(self) -> &'static str {
        match self {
            ErrorReply::InternalServerError => "Internal server error",
            ErrorReply::Throttling => "Rate of requests exceeds the allowed throughput.",
            ErrorReply::ThroughputExceeded => {
                "The level of configured provisioned throughput for the table was exceeded. \
                 Consider increasing your provisioning level with the UpdateTable API."
            }
            ErrorReply::TransactionInProgress => "Transaction is ongoing for the idempotency token",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Error(ErrorReply),
    DropResponse,
    Hang,
    ApplyThenHang,
    InProgress { delay: Duration },
}

pub type Predicate = Arc<dyn Fn(&Request) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct Rule {
    operation: Option<String>,
    predicate: Option<Predicate>,
    fault: Fault,
    remaining: Option<u64>,
    probability: f64,
}

impl Rule {
    /// Applies `fault` to every request, until narrowed.
    pub fn new(fault: Fault) -> Rule {
        Rule {
            operation: None,
            predicate: None,
            fault,
            remaining: None,
            probability: 1.0,
        }
    }

    /// Only requests of this operation (`TransactWriteItems`, `GetItem`, ...).
    pub fn on(mut self, operation: &str) -> Rule {
        self.operation = Some(operation.to_string());
        self
    }

    /// Only requests the predicate accepts.
    pub fn when(mut self, predicate: impl Fn(&Request) -> bool + Send + Sync + 'static) -> Rule {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Fires for the next `count` matching requests only.
    pub fn times(mut self, count: u64) -> Rule {
        self.remaining = Some(count);
        self
    }

    /// Fires for a matching request with this probability (from the proxy's seeded RNG).
    pub fn probability(mut self, probability: f64) -> Rule {
        self.probability = probability;
        self
    }

    fn matches(&self, request: &Request) -> bool {
        self.remaining != Some(0)
            && self
                .operation
                .as_ref()
                .is_none_or(|operation| *operation == request.operation)
            && self
                .predicate
                .as_ref()
                .is_none_or(|predicate| predicate(request))
    }
}

/// What the proxy did, by kind; `requests` counts every request by operation.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: BTreeMap<String, u64>,
    pub forwarded: u64,
    pub errors: BTreeMap<ErrorReply, u64>,
    pub dropped: u64,
    pub hung: u64,
    /// Transactions answered 500 and forwarded later.
    pub in_progress: u64,
    /// Repeats of those refused with `TransactionInProgressException`.
    pub in_progress_refused: u64,
    /// Other transactions cancelled with `TransactionConflict` while one was in progress.
    pub conflicts: u64,
    /// Requests whose upstream connection failed (the client's connection is then closed).
    pub upstream_failures: u64,
}

impl Stats {
    pub fn errors_of(&self, kind: ErrorReply) -> u64 {
        self.errors.get(&kind).copied().unwrap_or(0)
    }
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    rng: Option<fastrand::Rng>,
    stats: Stats,
    /// Tokens of `InProgress` transactions: false while the original waits, true once forwarded.
    delayed: HashMap<String, bool>,
    /// Delayed forwards not yet finished.
    pending: usize,
    /// Items (table and key) of the transactions in progress, and the token holding each.
    locked: HashMap<String, String>,
    applied: Vec<Value>,
    applied_tokens: HashSet<String>,
    next_request_id: u64,
}

enum Decision {
    Fault(Fault),
    RefuseInProgress,
    /// Cancel: these positions of the transaction touch an item of one in progress.
    Conflict(Vec<bool>),
}

/// Table and key of every item a `TransactWriteItems` body touches, in order (the key
/// attributes of this project's tables: `pk` + `rev`, or `bucket`).
fn touched_items(body: &Value) -> Vec<String> {
    let key_of = |attributes: &Value| -> String {
        ["pk", "rev", "bucket"]
            .iter()
            .filter_map(|name| attributes.get(*name).map(|value| format!("{name}={value}")))
            .collect::<Vec<_>>()
            .join(",")
    };
    body["TransactItems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|write| {
            let (kind, operation) = write.as_object()?.iter().next()?;
            let attributes = if kind == "Put" {
                &operation["Item"]
            } else {
                &operation["Key"]
            };
            Some(format!("{}|{}", operation["TableName"], key_of(attributes)))
        })
        .collect()
}

struct Shared {
    upstream: String,
    state: Mutex<State>,
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    fn track(&self, handle: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap();
        tasks.retain(|task| !task.is_finished());
        tasks.push(handle);
    }

    fn decide(&self, request: &Request) -> Decision {
        let mut state = self.state.lock().unwrap();
        *state
            .stats
            .requests
            .entry(request.operation.clone())
            .or_default() += 1;
        if let Some(token) = request.token() {
            match state.delayed.get(token) {
                Some(false) => {
                    state.stats.in_progress_refused += 1;
                    return Decision::RefuseInProgress;
                }
                Some(true) => return Decision::Fault(Fault::Pass),
                None => {}
            }
            let touched = touched_items(&request.body);
            let conflicts: Vec<bool> = touched
                .iter()
                .map(|item| {
                    state
                        .locked
                        .get(item)
                        .is_some_and(|holder| holder.as_str() != token)
                })
                .collect();
            if conflicts.contains(&true) {
                state.stats.conflicts += 1;
                return Decision::Conflict(conflicts);
            }
        }
        let State { rules, rng, .. } = &mut *state;
        let rng = rng.get_or_insert_with(|| fastrand::Rng::with_seed(0));
        let mut chosen = Fault::Pass;
        for rule in rules.iter_mut() {
            if !rule.matches(request) {
                continue;
            }
            if rule.probability < 1.0 && rng.f64() >= rule.probability {
                continue;
            }
            if let Some(remaining) = rule.remaining.as_mut() {
                *remaining -= 1;
            }
            chosen = rule.fault;
            break;
        }
        if let Fault::InProgress { .. } = chosen {
            match request.token() {
                Some(token) if request.operation == "TransactWriteItems" => {
                    for item in touched_items(&request.body) {
                        state.locked.insert(item, token.to_string());
                    }
                    state.delayed.insert(token.to_string(), false);
                    state.pending += 1;
                    state.stats.in_progress += 1;
                }
                _ => chosen = Fault::Pass,
            }
        }
        match chosen {
            Fault::Error(kind) => *state.stats.errors.entry(kind).or_default() += 1,
            Fault::DropResponse => state.stats.dropped += 1,
            Fault::Hang => state.stats.hung += 1,
            _ => {}
        }
        Decision::Fault(chosen)
    }

    /// Records a forwarded request's outcome: the applied-transaction log.
    fn forwarded(&self, request: &Request, status: u16) {
        let mut state = self.state.lock().unwrap();
        state.stats.forwarded += 1;
        let writes = matches!(
            request.operation.as_str(),
            "TransactWriteItems" | "PutItem" | "UpdateItem"
        );
        if !writes || !(200..300).contains(&status) {
            return;
        }
        if let Some(token) = request.token() {
            if !state.applied_tokens.insert(token.to_string()) {
                return;
            }
        }
        state.applied.push(request.body.clone());
    }

    fn error_response(&self, kind: ErrorReply) -> Vec<u8> {
        let body = serde_json::json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{}", kind.type_name()),
            "message": kind.message(),
        });
        self.response(kind.status(), &body)
    }

    /// `TransactionCanceledException` with `TransactionConflict` at the conflicting positions.
    fn conflict_response(&self, conflicts: &[bool]) -> Vec<u8> {
        let codes: Vec<&str> = conflicts
            .iter()
            .map(|conflict| {
                if *conflict {
                    "TransactionConflict"
                } else {
                    "None"
                }
            })
            .collect();
        let reasons: Vec<Value> = codes
            .iter()
            .map(|code| match *code {
                "None" => serde_json::json!({"Code": "None"}),
                code => serde_json::json!({"Code": code, "Message": "Transaction is ongoing for the item"}),
            })
            .collect();
        let body = serde_json::json!({
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": format!(
                "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                codes.join(", ")
            ),
            "CancellationReasons": reasons,
        });
        self.response(400, &body)
    }

    fn response(&self, status: u16, body: &Value) -> Vec<u8> {
        let id = {
            let mut state = self.state.lock().unwrap();
            state.next_request_id += 1;
            state.next_request_id
        };
        let body = body.to_string();
        let reason = if status == 500 {
            "Internal Server Error"
        } else {
            "Bad Request"
        };
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/x-amz-json-1.0\r\nx-amzn-RequestId: FAULTPROXY{id:010}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

pub struct FaultProxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (`http://127.0.0.1:PORT`).
    /// Must be called inside a tokio runtime; its tasks end with it or when the proxy drops.
    pub async fn start(upstream: &str, seed: u64) -> FaultProxy {
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let shared = Arc::new(Shared {
            upstream,
            state: Mutex::new(State {
                rng: Some(fastrand::Rng::with_seed(seed)),
                ..State::default()
            }),
            tasks: Mutex::new(Vec::new()),
        });
        let accepting = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((connection, _)) = listener.accept().await {
                let _ = connection.set_nodelay(true);
                let serving = accepting.clone();
                let task = tokio::spawn(serve(connection, serving));
                accepting.track(task.abort_handle());
            }
        });
        shared.track(accept.abort_handle());
        FaultProxy { port, shared }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replaces every rule with this one.
    pub fn set(&self, rule: Rule) {
        self.shared.state.lock().unwrap().rules = vec![rule];
    }

    /// Adds a rule after the others.
    pub fn add(&self, rule: Rule) {
        self.shared.state.lock().unwrap().rules.push(rule);
    }

    /// Every request passes from now on (delayed transactions still complete).
    pub fn clear(&self) {
        self.shared.state.lock().unwrap().rules.clear();
    }

    pub fn stats(&self) -> Stats {
        self.shared.state.lock().unwrap().stats.clone()
    }

    /// Bodies of the `TransactWriteItems` (once per token) and `PutItem` requests DynamoDB
    /// applied (2xx).
    pub fn applied(&self) -> Vec<Value> {
        self.shared.state.lock().unwrap().applied.clone()
    }

    /// Waits until every delayed transaction has been forwarded (at most `limit`); false if
    /// some are still pending then.
    pub async fn settle(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.shared.state.lock().unwrap().pending == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        for task in self.shared.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Serves one client connection, request after request, until it closes or a fault closes it.
async fn serve(mut connection: TcpStream, shared: Arc<Shared>) {
    let mut buffer = Vec::new();
    loop {
        let Some(request) = read_request(&mut connection, &mut buffer).await else {
            return;
        };
        let fault = match shared.decide(&request) {
            Decision::RefuseInProgress => {
                let reply = shared.error_response(ErrorReply::TransactionInProgress);
                if connection.write_all(&reply).await.is_err() {
                    return;
                }
                continue;
            }
            Decision::Conflict(conflicts) => {
                let reply = shared.conflict_response(&conflicts);
                if connection.write_all(&reply).await.is_err() {
                    return;
                }
                continue;
            }
            Decision::Fault(fault) => fault,
        };
        match fault {
            Fault::Pass | Fault::DropResponse | Fault::ApplyThenHang => {
                let Some((status, response)) = forward(&shared.upstream, &request).await else {
                    shared.state.lock().unwrap().stats.upstream_failures += 1;
                    return;
                };
                shared.forwarded(&request, status);
                if fault == Fault::DropResponse {
                    // DynamoDB has applied it; the caller never hears.
                    return;
                }
                if fault == Fault::ApplyThenHang {
                    hold(&mut connection).await;
                    return;
                }
                if connection.write_all(&response).await.is_err() {
                    return;
                }
            }
            Fault::Error(kind) => {
                if connection
                    .write_all(&shared.error_response(kind))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Fault::Hang => {
                hold(&mut connection).await;
                return;
            }
            Fault::InProgress { delay } => {
                let delayed = shared.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let outcome = forward(&delayed.upstream, &request).await;
                    match outcome {
                        Some((status, _)) => delayed.forwarded(&request, status),
                        None => delayed.state.lock().unwrap().stats.upstream_failures += 1,
                    }
                    let mut state = delayed.state.lock().unwrap();
                    if let Some(token) = request.token() {
                        state.delayed.insert(token.to_string(), true);
                        state.locked.retain(|_, holder| holder != token);
                    }
                    state.pending -= 1;
                });
                shared.track(task.abort_handle());
                let reply = shared.error_response(ErrorReply::InternalServerError);
                if connection.write_all(&reply).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn find_head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Splits a head into its first line and its headers.
fn parse_head(head: &[u8]) -> Option<(String, Vec<(String, String)>)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.trim_end_matches("\r\n").split("\r\n");
    let first = lines.next()?.to_string();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_string(), value.trim().to_string()))
        .collect();
    Some((first, headers))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(header, _)| header.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

/// Reads the next request; None when the client closed or sent something this proxy does not
/// speak (the connection is then closed).
async fn read_request(connection: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<Request> {
    let head_end = loop {
        if let Some(end) = find_head_end(buffer) {
            break end;
        }
        if buffer.len() > MAX_HEAD || !read_more(connection, buffer).await {
            return None;
        }
    };
    let (request_line, head) = parse_head(&buffer[..head_end])?;
    if header(&head, "transfer-encoding").is_some() {
        eprintln!("fault proxy: chunked request bodies are not supported");
        return None;
    }
    let length: usize = header(&head, "content-length")
        .map(|value| value.parse().ok())
        .unwrap_or(Some(0))?;
    if length > MAX_BODY {
        return None;
    }
    while buffer.len() < head_end + length {
        if !read_more(connection, buffer).await {
            return None;
        }
    }
    let raw_body = buffer[head_end..head_end + length].to_vec();
    buffer.drain(..head_end + length);
    let operation = header(&head, "x-amz-target")
        .map(|target| target.rsplit('.').next().unwrap_or(target).to_string())
        .unwrap_or_default();
    Some(Request {
        operation,
        body: serde_json::from_slice(&raw_body).unwrap_or(Value::Null),
        head,
        request_line,
        raw_body,
    })
}

async fn read_more(connection: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 16 * 1024];
    match connection.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(read) => {
            buffer.extend_from_slice(&chunk[..read]);
            true
        }
    }
}

/// Sends the request upstream on a connection of its own and reads the whole response; returns
/// its status and the response re-framed for the client's kept-alive connection.
async fn forward(upstream: &str, request: &Request) -> Option<(u16, Vec<u8>)> {
    tokio::time::timeout(UPSTREAM_TIMEOUT, async {
        let mut connection = TcpStream::connect(upstream).await.ok()?;
        let mut out = format!("{}\r\n", request.request_line);
        for (name, value) in &request.head {
            if !is_hop_by_hop(name) {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&request.raw_body);
        connection.write_all(&bytes).await.ok()?;
        let mut response = Vec::new();
        connection.read_to_end(&mut response).await.ok()?;
        let head_end = find_head_end(&response)?;
        let (status_line, headers) = parse_head(&response[..head_end])?;
        let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
        let body = &response[head_end..];
        let mut reply = format!("{status_line}\r\n");
        for (name, value) in &headers {
            if !is_hop_by_hop(name) {
                reply.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        let framed = header(&headers, "content-length").is_some()
            || header(&headers, "transfer-encoding").is_some();
        if !framed {
            reply.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        reply.push_str("\r\n");
        let mut reply = reply.into_bytes();
        reply.extend_from_slice(body);
        Some((status, reply))
    })
    .await
    .ok()
    .flatten()
}

fn is_hop_by_hop(name: &str) -> bool {
    ["connection", "keep-alive", "proxy-connection"]
        .iter()
        .any(|hop| name.eq_ignore_ascii_case(hop))
}

/// Holds a connection, answering nothing, until the client gives up (or `MAX_HANG` passes).
async fn hold(connection: &mut TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(MAX_HANG, async {
        while matches!(connection.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
