//! A local AWS API emulator for what DynamoDB Local does not serve: `moto` in server mode (PyPI,
//! installed by `scripts/install-tools.sh` into `.tools/moto-venv`), on a free loopback port,
//! killed with the test process. EventBridge routes events by rule to an SQS queue there, which
//! the tests read back: the functions' real EventBridge client puts the events, nothing is
//! faked in process.
//!
//! Requests are plain HTTP/1.1 with the services' JSON protocols (moto checks no signatures),
//! so the harness needs no SDK of its own for the setup and the read-back.

use crate::dynamodb_local::{free_port, wait_until_listening};
use crate::support::spawn_owned;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub struct Moto {
    pub endpoint: String,
    port: u16,
}

impl Moto {
    /// The test process's own moto server, started on first use.
    pub fn shared() -> &'static Moto {
        static SHARED: std::sync::OnceLock<Moto> = std::sync::OnceLock::new();
        SHARED.get_or_init(Moto::start)
    }

    /// Starts a moto server; it lives as long as the test process.
    pub fn start() -> Moto {
        let server = crate::root().join(".tools/moto-venv/bin/moto_server");
        assert!(
            server.exists(),
            "{} is missing: run scripts/install-tools.sh (make tools)",
            server.display()
        );
        let port = free_port();
        let (ready, started) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut command = Command::new(server);
            command
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // Tied to this thread's life (PR_SET_PDEATHSIG): the thread waits on it.
            let mut child = spawn_owned(command);
            let _ = ready.send(());
            let _ = child.wait();
        });
        started.recv().expect("moto thread");
        wait_until_listening(port, Instant::now() + Duration::from_secs(60));
        Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    /// One JSON-protocol request: `target` is `AWSEvents.PutRule`, `AmazonSQS.CreateQueue`, ...
    pub fn call(&self, target: &str, body: Value) -> Value {
        let version = if target.starts_with("AmazonSQS.") {
            "1.0"
        } else {
            "1.1"
        };
        let body = body.to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        write!(
            stream,
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Amz-Target: {target}\r\nContent-Type: application/x-amz-json-{version}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=local/20261128/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len(),
            service = if version == "1.0" { "sqs" } else { "events" },
        )
        .expect("send to moto");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("moto's answer");
        let (head, payload) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "{target} failed: {head}\n{payload}"
        );
        serde_json::from_str(payload).unwrap_or(Value::Null)
    }

    /// A queue that receives every event on `bus` matching `pattern` (an EventBridge event
    /// pattern); returns the queue's URL.
    pub fn queue_for(&self, bus: &str, name: &str, pattern: Value) -> String {
        let url = self.call("AmazonSQS.CreateQueue", json!({"QueueName": name}))["QueueUrl"]
            .as_str()
            .expect("QueueUrl")
            .to_string();
        let arn = self.call(
            "AmazonSQS.GetQueueAttributes",
            json!({"QueueUrl": url, "AttributeNames": ["QueueArn"]}),
        )["Attributes"]["QueueArn"]
            .as_str()
            .expect("QueueArn")
            .to_string();
        if bus != "default" {
            self.call("AWSEvents.CreateEventBus", json!({"Name": bus}));
        }
        self.call(
            "AWSEvents.PutRule",
            json!({"Name": name, "EventBusName": bus, "EventPattern": pattern.to_string()}),
        );
        self.call(
            "AWSEvents.PutTargets",
            json!({"Rule": name, "EventBusName": bus, "Targets": [{"Id": "queue", "Arn": arn}]}),
        );
        url
    }

    /// The events delivered to the queue so far (each the whole EventBridge event), taken off it.
    pub fn drain(&self, queue_url: &str) -> Vec<Value> {
        let mut events = Vec::new();
        loop {
            let answer = self.call(
                "AmazonSQS.ReceiveMessage",
                json!({"QueueUrl": queue_url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 0}),
            );
            let messages = answer["Messages"].as_array().cloned().unwrap_or_default();
            if messages.is_empty() {
                return events;
            }
            for message in messages {
                let body = message["Body"].as_str().unwrap_or("null");
                events.push(serde_json::from_str(body).unwrap_or(Value::Null));
                self.call(
                    "AmazonSQS.DeleteMessage",
                    json!({"QueueUrl": queue_url, "ReceiptHandle": message["ReceiptHandle"]}),
                );
            }
        }
    }

    /// `drain` until `count` events have arrived or `within` has passed.
    pub fn wait_for(&self, queue_url: &str, count: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut events = Vec::new();
        while events.len() < count && Instant::now() < deadline {
            events.extend(self.drain(queue_url));
            std::thread::sleep(Duration::from_millis(50));
        }
        events
    }

    /// An EventBridge client of the functions' kind, pointed at this emulator (or at a proxy
    /// in front of it).
    /// A Step Functions client for moto (which accepts any task token) or any other engine
    /// serving its API at `endpoint`, such as kv-flow's task tokens.
    pub fn sfn_client(endpoint: &str) -> aws_sdk_sfn::Client {
        use aws_sdk_sfn::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_sfn::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "local"))
            .endpoint_url(endpoint)
            .http_client(kv::store::client::http_client())
            .timeout_config(kv::store::client::timeouts())
            .build();
        aws_sdk_sfn::Client::from_conf(config)
    }

    pub fn eventbridge_client(endpoint: &str) -> aws_sdk_eventbridge::Client {
        use aws_sdk_eventbridge::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_eventbridge::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("local", "local", None, None, "moto"))
            .endpoint_url(endpoint)
            .http_client(kv::store::client::http_client())
            .timeout_config(kv::store::client::timeouts())
            .build();
        aws_sdk_eventbridge::Client::from_conf(config)
    }
}
