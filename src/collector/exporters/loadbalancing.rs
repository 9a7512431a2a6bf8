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
//! The backends come from `resolver.static.hostnames`, or from `resolver.dns`: every
//! A/AAAA address of a hostname (system resolver, so /etc/hosts counts) with one port,
//! written `ip:port` and sorted as strings as contrib does, resolved again every
//! `interval` ([`DnsResolution`]). A changed answer replaces the ring and backend list
//! as a whole ([`Routing`]): new addresses get new backends; a removed backend is
//! retired — its queued batches (and the one waiting for a retry) are handed over to
//! the backends that own their traces on the new ring, leaving its queue only once
//! they hold them, and it stops once no dispatch can still reach it and its queue is
//! empty ([`retire`]). A failed or empty answer keeps the current backends.
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

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
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
use crate::config::collector::{
    DnsResolverConfig, FailoverConfig, LoadBalancingBackend, LoadBalancingExporterConfig,
    RoutingKey,
};
use crate::otlp::{OtlpResource, OtlpResourceSpans, OtlpValue};
use crate::receiver::ConsumeError;
use crate::tenant::TenantId;

/// Positions on the ring: "360 degrees with two decimal places", as in contrib.
const RING_POSITIONS: u32 = 36_000;
/// Points per backend, as in contrib (which has no per-backend weights either).
const POINTS_PER_BACKEND: usize = 100;
/// Batches above this many spans are split on the blocking pool.
const INLINE_SPLIT_MAX_SPANS: usize = 2048;
/// The `resolver` label of the backend metrics.
const STATIC_RESOLVER: &str = "static";
const DNS_RESOLVER: &str = "dns";
/// The delay suggested to clients while a DNS resolver has found no backend.
const NO_BACKEND_RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often a removed backend checks whether it can close its queue; short, because
/// an address that returns waits for it.
const RETIRE_POLL: Duration = Duration::from_millis(20);
/// How long a resolution waits for a returning address's old queue to finish draining
/// before leaving the address to a later resolution.
const RETURNING_WAIT: Duration = Duration::from_secs(1);

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
    exporter_id: String,
    /// Its place on the ring: the hostname as configured, or `ip:port` from DNS.
    hostname: String,
    failover: Option<FailoverConfig>,
    /// When the current run of failed attempts began; `None` after a success.
    failing_since: Mutex<Option<std::time::Instant>>,
    /// Whether this outage was logged.
    announced_down: AtomicBool,
    /// Set once the resolver dropped its address: what its queue holds goes to the
    /// backends that now own those traces.
    retired: AtomicBool,
    /// Cancelled when retired: a batch waiting for its next retry leaves at once.
    withdrawn: CancellationToken,
    /// Where batches are handed over (failover, retirement).
    routing: Weak<Routing>,
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

    /// Whether the resolver dropped this backend.
    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Cancelled once the backend is retired.
    pub(crate) fn withdrawn(&self) -> &CancellationToken {
        &self.withdrawn
    }

    fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.withdrawn.cancel();
    }

    /// Queues a batch this backend could not send (failover on) or may no longer send
    /// (retired) on the next backends on the current ring that are up; true once they
    /// all hold it.
    pub(crate) async fn hand_over(&self, item: &Dispatched) -> bool {
        if self.failover.is_none() && !self.is_retired() {
            return false;
        }
        match self.routing.upgrade() {
            Some(routing) => routing.current().hand_over(&self.hostname, item).await,
            None => false,
        }
    }
}

/// A backend with the queued exporter that sends to it.
type BackendExporter = (Arc<Backend>, Arc<QueuedExporter>);

/// The current ring and backends; a resolver replaces them as a whole, so a batch is
/// split by one consistent view.
#[derive(Debug)]
struct Routing {
    current: RwLock<Arc<Router>>,
}

impl Routing {
    fn current(&self) -> Arc<Router> {
        Arc::clone(&self.current.read())
    }
}

/// Routes batches to the backends' queues.
#[derive(Debug)]
struct Router {
    routing_key: RoutingKey,
    ring: HashRing,
    /// By ring index: the backends, sorted by hostname.
    backends: Vec<BackendExporter>,
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
        avoid: Option<&str>,
    ) {
        if self.backends.is_empty() {
            // A DNS resolver that has not found any backend yet: clients retry.
            fail_all(
                acks,
                &ConsumeError::Full {
                    what: "loadbalancing exporter (no backend resolved yet)",
                    retry_after: NO_BACKEND_RETRY_AFTER,
                },
            );
            return;
        }
        let is_avoided = |index: usize| {
            avoid.is_some_and(|avoid| {
                self.backends
                    .get(index)
                    .is_some_and(|(backend, _)| backend.hostname == avoid)
            })
        };
        let down: Vec<bool> = self
            .backends
            .iter()
            .enumerate()
            .map(|(index, (backend, _))| backend.is_down() || is_avoided(index))
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
        if parts.iter().any(|part| is_avoided(part.index)) {
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

    /// Queues a batch backend `from` could not (or may no longer) send on the other
    /// backends; true once they all hold it.
    async fn hand_over(self: &Arc<Self>, from: &str, item: &Dispatched) -> bool {
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

/// Starts backends: their queued exporters, reporting to the balancer's routing.
#[derive(Debug, Clone)]
struct BackendStarter {
    exporter_id: String,
    failover: Option<FailoverConfig>,
    routing: Weak<Routing>,
    metrics: Arc<CollectorMetrics>,
}

impl BackendStarter {
    /// Opens the backend's queue (replaying a persistent one) and starts its consumers.
    async fn start(&self, config: &LoadBalancingBackend) -> Result<BackendExporter, ExporterError> {
        let backend = Arc::new(Backend {
            exporter_id: self.exporter_id.clone(),
            hostname: config.hostname.clone(),
            failover: self.failover,
            failing_since: Mutex::new(None),
            announced_down: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            withdrawn: CancellationToken::new(),
            routing: Weak::clone(&self.routing),
            metrics: Arc::clone(&self.metrics),
        });
        let names = ExporterNames {
            id: self.exporter_id.clone(),
            name: format!("{}/{}", self.exporter_id, config.hostname),
        };
        let exporter = otlp_grpc::OtlpGrpcExporter::new(&config.exporter).map_err(|message| {
            ExporterError::Setup {
                exporter: names.name.clone(),
                message,
            }
        })?;
        let queued = QueuedExporter::start(
            names,
            Exporter::Otlp(exporter),
            &config.exporter.queue,
            config.exporter.retry.clone(),
            Some(Arc::clone(&backend)),
            Arc::clone(&self.metrics),
        )
        .await?;
        Ok((backend, queued))
    }
}

/// Set by [`LoadBalancer::shutdown`]: stops the background tasks, and gives backends
/// still draining after their address left the deadline they drain by.
#[derive(Debug, Default)]
struct Stopping {
    token: CancellationToken,
    deadline: OnceLock<Instant>,
}

impl Stopping {
    /// Completes at the shutdown deadline (never before shutdown began).
    async fn deadline(&self) {
        self.token.cancelled().await;
        if let Some(deadline) = self.deadline.get() {
            tokio::time::sleep_until(*deadline).await;
        }
    }
}

/// A backend whose address left, draining into the others.
#[derive(Debug)]
struct Retiring {
    hostname: String,
    task: JoinHandle<()>,
}

/// A running `loadbalancing` exporter.
#[derive(Debug)]
pub(crate) struct LoadBalancer {
    id: String,
    resolver: &'static str,
    routing: Arc<Routing>,
    metrics: Arc<CollectorMetrics>,
    /// Stops the probes of backends that are down (failover only) and the resolver.
    stopping: Arc<Stopping>,
    probes: Mutex<Option<JoinHandle<()>>>,
    /// The DNS resolver's loop; it ends with the backends still draining.
    resolving: Mutex<Option<JoinHandle<Vec<Retiring>>>>,
}

impl LoadBalancer {
    /// Starts one queued `otlp` exporter per backend (replaying persistent queues) and,
    /// with failover, the probes of backends that are down; with a DNS resolver, the
    /// backends are what the first resolution finds (none if it fails: requests are
    /// refused until one succeeds) and a task resolves again every `interval`.
    pub(crate) async fn start(
        id: String,
        config: &LoadBalancingExporterConfig,
        metrics: Arc<CollectorMetrics>,
    ) -> Result<LoadBalancer, ExporterError> {
        let routing = Arc::new(Routing {
            current: RwLock::new(Arc::new(Router {
                routing_key: config.routing_key,
                ring: HashRing::new::<&str>(&[]),
                backends: Vec::new(),
            })),
        });
        let starter = BackendStarter {
            exporter_id: id.clone(),
            failover: config.failover,
            routing: Arc::downgrade(&routing),
            metrics: Arc::clone(&metrics),
        };
        let (resolver, configs) = match &config.dns {
            None => (STATIC_RESOLVER, config.backends.clone()),
            Some(dns) => {
                let addresses = resolve_logged(&id, dns, &metrics).await.unwrap_or_default();
                let configs = addresses
                    .iter()
                    .map(|address| LoadBalancingBackend::for_address(&dns.backend, address))
                    .collect();
                (DNS_RESOLVER, configs)
            }
        };
        let mut backends: Vec<BackendExporter> = Vec::with_capacity(configs.len());
        for backend_config in &configs {
            match starter.start(backend_config).await {
                Ok(started) => backends.push(started),
                Err(error) => {
                    let now = Instant::now();
                    for (_, started) in &backends {
                        started.shutdown(now).await;
                    }
                    return Err(error);
                }
            }
        }
        let hostnames: Vec<&str> = configs
            .iter()
            .map(|backend| backend.hostname.as_str())
            .collect();
        *routing.current.write() = Arc::new(Router {
            routing_key: config.routing_key,
            ring: HashRing::new(&hostnames),
            backends,
        });
        metrics.loadbalancer_backends_changed(resolver, hostnames.len() as i64);
        info!(
            exporter = %id,
            resolver,
            backends = ?hostnames,
            failover = config.failover.is_some(),
            "load balancing over backends"
        );
        let stopping = Arc::new(Stopping::default());
        let probes = config.failover.map(|failover| {
            tokio::spawn(probe_down_backends(
                Arc::clone(&routing),
                failover.probe_interval,
                stopping.token.clone(),
            ))
        });
        let resolving = config.dns.clone().map(|dns| {
            tokio::spawn(
                DnsResolution {
                    dns,
                    routing: Arc::clone(&routing),
                    starter,
                    stopping: Arc::clone(&stopping),
                }
                .run(),
            )
        });
        Ok(LoadBalancer {
            id,
            resolver,
            routing,
            metrics,
            stopping,
            probes: Mutex::new(probes),
            resolving: Mutex::new(resolving),
        })
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// See [`Router::dispatch`].
    pub(crate) async fn enqueue_item(&self, item: QueueItem) {
        // Shared with the pipeline's other exporters, if any: then split a copy.
        let spans = Arc::unwrap_or_clone(item.spans);
        self.routing
            .current()
            .dispatch(item.tenant, spans, item.num_spans, item.acks, None)
            .await;
    }

    /// Whether every backend's queue answers (watchdog).
    pub(crate) async fn probe(&self) -> bool {
        for (_, queued) in &self.routing.current().backends {
            if !queued.probe().await {
                return false;
            }
        }
        true
    }

    /// Stops resolving, lets backends whose address left finish handing their queues
    /// to the others, then drains every current backend's queue at once; all by the
    /// same deadline.
    pub(crate) async fn shutdown(&self, deadline: Instant) {
        let _ = self.stopping.deadline.set(deadline);
        self.stopping.token.cancel();
        let probes = self.probes.lock().take();
        if let Some(probes) = probes {
            let _ = probes.await;
        }
        let resolving = self.resolving.lock().take();
        if let Some(resolving) = resolving {
            if let Ok(retiring) = resolving.await {
                for retired in retiring {
                    let _ = retired.task.await;
                }
            }
        }
        let router = self.routing.current();
        futures::future::join_all(
            router
                .backends
                .iter()
                .map(|(_, queued)| queued.shutdown(deadline)),
        )
        .await;
        self.metrics
            .loadbalancer_backends_changed(self.resolver, -(router.backends.len() as i64));
    }
}

/// Every `interval`, sends an empty export to each backend that is down: the first
/// success brings its share back, even when it has nothing queued to retry.
async fn probe_down_backends(
    routing: Arc<Routing>,
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
        let router = routing.current();
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

/// Why a DNS resolution found no backends.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("{0}")]
    Lookup(#[from] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("no A or AAAA records")]
    Empty,
}

/// The backends `dns.hostname` resolves to right now: every A/AAAA address with
/// `dns.port`, as contrib writes them (`ip:port`, `[ipv6]:port`), sorted as strings
/// and without duplicates, as contrib's ring expects.
async fn resolve(dns: &DnsResolverConfig) -> Result<Vec<String>, ResolveError> {
    let lookup = tokio::net::lookup_host((dns.hostname.as_str(), dns.port));
    let found = tokio::time::timeout(dns.timeout, lookup)
        .await
        .map_err(|_| ResolveError::Timeout(dns.timeout))??;
    let addresses = backend_addresses(found.map(|address| address.ip()), dns.port);
    if addresses.is_empty() {
        return Err(ResolveError::Empty);
    }
    Ok(addresses)
}

/// `ip:port` of each address (IPv6 in brackets), sorted as strings, deduplicated.
fn backend_addresses(ips: impl Iterator<Item = IpAddr>, port: u16) -> Vec<String> {
    let mut addresses: Vec<String> = ips
        .map(|ip| match ip {
            IpAddr::V4(ip) => format!("{ip}:{port}"),
            IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        })
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// [`resolve`], counted in `otelcol_loadbalancer_num_resolutions` and logged when it
/// fails (the previous backends then stay).
async fn resolve_logged(
    exporter_id: &str,
    dns: &DnsResolverConfig,
    metrics: &CollectorMetrics,
) -> Option<Vec<String>> {
    match resolve(dns).await {
        Ok(addresses) => {
            metrics.loadbalancer_resolved(DNS_RESOLVER, true);
            Some(addresses)
        }
        Err(error) => {
            metrics.loadbalancer_resolved(DNS_RESOLVER, false);
            warn!(
                exporter = %exporter_id,
                hostname = %dns.hostname,
                error = %error,
                "resolving the load balancer's backends failed; keeping the current ones"
            );
            None
        }
    }
}

/// The DNS resolver's loop.
#[derive(Debug)]
struct DnsResolution {
    dns: DnsResolverConfig,
    routing: Arc<Routing>,
    starter: BackendStarter,
    stopping: Arc<Stopping>,
}

impl DnsResolution {
    /// Resolves every `interval` until shutdown; returns the backends still draining.
    async fn run(self) -> Vec<Retiring> {
        let mut retiring: Vec<Retiring> = Vec::new();
        let interval = self.dns.interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stopping.token.cancelled() => return retiring,
                _ = ticker.tick() => {}
            }
            retiring.retain(|retired| !retired.task.is_finished());
            let Some(addresses) =
                resolve_logged(&self.starter.exporter_id, &self.dns, &self.starter.metrics).await
            else {
                continue;
            };
            if !self.update(addresses, &mut retiring).await {
                return retiring;
            }
        }
    }

    /// Makes `addresses` the backends: keeps those still listed, starts the new ones,
    /// retires the others; false when shutdown began meanwhile.
    async fn update(&self, addresses: Vec<String>, retiring: &mut Vec<Retiring>) -> bool {
        let old = self.routing.current();
        let unchanged = old.backends.len() == addresses.len()
            && old
                .backends
                .iter()
                .zip(&addresses)
                .all(|((backend, _), address)| backend.hostname == *address);
        if unchanged {
            return true;
        }
        let metrics = &self.starter.metrics;
        let mut backends: Vec<BackendExporter> = Vec::with_capacity(addresses.len());
        let mut added: Vec<&str> = Vec::new();
        for address in &addresses {
            if let Some(kept) = old.backends.iter().find(|(b, _)| b.hostname == *address) {
                backends.push((Arc::clone(&kept.0), Arc::clone(&kept.1)));
                continue;
            }
            // An address that returns while its old queue still drains waits for it: two
            // queues never share a persistent directory. Not for long, so that a queue
            // its new owners cannot take yet never holds up other changes.
            if let Some(position) = retiring.iter().position(|r| r.hostname == *address) {
                let mut returning = retiring.swap_remove(position);
                tokio::select! {
                    _ = self.stopping.token.cancelled() => {
                        retiring.push(returning);
                        return false;
                    }
                    _ = &mut returning.task => {}
                    _ = tokio::time::sleep(RETURNING_WAIT) => {
                        info!(
                            exporter = %self.starter.exporter_id,
                            backend = %address,
                            "a removed backend's address is back while its queue still drains; \
                             it is added at a later resolution"
                        );
                        retiring.push(returning);
                        continue;
                    }
                }
            }
            let config = LoadBalancingBackend::for_address(&self.dns.backend, address);
            match self.starter.start(&config).await {
                Ok(started) => {
                    backends.push(started);
                    added.push(address);
                }
                // Left out of the ring, so it counts as new at the next resolution.
                Err(error) => warn!(
                    exporter = %self.starter.exporter_id,
                    backend = %address,
                    error = %error,
                    "starting a resolved backend failed; trying again at the next resolution"
                ),
            }
        }
        let removed: Vec<BackendExporter> = old
            .backends
            .iter()
            .filter(|(backend, _)| !addresses.contains(&backend.hostname))
            .map(|(backend, queued)| (Arc::clone(backend), Arc::clone(queued)))
            .collect();
        if added.is_empty() && removed.is_empty() {
            return true;
        }
        let hostnames: Vec<&str> = backends.iter().map(|(b, _)| b.hostname.as_str()).collect();
        let ring = HashRing::new(&hostnames);
        let backends_now = hostnames.iter().map(|h| h.to_string()).collect::<Vec<_>>();
        let new = Arc::new(Router {
            routing_key: old.routing_key,
            ring,
            backends,
        });
        let new_len = new.backends.len() as i64;
        *self.routing.current.write() = new;
        metrics.loadbalancer_backends_changed(DNS_RESOLVER, new_len - old.backends.len() as i64);
        metrics.loadbalancer_backends_updated(DNS_RESOLVER);
        let removed_names: Vec<&str> = removed.iter().map(|(b, _)| b.hostname.as_str()).collect();
        info!(
            exporter = %self.starter.exporter_id,
            resolver = DNS_RESOLVER,
            hostname = %self.dns.hostname,
            added = ?added,
            removed = ?removed_names,
            backends = ?backends_now,
            "load balancer backends changed; only the added and removed backends' shares of the traces move"
        );
        let generation = Arc::downgrade(&old);
        drop(old);
        for (backend, queued) in removed {
            backend.retire();
            retiring.push(Retiring {
                hostname: backend.hostname.clone(),
                task: tokio::spawn(retire(
                    Weak::clone(&generation),
                    backend,
                    queued,
                    Arc::clone(&self.stopping),
                )),
            });
        }
        true
    }
}

/// Drains a backend whose address left: its consumers hand every batch to the
/// backends now owning its traces; the queue closes once no dispatch can still reach
/// it (nothing holds the ring it was on) and it is empty, then the exporter stops.
async fn retire(
    generation: Weak<Router>,
    backend: Arc<Backend>,
    queued: Arc<QueuedExporter>,
    stopping: Arc<Stopping>,
) {
    loop {
        if generation.strong_count() == 0 && queued.queue_is_empty().await {
            break;
        }
        tokio::select! {
            _ = stopping.token.cancelled() => break,
            _ = tokio::time::sleep(RETIRE_POLL) => {}
        }
    }
    queued.shutdown_by(stopping.deadline()).await;
    info!(
        exporter = %backend.exporter_id,
        backend = %backend.hostname,
        "removed backend drained into the others and stopped"
    );
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
    use crate::config::collector::{
        Compression, OtlpExporterConfig, QueueConfig, QueueSizer, RetryConfig,
    };
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

    /// Nothing listens there: each consumer holds one batch in its backoff.
    fn unreachable_exporter(sizer: QueueSizer, queue_size: u64) -> OtlpExporterConfig {
        OtlpExporterConfig {
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
                queue_size,
                sizer,
                block_on_overflow: false,
                wait_for_result: false,
                persistent: None,
            },
        }
    }

    /// A request is acknowledged once every backend's queue holds its part, and a full
    /// backend queue refuses the request as a lone `otlp` exporter's would.
    #[tokio::test]
    async fn acknowledged_when_queued_on_every_backend_and_refused_when_one_is_full() {
        let backend = |hostname: &str| LoadBalancingBackend {
            hostname: hostname.to_owned(),
            exporter: unreachable_exporter(QueueSizer::Requests, 1),
        };
        let names = ["a", "b", "c"];
        let metrics = Arc::new(CollectorMetrics::new());
        let config = LoadBalancingExporterConfig {
            routing_key: RoutingKey::TraceId,
            backends: names.iter().map(|name| backend(name)).collect(),
            dns: None,
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

    /// The addresses a DNS resolver gives for `count` servers, as the ring sees them.
    fn dns_backends(count: u8, port: u16) -> Vec<String> {
        backend_addresses((2..2 + count).map(|n| IpAddr::from([127, 0, 0, n])), port)
    }

    /// How many of `ids` change backend between two sets of backends; panics if one
    /// moves between backends present in both.
    fn moved_between(before: &[String], after: &[String], ids: &[[u8; 16]]) -> usize {
        let old = assign(before, ids);
        let new = assign(after, ids);
        let mut moved = 0;
        for (old, new) in old.iter().zip(&new) {
            if old != new {
                assert!(
                    !before.iter().any(|b| b == new) || !after.iter().any(|a| a == old),
                    "a trace moved from {old} to {new}, both in both sets"
                );
                moved += 1;
            }
        }
        moved
    }

    /// The measurement behind "only about 1/N of the trace IDs move": 100,000 random
    /// trace IDs over the addresses a DNS resolver finds for 3, then 4, then 3 servers.
    #[test]
    fn a_server_joining_or_leaving_moves_about_a_quarter_of_the_traces() {
        let ids = trace_ids(100_000, 10);
        let three = dns_backends(3, 4317);
        let four = dns_backends(4, 4317);
        let joined = moved_between(&three, &four, &ids);
        let left = moved_between(&four, &three, &ids);
        println!(
            "3 -> 4 backends: {joined} of {} trace IDs moved ({:.1}%); \
             4 -> 3: {left} moved ({:.1}%); a fair share is 25%",
            ids.len(),
            joined as f64 * 100.0 / ids.len() as f64,
            left as f64 * 100.0 / ids.len() as f64,
        );
        // The same IDs move back: those of the fourth server.
        assert_eq!(joined, left);
        let share = joined as f64 / ids.len() as f64;
        assert!((0.15..0.35).contains(&share), "{share:.3} moved");
        // And each moved ID went to (or came from) the fourth server only.
        let fourth = four[3].as_str();
        assert_eq!(fourth, "127.0.0.5:4317");
        let (old, new) = (assign(&three, &ids), assign(&four, &ids));
        for (old, new) in old.iter().zip(&new) {
            assert!(old == new || *new == fourth);
        }
    }

    #[test]
    fn resolved_addresses_are_written_and_sorted_as_contrib_does() {
        let ips: Vec<IpAddr> = ["127.0.0.10", "127.0.0.2", "::1", "127.0.0.2", "2001:db8::7"]
            .iter()
            .map(|ip| ip.parse().expect("an IP"))
            .collect();
        assert_eq!(
            backend_addresses(ips.into_iter(), 4317),
            vec![
                "127.0.0.10:4317",
                "127.0.0.2:4317",
                "[2001:db8::7]:4317",
                "[::1]:4317"
            ],
            "string order, as Go's sort.Strings, duplicates once"
        );
    }

    fn dns_config(hostname: &str, port: u16, queue_size: u64) -> DnsResolverConfig {
        DnsResolverConfig {
            hostname: hostname.to_owned(),
            port,
            interval: Duration::from_secs(3600),
            timeout: Duration::from_secs(1),
            backend: OtlpExporterConfig {
                endpoint: String::new(),
                ..unreachable_exporter(QueueSizer::Items, queue_size)
            },
        }
    }

    #[tokio::test]
    async fn resolution_uses_the_system_resolver_and_reports_failures() {
        let addresses = resolve(&dns_config("127.0.0.3", 4317, 10))
            .await
            .expect("resolves");
        assert_eq!(addresses, vec!["127.0.0.3:4317"]);
        // /etc/hosts names resolve (the Python test relies on it).
        let localhost = resolve(&dns_config("localhost", 9, 10))
            .await
            .expect("resolves");
        assert!(
            localhost
                .iter()
                .any(|a| a == "127.0.0.1:9" || a == "[::1]:9"),
            "{localhost:?}"
        );
        let metrics = CollectorMetrics::new();
        let missing = dns_config("no-such-host.invalid", 4317, 10);
        assert!(resolve_logged("loadbalancing", &missing, &metrics)
            .await
            .is_none());
        assert!(metrics.encode().contains(
            "otelcol_loadbalancer_num_resolutions_total{resolver=\"dns\",success=\"false\"} 1"
        ));
    }

    /// A removed backend's batches, the one waiting to be retried and the ones still
    /// queued, go to the backends that now own their traces; only then does it stop.
    #[tokio::test]
    async fn a_removed_backend_hands_its_queue_to_the_new_owners() {
        let metrics = Arc::new(CollectorMetrics::new());
        let dns = dns_config("127.0.0.2", 9, 1_000_000);
        let config = LoadBalancingExporterConfig {
            routing_key: RoutingKey::TraceId,
            backends: Vec::new(),
            dns: Some(dns.clone()),
            failover: None,
        };
        let balancer =
            LoadBalancer::start("loadbalancing".to_owned(), &config, Arc::clone(&metrics))
                .await
                .expect("starts");
        let text = metrics.encode();
        assert!(
            text.contains("otelcol_loadbalancer_num_backends{resolver=\"dns\"} 1"),
            "{text}"
        );
        let resolution = DnsResolution {
            dns,
            routing: Arc::clone(&balancer.routing),
            starter: BackendStarter {
                exporter_id: "loadbalancing".to_owned(),
                failover: None,
                routing: Arc::downgrade(&balancer.routing),
                metrics: Arc::clone(&metrics),
            },
            stopping: Arc::clone(&balancer.stopping),
        };
        let mut retiring = Vec::new();
        let three = dns_backends(3, 9);
        assert!(resolution.update(three.clone(), &mut retiring).await);
        assert!(retiring.is_empty(), "127.0.0.2:9 stays");
        let names: Vec<String> = balancer
            .routing
            .current()
            .backends
            .iter()
            .map(|(b, _)| b.hostname.clone())
            .collect();
        let expected: Vec<String> = ["127.0.0.2:9", "127.0.0.3:9", "127.0.0.4:9"]
            .map(str::to_owned)
            .to_vec();
        assert_eq!(names, expected);

        let ids = trace_ids(300, 11);
        let send = || async {
            let spans = vec![resource("api", ids.iter().map(|id| span(*id, 1)).collect())];
            let (delivery, ack) = Delivery::new(Vec::new());
            balancer
                .enqueue_item(QueueItem {
                    tenant: TenantId::single(),
                    spans: Arc::new(spans),
                    num_spans: ids.len(),
                    acks: vec![ack],
                })
                .await;
            delivery.wait().await
        };
        let queue_size = |text: &str, name: &str| -> u64 {
            let prefix = format!(
                "otelcol_exporter_queue_size{{exporter=\"loadbalancing/{name}\",data_type=\"traces\"}} "
            );
            text.lines()
                .find_map(|line| line.strip_prefix(prefix.as_str()))
                .and_then(|value| value.trim().parse().ok())
                .unwrap_or(0)
        };
        // The first request's parts are taken by the consumers (into their backoff),
        // the second's wait in the queues.
        assert!(send().await.is_ok());
        for _ in 0..200 {
            let text = metrics.encode();
            if expected.iter().all(|name| queue_size(&text, name) == 0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(send().await.is_ok());
        let ring = HashRing::new(&expected);
        let owned_by = |index: usize| {
            ids.iter()
                .filter(|id| ring.backend_for(*id, &[]) == index)
                .count() as u64
        };
        let text = metrics.encode();
        for (index, name) in expected.iter().enumerate() {
            assert_eq!(queue_size(&text, name), owned_by(index), "{text}");
        }

        // 127.0.0.3 leaves: both its batches (600 spans of its traces in all) go to the
        // two others, by the two-backend ring.
        let two: Vec<String> = vec![expected[0].clone(), expected[2].clone()];
        assert!(resolution.update(two.clone(), &mut retiring).await);
        assert_eq!(retiring.len(), 1);
        let retired = retiring.remove(0);
        assert_eq!(retired.hostname, "127.0.0.3:9");
        tokio::time::timeout(Duration::from_secs(10), retired.task)
            .await
            .expect("the removed backend drains")
            .expect("its task ends");
        let smaller = HashRing::new(&two);
        let text = metrics.encode();
        assert_eq!(queue_size(&text, "127.0.0.3:9"), 0);
        for (index, name) in two.iter().enumerate() {
            let handed = ids
                .iter()
                .filter(|id| {
                    ring.backend_for(*id, &[]) == 1 && smaller.backend_for(*id, &[]) == index
                })
                .count() as u64;
            let own = owned_by(if index == 0 { 0 } else { 2 });
            assert_eq!(queue_size(&text, name), own + 2 * handed, "{name}: {text}");
        }
        assert!(
            text.contains("otelcol_loadbalancer_num_backends{resolver=\"dns\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("otelcol_loadbalancer_num_backend_updates_total{resolver=\"dns\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("otelcol_exporter_send_failed_spans_total"),
            "nothing dropped: {text}"
        );
        // An unchanged answer changes nothing.
        assert!(resolution.update(two, &mut retiring).await);
        assert!(retiring.is_empty());
        // The address returns: a new backend, with an empty queue, takes its share back.
        assert!(resolution.update(three, &mut retiring).await);
        assert!(retiring.is_empty());
        let text = metrics.encode();
        assert!(
            text.contains("otelcol_loadbalancer_num_backends{resolver=\"dns\"} 3"),
            "{text}"
        );
        assert_eq!(queue_size(&text, "127.0.0.3:9"), 0);
        assert_eq!(balancer.routing.current().backends.len(), 3);
        balancer.shutdown(Instant::now()).await;
        assert!(metrics
            .encode()
            .contains("otelcol_loadbalancer_num_backends{resolver=\"dns\"} 0"));
    }
}
