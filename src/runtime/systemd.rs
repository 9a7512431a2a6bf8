//! The systemd notification protocol: `READY=1` once the service can do its job,
//! `WATCHDOG=1` while it demonstrably makes progress, `STOPPING=1` on shutdown.
//! Outside systemd (no `NOTIFY_SOCKET`) every call is a no-op.

use std::future::Future;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "systemd notification failed");
    }
}

pub fn notify_ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn notify_stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

pub fn notify_status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Pings the watchdog only while `probe` succeeds within half the watchdog interval,
/// so a stuck pipeline (not just a live process) gets the unit restarted.
pub fn spawn_watchdog<F, Fut>(
    probe: F,
    cancel: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let interval = sd_notify::watchdog_enabled()?;
    let period = interval / 2;
    tracing::info!(interval = ?interval, "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        loop {
            let healthy = tokio::time::timeout(period.max(Duration::from_millis(10)), probe())
                .await
                .unwrap_or(false);
            if healthy {
                send(&[NotifyState::Watchdog]);
            } else {
                tracing::warn!("watchdog probe failed; not pinging systemd");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }))
}
