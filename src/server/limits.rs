//! Per-tenant ingest limits: a token bucket of request bytes per tenant (Tempo's
//! `ingestion_rate_limit_bytes` / `ingestion_burst_size_bytes`). A request over the
//! limit is refused as a whole, before anything is written, with an error naming the
//! limit: nothing is acknowledged and then dropped.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::{LimitsConfig, TenantLimits};
use crate::tenant::TenantId;

/// Why a request was refused, in words for the sender.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "tenant {tenant} is over its ingest rate limit (limits.ingestion_rate = {rate} bytes/s, \
     burst {burst} bytes; this request: {request} bytes)"
)]
pub struct RateLimited {
    pub tenant: TenantId,
    pub rate: u64,
    pub burst: u64,
    pub request: u64,
    /// When the bucket holds enough for the request again (or, for a request larger
    /// than the burst, one second: it can never pass and the sender must split it).
    pub retry_after: Duration,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

#[derive(Debug)]
pub struct IngestLimiter {
    config: LimitsConfig,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

impl IngestLimiter {
    pub fn new(config: LimitsConfig) -> IngestLimiter {
        IngestLimiter {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The limits of `tenant`.
    pub fn for_tenant(&self, tenant: &TenantId) -> &TenantLimits {
        self.config.for_tenant(tenant)
    }

    /// Takes `bytes` from the tenant's bucket, or says why it cannot.
    pub fn admit(&self, tenant: &TenantId, bytes: u64, now: Instant) -> Result<(), RateLimited> {
        let TenantLimits {
            ingestion_rate: Some(rate),
            ingestion_burst: burst,
            ..
        } = *self.config.for_tenant(tenant)
        else {
            return Ok(());
        };
        let mut buckets = self.buckets.lock();
        let bucket = buckets.entry(tenant.clone()).or_insert(Bucket {
            tokens: burst as f64,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate as f64).min(burst as f64);
        bucket.refilled = now;
        let wanted = bytes as f64;
        if wanted <= bucket.tokens {
            bucket.tokens -= wanted;
            return Ok(());
        }
        let retry_after = if bytes > burst {
            Duration::from_secs(1)
        } else {
            Duration::from_secs_f64((wanted - bucket.tokens) / rate as f64)
        };
        Err(RateLimited {
            tenant: tenant.clone(),
            rate,
            burst,
            request: bytes,
            retry_after,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn limiter(rate: Option<u64>, burst: u64, acme: Option<TenantLimits>) -> IngestLimiter {
        let mut per_tenant = BTreeMap::new();
        if let Some(acme) = acme {
            per_tenant.insert(TenantId::new("acme").unwrap(), acme);
        }
        IngestLimiter::new(LimitsConfig {
            defaults: TenantLimits {
                ingestion_rate: rate,
                ingestion_burst: burst,
                max_attribute_value_length: None,
                max_live_traces: None,
            },
            per_tenant,
        })
    }

    #[test]
    fn the_burst_passes_then_the_rate_refills() {
        let limiter = limiter(Some(1000), 3000, None);
        let tenant = TenantId::single();
        let start = Instant::now();
        limiter.admit(&tenant, 3000, start).unwrap();
        let refused = limiter.admit(&tenant, 500, start).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert!(refused
            .to_string()
            .contains("limits.ingestion_rate = 1000 bytes/s"));
        limiter
            .admit(&tenant, 500, start + Duration::from_millis(500))
            .unwrap();
        // Refill stops at the burst.
        let later = start + Duration::from_secs(60);
        limiter.admit(&tenant, 3000, later).unwrap();
        assert!(limiter.admit(&tenant, 1, later).is_err());
    }

    #[test]
    fn tenants_have_their_own_buckets_and_overrides() {
        let acme = TenantLimits {
            ingestion_rate: None,
            ingestion_burst: 0,
            max_attribute_value_length: None,
            max_live_traces: None,
        };
        let limiter = limiter(Some(100), 100, Some(acme));
        let now = Instant::now();
        let other = TenantId::new("other").unwrap();
        limiter.admit(&TenantId::single(), 100, now).unwrap();
        limiter.admit(&other, 100, now).unwrap();
        assert!(limiter.admit(&other, 1, now).is_err());
        // acme is unlimited.
        limiter
            .admit(&TenantId::new("acme").unwrap(), 1 << 30, now)
            .unwrap();
    }

    #[test]
    fn a_request_larger_than_the_burst_is_refused_without_draining_the_bucket() {
        let limiter = limiter(Some(100), 100, None);
        let tenant = TenantId::single();
        let now = Instant::now();
        let refused = limiter.admit(&tenant, 101, now).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(1));
        limiter.admit(&tenant, 100, now).unwrap();
    }

    #[test]
    fn no_rate_means_unlimited() {
        let limiter = limiter(None, 0, None);
        limiter
            .admit(&TenantId::single(), u64::MAX, Instant::now())
            .unwrap();
    }
}
