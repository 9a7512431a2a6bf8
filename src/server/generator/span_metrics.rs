//! The `span-metrics` processor: request count, latency histogram and size of every
//! span, by service, span name, kind and status (Tempo's names and labels,
//! tempo-api.md §6.2).

use std::sync::Arc;

use prost::Message;

use super::registry::{
    clean_value, sanitize_label_name, snapshot_table, Family, Histogram, Sample, SampleValue,
    SeriesBudget, SeriesTable,
};
use super::{find_attribute, span_seconds, SpanContext};
use crate::config::SpanMetricsConfig;
use crate::otlp::OtlpSpan;

const CALLS: Family = Family {
    name: "traces_spanmetrics_calls",
    help: "Spans received, by service, span name, kind and status",
};
const LATENCY: Family = Family {
    name: "traces_spanmetrics_latency",
    help: "Span durations in seconds",
};
const SIZE: Family = Family {
    name: "traces_spanmetrics_size",
    help: "Encoded size of the spans in bytes",
};

/// Intrinsic labels in Tempo's order; a dimension with one of these names is
/// prefixed with `__` so it cannot overwrite it.
const INTRINSIC_LABELS: [&str; 5] = [
    "service",
    "span_name",
    "span_kind",
    "status_code",
    "status_message",
];

#[derive(Debug)]
struct SpanSeries {
    calls: u64,
    size: u64,
    latency: Histogram,
}

#[derive(Debug)]
pub(super) struct SpanMetrics {
    config: Arc<SpanMetricsConfig>,
    bounds: Arc<[f64]>,
    /// Which of [`INTRINSIC_LABELS`] are kept.
    intrinsics: [bool; 5],
    table: SeriesTable<SpanSeries>,
    values: Vec<String>,
}

impl SpanMetrics {
    pub(super) fn new(config: Arc<SpanMetricsConfig>) -> SpanMetrics {
        let intrinsics = [
            config.intrinsic_service,
            config.intrinsic_span_name,
            config.intrinsic_span_kind,
            config.intrinsic_status_code,
            config.intrinsic_status_message,
        ];
        let mut names: Vec<String> = INTRINSIC_LABELS
            .iter()
            .zip(intrinsics)
            .filter(|(_, kept)| *kept)
            .map(|(name, _)| (*name).to_owned())
            .collect();
        for dimension in &config.dimensions {
            let name = sanitize_label_name(dimension);
            names.push(if INTRINSIC_LABELS.contains(&name.as_str()) {
                format!("__{name}")
            } else {
                name
            });
        }
        let bounds: Arc<[f64]> = config.histogram_buckets.clone().into();
        let cost = 2 + Histogram::series_cost(bounds.len());
        SpanMetrics {
            table: SeriesTable::new(names, cost),
            intrinsics,
            bounds,
            config,
            values: Vec::new(),
        }
    }

    pub(super) fn observe(
        &mut self,
        context: &SpanContext<'_>,
        span: &OtlpSpan,
        now: u64,
        budget: &mut SeriesBudget,
    ) {
        let status = span.status.as_ref();
        let intrinsic_values: [&str; 5] = [
            context.service,
            &span.name,
            span_kind_label(span.kind),
            status_code_label(status.map_or(0, |s| s.code)),
            status.map_or("", |s| s.message.as_str()),
        ];
        // Owned only for the dimensions, which may need formatting; the intrinsic
        // values are borrowed straight from the span.
        self.values.clear();
        for dimension in &self.config.dimensions {
            let value = find_attribute(dimension, context.resource_attributes, &span.attributes);
            self.values.push(
                value
                    .map(|v| clean_value(&v).into_owned())
                    .unwrap_or_default(),
            );
        }
        let cleaned: Vec<std::borrow::Cow<'_, str>> = intrinsic_values
            .iter()
            .zip(self.intrinsics)
            .filter(|(_, kept)| *kept)
            .map(|(value, _)| clean_value(value))
            .collect();
        let labels: Vec<&str> = cleaned
            .iter()
            .map(|value| value.as_ref())
            .chain(self.values.iter().map(String::as_str))
            .collect();
        let num_bounds = self.bounds.len();
        let Some(series) = self
            .table
            .get_or_create(&labels, now, budget, || SpanSeries {
                calls: 0,
                size: 0,
                latency: Histogram::new(num_bounds),
            })
        else {
            return;
        };
        series.calls += 1;
        series.size += span.encoded_len() as u64;
        series.latency.observe(&self.bounds, span_seconds(span));
    }

    pub(super) fn remove_stale(&mut self, oldest: u64, budget: &mut SeriesBudget) {
        self.table.remove_stale(oldest, budget);
    }

    pub(super) fn snapshot(&self, out: &mut Vec<Sample>) {
        snapshot_table(&self.table, CALLS, out, |s| {
            SampleValue::Counter(s.calls as f64)
        });
        snapshot_table(&self.table, SIZE, out, |s| {
            SampleValue::Counter(s.size as f64)
        });
        snapshot_table(&self.table, LATENCY, out, |s| {
            SampleValue::histogram(&self.bounds, &s.latency)
        });
    }
}

/// `span_kind` label values, as Tempo writes them.
pub(super) fn span_kind_label(kind: i32) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

/// `status_code` label values, as Tempo writes them.
pub(super) fn status_code_label(code: i32) -> &'static str {
    match code {
        1 => "STATUS_CODE_OK",
        2 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}
