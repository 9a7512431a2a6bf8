//! The other servers sharing the bucket (`cluster.peers`). A trace acknowledged by
//! another server sits in that server's memory until it is cut into a block and this
//! server's block list has picked the block up, so trace-by-ID lookups and searches also
//! ask every peer for what it holds in memory, and merge the answers with their own.
//!
//! A peer is asked with `X-Spoor-Scope: head`: it answers from its head alone and never
//! asks its own peers, so fan-out is one level deep and blocks are read once, by the
//! server the client asked. Answers carry the answering server's instance ID
//! (`X-Spoor-Instance`), so a peer list that includes this server (one DNS name for
//! all) costs one extra request and no duplicate data. A peer that fails or does not
//! answer within `cluster.peer_timeout` is left out of the answer: what is in blocks is
//! still found, and the failure is logged and counted.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use http::{HeaderMap, HeaderValue};
use parking_lot::Mutex;
use prost::Message;
use uuid::Uuid;

use crate::config::ClusterConfig;
use crate::otlp::{OtlpResourceSpans, OtlpTracesData, TraceId};
use crate::server::metrics::ServerMetrics;
use crate::tenant::{TenantId, TENANT_HEADER};

/// Request header asking a peer for its head alone (`head`).
pub const SCOPE_HEADER: &str = "x-spoor-scope";
/// Response header naming the answering server's instance.
pub const INSTANCE_HEADER: &str = "x-spoor-instance";
/// How long resolved peer addresses are used before the names are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// Which data a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataScope {
    /// The head and every block: what clients ask for.
    All,
    /// The head and the blocks this server wrote recently (which the asking server's
    /// block list may not show yet): what a peer asks for.
    HeadOnly,
}

impl DataScope {
    /// The scope a request asks for (`X-Spoor-Scope: head` from a peer).
    pub fn of(headers: &HeaderMap) -> DataScope {
        match headers.get(SCOPE_HEADER) {
            Some(value) if value.as_bytes() == b"head" => DataScope::HeadOnly,
            _ => DataScope::All,
        }
    }
}

/// The peers and a client to ask them.
#[derive(Debug)]
pub struct Peers {
    config: ClusterConfig,
    client: reqwest_client::Client,
    /// `cluster.auth` as a header value (marked sensitive).
    auth_header: Option<HeaderValue>,
    instance_id: OnceLock<Uuid>,
    resolved: Mutex<Option<(Instant, Arc<Vec<SocketAddr>>)>>,
    metrics: Arc<ServerMetrics>,
}

impl Peers {
    /// `None` when no peers are configured.
    pub fn new(config: &ClusterConfig, metrics: Arc<ServerMetrics>) -> Option<Peers> {
        if config.peers.is_empty() {
            return None;
        }
        let client = match peer_client(config) {
            Ok(client) => client,
            Err(error) => {
                // The files were checked at load; failing here means they changed since.
                tracing::error!(%error, "cannot build the client for cluster.peers; peers are not asked");
                return None;
            }
        };
        let auth_header = config
            .auth
            .as_ref()
            .and_then(|auth| auth.header_value().ok());
        Some(Peers {
            config: config.clone(),
            client,
            auth_header,
            instance_id: OnceLock::new(),
            resolved: Mutex::new(None),
            metrics,
        })
    }

    /// The scheme and host part of the URLs peers are asked at: with TLS each peer by the
    /// name it is listed by (its certificate is verified against that name), otherwise
    /// every address each name resolves to.
    async fn targets(&self) -> Vec<String> {
        if self.config.tls.is_some() {
            return self
                .config
                .peers
                .iter()
                .map(|peer| format!("https://{peer}"))
                .collect();
        }
        self.addresses()
            .await
            .iter()
            .map(|address| format!("http://{address}"))
            .collect()
    }

    /// This server's instance ID, to recognise its own answers; set once the WAL is open.
    pub fn set_instance_id(&self, instance_id: Uuid) {
        let _ = self.instance_id.set(instance_id);
    }

    /// The peers' addresses: every address every configured name resolves to, cached for
    /// [`RESOLVE_EVERY`]. A name that does not resolve is skipped (and logged).
    async fn addresses(&self) -> Arc<Vec<SocketAddr>> {
        if let Some((at, addresses)) = self.resolved.lock().as_ref() {
            if at.elapsed() < RESOLVE_EVERY {
                return Arc::clone(addresses);
            }
        }
        let mut addresses = Vec::new();
        for peer in &self.config.peers {
            match tokio::net::lookup_host(peer.as_str()).await {
                Ok(found) => addresses.extend(found),
                Err(error) => {
                    tracing::warn!(peer = %peer, %error, "cannot resolve peer");
                    self.metrics.peer_failure("resolve");
                }
            }
        }
        addresses.sort();
        addresses.dedup();
        let addresses = Arc::new(addresses);
        *self.resolved.lock() = Some((Instant::now(), Arc::clone(&addresses)));
        addresses
    }

    /// GETs `path_and_query` from every peer with the tenant and the head-only scope;
    /// the bodies of the answers that came from another server.
    async fn ask(
        &self,
        tenant: &TenantId,
        path_and_query: &str,
        accept: &str,
    ) -> Vec<bytes::Bytes> {
        let targets = self.targets().await;
        let own = self.instance_id.get().map(Uuid::to_string);
        let requests = targets.iter().map(|address| {
            let url = format!("{address}{path_and_query}");
            let mut request = self
                .client
                .get(&url)
                .header(TENANT_HEADER, tenant.as_str())
                .header(SCOPE_HEADER, "head")
                .header(http::header::ACCEPT, accept);
            if let Some(auth) = &self.auth_header {
                request = request.header(http::header::AUTHORIZATION, auth.clone());
            }
            async move { (address, request.send().await) }
        });
        let mut bodies = Vec::new();
        for (address, answer) in join_all(requests).await {
            let response = match answer {
                Ok(response) if response.status().is_success() => response,
                // Trace by ID: the peer holds nothing of the trace.
                Ok(response) if response.status() == http::StatusCode::NOT_FOUND => continue,
                Ok(response) => {
                    tracing::warn!(peer = %address, status = %response.status(), path = path_and_query, "peer query failed");
                    self.metrics.peer_failure("status");
                    continue;
                }
                Err(error) => {
                    tracing::warn!(peer = %address, %error, path = path_and_query, "peer query failed");
                    self.metrics.peer_failure("request");
                    continue;
                }
            };
            let from = response
                .headers()
                .get(INSTANCE_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            if from.is_some() && from == own {
                continue;
            }
            match response.bytes().await {
                Ok(body) => bodies.push(body),
                Err(error) => {
                    tracing::warn!(peer = %address, %error, "reading a peer's answer failed");
                    self.metrics.peer_failure("request");
                }
            }
        }
        bodies
    }

    /// The spans of `trace_id` that peers hold in memory.
    pub async fn find_trace(&self, tenant: &TenantId, trace_id: TraceId) -> Vec<OtlpResourceSpans> {
        let path = format!("/api/traces/{}", trace_id.to_hex());
        let mut found = Vec::new();
        for body in self.ask(tenant, &path, "application/protobuf").await {
            match OtlpTracesData::decode(body.as_ref()) {
                Ok(trace) => found.extend(trace.resource_spans),
                Err(error) => {
                    tracing::warn!(%error, "a peer's trace could not be decoded");
                    self.metrics.peer_failure("decode");
                }
            }
        }
        found
    }

    /// The peers' JSON answers to a GET of `path_and_query` (a Tempo API path with the
    /// client's own query string), from their heads.
    pub async fn ask_json(
        &self,
        tenant: &TenantId,
        path_and_query: &str,
    ) -> Vec<serde_json::Value> {
        let mut answers = Vec::new();
        for body in self.ask(tenant, path_and_query, "application/json").await {
            match serde_json::from_slice(&body) {
                Ok(answer) => answers.push(answer),
                Err(error) => {
                    tracing::warn!(%error, path = path_and_query, "a peer's answer could not be decoded");
                    self.metrics.peer_failure("decode");
                }
            }
        }
        answers
    }
}

/// The HTTP client for peers, with `cluster.tls` when set.
fn peer_client(config: &ClusterConfig) -> Result<reqwest_client::Client, String> {
    let mut builder = reqwest_client::Client::builder()
        .timeout(config.peer_timeout)
        .connect_timeout(config.peer_timeout);
    if let Some(tls) = &config.tls {
        if let Some(ca_file) = &tls.ca_file {
            let pem = std::fs::read(ca_file)
                .map_err(|error| format!("cluster.tls.ca_file {}: {error}", ca_file.display()))?;
            let certs = reqwest_client::Certificate::from_pem_bundle(&pem)
                .map_err(|error| format!("cluster.tls.ca_file {}: {error}", ca_file.display()))?;
            builder = builder.tls_certs_merge(certs);
        }
        if let Some((cert_file, key_file)) = &tls.client_identity {
            let mut pem = std::fs::read(cert_file).map_err(|error| {
                format!("cluster.tls.cert_file {}: {error}", cert_file.display())
            })?;
            pem.extend(std::fs::read(key_file).map_err(|error| {
                format!("cluster.tls.key_file {}: {error}", key_file.display())
            })?);
            let identity = reqwest_client::Identity::from_pem(&pem)
                .map_err(|error| format!("cluster.tls.cert_file/key_file: {error}"))?;
            builder = builder.identity(identity);
        }
    }
    builder
        .build()
        .map_err(|error| format!("http client: {error}"))
}

/// The response header naming this server, on answers to peers.
pub fn instance_header(instance_id: Uuid) -> (http::HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&instance_id.to_string())
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    (http::HeaderName::from_static(INSTANCE_HEADER), value)
}

/// Keeps the first copy of every span (by span ID) and drops resources and scopes left
/// empty: a span acknowledged twice by two servers (a retry after a rebalance) is
/// returned once.
pub fn dedup_spans(resource_spans: &mut Vec<OtlpResourceSpans>) {
    let mut seen = HashSet::new();
    for rs in resource_spans.iter_mut() {
        for ss in rs.scope_spans.iter_mut() {
            ss.spans.retain(|span| seen.insert(span.span_id.clone()));
        }
        rs.scope_spans.retain(|ss| !ss.spans.is_empty());
    }
    resource_spans.retain(|rs| !rs.scope_spans.is_empty());
}

/// Merges search answers (Tempo's JSON): traces by trace ID (the first answer's copy of
/// a trace wins; the local answer comes first), newest first, at most `limit`; the
/// numeric `metrics` summed.
pub fn merge_search_answers(answers: Vec<serde_json::Value>, limit: usize) -> serde_json::Value {
    use serde_json::{Map, Value};
    let mut traces: Vec<Value> = Vec::new();
    let mut seen = HashSet::new();
    let mut metrics = Map::new();
    for answer in answers {
        let Value::Object(mut answer) = answer else {
            continue;
        };
        if let Some(Value::Array(found)) = answer.remove("traces") {
            for trace in found {
                let id = trace
                    .get("traceID")
                    .and_then(Value::as_str)
                    .map(|id| id.trim_start_matches('0').to_owned());
                if id.is_none_or(|id| seen.insert(id)) {
                    traces.push(trace);
                }
            }
        }
        if let Some(Value::Object(counts)) = answer.remove("metrics") {
            for (name, value) in counts {
                let number = |value: &Value| match value {
                    Value::String(text) => text.parse::<u64>().ok(),
                    other => other.as_u64(),
                };
                let Some(add) = number(&value) else {
                    continue;
                };
                let total = metrics.get(&name).and_then(number).unwrap_or(0) + add;
                // Tempo writes 64-bit counters as strings, 32-bit ones as numbers.
                let merged = match value {
                    Value::String(_) => Value::String(total.to_string()),
                    _ => Value::from(total),
                };
                metrics.insert(name, merged);
            }
        }
    }
    let start = |trace: &Value| {
        trace
            .get("startTimeUnixNano")
            .and_then(Value::as_str)
            .and_then(|nanos| nanos.parse::<u64>().ok())
            .unwrap_or(0)
    };
    traces.sort_by_key(|trace| std::cmp::Reverse(start(trace)));
    traces.truncate(limit);
    let mut merged = Map::new();
    if !traces.is_empty() {
        merged.insert("traces".into(), Value::Array(traces));
    }
    merged.insert("metrics".into(), Value::Object(metrics));
    Value::Object(merged)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn search_answers_merge_by_trace_id_newest_first_within_the_limit() {
        let local = json!({
            "traces": [
                {"traceID": "a1", "startTimeUnixNano": "300", "rootServiceName": "local"},
                {"traceID": "b2", "startTimeUnixNano": "100"},
            ],
            "metrics": {"inspectedBytes": "1000", "inspectedTraces": 2, "completedJobs": 1},
        });
        let peer = json!({
            "traces": [
                {"traceID": "00a1", "startTimeUnixNano": "300", "rootServiceName": "peer"},
                {"traceID": "c3", "startTimeUnixNano": "200"},
            ],
            "metrics": {"inspectedBytes": "24", "inspectedTraces": 2},
        });
        let merged = merge_search_answers(vec![local, peer, json!({"metrics": {}})], 2);
        assert_eq!(
            merged,
            json!({
                "traces": [
                    {"traceID": "a1", "startTimeUnixNano": "300", "rootServiceName": "local"},
                    {"traceID": "c3", "startTimeUnixNano": "200"},
                ],
                "metrics": {"inspectedBytes": "1024", "inspectedTraces": 4, "completedJobs": 1},
            })
        );
    }

    #[test]
    fn spans_known_twice_are_returned_once() {
        use crate::otlp::{OtlpScopeSpans, OtlpSpan};
        let span = |id: u8| OtlpSpan {
            span_id: vec![id; 8],
            ..Default::default()
        };
        let batch = |ids: &[u8]| OtlpResourceSpans {
            scope_spans: vec![OtlpScopeSpans {
                spans: ids.iter().map(|id| span(*id)).collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut spans = vec![batch(&[1, 2]), batch(&[2]), batch(&[3, 1])];
        dedup_spans(&mut spans);
        assert_eq!(spans.len(), 2);
        let ids: Vec<u8> = spans
            .iter()
            .flat_map(|rs| &rs.scope_spans[0].spans)
            .map(|s| s.span_id[0])
            .collect();
        assert_eq!(ids, vec![1, 2, 3]);
    }
}
