//! What a query needs from storage, decided once per request: which columns to decode,
//! which conditions can be checked on a trace's piece (its spans in one block, or in the
//! head) and on a row group's statistics, and whether whole traces are needed at all.
//!
//! A field is *local* when its value on a span depends on that span alone (its own
//! fields, resource, scope, events, links). Conditions on local fields can be checked
//! on any piece holding the span; conditions on trace-wide fields (`rootName`,
//! `traceDuration`, `childCount`, nested-set numbers, `parent.` attributes) need the
//! whole trace, so pieces and row groups treat them as satisfied.
//!
//! A query is *span-local* when whether a span is selected depends on that span alone
//! (filters joined by `||` or `|`, plus `select()`). For such a query a trace matches
//! exactly when one of its pieces does, which lets the scan drop non-matching pieces
//! without assembling their trace, and lets metrics count spans piece by piece.

use crate::server::block::{ColumnBounds, RowGroupSummary};
use crate::traceql::ast::{
    AttributeScope, FieldRef, Intrinsic, Literal, MetricsExpr, MetricsFn, SpansetExpr, SpansetOp,
    Stage,
};
use crate::traceql::model::{Kind, Status};
use crate::traceql::{Condition, ConditionOp, FetchRequest};

use super::convert::Projection;

pub(crate) fn is_local_field(field: &FieldRef) -> bool {
    match field {
        FieldRef::Attribute(attr) => !attr.parent,
        FieldRef::Intrinsic { intrinsic, .. } => !matches!(
            intrinsic,
            Intrinsic::Parent
                | Intrinsic::ChildCount
                | Intrinsic::NestedSetLeft
                | Intrinsic::NestedSetRight
                | Intrinsic::NestedSetParent
                | Intrinsic::RootName
                | Intrinsic::RootServiceName
                | Intrinsic::TraceDuration
        ),
    }
}

/// See the module docs.
pub(crate) fn is_span_local_search(expr: &SpansetExpr) -> bool {
    match expr {
        SpansetExpr::Filter(filter) => {
            let mut local = true;
            filter
                .expr
                .visit_fields(&mut |field| local &= is_local_field(field));
            local
        }
        SpansetExpr::Op {
            op: SpansetOp::Union,
            lhs,
            rhs,
            ..
        } => is_span_local_search(lhs) && is_span_local_search(rhs),
        SpansetExpr::Op { .. } => false,
        SpansetExpr::Pipeline(stages) => stages.iter().all(|stage| match stage {
            Stage::Spanset(expr) => is_span_local_search(expr),
            Stage::Select { fields, .. } => fields.iter().all(|f| is_local_field(&f.field)),
            _ => false,
        }),
    }
}

/// A metrics expression whose every series value is a sum over single spans that a
/// span-local filter selects, grouped by local fields.
pub(crate) fn is_span_local_metrics(expr: &MetricsExpr) -> bool {
    match expr {
        MetricsExpr::Query(query) => {
            !matches!(query.func, MetricsFn::Compare { .. })
                && is_span_local_search(&query.source)
                && query.func.field().is_none_or(|f| is_local_field(&f.field))
                && query.by.iter().all(|b| is_local_field(&b.field))
        }
        MetricsExpr::Math { lhs, rhs, .. } => {
            is_span_local_metrics(lhs) && is_span_local_metrics(rhs)
        }
        MetricsExpr::Scalar { .. } => true,
        MetricsExpr::Second { input, .. } => is_span_local_metrics(input),
    }
}

fn condition_field(condition: &Condition) -> &FieldRef {
    match condition {
        Condition::Exists(field) | Condition::Compare { field, .. } => field,
    }
}

/// The request as it applies to one piece of a trace: conditions on trace-wide fields
/// cannot be decided there, so they are dropped from a conjunction, and make a
/// disjunction unprunable.
pub(crate) fn piece_request(request: &FetchRequest) -> FetchRequest {
    let mut piece = request.clone();
    if request.all_conditions {
        piece
            .conditions
            .retain(|c| is_local_field(condition_field(c)));
    } else if !request
        .conditions
        .iter()
        .all(|c| is_local_field(condition_field(c)))
    {
        piece.conditions.clear();
        piece.all_conditions = true;
    }
    piece
}

/// The blob columns the request's fields live in. The resource's `service.name` has its
/// own column, so reading it alone needs no resource blob (a `service.name` that is not
/// a string is then invisible, like in the column).
pub(crate) fn projection(request: &FetchRequest) -> Projection {
    if request.all_fields {
        return Projection::ALL;
    }
    request
        .fields
        .iter()
        .fold(Projection::default(), |acc, field| {
            acc.union(field_projection(field))
        })
}

/// The projection of span-local work that returns no spans (metrics, tag values):
/// besides unread blobs, the fixed columns that only search results and trace
/// structure need are left out, unless the request reads them. `span_ids`: spans are
/// still named somewhere (metrics exemplars).
pub(crate) fn span_local_projection(request: &FetchRequest, span_ids: bool) -> Projection {
    let mut p = projection(request);
    if request.all_fields {
        return p;
    }
    let reads = |wanted: &[Intrinsic]| {
        request.fields.iter().any(|field| {
            matches!(field, FieldRef::Intrinsic { intrinsic, .. } if wanted.contains(intrinsic))
        })
    };
    // Every intrinsic that looks at span IDs, trace structure or the root, local or not.
    let structural = [
        Intrinsic::SpanId,
        Intrinsic::ParentId,
        Intrinsic::Parent,
        Intrinsic::ChildCount,
        Intrinsic::NestedSetLeft,
        Intrinsic::NestedSetRight,
        Intrinsic::NestedSetParent,
        Intrinsic::RootName,
        Intrinsic::RootServiceName,
        Intrinsic::TraceDuration,
    ];
    let reads_parent_attributes = request
        .fields
        .iter()
        .any(|field| matches!(field, FieldRef::Attribute(attr) if attr.parent));
    let structure = reads(&structural) || reads_parent_attributes;
    p.skip_name = !structure && !reads(&[Intrinsic::Name]);
    p.skip_span_id = !structure && !span_ids;
    p.skip_parent_span_id = !structure;
    p.skip_status_message = !reads(&[Intrinsic::StatusMessage]);
    p
}

pub(crate) fn field_projection(field: &FieldRef) -> Projection {
    let mut p = Projection::default();
    match field {
        FieldRef::Attribute(attr) => match attr.scope {
            AttributeScope::Span => p.attributes = true,
            AttributeScope::Resource => p.resource = attr.name != "service.name",
            AttributeScope::Unscoped => {
                p.attributes = true;
                p.resource = attr.name != "service.name";
            }
            AttributeScope::Event => p.events = true,
            AttributeScope::Link => p.links = true,
            AttributeScope::Instrumentation => p.scope = true,
        },
        FieldRef::Intrinsic { intrinsic, .. } => match intrinsic {
            Intrinsic::EventName | Intrinsic::EventTimeSinceStart => p.events = true,
            Intrinsic::LinkTraceId | Intrinsic::LinkSpanId => p.links = true,
            Intrinsic::InstrumentationName | Intrinsic::InstrumentationVersion => p.scope = true,
            _ => {}
        },
    }
    p
}

/// Decides from a row group's statistics whether it can hold a span that satisfies a
/// piece request (see [`piece_request`]) within the time window.
#[derive(Debug, Clone)]
pub(crate) struct RowGroupFilter {
    conditions: Vec<Condition>,
    all_conditions: bool,
    start_unix_nanos: u64,
    end_unix_nanos: u64,
}

impl RowGroupFilter {
    pub(crate) fn new(piece_request: &FetchRequest) -> RowGroupFilter {
        RowGroupFilter {
            conditions: piece_request.conditions.clone(),
            all_conditions: piece_request.all_conditions,
            start_unix_nanos: piece_request.start_unix_nanos,
            end_unix_nanos: piece_request.end_unix_nanos,
        }
    }

    /// `cutoff`: spans starting before it cannot matter (0 = no cutoff).
    pub(crate) fn may_match(&self, rg: &RowGroupSummary, cutoff: u64) -> bool {
        if let Some(ColumnBounds {
            min_max: Some((min_start, max_start)),
            ..
        }) = &rg.start_time_unix_nano
        {
            if cutoff > 0 && *max_start < cutoff {
                return false;
            }
            if self.end_unix_nanos > 0 && *min_start > self.end_unix_nanos {
                return false;
            }
            if self.start_unix_nanos > 0 {
                // The latest end any span here can have.
                let max_duration = match &rg.duration_nano {
                    Some(ColumnBounds {
                        min_max: Some((min, max)),
                        ..
                    }) if *min >= 0 => Some(u64::try_from(*max).unwrap_or(0)),
                    _ => None,
                };
                if let Some(max_duration) = max_duration {
                    if max_start.saturating_add(max_duration) < self.start_unix_nanos {
                        return false;
                    }
                }
            }
        }
        if self.conditions.is_empty() {
            return true;
        }
        let mut possible = self.conditions.iter().map(|c| condition_possible(c, rg));
        if self.all_conditions {
            possible.all(|p| p)
        } else {
            possible.any(|p| p)
        }
    }
}

/// False only when the statistics prove no row satisfies the condition.
fn condition_possible(condition: &Condition, rg: &RowGroupSummary) -> bool {
    let Condition::Compare { field, op, value } = condition else {
        return true;
    };
    match field {
        FieldRef::Attribute(attr)
            if attr.scope == AttributeScope::Resource
                && !attr.parent
                && attr.name == "service.name" =>
        {
            match (op, value) {
                (ConditionOp::Eq, Literal::String(s)) => {
                    string_possible(rg.service_name.as_ref(), s.as_bytes())
                }
                _ => true,
            }
        }
        FieldRef::Intrinsic {
            intrinsic: Intrinsic::Name,
            ..
        } => match (op, value) {
            (ConditionOp::Eq, Literal::String(s)) => {
                string_possible(rg.name.as_ref(), s.as_bytes())
            }
            _ => true,
        },
        FieldRef::Intrinsic {
            intrinsic: Intrinsic::Status,
            ..
        } => match (op, value) {
            (ConditionOp::Eq, Literal::Status(status)) => {
                let Some(bounds) = &rg.status_code else {
                    return true;
                };
                let code = match status {
                    // A span without status is unset too (a null in the column); unknown
                    // codes also read as unset, so only a column of known codes decides.
                    Status::Unset => return true,
                    Status::Ok => 1,
                    Status::Error => 2,
                };
                bounds
                    .min_max
                    .is_some_and(|(min, max)| min <= code && code <= max)
            }
            _ => true,
        },
        FieldRef::Intrinsic {
            intrinsic: Intrinsic::Kind,
            ..
        } => match (op, value) {
            // Unknown kind codes read as unspecified, so only the other kinds prune.
            (ConditionOp::Eq, Literal::Kind(kind)) if *kind != Kind::Unspecified => {
                let Some(bounds) = &rg.kind else {
                    return true;
                };
                let code = *kind as i32;
                bounds
                    .min_max
                    .is_some_and(|(min, max)| min <= code && code <= max)
            }
            _ => true,
        },
        FieldRef::Intrinsic {
            intrinsic: Intrinsic::Duration,
            ..
        } => {
            let Some(ColumnBounds {
                min_max: Some((min, max)),
                ..
            }) = &rg.duration_nano
            else {
                return true;
            };
            // Negative stored durations read as 0 (or as huge, for wrapped u64
            // differences): no bound is trustworthy then.
            if *min < 0 {
                return true;
            }
            let threshold = match value {
                Literal::Duration(d) | Literal::Int(d) => *d as f64,
                Literal::Float(x) => *x,
                _ => return true,
            };
            let (lo, hi) = (*min as f64, *max as f64);
            match op {
                ConditionOp::Gt => hi > threshold,
                ConditionOp::Ge => hi >= threshold,
                ConditionOp::Lt => lo < threshold,
                ConditionOp::Le => lo <= threshold,
                ConditionOp::Eq => lo <= threshold && threshold <= hi,
                _ => true,
            }
        }
        _ => true,
    }
}

fn string_possible(bounds: Option<&ColumnBounds<Vec<u8>>>, value: &[u8]) -> bool {
    match bounds {
        None => true,
        Some(bounds) => bounds
            .min_max
            .as_ref()
            .is_some_and(|(min, max)| min.as_slice() <= value && value <= max.as_slice()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::traceql::ast::QueryBody;
    use crate::traceql::{compile, parse};

    fn search_local(q: &str) -> bool {
        match parse(q).unwrap().body {
            QueryBody::Search(expr) => is_span_local_search(&expr),
            QueryBody::Metrics(_) => panic!("not a search"),
        }
    }

    fn metrics_local(q: &str) -> bool {
        match parse(q).unwrap().body {
            QueryBody::Metrics(expr) => is_span_local_metrics(&expr),
            QueryBody::Search(_) => panic!("not metrics"),
        }
    }

    #[test]
    fn span_locality_of_queries() {
        assert!(search_local("{ }"));
        assert!(search_local(
            "{ span.a = 1 && resource.service.name = \"x\" }"
        ));
        assert!(search_local(
            "{ .a = 1 } || { name = \"x\" } | select(span.b)"
        ));
        assert!(search_local("{ status = error } | { duration > 1s }"));
        assert!(!search_local("{ span.a = 1 } && { span.b = 1 }"));
        assert!(!search_local("{ span.a = 1 } > { span.b = 1 }"));
        assert!(!search_local("{ } | count() > 5"));
        assert!(!search_local("{ rootServiceName = \"x\" }"));
        assert!(!search_local("{ parent.span.a = 1 }"));
        assert!(!search_local("{ } | by(span.a)"));
        assert!(metrics_local(
            "{ status = error } | rate() by (resource.service.name)"
        ));
        assert!(metrics_local("{ } | quantile_over_time(duration, 0.9)"));
        assert!(!metrics_local("{ } | rate() by (rootServiceName)"));
        assert!(!metrics_local("{ } | compare({ status = error })"));
        assert!(!metrics_local("{ } | count() > 2 | rate()"));
    }

    #[test]
    fn piece_requests_drop_trace_wide_conditions() {
        let q = compile("{ span.a = 1 && traceDuration > 1s }").unwrap();
        let piece = piece_request(&q.fetch_request(0, 0));
        assert_eq!(piece.conditions.len(), 1);
        assert!(piece.all_conditions);
        let q = compile("{ span.a = 1 || traceDuration > 1s }").unwrap();
        let piece = piece_request(&q.fetch_request(0, 0));
        assert!(piece.conditions.is_empty());
    }

    #[test]
    fn projections_follow_scopes() {
        let p = |q: &str| projection(&compile(q).unwrap().fetch_request(0, 0));
        assert_eq!(p("{ }"), Projection::default());
        let unscoped = p("{ .a = 1 }");
        assert!(unscoped.attributes && unscoped.resource && !unscoped.events);
        // The service name has a column of its own.
        assert_eq!(
            p("{ resource.service.name = \"a\" }"),
            Projection::default()
        );
        assert!(!p("{ .service.name = \"a\" }").resource);
        assert!(p("{ event:name = \"x\" }").events);
        assert!(p("{ instrumentation.x = 1 }").scope);
        assert_eq!(p("{ } | compare({ status = error })"), Projection::ALL);
    }

    #[test]
    fn span_local_metrics_leave_out_unread_fixed_columns() {
        let p = |q: &str, exemplars: bool| {
            let request = compile(q).unwrap().fetch_request(0, 0);
            span_local_projection(&request, exemplars)
        };
        let lean = p("{ } | rate() by (resource.service.name)", false);
        assert!(lean.skip_name && lean.skip_span_id && lean.skip_parent_span_id);
        assert!(lean.skip_status_message);
        assert!(!lean
            .columns()
            .contains(&crate::server::block::schema::COL_NAME));
        // Exemplars name their span.
        let with_exemplars = p("{ } | rate()", true);
        assert!(!with_exemplars.skip_span_id && with_exemplars.skip_parent_span_id);
        let by_name = p("{ status = error } | count_over_time() by (name)", false);
        assert!(!by_name.skip_name && by_name.skip_status_message);
        let by_message = p("{ statusMessage = \"x\" } | rate()", false);
        assert!(!by_message.skip_status_message);
        let by_parent = p("{ span:parentID != nil } | rate()", false);
        assert!(!by_parent.skip_parent_span_id && !by_parent.skip_span_id);
    }

    fn bounds<T>(min: T, max: T) -> Option<ColumnBounds<T>> {
        Some(ColumnBounds {
            min_max: Some((min, max)),
            has_nulls: false,
        })
    }

    fn summary() -> RowGroupSummary {
        RowGroupSummary {
            index: 0,
            num_rows: 10,
            trace_id: None,
            start_time_unix_nano: bounds(1_000, 2_000),
            duration_nano: bounds(10, 500),
            service_name: Some(ColumnBounds {
                min_max: Some((b"api".to_vec(), b"db".to_vec())),
                has_nulls: true,
            }),
            name: None,
            kind: bounds(2, 2),
            status_code: Some(ColumnBounds {
                min_max: Some((0, 1)),
                has_nulls: true,
            }),
            column_bytes: Vec::new(),
        }
    }

    #[test]
    fn row_group_statistics_prune() {
        let may = |q: &str, start: u64, end: u64, cutoff: u64| {
            let request = compile(q).unwrap().fetch_request(start, end);
            RowGroupFilter::new(&piece_request(&request)).may_match(&summary(), cutoff)
        };
        assert!(may("{ }", 0, 0, 0));
        assert!(!may("{ }", 0, 0, 2_001));
        assert!(may("{ }", 0, 0, 2_000));
        assert!(!may("{ }", 0, 999, 0));
        assert!(!may("{ }", 2_501, 0, 0));
        assert!(may("{ }", 2_500, 0, 0));
        assert!(may("{ resource.service.name = \"cart\" }", 0, 0, 0));
        assert!(!may("{ resource.service.name = \"web\" }", 0, 0, 0));
        assert!(may("{ .service.name = \"web\" }", 0, 0, 0));
        assert!(!may("{ status = error }", 0, 0, 0));
        assert!(may("{ status = ok }", 0, 0, 0));
        assert!(!may("{ kind = client }", 0, 0, 0));
        assert!(may("{ kind = server }", 0, 0, 0));
        assert!(!may("{ duration > 500ns }", 0, 0, 0));
        assert!(may("{ duration >= 500ns }", 0, 0, 0));
        assert!(!may("{ duration < 10ns }", 0, 0, 0));
        assert!(!may("{ status = error && span.a = 1 }", 0, 0, 0));
        assert!(may("{ status = error || span.a = 1 }", 0, 0, 0));
        assert!(!may("{ status = error } || { kind = client }", 0, 0, 0));
        // Name bounds are unknown here: anything may be in the row group.
        assert!(may("{ name = \"zzz\" }", 0, 0, 0));
    }
}
