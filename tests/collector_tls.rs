//! The otlp exporter's default is TLS (as in the OpenTelemetry Collector): it verifies
//! the backend against the system's roots plus `tls.ca_file`.
#![allow(clippy::unwrap_used)]

mod collector_common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use collector_common::{
    eventually, start_tls_backend, trace_request, FakeBackend, RunningCollector,
};

/// A throwaway CA and a certificate for localhost / 127.0.0.1 signed by it, made with the
/// openssl command-line tool.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=spoor test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_over_tls_verified_with_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let backend = FakeBackend::new(Vec::new());
    let running = start_tls_backend(
        Arc::clone(&backend),
        std::fs::read(dir.path().join("server.pem")).unwrap(),
        std::fs::read(dir.path().join("server.key")).unwrap(),
    )
    .await;
    let collector = RunningCollector::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
exporters:
  otlp:
    endpoint: localhost:{}
    tls:
      ca_file: {}
    compression: zstd
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
  telemetry:
    metrics:
      level: none
"#,
        running.address.port(),
        dir.path().join("ca.pem").display()
    ))
    .await;
    collector
        .client()
        .await
        .export(trace_request(42, 4))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            backend.span_counts().len() == 4
        })
        .await,
        "spans did not arrive over TLS"
    );
    collector.stop().await;
    running.stop().await;
}

/// `tls.insecure_skip_verify: true` reaches a backend whose CA the collector does not
/// trust (no `ca_file`), with a client certificate configured alongside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_without_verifying_when_insecure_skip_verify_is_set() {
    let dir = tempfile::tempdir().unwrap();
    make_certificates(dir.path());
    let backend = FakeBackend::new(Vec::new());
    let running = start_tls_backend(
        Arc::clone(&backend),
        std::fs::read(dir.path().join("server.pem")).unwrap(),
        std::fs::read(dir.path().join("server.key")).unwrap(),
    )
    .await;
    let collector = RunningCollector::start(&format!(
        r#"
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:${{env:GRPC_PORT}}
exporters:
  otlp:
    endpoint: 127.0.0.1:{}
    tls:
      insecure_skip_verify: true
      cert_file: {}
      key_file: {}
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [otlp]
  telemetry:
    metrics:
      level: none
"#,
        running.address.port(),
        dir.path().join("server.pem").display(),
        dir.path().join("server.key").display(),
    ))
    .await;
    collector
        .client()
        .await
        .export(trace_request(7, 3))
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || async {
            backend.span_counts().len() == 3
        })
        .await,
        "spans did not arrive over unverified TLS"
    );
    collector.stop().await;
    running.stop().await;
}
