//! The merge of a compaction: several blocks' traces, each stream sorted by trace ID,
//! become one sorted stream in which every trace holds the spans of all its inputs once.
//!
//! It is a k-way merge over streams (k is at most `compaction.max_input_blocks`), so it
//! holds one pending trace per input, never whole blocks. Synchronous and CPU-bound: the
//! compactor runs it on a blocking thread, feeding the block encoder directly.

use std::collections::HashSet;
use std::iter::Peekable;

use prost::Message;

use crate::otlp::TraceId;
use crate::server::block::{BlockError, TracePieces};

/// What a merge did, once its stream is consumed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeStats {
    /// Traces whose spans came from more than one input.
    pub traces_combined: u64,
    pub spans_deduplicated: u64,
}

/// Sorted, unique traces from sorted inputs; see the module documentation.
pub struct MergedTraces<I: Iterator> {
    inputs: Vec<Peekable<I>>,
    stats: MergeStats,
}

impl<I: Iterator> std::fmt::Debug for MergedTraces<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedTraces")
            .field("inputs", &self.inputs.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl<I> MergedTraces<I>
where
    I: Iterator<Item = Result<TracePieces, BlockError>>,
{
    /// `inputs` in the order their pieces should appear within a merged trace (oldest
    /// block first, as a query would have returned them).
    pub fn new(inputs: Vec<I>) -> MergedTraces<I> {
        MergedTraces {
            inputs: inputs.into_iter().map(Iterator::peekable).collect(),
            stats: MergeStats::default(),
        }
    }

    pub fn stats(&self) -> MergeStats {
        self.stats
    }
}

impl<I> Iterator for MergedTraces<I>
where
    I: Iterator<Item = Result<TracePieces, BlockError>>,
{
    type Item = Result<TracePieces, BlockError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut smallest: Option<TraceId> = None;
        for input in &mut self.inputs {
            match input.peek() {
                None => {}
                Some(Err(_)) => return input.next(),
                Some(Ok(trace)) if smallest.is_none_or(|id| trace.trace_id < id) => {
                    smallest = Some(trace.trace_id);
                }
                Some(Ok(_)) => {}
            }
        }
        let trace_id = smallest?;
        let mut merged = TracePieces {
            trace_id,
            batches: Vec::new(),
        };
        let mut sources = 0;
        for input in &mut self.inputs {
            if let Some(Ok(trace)) = input.next_if(|t| matches!(t, Ok(t) if t.trace_id == trace_id))
            {
                merged.batches.extend(trace.batches);
                sources += 1;
            }
        }
        if sources > 1 {
            self.stats.traces_combined += 1;
        }
        self.stats.spans_deduplicated += dedupe_spans(&mut merged);
        Some(Ok(merged))
    }
}

/// Drops repeated copies of a span (a client retry, or a span written to two blocks),
/// keeping the first. Copies are spans with the same ID whose content, resource and scope
/// are identical; spans that only share an ID are all kept, since dropping one would lose
/// data. ResourceSpans and ScopeSpans left empty are removed. Returns how many spans were
/// dropped.
pub fn dedupe_spans(trace: &mut TracePieces) -> u64 {
    if !has_repeated_span_id(trace) {
        return 0;
    }
    let mut seen: HashSet<SpanIdentity> = HashSet::new();
    let mut dropped = 0u64;
    for resource_spans in &mut trace.batches {
        let resource = resource_spans.resource.as_ref().map(Message::encode_to_vec);
        for scope_spans in &mut resource_spans.scope_spans {
            let scope = scope_spans.scope.as_ref().map(Message::encode_to_vec);
            let before = scope_spans.spans.len();
            scope_spans.spans.retain(|span| {
                seen.insert(SpanIdentity {
                    resource: resource.clone(),
                    resource_schema_url: resource_spans.schema_url.clone(),
                    scope: scope.clone(),
                    scope_schema_url: scope_spans.schema_url.clone(),
                    span: span.encode_to_vec(),
                })
            });
            dropped += (before - scope_spans.spans.len()) as u64;
        }
        resource_spans
            .scope_spans
            .retain(|scope_spans| !scope_spans.spans.is_empty());
    }
    trace
        .batches
        .retain(|resource_spans| !resource_spans.scope_spans.is_empty());
    dropped
}

/// The cheap check first: most traces have no repeated span ID, and only those that do
/// pay for encoding every span.
fn has_repeated_span_id(trace: &TracePieces) -> bool {
    let mut ids: HashSet<&[u8]> = HashSet::new();
    trace
        .batches
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .any(|span| !ids.insert(span.span_id.as_slice()))
}

/// Everything that makes two stored spans the same span, as encoded bytes.
#[derive(PartialEq, Eq, Hash)]
struct SpanIdentity {
    resource: Option<Vec<u8>>,
    resource_schema_url: String,
    scope: Option<Vec<u8>>,
    scope_schema_url: String,
    span: Vec<u8>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::otlp::{OtlpResourceSpans, OtlpScopeSpans, OtlpSpan};
    use crate::testing::{arb_sorted_traces, make_trace_for_test};

    fn spans(trace: &TracePieces) -> Vec<&OtlpSpan> {
        trace
            .batches
            .iter()
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
            .collect()
    }

    fn merge(inputs: Vec<Vec<TracePieces>>) -> (Vec<TracePieces>, MergeStats) {
        let mut merged = MergedTraces::new(
            inputs
                .into_iter()
                .map(|traces| traces.into_iter().map(Ok))
                .collect(),
        );
        let traces = merged.by_ref().collect::<Result<Vec<_>, _>>().unwrap();
        (traces, merged.stats())
    }

    #[test]
    fn exact_copies_are_dropped_and_same_id_different_content_kept() {
        let mut trace = make_trace_for_test(1, 4);
        let original = trace.clone();
        // The whole trace again (a retried export), plus a span reusing an ID with
        // other content.
        trace.batches.extend(original.batches.clone());
        let mut impostor = original.batches[0].clone();
        impostor.scope_spans[0].spans.truncate(1);
        impostor.scope_spans[0].spans[0].name = "other".into();
        trace.batches.push(impostor);

        assert_eq!(dedupe_spans(&mut trace), 4);
        assert_eq!(spans(&trace).len(), 5);
        assert_eq!(trace.batches[..original.batches.len()], original.batches);
        assert_eq!(spans(&trace)[4].name, "other");
    }

    #[test]
    fn a_copy_under_another_resource_is_kept() {
        let mut trace = make_trace_for_test(2, 2);
        let mut moved = trace.batches[0].clone();
        moved.resource = None;
        trace.batches.push(moved);
        let before = spans(&trace).len();
        assert_eq!(dedupe_spans(&mut trace), 0);
        assert_eq!(spans(&trace).len(), before);
    }

    #[test]
    fn emptied_groups_are_removed() {
        let mut trace = make_trace_for_test(3, 1);
        let copy = trace.batches[0].clone();
        trace.batches.push(OtlpResourceSpans {
            scope_spans: vec![OtlpScopeSpans::default(), copy.scope_spans[0].clone()],
            ..copy
        });
        assert_eq!(dedupe_spans(&mut trace), 1);
        assert_eq!(trace.batches.len(), 1);
    }

    #[test]
    fn merge_interleaves_inputs_in_trace_id_order_and_combines_shared_traces() {
        let a = make_trace_for_test(10, 2);
        let b = make_trace_for_test(11, 3);
        let c = make_trace_for_test(12, 1);
        let mut sorted = vec![a.clone(), b.clone(), c.clone()];
        sorted.sort_by_key(|t| t.trace_id);
        // Input 1 holds the smallest and largest; input 2 the middle one and the rest of
        // the largest.
        let mut tail = sorted[2].clone();
        let split = tail.batches.split_off(1);
        tail.batches = split;
        let mut head = sorted[2].clone();
        head.batches.truncate(1);
        let (merged, stats) = merge(vec![
            vec![sorted[0].clone(), head],
            vec![sorted[1].clone(), tail],
        ]);
        assert_eq!(merged, sorted);
        assert_eq!(
            stats,
            MergeStats {
                traces_combined: 1,
                spans_deduplicated: 0,
            }
        );
    }

    #[test]
    fn an_input_error_stops_the_merge() {
        let trace = make_trace_for_test(20, 1);
        let failing = vec![Err(BlockError::BadTraceId)].into_iter();
        let fine = vec![Ok(trace)].into_iter();
        let mut merged = MergedTraces::new(vec![fine, failing]);
        assert!(merged.any(|t| t.is_err()));
    }

    /// The spans of `traces`, encoded, as a multiset.
    fn span_multiset(traces: &[TracePieces]) -> BTreeMap<Vec<u8>, usize> {
        let mut set = BTreeMap::new();
        for trace in traces {
            for span in spans(trace) {
                *set.entry(span.encode_to_vec()).or_default() += 1;
            }
        }
        set
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Random traces, each span written to one or more of up to four blocks: the
        /// merge returns every trace once, in order, with every span exactly once.
        #[test]
        fn merge_equals_the_deduplicated_union(
            traces in arb_sorted_traces(6),
            placement in proptest::collection::vec((0usize..4, 0usize..4), 64),
        ) {
            let mut blocks: Vec<Vec<TracePieces>> = vec![Vec::new(); 4];
            let mut cursor = 0usize;
            let mut written = 0usize;
            for trace in &traces {
                for resource_spans in &trace.batches {
                    for scope_spans in &resource_spans.scope_spans {
                        for span in &scope_spans.spans {
                            let (first, extra) = placement[cursor % placement.len()];
                            cursor += 1;
                            // `extra` != `first` duplicates the span into a second block.
                            for block in [first, extra] {
                                let pieces = &mut blocks[block];
                                if pieces.last().is_none_or(|t| t.trace_id != trace.trace_id) {
                                    pieces.push(TracePieces { trace_id: trace.trace_id, batches: Vec::new() });
                                }
                                let last = pieces.last_mut().unwrap();
                                last.batches.push(OtlpResourceSpans {
                                    scope_spans: vec![OtlpScopeSpans {
                                        spans: vec![span.clone()],
                                        ..scope_spans.clone()
                                    }],
                                    ..resource_spans.clone()
                                });
                                written += 1;
                                if extra == first {
                                    break;
                                }
                            }
                        }
                    }
                }
            }
            let (merged, stats) = merge(blocks);
            let with_spans: Vec<&TracePieces> =
                traces.iter().filter(|t| !spans(t).is_empty()).collect();
            prop_assert_eq!(
                merged.iter().map(|t| t.trace_id).collect::<Vec<_>>(),
                with_spans.iter().map(|t| t.trace_id).collect::<Vec<_>>()
            );
            // Generated spans may themselves repeat within a trace: the expectation is
            // the set of distinct (resource, scope, span) identities.
            let mut expected = traces.clone();
            for trace in &mut expected {
                dedupe_spans(trace);
            }
            prop_assert_eq!(span_multiset(&merged), span_multiset(&expected));
            prop_assert_eq!(stats.spans_deduplicated as usize + spans_of(&merged), written);
        }
    }

    fn spans_of(traces: &[TracePieces]) -> usize {
        traces.iter().map(|t| spans(t).len()).sum()
    }
}
