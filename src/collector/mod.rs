//! spoor-collector: an OpenTelemetry-Collector-compatible traces pipeline.
//!
//! Data path: OTLP receiver (gRPC / HTTP, the shared [`crate::receiver`] code) →
//! [`head::ReceiverConsumer`] (admission into every pipeline fed by the receiver) →
//! per pipeline, a bounded channel into one task running the processors in order
//! ([`pipeline`], [`processors`]) → fan-out to each exporter's sending queue
//! ([`queue`]: memory, or persistent on disk) → consumers exporting with retries
//! ([`exporters`]). A receiver answers its client once every exporter queue holds the
//! data ([`delivery`]); anything full on the way answers RESOURCE_EXHAUSTED / 429.
//!
//! Start-up (readiness is honest): bind every listener → serve `/metrics` and the health
//! check (503 while starting) → open the exporters, replaying persistent queues → start
//! memory limiters and pipelines → start the receivers → `READY=1`.
//!
//! Shutdown on SIGTERM: `STOPPING=1` and health 503 → receivers stop accepting and finish
//! in-flight requests → pipelines flush what the processors hold → exporters drain their
//! queues (a persistent queue keeps what is left on disk) → endpoints stop. Each step has
//! a deadline.

pub(crate) mod batch;
pub(crate) mod delivery;
pub(crate) mod exporters;
pub(crate) mod head;
pub mod metrics;
pub(crate) mod pipeline;
pub(crate) mod processors;
pub(crate) mod queue;
pub(crate) mod telemetry;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::auth::{AuthConfig, AuthLayer};
use crate::config::collector::{
    CollectorConfig, ComponentId, ExtensionConfig, GrpcReceiverConfig, HttpReceiverConfig,
    JaegerReceiverConfig, ProcessorConfig, ReceiverConfig,
};
use crate::config::ServerTlsConfig;
use crate::listener::{Alpn, Incoming};
use crate::receiver::jaeger::{DropReason, OnDrop, ThriftProtocol, UdpOptions};
use crate::receiver::{TraceConsumer, ZipkinOptions};
use crate::runtime::systemd;
use exporters::ExporterRuntime;
use head::ReceiverConsumer;
use metrics::{CollectorMetrics, WarnEvery};
use pipeline::{spawn_pipeline, PipelineHead, PipelineProbe};
use processors::batch::Batcher;
use processors::memory_limiter::MemoryLimiter;
use processors::Stage;
use telemetry::Readiness;

/// Receivers get this long to finish in-flight requests after SIGTERM.
const RECEIVERS_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pipelines get this long to flush what their processors hold.
const PIPELINES_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Exporters get this long to send what is queued; a memory queue loses what is left
/// (logged and counted), a persistent queue keeps it on disk.
const EXPORTERS_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        what: String,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Listener {
        what: String,
        source: crate::listener::ListenerError,
    },
    #[error("{0}")]
    Exporter(String),
    #[error("processors.{processor}: {message}")]
    Processor { processor: String, message: String },
}

/// Binds `address` and, when `tls` is set, loads the certificates (watched from then on).
async fn bind(
    what: String,
    address: SocketAddr,
    tls: Option<&ServerTlsConfig>,
    alpn: Alpn,
) -> Result<Incoming, CollectorError> {
    let listener = match TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(source) => {
            return Err(CollectorError::Bind {
                what,
                address,
                source,
            })
        }
    };
    Incoming::new(listener, tls, alpn, &what)
        .map_err(|source| CollectorError::Listener { what, source })
}

/// A receiver protocol's listener, its message size limit and the credentials it takes.
type BoundProtocol = (Incoming, usize, AuthConfig);

async fn bind_grpc(
    what: String,
    grpc: &GrpcReceiverConfig,
) -> Result<BoundProtocol, CollectorError> {
    let listener = bind(what, grpc.endpoint, grpc.tls.as_ref(), Alpn::Grpc).await?;
    Ok((listener, grpc.max_recv_msg_bytes, grpc.auth.clone()))
}

async fn bind_http(
    what: String,
    http: &HttpReceiverConfig,
) -> Result<BoundProtocol, CollectorError> {
    let listener = bind(what, http.endpoint, http.tls.as_ref(), Alpn::Http).await?;
    Ok((listener, http.max_request_body_bytes, http.auth.clone()))
}

fn bind_udp(
    what: String,
    address: SocketAddr,
    socket_buffer_size: usize,
) -> Result<UdpSocket, CollectorError> {
    crate::receiver::jaeger::bind_udp(address, socket_buffer_size).map_err(|source| {
        CollectorError::Bind {
            what,
            address,
            source,
        }
    })
}

/// A receiver's bound listeners.
struct BoundReceiver {
    id: ComponentId,
    grpc: Option<BoundProtocol>,
    http: Option<BoundProtocol>,
    zipkin: Option<(Incoming, usize, ZipkinOptions, AuthConfig)>,
    jaeger: Option<BoundJaeger>,
}

/// A jaeger receiver's bound sockets, by protocol.
struct BoundJaeger {
    grpc: Option<BoundProtocol>,
    thrift_http: Option<BoundProtocol>,
    udp: Vec<(UdpSocket, ThriftProtocol, UdpOptions)>,
}

async fn bind_jaeger(
    id: &ComponentId,
    config: &JaegerReceiverConfig,
) -> Result<BoundJaeger, CollectorError> {
    let grpc = match &config.grpc {
        Some(grpc) => Some(bind_grpc(format!("receivers.{id} grpc"), grpc).await?),
        None => None,
    };
    let thrift_http = match &config.thrift_http {
        Some(http) => Some(bind_http(format!("receivers.{id} thrift_http"), http).await?),
        None => None,
    };
    let mut udp = Vec::new();
    for (name, protocol, udp_config) in [
        (
            "thrift_compact",
            ThriftProtocol::Compact,
            &config.thrift_compact,
        ),
        (
            "thrift_binary",
            ThriftProtocol::Binary,
            &config.thrift_binary,
        ),
    ] {
        if let Some(udp_config) = udp_config {
            let socket = bind_udp(
                format!("receivers.{id} {name}"),
                udp_config.endpoint,
                udp_config.socket_buffer_size,
            )?;
            let options = UdpOptions {
                queue_size: udp_config.queue_size,
                max_packet_size: udp_config.max_packet_size,
                workers: udp_config.workers,
            };
            udp.push((socket, protocol, options));
        }
    }
    Ok(BoundJaeger {
        grpc,
        thrift_http,
        udp,
    })
}

/// Runs spoor-collector until `shutdown` is cancelled, then drains in order.
///
/// # Errors
/// A listener cannot be bound, a persistent queue cannot be opened, or a processor
/// cannot be set up. Once running, failures are logged and retried, not returned.
pub async fn run(
    config: CollectorConfig,
    shutdown: CancellationToken,
) -> Result<(), CollectorError> {
    let started = Instant::now();
    for warning in &config.warnings {
        warn!(warning = %warning, "configuration warning");
    }
    let used_receivers: BTreeSet<&ComponentId> =
        config.pipelines.iter().flat_map(|p| &p.receivers).collect();
    let used_exporters: BTreeSet<&ComponentId> =
        config.pipelines.iter().flat_map(|p| &p.exporters).collect();

    // 1. Every listener, before anything announces readiness.
    let mut bound_receivers = Vec::new();
    for id in &used_receivers {
        let otlp = match config.receivers.get(*id) {
            Some(ReceiverConfig::Otlp(otlp)) => otlp,
            Some(ReceiverConfig::Zipkin(zipkin)) => {
                let listener = bind(
                    format!("receivers.{id}"),
                    zipkin.endpoint,
                    zipkin.tls.as_ref(),
                    Alpn::Http,
                )
                .await?;
                let options = ZipkinOptions {
                    parse_string_tags: zipkin.parse_string_tags,
                };
                bound_receivers.push(BoundReceiver {
                    id: (*id).clone(),
                    grpc: None,
                    http: None,
                    zipkin: Some((
                        listener,
                        zipkin.max_request_body_bytes,
                        options,
                        zipkin.auth.clone(),
                    )),
                    jaeger: None,
                });
                continue;
            }
            Some(ReceiverConfig::Jaeger(jaeger)) => {
                bound_receivers.push(BoundReceiver {
                    id: (*id).clone(),
                    grpc: None,
                    http: None,
                    zipkin: None,
                    jaeger: Some(bind_jaeger(id, jaeger).await?),
                });
                continue;
            }
            None => continue,
        };
        let grpc = match &otlp.grpc {
            Some(grpc) => Some(bind_grpc(format!("receivers.{id} grpc"), grpc).await?),
            None => None,
        };
        let http = match &otlp.http {
            Some(http) => Some(bind_http(format!("receivers.{id} http"), http).await?),
            None => None,
        };
        bound_receivers.push(BoundReceiver {
            id: (*id).clone(),
            grpc,
            http,
            zipkin: None,
            jaeger: None,
        });
    }
    let mut health_listeners = Vec::new();
    for (id, extension) in &config.extensions {
        if let ExtensionConfig::HealthCheck(health) = extension {
            let listener = bind(
                format!("extensions.{id}"),
                health.endpoint,
                health.tls.as_ref(),
                Alpn::Http,
            )
            .await?;
            health_listeners.push((listener, health.path.clone()));
        }
    }
    let metrics_listener = match config.telemetry.metrics_address {
        Some(address) => Some(
            bind(
                "service.telemetry.metrics".to_owned(),
                address,
                config.telemetry.metrics_tls.as_ref(),
                Alpn::Http,
            )
            .await?,
        ),
        None => None,
    };
    info!(
        receivers = bound_receivers.len(),
        health_checks = health_listeners.len(),
        metrics = ?config.telemetry.metrics_address,
        "listeners bound"
    );

    // 2. Own endpoints: the health check answers 503 until ready.
    let metrics = Arc::new(CollectorMetrics::new());
    let readiness = Arc::new(Readiness::default());
    let endpoints_cancel = CancellationToken::new();
    let mut endpoint_tasks: Vec<JoinHandle<()>> = Vec::new();
    if let Some(listener) = metrics_listener {
        endpoint_tasks.push(serve_router(
            "metrics",
            listener,
            telemetry::metrics_router(Arc::clone(&metrics)),
            endpoints_cancel.clone(),
        ));
    }
    for (listener, path) in health_listeners {
        endpoint_tasks.push(serve_router(
            "health_check",
            listener,
            telemetry::health_router(&path, Arc::clone(&readiness)),
            endpoints_cancel.clone(),
        ));
    }

    // From here on, a start-up failure must still stop what was started.
    let background_cancel = CancellationToken::new();
    let started_parts =
        start_pipelines(&config, &used_exporters, &metrics, &background_cancel).await;
    let (exporters, running) = match started_parts {
        Ok(parts) => parts,
        Err(error) => {
            background_cancel.cancel();
            endpoints_cancel.cancel();
            return Err(error);
        }
    };

    // 5. Receivers, each feeding the pipelines that list it.
    let receivers_cancel = CancellationToken::new();
    let mut receiver_tasks = Vec::new();
    for bound in bound_receivers {
        let heads: Vec<PipelineHead> = running
            .iter()
            .filter(|(pipeline, _)| pipeline.receivers.contains(&bound.id))
            .map(|(_, running)| running.head.clone())
            .collect();
        let receiver = bound.id.to_string();
        if let Some((listener, max_bytes, auth)) = bound.grpc {
            let auth = AuthLayer::for_listener(
                format!("receivers.{receiver} grpc"),
                &auth,
                &metrics.auth_refusals(),
            );
            let consumer: Arc<dyn TraceConsumer> = Arc::new(ReceiverConsumer::new(
                receiver.clone(),
                "grpc",
                heads.clone(),
                Arc::clone(&metrics),
            ));
            let cancel = receivers_cancel.clone();
            let name = receiver.clone();
            receiver_tasks.push((
                format!("{receiver} grpc"),
                tokio::spawn(async move {
                    if let Err(error) =
                        crate::receiver::serve_grpc(listener, consumer, max_bytes, auth, cancel)
                            .await
                    {
                        error!(receiver = %name, transport = "grpc", %error, "receiver failed");
                    }
                }),
            ));
        }
        if let Some((listener, max_bytes, options, auth)) = bound.zipkin {
            let auth = AuthLayer::for_listener(
                format!("receivers.{receiver}"),
                &auth,
                &metrics.auth_refusals(),
            );
            // Labelled `http` like the OpenTelemetry Collector's zipkin receiver metrics.
            let consumer: Arc<dyn TraceConsumer> = Arc::new(ReceiverConsumer::new(
                receiver.clone(),
                "http",
                heads.clone(),
                Arc::clone(&metrics),
            ));
            let cancel = receivers_cancel.clone();
            let name = receiver.clone();
            receiver_tasks.push((
                format!("{receiver} zipkin"),
                tokio::spawn(async move {
                    if let Err(error) = crate::receiver::serve_zipkin(
                        listener, consumer, max_bytes, options, auth, cancel,
                    )
                    .await
                    {
                        error!(receiver = %name, transport = "http", %error, "receiver failed");
                    }
                }),
            ));
        }
        if let Some(jaeger) = bound.jaeger {
            start_jaeger(
                &receiver,
                jaeger,
                &heads,
                &metrics,
                &receivers_cancel,
                &mut receiver_tasks,
            );
        }
        if let Some((listener, max_bytes, auth)) = bound.http {
            let auth = AuthLayer::for_listener(
                format!("receivers.{receiver} http"),
                &auth,
                &metrics.auth_refusals(),
            );
            let consumer: Arc<dyn TraceConsumer> = Arc::new(ReceiverConsumer::new(
                receiver.clone(),
                "http",
                heads,
                Arc::clone(&metrics),
            ));
            let cancel = receivers_cancel.clone();
            let name = receiver.clone();
            receiver_tasks.push((
                format!("{receiver} http"),
                tokio::spawn(async move {
                    if let Err(error) =
                        crate::receiver::serve_http(listener, consumer, max_bytes, auth, cancel)
                            .await
                    {
                        error!(receiver = %name, transport = "http", %error, "receiver failed");
                    }
                }),
            ));
        }
    }

    // 6. Watchdog from pipeline progress, then readiness.
    let probes: Arc<Vec<PipelineProbe>> = Arc::new(
        running
            .iter()
            .map(|(_, running)| running.probe.clone())
            .collect(),
    );
    let exporter_list: Arc<Vec<Arc<ExporterRuntime>>> =
        Arc::new(exporters.values().cloned().collect());
    let watchdog_task = {
        let probes = Arc::clone(&probes);
        let exporter_list = Arc::clone(&exporter_list);
        systemd::spawn_watchdog(
            move || {
                let probes = Arc::clone(&probes);
                let exporter_list = Arc::clone(&exporter_list);
                async move {
                    for probe in probes.iter() {
                        if !probe.alive().await {
                            return false;
                        }
                    }
                    for exporter in exporter_list.iter() {
                        if !exporter.probe().await {
                            warn!(
                                exporter = exporter.id(),
                                "exporter queue did not answer the watchdog probe"
                            );
                            return false;
                        }
                    }
                    true
                }
            },
            background_cancel.clone(),
        )
    };
    readiness.set_ready();
    systemd::notify_ready("ready");
    info!(
        startup = ?started.elapsed(),
        pipelines = running.len(),
        exporters = exporters.len(),
        "spoor-collector ready"
    );

    shutdown.cancelled().await;
    systemd::notify_stopping();
    readiness.set_stopping();

    info!("draining: stopping receivers");
    receivers_cancel.cancel();
    let receivers_deadline = tokio::time::Instant::now() + RECEIVERS_SHUTDOWN_TIMEOUT;
    for (name, task) in receiver_tasks {
        if tokio::time::timeout_at(receivers_deadline, task)
            .await
            .is_err()
        {
            warn!(receiver = %name, "receiver did not finish in-flight requests before the deadline");
        }
    }

    info!("draining: flushing pipelines");
    let pipelines_deadline = tokio::time::Instant::now() + PIPELINES_SHUTDOWN_TIMEOUT;
    let mut pipeline_tasks = Vec::new();
    for (pipeline, running) in running {
        // Dropping the head closes the input once the receivers dropped theirs.
        drop(running.head);
        pipeline_tasks.push((pipeline.id.to_string(), running.task));
    }
    drop(probes);
    for (name, mut task) in pipeline_tasks {
        if tokio::time::timeout_at(pipelines_deadline, &mut task)
            .await
            .is_err()
        {
            warn!(pipeline = %name, "pipeline did not drain before the deadline; abandoning what it holds");
            task.abort();
        }
    }

    info!("draining: flushing exporters");
    let exporters_deadline = tokio::time::Instant::now() + EXPORTERS_SHUTDOWN_TIMEOUT;
    futures::future::join_all(
        exporter_list
            .iter()
            .map(|exporter| exporter.shutdown(exporters_deadline)),
    )
    .await;

    background_cancel.cancel();
    if let Some(task) = watchdog_task {
        let _ = task.await;
    }
    endpoints_cancel.cancel();
    for task in endpoint_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    info!(took = ?started.elapsed(), "spoor-collector stopped");
    Ok(())
}

/// Starts a jaeger receiver's protocols, each with its own consumer so the receiver
/// metrics carry contrib's transport names.
fn start_jaeger(
    receiver: &str,
    bound: BoundJaeger,
    heads: &[PipelineHead],
    metrics: &Arc<CollectorMetrics>,
    cancel: &CancellationToken,
    tasks: &mut Vec<(String, JoinHandle<()>)>,
) {
    let consumer = |transport: &'static str| -> Arc<dyn TraceConsumer> {
        Arc::new(ReceiverConsumer::new(
            receiver.to_owned(),
            transport,
            heads.to_vec(),
            Arc::clone(metrics),
        ))
    };
    if let Some((listener, max_bytes, auth)) = bound.grpc {
        let auth = AuthLayer::for_listener(
            format!("receivers.{receiver} grpc"),
            &auth,
            &metrics.auth_refusals(),
        );
        let (consumer, cancel) = (consumer("grpc"), cancel.clone());
        let name = receiver.to_owned();
        tasks.push((
            format!("{receiver} grpc"),
            tokio::spawn(async move {
                let served = crate::receiver::jaeger::serve_jaeger_grpc(
                    listener, consumer, max_bytes, auth, cancel,
                )
                .await;
                if let Err(error) = served {
                    error!(receiver = %name, transport = "grpc", %error, "receiver failed");
                }
            }),
        ));
    }
    if let Some((listener, max_bytes, auth)) = bound.thrift_http {
        let auth = AuthLayer::for_listener(
            format!("receivers.{receiver} thrift_http"),
            &auth,
            &metrics.auth_refusals(),
        );
        let (consumer, cancel) = (consumer("collector_http"), cancel.clone());
        let name = receiver.to_owned();
        tasks.push((
            format!("{receiver} thrift_http"),
            tokio::spawn(async move {
                let served = crate::receiver::jaeger::serve_jaeger_http(
                    listener, consumer, max_bytes, auth, cancel,
                )
                .await;
                if let Err(error) = served {
                    error!(receiver = %name, transport = "collector_http", %error, "receiver failed");
                }
            }),
        ));
    }
    for (socket, protocol, options) in bound.udp {
        let transport = match protocol {
            ThriftProtocol::Compact => "udp_thrift_compact",
            ThriftProtocol::Binary => "udp_thrift_binary",
        };
        let (consumer, cancel) = (consumer(transport), cancel.clone());
        let on_drop: OnDrop = {
            let metrics = Arc::clone(metrics);
            let name = receiver.to_owned();
            let warning = WarnEvery::new(Duration::from_secs(10));
            Arc::new(move |reason: DropReason| {
                metrics.receiver_dropped_packet(&name, transport, reason.as_str());
                if warning.ready() {
                    warn!(
                        receiver = %name,
                        transport,
                        reason = reason.as_str(),
                        "udp packets dropped (counted in otelcol_receiver_udp_dropped_packets_total)"
                    );
                }
            })
        };
        let name = receiver.to_owned();
        tasks.push((
            format!("{receiver} {transport}"),
            tokio::spawn(async move {
                let served = crate::receiver::jaeger::serve_jaeger_udp(
                    socket, protocol, consumer, options, on_drop, cancel,
                )
                .await;
                if let Err(error) = served {
                    error!(receiver = %name, transport, %error, "receiver failed");
                }
            }),
        ));
    }
}

type RunningPipelines = Vec<(
    crate::config::collector::PipelineConfig,
    pipeline::RunningPipeline,
)>;

/// Steps 3 and 4: exporters (persistent queues replayed), memory limiters, pipelines.
async fn start_pipelines(
    config: &CollectorConfig,
    used_exporters: &BTreeSet<&ComponentId>,
    metrics: &Arc<CollectorMetrics>,
    background_cancel: &CancellationToken,
) -> Result<
    (
        BTreeMap<ComponentId, Arc<ExporterRuntime>>,
        RunningPipelines,
    ),
    CollectorError,
> {
    systemd::notify_status("opening exporters and persistent queues");
    let mut exporters: BTreeMap<ComponentId, Arc<ExporterRuntime>> = BTreeMap::new();
    for id in used_exporters {
        let Some(exporter_config) = config.exporters.get(*id) else {
            continue;
        };
        match ExporterRuntime::start(id.to_string(), exporter_config, Arc::clone(metrics)).await {
            Ok(runtime) => {
                exporters.insert((*id).clone(), runtime);
            }
            Err(error) => {
                let deadline = tokio::time::Instant::now();
                for runtime in exporters.values() {
                    runtime.shutdown(deadline).await;
                }
                return Err(CollectorError::Exporter(error.to_string()));
            }
        }
    }

    // Memory limiters are shared by the pipelines that list them, as in the
    // OpenTelemetry Collector; batch processors are per pipeline.
    let mut limiters: BTreeMap<ComponentId, Arc<MemoryLimiter>> = BTreeMap::new();
    for pipeline in &config.pipelines {
        for id in &pipeline.processors {
            if let Some(ProcessorConfig::MemoryLimiter(limiter_config)) = config.processors.get(id)
            {
                if limiters.contains_key(id) {
                    continue;
                }
                let limiter =
                    MemoryLimiter::new(id.to_string(), limiter_config).map_err(|error| {
                        CollectorError::Processor {
                            processor: id.to_string(),
                            message: error.to_string(),
                        }
                    })?;
                limiter.spawn_checker(background_cancel.clone());
                limiters.insert(id.clone(), limiter);
            }
        }
    }

    let mut running = Vec::new();
    for pipeline in &config.pipelines {
        let mut stages = Vec::new();
        let mut pipeline_limiters = Vec::new();
        for id in &pipeline.processors {
            match config.processors.get(id) {
                Some(ProcessorConfig::Batch(batch_config)) => stages.push(Stage::Batch(
                    Batcher::new(id.to_string(), batch_config.clone(), Arc::clone(metrics)),
                )),
                Some(ProcessorConfig::MemoryLimiter(_)) => {
                    if let Some(limiter) = limiters.get(id) {
                        pipeline_limiters.push(Arc::clone(limiter));
                        stages.push(Stage::MemoryLimiter {
                            limiter: Arc::clone(limiter),
                            metrics: Arc::clone(metrics),
                        });
                    }
                }
                Some(other) => stages.extend(Stage::per_pipeline(&id.to_string(), other, metrics)),
                None => {}
            }
        }
        let pipeline_exporters = pipeline
            .exporters
            .iter()
            .filter_map(|id| exporters.get(id).cloned())
            .collect();
        let started = spawn_pipeline(
            pipeline.id.to_string(),
            stages,
            pipeline_limiters,
            pipeline_exporters,
        );
        info!(
            pipeline = %pipeline.id,
            receivers = ?pipeline.receivers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            processors = ?pipeline.processors.iter().map(ToString::to_string).collect::<Vec<_>>(),
            exporters = ?pipeline.exporters.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "pipeline started"
        );
        running.push((pipeline.clone(), started));
    }
    Ok((exporters, running))
}

fn serve_router(
    what: &'static str,
    listener: Incoming,
    router: axum::Router,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let address = listener.local_addr();
        info!(endpoint = what, %address, tls = listener.is_tls(), "serving");
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { cancel.cancelled().await })
            .await;
        if let Err(error) = served {
            error!(endpoint = what, %error, "endpoint failed");
        }
    })
}
