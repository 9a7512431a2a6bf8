//! Splitting an export request into per-trace pieces. Each piece keeps the resource
//! and scope (and their schema URLs) of the spans it carries, and the order in which
//! they arrived, so a trace read back has exactly the grouping that was sent.

use std::collections::HashMap;

use super::{OtlpResourceSpans, OtlpScopeSpans, TraceId};

/// Splits resource spans by trace ID. Traces come out in order of first appearance;
/// within a trace, resources, scopes and spans keep their original order. Spans whose
/// trace ID is not 16 bytes are skipped (callers validate first).
pub fn split_by_trace(
    resource_spans: Vec<OtlpResourceSpans>,
) -> Vec<(TraceId, Vec<OtlpResourceSpans>)> {
    let mut order: Vec<(TraceId, Vec<OtlpResourceSpans>)> = Vec::new();
    let mut index: HashMap<TraceId, usize> = HashMap::new();
    for rs in resource_spans {
        // Per trace: the ResourceSpans being built for this `rs`, and its current scope.
        let mut per_trace: HashMap<TraceId, OtlpResourceSpans> = HashMap::new();
        let mut trace_order: Vec<TraceId> = Vec::new();
        for ss in rs.scope_spans {
            let mut scope_pieces: HashMap<TraceId, OtlpScopeSpans> = HashMap::new();
            let mut scope_order: Vec<TraceId> = Vec::new();
            for span in ss.spans {
                let Some(trace_id) = TraceId::from_slice(&span.trace_id) else {
                    continue;
                };
                scope_pieces
                    .entry(trace_id)
                    .or_insert_with(|| {
                        scope_order.push(trace_id);
                        OtlpScopeSpans {
                            scope: ss.scope.clone(),
                            spans: Vec::new(),
                            schema_url: ss.schema_url.clone(),
                        }
                    })
                    .spans
                    .push(span);
            }
            for trace_id in scope_order {
                let Some(piece) = scope_pieces.remove(&trace_id) else {
                    continue;
                };
                per_trace
                    .entry(trace_id)
                    .or_insert_with(|| {
                        trace_order.push(trace_id);
                        OtlpResourceSpans {
                            resource: rs.resource.clone(),
                            scope_spans: Vec::new(),
                            schema_url: rs.schema_url.clone(),
                        }
                    })
                    .scope_spans
                    .push(piece);
            }
        }
        for trace_id in trace_order {
            let Some(piece) = per_trace.remove(&trace_id) else {
                continue;
            };
            match index.get(&trace_id) {
                Some(&i) => order[i].1.push(piece),
                None => {
                    index.insert(trace_id, order.len());
                    order.push((trace_id, vec![piece]));
                }
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{OtlpKeyValue, OtlpResource, OtlpScope, OtlpSpan};
    use proptest::prelude::*;

    fn arb_batch() -> impl Strategy<Value = Vec<OtlpResourceSpans>> {
        // Few trace IDs so traces interleave across resources and scopes.
        let span = (0u8..4, any::<u64>()).prop_map(|(t, s)| OtlpSpan {
            trace_id: vec![t + 1; 16],
            span_id: s.to_le_bytes().to_vec(),
            name: format!("span-{s}"),
            ..Default::default()
        });
        let scope = (
            prop::option::of("[a-z]{1,4}"),
            "[a-z]{0,3}",
            prop::collection::vec(span, 0..6),
        )
            .prop_map(|(name, schema_url, spans)| OtlpScopeSpans {
                scope: name.map(|name| OtlpScope {
                    name,
                    ..Default::default()
                }),
                spans,
                schema_url,
            });
        let resource = (
            prop::option::of("[a-z]{1,4}"),
            "[a-z]{0,3}",
            prop::collection::vec(scope, 0..4),
        )
            .prop_map(|(svc, schema_url, scope_spans)| OtlpResourceSpans {
                resource: svc.map(|svc| OtlpResource {
                    attributes: vec![OtlpKeyValue {
                        key: "service.name".into(),
                        value: Some(crate::otlp::OtlpAnyValue {
                            value: Some(crate::otlp::OtlpValue::StringValue(svc)),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans,
                schema_url,
            });
        prop::collection::vec(resource, 0..4)
    }

    /// A span with its context: (resource, resource schema, scope, scope schema, span).
    type SpanInContext = (
        Option<OtlpResource>,
        String,
        Option<OtlpScope>,
        String,
        OtlpSpan,
    );

    /// Flattens to spans in context, in order.
    fn flatten(batch: &[OtlpResourceSpans]) -> Vec<SpanInContext> {
        let mut out = Vec::new();
        for rs in batch {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    out.push((
                        rs.resource.clone(),
                        rs.schema_url.clone(),
                        ss.scope.clone(),
                        ss.schema_url.clone(),
                        span.clone(),
                    ));
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn split_keeps_every_span_with_its_resource_and_scope(batch in arb_batch()) {
            let pieces = split_by_trace(batch.clone());
            let original = flatten(&batch);
            let mut seen = 0;
            for (trace_id, rss) in &pieces {
                let flat = flatten(rss);
                prop_assert!(flat.iter().all(|t| t.4.trace_id == trace_id.0));
                // Same spans, same context, same relative order as in the input.
                let expected: Vec<_> = original
                    .iter()
                    .filter(|t| t.4.trace_id == trace_id.0)
                    .cloned()
                    .collect();
                prop_assert_eq!(&flat, &expected);
                prop_assert!(rss.iter().all(|rs| !rs.scope_spans.is_empty()
                    && rs.scope_spans.iter().all(|ss| !ss.spans.is_empty())));
                seen += flat.len();
            }
            prop_assert_eq!(seen, original.len());
        }
    }
}
