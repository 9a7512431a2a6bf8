//! Per-span admission checks. A span that can't be stored (bad IDs) is removed and
//! counted so the receiver can answer with OTLP `partial_success` while keeping the rest.

use super::{OtlpKeyValue, OtlpResourceSpans, OtlpSpan, OtlpValue, TraceId};

/// What was removed from a batch, for the OTLP `partial_success` answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub num_spans: u64,
    /// Reason for the first rejected span; OTLP carries one message per response.
    pub first_reason: Option<String>,
}

impl Rejected {
    fn record(&mut self, reason: String) {
        self.num_spans += 1;
        self.first_reason.get_or_insert(reason);
    }

    /// Folds another rejection summary into this one.
    pub fn merge(&mut self, other: Rejected) {
        self.num_spans += other.num_spans;
        if self.first_reason.is_none() {
            self.first_reason = other.first_reason;
        }
    }
}

fn span_problem(span: &OtlpSpan) -> Option<String> {
    if span.trace_id.len() != 16 {
        return Some(format!(
            "span has a trace_id of {} bytes, want 16",
            span.trace_id.len()
        ));
    }
    if span.trace_id.iter().all(|b| *b == 0) {
        return Some("span has an all-zero trace_id".to_string());
    }
    if span.span_id.len() != 8 {
        return Some(format!(
            "span has a span_id of {} bytes, want 8",
            span.span_id.len()
        ));
    }
    if !span.parent_span_id.is_empty() && span.parent_span_id.len() != 8 {
        return Some(format!(
            "span has a parent_span_id of {} bytes, want 0 or 8",
            span.parent_span_id.len()
        ));
    }
    None
}

/// Removes spans that can't be stored and drops scopes and resources left empty.
pub fn retain_valid_spans(resource_spans: &mut Vec<OtlpResourceSpans>) -> Rejected {
    retain_spans(resource_spans, |_, span| span_problem(span))
}

/// Removes spans with an attribute value (string or bytes, also inside arrays and maps)
/// longer than `max_bytes` — on the span, its events or links, or its resource — and
/// drops scopes and resources left empty. The reason names `limit_key`.
pub fn retain_spans_with_values_within(
    resource_spans: &mut Vec<OtlpResourceSpans>,
    max_bytes: usize,
    limit_key: &str,
) -> Rejected {
    retain_spans(resource_spans, |resource, span| {
        let attributes = resource
            .iter()
            .chain(&span.attributes)
            .chain(span.events.iter().flat_map(|event| &event.attributes))
            .chain(span.links.iter().flat_map(|link| &link.attributes));
        let too_long = attributes
            .filter_map(|kv| Some((kv, value_len(kv.value.as_ref()?.value.as_ref()?))))
            .find(|(_, len)| *len > max_bytes)?;
        Some(format!(
            "attribute {:?} has a value of {} bytes, over {limit_key} = {max_bytes}",
            too_long.0.key, too_long.1
        ))
    })
}

/// Removes the spans whose trace `refuse` gives a reason for and drops scopes and
/// resources left empty.
pub fn retain_spans_by_trace(
    resource_spans: &mut Vec<OtlpResourceSpans>,
    mut refuse: impl FnMut(&TraceId) -> Option<String>,
) -> Rejected {
    retain_spans(resource_spans, |_, span| {
        refuse(&TraceId::from_slice(&span.trace_id)?)
    })
}

/// The longest string or bytes value inside `value`.
fn value_len(value: &OtlpValue) -> usize {
    match value {
        OtlpValue::StringValue(s) => s.len(),
        OtlpValue::BytesValue(b) => b.len(),
        OtlpValue::ArrayValue(array) => array
            .values
            .iter()
            .filter_map(|v| v.value.as_ref())
            .map(value_len)
            .max()
            .unwrap_or(0),
        OtlpValue::KvlistValue(list) => list
            .values
            .iter()
            .filter_map(|kv| kv.value.as_ref()?.value.as_ref())
            .map(value_len)
            .max()
            .unwrap_or(0),
        OtlpValue::BoolValue(_)
        | OtlpValue::IntValue(_)
        | OtlpValue::DoubleValue(_)
        | OtlpValue::StringValueStrindex(_) => 0,
    }
}

/// Removes the spans `problem` gives a reason for (it sees the resource attributes and
/// the span) and drops scopes and resources left empty.
fn retain_spans(
    resource_spans: &mut Vec<OtlpResourceSpans>,
    mut problem: impl FnMut(&[OtlpKeyValue], &OtlpSpan) -> Option<String>,
) -> Rejected {
    let mut rejected = Rejected::default();
    for rs in resource_spans.iter_mut() {
        let resource = rs
            .resource
            .as_ref()
            .map_or(&[][..], |resource| &resource.attributes[..]);
        for ss in rs.scope_spans.iter_mut() {
            ss.spans.retain(|span| match problem(resource, span) {
                None => true,
                Some(reason) => {
                    rejected.record(reason);
                    false
                }
            });
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    resource_spans.retain(|rs| !rs.scope_spans.is_empty());
    rejected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{OtlpAnyValue, OtlpArrayValue, OtlpEvent, OtlpResource, OtlpScopeSpans};

    fn attr(key: &str, value: OtlpValue) -> OtlpKeyValue {
        OtlpKeyValue {
            key: key.into(),
            value: Some(OtlpAnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    #[test]
    fn long_values_anywhere_reject_their_spans_and_name_the_limit() {
        let long = || OtlpValue::StringValue("x".repeat(11));
        let ok = span(vec![1; 16], vec![1; 8]);
        let mut on_span = span(vec![1; 16], vec![2; 8]);
        on_span.attributes.push(attr("http.url", long()));
        let mut in_event = span(vec![1; 16], vec![3; 8]);
        in_event.events.push(OtlpEvent {
            attributes: vec![attr(
                "stack",
                OtlpValue::ArrayValue(OtlpArrayValue {
                    values: vec![OtlpAnyValue {
                        value: Some(long()),
                    }],
                }),
            )],
            ..Default::default()
        });
        let batch = |spans: Vec<OtlpSpan>, resource: Vec<OtlpKeyValue>| OtlpResourceSpans {
            resource: Some(OtlpResource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![OtlpScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut batches = vec![
            batch(vec![ok.clone(), on_span, in_event], Vec::new()),
            batch(vec![ok], vec![attr("host.name", long())]),
        ];
        let rejected = retain_spans_with_values_within(&mut batches, 10, "limits.max");
        assert_eq!(rejected.num_spans, 3);
        assert_eq!(
            rejected.first_reason.as_deref(),
            Some("attribute \"http.url\" has a value of 11 bytes, over limits.max = 10")
        );
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].scope_spans[0].spans.len(), 1);
    }

    fn span(trace_id: Vec<u8>, span_id: Vec<u8>) -> OtlpSpan {
        OtlpSpan {
            trace_id,
            span_id,
            name: "s".into(),
            ..Default::default()
        }
    }

    #[test]
    fn keeps_good_spans_and_counts_bad_ones() {
        let mut batch = vec![
            OtlpResourceSpans {
                scope_spans: vec![OtlpScopeSpans {
                    spans: vec![span(vec![1; 16], vec![2; 8]), span(vec![1; 15], vec![2; 8])],
                    ..Default::default()
                }],
                ..Default::default()
            },
            OtlpResourceSpans {
                scope_spans: vec![OtlpScopeSpans {
                    spans: vec![span(vec![0; 16], vec![2; 8])],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ];
        let rejected = retain_valid_spans(&mut batch);
        assert_eq!(rejected.num_spans, 2);
        assert_eq!(
            rejected.first_reason.as_deref(),
            Some("span has a trace_id of 15 bytes, want 16")
        );
        assert_eq!(batch.len(), 1, "the resource left empty is dropped");
        assert_eq!(batch[0].scope_spans[0].spans.len(), 1);
    }
}
