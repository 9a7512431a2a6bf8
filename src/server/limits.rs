//! Per-tenant limits that need state: a token bucket of request bytes per tenant
//! (Tempo's `ingestion_rate_limit_bytes` / `ingestion_burst_size_bytes`) and a count of
//! running queries per tenant. A request over a limit is refused as a whole, before
//! anything is written or read, with an error naming the limit: nothing is acknowledged
//! and then dropped.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::config::{LimitsConfig, QueryConfig, TenantLimits};
use crate::error::{ErrorCode, ServiceError};
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

/// A query refused because its tenant already runs as many as it may.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "tenant {tenant} already runs {running} queries on this server \
     (limits.max_concurrent_queries = {max}); retry when one has finished"
)]
pub struct TooManyQueries {
    pub tenant: TenantId,
    pub running: usize,
    pub max: usize,
}

/// How long a client refused for concurrency should wait: queries take about a second.
const QUERY_RETRY_AFTER: Duration = Duration::from_secs(1);

impl ServiceError for TooManyQueries {
    fn error_code(&self) -> ErrorCode {
        ErrorCode::ResourceExhausted {
            retry_after: QUERY_RETRY_AFTER,
        }
    }
}

/// Counts the queries each tenant runs; refuses one over `limits.max_concurrent_queries`
/// instead of queueing it, so a tenant's burst of dashboard refreshes cannot take every
/// CPU from the others and Grafana shows why.
#[derive(Debug)]
pub struct QueryLimiter {
    config: LimitsConfig,
    running: Arc<Mutex<HashMap<TenantId, usize>>>,
}

/// A running query; dropping it ends the query for the count.
#[derive(Debug)]
pub struct QueryPermit {
    tenant: Option<TenantId>,
    running: Arc<Mutex<HashMap<TenantId, usize>>>,
}

impl Drop for QueryPermit {
    fn drop(&mut self) {
        let Some(tenant) = self.tenant.take() else {
            return;
        };
        let mut running = self.running.lock();
        if let Some(count) = running.get_mut(&tenant) {
            *count -= 1;
            if *count == 0 {
                running.remove(&tenant);
            }
        }
    }
}

impl QueryLimiter {
    pub fn new(config: LimitsConfig) -> QueryLimiter {
        QueryLimiter {
            config,
            running: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// `query.*` (`base`) with the overrides of `tenant`.
    pub fn query_config<'a>(
        &self,
        base: &'a QueryConfig,
        tenant: &TenantId,
    ) -> Cow<'a, QueryConfig> {
        let limits = self.config.for_tenant(tenant);
        if limits.max_search_duration.is_none() && limits.max_result_limit.is_none() {
            return Cow::Borrowed(base);
        }
        let mut config = base.clone();
        if let Some(max) = limits.max_search_duration {
            config.max_search_duration = max;
        }
        if let Some(max) = limits.max_result_limit {
            config.max_result_limit = max;
            config.default_result_limit = config.default_result_limit.min(max);
        }
        Cow::Owned(config)
    }

    /// Starts a query of `tenant`, or says why it may not run now.
    pub fn start(&self, tenant: &TenantId) -> Result<QueryPermit, TooManyQueries> {
        let Some(max) = self.config.for_tenant(tenant).max_concurrent_queries else {
            return Ok(QueryPermit {
                tenant: None,
                running: Arc::clone(&self.running),
            });
        };
        let mut running = self.running.lock();
        let count = running.entry(tenant.clone()).or_insert(0);
        if *count >= max {
            return Err(TooManyQueries {
                tenant: tenant.clone(),
                running: *count,
                max,
            });
        }
        *count += 1;
        Ok(QueryPermit {
            tenant: Some(tenant.clone()),
            running: Arc::clone(&self.running),
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
                ..TenantLimits::default()
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
        let acme = TenantLimits::default();
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

    #[test]
    fn queries_over_the_tenant_limit_are_refused_until_one_ends() {
        let acme = TenantId::new("acme").unwrap();
        let limiter = QueryLimiter::new(LimitsConfig {
            defaults: TenantLimits::default(),
            per_tenant: BTreeMap::from([(
                acme.clone(),
                TenantLimits {
                    max_concurrent_queries: Some(2),
                    ..TenantLimits::default()
                },
            )]),
        });
        let first = limiter.start(&acme).unwrap();
        let _second = limiter.start(&acme).unwrap();
        let refused = limiter.start(&acme).unwrap_err();
        assert!(refused
            .to_string()
            .contains("runs 2 queries on this server (limits.max_concurrent_queries = 2)"));
        assert_eq!(
            refused.error_code().http(),
            http::StatusCode::TOO_MANY_REQUESTS
        );
        // Other tenants are not limited by default.
        let others: Vec<_> = (0..10)
            .map(|_| limiter.start(&TenantId::single()).unwrap())
            .collect();
        drop(first);
        limiter.start(&acme).unwrap();
        drop(others);
        assert!(limiter.running.lock().get(&TenantId::single()).is_none());
    }
}
