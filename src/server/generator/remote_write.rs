//! Prometheus remote write (protocol 1.0: snappy-compressed protobuf `WriteRequest`)
//! of the generator's series, every `interval`, to each configured endpoint, one
//! request per tenant (so `X-Scope-OrgID` can name it).
//!
//! The series are cumulative counters and histograms, so a push that fails for good
//! loses resolution, not counts: the next push carries the totals. A push is retried
//! with backoff on network errors, 429 and 5xx until the next one is due; other 4xx
//! answers mean the request itself is wrong and are not retried.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest_client as reqwest;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Generator;
use crate::config::{RemoteWriteConfig, RemoteWriteEndpoint};
use crate::server::metrics::ServerMetrics;
use crate::tenant::{TenantId, TENANT_HEADER};

/// `prometheus.WriteRequest` (prompb/remote.proto), the fields protocol 1.0 uses.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Sorted by name, `__name__` among them.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Starts pushing every `config.interval` until `cancel`, then pushes once more so the
/// last counts reach Prometheus. `None` when no endpoint is configured.
pub fn spawn(
    generator: Generator,
    config: RemoteWriteConfig,
    metrics: Arc<ServerMetrics>,
    cancel: CancellationToken,
) -> Option<JoinHandle<()>> {
    if config.endpoints.is_empty() {
        return None;
    }
    let client = match reqwest::Client::builder().timeout(config.timeout).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "remote write disabled: cannot build the HTTP client");
            return None;
        }
    };
    let instance = hostname();
    Some(tokio::spawn(async move {
        let pusher = Pusher {
            client,
            config,
            metrics,
            instance,
        };
        let mut ticker = tokio::time::interval(pusher.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            let last = tokio::select! {
                _ = cancel.cancelled() => true,
                _ = ticker.tick() => false,
            };
            // The final push gets one attempt: shutdown must not wait on a dead receiver.
            let deadline = if last {
                Duration::ZERO
            } else {
                pusher.config.interval
            };
            pusher.push_all(&generator, deadline).await;
            if last {
                break;
            }
        }
    }))
}

struct Pusher {
    client: reqwest::Client,
    config: RemoteWriteConfig,
    metrics: Arc<ServerMetrics>,
    instance: String,
}

impl Pusher {
    async fn push_all(&self, generator: &Generator, retry_for: Duration) {
        let snapshot = generator.snapshot();
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as i64;
        for (tenant, samples) in snapshot {
            if samples.is_empty() {
                continue;
            }
            let config = self.config.clone();
            let instance = self.instance.clone();
            let encoded = tokio::task::spawn_blocking(move || {
                let request = write_request(&config, &instance, &tenant, &samples, timestamp);
                let series = request.timeseries.len() as u64;
                (tenant, series, compress(&request))
            })
            .await;
            let (tenant, series, body) = match encoded {
                Ok((tenant, series, Ok(body))) => (tenant, series, body),
                Ok((tenant, _, Err(error))) => {
                    tracing::error!(tenant = %tenant, %error, "remote write: compressing the request failed");
                    continue;
                }
                Err(error) => {
                    tracing::error!(%error, "remote write: encoding task failed");
                    continue;
                }
            };
            for (index, endpoint) in self.config.endpoints.iter().enumerate() {
                self.push(index, endpoint, &tenant, series, body.clone(), retry_for)
                    .await;
            }
        }
    }

    async fn push(
        &self,
        index: usize,
        endpoint: &RemoteWriteEndpoint,
        tenant: &TenantId,
        series: u64,
        body: bytes::Bytes,
        retry_for: Duration,
    ) {
        let started = tokio::time::Instant::now();
        let mut backoff = Duration::from_millis(250);
        loop {
            let mut request = self
                .client
                .post(&endpoint.url)
                .header("Content-Encoding", "snappy")
                .header("Content-Type", "application/x-protobuf")
                .header(
                    "User-Agent",
                    concat!("spoor-server/", env!("CARGO_PKG_VERSION")),
                )
                .header("X-Prometheus-Remote-Write-Version", "0.1.0");
            if endpoint.send_tenant_header {
                request = request.header(TENANT_HEADER, tenant.as_str());
            }
            for (name, value) in &endpoint.headers {
                request = request.header(name, value);
            }
            let outcome = request.body(body.clone()).send().await;
            let retryable = match outcome {
                Ok(response) if response.status().is_success() => {
                    self.metrics.remote_write_sent(index, series);
                    return;
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    let retryable = status.is_server_error() || status.as_u16() == 429;
                    tracing::warn!(endpoint = index, tenant = %tenant, %status, body = %text.trim(), retryable, "remote write refused");
                    retryable
                }
                Err(error) => {
                    tracing::warn!(endpoint = index, tenant = %tenant, error = %error, "remote write failed");
                    true
                }
            };
            if !retryable || started.elapsed() + backoff >= retry_for {
                self.metrics.remote_write_failed(index, series);
                return;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

/// The request for one tenant: Prometheus' series names (`_total`, `_bucket` with `le`,
/// `_sum`, `_count`), labels sorted by name, empty-valued labels left out (Prometheus
/// treats them as absent), external labels and Tempo's `__metrics_gen_instance`.
pub(super) fn write_request(
    config: &RemoteWriteConfig,
    instance: &str,
    tenant: &TenantId,
    samples: &[super::registry::Sample],
    timestamp: i64,
) -> WriteRequest {
    let mut common: Vec<Label> = config
        .external_labels
        .iter()
        .map(|(name, value)| label(name, value))
        .collect();
    common.push(label("__metrics_gen_instance", instance));
    if let Some(name) = &config.inject_tenant_id_as {
        common.push(label(name, tenant.as_str()));
    }
    let mut timeseries = Vec::new();
    let mut series = |name: String, labels: &[(String, String)], le: Option<String>, value: f64| {
        let mut all: Vec<Label> = labels
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| label(name, value))
            .chain(common.iter().cloned())
            .chain(le.map(|le| label("le", &le)))
            .collect();
        all.push(label("__name__", &name));
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all.dedup_by(|a, b| a.name == b.name);
        timeseries.push(TimeSeries {
            labels: all,
            samples: vec![Sample { value, timestamp }],
        });
    };
    for sample in samples {
        sample.for_each_series(|suffix, le, value| {
            series(
                format!("{}{suffix}", sample.family.name),
                &sample.labels,
                le,
                value,
            );
        });
    }
    WriteRequest { timeseries }
}

fn label(name: &str, value: &str) -> Label {
    Label {
        name: name.to_owned(),
        value: value.to_owned(),
    }
}

/// Protobuf, then snappy's block format (not the framed one), as the protocol says.
pub(super) fn compress(request: &WriteRequest) -> Result<bytes::Bytes, snap::Error> {
    use prost::Message;
    let encoded = request.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&encoded)
        .map(bytes::Bytes::from)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "spoor-server".to_owned())
}
