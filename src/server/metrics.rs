//! spoor-server's own metrics, exposed on `/metrics` in the Prometheus text format.
//! Each component records through a method here so a metric and its meaning live in
//! one place.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::auth::AuthRefusals;
use crate::tenant::TenantId;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    tenant: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    /// Position in `metrics_generator.remote_write.endpoints` (URLs may carry secrets).
    endpoint: String,
}

#[derive(Debug)]
pub struct ServerMetrics {
    registry: Registry,
    ingested_spans: Family<TenantLabels, Counter>,
    ingested_bytes: Family<TenantLabels, Counter>,
    discarded_spans: Family<RefusedLabels, Counter>,
    refused_queries: Family<RefusedLabels, Counter>,
    peer_failures: Family<ReasonLabels, Counter>,
    tenant_polls: Family<SourceLabels, Counter>,
    wal_fsync_seconds: Histogram,
    wal_damaged_records: Counter,
    wal_replayed_records: Counter,
    blocks_flushed: Family<ReasonLabels, Counter>,
    block_flush_failures: Counter,
    backend_bytes_written: Counter,
    backend_blocks: Gauge,
    backend_bytes: Gauge,
    live_traces: Gauge,
    head_bytes: Gauge,
    flushed_spans: Counter<u64, AtomicU64>,
    retention_deleted: Family<TenantLabels, Counter>,
    retention_sweeps: Counter,
    retention_errors: Counter,
    compaction_runs: Counter,
    compaction_inputs: Family<TenantLabels, Counter>,
    compaction_outputs: Counter,
    compaction_bytes_written: Counter,
    compaction_spans_deduplicated: Counter,
    compaction_errors: Counter,
    compaction_seconds: Histogram,
    compaction_replaced_deleted: Counter,
    orphans_removed: Counter,
    generator_spans: Family<TenantLabels, Counter>,
    generator_dropped_spans: Family<RefusedLabels, Counter>,
    generator_series_limited: Family<TenantLabels, Counter>,
    generator_active_series: Family<TenantLabels, Gauge>,
    generator_edges_waiting: Family<TenantLabels, Gauge>,
    remote_write_series: Family<EndpointLabels, Counter>,
    remote_write_failures: Family<EndpointLabels, Counter>,
    auth_refusals: AuthRefusals,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics::new()
    }
}

impl ServerMetrics {
    pub fn new() -> ServerMetrics {
        let mut registry = Registry::with_prefix("spoor");
        let ingested_spans = Family::<TenantLabels, Counter>::default();
        registry.register(
            "ingest_spans",
            "Spans accepted and made durable, per tenant",
            ingested_spans.clone(),
        );
        let ingested_bytes = Family::<TenantLabels, Counter>::default();
        registry.register(
            "ingest_bytes",
            "Request bytes accepted, per tenant",
            ingested_bytes.clone(),
        );
        let discarded_spans = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "discarded_spans",
            "Spans not stored (refused, or left out of a partial_success), per tenant and reason",
            discarded_spans.clone(),
        );
        let tenant_polls = Family::<SourceLabels, Counter>::default();
        registry.register(
            "blocklist_tenant_polls",
            "Block-list refreshes of one tenant, by source: its index or a bucket listing",
            tenant_polls.clone(),
        );
        let peer_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "peer_query_failures",
            "Peer queries (cluster.peers) left out of an answer, by reason",
            peer_failures.clone(),
        );
        let refused_queries = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "query_refused",
            "Queries refused by a per-tenant limit, per tenant and reason",
            refused_queries.clone(),
        );
        let wal_fsync_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "wal_fsync_duration_seconds",
            "Time spent in WAL fsync",
            wal_fsync_seconds.clone(),
        );
        let wal_damaged_records = Counter::default();
        registry.register(
            "wal_damaged_regions",
            "Damaged WAL regions (corrupt records, garbage, torn tails) found at replay",
            wal_damaged_records.clone(),
        );
        let wal_replayed_records = Counter::default();
        registry.register(
            "wal_replayed_records",
            "WAL records replayed at start-up",
            wal_replayed_records.clone(),
        );
        let blocks_flushed = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "blocks_flushed",
            "Blocks written to the backend, by cut reason",
            blocks_flushed.clone(),
        );
        let block_flush_failures = Counter::default();
        registry.register(
            "block_flush_failures",
            "Failed block flush attempts (retried)",
            block_flush_failures.clone(),
        );
        let backend_bytes_written = Counter::default();
        registry.register(
            "backend_written_bytes",
            "Bytes written to the object store",
            backend_bytes_written.clone(),
        );
        let backend_blocks = Gauge::default();
        registry.register(
            "backend_blocks",
            "Blocks known in the backend, all tenants",
            backend_blocks.clone(),
        );
        let backend_bytes = Gauge::default();
        registry.register(
            "backend_bytes",
            "Bytes of blocks known in the backend, all tenants",
            backend_bytes.clone(),
        );
        let live_traces = Gauge::default();
        registry.register(
            "live_traces",
            "Traces in memory not yet cut into a block",
            live_traces.clone(),
        );
        let head_bytes = Gauge::default();
        registry.register(
            "head_bytes",
            "Bytes of trace data in memory (live and being flushed)",
            head_bytes.clone(),
        );
        let flushed_spans = Counter::default();
        registry.register(
            "flushed_spans",
            "Spans written into blocks",
            flushed_spans.clone(),
        );
        let retention_deleted = Family::<TenantLabels, Counter>::default();
        registry.register(
            "retention_blocks_deleted",
            "Blocks deleted because they were past their tenant's retention",
            retention_deleted.clone(),
        );
        let retention_sweeps = Counter::default();
        registry.register(
            "retention_sweeps",
            "Retention sweeps run (completed or not)",
            retention_sweeps.clone(),
        );
        let retention_errors = Counter::default();
        registry.register(
            "retention_errors",
            "Failed listings, meta reads or deletes during retention sweeps",
            retention_errors.clone(),
        );
        let compaction_runs = Counter::default();
        registry.register(
            "compaction_runs",
            "Compaction cycles run (completed or not)",
            compaction_runs.clone(),
        );
        let compaction_inputs = Family::<TenantLabels, Counter>::default();
        registry.register(
            "compaction_blocks_compacted",
            "Blocks merged into a compacted block, per tenant",
            compaction_inputs.clone(),
        );
        let compaction_outputs = Counter::default();
        registry.register(
            "compaction_blocks_written",
            "Compacted blocks written",
            compaction_outputs.clone(),
        );
        let compaction_bytes_written = Counter::default();
        registry.register(
            "compaction_bytes_written",
            "Bytes of compacted blocks written (data and bloom)",
            compaction_bytes_written.clone(),
        );
        let compaction_spans_deduplicated = Counter::default();
        registry.register(
            "compaction_spans_deduplicated",
            "Repeated copies of a span dropped while merging",
            compaction_spans_deduplicated.clone(),
        );
        let compaction_errors = Counter::default();
        registry.register(
            "compaction_errors",
            "Failed compactions, replaced-block deletes, orphan removals and listings",
            compaction_errors.clone(),
        );
        let compaction_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 16));
        registry.register(
            "compaction_duration_seconds",
            "Time to merge and upload one compacted block",
            compaction_seconds.clone(),
        );
        let compaction_replaced_deleted = Counter::default();
        registry.register(
            "compaction_replaced_blocks_deleted",
            "Blocks deleted after a compacted block replaced them",
            compaction_replaced_deleted.clone(),
        );
        let orphans_removed = Counter::default();
        registry.register(
            "orphaned_blocks_removed",
            "Block folders without meta.json (interrupted uploads or deletes) removed",
            orphans_removed.clone(),
        );
        let generator_spans = Family::<TenantLabels, Counter>::default();
        registry.register(
            "generator_spans",
            "Spans counted by the metrics generator, per tenant",
            generator_spans.clone(),
        );
        let generator_dropped_spans = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "generator_dropped_spans",
            "Stored spans left out of the generated metrics: queue_full (the generator \
             fell behind), outside_ingestion_slack (ended too long ago)",
            generator_dropped_spans.clone(),
        );
        let generator_series_limited = Family::<TenantLabels, Counter>::default();
        registry.register(
            "generator_series_limited",
            "Spans left out of the generated metrics because they would have created a \
             series over metrics_generator.max_active_series",
            generator_series_limited.clone(),
        );
        let generator_active_series = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "generator_active_series",
            "Series the metrics generator holds, per tenant (histograms count each bucket)",
            generator_active_series.clone(),
        );
        let generator_edges_waiting = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "generator_edges_waiting",
            "Client or server spans waiting for their other half in the service graph",
            generator_edges_waiting.clone(),
        );
        let remote_write_series = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "generator_remote_write_series",
            "Series pushed by remote write and accepted, per endpoint",
            remote_write_series.clone(),
        );
        let remote_write_failures = Family::<EndpointLabels, Counter>::default();
        registry.register(
            "generator_remote_write_failed_series",
            "Series whose push failed for good (after retries), per endpoint",
            remote_write_failures.clone(),
        );
        let auth_refusals = AuthRefusals::register(&mut registry);
        ServerMetrics {
            registry,
            ingested_spans,
            ingested_bytes,
            discarded_spans,
            refused_queries,
            peer_failures,
            tenant_polls,
            wal_fsync_seconds,
            wal_damaged_records,
            wal_replayed_records,
            blocks_flushed,
            block_flush_failures,
            backend_bytes_written,
            backend_blocks,
            backend_bytes,
            live_traces,
            head_bytes,
            flushed_spans,
            retention_deleted,
            retention_sweeps,
            retention_errors,
            compaction_runs,
            compaction_inputs,
            compaction_outputs,
            compaction_bytes_written,
            compaction_spans_deduplicated,
            compaction_errors,
            compaction_seconds,
            compaction_replaced_deleted,
            orphans_removed,
            generator_spans,
            generator_dropped_spans,
            generator_series_limited,
            generator_active_series,
            generator_edges_waiting,
            remote_write_series,
            remote_write_failures,
            auth_refusals,
        }
    }

    /// `spoor_auth_refused_requests_total`, for the listeners' auth layers.
    pub fn auth_refusals(&self) -> AuthRefusals {
        self.auth_refusals.clone()
    }

    pub fn ingested(&self, tenant: &TenantId, num_spans: u64, num_bytes: u64) {
        let labels = TenantLabels {
            tenant: tenant.to_string(),
        };
        self.ingested_spans.get_or_create(&labels).inc_by(num_spans);
        self.ingested_bytes.get_or_create(&labels).inc_by(num_bytes);
    }

    /// Spans of `tenant` that were not acknowledged, for `reason`.
    pub fn discarded_spans(&self, tenant: &TenantId, reason: &str, num_spans: u64) {
        self.discarded_spans
            .get_or_create(&RefusedLabels {
                tenant: tenant.to_string(),
                reason: reason.to_string(),
            })
            .inc_by(num_spans);
    }

    /// One tenant's blocks refreshed from `source` (`index` or `listing`).
    pub fn tenant_polled(&self, source: &str) {
        self.tenant_polls
            .get_or_create(&SourceLabels {
                source: source.to_string(),
            })
            .inc();
    }

    /// A peer left out of an answer: `resolve`, `request`, `status` or `decode`.
    pub fn peer_failure(&self, reason: &str) {
        self.peer_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A query of `tenant` refused by a limit.
    pub fn refused_query(&self, tenant: &TenantId, reason: &str) {
        self.refused_queries
            .get_or_create(&RefusedLabels {
                tenant: tenant.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn observe_fsync(&self, took: Duration) {
        self.wal_fsync_seconds.observe(took.as_secs_f64());
    }

    pub fn wal_damage(&self, regions: u64) {
        self.wal_damaged_records.inc_by(regions);
    }

    pub fn wal_replayed(&self, records: u64) {
        self.wal_replayed_records.inc_by(records);
    }

    pub fn block_flushed(&self, reason: &str, bytes: u64, spans: u64) {
        self.blocks_flushed
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
        self.backend_bytes_written.inc_by(bytes);
        self.flushed_spans.inc_by(spans);
    }

    pub fn block_flush_failed(&self) {
        self.block_flush_failures.inc();
    }

    pub fn set_backend(&self, blocks: usize, bytes: u64) {
        self.backend_blocks.set(blocks as i64);
        self.backend_bytes.set(bytes as i64);
    }

    pub fn set_head(&self, live_traces: usize, bytes: u64) {
        self.live_traces.set(live_traces as i64);
        self.head_bytes.set(bytes as i64);
    }

    pub fn retention_block_deleted(&self, tenant: &TenantId) {
        self.retention_deleted
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .inc();
    }

    pub fn retention_sweep(&self) {
        self.retention_sweeps.inc();
    }

    pub fn retention_error(&self) {
        self.retention_errors.inc();
    }

    pub fn compaction_run(&self) {
        self.compaction_runs.inc();
    }

    /// One compacted block written from `inputs` blocks of `tenant`.
    pub fn block_compacted(
        &self,
        tenant: &TenantId,
        inputs: u64,
        bytes: u64,
        spans_deduplicated: u64,
        took: Duration,
    ) {
        self.compaction_inputs
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .inc_by(inputs);
        self.compaction_outputs.inc();
        self.compaction_bytes_written.inc_by(bytes);
        self.backend_bytes_written.inc_by(bytes);
        self.compaction_spans_deduplicated
            .inc_by(spans_deduplicated);
        self.compaction_seconds.observe(took.as_secs_f64());
    }

    pub fn compaction_error(&self) {
        self.compaction_errors.inc();
    }

    pub fn replaced_block_deleted(&self) {
        self.compaction_replaced_deleted.inc();
    }

    pub fn orphan_removed(&self) {
        self.orphans_removed.inc();
    }

    pub fn generator_spans(&self, tenant: &TenantId, spans: u64) {
        self.generator_spans
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .inc_by(spans);
    }

    pub fn generator_dropped_spans(&self, tenant: &TenantId, reason: &str, spans: u64) {
        self.generator_dropped_spans
            .get_or_create(&RefusedLabels {
                tenant: tenant.to_string(),
                reason: reason.to_string(),
            })
            .inc_by(spans);
    }

    pub fn generator_series_limited(&self, tenant: &TenantId, spans: u64) {
        self.generator_series_limited
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .inc_by(spans);
    }

    pub fn generator_active_series(&self, tenant: &TenantId, series: usize) {
        self.generator_active_series
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .set(series as i64);
    }

    pub fn generator_edges_waiting(&self, tenant: &TenantId, halves: usize) {
        self.generator_edges_waiting
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .set(halves as i64);
    }

    pub fn remote_write_sent(&self, endpoint: usize, series: u64) {
        self.remote_write_series
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .inc_by(series);
    }

    pub fn remote_write_failed(&self, endpoint: usize, series: u64) {
        self.remote_write_failures
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .inc_by(series);
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
