//! Tempo's search, tag and TraceQL metrics endpoints (tempo-api.md §1.5–§1.11):
//! parameter parsing and validation exactly as Tempo's `ParseSearchRequest` and
//! friends do it, then the search service, then the JSON of `search_json`.
//!
//! Every refusal is a 400 whose plain-text message names the parameter.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::search_json::*;
use super::{mark_for_peer, param, tenant_of, ApiError, ApiState};
use crate::config::{MetricsStep, QueryConfig};
use crate::server::peers::{merge_search_answers, DataScope};
use crate::server::search::{
    field_from_tag, SearchRequest, TagNamesRequest, TagScope, TagTarget, TagValue, TagValueType,
    TagValuesRequest, TimeRange,
};
use crate::tenant::TenantId;
use crate::traceql::ast::{FieldRef, Intrinsic};
use crate::traceql::{compile, CompiledQuery, MetricsParams};

const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// More intervals than this in a metrics range query are refused (Tempo's limit).
const MAX_METRICS_INTERVALS: u64 = 10_000;

/// Query parameters in order, decoded. Repeated names keep the first value, as Go's
/// `url.Values.Get` does.
#[derive(Debug, Default)]
pub(crate) struct Params {
    pairs: Vec<(String, String)>,
    map: HashMap<String, String>,
}

impl Params {
    pub(crate) fn parse(raw: Option<&str>) -> Params {
        let mut params = Params::default();
        for (key, value) in url_pairs(raw.unwrap_or("")) {
            params
                .map
                .entry(key.clone())
                .or_insert_with(|| value.clone());
            params.pairs.push((key, value));
        }
        params
    }

    /// The value, or `None` when absent or empty (tempo-cli sends `mode=` and friends).
    fn get(&self, name: &str) -> Option<&str> {
        param(&self.map, name)
    }
}

/// `application/x-www-form-urlencoded` pairs: `+` is a space, `%XX` a byte.
fn url_pairs(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            (form_decode(key), form_decode(value))
        })
        .collect()
}

fn form_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

fn encoding_failed(error: serde_json::Error) -> ApiError {
    ApiError {
        code: crate::error::ErrorCode::Internal,
        message: format!("encoding the response failed: {error}"),
    }
}

fn json_response<T: Serialize>(body: &T) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(encoding_failed)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(bytes),
    )
        .into_response())
}

fn unix_now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// An unsigned 32-bit parameter (`limit`, `spss`, `start`, …).
fn u32_param(params: &Params, name: &str) -> Result<Option<u32>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                bad_request(format!(
                    "invalid {name}: expected a non-negative integer, got {v:?}"
                ))
            })
        })
        .transpose()
}

/// `start`/`end` of search and tag endpoints: unix seconds. Absent (or both 0) means
/// recent data; otherwise `end > start` and the range within the search maximum.
fn seconds_range(params: &Params, config: &QueryConfig) -> Result<TimeRange, ApiError> {
    let seconds = |name: &str| -> Result<u32, ApiError> {
        match params.get(name) {
            None => Ok(0),
            Some(v) => v.parse::<u32>().map_err(|_| {
                bad_request(format!(
                    "invalid {name}: expected unix seconds (a 32-bit unsigned integer), got {v:?}"
                ))
            }),
        }
    };
    let start = seconds("start")?;
    let end = seconds("end")?;
    if start == 0 && end == 0 {
        return Ok(TimeRange::Recent);
    }
    if end <= start {
        return Err(bad_request(format!(
            "invalid time range: end ({end}) must be greater than start ({start})"
        )));
    }
    let range = Duration::from_secs(u64::from(end - start));
    if range > config.max_search_duration {
        return Err(bad_request(format!(
            "invalid time range: {} exceeds the maximum search duration of {} \
             (query.max_search_duration or the tenant's limits.per_tenant override)",
            humantime::format_duration(range),
            humantime::format_duration(config.max_search_duration)
        )));
    }
    Ok(TimeRange::Window {
        start_unix_nanos: u64::from(start) * NANOS_PER_SECOND,
        end_unix_nanos: u64::from(end) * NANOS_PER_SECOND,
    })
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units `ns`, `us`
/// (`µs`), `ms`, `s`, `m`, `h`, e.g. `300ms`, `1.5h`, `2h45m`. Days are not a unit.
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut rest = text;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return None;
    }
    Some(Duration::from_nanos(total as u64))
}

/// A duration literal TraceQL reads back exactly.
fn nanos_literal(duration: Duration) -> String {
    format!("{}ns", duration.as_nanos())
}

// ---------------------------------------------------------------------------------------
// /api/search
// ---------------------------------------------------------------------------------------

/// Parameters that are never legacy tags (Tempo's reserved names and internal ones).
const RESERVED_SEARCH_PARAMS: &[&str] = &[
    "q",
    "tags",
    "minDuration",
    "maxDuration",
    "limit",
    "spss",
    "start",
    "end",
    "skip_ast_transformations",
    "blockID",
    "startPage",
    "pagesToSearch",
    "totalPages",
    "encoding",
    "indexPageSize",
    "totalRecords",
    "dataEncoding",
    "version",
    "size",
    "footerSize",
    "dc",
];

/// Parses logfmt `k=v k2="v 2"`. A bare key has an empty value (matches any value).
fn parse_logfmt(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    let chars: Vec<char> = text.chars().collect();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let key_start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' {
            if chars[i] == '"' {
                return Err(bad_request(format!(
                    "invalid tags: unexpected '\"' at pos {}",
                    i + 1
                )));
            }
            i += 1;
        }
        let key: String = chars[key_start..i].iter().collect();
        if key.is_empty() {
            return Err(bad_request(format!(
                "invalid tags: unexpected '=' at pos {}",
                i + 1
            )));
        }
        let mut value = String::new();
        if i < chars.len() && chars[i] == '=' {
            i += 1;
            if i < chars.len() && chars[i] == '"' {
                let quote_pos = i;
                i += 1;
                let mut closed = false;
                while i < chars.len() {
                    match chars[i] {
                        '"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        '\\' if i + 1 < chars.len() => {
                            value.push(match chars[i + 1] {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                other => other,
                            });
                            i += 2;
                        }
                        c => {
                            value.push(c);
                            i += 1;
                        }
                    }
                }
                if !closed {
                    return Err(bad_request(format!(
                        "invalid tags: unterminated quoted value at pos {}",
                        quote_pos + 1
                    )));
                }
            } else {
                while i < chars.len() && !chars[i].is_whitespace() {
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        if pairs.iter().any(|(k, _)| *k == key) {
            return Err(bad_request(format!(
                "invalid tags: tag {key} has been set twice"
            )));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn traceql_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// An attribute reference for a raw key: quoted when it holds characters that would end
/// an attribute name.
fn attribute_ref(prefix: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| !c.is_whitespace() && !"{}()=~!<>&|^,\"\\".contains(c));
    if plain {
        format!("{prefix}{key}")
    } else {
        format!("{prefix}{}", traceql_string(key))
    }
}

/// Legacy tag search as TraceQL: every tag must match somewhere in the trace (a case-
/// insensitive substring of a span or resource attribute, or of the span name, root
/// name, root service), and the trace duration must lie within the bounds. The duration
/// bounds go into every filter so that spansets list only the spans the tags matched.
fn tags_to_traceql(
    tags: &[(String, String)],
    min_duration: Option<Duration>,
    max_duration: Option<Duration>,
) -> String {
    let contains = |v: &str| traceql_string(&format!("(?i).*{}.*", regex::escape(v)));
    let mut bounds = Vec::new();
    if let Some(min) = min_duration.filter(|d| !d.is_zero()) {
        bounds.push(format!("traceDuration >= {}", nanos_literal(min)));
    }
    if let Some(max) = max_duration.filter(|d| !d.is_zero()) {
        bounds.push(format!("traceDuration <= {}", nanos_literal(max)));
    }
    let conditions: Vec<String> = tags
        .iter()
        .map(|(key, value)| {
            let status = match (key.as_str(), value.to_ascii_lowercase().as_str()) {
                ("error", "true") => Some("error"),
                ("status.code", "error" | "2" | "status_code_error") => Some("error"),
                ("status.code", "ok" | "1" | "status_code_ok") => Some("ok"),
                ("status.code", "unset" | "0" | "status_code_unset") => Some("unset"),
                _ => None,
            };
            if let Some(status) = status {
                return format!("status = {status}");
            }
            let field = match key.as_str() {
                "root.service.name" => "rootServiceName".to_string(),
                "root.name" => "rootName".to_string(),
                "name" => "name".to_string(),
                "service.name" => "resource.service.name".to_string(),
                other => attribute_ref(".", other),
            };
            format!("{field} =~ {}", contains(value))
        })
        .collect();
    let filter = |mut parts: Vec<String>| {
        parts.extend(bounds.iter().cloned());
        format!("{{ {} }}", parts.join(" && "))
    };
    if conditions.is_empty() {
        if bounds.is_empty() {
            return "{ }".to_string();
        }
        return filter(Vec::new());
    }
    conditions
        .into_iter()
        .map(|condition| filter(vec![condition]))
        .collect::<Vec<_>>()
        .join(" && ")
}

/// A validated `/api/search` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedSearch {
    /// TraceQL, given or translated from tags.
    pub(crate) query: String,
    pub(crate) request: SearchRequest,
}

pub(crate) fn parse_search(
    params: &Params,
    config: &QueryConfig,
) -> Result<ParsedSearch, ApiError> {
    let q = params.get("q");
    let tags = params.get("tags");
    if q.is_some() && tags.is_some() {
        return Err(bad_request(
            "invalid request: q and tags cannot be used together",
        ));
    }
    let duration = |name: &str| -> Result<Option<Duration>, ApiError> {
        params
            .get(name)
            .map(|v| {
                parse_go_duration(v).ok_or_else(|| {
                    bad_request(format!(
                        "invalid {name}: expected a duration like 100ms or 1.5s, got {v:?}"
                    ))
                })
            })
            .transpose()
    };
    let min_duration = duration("minDuration")?;
    let max_duration = duration("maxDuration")?;
    if let (Some(min), Some(max)) = (min_duration, max_duration) {
        if !min.is_zero() && min > max {
            return Err(bad_request(
                "invalid maxDuration: must be greater than minDuration",
            ));
        }
    }
    let limit = match u32_param(params, "limit")? {
        None => config.default_result_limit,
        Some(0) => return Err(bad_request("invalid limit: must be a positive number")),
        Some(limit) if limit > config.max_result_limit => {
            return Err(bad_request(format!(
                "invalid limit: {limit} is over the maximum of {} \
                 (query.max_result_limit or the tenant's limits.per_tenant override)",
                config.max_result_limit
            )))
        }
        Some(limit) => limit,
    };
    let spss = match u32_param(params, "spss")? {
        None | Some(0) => config.default_spans_per_span_set,
        Some(spss) if spss > config.max_spans_per_span_set => {
            return Err(bad_request(format!(
                "invalid spss: {spss} is over the maximum of {} (query.max_spans_per_span_set)",
                config.max_spans_per_span_set
            )))
        }
        Some(spss) => spss,
    };
    let range = seconds_range(params, config)?;
    let query = match (q, tags) {
        (Some(q), _) => q.to_string(),
        (None, Some(tags)) => tags_to_traceql(&parse_logfmt(tags)?, min_duration, max_duration),
        (None, None) => {
            // Legacy: with no q, tags, start or end, other parameters are tags.
            let legacy: Vec<(String, String)> =
                if params.get("start").is_none() && params.get("end").is_none() {
                    let mut seen: Vec<(String, String)> = Vec::new();
                    for (key, value) in &params.pairs {
                        if !value.is_empty()
                            && !RESERVED_SEARCH_PARAMS.contains(&key.as_str())
                            && !seen.iter().any(|(k, _)| k == key)
                        {
                            seen.push((key.clone(), value.clone()));
                        }
                    }
                    seen
                } else {
                    Vec::new()
                };
            tags_to_traceql(&legacy, min_duration, max_duration)
        }
    };
    Ok(ParsedSearch {
        query,
        request: SearchRequest {
            limit: limit as usize,
            spans_per_spanset: spss as usize,
            range,
        },
    })
}

/// `query.*` with the tenant's `limits.per_tenant` overrides.
fn query_config<'a>(state: &'a ApiState, tenant: &TenantId) -> Cow<'a, QueryConfig> {
    state.queries.query_config(state.search.config(), tenant)
}

fn compile_query(text: &str) -> Result<Arc<CompiledQuery>, ApiError> {
    Ok(Arc::new(compile(text)?))
}

pub(crate) async fn search(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = tenant_of(&headers)?;
    let params = Params::parse(raw.as_deref());
    let parsed = parse_search(&params, &query_config(&state, &tenant))?;
    let query = compile_query(&parsed.query)?;
    let scope = DataScope::of(&headers);
    let limit = parsed.request.limit;
    let outcome = state
        .search
        .search_in(&tenant, query, parsed.request, scope)
        .await?;
    let local = SearchResponse::new(&outcome.traces, &outcome.stats);
    let Some(peers) = state.peers.as_ref().filter(|_| scope == DataScope::All) else {
        return Ok(mark_for_peer(&state, scope, json_response(&local)?));
    };
    let mut answers = vec![serde_json::to_value(&local).map_err(encoding_failed)?];
    let path = format!("/api/search?{}", raw.as_deref().unwrap_or(""));
    answers.extend(peers.ask_json(&tenant, &path).await);
    json_response(&merge_search_answers(answers, limit))
}

// ---------------------------------------------------------------------------------------
// tags and tag values
// ---------------------------------------------------------------------------------------

/// Tempo's fixed list of intrinsics offered for autocomplete
/// (`search.GetVirtualIntrinsicValues`).
pub(crate) const INTRINSIC_TAGS: &[&str] = &[
    "duration",
    "name",
    "status",
    "statusMessage",
    "kind",
    "rootServiceName",
    "rootName",
    "traceDuration",
    "event:name",
    "event:timeSinceStart",
    "link:spanID",
    "link:traceID",
    "instrumentation:name",
    "instrumentation:version",
    "trace:id",
    "span:id",
    "span:parentID",
    "span:status",
    "span:statusMessage",
    "span:duration",
    "span:name",
    "span:kind",
    "trace:rootName",
    "trace:rootService",
    "trace:duration",
];

/// The `scope` parameter of the tag endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScopeParam {
    /// `""` or `none`: every attribute scope, plus intrinsics in v2.
    All,
    Attribute(TagScope),
    Intrinsic,
    /// `trace`: no attributes live there.
    Trace,
}

fn scope_param(params: &Params) -> Result<ScopeParam, ApiError> {
    Ok(match params.get("scope") {
        None | Some("none") => ScopeParam::All,
        Some("resource") => ScopeParam::Attribute(TagScope::Resource),
        Some("span") => ScopeParam::Attribute(TagScope::Span),
        Some("event") => ScopeParam::Attribute(TagScope::Event),
        Some("link") => ScopeParam::Attribute(TagScope::Link),
        Some("instrumentation") => ScopeParam::Attribute(TagScope::Instrumentation),
        Some("intrinsic") => ScopeParam::Intrinsic,
        Some("trace") => ScopeParam::Trace,
        Some(other) => {
            return Err(bad_request(format!(
                "invalid scope: {other:?} (expected none, span, resource, event, link, \
                 instrumentation, intrinsic or trace)"
            )))
        }
    })
}

/// The optional `q` of tag requests narrows the spans looked at. Like Tempo, a query
/// that does not parse (or is not a search) is ignored rather than refused.
fn tag_query(params: &Params) -> Option<Arc<CompiledQuery>> {
    let q = params.get("q")?;
    match compile(q) {
        Ok(query) if !query.is_metrics() => Some(Arc::new(query)),
        Ok(_) => None,
        Err(error) => {
            tracing::debug!(%error, "ignoring unusable q of a tag request");
            None
        }
    }
}

struct TagParams {
    range: TimeRange,
    limit: Option<usize>,
    query: Option<Arc<CompiledQuery>>,
}

fn tag_params(params: &Params, config: &QueryConfig) -> Result<TagParams, ApiError> {
    let range = seconds_range(params, config)?;
    let limit = u32_param(params, "limit")?
        .filter(|l| *l > 0)
        .map(|l| l as usize);
    // Validated like Tempo, then unused: spoor keeps no stale-value statistics.
    u32_param(params, "maxStaleValues")?;
    Ok(TagParams {
        range,
        limit,
        query: tag_query(params),
    })
}

async fn collect_tag_names(
    state: &ApiState,
    headers: &HeaderMap,
    params: &Params,
    raw: Option<&str>,
    scope: ScopeParam,
) -> Result<crate::server::search::TagNames, ApiError> {
    let tenant = tenant_of(headers)?;
    let tag_params = tag_params(params, &query_config(state, &tenant))?;
    let scopes = match scope {
        ScopeParam::All => TagScope::ALL.to_vec(),
        ScopeParam::Attribute(scope) => vec![scope],
        ScopeParam::Intrinsic | ScopeParam::Trace => Vec::new(),
    };
    let data = DataScope::of(headers);
    let limit = tag_params.limit;
    let mut names = state
        .search
        .tag_names_in(
            &tenant,
            TagNamesRequest {
                scopes: scopes.clone(),
                query: tag_params.query,
                range: tag_params.range,
                limit,
            },
            data,
        )
        .await?;
    let Some(peers) = state.peers.as_ref().filter(|_| data == DataScope::All) else {
        return Ok(names);
    };
    // Peers answer in the v2 shape, whichever version the client asked for.
    let path = format!("/api/v2/search/tags?{}", raw.unwrap_or(""));
    for answer in peers.ask_json(&tenant, &path).await {
        let listed = answer["scopes"].as_array().into_iter().flatten();
        for entry in listed {
            let Some(scope) = entry["name"].as_str().and_then(TagScope::from_name) else {
                continue;
            };
            if !scopes.contains(&scope) {
                continue;
            }
            let tags = entry["tags"].as_array().into_iter().flatten();
            names
                .scopes
                .entry(scope)
                .or_default()
                .extend(tags.filter_map(|tag| tag.as_str().map(str::to_owned)));
        }
    }
    if let Some(limit) = limit {
        for tags in names.scopes.values_mut() {
            while tags.len() > limit {
                tags.pop_last();
            }
        }
    }
    Ok(names)
}

pub(crate) async fn tags_v1(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let scope = scope_param(&params)?;
    let names = collect_tag_names(&state, &headers, &params, raw.as_deref(), scope).await?;
    let mut tag_names: Vec<String> = names
        .scopes
        .values()
        .flatten()
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if scope == ScopeParam::Intrinsic {
        tag_names.extend(INTRINSIC_TAGS.iter().map(|t| t.to_string()));
    }
    let response = json_response(&SearchTagsResponse {
        tag_names,
        metrics: MetadataMetrics::from(&names.stats),
    })?;
    Ok(mark_for_peer(&state, DataScope::of(&headers), response))
}

pub(crate) async fn tags_v2(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = Params::parse(raw.as_deref());
    let scope = scope_param(&params)?;
    let names = collect_tag_names(&state, &headers, &params, raw.as_deref(), scope).await?;
    let mut scopes: Vec<SearchTagsV2Scope> = Vec::new();
    let mut push = |name: &str, tags: Vec<String>| {
        scopes.push(SearchTagsV2Scope {
            name: name.to_string(),
            tags,
        })
    };
    let attribute_scope = |scope: TagScope| -> Option<Vec<String>> {
        names
            .scopes
            .get(&scope)
            .map(|tags| tags.iter().cloned().collect())
    };
    // Tempo's order: resource, span, intrinsic, then the others.
    for scope in [TagScope::Resource, TagScope::Span] {
        if let Some(tags) = attribute_scope(scope) {
            push(scope.name(), tags);
        }
    }
    if matches!(scope, ScopeParam::All | ScopeParam::Intrinsic) {
        push(
            "intrinsic",
            INTRINSIC_TAGS.iter().map(|t| t.to_string()).collect(),
        );
    }
    for scope in [TagScope::Event, TagScope::Link, TagScope::Instrumentation] {
        if let Some(tags) = attribute_scope(scope) {
            push(scope.name(), tags);
        }
    }
    let response = json_response(&SearchTagsV2Response {
        scopes,
        metrics: MetadataMetrics::from(&names.stats),
    })?;
    Ok(mark_for_peer(&state, DataScope::of(&headers), response))
}

/// `/api/search/tag/{tag}/values` and the v2 form, matched as a wildcard so that tag
/// names may contain `/` (Tempo's mux uses `{tagName:.*}`).
fn tag_from_path(rest: &str) -> Option<&str> {
    rest.strip_suffix("/values").filter(|tag| !tag.is_empty())
}

async fn collect_tag_values(
    state: &ApiState,
    headers: &HeaderMap,
    params: &Params,
    target: TagTarget,
    peer_path: &str,
) -> Result<crate::server::search::TagValues, ApiError> {
    let tenant = tenant_of(headers)?;
    let tag_params = tag_params(params, &query_config(state, &tenant))?;
    let data = DataScope::of(headers);
    let limit = tag_params.limit;
    let mut values = state
        .search
        .tag_values_in(
            &tenant,
            TagValuesRequest {
                target,
                query: tag_params.query,
                range: tag_params.range,
                limit,
            },
            data,
        )
        .await?;
    let Some(peers) = state.peers.as_ref().filter(|_| data == DataScope::All) else {
        return Ok(values);
    };
    for answer in peers.ask_json(&tenant, peer_path).await {
        for item in answer["tagValues"].as_array().into_iter().flatten() {
            // v1 lists strings (string values only), v2 typed objects.
            let value = match item {
                serde_json::Value::String(text) => Some(TagValue::new(TagValueType::String, text)),
                item => item["type"]
                    .as_str()
                    .and_then(TagValueType::from_name)
                    .zip(item["value"].as_str())
                    .map(|(value_type, text)| TagValue::new(value_type, text)),
            };
            values.values.extend(value);
        }
    }
    if let Some(limit) = limit {
        while values.values.len() > limit {
            values.values.pop_last();
        }
    }
    Ok(values)
}

pub(crate) async fn tag_values_v1(
    State(state): State<ApiState>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(tag) = tag_from_path(&rest) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let params = Params::parse(raw.as_deref());
    // Virtual values, answered without reading data.
    let fixed: Option<&[&str]> = match tag {
        "status.code" => Some(&["unset", "ok", "error"]),
        "error" => Some(&["true"]),
        _ => None,
    };
    if let Some(values) = fixed {
        let tenant = tenant_of(&headers)?;
        tag_params(&params, &query_config(&state, &tenant))?;
        return json_response(&SearchTagValuesResponse {
            tag_values: values.iter().map(|v| v.to_string()).collect(),
            metrics: MetadataMetrics::default(),
        });
    }
    let values = collect_tag_values(
        &state,
        &headers,
        &params,
        TagTarget::AnyScopeString(tag.to_string()),
        &format!("/api/search/tag/{rest}?{}", raw.as_deref().unwrap_or("")),
    )
    .await?;
    let response = json_response(&SearchTagValuesResponse {
        tag_values: values.values.iter().map(|v| v.value.clone()).collect(),
        metrics: MetadataMetrics::from(&values.stats),
    })?;
    Ok(mark_for_peer(&state, DataScope::of(&headers), response))
}

/// Values of intrinsics that need no scan: keywords for status and kind, nothing for
/// durations (Tempo's behaviour).
fn fixed_intrinsic_values(field: &FieldRef) -> Option<Vec<TagValue>> {
    let FieldRef::Intrinsic { intrinsic, .. } = field else {
        return None;
    };
    let keywords = |names: &[&str]| {
        Some(
            names
                .iter()
                .map(|n| TagValue::new(TagValueType::Keyword, *n))
                .collect(),
        )
    };
    match intrinsic {
        Intrinsic::Status => keywords(&["ok", "error", "unset"]),
        Intrinsic::Kind => keywords(&[
            "client",
            "server",
            "producer",
            "consumer",
            "internal",
            "unspecified",
        ]),
        Intrinsic::Duration | Intrinsic::TraceDuration | Intrinsic::EventTimeSinceStart => {
            Some(Vec::new())
        }
        _ => None,
    }
}

pub(crate) async fn tag_values_v2(
    State(state): State<ApiState>,
    Path(rest): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(tag) = tag_from_path(&rest) else {
        return Ok(StatusCode::NOT_FOUND.into_response());
    };
    let params = Params::parse(raw.as_deref());
    let Some(field) = field_from_tag(tag) else {
        return Err(bad_request(format!(
            "please provide a valid tagName: {tag:?} is not a TraceQL attribute or intrinsic"
        )));
    };
    if let Some(values) = fixed_intrinsic_values(&field) {
        let tenant = tenant_of(&headers)?;
        tag_params(&params, &query_config(&state, &tenant))?;
        return json_response(&SearchTagValuesV2Response {
            tag_values: values.iter().map(TypedTagValue::from).collect(),
            metrics: MetadataMetrics::default(),
        });
    }
    let values = collect_tag_values(
        &state,
        &headers,
        &params,
        TagTarget::Field(field),
        &format!("/api/v2/search/tag/{rest}?{}", raw.as_deref().unwrap_or("")),
    )
    .await?;
    let response = json_response(&SearchTagValuesV2Response {
        tag_values: values.values.iter().map(TypedTagValue::from).collect(),
        metrics: MetadataMetrics::from(&values.stats),
    })?;
    Ok(mark_for_peer(&state, DataScope::of(&headers), response))
}

// ---------------------------------------------------------------------------------------
// TraceQL metrics
// ---------------------------------------------------------------------------------------

/// Metrics times: unix seconds (up to 10 digits), nanoseconds (more digits), fractional
/// seconds (`1.5`) or RFC 3339 (`2024-05-01T10:00:00Z`).
pub(crate) fn parse_metrics_time(name: &str, text: &str) -> Result<u64, ApiError> {
    let invalid = || {
        bad_request(format!(
            "invalid {name}: expected unix seconds, unix nanoseconds or an RFC 3339 time, got {text:?}"
        ))
    };
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let value: u64 = text.parse().map_err(|_| invalid())?;
        return if text.len() <= 10 {
            value.checked_mul(NANOS_PER_SECOND).ok_or_else(invalid)
        } else {
            Ok(value)
        };
    }
    if let Ok(seconds) = text.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 && seconds < (u64::MAX / NANOS_PER_SECOND) as f64 {
            return Ok((seconds * 1e9).round() as u64);
        }
        return Err(invalid());
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|_| invalid())?;
    time.duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .ok_or_else(invalid)
}

/// Tempo's default step: the range over 240, rounded down to a round step.
pub(crate) fn auto_step(range_nanos: u64) -> u64 {
    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;
    let target = range_nanos / 240;
    if range_nanos < 60 * S {
        return (target / (50 * MS) * (50 * MS)).max(50 * MS);
    }
    [3600 * S, 300 * S, 60 * S, 15 * S, 5 * S, S]
        .into_iter()
        .find(|step| target >= *step)
        .unwrap_or(S)
}

fn parse_step(text: &str) -> Result<u64, ApiError> {
    let invalid = || {
        bad_request(format!(
            "invalid step: expected seconds or a duration like 30s or 1m, got {text:?}"
        ))
    };
    let nanos = match text.parse::<f64>() {
        Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => (seconds * 1e9).round() as u64,
        Ok(_) => return Err(invalid()),
        Err(_) => u64::try_from(parse_go_duration(text).ok_or_else(invalid)?.as_nanos())
            .map_err(|_| invalid())?,
    };
    if nanos == 0 {
        return Err(bad_request("invalid step: must be greater than 0"));
    }
    Ok(nanos)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParsedMetrics {
    pub(crate) query: String,
    pub(crate) params: MetricsParams,
}

pub(crate) fn parse_metrics(
    params: &Params,
    config: &QueryConfig,
    instant: bool,
    now_nanos: u64,
) -> Result<ParsedMetrics, ApiError> {
    let query = params
        .get("q")
        .or_else(|| params.get("query"))
        .ok_or_else(|| bad_request("invalid q: a TraceQL metrics query is required"))?
        .to_string();
    let end = match params.get("end") {
        Some(text) => parse_metrics_time("end", text)?,
        None => now_nanos,
    };
    let start = match params.get("start") {
        Some(text) => parse_metrics_time("start", text)?,
        None => {
            let since = match params.get("since") {
                None => Duration::from_secs(3600),
                Some(text) => humantime::parse_duration(text).map_err(|_| {
                    bad_request(format!(
                        "invalid since: expected a duration like 15m or 1h, got {text:?}"
                    ))
                })?,
            };
            end.saturating_sub(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
        }
    };
    if end <= start {
        return Err(bad_request(format!(
            "invalid time range: end ({end}) must be greater than start ({start})"
        )));
    }
    let range = end - start;
    if Duration::from_nanos(range) > config.max_metrics_duration {
        return Err(bad_request(format!(
            "invalid time range: {} exceeds the maximum metrics duration of {} \
             (query.max_metrics_duration)",
            humantime::format_duration(Duration::from_nanos(range)),
            humantime::format_duration(config.max_metrics_duration)
        )));
    }
    let step = if instant {
        range
    } else {
        let step = match params.get("step") {
            Some(text) => parse_step(text)?,
            None => match config.metrics_default_step {
                MetricsStep::Auto => auto_step(range),
                MetricsStep::Fixed(step) => u64::try_from(step.as_nanos()).unwrap_or(u64::MAX),
            },
        };
        if range / step > MAX_METRICS_INTERVALS {
            return Err(bad_request(format!(
                "invalid step: a step of {} is too small for a range of {} (at most {} intervals)",
                humantime::format_duration(Duration::from_nanos(step)),
                humantime::format_duration(Duration::from_nanos(range)),
                MAX_METRICS_INTERVALS
            )));
        }
        step
    };
    let max_series = match u32_param(params, "maxSeries")? {
        None | Some(0) => config.max_metrics_series,
        Some(n) => n.min(config.max_metrics_series),
    };
    let exemplars = match u32_param(params, "exemplars")? {
        None => config.max_exemplars,
        Some(n) => n.min(config.max_exemplars),
    };
    // Validated like Tempo, then unused.
    for name in ["startPage", "pagesToSearch", "size", "footerSize"] {
        u32_param(params, name)?;
    }
    Ok(ParsedMetrics {
        query,
        params: MetricsParams {
            start_unix_nanos: start,
            end_unix_nanos: end,
            step_nanos: step,
            instant,
            max_series: max_series as usize,
            max_exemplars: exemplars as usize,
        },
    })
}

async fn run_metrics(
    state: &ApiState,
    raw: Option<&str>,
    headers: &HeaderMap,
    instant: bool,
) -> Result<(crate::server::search::MetricsOutcome, usize), ApiError> {
    let tenant = tenant_of(headers)?;
    let params = Params::parse(raw);
    let parsed = parse_metrics(
        &params,
        &query_config(state, &tenant),
        instant,
        unix_now_nanos(),
    )?;
    let query = compile_query(&parsed.query)?;
    let mut metrics_params = parsed.params;
    if let Some(hint) = query.query().exemplars_hint() {
        metrics_params.max_exemplars = metrics_params.max_exemplars.min(hint);
    }
    let max_series = metrics_params.max_series;
    let outcome = state
        .search
        .query_range(&tenant, query, metrics_params)
        .await?;
    Ok((outcome, max_series))
}

pub(crate) async fn query_range(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (outcome, max_series) = run_metrics(&state, raw.as_deref(), &headers, false).await?;
    json_response(&QueryRangeResponse::new(
        &outcome.result,
        &outcome.stats,
        max_series,
    ))
}

pub(crate) async fn query_instant(
    State(state): State<ApiState>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (outcome, max_series) = run_metrics(&state, raw.as_deref(), &headers, true).await?;
    json_response(&QueryInstantResponse::new(
        &outcome.result,
        &outcome.stats,
        max_series,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config() -> QueryConfig {
        crate::config::load_server_config(None, &crate::config::ServerCliOverrides::default())
            .unwrap()
            .query
    }

    fn search(raw: &str) -> Result<ParsedSearch, String> {
        parse_search(&Params::parse(Some(raw)), &config()).map_err(|e| e.message)
    }

    fn metrics(raw: &str) -> Result<ParsedMetrics, String> {
        parse_metrics(
            &Params::parse(Some(raw)),
            &config(),
            false,
            1_700_000_000 * NANOS_PER_SECOND,
        )
        .map_err(|e| e.message)
    }

    #[test]
    fn search_params_follow_tempo() {
        let parsed = search("q=%7B%20status%20%3D%20error%20%7D&limit=5&spss=0").unwrap();
        assert_eq!(parsed.query, "{ status = error }");
        assert_eq!(parsed.request.limit, 5);
        assert_eq!(parsed.request.spans_per_spanset, 3);
        assert_eq!(parsed.request.range, TimeRange::Recent);
        let parsed = search("q={}&start=100&end=200&limit=&spss=").unwrap();
        assert_eq!(parsed.request.limit, 20);
        assert_eq!(
            parsed.request.range,
            TimeRange::Window {
                start_unix_nanos: 100 * NANOS_PER_SECOND,
                end_unix_nanos: 200 * NANOS_PER_SECOND
            }
        );
        for (raw, message) in [
            ("q={}&tags=a%3Db", "q and tags"),
            ("limit=0", "invalid limit: must be a positive number"),
            ("limit=ten", "invalid limit"),
            ("limit=300000", "invalid limit: 300000 is over the maximum"),
            ("spss=101", "invalid spss: 101 is over the maximum of 100"),
            ("spss=-1", "invalid spss"),
            (
                "start=200&end=100",
                "end (100) must be greater than start (200)",
            ),
            ("start=100&end=100", "must be greater than start"),
            ("start=100", "end (0) must be greater"),
            ("start=1700000000000000000&end=1", "invalid start"),
            (
                "start=0&end=1000000",
                "exceeds the maximum search duration of 7days",
            ),
            ("minDuration=soon", "invalid minDuration"),
            (
                "minDuration=2s&maxDuration=1s",
                "must be greater than minDuration",
            ),
            ("tags=a%3D%22open", "unterminated quoted value"),
            ("tags=a%3D1%20a%3D2", "tag a has been set twice"),
        ] {
            let error = search(raw).expect_err(raw);
            assert!(error.contains(message), "{raw}: {error}");
        }
    }

    #[test]
    fn tag_search_becomes_traceql() {
        let parsed = search(
            "tags=service.name%3Dcart%20http.url%3D%22%2Fa%20b%22%20error%3Dtrue&minDuration=100ms",
        )
        .unwrap();
        assert_eq!(
            parsed.query,
            "{ resource.service.name =~ \"(?i).*cart.*\" && traceDuration >= 100000000ns } \
             && { .http.url =~ \"(?i).*/a b.*\" && traceDuration >= 100000000ns } \
             && { status = error && traceDuration >= 100000000ns }"
        );
        compile(&parsed.query).unwrap();
        // Legacy form: every other parameter is a tag.
        let parsed = search("root.name=GET%20%2F&limit=3&weird%20key=a.b").unwrap();
        assert_eq!(
            parsed.query,
            "{ rootName =~ \"(?i).*GET /.*\" } && { .\"weird key\" =~ \"(?i).*a\\\\.b.*\" }"
        );
        compile(&parsed.query).unwrap();
        assert_eq!(search("").unwrap().query, "{ }");
        assert_eq!(
            search("minDuration=1s&maxDuration=2s").unwrap().query,
            "{ traceDuration >= 1000000000ns && traceDuration <= 2000000000ns }"
        );
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_go_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_go_duration("2µs"), Some(Duration::from_micros(2)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        for bad in ["", "1d", "10", "s", "1.2.3s", "-1s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn metrics_times_steps_and_limits() {
        let parsed = metrics("q={}|rate()&start=1699996400&end=1700000000").unwrap();
        assert_eq!(
            parsed.params.start_unix_nanos,
            1_699_996_400 * NANOS_PER_SECOND
        );
        assert_eq!(parsed.params.step_nanos, 15 * NANOS_PER_SECOND);
        assert_eq!(parsed.params.max_series, 1000);
        assert_eq!(parsed.params.max_exemplars, 100);
        // Nanoseconds, fractions and RFC 3339 give the same instant.
        for start in [
            "1699996400000000000",
            "1699996400.0",
            "2023-11-14T21:13:20Z",
        ] {
            let parsed =
                metrics(&format!("query={{}}|rate()&start={start}&end=1700000000")).unwrap();
            assert_eq!(
                parsed.params.start_unix_nanos,
                1_699_996_400 * NANOS_PER_SECOND,
                "{start}"
            );
        }
        // Defaults: end = now, start = end - since (1h).
        let parsed = metrics("q={}|rate()&since=15m&step=30s&exemplars=500&maxSeries=7").unwrap();
        assert_eq!(
            parsed.params.end_unix_nanos,
            1_700_000_000 * NANOS_PER_SECOND
        );
        assert_eq!(
            parsed.params.start_unix_nanos,
            1_699_999_100 * NANOS_PER_SECOND
        );
        assert_eq!(parsed.params.step_nanos, 30 * NANOS_PER_SECOND);
        assert_eq!(parsed.params.max_exemplars, 100);
        assert_eq!(parsed.params.max_series, 7);
        // tempo-cli sends internal parameters empty.
        metrics("q={}|rate()&mode=&blockID=&startPage=0&pagesToSearch=0&version=&encoding=none&size=0&footerSize=0&exemplars=0&maxSeries=0")
            .unwrap();
        for (raw, message) in [
            ("start=1&end=2", "invalid q"),
            ("q={}|rate()&start=2&end=1", "must be greater than start"),
            ("q={}|rate()&start=yesterday", "invalid start"),
            (
                "q={}|rate()&start=1600000000&end=1700000000",
                "maximum metrics duration",
            ),
            (
                "q={}|rate()&step=1ms&start=1699996400&end=1700000000",
                "too small",
            ),
            ("q={}|rate()&step=1d", "invalid step"),
            ("q={}|rate()&step=0", "invalid step"),
            ("q={}|rate()&exemplars=many", "invalid exemplars"),
        ] {
            let error = metrics(raw).expect_err(raw);
            assert!(error.contains(message), "{raw}: {error}");
        }
    }

    #[test]
    fn auto_steps_round_down() {
        let s = NANOS_PER_SECOND;
        assert_eq!(auto_step(3600 * s), 15 * s);
        assert_eq!(auto_step(24 * 3600 * s), 300 * s);
        assert_eq!(auto_step(7 * 24 * 3600 * s), 300 * s);
        assert_eq!(auto_step(10 * 24 * 3600 * s), 3600 * s);
        assert_eq!(auto_step(10 * 60 * s), s);
        assert_eq!(auto_step(30 * s), 100_000_000);
        assert_eq!(auto_step(s), 50_000_000);
    }

    #[test]
    fn form_decoding() {
        assert_eq!(form_decode("a+b%20c%3D%7b"), "a b c={");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz"), "%zz");
    }
}
