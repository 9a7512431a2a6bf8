//! `make bench`: drives a release spoor-server with realistic multi-service traces over
//! OTLP gRPC and reports ingest throughput, server CPU and RSS, stored bytes per span and
//! trace-by-ID latency. Not a test: it prints figures for docs/benchmarks.md.
//!
//! Then the cost of the metrics generator: ingest CPU per span with the generator on
//! and off, on fresh servers in alternation (off, on, off, on, ...), so both see the
//! same machine.
//!
//! Knobs (environment): BENCH_SPANS (default 1_000_000), BENCH_CONCURRENCY (8),
//! BENCH_TRACES_PER_REQUEST (50), BENCH_LOOKUPS (2000), BENCH_GENERATOR_SPANS (500_000),
//! BENCH_GENERATOR_ROUNDS (3), SPOOR_SERVER_BIN.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::{
    cpu_seconds, dir_bytes, env_or, load, metric, percentile, start_server, status_kib, stop,
    wait_flushed, wait_ready, LoadShape,
};

#[tokio::main]
async fn main() {
    let total_spans = env_or("BENCH_SPANS", 1_000_000);
    let concurrency = env_or("BENCH_CONCURRENCY", 8);
    let traces_per_request = env_or("BENCH_TRACES_PER_REQUEST", 50);
    let lookups = env_or("BENCH_LOOKUPS", 2000) as usize;
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), &[]);
    wait_ready(&server.api).await;
    let pid = server.child.id();
    let cpu_before = cpu_seconds(pid);

    let sampler = {
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d = Arc::clone(&done);
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !d.load(Ordering::Relaxed) {
                peak = peak.max(status_kib(pid, "VmRSS:"));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        (done, handle)
    };
    let shape = LoadShape {
        total_spans,
        concurrency,
        traces_per_request,
        spread: Duration::ZERO,
        requests_per_second: 0,
    };
    let sent = load(&server.grpc, shape).await;
    let ids = sent.trace_ids;
    let ingest_elapsed = sent.elapsed;
    let ingest_cpu = cpu_seconds(pid) - cpu_before;
    let spans = sent.spans;

    // Flush everything into blocks, then measure storage and lookups on the block store.
    wait_flushed(&server.api, Duration::from_secs(300)).await;
    sampler.0.store(true, Ordering::Relaxed);
    let peak_rss_kib = sampler.1.join().unwrap().max(status_kib(pid, "VmHWM:"));
    let total_cpu = cpu_seconds(pid) - cpu_before;
    let stored = dir_bytes(&server.data.join("blocks"));

    let http = reqwest::Client::new();
    let mut rng = SmallRng::seed_from_u64(99);
    let mut latencies = Vec::with_capacity(lookups);
    for _ in 0..lookups {
        let id = &ids[rng.random_range(0..ids.len())];
        let t = Instant::now();
        let r = http
            .get(format!("{}/api/v2/traces/{}", server.api, hex::encode(id)))
            .header("Accept", "application/protobuf")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        latencies.push(t.elapsed());
        assert!(body.len() > 100, "trace found");
    }
    latencies.sort();

    println!("spoor-server ingest benchmark");
    println!("  spans sent                 {spans}");
    println!(
        "  concurrency                {concurrency} clients x {traces_per_request} traces/request"
    );
    println!(
        "  ingest wall time           {:.2} s",
        ingest_elapsed.as_secs_f64()
    );
    println!(
        "  spans/s accepted           {:.0}",
        spans as f64 / ingest_elapsed.as_secs_f64()
    );
    println!("  server CPU (ingest)        {ingest_cpu:.2} s");
    println!(
        "  spans per server CPU-s     {:.0}",
        spans as f64 / ingest_cpu.max(0.01)
    );
    println!(
        "  server CPU incl. flush     {total_cpu:.2} s ({:.0} spans/CPU-s)",
        spans as f64 / total_cpu.max(0.01)
    );
    println!(
        "  peak RSS                   {:.1} MiB",
        peak_rss_kib as f64 / 1024.0
    );
    println!(
        "  stored bytes               {stored} ({:.1} bytes/span)",
        stored as f64 / spans as f64
    );
    println!(
        "  trace-by-ID ({lookups} lookups, blocks)  p50 {:.2} ms  p99 {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0
    );
    stop(&mut server);

    let generator_spans = env_or("BENCH_GENERATOR_SPANS", 500_000);
    let rounds = env_or("BENCH_GENERATOR_ROUNDS", 3);
    let shape = LoadShape {
        total_spans: generator_spans,
        ..shape
    };
    let (mut off, mut on, mut left_out) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..rounds {
        let disabled = [("SPOOR_METRICS_GENERATOR__ENABLED", "false")];
        off.push(ingest_spans_per_cpu_second(shape, &disabled).await.0);
        let (per_cpu_second, dropped) = ingest_spans_per_cpu_second(shape, &[]).await;
        on.push(per_cpu_second);
        left_out += dropped;
    }
    let median = |runs: &mut Vec<f64>| {
        runs.sort_by(f64::total_cmp);
        runs[runs.len() / 2]
    };
    let (off, on) = (median(&mut off), median(&mut on));
    println!("metrics generator cost ({rounds} rounds of {generator_spans} spans each, median)");
    println!("  spans per server CPU-s, generator off   {off:.0}");
    println!("  spans per server CPU-s, generator on    {on:.0}");
    println!(
        "  throughput cost of the generator        {:.1} %",
        (1.0 - on / off) * 100.0
    );
    println!("  spans left out of the metrics (queue full, all rounds)  {left_out:.0}");
}

/// Ingests `shape` into a fresh server started with `env` and returns spans per server
/// CPU-second, counting the CPU until the generator has seen every span, and the spans
/// the generator left out because its queue was full.
async fn ingest_spans_per_cpu_second(shape: LoadShape, env: &[(&str, &str)]) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), env);
    wait_ready(&server.api).await;
    let pid = server.child.id();
    let cpu_before = cpu_seconds(pid);
    let sent = load(&server.grpc, shape).await;
    // The generator works behind the acknowledgements; wait for it to catch up so its
    // CPU is counted (bounded: when it is off, the counter never moves).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut dropped = 0.0;
    while env.is_empty() && Instant::now() < deadline {
        dropped = metric(&server.api, "spoor_generator_dropped_spans_total").await;
        let seen = metric(&server.api, "spoor_generator_spans_total").await + dropped;
        if seen >= sent.spans as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    stop(&mut server);
    (sent.spans as f64 / cpu.max(0.01), dropped)
}
