//! `memory_limiter`: refuses new data (RESOURCE_EXHAUSTED / 429) while the process uses
//! more memory than the soft limit (`limit - spike_limit`).
//!
//! Memory is the process's resident set size, read from `/proc/self/status` (`VmRSS`)
//! every `check_interval`, not an estimate of bytes in flight: RSS also sees what the
//! accounting would miss (allocator overhead, decoded protobuf being larger than the
//! wire size, buffers in tonic and hyper). The price is that freed memory the allocator
//! keeps for reuse still counts, so after a spike the limiter can keep refusing until
//! the allocator returns pages to the OS. Percent limits are of the host's memory or of
//! the cgroup's `memory.max`, whichever is smaller.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::collector::{MemoryLimit, MemoryLimiterConfig};
use crate::receiver::ConsumeError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum MemoryLimiterError {
    #[error("the process's memory use cannot be read from /proc/self/status")]
    NoRss,
    #[error("the host's memory size cannot be read for limit_percentage")]
    NoTotalMemory,
}

/// One limiter, shared by every pipeline that lists it (as in the OpenTelemetry
/// Collector).
#[derive(Debug)]
pub(crate) struct MemoryLimiter {
    id: String,
    soft_limit_bytes: u64,
    hard_limit_bytes: u64,
    check_interval: Duration,
    over_limit: AtomicBool,
    last_rss: AtomicU64,
    /// A measurement function, replaced in tests.
    measure: fn() -> Option<u64>,
}

impl MemoryLimiter {
    pub(crate) fn new(
        id: String,
        config: &MemoryLimiterConfig,
    ) -> Result<Arc<MemoryLimiter>, MemoryLimiterError> {
        Self::with_measure(id, config, resident_bytes, total_memory_bytes())
    }

    fn with_measure(
        id: String,
        config: &MemoryLimiterConfig,
        measure: fn() -> Option<u64>,
        total_memory: Option<u64>,
    ) -> Result<Arc<MemoryLimiter>, MemoryLimiterError> {
        let (hard_limit_bytes, spike_bytes) = match config.limit {
            MemoryLimit::Absolute {
                limit_bytes,
                spike_bytes,
            } => (limit_bytes, spike_bytes),
            MemoryLimit::Percentage {
                limit_percent,
                spike_percent,
            } => {
                let total = total_memory.ok_or(MemoryLimiterError::NoTotalMemory)?;
                (
                    total / 100 * u64::from(limit_percent),
                    total / 100 * u64::from(spike_percent),
                )
            }
        };
        let rss = measure().ok_or(MemoryLimiterError::NoRss)?;
        let limiter = MemoryLimiter {
            id,
            soft_limit_bytes: hard_limit_bytes.saturating_sub(spike_bytes),
            hard_limit_bytes,
            check_interval: config.check_interval,
            over_limit: AtomicBool::new(false),
            last_rss: AtomicU64::new(rss),
            measure,
        };
        limiter.update(rss);
        info!(
            processor = %limiter.id,
            hard_limit_bytes,
            soft_limit_bytes = limiter.soft_limit_bytes,
            rss_bytes = rss,
            "memory limiter configured"
        );
        Ok(Arc::new(limiter))
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Measures every `check_interval` until cancelled.
    pub(crate) fn spawn_checker(self: &Arc<Self>, cancel: CancellationToken) {
        let limiter = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(limiter.check_interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                if let Some(rss) = (limiter.measure)() {
                    limiter.update(rss);
                }
            }
        });
    }

    fn update(&self, rss: u64) {
        self.last_rss.store(rss, Ordering::Relaxed);
        let over = rss > self.soft_limit_bytes;
        let was_over = self.over_limit.swap(over, Ordering::Relaxed);
        if over && !was_over {
            warn!(
                processor = %self.id,
                rss_bytes = rss,
                soft_limit_bytes = self.soft_limit_bytes,
                hard_limit_bytes = self.hard_limit_bytes,
                "memory usage is above the soft limit; refusing data"
            );
        } else if !over && was_over {
            info!(
                processor = %self.id,
                rss_bytes = rss,
                soft_limit_bytes = self.soft_limit_bytes,
                "memory usage is back below the soft limit; accepting data"
            );
        }
    }

    /// `Ok` while memory is below the soft limit; a retryable refusal otherwise.
    pub(crate) fn admit(&self) -> Result<(), ConsumeError> {
        if self.over_limit.load(Ordering::Relaxed) {
            return Err(ConsumeError::Full {
                what: "collector memory",
                // By the next measurement the picture may have changed.
                retry_after: self.check_interval.max(Duration::from_secs(1)),
            });
        }
        Ok(())
    }
}

/// The process's resident set size in bytes (`VmRSS` in `/proc/self/status`).
pub(crate) fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    kib_field(&status, "VmRSS:")
}

/// The memory available to this process: the host's `MemTotal`, or the cgroup v2
/// `memory.max` (v1 `memory.limit_in_bytes`) when that is smaller.
fn total_memory_bytes() -> Option<u64> {
    let host = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|meminfo| kib_field(&meminfo, "MemTotal:"));
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|path| std::fs::read_to_string(path).ok())
    .find_map(|text| text.trim().parse::<u64>().ok());
    match (host, cgroup) {
        (Some(host), Some(cgroup)) => Some(host.min(cgroup)),
        (host, cgroup) => host.or(cgroup),
    }
}

fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(name))?;
    let kib: u64 = line[name.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    static FAKE_RSS: AtomicU64 = AtomicU64::new(0);

    fn fake_rss() -> Option<u64> {
        Some(FAKE_RSS.load(Ordering::Relaxed))
    }

    #[test]
    fn refuses_above_the_soft_limit_only() {
        FAKE_RSS.store(100, Ordering::Relaxed);
        let config = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit: MemoryLimit::Absolute {
                limit_bytes: 1000,
                spike_bytes: 200,
            },
        };
        let limiter = MemoryLimiter::with_measure("memory_limiter".into(), &config, fake_rss, None)
            .expect("limiter");
        assert!(limiter.admit().is_ok());
        limiter.update(801);
        assert!(matches!(
            limiter.admit(),
            Err(ConsumeError::Full {
                what: "collector memory",
                ..
            })
        ));
        limiter.update(800);
        assert!(limiter.admit().is_ok());
    }

    #[test]
    fn percentages_are_of_total_memory() {
        let config = MemoryLimiterConfig {
            check_interval: Duration::from_secs(1),
            limit: MemoryLimit::Percentage {
                limit_percent: 50,
                spike_percent: 10,
            },
        };
        FAKE_RSS.store(0, Ordering::Relaxed);
        let limiter = MemoryLimiter::with_measure("m".into(), &config, fake_rss, Some(10_000))
            .expect("limiter");
        assert_eq!(
            (limiter.hard_limit_bytes, limiter.soft_limit_bytes),
            (5_000, 4_000)
        );
        assert!(MemoryLimiter::with_measure("m".into(), &config, fake_rss, None).is_err());
    }

    #[test]
    fn reads_this_process() {
        assert!(resident_bytes().is_some_and(|rss| rss > 0));
        assert_eq!(
            kib_field("VmRSS:\t  2048 kB\n", "VmRSS:"),
            Some(2048 * 1024)
        );
    }
}
