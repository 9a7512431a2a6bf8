//! The metrics generator: service graphs and span metrics derived from the spans
//! spoor-server stores, with Tempo's names and labels so Grafana's service map and
//! Tempo dashboards work unchanged (tempo-api.md §6).
//!
//! Ingest hands every acknowledged request to [`Generator::submit`], which never blocks:
//! the spans go through a bounded queue to one `spoor-generator` thread, and when the
//! queue is full they are left out of the metrics (counted in
//! `spoor_generator_dropped_spans_total{reason="queue_full"}`), never out of storage.
//! The series are exposed on the API's `/metrics` (with a `tenant` label, so tenants never
//! collide in one exposition) and, when configured, remote-written to Prometheus by
//! [`remote_write`].

mod registry;
pub mod remote_write;
mod service_graphs;
mod span_metrics;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use self::registry::{Sample, SampleValue, SeriesBudget};
use self::service_graphs::ServiceGraphs;
use self::span_metrics::SpanMetrics;
use crate::config::{GeneratorConfig, GeneratorTenantConfig};
use crate::otlp::{count_spans, OtlpKeyValue, OtlpResourceSpans, OtlpSpan, OtlpValue};
use crate::server::metrics::ServerMetrics;
use crate::tenant::TenantId;

/// How often stale series are looked for; staleness is measured in minutes, so this
/// only bounds how long a stale series lingers past `stale_after`.
const STALE_SWEEP_PERIOD: Duration = Duration::from_secs(10);

enum Job {
    Spans {
        tenant: TenantId,
        resource_spans: Vec<OtlpResourceSpans>,
    },
    Stop,
}

/// Handle to the generator; cheap to clone.
#[derive(Debug, Clone)]
pub struct Generator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    tx: SyncSender<Job>,
    state: Mutex<State>,
    config: Arc<GeneratorConfig>,
    metrics: Arc<ServerMetrics>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Spans { .. } => "Spans",
            Job::Stop => "Stop",
        })
    }
}

/// Everything the generator thread keeps, per tenant.
#[derive(Debug)]
struct State {
    tenants: HashMap<TenantId, TenantState>,
    started: Instant,
}

#[derive(Debug)]
struct TenantState {
    budget: SeriesBudget,
    span_metrics: Option<SpanMetrics>,
    service_graphs: Option<ServiceGraphs>,
}

/// What the processors need to know about the resource a span comes from.
#[derive(Debug)]
pub(super) struct SpanContext<'a> {
    /// `service.name`, empty when the resource has none.
    pub(super) service: &'a str,
    pub(super) resource_attributes: &'a [OtlpKeyValue],
}

impl Generator {
    /// Starts the generator thread. The thread runs until [`Generator::stop`].
    pub fn start(
        config: GeneratorConfig,
        metrics: Arc<ServerMetrics>,
    ) -> std::io::Result<(Generator, thread::JoinHandle<()>)> {
        let (tx, rx) = sync_channel(config.queue_size);
        let generator = Generator {
            inner: Arc::new(Inner {
                tx,
                state: Mutex::new(State {
                    tenants: HashMap::new(),
                    started: Instant::now(),
                }),
                config: Arc::new(config),
                metrics,
            }),
        };
        let worker = generator.clone();
        let handle = thread::Builder::new()
            .name("spoor-generator".into())
            .spawn(move || worker.run(rx))?;
        Ok((generator, handle))
    }

    /// Queues acknowledged spans of `tenant` for the metrics; never waits. Tenants the
    /// generator is disabled for are skipped here, before any queueing.
    pub fn submit(&self, tenant: &TenantId, resource_spans: Vec<OtlpResourceSpans>) {
        let inner = &self.inner;
        if !inner.config.for_tenant(tenant).enabled {
            return;
        }
        let job = Job::Spans {
            tenant: tenant.clone(),
            resource_spans,
        };
        match inner.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(Job::Spans { resource_spans, .. })) => {
                let spans = count_spans(&resource_spans) as u64;
                inner
                    .metrics
                    .generator_dropped_spans(tenant, "queue_full", spans);
                tracing::debug!(tenant = %tenant, spans, "metrics generator queue full; spans left out of the metrics");
            }
            Err(_) => {}
        }
    }

    /// Stops the thread after the spans queued before the call are counted.
    pub fn stop(&self) {
        // A full queue drains within milliseconds; waiting here is bounded by it.
        let _ = self.inner.tx.send(Job::Stop);
    }

    fn run(self, rx: Receiver<Job>) {
        let expiry_period = service_graphs::expiry_period(&self.inner.config.service_graphs);
        let mut last_expiry = Instant::now();
        let mut last_sweep = Instant::now();
        loop {
            match rx.recv_timeout(expiry_period) {
                Ok(Job::Spans {
                    tenant,
                    resource_spans,
                }) => {
                    self.process(&tenant, &resource_spans);
                    // Freed here rather than on an async worker.
                    drop(resource_spans);
                }
                Ok(Job::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if last_expiry.elapsed() >= expiry_period {
                last_expiry = Instant::now();
                let sweep = last_sweep.elapsed() >= STALE_SWEEP_PERIOD;
                if sweep {
                    last_sweep = last_expiry;
                }
                self.maintain(sweep);
            }
        }
        tracing::info!("metrics generator stopped");
    }

    fn process(&self, tenant: &TenantId, resource_spans: &[OtlpResourceSpans]) {
        let inner = &self.inner;
        let config = &inner.config;
        let now = Instant::now();
        let slack = config.ingestion_time_range_slack;
        let wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        let (oldest_end, latest_start) = match slack.as_nanos() as u64 {
            0 => (0, u64::MAX),
            slack => (wall_ns.saturating_sub(slack), wall_ns.saturating_add(slack)),
        };
        let mut counted = 0u64;
        let mut outside = 0u64;
        let mut state = inner.state.lock();
        let clock = state.started.elapsed().as_secs();
        let tenant_state = state
            .tenants
            .entry(tenant.clone())
            .or_insert_with(|| TenantState::new(config, config.for_tenant(tenant)));
        let limited_before = tenant_state.budget.limited;
        for batch in resource_spans {
            let resource_attributes = batch
                .resource
                .as_ref()
                .map_or(&[][..], |resource| &resource.attributes[..]);
            let service = find_attribute("service.name", resource_attributes, &[]);
            let context = SpanContext {
                service: service.as_deref().unwrap_or_default(),
                resource_attributes,
            };
            for span in batch.scope_spans.iter().flat_map(|scope| &scope.spans) {
                if span.end_time_unix_nano < oldest_end || span.start_time_unix_nano > latest_start
                {
                    outside += 1;
                    continue;
                }
                counted += 1;
                if let Some(span_metrics) = &mut tenant_state.span_metrics {
                    span_metrics.observe(&context, span, clock, &mut tenant_state.budget);
                }
                if let Some(service_graphs) = &mut tenant_state.service_graphs {
                    service_graphs.observe(&context, span, now, clock, &mut tenant_state.budget);
                }
            }
        }
        let limited = tenant_state.budget.limited - limited_before;
        let active = tenant_state.budget.active;
        drop(state);
        let metrics = &inner.metrics;
        metrics.generator_spans(tenant, counted);
        if outside > 0 {
            metrics.generator_dropped_spans(tenant, "outside_ingestion_slack", outside);
        }
        if limited > 0 {
            metrics.generator_series_limited(tenant, limited);
            tracing::warn!(tenant = %tenant, limited, max_active_series = config.for_tenant(tenant).max_active_series, "metrics generator series limit reached; spans left out of new series");
        }
        metrics.generator_active_series(tenant, active);
    }

    /// Expires service-graph halves and, when `sweep`, forgets stale series.
    fn maintain(&self, sweep: bool) {
        let inner = &self.inner;
        let now = Instant::now();
        let mut state = inner.state.lock();
        let clock = state.started.elapsed().as_secs();
        let oldest = clock.saturating_sub(inner.config.stale_after.as_secs());
        let mut report = Vec::new();
        for (tenant, tenant_state) in &mut state.tenants {
            let budget = &mut tenant_state.budget;
            let limited_before = budget.limited;
            if let Some(graphs) = &mut tenant_state.service_graphs {
                graphs.expire(now, clock, budget);
                if sweep {
                    graphs.remove_stale(oldest, budget);
                }
            }
            if sweep {
                if let Some(span_metrics) = &mut tenant_state.span_metrics {
                    span_metrics.remove_stale(oldest, budget);
                }
            }
            let waiting = tenant_state
                .service_graphs
                .as_ref()
                .map_or(0, |g| g.waiting());
            report.push((
                tenant.clone(),
                budget.active,
                budget.limited - limited_before,
                waiting,
            ));
        }
        drop(state);
        for (tenant, active, limited, waiting) in report {
            inner.metrics.generator_active_series(&tenant, active);
            inner.metrics.generator_edges_waiting(&tenant, waiting);
            if limited > 0 {
                inner.metrics.generator_series_limited(&tenant, limited);
            }
        }
    }

    /// Every series of every tenant, taken under the lock, formatted outside it.
    fn snapshot(&self) -> Vec<(TenantId, Vec<Sample>)> {
        let state = self.inner.state.lock();
        state
            .tenants
            .iter()
            .map(|(tenant, tenant_state)| {
                let mut samples = Vec::new();
                if let Some(span_metrics) = &tenant_state.span_metrics {
                    span_metrics.snapshot(&mut samples);
                }
                if let Some(graphs) = &tenant_state.service_graphs {
                    graphs.snapshot(&mut samples);
                }
                (tenant.clone(), samples)
            })
            .collect()
    }

    /// Appends the series in the OpenMetrics text format (which `/metrics` serves),
    /// each with a `tenant` label. Families are grouped across tenants as the format
    /// requires.
    pub fn encode_openmetrics(&self, out: &mut String) {
        let mut all: Vec<(TenantId, Sample)> = self
            .snapshot()
            .into_iter()
            .flat_map(|(tenant, samples)| samples.into_iter().map(move |s| (tenant.clone(), s)))
            .collect();
        all.sort_by(|a, b| a.1.family.name.cmp(b.1.family.name));
        let mut current = "";
        for (tenant, sample) in &all {
            let family = sample.family;
            let kind = match sample.value {
                SampleValue::Counter(_) => "counter",
                SampleValue::Histogram { .. } => "histogram",
            };
            if family.name != current {
                current = family.name;
                let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
                let _ = writeln!(out, "# TYPE {} {kind}", family.name);
            }
            let mut labels = String::new();
            for (name, value) in &sample.labels {
                push_label(&mut labels, name, value);
            }
            push_label(&mut labels, "tenant", tenant.as_str());
            sample.for_each_series(|suffix, le, value| {
                let le = le.map(|le| format!(",le=\"{le}\"")).unwrap_or_default();
                let _ = writeln!(out, "{}{suffix}{{{labels}{le}}} {value}", family.name);
            });
        }
    }
}

impl TenantState {
    fn new(config: &GeneratorConfig, tenant: &GeneratorTenantConfig) -> TenantState {
        TenantState {
            budget: SeriesBudget::new(tenant.max_active_series),
            span_metrics: tenant
                .span_metrics
                .then(|| SpanMetrics::new(Arc::new(config.span_metrics.clone()))),
            service_graphs: tenant
                .service_graphs
                .then(|| ServiceGraphs::new(Arc::new(config.service_graphs.clone()))),
        }
    }
}

/// `name="value"` with the text format's escapes, comma-separated.
fn push_label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The value of attribute `name` as a label value, looked up in the resource first and
/// then the span (Tempo's order for dimensions).
pub(super) fn find_attribute<'a>(
    name: &str,
    resource_attributes: &'a [OtlpKeyValue],
    span_attributes: &'a [OtlpKeyValue],
) -> Option<Cow<'a, str>> {
    resource_attributes
        .iter()
        .chain(span_attributes)
        .find(|kv| kv.key == name)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(label_value)
}

fn label_value(value: &OtlpValue) -> Cow<'_, str> {
    match value {
        OtlpValue::StringValue(s) => Cow::Borrowed(s),
        OtlpValue::BoolValue(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
        OtlpValue::IntValue(i) => Cow::Owned(i.to_string()),
        OtlpValue::DoubleValue(d) => Cow::Owned(d.to_string()),
        OtlpValue::BytesValue(bytes) => Cow::Owned(hex::encode(bytes)),
        // A dictionary reference of the profiles signal; traces never carry it.
        OtlpValue::StringValueStrindex(_) => Cow::Borrowed(""),
        OtlpValue::ArrayValue(array) => Cow::Owned(format!(
            "[{}]",
            array
                .values
                .iter()
                .filter_map(|v| v.value.as_ref())
                .map(label_value)
                .collect::<Vec<_>>()
                .join(",")
        )),
        OtlpValue::KvlistValue(list) => Cow::Owned(format!(
            "{{{}}}",
            list.values
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().and_then(|v| v.value.as_ref());
                    format!("{}:{}", kv.key, value.map(label_value).unwrap_or_default())
                })
                .collect::<Vec<_>>()
                .join(",")
        )),
    }
}

/// Span duration in seconds; a span that ends before it starts counts as 0 (Tempo).
pub(super) fn span_seconds(span: &OtlpSpan) -> f64 {
    span.end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano) as f64
        / 1e9
}

#[cfg(test)]
mod tests;
