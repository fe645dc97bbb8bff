//! The processes and sockets the benchmark owns: DynamoDB Local on a free loopback port (from
//! the jar `make tools` installs), a counting TCP proxy in front of it, and a probe port that
//! stands in for the EC2 metadata service so a needless credential or region lookup shows.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kv_dev::dynamodb_local;

/// DynamoDB Local, killed when this value drops; started through `setpriv --pdeathsig` when
/// that exists, so it also dies if the benchmark is killed.
pub struct DynamoLocal {
    child: Child,
    pub port: u16,
}

impl DynamoLocal {
    pub fn start(root: &Path) -> DynamoLocal {
        let dir = dynamodb_local::jar_dir(root);
        let port = dynamodb_local::free_port();
        let program = if Path::new("/usr/bin/setpriv").is_file() {
            let mut command = Command::new("/usr/bin/setpriv");
            command.args(["--pdeathsig", "KILL", "--", "java"]);
            command
        } else {
            Command::new("java")
        };
        let mut command = dynamodb_local::command(program, &dir, port, &["-sharedDb"]);
        let child = command.spawn().expect("start DynamoDB Local (java)");
        let local = DynamoLocal { child, port };
        dynamodb_local::wait_until_listening(port, Instant::now() + Duration::from_secs(60));
        local
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for DynamoLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy that records when each connection opens and when each HTTP request starts, so
/// the cold-start runs can tell whether a function talks to DynamoDB before its first event
/// (every DynamoDB API call is a `POST /`).
pub struct CountingProxy {
    pub port: u16,
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Connect,
    ApiCall,
    OtherRequest,
}

impl CountingProxy {
    pub fn start(target: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = events.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let now = Instant::now();
                log.lock().unwrap().push((now, Event::Connect));
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_read, server_write) = (client.try_clone(), server.try_clone());
                let (Ok(mut client_read), Ok(mut server_write)) = (client_read, server_write)
                else {
                    continue;
                };
                let requests = log.clone();
                std::thread::spawn(move || {
                    let mut buffer = vec![0u8; 64 * 1024];
                    while let Ok(read) = client_read.read(&mut buffer) {
                        if read == 0 {
                            break;
                        }
                        let chunk = &buffer[..read];
                        let event = if chunk.starts_with(b"POST /") {
                            Some(Event::ApiCall)
                        } else if [&b"GET /"[..], b"PUT /", b"HEAD /"]
                            .iter()
                            .any(|method| chunk.starts_with(method))
                        {
                            Some(Event::OtherRequest)
                        } else {
                            None
                        };
                        if let Some(event) = event {
                            requests.lock().unwrap().push((Instant::now(), event));
                        }
                        if server_write.write_all(chunk).is_err() {
                            break;
                        }
                    }
                    let _ = server_write.shutdown(Shutdown::Write);
                });
                let (mut server_read, mut client_write) = (server, client);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server_read, &mut client_write);
                    let _ = client_write.shutdown(Shutdown::Write);
                });
            }
        });
        CountingProxy { port, events }
    }

    /// How many events of this kind happened in [from, until).
    pub fn count(&self, kind: Event, from: Instant, until: Instant) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(at, event)| *event == kind && *at >= from && *at < until)
            .count()
    }
}

/// A port that only counts connections: given to the functions as the EC2 metadata endpoint,
/// where the SDK would go for credentials or a region it could not find in the environment.
pub struct Probe {
    pub port: u16,
    hits: Arc<Mutex<Vec<Instant>>>,
    stop: Arc<AtomicBool>,
}

impl Probe {
    pub fn start() -> Probe {
        let listener = TcpListener::bind("127.0.0.1:0").expect("probe port");
        let port = listener.local_addr().expect("probe address").port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (hits.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    break;
                }
                log.lock().unwrap().push(Instant::now());
                drop(stream);
            }
        });
        Probe { port, hits, stop }
    }

    pub fn count(&self, from: Instant, until: Instant) -> usize {
        self.hits
            .lock()
            .unwrap()
            .iter()
            .filter(|at| **at >= from && **at < until)
            .count()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}
