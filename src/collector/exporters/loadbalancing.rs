//! `loadbalancing`: every span goes to one of several OTLP/gRPC backends, chosen by a
//! consistent hash of its trace ID (`routing_key: traceID`) or of its resource's
//! `service.name` (`routing_key: service`), so all spans of a trace (or service) reach
//! the same backend — what tail sampling and span metrics behind it need.
//!
//! The ring is the OpenTelemetry Collector contrib exporter's, so a spoor-collector and
//! an otelcol-contrib given the same hostnames send a trace to the same backend: 36000
//! positions; each hostname (as written, the list sorted) takes 100 points at
//! `crc32(hostname ++ [i]) % 36000` for `i` in `0..100`, a point already taken by an
//! earlier hostname staying with it; a key goes to the first point at or after
//! `crc32(key) % 36000`, wrapping around. Removing a hostname moves only the keys it
//! had; adding one moves only the keys it takes (about 1/(N+1) of them).
//!
//! Each backend is a queued `otlp` exporter ([`QueuedExporter`]) with the
//! `protocol.otlp` settings: its own sending queue, consumers and retries. A batch is
//! split by backend (resources and scopes kept) and each part is queued on its
//! backend; the request is acknowledged when every part is (the usual contract, see
//! [`crate::collector::delivery`]), and a full backend queue refuses (or, with
//! `block_on_overflow`, holds up) the request as a single `otlp` exporter would.
//!
//! By default a backend that fails keeps its share, as in the OpenTelemetry Collector:
//! its queue and retries hold the data until it is back, and nothing moves to the other
//! backends, so a trace is never split between two of them.
//!
//! With `failover` (spoor's), a backend whose every attempt failed for
//! `unhealthy_after` is down ([`Backend::attempted`]): new batches skip it on the ring,
//! so only its share moves, to the next backends that are up; a batch in its queue
//! whose retries are exhausted is split again and queued on them
//! ([`Backend::hand_over`]), leaving its queue only once they all hold it; a probe (an
//! empty export) every `probe_interval` notices when it is back. During a failover a
//! trace may be split between two backends: the price of the others' ingest never
//! stopping for one backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    otlp_grpc, ExportError, Exporter, ExporterError, ExporterNames, QueueItem, QueuedExporter,
};
use crate::collector::batch::{partition_spans, Part};
use crate::collector::delivery::{commit_all, fail_all, AckRef, Delivery};
use crate::collector::metrics::CollectorMetrics;
use crate::collector::queue::Dispatched;
use crate::config::collector::{FailoverConfig, LoadBalancingExporterConfig, RoutingKey};
use crate::otlp::{OtlpResource, OtlpResourceSpans, OtlpValue};
use crate::receiver::ConsumeError;
use crate::tenant::TenantId;

/// Positions on the ring: "360 degrees with two decimal places", as in contrib.
const RING_POSITIONS: u32 = 36_000;
/// Points per backend, as in contrib (which has no per-backend weights either).
const POINTS_PER_BACKEND: usize = 100;
/// Batches above this many spans are split on the blocking pool.
const INLINE_SPLIT_MAX_SPANS: usize = 2048;
/// The only resolver spoor implements (the `resolver` label of the backend gauge).
const STATIC_RESOLVER: &str = "static";

/// A consistent-hash ring of backends, identified by their index in the list it was
/// built from.
#[derive(Debug)]
pub(crate) struct HashRing {
    /// (position, backend index), sorted by position; positions are distinct.
    points: Vec<(u32, usize)>,
}

impl HashRing {
    /// The ring of `hostnames`; on a shared point the earlier hostname wins, so pass
    /// them sorted, as contrib's static resolver does.
    pub(crate) fn new<S: AsRef<str>>(hostnames: &[S]) -> HashRing {
        let mut points: Vec<(u32, usize)> =
            Vec::with_capacity(hostnames.len() * POINTS_PER_BACKEND);
        let mut taken = std::collections::HashSet::new();
        for (index, hostname) in hostnames.iter().enumerate() {
            for point in 0..POINTS_PER_BACKEND {
                let mut hasher = crc32fast::Hasher::new();
                hasher.update(hostname.as_ref().as_bytes());
                // contrib writes Go's byte(i); POINTS_PER_BACKEND stays below 256.
                hasher.update(&[point as u8]);
                let position = hasher.finalize() % RING_POSITIONS;
                if taken.insert(position) {
                    points.push((position, index));
                }
            }
        }
        points.sort_unstable();
        HashRing { points }
    }

    /// The backend for `key`: the owner of the first point at or after the key's
    /// position, wrapping around, skipping backends marked in `down` (all down: the
    /// owner). 0 for an empty ring.
    pub(crate) fn backend_for(&self, key: &[u8], down: &[bool]) -> usize {
        self.backend_at(crc32fast::hash(key) % RING_POSITIONS, down)
    }

    fn backend_at(&self, position: u32, down: &[bool]) -> usize {
        let num_points = self.points.len();
        if num_points == 0 {
            return 0;
        }
        let first = self.points.partition_point(|&(point, _)| point < position);
        let owner = self.points[first % num_points].1;
        (0..num_points)
            .map(|step| self.points[(first + step) % num_points].1)
            .find(|&backend| !down.get(backend).copied().unwrap_or(false))
            .unwrap_or(owner)
    }
}

/// One backend as the router sees it; its queued exporter reports every export
/// attempt here.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Its index in the router's list (and on the ring).
    index: usize,
    exporter_id: String,
    hostname: String,
    failover: Option<FailoverConfig>,
    /// When the current run of failed attempts began; `None` after a success.
    failing_since: Mutex<Option<std::time::Instant>>,
    /// Whether this outage was logged.
    announced_down: AtomicBool,
    /// Set once the router exists; used to hand batches over (failover only).
    router: OnceLock<Weak<Router>>,
    metrics: Arc<CollectorMetrics>,
}

impl Backend {
    /// Records an export attempt: `otelcol_loadbalancer_backend_outcome`, and the
    /// backend's health when failover is on.
    pub(crate) fn attempted(&self, success: bool) {
        self.metrics
            .loadbalancer_backend_outcome(&self.hostname, success);
        let Some(failover) = self.failover else {
            return;
        };
        let mut failing_since = self.failing_since.lock();
        if success {
            *failing_since = None;
            if self.announced_down.swap(false, Ordering::Relaxed) {
                info!(
                    exporter = %self.exporter_id,
                    backend = %self.hostname,
                    "backend is back; its share of the traces returns to it"
                );
            }
            return;
        }
        let failing_for = failing_since
            .get_or_insert_with(std::time::Instant::now)
            .elapsed();
        if failing_for >= failover.unhealthy_after
            && !self.announced_down.swap(true, Ordering::Relaxed)
        {
            warn!(
                exporter = %self.exporter_id,
                backend = %self.hostname,
                failing_for = ?failing_for,
                "backend is down; its share of the traces goes to the next backends on the ring"
            );
        }
    }

    /// Whether the backend is down: failover is on and every attempt failed for
    /// `unhealthy_after`.
    fn is_down(&self) -> bool {
        self.failover.is_some_and(|failover| {
            self.failing_since
                .lock()
                .is_some_and(|since| since.elapsed() >= failover.unhealthy_after)
        })
    }

    /// With failover on, queues a batch this backend could not send on the next
    /// backends on the ring that are up; true once they all hold it.
    pub(crate) async fn hand_over(&self, item: &Dispatched) -> bool {
        if self.failover.is_none() {
            return false;
        }
        match self.router.get().and_then(Weak::upgrade) {
            Some(router) => router.hand_over(self.index, item).await,
            None => false,
        }
    }
}

/// Routes batches to the backends' queues.
#[derive(Debug)]
struct Router {
    routing_key: RoutingKey,
    ring: HashRing,
    /// By ring index: the configured backends, sorted by hostname.
    backends: Vec<(Arc<Backend>, Arc<QueuedExporter>)>,
}

impl Router {
    /// Splits the batch by backend (the next one up on the ring for a backend that is
    /// down, never `avoid`) and queues each part on its backend; each part holds every
    /// ack of the batch, so a request is acknowledged once all of its parts are safe.
    async fn dispatch(
        self: &Arc<Self>,
        tenant: TenantId,
        spans: Vec<OtlpResourceSpans>,
        num_spans: usize,
        mut acks: Vec<AckRef>,
        avoid: Option<usize>,
    ) {
        let down: Vec<bool> = self
            .backends
            .iter()
            .map(|(backend, _)| backend.is_down() || Some(backend.index) == avoid)
            .collect();
        let parts = if num_spans <= INLINE_SPLIT_MAX_SPANS {
            route(&self.ring, self.routing_key, spans, &down)
        } else {
            let router = Arc::clone(self);
            let routing = tokio::task::spawn_blocking(move || {
                route(&router.ring, router.routing_key, spans, &down)
            });
            match routing.await {
                Ok(parts) => parts,
                Err(error) => {
                    fail_all(
                        acks,
                        &ConsumeError::Internal(format!("splitting a batch failed: {error}")),
                    );
                    return;
                }
            }
        };
        // Only when every backend is down does the ring fall back to the owners; a hand
        // over must not come back to where it started.
        if avoid.is_some_and(|avoid| parts.iter().any(|part| part.index == avoid)) {
            fail_all(acks, &ConsumeError::Closed);
            return;
        }
        let mut parts = parts.into_iter().peekable();
        if parts.peek().is_none() {
            commit_all(acks);
            return;
        }
        while let Some(part) = parts.next() {
            let part_acks = if parts.peek().is_some() {
                acks.clone()
            } else {
                std::mem::take(&mut acks)
            };
            let Some((_, queued)) = self.backends.get(part.index) else {
                // The ring only knows indexes of `backends`.
                debug_assert!(false, "ring index {} out of range", part.index);
                fail_all(part_acks, &ConsumeError::Internal("no backend".to_owned()));
                continue;
            };
            queued
                .enqueue_item(QueueItem {
                    tenant: tenant.clone(),
                    spans: Arc::new(part.resource_spans),
                    num_spans: part.num_spans,
                    acks: part_acks,
                })
                .await;
        }
    }

    /// Queues a batch backend `from` could not send on the other backends; true once
    /// they all hold it.
    async fn hand_over(self: &Arc<Self>, from: usize, item: &Dispatched) -> bool {
        let payload = item.payload.clone();
        let decoded = if item.num_spans <= INLINE_SPLIT_MAX_SPANS {
            payload.decoded()
        } else {
            tokio::task::spawn_blocking(move || payload.decoded())
                .await
                .unwrap_or_else(|error| Err(ExportError::permanent(error.to_string())))
        };
        let Ok(spans) = decoded else {
            return false;
        };
        let (delivery, ack) = Delivery::new(Vec::new());
        self.dispatch(
            item.tenant.clone(),
            Arc::unwrap_or_clone(spans),
            item.num_spans,
            vec![ack],
            Some(from),
        )
        .await;
        delivery.wait().await.is_ok()
    }
}

/// A running `loadbalancing` exporter.
#[derive(Debug)]
pub(crate) struct LoadBalancer {
    id: String,
    router: Arc<Router>,
    metrics: Arc<CollectorMetrics>,
    /// Stops the probes of backends that are down (failover only).
    probes_cancel: CancellationToken,
    probes: Mutex<Option<JoinHandle<()>>>,
}

impl LoadBalancer {
    /// Starts one queued `otlp` exporter per backend (replaying persistent queues) and,
    /// with failover, the probes of backends that are down.
    pub(crate) async fn start(
        id: String,
        config: &LoadBalancingExporterConfig,
        metrics: Arc<CollectorMetrics>,
    ) -> Result<LoadBalancer, ExporterError> {
        let mut backends = Vec::with_capacity(config.backends.len());
        for (index, backend_config) in config.backends.iter().enumerate() {
            let backend = Arc::new(Backend {
                index,
                exporter_id: id.clone(),
                hostname: backend_config.hostname.clone(),
                failover: config.failover,
                failing_since: Mutex::new(None),
                announced_down: AtomicBool::new(false),
                router: OnceLock::new(),
                metrics: Arc::clone(&metrics),
            });
            let names = ExporterNames {
                id: id.clone(),
                name: format!("{id}/{}", backend_config.hostname),
            };
            let started = match otlp_grpc::OtlpGrpcExporter::new(&backend_config.exporter) {
                Ok(exporter) => {
                    QueuedExporter::start(
                        names,
                        Exporter::Otlp(exporter),
                        &backend_config.exporter.queue,
                        backend_config.exporter.retry.clone(),
                        Some(Arc::clone(&backend)),
                        Arc::clone(&metrics),
                    )
                    .await
                }
                Err(message) => Err(ExporterError::Setup {
                    exporter: names.name,
                    message,
                }),
            };
            match started {
                Ok(queued) => backends.push((backend, queued)),
                Err(error) => {
                    let now = Instant::now();
                    for (_, started) in &backends {
                        started.shutdown(now).await;
                    }
                    return Err(error);
                }
            }
        }
        let hostnames: Vec<&str> = config
            .backends
            .iter()
            .map(|backend| backend.hostname.as_str())
            .collect();
        let router = Arc::new(Router {
            routing_key: config.routing_key,
            ring: HashRing::new(&hostnames),
            backends,
        });
        for (backend, _) in &router.backends {
            // Each OnceLock is new and set only here.
            let _ = backend.router.set(Arc::downgrade(&router));
        }
        metrics.loadbalancer_backends_changed(STATIC_RESOLVER, router.backends.len() as i64);
        info!(
            exporter = %id,
            resolver = STATIC_RESOLVER,
            backends = ?hostnames,
            failover = config.failover.is_some(),
            "load balancing over backends"
        );
        let probes_cancel = CancellationToken::new();
        let probes = config.failover.map(|failover| {
            tokio::spawn(probe_down_backends(
                Arc::clone(&router),
                failover.probe_interval,
                probes_cancel.clone(),
            ))
        });
        Ok(LoadBalancer {
            id,
            router,
            metrics,
            probes_cancel,
            probes: Mutex::new(probes),
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// See [`Router::dispatch`].
    pub(crate) async fn enqueue_item(&self, item: QueueItem) {
        // Shared with the pipeline's other exporters, if any: then split a copy.
        let spans = Arc::unwrap_or_clone(item.spans);
        self.router
            .dispatch(item.tenant, spans, item.num_spans, item.acks, None)
            .await;
    }

    /// Whether every backend's queue answers (watchdog).
    pub(crate) async fn probe(&self) -> bool {
        for (_, queued) in &self.router.backends {
            if !queued.probe().await {
                return false;
            }
        }
        true
    }

    /// Drains every backend's queue at once, with the same deadline.
    pub(crate) async fn shutdown(&self, deadline: Instant) {
        self.probes_cancel.cancel();
        let probes = self.probes.lock().take();
        if let Some(probes) = probes {
            let _ = probes.await;
        }
        futures::future::join_all(
            self.router
                .backends
                .iter()
                .map(|(_, queued)| queued.shutdown(deadline)),
        )
        .await;
        self.metrics
            .loadbalancer_backends_changed(STATIC_RESOLVER, -(self.router.backends.len() as i64));
    }
}

/// Every `interval`, sends an empty export to each backend that is down: the first
/// success brings its share back, even when it has nothing queued to retry.
async fn probe_down_backends(
    router: Arc<Router>,
    interval: std::time::Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for (backend, queued) in &router.backends {
            if backend.is_down() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    () = queued.send_probe() => {}
                }
            }
        }
    }
}

/// Splits spans by the backend their routing key hashes to, skipping backends that
/// are down.
fn route(
    ring: &HashRing,
    routing_key: RoutingKey,
    spans: Vec<OtlpResourceSpans>,
    down: &[bool],
) -> Vec<Part> {
    match routing_key {
        RoutingKey::TraceId => {
            partition_spans(spans, |_, span| ring.backend_for(&span.trace_id, down))
        }
        RoutingKey::Service => partition_spans(spans, |resource, _| {
            ring.backend_for(service_name(resource).as_bytes(), down)
        }),
    }
}

/// The resource's `service.name`; empty when it has none (all such spans share a
/// backend, where contrib refuses them).
fn service_name(resource: Option<&OtlpResource>) -> &str {
    resource
        .into_iter()
        .flat_map(|resource| &resource.attributes)
        .find(|attribute| attribute.key == "service.name")
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
        .map_or("", |value| match value {
            OtlpValue::StringValue(name) => name.as_str(),
            _ => "",
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::delivery::Delivery;
    use crate::otlp::{OtlpAnyValue, OtlpKeyValue, OtlpScopeSpans, OtlpSpan};
    use crate::tenant::TenantId;

    /// Deterministic pseudo-random trace IDs (splitmix64).
    fn trace_ids(count: usize, seed: u64) -> Vec<[u8; 16]> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..count)
            .map(|_| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&next().to_le_bytes());
                id[8..].copy_from_slice(&next().to_le_bytes());
                id
            })
            .collect()
    }

    fn hostnames(count: usize) -> Vec<String> {
        let mut names: Vec<String> = (1..=count).map(|n| format!("backend-{n}:4317")).collect();
        names.sort();
        names
    }

    /// Which hostname each ID goes to.
    fn assign<'a>(hostnames: &'a [String], ids: &[[u8; 16]]) -> Vec<&'a str> {
        let ring = HashRing::new(hostnames);
        ids.iter()
            .map(|id| hostnames[ring.backend_for(id, &[])].as_str())
            .collect()
    }

    #[test]
    fn positions_follow_contrib() {
        // CRC-32/IEEE, the checksum Go's hash/crc32.NewIEEE computes.
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
        let ring = HashRing::new(&["endpoint-1"]);
        assert_eq!(ring.points.len(), POINTS_PER_BACKEND);
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(b"endpoint-1");
        hasher.update(&[7]);
        let position = hasher.finalize() % RING_POSITIONS;
        assert!(ring.points.contains(&(position, 0)));
        // A position at a point goes to that point's backend, one past it to the next
        // point's, and past the last point it wraps around to the first.
        let ring = HashRing::new(&hostnames(3));
        assert_eq!(
            ring.points.len(),
            3 * POINTS_PER_BACKEND - 3,
            "three collisions"
        );
        for window in ring.points.windows(2) {
            let ((here, backend), (_, next_backend)) = (window[0], window[1]);
            assert_eq!(ring.backend_at(here, &[]), backend);
            assert_eq!(ring.backend_at(here + 1, &[]), next_backend);
        }
        let (first, last) = (ring.points[0], ring.points[ring.points.len() - 1]);
        assert_eq!(ring.backend_at(last.0 + 1, &[]), first.1);
        assert_eq!(ring.backend_at(0, &[]), first.1);
        assert_eq!(HashRing::new::<&str>(&[]).backend_for(b"anything", &[]), 0);
    }

    /// Owners computed independently (Python's zlib.crc32, contrib's algorithm as read
    /// in consistent_hashing.go), so this pins the ring to contrib's choices.
    #[test]
    fn assignments_match_contrib() {
        let names = hostnames(3);
        let ring = HashRing::new(&names);
        let expected = [
            "backend-3:4317",
            "backend-3:4317",
            "backend-2:4317",
            "backend-1:4317",
            "backend-2:4317",
            "backend-2:4317",
            "backend-2:4317",
            "backend-1:4317",
        ];
        for (byte, owner) in (0u8..).zip(expected) {
            assert_eq!(
                names[ring.backend_for(&[byte; 16], &[])],
                owner,
                "trace {byte}"
            );
        }
        assert_eq!(names[ring.backend_for(b"checkout", &[])], "backend-2:4317");
    }

    #[test]
    fn a_backend_that_is_down_hands_only_its_traces_to_the_others() {
        let ids = trace_ids(20_000, 7);
        let names = hostnames(4);
        let ring = HashRing::new(&names);
        let owners: Vec<usize> = ids.iter().map(|id| ring.backend_for(id, &[])).collect();
        for down_index in 0..names.len() {
            let mut down = vec![false; names.len()];
            down[down_index] = true;
            let mut moved = 0;
            for (id, &owner) in ids.iter().zip(&owners) {
                let routed = ring.backend_for(id, &down);
                assert_ne!(routed, down_index);
                if owner != down_index {
                    assert_eq!(routed, owner, "only the down backend's traces move");
                } else {
                    moved += 1;
                }
            }
            assert!(moved > 0);
        }
        // Every backend down: the owners, as without failover.
        let all_down = vec![true; names.len()];
        for (id, &owner) in ids.iter().zip(&owners).take(100) {
            assert_eq!(ring.backend_for(id, &all_down), owner);
        }
    }

    #[test]
    fn same_hostnames_same_assignment() {
        let ids = trace_ids(2000, 1);
        let names = hostnames(4);
        assert_eq!(assign(&names, &ids), assign(&names.clone(), &ids));
    }

    #[test]
    fn removing_a_backend_moves_only_its_traces() {
        let ids = trace_ids(20_000, 2);
        for count in [2, 3, 5, 8] {
            let all = hostnames(count);
            let before = assign(&all, &ids);
            for removed in &all {
                let rest: Vec<String> = all
                    .iter()
                    .filter(|name| *name != removed)
                    .cloned()
                    .collect();
                let after = assign(&rest, &ids);
                for (old, new) in before.iter().zip(&after) {
                    if old != removed {
                        assert_eq!(old, new, "{count} backends, {removed} removed");
                    }
                }
            }
        }
    }

    proptest::proptest! {
        /// For any hostnames, removing one changes the backend only of the keys it had,
        /// and marking it down routes exactly those keys elsewhere.
        #[test]
        fn only_the_removed_or_down_backends_keys_move(
            names in proptest::collection::btree_set("[a-z0-9.-]{1,20}(:[0-9]{1,5})?", 2..8),
            removed in 0usize..8,
            keys in proptest::collection::vec(proptest::array::uniform16(0u8..), 1..200),
        ) {
            let all: Vec<String> = names.into_iter().collect();
            let removed = removed % all.len();
            let ring = HashRing::new(&all);
            let rest: Vec<String> = all.iter().enumerate()
                .filter(|(index, _)| *index != removed)
                .map(|(_, name)| name.clone())
                .collect();
            let smaller = HashRing::new(&rest);
            let mut down = vec![false; all.len()];
            down[removed] = true;
            for key in &keys {
                let owner = &all[ring.backend_for(key, &[])];
                let after = &rest[smaller.backend_for(key, &[])];
                let routed = ring.backend_for(key, &down);
                proptest::prop_assert_ne!(routed, removed);
                if *owner != all[removed] {
                    proptest::prop_assert_eq!(owner, after);
                    proptest::prop_assert_eq!(owner, &all[routed]);
                }
            }
        }
    }

    #[test]
    fn adding_a_backend_moves_about_its_share_to_it() {
        let ids = trace_ids(20_000, 3);
        for count in [2, 3, 5, 8] {
            let all = hostnames(count + 1);
            for added in &all {
                let before_names: Vec<String> =
                    all.iter().filter(|name| *name != added).cloned().collect();
                let before = assign(&before_names, &ids);
                let after = assign(&all, &ids);
                let mut moved = 0;
                for (old, new) in before.iter().zip(&after) {
                    if old != new {
                        assert_eq!(new, added, "a trace moved between old backends");
                        moved += 1;
                    }
                }
                let share = moved as f64 / ids.len() as f64;
                let fair = 1.0 / (count + 1) as f64;
                assert!(
                    share > fair * 0.5 && share < fair * 1.6,
                    "{added} added to {count}: took {share:.3}, fair share {fair:.3}"
                );
            }
        }
    }

    #[test]
    fn shares_are_within_tolerance_of_uniform() {
        // 100 points per backend on 36000 positions: shares are typically within ±10%
        // of the fair share, up to about ±35% for unlucky hostnames (the same ring as
        // contrib, hence the same spread).
        let ids = trace_ids(60_000, 4);
        for count in [2, 3, 5, 10] {
            let names = hostnames(count);
            let assigned = assign(&names, &ids);
            let fair = 1.0 / count as f64;
            for name in &names {
                let share = assigned.iter().filter(|a| **a == name.as_str()).count() as f64
                    / ids.len() as f64;
                assert!(
                    share > fair * 0.65 && share < fair * 1.35,
                    "{name} of {count}: {share:.3}, fair share {fair:.3}"
                );
            }
        }
    }

    fn span(trace_id: [u8; 16], n: u8) -> OtlpSpan {
        OtlpSpan {
            trace_id: trace_id.to_vec(),
            span_id: vec![n; 8],
            ..Default::default()
        }
    }

    fn resource(service: &str, spans: Vec<OtlpSpan>) -> OtlpResourceSpans {
        OtlpResourceSpans {
            resource: Some(OtlpResource {
                attributes: vec![OtlpKeyValue {
                    key: "service.name".to_owned(),
                    value: Some(OtlpAnyValue {
                        value: Some(OtlpValue::StringValue(service.to_owned())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![OtlpScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }
    }

    #[test]
    fn routes_by_trace_id_or_service() {
        let names = hostnames(3);
        let ring = HashRing::new(&names);
        let ids = trace_ids(30, 5);
        let batch = vec![
            resource("api", ids.iter().map(|id| span(*id, 1)).collect()),
            resource("db", ids.iter().map(|id| span(*id, 2)).collect()),
        ];
        let parts = route(&ring, RoutingKey::TraceId, batch.clone(), &[]);
        assert!(parts.len() > 1);
        for part in &parts {
            for rs in &part.resource_spans {
                for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                    assert_eq!(ring.backend_for(&span.trace_id, &[]), part.index);
                }
            }
        }
        let parts = route(&ring, RoutingKey::Service, batch, &[]);
        for part in &parts {
            for rs in &part.resource_spans {
                let service = service_name(rs.resource.as_ref());
                assert_eq!(ring.backend_for(service.as_bytes(), &[]), part.index);
                assert_eq!(
                    rs.scope_spans[0].spans.len(),
                    30,
                    "a service is never split"
                );
            }
        }
        assert_eq!(service_name(None), "");
    }

    /// A request is acknowledged once every backend's queue holds its part, and a full
    /// backend queue refuses the request as a lone `otlp` exporter's would.
    #[tokio::test]
    async fn acknowledged_when_queued_on_every_backend_and_refused_when_one_is_full() {
        use crate::config::collector::{
            Compression, LoadBalancingBackend, OtlpExporterConfig, QueueConfig, QueueSizer,
            RetryConfig,
        };
        use std::time::Duration;
        let backend = |hostname: &str| LoadBalancingBackend {
            hostname: hostname.to_owned(),
            exporter: OtlpExporterConfig {
                // Nothing listens there: each consumer holds one batch in its backoff.
                endpoint: "http://127.0.0.1:9".to_owned(),
                tls: None,
                compression: Compression::None,
                headers: Vec::new(),
                auth: None,
                timeout: Duration::from_secs(1),
                retry: RetryConfig {
                    enabled: true,
                    initial_interval: Duration::from_secs(60),
                    randomization_factor: 0.0,
                    multiplier: 1.0,
                    max_interval: Duration::from_secs(60),
                    max_elapsed_time: None,
                },
                queue: QueueConfig {
                    enabled: true,
                    num_consumers: 1,
                    queue_size: 1,
                    sizer: QueueSizer::Requests,
                    block_on_overflow: false,
                    wait_for_result: false,
                    persistent: None,
                },
            },
        };
        let names = ["a", "b", "c"];
        let metrics = Arc::new(CollectorMetrics::new());
        let config = LoadBalancingExporterConfig {
            routing_key: RoutingKey::TraceId,
            backends: names.iter().map(|name| backend(name)).collect(),
            failover: None,
        };
        let balancer =
            LoadBalancer::start("loadbalancing".to_owned(), &config, Arc::clone(&metrics))
                .await
                .expect("starts");
        let ids = trace_ids(60, 6);
        let ring = HashRing::new(&names);
        let used: std::collections::BTreeSet<usize> =
            ids.iter().map(|id| ring.backend_for(id, &[])).collect();
        assert_eq!(used.len(), 3, "the request has a part for every backend");
        let send = || async {
            let spans = vec![resource("api", ids.iter().map(|id| span(*id, 1)).collect())];
            let (delivery, ack) = Delivery::new(Vec::new());
            balancer
                .enqueue_item(QueueItem {
                    tenant: TenantId::single(),
                    spans: Arc::new(spans),
                    num_spans: 60,
                    acks: vec![ack],
                })
                .await;
            delivery.wait().await
        };
        let queue_size = |name: &str| {
            format!(
                "otelcol_exporter_queue_size{{exporter=\"loadbalancing/{name}\",data_type=\"traces\"}} "
            )
        };

        // The first request's parts are taken by the consumers, the second's fill the
        // queues (one batch each); the third finds them full.
        assert!(send().await.is_ok());
        for _ in 0..200 {
            let text = metrics.encode();
            if names
                .iter()
                .all(|name| text.contains(&format!("{}0", queue_size(name))))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(send().await.is_ok());
        assert!(matches!(send().await, Err(ConsumeError::Full { .. })));
        let text = metrics.encode();
        assert!(
            text.contains("otelcol_loadbalancer_num_backends{resolver=\"static\"} 3"),
            "{text}"
        );
        assert!(
            text.contains(
                "otelcol_exporter_enqueue_failed_spans_total{exporter=\"loadbalancing\"} 60"
            ),
            "{text}"
        );
        for name in names {
            assert!(text.contains(&format!("{}1", queue_size(name))), "{text}");
        }
        balancer.shutdown(Instant::now()).await;
        assert!(metrics
            .encode()
            .contains("otelcol_loadbalancer_num_backends{resolver=\"static\"} 0"));
    }
}
