//! spoor-loadgen: sends the project's realistic checkout traces (see `spoor::loadgen`)
//! to an OTLP gRPC endpoint and prints what it sent as one JSON object, including the
//! service-graph edges the traffic must produce.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use spoor::loadgen::{self, LoadShape, CALL_GRAPH, SPANS_PER_TRACE};

/// Load generator for spoor-server and spoor-collector (and any OTLP gRPC receiver).
#[derive(Debug, Parser)]
#[command(name = "spoor-loadgen", version)]
struct Args {
    /// OTLP gRPC endpoint, e.g. http://127.0.0.1:4317.
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    endpoint: String,
    /// Traces to send (each has 10 spans over five services).
    #[arg(long, default_value_t = 1000)]
    traces: u64,
    /// Concurrent gRPC clients.
    #[arg(long, default_value_t = 4)]
    concurrency: u64,
    /// Traces per export request.
    #[arg(long, default_value_t = 10)]
    traces_per_request: u64,
    /// Export requests per second over all clients; 0 sends as fast as accepted.
    #[arg(long, default_value_t = 0)]
    requests_per_second: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let shape = LoadShape {
        total_spans: args.traces * SPANS_PER_TRACE,
        concurrency: args.concurrency,
        traces_per_request: args.traces_per_request,
        spread: Duration::ZERO,
        requests_per_second: args.requests_per_second,
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("spoor-loadgen: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match runtime.block_on(loadgen::run(&args.endpoint, shape)) {
        Ok(result) => result,
        Err(error) => {
            eprintln!("spoor-loadgen: {error}");
            return ExitCode::FAILURE;
        }
    };
    let traces = result.trace_ids.len() as u64;
    let edges: Vec<serde_json::Value> = CALL_GRAPH
        .iter()
        .map(|(client, server, connection_type, fails_with_trace)| {
            serde_json::json!({
                "client": client,
                "server": server,
                "connection_type": connection_type,
                "requests": traces,
                "failed": if *fails_with_trace { result.failed_traces } else { 0 },
            })
        })
        .collect();
    let summary = serde_json::json!({
        "traces": traces,
        "failed_traces": result.failed_traces,
        "spans": result.spans,
        "seconds": result.elapsed.as_secs_f64(),
        "edges": edges,
    });
    println!("{summary}");
    ExitCode::SUCCESS
}
