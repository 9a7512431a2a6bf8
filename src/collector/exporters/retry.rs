//! `retry_on_failure`: exponential backoff with jitter, as the OpenTelemetry Collector's
//! `configretry` does it, honouring the delay the backend asks for.
//!
//! Each wait is `interval × (1 ± randomization_factor)`, the interval growing by
//! `multiplier` up to `max_interval`. When the backend names a delay (gRPC `RetryInfo`,
//! HTTP `Retry-After`) the wait is at least that long. Permanent errors are not retried.
//! Retrying stops once the next wait would end after `max_elapsed_time` (0: never).

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{ExportError, Exported, Exporter, Payload};
use crate::config::collector::RetryConfig;
use crate::tenant::TenantId;

/// How a batch's export ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    Sent(Exported),
    /// Refused for good (or retries disabled): the data is dropped.
    Permanent(ExportError),
    /// Still failing after `max_elapsed_time`.
    Exhausted(ExportError),
    /// Shutdown deadline.
    Cancelled,
    /// The destination was withdrawn (a `loadbalancing` backend whose address left the
    /// resolver's answer) while waiting to retry: the batch goes elsewhere.
    Withdrawn,
}

/// The backoff sequence.
#[derive(Debug)]
pub(crate) struct Backoff {
    config: RetryConfig,
    interval: Duration,
}

impl Backoff {
    pub(crate) fn new(config: &RetryConfig) -> Backoff {
        Backoff {
            config: config.clone(),
            interval: config.initial_interval,
        }
    }

    /// The next wait, given a random number in `[0, 1)`.
    pub(crate) fn next_with(&mut self, random: f64) -> Duration {
        let factor = self.config.randomization_factor;
        let current = self.interval.as_secs_f64();
        let jittered = current * (1.0 - factor + 2.0 * factor * random);
        let next = (current * self.config.multiplier).min(self.config.max_interval.as_secs_f64());
        self.interval = Duration::from_secs_f64(next.max(0.0));
        Duration::from_secs_f64(jittered.max(0.0))
    }

    pub(crate) fn next(&mut self) -> Duration {
        self.next_with(random_unit())
    }
}

/// A number in `[0, 1)` from the OS's random source (through UUID v4), good enough for
/// jitter and avoiding a dependency.
fn random_unit() -> f64 {
    let bits = (uuid::Uuid::new_v4().as_u128() >> 75) as u64; // 53 random bits
    bits as f64 / (1u64 << 53) as f64
}

/// Exports with retries until success, a permanent error, `max_elapsed_time`, or
/// `cancel`; `attempted` hears whether each attempt succeeded. `withdrawn` ends only
/// the waits between attempts, never an attempt, so that a batch the backend is taking
/// is not also sent elsewhere.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn send_with_retry(
    exporter: &Exporter,
    tenant: &TenantId,
    payload: &Payload,
    num_spans: usize,
    config: &RetryConfig,
    cancel: &CancellationToken,
    withdrawn: Option<&CancellationToken>,
    exporter_id: &str,
    attempted: impl Fn(bool),
) -> Outcome {
    let started = Instant::now();
    let mut backoff = Backoff::new(config);
    loop {
        let attempt = tokio::select! {
            biased;
            _ = cancel.cancelled() => return Outcome::Cancelled,
            attempt = exporter.export(tenant, payload, num_spans) => attempt,
        };
        attempted(attempt.is_ok());
        let export_error = match attempt {
            Ok(exported) => return Outcome::Sent(exported),
            Err(export_error) => export_error,
        };
        if !export_error.retryable || !config.enabled {
            return Outcome::Permanent(export_error);
        }
        let backoff_wait = backoff.next();
        let wait = export_error
            .throttle
            .map_or(backoff_wait, |throttle| throttle.max(backoff_wait));
        if let Some(max_elapsed) = config.max_elapsed_time {
            if started.elapsed() + wait > max_elapsed {
                return Outcome::Exhausted(export_error);
            }
        }
        // As the OpenTelemetry Collector does: one info line per retry, so an outage is
        // visible without flooding the journal at the default level.
        info!(
            exporter = exporter_id,
            tenant = %tenant,
            num_spans,
            error = %export_error.message,
            retry_in = ?wait,
            "export failed; will retry"
        );
        let withdrawn = async {
            match withdrawn {
                Some(withdrawn) => withdrawn.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Outcome::Cancelled,
            () = withdrawn => return Outcome::Withdrawn,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(factor: f64) -> RetryConfig {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            randomization_factor: factor,
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Some(Duration::from_secs(300)),
        }
    }

    #[test]
    fn grows_by_the_multiplier_up_to_the_maximum() {
        let mut backoff = Backoff::new(&config(0.0));
        let waits: Vec<u64> = (0..7)
            .map(|_| backoff.next_with(0.3).as_millis() as u64)
            .collect();
        assert_eq!(waits, vec![5000, 7500, 11250, 16875, 25312, 30000, 30000]);
    }

    #[test]
    fn jitter_stays_within_the_randomization_factor() {
        let mut low = Backoff::new(&config(0.5));
        assert_eq!(low.next_with(0.0), Duration::from_millis(2500));
        let mut high = Backoff::new(&config(0.5));
        assert!(high.next_with(0.999_999) < Duration::from_millis(7500));
        for _ in 0..100 {
            let unit = random_unit();
            assert!((0.0..1.0).contains(&unit));
        }
    }
}
