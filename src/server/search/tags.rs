//! Tag names and tag values: the attribute keys and the values of one field, over the
//! spans a query (or every span) selects.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::tenant::TenantId;
use crate::traceql::ast::{format_duration, FieldRef, QueryBody};
use crate::traceql::eval::{eval_trace, union_of, CSpanset, TraceView};
use crate::traceql::model::find_attribute;
use crate::traceql::{AttrValue, CompiledQuery, FetchRequest, KeyValue, Trace, Value};

use super::convert::Projection;
use super::plan::{field_projection, is_local_field, is_span_local_search, projection};
use super::scan::{scan, Assembly, ScanStats, TraceSink};
use super::{SearchError, SearchService, TimeRange};

/// Upper bound on the bytes of values (or names) one request collects, after Tempo's
/// `max_bytes_per_tag_values_query`: enough for any dropdown, bounded for any store.
const MAX_COLLECTED_BYTES: usize = 1_000_000;

/// Attribute scopes, in the order Tempo's v2 response lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TagScope {
    Resource,
    Span,
    Event,
    Link,
    Instrumentation,
}

impl TagScope {
    pub const ALL: [TagScope; 5] = [
        TagScope::Resource,
        TagScope::Span,
        TagScope::Event,
        TagScope::Link,
        TagScope::Instrumentation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            TagScope::Resource => "resource",
            TagScope::Span => "span",
            TagScope::Event => "event",
            TagScope::Link => "link",
            TagScope::Instrumentation => "instrumentation",
        }
    }

    fn projection(self) -> Projection {
        let mut p = Projection::default();
        match self {
            TagScope::Resource => p.resource = true,
            TagScope::Span => p.attributes = true,
            TagScope::Event => p.events = true,
            TagScope::Link => p.links = true,
            TagScope::Instrumentation => p.scope = true,
        }
        p
    }
}

#[derive(Debug, Clone)]
pub struct TagNamesRequest {
    /// Scopes to collect; empty collects nothing.
    pub scopes: Vec<TagScope>,
    /// Only spans this search query selects; `None` for every span.
    pub query: Option<Arc<CompiledQuery>>,
    pub range: TimeRange,
    /// Names per scope at most.
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct TagNames {
    /// Sorted names per scope; scopes without names are absent.
    pub scopes: BTreeMap<TagScope, BTreeSet<String>>,
    pub stats: ScanStats,
}

/// Where tag values come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagTarget {
    /// A TraceQL field: attribute of a scope, unscoped attribute, or intrinsic.
    Field(FieldRef),
    /// A raw attribute name on spans or their resources, string values only (the v1
    /// API).
    AnyScopeString(String),
}

#[derive(Debug, Clone)]
pub struct TagValuesRequest {
    pub target: TagTarget,
    pub query: Option<Arc<CompiledQuery>>,
    pub range: TimeRange,
    pub limit: Option<usize>,
}

/// The `type` of a v2 tag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TagValueType {
    String,
    Int,
    Float,
    Bool,
    Duration,
    Keyword,
}

impl TagValueType {
    pub fn name(self) -> &'static str {
        match self {
            TagValueType::String => "string",
            TagValueType::Int => "int",
            TagValueType::Float => "float",
            TagValueType::Bool => "bool",
            TagValueType::Duration => "duration",
            TagValueType::Keyword => "keyword",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TagValue {
    pub value_type: TagValueType,
    pub value: String,
}

impl TagValue {
    pub fn new(value_type: TagValueType, value: impl Into<String>) -> TagValue {
        TagValue {
            value_type,
            value: value.into(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct TagValues {
    /// Sorted by type, then value.
    pub values: BTreeSet<TagValue>,
    pub stats: ScanStats,
}

/// Reads a tag name as a TraceQL field (`resource.service.name`, `span.x`, `.x`,
/// `span:name`, `status`, `span."a b"`); `None` when it is not exactly one field.
pub fn field_from_tag(tag: &str) -> Option<FieldRef> {
    use crate::traceql::ast::{FieldExpr, SpansetExpr};
    let query = crate::traceql::parse(&format!("{{ {tag} }}")).ok()?;
    match query.body {
        QueryBody::Search(SpansetExpr::Filter(filter)) if query.hints.is_empty() => {
            match filter.expr {
                FieldExpr::Field { field, .. } => Some(field),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Spans of `trace` the query selects (all spans without a query).
fn selected_spans(filter: Option<&CSpanset>, view: &TraceView<'_>) -> Vec<u32> {
    match filter {
        Some(expr) => union_of(&eval_trace(expr, view)),
        None => (0..view.len() as u32).collect(),
    }
}

fn value_of(value: &Value, out: &mut Vec<TagValue>) {
    let tag = match value {
        Value::Nil => return,
        Value::String(s) => TagValue::new(TagValueType::String, s.clone()),
        Value::Int(i) => TagValue::new(TagValueType::Int, i.to_string()),
        Value::Float(x) => TagValue::new(TagValueType::Float, x.to_string()),
        Value::Bool(b) => TagValue::new(TagValueType::Bool, b.to_string()),
        Value::Duration(d) => TagValue::new(TagValueType::Duration, format_duration(*d)),
        Value::Status(s) => TagValue::new(TagValueType::Keyword, s.name()),
        Value::Kind(k) => TagValue::new(TagValueType::Keyword, k.name()),
        Value::Array(items) => {
            for item in items {
                value_of(item, out);
            }
            return;
        }
    };
    out.push(tag);
}

fn string_values(attributes: &[KeyValue], name: &str, out: &mut Vec<TagValue>) {
    match find_attribute(attributes, name) {
        Some(AttrValue::String(s)) => out.push(TagValue::new(TagValueType::String, s.clone())),
        Some(AttrValue::Array(items)) => {
            for item in items {
                if let AttrValue::String(s) = item {
                    out.push(TagValue::new(TagValueType::String, s.clone()));
                }
            }
        }
        _ => {}
    }
}

/// A set bounded by a count and a byte budget. Under the count it keeps the smallest
/// items, not the first seen: blocks are scanned in parallel, and an answer that depended
/// on which scan finished first would change from one request to the next.
#[derive(Debug)]
struct Bounded<T: Ord> {
    items: BTreeSet<T>,
    bytes: usize,
    limit: usize,
}

impl<T: Ord> Bounded<T> {
    fn new(limit: Option<usize>) -> Bounded<T> {
        Bounded {
            items: BTreeSet::new(),
            bytes: 0,
            limit: limit.unwrap_or(usize::MAX),
        }
    }

    /// Only the byte budget stops a scan early; the count is kept by eviction.
    fn is_full(&self) -> bool {
        self.bytes >= MAX_COLLECTED_BYTES
    }

    fn insert(&mut self, item: T, size: usize) {
        if self.is_full() {
            return;
        }
        if self.items.len() >= self.limit {
            match self.items.last() {
                Some(largest) if item < *largest => {}
                _ => return,
            }
        }
        if self.items.insert(item) {
            self.bytes += size;
            if self.items.len() > self.limit {
                // The evicted item's size is not tracked; the budget stays an upper bound.
                self.items.pop_last();
            }
        }
    }
}

struct NamesSink {
    filter: Option<Arc<CSpanset>>,
    scopes: Vec<TagScope>,
    found: Mutex<BTreeMap<TagScope, Bounded<String>>>,
}

impl TraceSink for NamesSink {
    fn accept(&self, traces: Vec<Trace>) -> bool {
        let mut found = self.found.lock();
        for trace in &traces {
            let view = TraceView::new(trace);
            for i in selected_spans(self.filter.as_deref(), &view) {
                let span = view.span(i);
                for scope in &self.scopes {
                    let Some(names) = found.get_mut(scope) else {
                        continue;
                    };
                    let mut add = |list: &[KeyValue]| {
                        for kv in list {
                            if !names.items.contains(&kv.key) {
                                names.insert(kv.key.clone(), kv.key.len());
                            }
                        }
                    };
                    match scope {
                        TagScope::Resource => add(&span.resource.attributes),
                        TagScope::Span => add(&span.attributes),
                        TagScope::Instrumentation => add(&span.scope.attributes),
                        TagScope::Event => span.events.iter().for_each(|e| add(&e.attributes)),
                        TagScope::Link => span.links.iter().for_each(|l| add(&l.attributes)),
                    }
                }
            }
        }
        !found.values().all(Bounded::is_full)
    }
}

struct ValuesSink {
    filter: Option<Arc<CSpanset>>,
    target: TagTarget,
    found: Mutex<Bounded<TagValue>>,
}

impl TraceSink for ValuesSink {
    fn accept(&self, traces: Vec<Trace>) -> bool {
        let mut values = Vec::new();
        for trace in &traces {
            let view = TraceView::new(trace);
            for i in selected_spans(self.filter.as_deref(), &view) {
                match &self.target {
                    TagTarget::Field(field) => {
                        value_of(&view.field(i, field).to_value(), &mut values)
                    }
                    TagTarget::AnyScopeString(name) => {
                        let span = view.span(i);
                        string_values(&span.attributes, name, &mut values);
                        string_values(&span.resource.attributes, name, &mut values);
                    }
                }
            }
        }
        let mut found = self.found.lock();
        for value in values {
            let size = value.value.len();
            found.insert(value, size);
        }
        !found.is_full()
    }
}

/// The query's spanset filter, when it narrows anything, and whether it is span-local.
fn tag_filter(query: Option<&Arc<CompiledQuery>>) -> Result<Option<(CSpanset, bool)>, SearchError> {
    let Some(query) = query else {
        return Ok(None);
    };
    let QueryBody::Search(expr) = &query.query().body else {
        return Ok(None);
    };
    if query.fetch_request(0, 0).conditions.is_empty() && is_span_local_search(expr) {
        // `{}` and friends select every span: no filter to evaluate.
        return Ok(None);
    }
    let compiled = CSpanset::compile(expr).map_err(SearchError::InvalidRequest)?;
    Ok(Some((compiled, is_span_local_search(expr))))
}

/// The fetch request: the query's conditions (if any) over the range, reading `extra`.
fn tag_request(
    query: Option<&Arc<CompiledQuery>>,
    filtered: bool,
    range: TimeRange,
) -> FetchRequest {
    let (start, end) = range.bounds();
    match query {
        Some(query) if filtered => query.fetch_request(start, end),
        _ => FetchRequest {
            start_unix_nanos: start,
            end_unix_nanos: end,
            conditions: Vec::new(),
            all_conditions: true,
            fields: Vec::new(),
            all_fields: false,
        },
    }
}

impl SearchService {
    /// Attribute names per scope.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tag_names(
        &self,
        tenant: &TenantId,
        request: TagNamesRequest,
    ) -> Result<TagNames, SearchError> {
        if request.scopes.is_empty() {
            return Ok(TagNames::default());
        }
        let filter = tag_filter(request.query.as_ref())?;
        let fetch = tag_request(request.query.as_ref(), filter.is_some(), request.range);
        let columns = request
            .scopes
            .iter()
            .fold(projection(&fetch), |p, scope| p.union(scope.projection()));
        let (filter, assembly) = match filter {
            None => (None, Assembly::Pieces),
            Some((expr, true)) => (Some(Arc::new(expr)), Assembly::Pieces),
            Some((expr, false)) => (Some(Arc::new(expr)), Assembly::Whole),
        };
        let sink = Arc::new(NamesSink {
            filter,
            scopes: request.scopes.clone(),
            found: Mutex::new(
                request
                    .scopes
                    .iter()
                    .map(|s| (*s, Bounded::new(request.limit)))
                    .collect(),
            ),
        });
        let stats = scan(
            self.sources(tenant).await?,
            &fetch,
            self.block_selection(request.range),
            assembly,
            columns,
            Arc::clone(&sink) as Arc<dyn TraceSink>,
            self.scan_settings(),
        )
        .await?;
        let found = std::mem::take(&mut *sink.found.lock());
        let scopes = found
            .into_iter()
            .filter(|(_, names)| !names.items.is_empty())
            .map(|(scope, names)| (scope, names.items))
            .collect();
        Ok(TagNames { scopes, stats })
    }

    /// Distinct values of one field.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tag_values(
        &self,
        tenant: &TenantId,
        request: TagValuesRequest,
    ) -> Result<TagValues, SearchError> {
        let filter = tag_filter(request.query.as_ref())?;
        let fetch = tag_request(request.query.as_ref(), filter.is_some(), request.range);
        let (target_columns, target_local) = match &request.target {
            TagTarget::Field(field) => (field_projection(field), is_local_field(field)),
            TagTarget::AnyScopeString(_) => (
                Projection {
                    attributes: true,
                    resource: true,
                    ..Projection::default()
                },
                true,
            ),
        };
        let columns = projection(&fetch).union(target_columns);
        let (filter, assembly) = match filter {
            None if target_local => (None, Assembly::Pieces),
            None => (None, Assembly::Whole),
            Some((expr, true)) if target_local => (Some(Arc::new(expr)), Assembly::Pieces),
            Some((expr, _)) => (Some(Arc::new(expr)), Assembly::Whole),
        };
        let sink = Arc::new(ValuesSink {
            filter,
            target: request.target.clone(),
            found: Mutex::new(Bounded::new(request.limit)),
        });
        let stats = scan(
            self.sources(tenant).await?,
            &fetch,
            self.block_selection(request.range),
            assembly,
            columns,
            Arc::clone(&sink) as Arc<dyn TraceSink>,
            self.scan_settings(),
        )
        .await?;
        let values = std::mem::take(&mut sink.found.lock().items);
        Ok(TagValues { values, stats })
    }
}
