//! The systemd notification protocol against a real spoor-collector process: READY=1 once
//! listeners are bound and the persistent queue is open (the health check agrees),
//! WATCHDOG=1 pings while the pipeline answers, STOPPING=1 on SIGTERM, a clean exit.
#![allow(clippy::unwrap_used)]

mod collector_common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use collector_common::free_port;

fn wait_for(socket: &UnixDatagram, wanted: &str, timeout: Duration) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let message = String::from_utf8_lossy(&buf[..n]).to_string();
        let done = message.lines().any(|line| line == wanted);
        seen.push(message);
        if done {
            return seen;
        }
    }
    panic!("no {wanted} notification within {timeout:?}; seen {seen:?}");
}

#[test]
fn ready_watchdog_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let health_port = free_port();
    let config = dir.path().join("collector.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{}
      http:
        endpoint: 127.0.0.1:{}
processors:
  batch:
exporters:
  otlp:
    endpoint: 127.0.0.1:{}
    tls:
      insecure: true
    sending_queue:
      persistent:
        directory: {}
extensions:
  health_check:
    endpoint: 127.0.0.1:{health_port}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp]
  telemetry:
    metrics:
      level: none
"#,
            free_port(),
            free_port(),
            free_port(),
            dir.path().join("queue").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spoor-collector"))
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .env_remove("JOURNAL_STREAM")
        .env_remove("SPOOR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let seen = wait_for(&socket, "READY=1", Duration::from_secs(30));
    assert!(seen.iter().any(|message| message.contains("STATUS=")));
    // Ready means ready: the health check agrees at once.
    let health = std::net::TcpStream::connect(("127.0.0.1", health_port));
    assert!(
        health.is_ok(),
        "health check listening when READY=1 is sent"
    );
    let response = blocking_get(health_port);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        dir.path().join("queue/otlp").is_dir(),
        "persistent queue opened before READY"
    );

    wait_for(&socket, "WATCHDOG=1", Duration::from_secs(5));
    wait_for(&socket, "WATCHDOG=1", Duration::from_secs(5));

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_for(&socket, "STOPPING=1", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "spoor-collector did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTP/1.1 GET of `/`.
fn blocking_get(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}
