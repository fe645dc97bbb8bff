//! Tasks through the Lambda Invoke API (`POST /2015-03-31/functions/NAME/invocations`), as
//! `cargo lambda watch` serves it on a loopback port: one plain HTTP/1.1 request per call, so
//! the engine needs no HTTP client crate.

use crate::{Invoke, TaskFailure};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The Lambda client's own failure (nothing answered, an answer that is not HTTP or not JSON):
/// Step Functions reports it under this name, which the definitions retry.
pub const CLIENT_ERROR: &str = "Lambda.SdkClientException";
/// The Invoke API answered with an error of its own, not the function's.
pub const SERVICE_ERROR: &str = "Lambda.ServiceException";
pub const TOO_MANY_REQUESTS: &str = "Lambda.TooManyRequestsException";
pub const NOT_FOUND: &str = "Lambda.ResourceNotFoundException";

#[derive(Debug, Clone)]
pub struct InvokeApi {
    pub host: String,
    pub port: u16,
    /// How long one call may take; under `cargo lambda watch` the first call of a function may
    /// compile it, so minutes.
    pub timeout: Duration,
}

impl InvokeApi {
    pub fn new(host: &str, port: u16) -> Self {
        InvokeApi {
            host: host.to_string(),
            port,
            timeout: Duration::from_secs(900),
        }
    }

    /// One blocking call: the engine walks one state at a time, so nothing waits on it.
    pub fn call(&self, function: &str, payload: &Value) -> Result<Value, TaskFailure> {
        let body = payload.to_string();
        let path = format!("/2015-03-31/functions/{function}/invocations");
        let response = post(&self.host, self.port, &path, &body, self.timeout)
            .map_err(|error| client_error(format!("{function}: {error}")))?;
        interpret(function, response)
    }
}

impl Invoke for InvokeApi {
    async fn invoke(&self, function: &str, payload: Value) -> Result<Value, TaskFailure> {
        self.call(function, &payload)
    }
}

fn client_error(message: String) -> TaskFailure {
    TaskFailure {
        error_type: CLIENT_ERROR.into(),
        message,
    }
}

/// An HTTP response: status, lower-cased header names, the body (chunks joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn post(
    host: &str,
    port: u16,
    path: &str,
    body: &str,
    timeout: Duration,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_response(&raw)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error))
}

/// Parses a whole HTTP/1.1 response read to the connection's close.
pub fn parse_response(raw: &[u8]) -> Result<Response, String> {
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or("a response without the end of its headers")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or("a response without a status")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(key, value)| {
        key == "transfer-encoding" && value.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(rest)?
    } else {
        let length = headers
            .iter()
            .find(|(key, _)| key == "content-length")
            .and_then(|(_, value)| value.parse::<usize>().ok());
        match length {
            Some(length) if length <= rest.len() => rest[..length].to_vec(),
            Some(_) => return Err("a response shorter than its Content-Length".into()),
            None => rest.to_vec(),
        }
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let end = rest
            .windows(2)
            .position(|window| window == b"\r\n")
            .ok_or("a chunk without its size line")?;
        let line = String::from_utf8_lossy(&rest[..end]);
        // A size may carry extensions after `;`.
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| format!("a chunk size {size:?}"))?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = rest.get(..size).ok_or("a chunk shorter than its size")?;
        body.extend_from_slice(chunk);
        rest = rest.get(size + 2..).ok_or("a chunk without its end")?;
    }
}

/// A function's result, or its error: the Invoke API marks a function error with
/// `X-Amz-Function-Error` on a 200 (Lambda) or answers 500 (`cargo lambda watch`), the body being
/// `{"errorType", "errorMessage"}` either way.
pub fn interpret(function: &str, response: Response) -> Result<Value, TaskFailure> {
    let text = String::from_utf8_lossy(&response.body);
    let parsed: Option<Value> = if text.trim().is_empty() {
        Some(Value::Null)
    } else {
        serde_json::from_str(&text).ok()
    };
    let function_error = response.header("x-amz-function-error").is_some();
    if response.status == 200 && !function_error {
        return parsed.ok_or_else(|| {
            client_error(format!("{function}: a response that is not JSON: {text}"))
        });
    }
    if let Some(error_type) = parsed.as_ref().and_then(|body| body["errorType"].as_str()) {
        let message = parsed
            .as_ref()
            .and_then(|body| body["errorMessage"].as_str())
            .unwrap_or_default();
        return Err(TaskFailure {
            error_type: error_type.to_string(),
            message: message.to_string(),
        });
    }
    let error_type = match response.status {
        429 => TOO_MANY_REQUESTS,
        404 => NOT_FOUND,
        _ => SERVICE_ERROR,
    };
    let shown: String = text.chars().take(500).collect();
    Err(TaskFailure {
        error_type: error_type.into(),
        message: format!("{function}: HTTP {}: {shown}", response.status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::TcpListener;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!((plain.status, plain.body.as_slice()), (200, &b"{}"[..]));
        let chunked = parse_response(
            b"HTTP/1.1 500 Internal\r\nTransfer-Encoding: chunked\r\n\r\n4;x=y\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            (chunked.status, chunked.body.as_slice()),
            (500, &b"{\"a\":1}"[..])
        );
        let unframed = parse_response(b"HTTP/1.1 200 OK\r\n\r\nnull").unwrap();
        assert_eq!(unframed.body, b"null");
    }

    #[test]
    fn refuses_broken_responses_without_panicking() {
        for raw in [
            &b""[..],
            b"garbage",
            b"HTTP/1.1\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nff\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n",
        ] {
            assert!(
                parse_response(raw).is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn tells_results_from_function_errors_and_service_errors() {
        let ok = interpret("f", response(200, &[], r#"{"status_code": 200}"#));
        assert_eq!(ok, Ok(json!({"status_code": 200})));
        assert_eq!(interpret("f", response(200, &[], "")), Ok(Value::Null));
        let failure = |status, headers: &[(&str, &str)], body| {
            interpret("f", response(status, headers, body)).unwrap_err()
        };
        let function_error = r#"{"errorType": "KvUnavailable", "errorMessage": "down"}"#;
        assert_eq!(
            failure(500, &[], function_error),
            TaskFailure {
                error_type: "KvUnavailable".into(),
                message: "down".into()
            }
        );
        assert_eq!(
            failure(
                200,
                &[("x-amz-function-error", "Unhandled")],
                function_error
            )
            .error_type,
            "KvUnavailable"
        );
        assert_eq!(failure(200, &[], "not json").error_type, CLIENT_ERROR);
        assert_eq!(failure(429, &[], "slow down").error_type, TOO_MANY_REQUESTS);
        assert_eq!(failure(404, &[], "").error_type, NOT_FOUND);
        assert_eq!(failure(502, &[], "<html>").error_type, SERVICE_ERROR);
    }

    #[test]
    fn calls_the_invoke_api_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buffer = [0; 4096];
            // The request ends with its body, whose length the headers give.
            while !String::from_utf8_lossy(&request).contains(r#"{"key":"k"}"#) {
                let read = stream.read(&mut buffer).unwrap();
                request.extend_from_slice(&buffer[..read]);
            }
            let body = r#"{"status_code":200}"#;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        let api = InvokeApi::new("127.0.0.1", port);
        assert_eq!(
            api.call("kv-key-get", &json!({"key": "k"})),
            Ok(json!({"status_code": 200}))
        );
        let request = server.join().unwrap();
        assert!(
            request.starts_with("POST /2015-03-31/functions/kv-key-get/invocations HTTP/1.1\r\n"),
            "{request}"
        );
    }

    #[test]
    fn nothing_listening_is_a_client_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let failure = InvokeApi::new("127.0.0.1", port)
            .call("kv-key-get", &json!({}))
            .unwrap_err();
        assert_eq!(failure.error_type, CLIENT_ERROR);
    }
}
