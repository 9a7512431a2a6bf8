//! Signals: SIGTERM and SIGINT cancel the root token once; SIGHUP asks listeners to
//! reload their TLS certificates.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT.
pub fn spawn_shutdown_listener(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
        token.cancel();
    });
    Ok(())
}

/// Takes SIGHUP over from its default action (terminate), so `systemctl reload` never stops
/// a process, TLS or not; each TLS listener watches SIGHUP itself
/// ([`reload_requests`]) and reloads its certificates.
pub fn spawn_reload_logger() -> std::io::Result<()> {
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!(
                signal = "SIGHUP",
                "reload requested: TLS certificates are re-read; other settings take a restart"
            );
        }
    });
    Ok(())
}

/// SIGHUP deliveries, for one reloader. Each caller gets its own stream and every stream
/// sees every signal, so each TLS listener reloads its own files.
pub fn reload_requests() -> std::io::Result<tokio::signal::unix::Signal> {
    signal(SignalKind::hangup())
}
