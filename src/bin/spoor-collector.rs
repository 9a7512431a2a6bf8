//! spoor-collector: parse flags, load config, run. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spoor::config::collector::load_collector_config;

// Same allocator as the server: protobuf decoding allocates many small objects across
// threads, where glibc malloc spends a third of the CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// OpenTelemetry-Collector-compatible traces pipeline: OTLP in, batching and memory
/// limits, OTLP out with retries and a persistent queue.
#[derive(Debug, Parser)]
#[command(name = "spoor-collector", version)]
struct Args {
    /// YAML config in the OpenTelemetry Collector's shape (/etc/spoor/collector.yaml when
    /// installed from the package). Without it, the built-in default runs: OTLP on
    /// 127.0.0.1:4317/4318 → batch → a spoor-server on 127.0.0.1:4319, queued under
    /// ./data/queue.
    #[arg(long, short = 'c', env = "SPOOR_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration (file and environment) and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load_collector_config(args.config.as_deref()) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("spoor-collector: invalid configuration:\n{errors}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        for warning in &config.warnings {
            eprintln!("spoor-collector: warning: {warning}");
        }
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let log = config.telemetry.logs.clone();
    spoor::runtime::run_service("spoor-collector", &log, move |shutdown| {
        spoor::collector::run(config, shutdown)
    })
}
