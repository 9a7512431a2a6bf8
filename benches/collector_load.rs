//! `make bench-collector`: the project's load generator → a collector (OTLP gRPC receiver,
//! batch, OTLP gRPC exporter with gzip) → an in-process sink that decodes and counts
//! spans, once with a release spoor-collector and once with Rotel in its place; then a
//! spoor-collector with `tail_sampling` holding 50,000 live traces. Prints spans/s end to
//! end (until the sink has every span), spans per collector CPU-second and peak RSS. Not
//! a test: it prints figures for docs/benchmarks.md.
//!
//! Knobs (environment): BENCH_SPANS (default 1_000_000), BENCH_CONCURRENCY (8),
//! BENCH_TRACES_PER_REQUEST (50), BENCH_TAIL_TRACES (100_000; ≥ 50,000 so that
//! `num_traces` is reached), SPOOR_COLLECTOR_BIN (default
//! `$CARGO_TARGET_DIR/release/spoor-collector`), ROTEL_BIN (Rotel's agent binary, e.g.
//! `…/site-packages/rotel/rotel-agent` from the PyPI `rotel` wheel; unset or missing:
//! the Rotel run is skipped with a message).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{
    cpu_seconds, env_or, free_port, load, load_average, spawn_collector, start_sink, terminate,
    wait_listening, LoadShape, RssSampler, Sink,
};

/// What one collector run measured.
struct Figures {
    name: &'static str,
    spans: u64,
    /// From the first request to the sink holding every span.
    elapsed: Duration,
    cpu_seconds: f64,
    peak_rss_kib: u64,
}

impl Figures {
    fn spans_per_second(&self) -> f64 {
        self.spans as f64 / self.elapsed.as_secs_f64()
    }

    fn spans_per_cpu_second(&self) -> f64 {
        self.spans as f64 / self.cpu_seconds.max(0.01)
    }

    fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }
}

/// A spoor-collector config: OTLP gRPC in, `processors`, OTLP gRPC with gzip to the sink
/// (in-memory sending queue, the exporter's default).
fn spoor_config(
    grpc_port: u16,
    health_port: u16,
    metrics_port: u16,
    sink_port: u16,
    tail: bool,
) -> String {
    let (tail_block, processors) = if tail {
        (
            "  tail_sampling:\n    decision_wait: 30s\n    num_traces: 50000\n    policies:\n      - name: errors\n        type: status_code\n        status_code: {status_codes: [ERROR]}\n",
            "[tail_sampling, batch]",
        )
    } else {
        ("", "[batch]")
    };
    format!(
        "receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
processors:
  batch:
    send_batch_size: 8192
    timeout: 200ms
{tail_block}exporters:
  otlp:
    endpoint: 127.0.0.1:{sink_port}
    tls:
      insecure: true
    compression: gzip
extensions:
  health_check:
    endpoint: 127.0.0.1:{health_port}
service:
  extensions: [health_check]
  pipelines:
    traces:
      receivers: [otlp]
      processors: {processors}
      exporters: [otlp]
  telemetry:
    logs:
      level: warn
    metrics:
      address: 127.0.0.1:{metrics_port}
"
    )
}

struct SpoorCollector {
    child: Child,
    grpc_port: u16,
    metrics_port: u16,
}

async fn start_spoor(dir: &Path, sink: &Sink, tail: bool) -> SpoorCollector {
    let (grpc_port, health_port, metrics_port) = (free_port(), free_port(), free_port());
    let config = dir.join(if tail { "tail.yaml" } else { "collector.yaml" });
    std::fs::write(
        &config,
        spoor_config(grpc_port, health_port, metrics_port, sink.port, tail),
    )
    .unwrap();
    let child = spawn_collector(&config);
    let mut collector = SpoorCollector {
        child,
        grpc_port,
        metrics_port,
    };
    let health = format!("http://127.0.0.1:{health_port}/");
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(&health).await {
            if r.status() == 200 {
                return collector;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terminate(&mut collector.child);
    panic!("spoor-collector not ready");
}

/// Rotel's agent in the foreground with the same shape: OTLP gRPC in (HTTP on a free port
/// too, as it always listens), batch 8192 spans / 200 ms (its defaults), the `otlp`
/// exporter over gRPC with gzip to the sink.
async fn start_rotel(bin: &str, dir: &Path, sink: &Sink) -> (Child, u16) {
    let (grpc_port, http_port) = (free_port(), free_port());
    let child = Command::new(bin)
        .arg("start")
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
        .args(["--pid-file", dir.join("rotel.pid").to_str().unwrap()])
        .args(["--log-file", dir.join("rotel.log").to_str().unwrap()])
        .args(["--batch-max-size", "8192", "--batch-timeout", "200ms"])
        .args(["--exporter", "otlp"])
        .args([
            "--otlp-exporter-endpoint",
            &format!("http://127.0.0.1:{}", sink.port),
        ])
        .args(["--otlp-exporter-protocol", "grpc"])
        .args(["--otlp-exporter-compression", "gzip"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    wait_listening(grpc_port, "rotel").await;
    (child, grpc_port)
}

/// Drives `total_spans` through the collector at `grpc_port` and waits until the sink has
/// all of them.
async fn measure(
    name: &'static str,
    pid: u32,
    grpc_port: u16,
    sink: &Sink,
    shape: LoadShape,
) -> Figures {
    let at_sink_before = sink.spans.load(Ordering::Relaxed);
    let rss = RssSampler::start(pid);
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let sent = load(&format!("http://127.0.0.1:{grpc_port}"), shape).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    while sink.spans.load(Ordering::Relaxed) - at_sink_before < sent.spans {
        assert!(
            Instant::now() < deadline,
            "{name}: the sink has {} of {} spans after 300 s",
            sink.spans.load(Ordering::Relaxed) - at_sink_before,
            sent.spans
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    Figures {
        name,
        spans: sent.spans,
        elapsed,
        cpu_seconds: cpu_seconds(pid) - cpu_before,
        peak_rss_kib: rss.finish(),
    }
}

fn rotel_bin() -> Option<String> {
    let Ok(bin) = std::env::var("ROTEL_BIN") else {
        eprintln!(
            "ROTEL_BIN is not set; the Rotel run is skipped (`make bench-collector` sets it)"
        );
        return None;
    };
    if std::fs::metadata(&bin).is_ok() {
        Some(bin)
    } else {
        eprintln!("ROTEL_BIN={bin} does not exist; the Rotel run is skipped");
        None
    }
}

async fn metric(port: u16, series: &str) -> f64 {
    let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await else {
        return 0.0;
    };
    let text = response.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn print_runs(runs: &[Figures], shape: LoadShape) {
    println!();
    println!(
        "collector benchmark: load generator → collector (otlp gRPC in, batch 8192/200ms, otlp gRPC out, gzip) → sink"
    );
    println!(
        "  {} spans per run, {} clients x {} traces/request (10 spans/trace)",
        shape.total_spans, shape.concurrency, shape.traces_per_request
    );
    println!(
        "  {:<16} {:>12} {:>14} {:>16} {:>14}",
        "collector", "spans/s", "collector CPU", "spans per CPU-s", "peak RSS"
    );
    for run in runs {
        println!(
            "  {:<16} {:>12.0} {:>12.2} s {:>16.0} {:>10.1} MiB",
            run.name,
            run.spans_per_second(),
            run.cpu_seconds,
            run.spans_per_cpu_second(),
            run.peak_rss_mib()
        );
    }
    if let [ours, rotel] = runs {
        println!(
            "  spoor/rotel: spans per CPU-s x{:.2} (target ≥ 2), peak RSS x{:.2} (target ≤ 1), spans/s x{:.2}",
            ours.spans_per_cpu_second() / rotel.spans_per_cpu_second(),
            ours.peak_rss_mib() / rotel.peak_rss_mib(),
            ours.spans_per_second() / rotel.spans_per_second()
        );
    }
}

const ON_MEMORY: &str = "otelcol_processor_tail_sampling_sampling_traces_on_memory";
const TOO_EARLY: &str = "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early_total";

#[tokio::main]
async fn main() {
    let shape = LoadShape {
        total_spans: env_or("BENCH_SPANS", 1_000_000),
        concurrency: env_or("BENCH_CONCURRENCY", 8),
        traces_per_request: env_or("BENCH_TRACES_PER_REQUEST", 50),
        spread: Duration::ZERO,
        requests_per_second: 0,
    };
    let tail_traces = env_or("BENCH_TAIL_TRACES", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let sink = start_sink().await;
    wait_listening(sink.port, "sink").await;
    println!("load average before: {}", load_average());

    let mut runs = Vec::new();
    let mut spoor = start_spoor(dir.path(), &sink, false).await;
    runs.push(
        measure(
            "spoor-collector",
            spoor.child.id(),
            spoor.grpc_port,
            &sink,
            shape,
        )
        .await,
    );
    println!(
        "spoor-collector refused {} spans (RESOURCE_EXHAUSTED; the load generator resends after 50 ms); the sink took {} requests",
        metric(spoor.metrics_port, "otelcol_receiver_refused_spans_total").await as u64,
        sink.requests.load(Ordering::Relaxed)
    );
    terminate(&mut spoor.child);
    println!("load average after spoor-collector: {}", load_average());

    if let Some(bin) = rotel_bin() {
        let (mut rotel, grpc_port) = start_rotel(&bin, dir.path(), &sink).await;
        runs.push(measure("rotel", rotel.id(), grpc_port, &sink, shape).await);
        terminate(&mut rotel);
        println!("load average after rotel: {}", load_average());
    }

    if tail_traces == 0 {
        print_runs(&runs, shape);
        return;
    }
    // Tail sampling: every trace is held for decision_wait (30 s) unless num_traces (50,000)
    // is reached first, so sending ≥ 50,000 traces fills it.
    let mut tail = start_spoor(dir.path(), &sink, true).await;
    let pid = tail.child.id();
    let rss = RssSampler::start(pid);
    let peak_on_memory = Arc::new(AtomicU64::new(0));
    let watching = {
        let peak = Arc::clone(&peak_on_memory);
        let port = tail.metrics_port;
        tokio::spawn(async move {
            loop {
                let held = metric(port, ON_MEMORY).await as u64;
                peak.fetch_max(held, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let at_sink_before = sink.spans.load(Ordering::Relaxed);
    let cpu_before = cpu_seconds(pid);
    let tail_shape = LoadShape {
        total_spans: tail_traces * 10,
        ..shape
    };
    let sent = load(&format!("http://127.0.0.1:{}", tail.grpc_port), tail_shape).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held_after_load = metric(tail.metrics_port, ON_MEMORY).await;
    let decided_early = metric(tail.metrics_port, TOO_EARLY).await;
    let tail_cpu = cpu_seconds(pid) - cpu_before;
    let tail_peak_rss = rss.finish();
    watching.abort();
    // SIGTERM decides every held trace and forwards the sampled ones before exiting.
    terminate(&mut tail.child);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sampled_at_sink = sink.spans.load(Ordering::Relaxed) - at_sink_before;

    print_runs(&runs, shape);
    println!();
    println!(
        "tail sampling: decision_wait 30s, num_traces 50000, status_code ERROR policy, then batch"
    );
    println!(
        "  traces sent                {} ({} spans)",
        sent.trace_ids.len(),
        sent.spans
    );
    println!(
        "  peak traces held           {} (after load: {held_after_load}; decided early at the bound: {decided_early})",
        peak_on_memory.load(Ordering::Relaxed)
    );
    println!(
        "  peak RSS                   {:.1} MiB",
        tail_peak_rss as f64 / 1024.0
    );
    println!(
        "  collector CPU (load)       {tail_cpu:.2} s ({:.0} spans/CPU-s)",
        sent.spans as f64 / tail_cpu.max(0.01)
    );
    println!(
        "  sampled spans at the sink  {sampled_at_sink} ({:.1} % of spans)",
        sampled_at_sink as f64 * 100.0 / sent.spans.max(1) as f64
    );
    println!("load average after: {}", load_average());
}
