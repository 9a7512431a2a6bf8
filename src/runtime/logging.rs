//! Logging: journald with structured fields under systemd (`JOURNAL_STREAM` set),
//! human-readable text on stderr otherwise, or JSON lines when asked.

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("log.level: {0}")]
    Filter(String),
    #[error("journald is not reachable: {0}")]
    Journald(std::io::Error),
    #[error("a logger is already installed")]
    AlreadySet,
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides `log.level`.
pub fn init(config: &LogConfig) -> Result<(), LoggingError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(directives),
        _ => EnvFilter::try_new(&config.level),
    }
    .map_err(|e| LoggingError::Filter(e.to_string()))?;
    let format = match config.format {
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        other => other,
    };
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Journald => {
            // Fields are journal fields uppercased (tenant → TENANT), so
            // `journalctl -u spoor-server TENANT=acme` works.
            let layer = tracing_journald::layer()
                .map_err(LoggingError::Journald)?
                .with_field_prefix(None);
            registry.with(layer).try_init()
        }
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text | LogFormat::Auto => registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    }
    .map_err(|_| LoggingError::AlreadySet)
}
