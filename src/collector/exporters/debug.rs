//! `debug` exporter: writes spans to the collector's own log (journald under systemd),
//! for operators checking what flows through a pipeline.
//!
//! `basic`: one line per batch with counts; `normal`: one line per span; `detailed`:
//! every field. Sampling as in the OpenTelemetry Collector: in each second the first
//! `sampling_initial` batches are logged, then one in `sampling_thereafter`.

use std::time::Instant;

use parking_lot::Mutex;
use tracing::info;

use super::{ExportError, Exported, Payload};
use crate::config::collector::{DebugExporterConfig, Verbosity};
use crate::otlp::{OtlpResourceSpans, OtlpValue, SpanId, TraceId};
use crate::tenant::TenantId;

#[derive(Debug)]
struct SamplingWindow {
    started: Instant,
    seen: u64,
}

#[derive(Debug)]
pub(crate) struct DebugExporter {
    id: String,
    config: DebugExporterConfig,
    window: Mutex<SamplingWindow>,
}

impl DebugExporter {
    pub(crate) fn new(id: String, config: &DebugExporterConfig) -> DebugExporter {
        DebugExporter {
            id,
            config: config.clone(),
            window: Mutex::new(SamplingWindow {
                started: Instant::now(),
                seen: 0,
            }),
        }
    }

    fn sampled(&self) -> bool {
        let mut window = self.window.lock();
        if window.started.elapsed().as_secs() >= 1 {
            window.started = Instant::now();
            window.seen = 0;
        }
        window.seen += 1;
        let initial = u64::from(self.config.sampling_initial);
        window.seen <= initial
            || (window.seen - initial)
                .is_multiple_of(u64::from(self.config.sampling_thereafter.max(1)))
    }

    pub(crate) fn export(
        &self,
        tenant: &TenantId,
        payload: &Payload,
        num_spans: usize,
    ) -> Result<Exported, ExportError> {
        if !self.sampled() {
            return Ok(Exported::default());
        }
        let resource_spans = payload.decoded()?;
        info!(
            exporter = %self.id,
            tenant = %tenant,
            resource_spans = resource_spans.len(),
            spans = num_spans,
            "traces"
        );
        if self.config.verbosity == Verbosity::Basic {
            return Ok(Exported::default());
        }
        for rs in resource_spans.iter() {
            let service = service_name(rs);
            for ss in &rs.scope_spans {
                let scope = ss
                    .scope
                    .as_ref()
                    .map(|scope| scope.name.as_str())
                    .unwrap_or("");
                for span in &ss.spans {
                    let trace_id = TraceId::from_slice(&span.trace_id)
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| hex::encode(&span.trace_id));
                    let span_id = SpanId::from_slice(&span.span_id)
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| hex::encode(&span.span_id));
                    match self.config.verbosity {
                        Verbosity::Detailed => info!(
                            exporter = %self.id,
                            tenant = %tenant,
                            service = service,
                            scope = scope,
                            trace_id = %trace_id,
                            span_id = %span_id,
                            span = ?span,
                            resource = ?rs.resource,
                            "span"
                        ),
                        _ => info!(
                            exporter = %self.id,
                            tenant = %tenant,
                            service = service,
                            trace_id = %trace_id,
                            span_id = %span_id,
                            name = %span.name,
                            "span"
                        ),
                    }
                }
            }
        }
        Ok(Exported::default())
    }
}

fn service_name(rs: &OtlpResourceSpans) -> &str {
    rs.resource
        .as_ref()
        .and_then(|resource| {
            resource
                .attributes
                .iter()
                .find(|kv| kv.key == "service.name")
        })
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| match &value.value {
            Some(OtlpValue::StringValue(name)) => Some(name.as_str()),
            _ => None,
        })
        .unwrap_or("")
}
