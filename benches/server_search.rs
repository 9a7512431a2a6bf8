//! `make bench-search` (part of `make bench`): loads a release spoor-server with the load
//! generator's traces spread over the last hour, waits until everything is in blocks,
//! then times the Tempo HTTP API the way Grafana calls it: TraceQL search with limit 20
//! and 1000, tag values, and a `rate()` range query over the hour. Reports p50/p99 wall
//! time per query (client side, HTTP included) and bytes inspected per second from the
//! response's own `metrics.inspectedBytes`. Not a test: it prints figures for
//! docs/benchmarks.md.
//!
//! Knobs (environment): BENCH_SPANS (default 5_000_000), BENCH_SEARCH_RUNS (20),
//! BENCH_CONCURRENCY (8), BENCH_TRACES_PER_REQUEST (50), SPOOR_SERVER_BIN,
//! BENCH_SEARCH_DATA (reuse a data directory loaded by an earlier run instead of loading).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::{
    dir_bytes, env_or, load, percentile, start_server, stop, wait_flushed, wait_ready, LoadShape,
};

const HOUR: Duration = Duration::from_secs(3600);

/// One request to time: a label for the report and the API path with its query string.
struct Case {
    label: String,
    path: String,
}

/// Percent-encodes a query parameter (everything but RFC 3986 unreserved characters).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (byte as char).to_string()
            }
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn cases(start: u64, end: u64) -> Vec<Case> {
    let mut cases = Vec::new();
    let searches = [
        ("{ status = error }", &[20, 1000][..]),
        ("{ span.user.id = 42 }", &[20, 1000][..]),
        (
            r#"{ resource.service.name = "payment" && duration > 100ms }"#,
            &[20, 1000][..],
        ),
        ("{ } | count() > 5", &[20, 1000][..]),
    ];
    for (query, limits) in searches {
        for limit in limits {
            cases.push(Case {
                label: format!("search {query} limit={limit}"),
                path: format!(
                    "/api/search?q={}&limit={limit}&start={start}&end={end}",
                    encode(query)
                ),
            });
        }
    }
    cases.push(Case {
        label: "tag values resource.service.name (v2)".into(),
        path: format!("/api/v2/search/tag/resource.service.name/values?start={start}&end={end}"),
    });
    cases.push(Case {
        label: "{ } | rate() by (resource.service.name), 1 h, step 60s".into(),
        path: format!(
            "/api/metrics/query_range?q={}&start={start}&end={end}&step=60s",
            encode("{ } | rate() by (resource.service.name)")
        ),
    });
    cases
}

/// `metrics.inspectedBytes` of a search response (a string, as Tempo writes 64-bit values).
fn inspected_bytes(body: &serde_json::Value) -> Option<u64> {
    match &body["metrics"]["inspectedBytes"] {
        serde_json::Value::String(text) => text.parse().ok(),
        serde_json::Value::Number(number) => number.as_u64(),
        _ => None,
    }
}

/// What a response found, for the report: traces for a search, values for tag values,
/// series for a metrics query.
fn found(body: &serde_json::Value) -> usize {
    for key in ["traces", "tagValues", "series"] {
        if let Some(items) = body[key].as_array() {
            return items.len();
        }
    }
    0
}

#[tokio::main]
async fn main() {
    let total_spans = env_or("BENCH_SPANS", 5_000_000);
    let runs = env_or("BENCH_SEARCH_RUNS", 20) as usize;
    let reuse = std::env::var("BENCH_SEARCH_DATA").ok().map(PathBuf::from);
    let tempdir = tempfile::tempdir().unwrap();
    let data = reuse
        .clone()
        .unwrap_or_else(|| tempdir.path().to_path_buf());
    let mut server = start_server(&data, &[]);
    wait_ready(&server.api).await;

    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    if reuse.is_none() {
        let shape = LoadShape {
            total_spans,
            concurrency: env_or("BENCH_CONCURRENCY", 8),
            traces_per_request: env_or("BENCH_TRACES_PER_REQUEST", 50),
            spread: HOUR,
            requests_per_second: 0,
        };
        let sent = load(&server.grpc, shape).await;
        println!(
            "loaded {} spans ({} traces) in {:.1} s",
            sent.spans,
            sent.trace_ids.len(),
            sent.elapsed.as_secs_f64()
        );
        wait_flushed(&server.api, Duration::from_secs(600)).await;
    }
    let stored = dir_bytes(&data.join("blocks"));
    println!(
        "store: {:.1} MiB of blocks under {}",
        stored as f64 / (1 << 20) as f64,
        data.display()
    );

    // The hour the load covered, plus a minute of slack either side.
    let end = now.as_secs() + 60;
    let start = end - HOUR.as_secs() - 120;
    let http = reqwest::Client::new();
    println!(
        "{:<72} {:>9} {:>9} {:>9} {:>12} {:>8}",
        "query", "first ms", "p50 ms", "p99 ms", "MB/s (p50)", "found"
    );
    for case in cases(start, end) {
        let mut times = Vec::with_capacity(runs);
        let mut first = Duration::ZERO;
        let mut inspected = None;
        let mut count = 0;
        for run in 0..runs.max(1) {
            let started = Instant::now();
            let response = http
                .get(format!("{}{}", server.api, case.path))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let text = response.text().await.unwrap();
            let elapsed = started.elapsed();
            assert!(status.is_success(), "{}: {status}: {text}", case.label);
            let body: serde_json::Value = serde_json::from_str(&text).unwrap();
            inspected = inspected_bytes(&body);
            count = found(&body);
            if run == 0 {
                first = elapsed;
            }
            times.push(elapsed);
        }
        times.sort();
        let p50 = percentile(&times, 0.5);
        let rate = inspected
            .map(|bytes| format!("{:.0}", bytes as f64 / p50.as_secs_f64() / 1e6))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<72} {:>9.1} {:>9.1} {:>9.1} {:>12} {:>8}",
            case.label,
            first.as_secs_f64() * 1000.0,
            p50.as_secs_f64() * 1000.0,
            percentile(&times, 0.99).as_secs_f64() * 1000.0,
            rate,
            count
        );
    }
    stop(&mut server);
    if reuse.is_none() && std::env::var_os("BENCH_KEEP_DATA").is_some() {
        let kept = tempdir.keep();
        println!(
            "data kept in {} (BENCH_SEARCH_DATA reuses it)",
            kept.display()
        );
    }
}
