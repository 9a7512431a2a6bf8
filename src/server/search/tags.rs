//! Tag names and tag values: the attribute keys and the values of one field, over the
//! spans a query (or every span) selects.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::server::block::{BlockReader, IndexScope, IndexedType, IndexedValues, TagIndex};
use crate::server::peers::DataScope;
use crate::tenant::TenantId;
use crate::traceql::ast::{format_duration, AttributeScope, FieldRef, QueryBody};
use crate::traceql::eval::{eval_trace, union_of, CSpanset, TraceView};
use crate::traceql::model::find_attribute;
use crate::traceql::value::Val;
use crate::traceql::{AttrValue, CompiledQuery, FetchRequest, KeyValue, Trace, Value};

use super::convert::Projection;
use super::plan::{
    field_projection, is_local_field, is_span_local_search, projection, span_local_projection,
};
use super::scan::{scan, selected_blocks, Assembly, BlockSelection, ScanStats, Sources, TraceSink};
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

    /// The scope named `name` (as [`TagScope::name`] writes it).
    pub fn from_name(name: &str) -> Option<TagScope> {
        TagScope::ALL.into_iter().find(|scope| scope.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            TagScope::Resource => "resource",
            TagScope::Span => "span",
            TagScope::Event => "event",
            TagScope::Link => "link",
            TagScope::Instrumentation => "instrumentation",
        }
    }

    fn index_scope(self) -> IndexScope {
        match self {
            TagScope::Resource => IndexScope::Resource,
            TagScope::Span => IndexScope::Span,
            TagScope::Event => IndexScope::Event,
            TagScope::Link => IndexScope::Link,
            TagScope::Instrumentation => IndexScope::Instrumentation,
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
    const ALL: [TagValueType; 6] = [
        TagValueType::String,
        TagValueType::Int,
        TagValueType::Float,
        TagValueType::Bool,
        TagValueType::Duration,
        TagValueType::Keyword,
    ];

    /// The type named `name` (as [`TagValueType::name`] writes it).
    pub fn from_name(name: &str) -> Option<TagValueType> {
        TagValueType::ALL.into_iter().find(|t| t.name() == name)
    }

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

/// A sink whose findings over one source (the head, or one block) can be cached.
trait SourceSink: TraceSink {
    fn collected(&self) -> CachedTags;
}

impl SourceSink for NamesSink {
    fn collected(&self) -> CachedTags {
        CachedTags::Names(Arc::new(
            self.found
                .lock()
                .iter()
                .map(|(scope, names)| (*scope, names.items.clone()))
                .collect(),
        ))
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
        // Most spans repeat a value already seen: strings are checked before anything
        // is allocated for them.
        let mut seen_strings: HashSet<&str> = HashSet::new();
        for trace in &traces {
            let view = TraceView::new(trace);
            for i in selected_spans(self.filter.as_deref(), &view) {
                match &self.target {
                    TagTarget::Field(field) => match view.field(i, field) {
                        Val::Str(Cow::Borrowed(s)) => {
                            if seen_strings.insert(s) {
                                values.push(TagValue::new(TagValueType::String, s));
                            }
                        }
                        other => value_of(&other.to_value(), &mut values),
                    },
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

impl SourceSink for ValuesSink {
    fn collected(&self) -> CachedTags {
        CachedTags::Values(Arc::new(self.found.lock().items.clone()))
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

/// Tag names and values of whole blocks, computed once: blocks never change. Bounded by
/// the bytes of what it holds; when full it starts over (cheap to refill, and a store
/// with more distinct tags than this is answered by scanning anyway).
#[derive(Debug, Default)]
pub(crate) struct TagCache {
    entries: HashMap<(Uuid, String), CachedTags>,
    /// Blocks' tag indexes (`None`: the block has no usable one).
    indexes: HashMap<Uuid, Option<Arc<TagIndex>>>,
    bytes: usize,
}

/// Bytes of cached names and values.
const TAG_CACHE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
enum CachedTags {
    Names(Arc<BTreeMap<TagScope, BTreeSet<String>>>),
    Values(Arc<BTreeSet<TagValue>>),
}

impl CachedTags {
    fn bytes(&self) -> usize {
        match self {
            CachedTags::Names(names) => names.values().flatten().map(|n| n.len() + 32).sum(),
            CachedTags::Values(values) => values.iter().map(|v| v.value.len() + 32).sum(),
        }
    }
}

impl TagCache {
    fn get(&self, block: Uuid, key: &str) -> Option<CachedTags> {
        self.entries.get(&(block, key.to_string())).cloned()
    }

    fn put(&mut self, block: Uuid, key: String, tags: CachedTags) {
        self.make_room(tags.bytes() + key.len());
        self.entries.insert((block, key), tags);
    }

    fn index(&self, block: Uuid) -> Option<Option<Arc<TagIndex>>> {
        self.indexes.get(&block).cloned()
    }

    fn put_index(&mut self, block: Uuid, index: Option<Arc<TagIndex>>) {
        self.make_room(index.as_ref().map_or(16, |index| index.approximate_bytes()));
        self.indexes.insert(block, index);
    }

    fn make_room(&mut self, size: usize) {
        if self.bytes + size > TAG_CACHE_BYTES {
            self.entries.clear();
            self.indexes.clear();
            self.bytes = 0;
        }
        self.bytes += size;
    }
}

/// Names of `scopes` from a block's index, when it holds all of them.
fn names_from_index(index: &TagIndex, scopes: &[TagScope]) -> Option<CachedTags> {
    let mut names = BTreeMap::new();
    for scope in scopes {
        let list = index.names(scope.index_scope())?;
        if !list.is_empty() {
            names.insert(*scope, list.into_iter().map(str::to_string).collect());
        }
    }
    Some(CachedTags::Names(Arc::new(names)))
}

/// Values of `target` from a block's index, when it holds all of them: scoped resource
/// and span attributes, and the v1 API's string values of either. (Unscoped `.x` takes
/// the span's value only when the span has one, which a per-block set cannot tell.)
fn values_from_index(index: &TagIndex, target: &TagTarget) -> Option<CachedTags> {
    let complete = |scope, key| match index.values(scope, key) {
        IndexedValues::Complete(values) => Some(values.into_iter().flatten()),
        IndexedValues::Unknown => None,
    };
    let typed = |(value_type, value): &(IndexedType, String)| {
        let value_type = match value_type {
            IndexedType::String => TagValueType::String,
            IndexedType::Int => TagValueType::Int,
            IndexedType::Float => TagValueType::Float,
            IndexedType::Bool => TagValueType::Bool,
        };
        TagValue::new(value_type, value.clone())
    };
    let values: BTreeSet<TagValue> = match target {
        TagTarget::Field(FieldRef::Attribute(attr)) if !attr.parent => {
            let scope = match attr.scope {
                AttributeScope::Resource => IndexScope::Resource,
                AttributeScope::Span => IndexScope::Span,
                _ => return None,
            };
            complete(scope, &attr.name)?.map(typed).collect()
        }
        TagTarget::AnyScopeString(name) => complete(IndexScope::Span, name)?
            .chain(complete(IndexScope::Resource, name)?)
            .filter(|(value_type, _)| *value_type == IndexedType::String)
            .map(typed)
            .collect(),
        TagTarget::Field(_) => return None,
    };
    Some(CachedTags::Values(Arc::new(values)))
}

/// The request each per-source tag scan runs: no time filter, since results are cached
/// per block and blocks are selected by range beforehand.
fn whole_source_request() -> FetchRequest {
    tag_request(None, false, TimeRange::Recent)
}

impl SearchService {
    /// Runs a tag scan over the head of `sources` alone and over each selected block
    /// alone, reusing cached per-block results. Only for requests without a query filter,
    /// whose answer is a union over sources.
    async fn per_source_tags<S: SourceSink + 'static>(
        &self,
        sources: Arc<Sources>,
        range: TimeRange,
        key: String,
        columns: Projection,
        make_sink: impl Fn() -> Arc<S>,
        from_index: impl Fn(&TagIndex) -> Option<CachedTags>,
    ) -> Result<(Vec<CachedTags>, ScanStats), SearchError> {
        let (start, end) = range.bounds();
        let mut selection_request = whole_source_request();
        selection_request.start_unix_nanos = start;
        selection_request.end_unix_nanos = end;
        let selected = selected_blocks(&sources, &selection_request, self.block_selection(range));
        let request = whole_source_request();
        let mut stats = ScanStats::default();
        let mut results = Vec::new();

        // The head changes all the time: always scanned.
        let head = Arc::new(Sources::new(sources.head.clone(), Vec::new()));
        let sink = make_sink();
        stats.add(
            &scan(
                head,
                &request,
                BlockSelection::Window,
                Assembly::Pieces,
                columns,
                Arc::clone(&sink) as Arc<dyn TraceSink>,
                self.scan_settings(),
            )
            .await?,
        );
        results.push(sink.collected());

        let mut uncached = Vec::new();
        for index in selected {
            let block = sources.blocks[index].clone();
            let block_id = block.meta().block_id;
            stats.total_blocks += 1;
            stats.total_block_bytes += block.meta().data_size_bytes;
            let cached = self.inner.tag_cache.lock().get(block_id, &key);
            match cached {
                Some(cached) => results.push(cached),
                None => uncached.push(block),
            }
        }
        // Each block answers from its tag index when that holds the answer, else by a
        // scan of one block, a row group at a time: several at once keep the CPUs busy.
        let scanned: Vec<(Uuid, CachedTags, ScanStats)> = stream::iter(uncached)
            .map(|block| {
                let request = &request;
                let make_sink = &make_sink;
                let from_index = &from_index;
                async move {
                    let block_id = block.meta().block_id;
                    if let Some(index) = self.tag_index(&block).await? {
                        if let Some(tags) = from_index(&index) {
                            let index_stats = ScanStats {
                                inspected_bytes: block.meta().tag_index_size_bytes.unwrap_or(0),
                                scanned_blocks: 1,
                                total_jobs: 1,
                                ..ScanStats::default()
                            };
                            return Ok((block_id, tags, index_stats));
                        }
                    }
                    let sink = make_sink();
                    let block_stats = scan(
                        Arc::new(Sources::new(Vec::new(), vec![block])),
                        request,
                        BlockSelection::Window,
                        Assembly::Pieces,
                        columns,
                        Arc::clone(&sink) as Arc<dyn TraceSink>,
                        self.scan_settings(),
                    )
                    .await?;
                    Ok::<_, SearchError>((block_id, sink.collected(), block_stats))
                }
            })
            .buffer_unordered(self.inner.parallelism.max(1))
            .try_collect()
            .await?;
        for (block_id, tags, block_stats) in scanned {
            stats.inspected_bytes += block_stats.inspected_bytes;
            stats.inspected_traces += block_stats.inspected_traces;
            stats.inspected_spans += block_stats.inspected_spans;
            stats.scanned_blocks += block_stats.scanned_blocks;
            stats.total_jobs += block_stats.total_jobs;
            self.inner
                .tag_cache
                .lock()
                .put(block_id, key.clone(), tags.clone());
            results.push(tags);
        }
        Ok((results, stats))
    }

    /// A block's tag index, from the cache or the store.
    async fn tag_index(&self, block: &BlockReader) -> Result<Option<Arc<TagIndex>>, SearchError> {
        let block_id = block.meta().block_id;
        if let Some(cached) = self.inner.tag_cache.lock().index(block_id) {
            return Ok(cached);
        }
        let index = block.load_tag_index().await?.map(Arc::new);
        self.inner
            .tag_cache
            .lock()
            .put_index(block_id, index.clone());
        Ok(index)
    }

    /// Attribute names per scope.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tag_names(
        &self,
        tenant: &TenantId,
        request: TagNamesRequest,
    ) -> Result<TagNames, SearchError> {
        self.tag_names_in(tenant, request, DataScope::All).await
    }

    /// [`SearchService::tag_names`] over the data `scope` names.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tag_names_in(
        &self,
        tenant: &TenantId,
        request: TagNamesRequest,
        scope: DataScope,
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
        let new_sink = |filter: Option<Arc<CSpanset>>, limit: Option<usize>| {
            Arc::new(NamesSink {
                filter,
                scopes: request.scopes.clone(),
                found: Mutex::new(
                    request
                        .scopes
                        .iter()
                        .map(|s| (*s, Bounded::new(limit)))
                        .collect(),
                ),
            })
        };
        let Some((expr, span_local)) = filter else {
            let (parts, stats) = self
                .per_source_tags(
                    self.sources_in(tenant, scope).await?,
                    request.range,
                    format!("names {:?}", request.scopes),
                    columns,
                    || new_sink(None, None),
                    |index| names_from_index(index, &request.scopes),
                )
                .await?;
            let mut merged: BTreeMap<TagScope, Bounded<String>> = request
                .scopes
                .iter()
                .map(|s| (*s, Bounded::new(request.limit)))
                .collect();
            for part in parts {
                let CachedTags::Names(names) = part else {
                    continue;
                };
                for (scope, list) in names.iter() {
                    if let Some(bounded) = merged.get_mut(scope) {
                        for name in list {
                            bounded.insert(name.clone(), name.len());
                        }
                    }
                }
            }
            return Ok(TagNames {
                scopes: non_empty(merged),
                stats,
            });
        };
        let assembly = if span_local {
            Assembly::Pieces
        } else {
            Assembly::Whole
        };
        let sink = new_sink(Some(Arc::new(expr)), request.limit);
        let stats = scan(
            self.sources_in(tenant, scope).await?,
            &fetch,
            self.block_selection(request.range),
            assembly,
            columns,
            Arc::clone(&sink) as Arc<dyn TraceSink>,
            self.scan_settings(),
        )
        .await?;
        let found = std::mem::take(&mut *sink.found.lock());
        Ok(TagNames {
            scopes: non_empty(found),
            stats,
        })
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
        self.tag_values_in(tenant, request, DataScope::All).await
    }

    /// [`SearchService::tag_values`] over the data `scope` names.
    ///
    /// # Errors
    /// Storage failures.
    pub async fn tag_values_in(
        &self,
        tenant: &TenantId,
        request: TagValuesRequest,
        scope: DataScope,
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
        let new_sink = |filter: Option<Arc<CSpanset>>, limit: Option<usize>| {
            Arc::new(ValuesSink {
                filter,
                target: request.target.clone(),
                found: Mutex::new(Bounded::new(limit)),
            })
        };
        if filter.is_none() && target_local {
            // Spans are only looked at for the target's values.
            let lean = match &request.target {
                TagTarget::Field(field) => {
                    let mut reads = fetch.clone();
                    reads.fields.push(field.clone());
                    span_local_projection(&reads, false)
                }
                TagTarget::AnyScopeString(_) => span_local_projection(&fetch, false),
            };
            let columns = Projection {
                skip_name: lean.skip_name,
                skip_span_id: lean.skip_span_id,
                skip_parent_span_id: lean.skip_parent_span_id,
                skip_status_message: lean.skip_status_message,
                ..columns
            };
            let (parts, stats) = self
                .per_source_tags(
                    self.sources_in(tenant, scope).await?,
                    request.range,
                    format!("values {:?}", request.target),
                    columns,
                    || new_sink(None, None),
                    |index| values_from_index(index, &request.target),
                )
                .await?;
            let mut merged = Bounded::new(request.limit);
            for part in parts {
                if let CachedTags::Values(values) = part {
                    for value in values.iter() {
                        merged.insert(value.clone(), value.value.len());
                    }
                }
            }
            return Ok(TagValues {
                values: merged.items,
                stats,
            });
        }
        let (filter, assembly) = match filter {
            None => (None, Assembly::Whole),
            Some((expr, true)) if target_local => (Some(Arc::new(expr)), Assembly::Pieces),
            Some((expr, _)) => (Some(Arc::new(expr)), Assembly::Whole),
        };
        let sink = new_sink(filter, request.limit);
        let stats = scan(
            self.sources_in(tenant, scope).await?,
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

fn non_empty(found: BTreeMap<TagScope, Bounded<String>>) -> BTreeMap<TagScope, BTreeSet<String>> {
    found
        .into_iter()
        .filter(|(_, names)| !names.items.is_empty())
        .map(|(scope, names)| (scope, names.items))
        .collect()
}
