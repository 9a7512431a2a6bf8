//! spoor-collector: parse flags, load config, run. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spoor::config::collector::load_collector_config;
use tokio_util::sync::CancellationToken;

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
    if let Err(error) = spoor::runtime::logging::init(&config.telemetry.logs) {
        eprintln!("spoor-collector: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("spoor-collector: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        spoor::runtime::signals::spawn_shutdown_listener(shutdown.clone())
            .map_err(|e| anyhow::anyhow!("installing signal handlers: {e}"))?;
        spoor::collector::run(config, shutdown).await?;
        anyhow::Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "spoor-collector failed");
            eprintln!("spoor-collector: {error:#}");
            ExitCode::FAILURE
        }
    }
}
