//! spoor-server: parse flags, load config, run. No logic lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spoor::config::{load_server_config, ServerCliOverrides};

// glibc malloc spent over a third of ingest CPU in allocation and consolidation under
// the many small, cross-thread allocations of protobuf decoding; mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tempo-compatible trace store: OTLP in, Parquet blocks on object storage, Tempo API out.
#[derive(Debug, Parser)]
#[command(name = "spoor-server", version)]
struct Args {
    /// YAML config file (/etc/spoor/server.yaml when installed from the package).
    #[arg(long, short = 'c', env = "SPOOR_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the configuration (file, environment, flags) and exit.
    #[arg(long)]
    check_config: bool,
    /// Data directory: sets wal.path to DIR/wal and storage.local.path to DIR/blocks.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Overrides api.listen_address.
    #[arg(long)]
    api_listen_address: Option<String>,
    /// Overrides otlp.grpc.listen_address.
    #[arg(long)]
    otlp_grpc_listen_address: Option<String>,
    /// Overrides otlp.http.listen_address.
    #[arg(long)]
    otlp_http_listen_address: Option<String>,
    /// Overrides log.level (an env-filter directive such as `info` or `spoor=debug`).
    #[arg(long)]
    log_level: Option<String>,
    /// Overrides log.format: auto, text, json or journald.
    #[arg(long)]
    log_format: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let overrides = ServerCliOverrides {
        data_dir: args.data_dir,
        api_listen_address: args.api_listen_address,
        otlp_grpc_listen_address: args.otlp_grpc_listen_address,
        otlp_http_listen_address: args.otlp_http_listen_address,
        log_level: args.log_level,
        log_format: args.log_format,
    };
    let config = match load_server_config(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("spoor-server: invalid configuration:\n{errors}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    let log = config.log.clone();
    spoor::runtime::run_service("spoor-server", &log, move |shutdown| {
        spoor::server::run(config, shutdown)
    })
}
