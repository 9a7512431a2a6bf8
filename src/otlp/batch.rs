//! Encoding an export request as per-trace pieces. Each piece keeps the resource and
//! scope (and their schema URLs) of the spans it carries, and the order in which they
//! arrived, so a trace read back has exactly the grouping that was sent.

use std::collections::HashMap;

use prost::Message;

use super::{OtlpResourceSpans, TraceId};

/// Encodes each trace of a request as its own protobuf `TracesData`, straight from the
/// decoded request, without cloning resources, scopes or spans: the same bytes as
/// splitting the request into per-trace `ResourceSpans` (keeping each span's resource
/// and scope, in request order) and encoding each (the tests hold that reference).
///
/// Pieces are appended to `buf` one after another. Before each piece, `before_piece` is
/// called with the trace ID and the piece's length so the caller can frame it, writing
/// exactly `piece_header_len` bytes. `buf` grows once, to exactly the size needed (a
/// frozen buffer keeps its spare capacity alive). Returns the range of each piece in
/// `buf`, in order of first appearance of the trace.
pub fn encode_by_trace(
    resource_spans: &[OtlpResourceSpans],
    buf: &mut Vec<u8>,
    piece_header_len: usize,
    mut before_piece: impl FnMut(TraceId, usize, &mut Vec<u8>),
) -> Vec<(TraceId, std::ops::Range<usize>)> {
    // Per trace, the (resource, scope, span) index triples in request order.
    let mut traces: Vec<(TraceId, Vec<SpanRef>)> = Vec::new();
    let mut index: HashMap<TraceId, usize> = HashMap::new();
    for (r, rs) in resource_spans.iter().enumerate() {
        for (s, ss) in rs.scope_spans.iter().enumerate() {
            for (k, span) in ss.spans.iter().enumerate() {
                let Some(trace_id) = TraceId::from_slice(&span.trace_id) else {
                    continue;
                };
                let slot = *index.entry(trace_id).or_insert_with(|| {
                    traces.push((trace_id, Vec::new()));
                    traces.len() - 1
                });
                traces[slot].1.push(SpanRef {
                    resource: r,
                    scope: s,
                    span: k,
                    len: span.encoded_len(),
                });
            }
        }
    }
    let layouts: Vec<(Vec<ResourceGroup>, usize)> = traces
        .iter()
        .map(|(_, spans)| {
            let groups = group_spans(resource_spans, spans);
            let len = groups.iter().map(|g| field_len(g.len)).sum();
            (groups, len)
        })
        .collect();
    buf.reserve_exact(layouts.iter().map(|(_, len)| piece_header_len + len).sum());
    let mut ranges = Vec::with_capacity(traces.len());
    for ((trace_id, spans), (groups, len)) in traces.iter().zip(&layouts) {
        before_piece(*trace_id, *len, buf);
        let start = buf.len();
        for group in groups {
            write_resource_group(resource_spans, spans, group, buf);
        }
        debug_assert_eq!(buf.len() - start, *len);
        ranges.push((*trace_id, start..buf.len()));
    }
    ranges
}

#[derive(Debug, Clone, Copy)]
struct SpanRef {
    resource: usize,
    scope: usize,
    span: usize,
    len: usize,
}

/// One ResourceSpans of a trace piece: a run of span refs sharing a resource, split into
/// runs sharing a scope.
#[derive(Debug)]
struct ResourceGroup {
    resource: usize,
    /// (scope index, span-ref range, encoded ScopeSpans body length)
    scopes: Vec<(usize, std::ops::Range<usize>, usize)>,
    /// Encoded ResourceSpans body length.
    len: usize,
}

/// Length of a length-delimited field with a one-byte key (tags 1-15) and this body.
fn field_len(body: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(body as u64) + body
}

fn string_field_len(value: &str) -> usize {
    if value.is_empty() {
        0
    } else {
        field_len(value.len())
    }
}

fn group_spans(resource_spans: &[OtlpResourceSpans], spans: &[SpanRef]) -> Vec<ResourceGroup> {
    let mut groups: Vec<ResourceGroup> = Vec::new();
    let mut i = 0;
    while i < spans.len() {
        let resource = spans[i].resource;
        let rs = &resource_spans[resource];
        let mut scopes = Vec::new();
        while i < spans.len() && spans[i].resource == resource {
            let scope = spans[i].scope;
            let start = i;
            let mut body = 0;
            while i < spans.len() && spans[i].resource == resource && spans[i].scope == scope {
                body += field_len(spans[i].len);
                i += 1;
            }
            let ss = &rs.scope_spans[scope];
            body += ss.scope.as_ref().map_or(0, |m| field_len(m.encoded_len()));
            body += string_field_len(&ss.schema_url);
            scopes.push((scope, start..i, body));
        }
        let len = rs
            .resource
            .as_ref()
            .map_or(0, |m| field_len(m.encoded_len()))
            + scopes
                .iter()
                .map(|(_, _, body)| field_len(*body))
                .sum::<usize>()
            + string_field_len(&rs.schema_url);
        groups.push(ResourceGroup {
            resource,
            scopes,
            len,
        });
    }
    groups
}

fn write_len_key(tag: u32, len: usize, buf: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, buf);
    prost::encoding::encode_varint(len as u64, buf);
}

fn write_message<M: Message>(tag: u32, message: &M, len: usize, buf: &mut Vec<u8>) {
    write_len_key(tag, len, buf);
    // `encode_raw` writes the body only; the length is already known and written.
    message.encode_raw(buf);
}

fn write_string(tag: u32, value: &str, buf: &mut Vec<u8>) {
    if !value.is_empty() {
        write_len_key(tag, value.len(), buf);
        buf.extend_from_slice(value.as_bytes());
    }
}

/// Writes `TracesData.resource_spans` (tag 1) for one group, fields in tag order as
/// prost does: ResourceSpans{resource=1, scope_spans=2, schema_url=3},
/// ScopeSpans{scope=1, spans=2, schema_url=3}.
fn write_resource_group(
    resource_spans: &[OtlpResourceSpans],
    spans: &[SpanRef],
    group: &ResourceGroup,
    buf: &mut Vec<u8>,
) {
    let rs = &resource_spans[group.resource];
    write_len_key(1, group.len, buf);
    if let Some(resource) = &rs.resource {
        write_message(1, resource, resource.encoded_len(), buf);
    }
    for (scope_index, range, body) in &group.scopes {
        let ss = &rs.scope_spans[*scope_index];
        write_len_key(2, *body, buf);
        if let Some(scope) = &ss.scope {
            write_message(1, scope, scope.encoded_len(), buf);
        }
        for span_ref in &spans[range.clone()] {
            write_message(2, &ss.spans[span_ref.span], span_ref.len, buf);
        }
        write_string(3, &ss.schema_url, buf);
    }
    write_string(3, &rs.schema_url, buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::OtlpScopeSpans;

    /// The straightforward reference for [`encode_by_trace`]: split by trace ID, cloning
    /// resource and scope into each piece. Traces come out in order of first appearance;
    /// within a trace, resources, scopes and spans keep their original order; spans whose
    /// trace ID is not 16 bytes are skipped.
    fn split_by_trace(
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
            prop::option::of("[a-z]{0,4}"),
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
        fn direct_encoding_matches_split_then_encode(batch in arb_batch()) {
            let expected: Vec<(TraceId, Vec<u8>)> = split_by_trace(batch.clone())
                .into_iter()
                .map(|(id, resource_spans)| {
                    (id, crate::otlp::OtlpTracesData { resource_spans }.encode_to_vec())
                })
                .collect();
            let mut buf = vec![0xAA; 3];
            let mut announced = Vec::new();
            let ranges = encode_by_trace(&batch, &mut buf, 1, |id, len, buf| {
                announced.push((id, len));
                buf.push(0xBB);
            });
            let got: Vec<(TraceId, Vec<u8>)> = ranges
                .iter()
                .map(|(id, range)| (*id, buf[range.clone()].to_vec()))
                .collect();
            prop_assert_eq!(&got, &expected);
            let lens: Vec<(TraceId, usize)> = expected.iter().map(|(id, b)| (*id, b.len())).collect();
            prop_assert_eq!(announced, lens);
        }

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
