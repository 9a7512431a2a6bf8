//! `make bench-cluster`: 1, 2 and 3 release spoor-servers on one S3-compatible bucket
//! (moto's standalone server from the test venv), each listing the others as peers,
//! behind two release spoor-collectors balancing by trace ID. For each size: ingest
//! throughput, spans per server CPU-second, and the fan-out cost of queries — trace by ID
//! and a search, asked of one server while the traces are still in the servers' memory.
//! Not a test: it prints figures for docs/benchmarks.md. This machine has two cores, so
//! more servers do not add capacity here; the per-CPU figures are the comparable ones.
//!
//! Knobs (environment): BENCH_SPANS (default 300_000), BENCH_CONCURRENCY (4 per
//! collector), BENCH_TRACES_PER_REQUEST (50), BENCH_LOOKUPS (300), BENCH_SEARCHES (50),
//! MOTO_BIN, SPOOR_SERVER_BIN, SPOOR_COLLECTOR_BIN.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::{
    cpu_seconds, env_or, free_port, load, load_average, metric, percentile, spawn_collector,
    start_server_at, stop, terminate, wait_listening, wait_ready, LoadShape, Server,
};

const BUCKET: &str = "traces";

/// What one cluster size measured.
struct Figures {
    servers: usize,
    spans: u64,
    elapsed: Duration,
    server_cpu: f64,
    collector_cpu: f64,
    lookup_p50: Duration,
    lookup_p99: Duration,
    search_p50: Duration,
    search_p99: Duration,
}

fn start_moto(bin: &str) -> (Child, u16) {
    let port = free_port();
    let child = Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e} (`make test-python` installs moto)"));
    (child, port)
}

fn start_collector(dir: &Path, servers: &[Server]) -> (Child, u16) {
    let (grpc_port, health_port, metrics_port) = (free_port(), free_port(), free_port());
    let hostnames: Vec<String> = servers
        .iter()
        .map(|s| s.grpc.trim_start_matches("http://").to_owned())
        .collect();
    let config = dir.join(format!("collector-{grpc_port}.yaml"));
    std::fs::write(
        &config,
        format!(
            "
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
processors:
  batch:
    send_batch_size: 8192
    timeout: 200ms
exporters:
  loadbalancing:
    protocol:
      otlp:
        tls:
          insecure: true
        compression: zstd
    resolver:
      static:
        hostnames: [{}]
extensions:
  health_check:
    endpoint: 127.0.0.1:{health_port}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [loadbalancing]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
",
            hostnames.join(", ")
        ),
    )
    .unwrap();
    let child = spawn_collector(&config);
    (child, grpc_port)
}

async fn run(moto_bin: &str, count: usize, shape: LoadShape) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let (mut moto, moto_port) = start_moto(moto_bin);
    wait_listening(moto_port, "moto").await;
    let endpoint = format!("http://127.0.0.1:{moto_port}");
    reqwest::Client::new()
        .put(format!("{endpoint}/{BUCKET}"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();

    let api_ports: Vec<u16> = (0..count).map(|_| free_port()).collect();
    let peers = format!(
        "[{}]",
        api_ports
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect::<Vec<_>>()
            .join(",")
    );
    let env = [
        ("SPOOR_STORAGE__BACKEND", "s3"),
        ("SPOOR_STORAGE__S3__BUCKET", BUCKET),
        ("SPOOR_STORAGE__S3__ENDPOINT", endpoint.as_str()),
        ("SPOOR_STORAGE__S3__ALLOW_HTTP", "true"),
        ("SPOOR_STORAGE__S3__FORCE_PATH_STYLE", "true"),
        ("AWS_ACCESS_KEY_ID", "bench"),
        ("AWS_SECRET_ACCESS_KEY", "bench"),
        ("SPOOR_CLUSTER__PEERS", peers.as_str()),
        // Everything stays in memory during the queries: the fan-out case.
        ("SPOOR_HEAD__TRACE_IDLE", "10m"),
        ("SPOOR_HEAD__MAX_BLOCK_DURATION", "10m"),
    ];
    let mut servers: Vec<Server> = api_ports
        .iter()
        .enumerate()
        .map(|(i, port)| start_server_at(&dir.path().join(format!("s{i}")), &env, *port))
        .collect();
    for server in &servers {
        wait_ready(&server.api).await;
    }
    let collectors: Vec<(Child, u16)> = (0..2)
        .map(|_| start_collector(dir.path(), &servers))
        .collect();
    for (_, port) in &collectors {
        wait_listening(*port, "spoor-collector").await;
    }
    let server_cpu_before: f64 = servers.iter().map(|s| cpu_seconds(s.child.id())).sum();
    let collector_cpu_before: f64 = collectors.iter().map(|(c, _)| cpu_seconds(c.id())).sum();

    let started = Instant::now();
    let half = LoadShape {
        total_spans: shape.total_spans / 2,
        ..shape
    };
    let loads = collectors.iter().map(|(_, port)| {
        let grpc = format!("http://127.0.0.1:{port}");
        async move { load(&grpc, half).await }
    });
    let results = futures::future::join_all(loads).await;
    let spans: u64 = results.iter().map(|r| r.spans).sum();
    // Acknowledged by the collectors; done when the servers hold every span.
    let mut stored = 0.0;
    for _ in 0..3000 {
        stored = 0.0;
        for server in &servers {
            stored += metric(&server.api, "spoor_ingest_spans_total").await;
        }
        if stored as u64 >= spans {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    assert!(
        stored as u64 >= spans,
        "servers hold {stored} of {spans} spans"
    );
    let server_cpu = servers
        .iter()
        .map(|s| cpu_seconds(s.child.id()))
        .sum::<f64>()
        - server_cpu_before;
    let collector_cpu = collectors
        .iter()
        .map(|(c, _)| cpu_seconds(c.id()))
        .sum::<f64>()
        - collector_cpu_before;

    // Queries of server 0 while the traces sit in the memory of all servers: with more
    // than one server, 1 - 1/N of them come from a peer.
    let ids: Vec<&Vec<u8>> = results.iter().flat_map(|r| &r.trace_ids).collect();
    let http = reqwest::Client::new();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut lookups = Vec::new();
    for _ in 0..env_or("BENCH_LOOKUPS", 300) {
        let id = ids[rng.random_range(0..ids.len())];
        let t = Instant::now();
        let response = http
            .get(format!(
                "{}/api/v2/traces/{}",
                servers[0].api,
                hex::encode(id)
            ))
            .header("Accept", "application/protobuf")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(response.bytes().await.unwrap().len() > 100, "trace found");
        lookups.push(t.elapsed());
    }
    lookups.sort();
    let mut searches = Vec::new();
    for _ in 0..env_or("BENCH_SEARCHES", 50) {
        let t = Instant::now();
        let response = http
            .get(format!(
                "{}/api/search?q=%7B%20status%20%3D%20error%20%7D&limit=20",
                servers[0].api
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.bytes().await.unwrap();
        searches.push(t.elapsed());
    }
    searches.sort();

    for (mut child, _) in collectors {
        terminate(&mut child);
    }
    for server in &mut servers {
        stop(server);
    }
    terminate(&mut moto);
    Figures {
        servers: count,
        spans,
        elapsed,
        server_cpu,
        collector_cpu,
        lookup_p50: percentile(&lookups, 0.5),
        lookup_p99: percentile(&lookups, 0.99),
        search_p50: percentile(&searches, 0.5),
        search_p99: percentile(&searches, 0.99),
    }
}

#[tokio::main]
async fn main() {
    let moto_bin = std::env::var("MOTO_BIN").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/spoor-venv/bin/moto_server")
    });
    let shape = LoadShape {
        total_spans: env_or("BENCH_SPANS", 300_000),
        concurrency: env_or("BENCH_CONCURRENCY", 4),
        traces_per_request: env_or("BENCH_TRACES_PER_REQUEST", 50),
        spread: Duration::ZERO,
        requests_per_second: 0,
    };
    println!("load average before: {}", load_average());
    let mut runs = Vec::new();
    for count in [1, 2, 3] {
        runs.push(run(&moto_bin, count, shape).await);
        println!("load average after {count} server(s): {}", load_average());
    }
    println!(
        "spoor-server scale-out: {} spans through 2 collectors ({} clients x {} traces/request each)",
        shape.total_spans, shape.concurrency, shape.traces_per_request
    );
    println!(
        "  servers  spans/s  spans/server-CPU-s  collector CPU-s  trace-by-ID p50/p99  search p50/p99"
    );
    for f in &runs {
        println!(
            "  {:>7}  {:>7.0}  {:>18.0}  {:>15.1}  {:>8.1?} / {:<8.1?}  {:>6.1?} / {:.1?}",
            f.servers,
            f.spans as f64 / f.elapsed.as_secs_f64(),
            f.spans as f64 / f.server_cpu.max(0.01),
            f.collector_cpu,
            f.lookup_p50,
            f.lookup_p99,
            f.search_p50,
            f.search_p99,
        );
    }
}
