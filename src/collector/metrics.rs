//! spoor-collector's own metrics, named and labelled as the OpenTelemetry Collector's
//! internal telemetry so existing dashboards and alerts work: counters are exposed with
//! the `_total` suffix, as the Collector's Prometheus endpoint does
//! (`otelcol_receiver_accepted_spans_total{receiver="otlp",transport="grpc"}`).
//!
//! Components record through the methods here, which also write the matching log line
//! where there is one, so a metric and its log line cannot drift apart.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::auth::AuthRefusals;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: String,
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PacketLabels {
    receiver: String,
    transport: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessorLabels {
    processor: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    processor: String,
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyDecisionLabels {
    processor: String,
    policy: String,
    sampled: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    processor: String,
    sampled: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExporterLabels {
    exporter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    exporter: String,
    data_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResolverLabels {
    resolver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResolutionLabels {
    resolver: String,
    success: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendOutcomeLabels {
    endpoint: String,
    success: String,
}

/// Lets a warning through at most once per interval: a full queue refuses every request
/// until it drains, and one line per refusal would flood the journal (the counters keep
/// the exact numbers).
#[derive(Debug)]
pub(crate) struct WarnEvery {
    interval: std::time::Duration,
    last: parking_lot::Mutex<Option<Instant>>,
}

impl WarnEvery {
    pub(crate) fn new(interval: std::time::Duration) -> WarnEvery {
        WarnEvery {
            interval,
            last: parking_lot::Mutex::new(None),
        }
    }

    /// Whether to log now (and start a new interval).
    pub(crate) fn ready(&self) -> bool {
        let mut last = self.last.lock();
        let due = last.is_none_or(|at| at.elapsed() >= self.interval);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

/// The OpenTelemetry Collector's bucket boundaries for `batch_send_size`.
const BATCH_SIZE_BUCKETS: [f64; 22] = [
    10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0,
    6000.0, 7000.0, 8000.0, 9000.0, 10000.0, 20000.0, 30000.0, 50000.0, 100000.0,
];

fn batch_size_histogram() -> Histogram {
    Histogram::new(BATCH_SIZE_BUCKETS)
}

/// The tail sampling processor's buckets for `sampling_decision_latency` (µs).
const DECISION_LATENCY_BUCKETS: [f64; 23] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0, 750.0, 1000.0,
    2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 50000.0,
];

fn decision_latency_histogram() -> Histogram {
    Histogram::new(DECISION_LATENCY_BUCKETS)
}

/// Buckets for `sampling_late_span_age` (seconds after the decision).
const LATE_SPAN_AGE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

fn late_span_age_histogram() -> Histogram {
    Histogram::new(LATE_SPAN_AGE_BUCKETS)
}

/// How often an early decision (a full `tail_sampling` processor) is logged.
const EARLY_DECISION_WARNING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Every metric the collector exposes on `/metrics`.
#[derive(Debug)]
pub struct CollectorMetrics {
    registry: Registry,
    started: Instant,
    receiver_accepted_spans: Family<ReceiverLabels, Counter>,
    receiver_refused_spans: Family<ReceiverLabels, Counter>,
    receiver_udp_dropped_packets: Family<PacketLabels, Counter>,
    processor_batch_send_size: Family<ProcessorLabels, Histogram, fn() -> Histogram>,
    processor_batch_size_trigger: Family<ProcessorLabels, Counter>,
    processor_batch_timeout_trigger: Family<ProcessorLabels, Counter>,
    processor_refused_spans: Family<ProcessorLabels, Counter>,
    tail_count_traces_sampled: Family<PolicyDecisionLabels, Counter>,
    tail_global_count_traces_sampled: Family<DecisionLabels, Counter>,
    tail_decision_latency: Family<PolicyLabels, Histogram, fn() -> Histogram>,
    tail_dropped_too_early: Family<ProcessorLabels, Counter>,
    tail_traces_on_memory: Family<ProcessorLabels, Gauge>,
    tail_new_trace_id_received: Family<ProcessorLabels, Counter>,
    tail_late_span_age: Family<ProcessorLabels, Histogram, fn() -> Histogram>,
    early_decision_warning: WarnEvery,
    exporter_sent_spans: Family<ExporterLabels, Counter>,
    exporter_send_failed_spans: Family<ExporterLabels, Counter>,
    exporter_enqueue_failed_spans: Family<ExporterLabels, Counter>,
    exporter_queue_size: Family<QueueLabels, Gauge>,
    exporter_queue_capacity: Family<QueueLabels, Gauge>,
    loadbalancer_num_backends: Family<ResolverLabels, Gauge>,
    loadbalancer_backend_outcome: Family<BackendOutcomeLabels, Counter>,
    loadbalancer_num_resolutions: Family<ResolutionLabels, Counter>,
    loadbalancer_num_backend_updates: Family<ResolverLabels, Counter>,
    process_uptime: Gauge<f64, std::sync::atomic::AtomicU64>,
    process_memory_rss: Gauge,
    auth_refusals: AuthRefusals,
}

impl Default for CollectorMetrics {
    fn default() -> Self {
        CollectorMetrics::new()
    }
}

impl CollectorMetrics {
    /// `otelcol_auth_refused_requests_total`, for the receivers' auth layers.
    pub fn auth_refusals(&self) -> AuthRefusals {
        self.auth_refusals.clone()
    }

    pub fn new() -> CollectorMetrics {
        let mut registry = Registry::with_prefix("otelcol");
        let receiver_accepted_spans = Family::<ReceiverLabels, Counter>::default();
        registry.register(
            "receiver_accepted_spans",
            "Number of spans successfully pushed into the pipeline",
            receiver_accepted_spans.clone(),
        );
        let receiver_refused_spans = Family::<ReceiverLabels, Counter>::default();
        registry.register(
            "receiver_refused_spans",
            "Number of spans that could not be pushed into the pipeline",
            receiver_refused_spans.clone(),
        );
        // spoor's own: UDP has no backpressure and a dropped packet's spans are unknown.
        let receiver_udp_dropped_packets = Family::<PacketLabels, Counter>::default();
        registry.register(
            "receiver_udp_dropped_packets",
            "Number of UDP packets dropped by a receiver (too large, queue full, invalid, refused)",
            receiver_udp_dropped_packets.clone(),
        );
        let processor_batch_send_size =
            Family::<ProcessorLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                batch_size_histogram,
            );
        registry.register(
            "processor_batch_batch_send_size",
            "Number of units in the batch",
            processor_batch_send_size.clone(),
        );
        let processor_batch_size_trigger = Family::<ProcessorLabels, Counter>::default();
        registry.register(
            "processor_batch_batch_size_trigger_send",
            "Number of times the batch was sent due to a size trigger",
            processor_batch_size_trigger.clone(),
        );
        let processor_batch_timeout_trigger = Family::<ProcessorLabels, Counter>::default();
        registry.register(
            "processor_batch_timeout_trigger_send",
            "Number of times the batch was sent due to a timeout trigger",
            processor_batch_timeout_trigger.clone(),
        );
        let processor_refused_spans = Family::<ProcessorLabels, Counter>::default();
        registry.register(
            "processor_refused_spans",
            "Number of spans refused by the memory limiter",
            processor_refused_spans.clone(),
        );
        let tail_count_traces_sampled = Family::<PolicyDecisionLabels, Counter>::default();
        registry.register(
            "processor_tail_sampling_count_traces_sampled",
            "Count of traces that were sampled or not per sampling policy",
            tail_count_traces_sampled.clone(),
        );
        let tail_global_count_traces_sampled = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "processor_tail_sampling_global_count_traces_sampled",
            "Global count of traces that were sampled or not by at least one policy",
            tail_global_count_traces_sampled.clone(),
        );
        let tail_decision_latency =
            Family::<PolicyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                decision_latency_histogram,
            );
        registry.register(
            "processor_tail_sampling_sampling_decision_latency",
            "Latency (in microseconds) of a given sampling policy",
            tail_decision_latency.clone(),
        );
        let tail_dropped_too_early = Family::<ProcessorLabels, Counter>::default();
        registry.register(
            "processor_tail_sampling_sampling_trace_dropped_too_early",
            "Count of traces decided before decision_wait because num_traces was reached",
            tail_dropped_too_early.clone(),
        );
        let tail_traces_on_memory = Family::<ProcessorLabels, Gauge>::default();
        registry.register(
            "processor_tail_sampling_sampling_traces_on_memory",
            "Tracks the number of traces currently on the in memory storage",
            tail_traces_on_memory.clone(),
        );
        let tail_new_trace_id_received = Family::<ProcessorLabels, Counter>::default();
        registry.register(
            "processor_tail_sampling_new_trace_id_received",
            "Counts the arrival of new traces",
            tail_new_trace_id_received.clone(),
        );
        let tail_late_span_age =
            Family::<ProcessorLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                late_span_age_histogram,
            );
        registry.register(
            "processor_tail_sampling_sampling_late_span_age",
            "Time (in seconds) from the sampling decision was taken and the arrival of a late span",
            tail_late_span_age.clone(),
        );
        let exporter_sent_spans = Family::<ExporterLabels, Counter>::default();
        registry.register(
            "exporter_sent_spans",
            "Number of spans successfully sent to destination",
            exporter_sent_spans.clone(),
        );
        let exporter_send_failed_spans = Family::<ExporterLabels, Counter>::default();
        registry.register(
            "exporter_send_failed_spans",
            "Number of spans in failed attempts to send to destination",
            exporter_send_failed_spans.clone(),
        );
        let exporter_enqueue_failed_spans = Family::<ExporterLabels, Counter>::default();
        registry.register(
            "exporter_enqueue_failed_spans",
            "Number of spans failed to be added to the sending queue",
            exporter_enqueue_failed_spans.clone(),
        );
        let exporter_queue_size = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "exporter_queue_size",
            "Current size of the retry queue (in batches, or in the configured sizer's units)",
            exporter_queue_size.clone(),
        );
        let exporter_queue_capacity = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "exporter_queue_capacity",
            "Fixed capacity of the retry queue (in batches, or in the configured sizer's units)",
            exporter_queue_capacity.clone(),
        );
        let loadbalancer_num_backends = Family::<ResolverLabels, Gauge>::default();
        registry.register(
            "loadbalancer_num_backends",
            "Current number of backends in use",
            loadbalancer_num_backends.clone(),
        );
        let loadbalancer_backend_outcome = Family::<BackendOutcomeLabels, Counter>::default();
        registry.register(
            "loadbalancer_backend_outcome",
            "Number of successes and failures for each endpoint",
            loadbalancer_backend_outcome.clone(),
        );
        let loadbalancer_num_resolutions = Family::<ResolutionLabels, Counter>::default();
        registry.register(
            "loadbalancer_num_resolutions",
            "Number of times the resolver has triggered new resolutions",
            loadbalancer_num_resolutions.clone(),
        );
        let loadbalancer_num_backend_updates = Family::<ResolverLabels, Counter>::default();
        registry.register(
            "loadbalancer_num_backend_updates",
            "Number of times the list of backends was updated",
            loadbalancer_num_backend_updates.clone(),
        );
        let process_uptime = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "process_uptime",
            "Uptime of the process in seconds",
            process_uptime.clone(),
        );
        let process_memory_rss = Gauge::default();
        registry.register(
            "process_memory_rss",
            "Total physical memory (resident set size) in bytes",
            process_memory_rss.clone(),
        );
        let auth_refusals = AuthRefusals::register(&mut registry);
        CollectorMetrics {
            auth_refusals,
            registry,
            started: Instant::now(),
            receiver_accepted_spans,
            receiver_refused_spans,
            receiver_udp_dropped_packets,
            processor_batch_send_size,
            processor_batch_size_trigger,
            processor_batch_timeout_trigger,
            processor_refused_spans,
            tail_count_traces_sampled,
            tail_global_count_traces_sampled,
            tail_decision_latency,
            tail_dropped_too_early,
            tail_traces_on_memory,
            tail_new_trace_id_received,
            tail_late_span_age,
            early_decision_warning: WarnEvery::new(EARLY_DECISION_WARNING_INTERVAL),
            exporter_sent_spans,
            exporter_send_failed_spans,
            exporter_enqueue_failed_spans,
            exporter_queue_size,
            exporter_queue_capacity,
            loadbalancer_num_backends,
            loadbalancer_backend_outcome,
            loadbalancer_num_resolutions,
            loadbalancer_num_backend_updates,
            process_uptime,
            process_memory_rss,
        }
    }

    fn receiver_labels(receiver: &str, transport: &str) -> ReceiverLabels {
        ReceiverLabels {
            receiver: receiver.to_owned(),
            transport: transport.to_owned(),
        }
    }

    pub(crate) fn receiver_accepted(&self, receiver: &str, transport: &str, num_spans: usize) {
        self.receiver_accepted_spans
            .get_or_create(&Self::receiver_labels(receiver, transport))
            .inc_by(num_spans as u64);
    }

    pub(crate) fn receiver_refused(&self, receiver: &str, transport: &str, num_spans: usize) {
        self.receiver_refused_spans
            .get_or_create(&Self::receiver_labels(receiver, transport))
            .inc_by(num_spans as u64);
    }

    pub(crate) fn receiver_dropped_packet(&self, receiver: &str, transport: &str, reason: &str) {
        self.receiver_udp_dropped_packets
            .get_or_create(&PacketLabels {
                receiver: receiver.to_owned(),
                transport: transport.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
    }

    pub(crate) fn batch_sent(&self, processor: &str, num_spans: usize, by_timeout: bool) {
        let labels = ProcessorLabels {
            processor: processor.to_owned(),
        };
        self.processor_batch_send_size
            .get_or_create(&labels)
            .observe(num_spans as f64);
        let trigger = if by_timeout {
            &self.processor_batch_timeout_trigger
        } else {
            &self.processor_batch_size_trigger
        };
        trigger.get_or_create(&labels).inc();
    }

    pub(crate) fn processor_refused(&self, processor: &str, num_spans: usize) {
        self.processor_refused_spans
            .get_or_create(&ProcessorLabels {
                processor: processor.to_owned(),
            })
            .inc_by(num_spans as u64);
    }

    fn processor_labels(processor: &str) -> ProcessorLabels {
        ProcessorLabels {
            processor: processor.to_owned(),
        }
    }

    /// One policy's verdict on one trace, and how long it took to reach.
    pub(crate) fn tail_policy_evaluated(
        &self,
        processor: &str,
        policy: &str,
        sampled: bool,
        took: std::time::Duration,
    ) {
        self.tail_count_traces_sampled
            .get_or_create(&PolicyDecisionLabels {
                processor: processor.to_owned(),
                policy: policy.to_owned(),
                sampled: sampled.to_string(),
            })
            .inc();
        self.tail_decision_latency
            .get_or_create(&PolicyLabels {
                processor: processor.to_owned(),
                policy: policy.to_owned(),
            })
            .observe(took.as_secs_f64() * 1e6);
    }

    /// A trace's final decision; `early` when `num_traces` forced it before
    /// `decision_wait` (also logged, at most once per 10 s).
    pub(crate) fn tail_trace_decided(&self, processor: &str, sampled: bool, early: bool) {
        self.tail_global_count_traces_sampled
            .get_or_create(&DecisionLabels {
                processor: processor.to_owned(),
                sampled: sampled.to_string(),
            })
            .inc();
        if early {
            self.tail_dropped_too_early
                .get_or_create(&Self::processor_labels(processor))
                .inc();
            if self.early_decision_warning.ready() {
                tracing::warn!(
                    processor,
                    "tail sampling holds num_traces traces; deciding the oldest before decision_wait"
                );
            }
        }
    }

    pub(crate) fn tail_new_trace(&self, processor: &str) {
        self.tail_new_trace_id_received
            .get_or_create(&Self::processor_labels(processor))
            .inc();
    }

    /// A change in the traces one instance holds; instances of one processor ID in
    /// several pipelines add up.
    pub(crate) fn tail_traces_on_memory_changed(&self, processor: &str, delta: i64) {
        self.tail_traces_on_memory
            .get_or_create(&Self::processor_labels(processor))
            .inc_by(delta);
    }

    pub(crate) fn tail_late_span(&self, processor: &str, age: std::time::Duration) {
        self.tail_late_span_age
            .get_or_create(&Self::processor_labels(processor))
            .observe(age.as_secs_f64());
    }

    fn exporter_labels(exporter: &str) -> ExporterLabels {
        ExporterLabels {
            exporter: exporter.to_owned(),
        }
    }

    fn queue_labels(exporter: &str) -> QueueLabels {
        QueueLabels {
            exporter: exporter.to_owned(),
            data_type: "traces".to_owned(),
        }
    }

    pub(crate) fn exporter_sent(&self, exporter: &str, num_spans: usize) {
        self.exporter_sent_spans
            .get_or_create(&Self::exporter_labels(exporter))
            .inc_by(num_spans as u64);
    }

    pub(crate) fn exporter_send_failed(&self, exporter: &str, num_spans: usize) {
        self.exporter_send_failed_spans
            .get_or_create(&Self::exporter_labels(exporter))
            .inc_by(num_spans as u64);
    }

    pub(crate) fn exporter_enqueue_failed(&self, exporter: &str, num_spans: usize) {
        self.exporter_enqueue_failed_spans
            .get_or_create(&Self::exporter_labels(exporter))
            .inc_by(num_spans as u64);
    }

    pub(crate) fn set_queue_size(&self, exporter: &str, size: u64) {
        self.exporter_queue_size
            .get_or_create(&Self::queue_labels(exporter))
            .set(i64::try_from(size).unwrap_or(i64::MAX));
    }

    pub(crate) fn set_queue_capacity(&self, exporter: &str, capacity: u64) {
        self.exporter_queue_capacity
            .get_or_create(&Self::queue_labels(exporter))
            .set(i64::try_from(capacity).unwrap_or(i64::MAX));
    }

    /// Backends that started (positive) or stopped (negative) serving a `loadbalancing`
    /// exporter with this resolver.
    pub(crate) fn loadbalancer_backends_changed(&self, resolver: &str, delta: i64) {
        self.loadbalancer_num_backends
            .get_or_create(&ResolverLabels {
                resolver: resolver.to_owned(),
            })
            .inc_by(delta);
    }

    /// One resolution of a `loadbalancing` exporter's backends; a failed or empty one
    /// leaves the backends as they were.
    pub(crate) fn loadbalancer_resolved(&self, resolver: &str, success: bool) {
        self.loadbalancer_num_resolutions
            .get_or_create(&ResolutionLabels {
                resolver: resolver.to_owned(),
                success: success.to_string(),
            })
            .inc();
    }

    /// A resolution changed a `loadbalancing` exporter's set of backends.
    pub(crate) fn loadbalancer_backends_updated(&self, resolver: &str) {
        self.loadbalancer_num_backend_updates
            .get_or_create(&ResolverLabels {
                resolver: resolver.to_owned(),
            })
            .inc();
    }

    /// One export attempt to a `loadbalancing` backend (or a batch its full queue
    /// refused).
    pub(crate) fn loadbalancer_backend_outcome(&self, endpoint: &str, success: bool) {
        self.loadbalancer_backend_outcome
            .get_or_create(&BackendOutcomeLabels {
                endpoint: endpoint.to_owned(),
                success: success.to_string(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric, with the process gauges refreshed.
    pub fn encode(&self) -> String {
        self.process_uptime
            .set(self.started.elapsed().as_secs_f64());
        if let Some(rss) = super::processors::memory_limiter::resident_bytes() {
            self.process_memory_rss
                .set(i64::try_from(rss).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_match_the_opentelemetry_collector() {
        let metrics = CollectorMetrics::new();
        metrics.receiver_accepted("otlp", "grpc", 3);
        metrics.receiver_refused("otlp", "http", 1);
        metrics.batch_sent("batch", 8192, false);
        metrics.exporter_sent("otlp/backup", 2);
        metrics.exporter_send_failed("otlp", 1);
        metrics.exporter_enqueue_failed("otlp", 1);
        metrics.set_queue_size("otlp", 4);
        metrics.set_queue_capacity("otlp", 1000);
        metrics.loadbalancer_backends_changed("static", 3);
        metrics.loadbalancer_backend_outcome("backend-1:4317", false);
        metrics.loadbalancer_resolved("dns", false);
        metrics.loadbalancer_backends_updated("dns");
        let text = metrics.encode();
        for line in [
            "otelcol_receiver_accepted_spans_total{receiver=\"otlp\",transport=\"grpc\"} 3",
            "otelcol_receiver_refused_spans_total{receiver=\"otlp\",transport=\"http\"} 1",
            "otelcol_processor_batch_batch_send_size_count{processor=\"batch\"} 1",
            "otelcol_processor_batch_batch_size_trigger_send_total{processor=\"batch\"} 1",
            "otelcol_exporter_sent_spans_total{exporter=\"otlp/backup\"} 2",
            "otelcol_exporter_send_failed_spans_total{exporter=\"otlp\"} 1",
            "otelcol_exporter_enqueue_failed_spans_total{exporter=\"otlp\"} 1",
            "otelcol_exporter_queue_size{exporter=\"otlp\",data_type=\"traces\"} 4",
            "otelcol_exporter_queue_capacity{exporter=\"otlp\",data_type=\"traces\"} 1000",
            "otelcol_loadbalancer_num_backends{resolver=\"static\"} 3",
            "otelcol_loadbalancer_backend_outcome_total{endpoint=\"backend-1:4317\",success=\"false\"} 1",
            "otelcol_loadbalancer_num_resolutions_total{resolver=\"dns\",success=\"false\"} 1",
            "otelcol_loadbalancer_num_backend_updates_total{resolver=\"dns\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("otelcol_processor_batch_batch_send_size_bucket{le=\"10000.0\",processor=\"batch\"} 1")
            || text.contains("otelcol_processor_batch_batch_send_size_bucket{processor=\"batch\",le=\"10000.0\"} 1"),
            "{text}");
    }
}
