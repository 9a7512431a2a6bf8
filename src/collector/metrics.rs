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
struct ExporterLabels {
    exporter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    exporter: String,
    data_type: String,
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
    exporter_sent_spans: Family<ExporterLabels, Counter>,
    exporter_send_failed_spans: Family<ExporterLabels, Counter>,
    exporter_enqueue_failed_spans: Family<ExporterLabels, Counter>,
    exporter_queue_size: Family<QueueLabels, Gauge>,
    exporter_queue_capacity: Family<QueueLabels, Gauge>,
    process_uptime: Gauge<f64, std::sync::atomic::AtomicU64>,
    process_memory_rss: Gauge,
}

impl Default for CollectorMetrics {
    fn default() -> Self {
        CollectorMetrics::new()
    }
}

impl CollectorMetrics {
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
        CollectorMetrics {
            registry,
            started: Instant::now(),
            receiver_accepted_spans,
            receiver_refused_spans,
            receiver_udp_dropped_packets,
            processor_batch_send_size,
            processor_batch_size_trigger,
            processor_batch_timeout_trigger,
            processor_refused_spans,
            exporter_sent_spans,
            exporter_send_failed_spans,
            exporter_enqueue_failed_spans,
            exporter_queue_size,
            exporter_queue_capacity,
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
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        assert!(text.contains("otelcol_processor_batch_batch_send_size_bucket{le=\"10000.0\",processor=\"batch\"} 1")
            || text.contains("otelcol_processor_batch_batch_send_size_bucket{processor=\"batch\",le=\"10000.0\"} 1"),
            "{text}");
    }
}
