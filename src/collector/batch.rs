//! The unit that flows through a pipeline: spans of one tenant with the acknowledgements
//! of the requests they came from, and the span-count split that never loses a resource
//! or a scope.

use crate::otlp::{count_spans, OtlpResource, OtlpResourceSpans, OtlpScopeSpans, OtlpSpan};
use crate::tenant::TenantId;

use super::delivery::AckRef;

/// Spans of one tenant on their way through a pipeline.
#[derive(Debug)]
pub(crate) struct SpanBatch {
    pub(crate) tenant: TenantId,
    pub(crate) resource_spans: Vec<OtlpResourceSpans>,
    pub(crate) num_spans: usize,
    /// One per request whose spans are (partly) in this batch.
    pub(crate) acks: Vec<AckRef>,
}

impl SpanBatch {
    #[cfg(test)]
    pub(crate) fn new(
        tenant: TenantId,
        resource_spans: Vec<OtlpResourceSpans>,
        acks: Vec<AckRef>,
    ) -> SpanBatch {
        let num_spans = count_spans(&resource_spans);
        SpanBatch {
            tenant,
            resource_spans,
            num_spans,
            acks,
        }
    }

    /// Appends `other` (same tenant) to this batch.
    pub(crate) fn absorb(&mut self, mut other: SpanBatch) {
        debug_assert_eq!(self.tenant, other.tenant);
        self.resource_spans.append(&mut other.resource_spans);
        self.num_spans += other.num_spans;
        self.acks.append(&mut other.acks);
    }

    /// Splits off the first `num_spans` spans into a new batch; both halves hold every
    /// ack (each request is settled only when all of its pieces are).
    pub(crate) fn split_off_front(&mut self, num_spans: usize) -> SpanBatch {
        let front = split_front(&mut self.resource_spans, num_spans);
        let taken = count_spans(&front);
        self.num_spans -= taken;
        SpanBatch {
            tenant: self.tenant.clone(),
            resource_spans: front,
            num_spans: taken,
            acks: self.acks.clone(),
        }
    }
}

/// Moves the first `limit` spans of `resource_spans` into the returned list, keeping
/// order. A resource or scope cut in two appears in both halves with its full resource,
/// scope and schema URLs; no empty resource or scope is left behind on either side.
pub(crate) fn split_front(
    resource_spans: &mut Vec<OtlpResourceSpans>,
    limit: usize,
) -> Vec<OtlpResourceSpans> {
    let mut front = Vec::new();
    let mut remaining = limit;
    let mut consumed_resources = 0;
    for rs in resource_spans.iter_mut() {
        if remaining == 0 {
            break;
        }
        let rs_spans: usize = rs.scope_spans.iter().map(|ss| ss.spans.len()).sum();
        if rs_spans <= remaining {
            // The whole resource moves.
            remaining -= rs_spans;
            front.push(std::mem::take(rs));
            consumed_resources += 1;
            continue;
        }
        // Part of this resource: whole scopes first, then part of one scope.
        let mut piece = OtlpResourceSpans {
            resource: rs.resource.clone(),
            scope_spans: Vec::new(),
            schema_url: rs.schema_url.clone(),
        };
        let mut consumed_scopes = 0;
        for ss in rs.scope_spans.iter_mut() {
            if remaining == 0 {
                break;
            }
            if ss.spans.len() <= remaining {
                remaining -= ss.spans.len();
                piece.scope_spans.push(std::mem::take(ss));
                consumed_scopes += 1;
                continue;
            }
            let rest = ss.spans.split_off(remaining);
            let head = std::mem::replace(&mut ss.spans, rest);
            remaining = 0;
            piece.scope_spans.push(OtlpScopeSpans {
                scope: ss.scope.clone(),
                spans: head,
                schema_url: ss.schema_url.clone(),
            });
        }
        rs.scope_spans.drain(..consumed_scopes);
        front.push(piece);
        break;
    }
    resource_spans.drain(..consumed_resources);
    // Spanless resources and scopes carry nothing to export; dropping them keeps the
    // invariant that every piece holds spans.
    resource_spans.retain_mut(|rs| {
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        !rs.scope_spans.is_empty()
    });
    front.retain_mut(|rs| {
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        !rs.scope_spans.is_empty()
    });
    front
}

/// One part of a [`partition_spans`] split.
#[derive(Debug)]
pub(crate) struct Part {
    /// What the assigning function returned for these spans.
    pub(crate) index: usize,
    pub(crate) resource_spans: Vec<OtlpResourceSpans>,
    pub(crate) num_spans: usize,
}

/// Splits spans into parts by `part_of(resource, span)`, keeping order within each part.
/// A resource or scope whose spans land in several parts appears in each with its full
/// resource, scope and schema URLs; no part holds an empty resource or scope. Returns
/// the non-empty parts by increasing index; a batch wholly in one part is moved as a
/// whole, without copying.
pub(crate) fn partition_spans(
    resource_spans: Vec<OtlpResourceSpans>,
    mut part_of: impl FnMut(Option<&OtlpResource>, &OtlpSpan) -> usize,
) -> Vec<Part> {
    let assigned: Vec<usize> = resource_spans
        .iter()
        .flat_map(|rs| {
            rs.scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .map(|span| (rs.resource.as_ref(), span))
        })
        .map(|(resource, span)| part_of(resource, span))
        .collect();
    let Some(&first) = assigned.first() else {
        return Vec::new();
    };
    if assigned.iter().all(|&part| part == first) {
        let mut resource_spans = resource_spans;
        resource_spans.retain_mut(|rs| {
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
            !rs.scope_spans.is_empty()
        });
        return vec![Part {
            index: first,
            num_spans: assigned.len(),
            resource_spans,
        }];
    }
    let num_parts = assigned.iter().max().map_or(0, |max| max + 1);
    let mut parts: Vec<Part> = (0..num_parts)
        .map(|index| Part {
            index,
            resource_spans: Vec::new(),
            num_spans: 0,
        })
        .collect();
    let mut assigned = assigned.into_iter();
    for rs in resource_spans {
        let mut pieces: Vec<Option<OtlpResourceSpans>> = (0..num_parts).map(|_| None).collect();
        for ss in rs.scope_spans {
            let mut scope_pieces: Vec<Vec<OtlpSpan>> = (0..num_parts).map(|_| Vec::new()).collect();
            for span in ss.spans {
                // `assigned` has one entry per span, in this same order.
                let part = assigned.next().unwrap_or(first);
                scope_pieces[part].push(span);
            }
            for (part, spans) in scope_pieces.into_iter().enumerate() {
                if spans.is_empty() {
                    continue;
                }
                parts[part].num_spans += spans.len();
                pieces[part]
                    .get_or_insert_with(|| OtlpResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: rs.schema_url.clone(),
                    })
                    .scope_spans
                    .push(OtlpScopeSpans {
                        scope: ss.scope.clone(),
                        spans,
                        schema_url: ss.schema_url.clone(),
                    });
            }
        }
        for (part, piece) in pieces.into_iter().enumerate() {
            if let Some(piece) = piece {
                parts[part].resource_spans.push(piece);
            }
        }
    }
    parts.retain(|part| part.num_spans > 0);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{arb_resource, arb_scope};
    use proptest::prelude::*;
    use prost::Message;

    fn arb_batch() -> impl Strategy<Value = Vec<OtlpResourceSpans>> {
        let span = any::<u64>().prop_map(|id| OtlpSpan {
            trace_id: vec![7; 16],
            span_id: id.to_le_bytes().to_vec(),
            name: format!("span-{id}"),
            ..Default::default()
        });
        let scope = (arb_scope(), "[a-z]{0,3}", prop::collection::vec(span, 0..6)).prop_map(
            |(scope, schema_url, spans)| OtlpScopeSpans {
                scope,
                spans,
                schema_url,
            },
        );
        let resource = (
            arb_resource(),
            "[a-z]{0,3}",
            prop::collection::vec(scope, 0..4),
        )
            .prop_map(|(resource, schema_url, scope_spans)| OtlpResourceSpans {
                resource,
                scope_spans,
                schema_url,
            });
        prop::collection::vec(resource, 0..5)
    }

    /// A span with its resource, scope and schema URLs, as encoded protobuf so equality
    /// is bitwise (generated attributes may hold NaN, which `PartialEq` never equates).
    type SpanInContext = (Option<Vec<u8>>, String, Option<Vec<u8>>, String, OtlpSpan);

    fn flatten(batch: &[OtlpResourceSpans]) -> Vec<SpanInContext> {
        let mut out = Vec::new();
        for rs in batch {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    out.push((
                        rs.resource.as_ref().map(Message::encode_to_vec),
                        rs.schema_url.clone(),
                        ss.scope.as_ref().map(Message::encode_to_vec),
                        ss.schema_url.clone(),
                        span.clone(),
                    ));
                }
            }
        }
        out
    }

    proptest! {
        /// Splitting a batch into pieces of at most `max` spans keeps every span, in
        /// order, with exactly its resource, scope and schema URLs; no piece is empty or
        /// too large, and no piece holds an empty resource or scope.
        #[test]
        fn split_never_loses_resource_or_scope(batch in arb_batch(), max in 1usize..8) {
            let original = flatten(&batch);
            let mut rest = batch;
            let mut pieces = Vec::new();
            while count_spans(&rest) > 0 {
                let piece = split_front(&mut rest, max);
                let size = count_spans(&piece);
                prop_assert!(size > 0 && size <= max, "piece of {} spans (max {})", size, max);
                prop_assert!(piece.iter().all(|rs| !rs.scope_spans.is_empty()
                    && rs.scope_spans.iter().all(|ss| !ss.spans.is_empty())));
                pieces.push(piece);
            }
            // Every piece but the last is full.
            for piece in pieces.iter().rev().skip(1) {
                prop_assert_eq!(count_spans(piece), max);
            }
            let rejoined: Vec<SpanInContext> = pieces.iter().flat_map(|piece| flatten(piece)).collect();
            prop_assert_eq!(rejoined, original);
        }
    }

    proptest! {
        /// Each part holds exactly the spans assigned to it, in order, each with its
        /// resource, scope and schema URLs; no part holds an empty resource or scope.
        #[test]
        fn partition_never_loses_resource_or_scope(batch in arb_batch(), num_parts in 1usize..5) {
            let part_of = |span: &OtlpSpan| usize::from(span.span_id[0]) % num_parts;
            let original = flatten(&batch);
            let parts = partition_spans(batch, |_, span| part_of(span));
            let mut previous = None;
            for part in &parts {
                prop_assert!(previous < Some(part.index), "parts in increasing order");
                previous = Some(part.index);
                let expected: Vec<SpanInContext> = original
                    .iter()
                    .filter(|(_, _, _, _, span)| part_of(span) == part.index)
                    .cloned()
                    .collect();
                prop_assert!(!expected.is_empty());
                prop_assert_eq!(part.num_spans, expected.len());
                prop_assert_eq!(count_spans(&part.resource_spans), expected.len());
                prop_assert!(part.resource_spans.iter().all(|rs| !rs.scope_spans.is_empty()
                    && rs.scope_spans.iter().all(|ss| !ss.spans.is_empty())));
                prop_assert_eq!(flatten(&part.resource_spans), expected);
            }
            let total: usize = parts.iter().map(|part| part.num_spans).sum();
            prop_assert_eq!(total, original.len());
        }
    }

    #[test]
    fn split_batch_shares_acks_and_counts() {
        let (delivery, ack) = crate::collector::delivery::Delivery::new(Vec::new());
        let spans = (0..5u8)
            .map(|i| OtlpSpan {
                span_id: vec![i; 8],
                ..Default::default()
            })
            .collect();
        let mut batch = SpanBatch::new(
            TenantId::single(),
            vec![OtlpResourceSpans {
                resource: None,
                scope_spans: vec![OtlpScopeSpans {
                    scope: None,
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
            vec![ack],
        );
        let front = batch.split_off_front(2);
        assert_eq!((front.num_spans, batch.num_spans), (2, 3));
        assert_eq!((front.acks.len(), batch.acks.len()), (1, 1));
        crate::collector::delivery::commit_all(front.acks);
        crate::collector::delivery::commit_all(batch.acks);
        drop(delivery);
    }
}
