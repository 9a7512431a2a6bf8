//! Process plumbing shared by both binaries: logging, systemd notifications, signals.

pub mod logging;
pub mod signals;
pub mod systemd;

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

use crate::config::LogConfig;

/// What both binaries do after their configuration is loaded: install logging, start
/// the async runtime, cancel on SIGTERM/SIGINT, take over SIGHUP (TLS reload), run the service until it returns, and
/// turn the outcome into an exit code with the error on stderr and in the log.
pub fn run_service<F, Fut, E>(name: &str, log: &LogConfig, service: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    if let Err(error) = logging::init(log) {
        eprintln!("{name}: {error}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{name}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        if let Err(error) = signals::spawn_shutdown_listener(shutdown.clone())
            .and_then(|()| signals::spawn_reload_logger())
        {
            return Err(format!("installing signal handlers: {error}"));
        }
        service(shutdown).await.map_err(|error| error.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(service = name, %error, "service failed");
            eprintln!("{name}: {error}");
            ExitCode::FAILURE
        }
    }
}
