//! Per-span admission checks. A span that can't be stored (bad IDs) is removed and
//! counted so the receiver can answer with OTLP `partial_success` while keeping the rest.

use super::{OtlpResourceSpans, OtlpSpan};

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
    let mut rejected = Rejected::default();
    for rs in resource_spans.iter_mut() {
        for ss in rs.scope_spans.iter_mut() {
            ss.spans.retain(|span| match span_problem(span) {
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
    use crate::otlp::OtlpScopeSpans;

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
