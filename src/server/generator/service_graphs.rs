//! The `service-graphs` processor: pairs each client (or producer) span with the server
//! (or consumer) span whose parent it is, and counts the request on the edge between
//! their services (Tempo's names, labels and pairing rules, tempo-api.md §6.1).
//!
//! Halves wait at most `wait` for each other in a store bounded by `max_items`. A half
//! that expires becomes an edge to a *virtual node* when the span says who the other
//! side is (a peer attribute such as `peer.service` or `db.system`); otherwise it is
//! counted as unpaired. Database calls need no server span at all: a client span with
//! `db.*` attributes is an edge to the database as soon as it arrives.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::{
    clean_value, sanitize_label_name, snapshot_table, Family, Histogram, Sample, SampleValue,
    SeriesBudget, SeriesTable,
};
use super::{find_attribute, span_seconds, SpanContext};
use crate::config::ServiceGraphsConfig;
use crate::otlp::{OtlpSpan, OtlpStatusCode};

const REQUESTS: Family = Family {
    name: "traces_service_graph_request",
    help: "Requests between two services (client → server)",
};
const FAILED: Family = Family {
    name: "traces_service_graph_request_failed",
    help: "Requests between two services where either span failed",
};
const SERVER_SECONDS: Family = Family {
    name: "traces_service_graph_request_server_seconds",
    help: "Durations of the server spans of the requests, in seconds",
};
const CLIENT_SECONDS: Family = Family {
    name: "traces_service_graph_request_client_seconds",
    help: "Durations of the client spans of the requests, in seconds",
};
const UNPAIRED: Family = Family {
    name: "traces_service_graph_unpaired_spans",
    help: "Client or server spans whose other half did not arrive within the wait",
};
const DROPPED: Family = Family {
    name: "traces_service_graph_dropped_spans",
    help: "Client or server spans not paired because max_items halves were waiting",
};

/// The client of a root server span, whose caller is not traced (Tempo's convention).
const USER_NODE: &str = "user";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectionType {
    Direct,
    MessagingSystem,
    Database,
    VirtualNode,
}

impl ConnectionType {
    fn label(self) -> &'static str {
        match self {
            ConnectionType::Direct => "",
            ConnectionType::MessagingSystem => "messaging_system",
            ConnectionType::Database => "database",
            ConnectionType::VirtualNode => "virtual_node",
        }
    }
}

/// Which side of the edge a virtual node stands in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VirtualSide {
    None,
    Client,
    Server,
}

/// Trace ID and the client span's ID: what both halves of one request know.
type EdgeKey = ([u8; 16], [u8; 8]);

#[derive(Debug, Default)]
struct Edge {
    /// Matches the expiry queue entry that may remove this edge.
    generation: u64,
    connection_type: Option<ConnectionType>,
    client: Option<String>,
    server: Option<String>,
    client_seconds: f64,
    server_seconds: f64,
    failed: bool,
    /// Who the server is according to the client span's peer attributes.
    peer_node: Option<String>,
    /// Dimension values per configured dimension, as seen on each side.
    client_dimensions: Vec<Option<String>>,
    server_dimensions: Vec<Option<String>>,
}

#[derive(Debug)]
struct EdgeSeries {
    requests: u64,
    failed: u64,
    server: Histogram,
    client: Histogram,
}

#[derive(Debug)]
pub(super) struct ServiceGraphs {
    config: Arc<ServiceGraphsConfig>,
    bounds: Arc<[f64]>,
    edges: HashMap<EdgeKey, Edge>,
    expiry: VecDeque<(Instant, EdgeKey, u64)>,
    next_generation: u64,
    series: SeriesTable<EdgeSeries>,
    unpaired: SeriesTable<u64>,
    dropped: SeriesTable<u64>,
    /// Edges that expired since the generator last reported, for its logs.
    pub(super) expired_edges: u64,
}

impl ServiceGraphs {
    pub(super) fn new(config: Arc<ServiceGraphsConfig>) -> ServiceGraphs {
        let mut names: Vec<String> = ["client", "server", "connection_type"]
            .map(str::to_owned)
            .to_vec();
        if config.enable_virtual_node_label {
            names.push("virtual_node".to_owned());
        }
        for dimension in &config.dimensions {
            let name = sanitize_label_name(dimension);
            if config.enable_client_server_prefix {
                names.push(format!("client_{name}"));
                names.push(format!("server_{name}"));
            } else {
                names.push(name);
            }
        }
        let bounds: Arc<[f64]> = config.histogram_buckets.clone().into();
        let cost = 2 + 2 * Histogram::series_cost(bounds.len());
        let side_names = || ["client", "server"].map(str::to_owned).to_vec();
        ServiceGraphs {
            series: SeriesTable::new(names, cost),
            unpaired: SeriesTable::new(side_names(), 1),
            dropped: SeriesTable::new(side_names(), 1),
            bounds,
            config,
            edges: HashMap::new(),
            expiry: VecDeque::new(),
            next_generation: 0,
            expired_edges: 0,
        }
    }

    pub(super) fn observe(
        &mut self,
        context: &SpanContext<'_>,
        span: &OtlpSpan,
        now: Instant,
        clock: u64,
        budget: &mut SeriesBudget,
    ) {
        // Spans without a service name cannot be a node (Tempo skips them too).
        if context.service.is_empty() {
            return;
        }
        let Ok(trace_id) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else {
            return;
        };
        let failed = span
            .status
            .as_ref()
            .is_some_and(|status| status.code == OtlpStatusCode::Error as i32);
        let (is_client, connection_type) = match span.kind {
            3 => (true, ConnectionType::Direct),
            4 => (true, ConnectionType::MessagingSystem),
            2 => (false, ConnectionType::Direct),
            5 => (false, ConnectionType::MessagingSystem),
            _ => return,
        };
        let dimensions: Vec<Option<String>> = self
            .config
            .dimensions
            .iter()
            .map(|d| find_attribute(d, context.resource_attributes, &span.attributes))
            .map(|v| v.map(|v| clean_value(&v).into_owned()))
            .collect();
        if !is_client && span.parent_span_id.is_empty() {
            // A root server span: nobody traced called it, and no client span can
            // ever name it as a child, so its edge from `user` is known right away.
            let edge = Edge {
                connection_type: Some(ConnectionType::VirtualNode),
                client: Some(USER_NODE.to_owned()),
                server: Some(context.service.to_owned()),
                server_seconds: span_seconds(span),
                failed,
                server_dimensions: dimensions,
                ..Edge::default()
            };
            self.record(&edge, VirtualSide::Client, clock, budget);
            return;
        }
        let span_id = if is_client {
            &span.span_id
        } else {
            &span.parent_span_id
        };
        let Ok(span_id) = <[u8; 8]>::try_from(span_id.as_slice()) else {
            return;
        };
        let key = (trace_id, span_id);
        if !self.edges.contains_key(&key) && self.edges.len() >= self.config.max_items {
            let side = if is_client {
                [context.service, ""]
            } else {
                ["", context.service]
            };
            if let Some(count) = self.dropped.get_or_create(&side, clock, budget, || 0) {
                *count += 1;
            }
            return;
        }
        let edge = self.edges.entry(key).or_insert_with(|| {
            self.next_generation += 1;
            self.expiry
                .push_back((now + self.config.wait, key, self.next_generation));
            Edge {
                generation: self.next_generation,
                ..Edge::default()
            }
        });
        edge.failed |= failed;
        if is_client {
            edge.client = Some(context.service.to_owned());
            edge.client_seconds = span_seconds(span);
            edge.connection_type.get_or_insert(connection_type);
            edge.client_dimensions = dimensions;
            edge.peer_node = self
                .config
                .peer_attributes
                .iter()
                .find_map(|name| find_attribute(name, &[], &span.attributes))
                .map(|v| clean_value(&v).into_owned());
            if let Some(database) = database_server(context, span) {
                edge.connection_type = Some(ConnectionType::Database);
                edge.server_seconds = edge.client_seconds;
                edge.server = Some(database);
            }
        } else {
            edge.server = Some(context.service.to_owned());
            edge.server_seconds = span_seconds(span);
            edge.connection_type.get_or_insert(connection_type);
            edge.server_dimensions = dimensions;
        }
        if edge.client.is_some() && edge.server.is_some() {
            if let Some(edge) = self.edges.remove(&key) {
                self.record(&edge, VirtualSide::None, clock, budget);
            }
        }
    }

    /// Resolves every half whose wait is over: a virtual-node edge where the span names
    /// its peer, unpaired otherwise.
    pub(super) fn expire(&mut self, now: Instant, clock: u64, budget: &mut SeriesBudget) {
        while let Some(&(deadline, key, generation)) = self.expiry.front() {
            if deadline > now {
                break;
            }
            self.expiry.pop_front();
            let current = self.edges.get(&key).map(|edge| edge.generation);
            if current != Some(generation) {
                continue;
            }
            let Some(mut edge) = self.edges.remove(&key) else {
                continue;
            };
            self.expired_edges += 1;
            match (&edge.client, &edge.server) {
                (Some(_), None) if edge.peer_node.is_some() => {
                    edge.server = edge.peer_node.take();
                    edge.connection_type = Some(ConnectionType::VirtualNode);
                    self.record(&edge, VirtualSide::Server, clock, budget);
                }
                (client, server) => {
                    let side = [
                        client.as_deref().unwrap_or_default(),
                        server.as_deref().unwrap_or_default(),
                    ];
                    if let Some(count) = self.unpaired.get_or_create(&side, clock, budget, || 0) {
                        *count += 1;
                    }
                }
            }
        }
    }

    fn record(
        &mut self,
        edge: &Edge,
        virtual_side: VirtualSide,
        clock: u64,
        budget: &mut SeriesBudget,
    ) {
        let mut labels: Vec<&str> = vec![
            edge.client.as_deref().unwrap_or_default(),
            edge.server.as_deref().unwrap_or_default(),
            edge.connection_type
                .unwrap_or(ConnectionType::Direct)
                .label(),
        ];
        if self.config.enable_virtual_node_label {
            labels.push(match virtual_side {
                VirtualSide::None => "",
                VirtualSide::Client => "client",
                VirtualSide::Server => "server",
            });
        }
        for index in 0..self.config.dimensions.len() {
            let client = edge.client_dimensions.get(index).and_then(Option::as_deref);
            let server = edge.server_dimensions.get(index).and_then(Option::as_deref);
            if self.config.enable_client_server_prefix {
                labels.push(client.unwrap_or_default());
                labels.push(server.unwrap_or_default());
            } else {
                // One label for both sides: the server's value where it has one.
                labels.push(server.or(client).unwrap_or_default());
            }
        }
        let num_bounds = self.bounds.len();
        let Some(series) = self
            .series
            .get_or_create(&labels, clock, budget, || EdgeSeries {
                requests: 0,
                failed: 0,
                server: Histogram::new(num_bounds),
                client: Histogram::new(num_bounds),
            })
        else {
            return;
        };
        series.requests += 1;
        series.failed += u64::from(edge.failed);
        series.server.observe(&self.bounds, edge.server_seconds);
        series.client.observe(&self.bounds, edge.client_seconds);
    }

    pub(super) fn remove_stale(&mut self, oldest: u64, budget: &mut SeriesBudget) {
        self.series.remove_stale(oldest, budget);
        self.unpaired.remove_stale(oldest, budget);
        self.dropped.remove_stale(oldest, budget);
    }

    /// Halves waiting for their other half.
    pub(super) fn waiting(&self) -> usize {
        self.edges.len()
    }

    pub(super) fn snapshot(&self, out: &mut Vec<Sample>) {
        let counter = |value: u64| SampleValue::Counter(value as f64);
        snapshot_table(&self.series, REQUESTS, out, |s| counter(s.requests));
        snapshot_table(&self.series, FAILED, out, |s| counter(s.failed));
        snapshot_table(&self.series, SERVER_SECONDS, out, |s| {
            SampleValue::histogram(&self.bounds, &s.server)
        });
        snapshot_table(&self.series, CLIENT_SECONDS, out, |s| {
            SampleValue::histogram(&self.bounds, &s.client)
        });
        snapshot_table(&self.unpaired, UNPAIRED, out, |count| counter(*count));
        snapshot_table(&self.dropped, DROPPED, out, |count| counter(*count));
    }
}

/// The server name of a database call, when the client span is one (`db.*`
/// attributes): `peer.service`, then `server.address`, then `network.peer.address`
/// (with its port), then the database name (Tempo's order). `None` for a span that is
/// not a database call or names no server; such a span waits for a server span or
/// expires into a virtual node named by its peer attributes.
fn database_server(context: &SpanContext<'_>, span: &OtlpSpan) -> Option<String> {
    let find = |name: &str| find_attribute(name, context.resource_attributes, &span.attributes);
    let db_name = find("db.namespace").or_else(|| find("db.name"));
    let is_database =
        db_name.is_some() || find("db.system").is_some() || find("db.system.name").is_some();
    if !is_database {
        return None;
    }
    let name = find("peer.service")
        .or_else(|| find("server.address"))
        .map(|name| name.into_owned())
        .or_else(|| {
            let host = find("network.peer.address")?;
            Some(match find("network.peer.port") {
                Some(port) => format!("{host}:{port}"),
                None => host.into_owned(),
            })
        })
        .or_else(|| db_name.map(|name| name.into_owned()))?;
    Some(clean_value(&name).into_owned())
}

/// How often the generator runs [`ServiceGraphs::expire`]: a fifth of the wait (within
/// 0.1–2 s), so a half is resolved at most that much after its wait is over.
pub(super) fn expiry_period(config: &ServiceGraphsConfig) -> Duration {
    (config.wait / 5).clamp(Duration::from_millis(100), Duration::from_secs(2))
}
