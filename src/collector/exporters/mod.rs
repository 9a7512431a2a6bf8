//! Exporters: each has a sending queue (memory or persistent) drained by `num_consumers`
//! tasks that send with retries.
//!
//! Flow: pipeline → [`ExporterRuntime::enqueue_item`] → queue (the receiver's request is
//! acknowledged here: in memory, or written and fsynced for a persistent queue) →
//! consumer → [`Exporter::export`] with [`retry::send_with_retry`] → removed from the
//! queue once the backend acknowledged it or refused it permanently. New exporter types
//! are new variants of [`Exporter`]. A `loadbalancing` exporter ([`loadbalancing`]) is a
//! router in front of one queued `otlp` exporter per backend.

pub(crate) mod debug;
pub(crate) mod loadbalancing;
pub(crate) mod otlp_grpc;
pub(crate) mod otlp_http;
pub(crate) mod retry;
mod skip_verify;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use prost::Message as _;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::delivery::{commit_all, fail_all, AckRef};
use super::metrics::{CollectorMetrics, WarnEvery};
use super::queue::{Dispatched, QueueError, SendingQueue};
use crate::config::collector::{ExporterConfig, QueueConfig, RetryConfig};
use crate::otlp::{OtlpExportRequest, OtlpResourceSpans};
use crate::receiver::ConsumeError;
use crate::tenant::TenantId;
use retry::Outcome;

/// Batches whose encoding is estimated above this go to the blocking pool; below it the
/// hop costs more than the work (well under the ~500 µs budget of an async worker).
const INLINE_ENCODE_MAX_SPANS: usize = 256;

/// How long a removed `loadbalancing` backend waits before offering a batch the others
/// refused (their queues full) again.
const WITHDRAWN_HAND_OVER_RETRY: Duration = Duration::from_secs(1);

/// At most one warning per interval about a full queue.
pub(crate) const REFUSAL_WARNING_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub(crate) enum ExporterError {
    #[error("exporter {exporter}: {message}")]
    Setup { exporter: String, message: String },
    #[error("exporter {exporter}: {source}")]
    Queue {
        exporter: String,
        #[source]
        source: QueueError,
    },
}

/// What a queue holds for one batch.
#[derive(Debug)]
pub(crate) struct QueueItem {
    pub(crate) tenant: TenantId,
    pub(crate) spans: Arc<Vec<OtlpResourceSpans>>,
    pub(crate) num_spans: usize,
    pub(crate) acks: Vec<AckRef>,
}

/// The data of one export: decoded spans (from a memory queue) or an encoded
/// `ExportTraceServiceRequest` (from a persistent queue).
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Spans(Arc<Vec<OtlpResourceSpans>>),
    Encoded(Bytes),
}

impl Payload {
    /// The encoded request; large batches are encoded on the blocking pool.
    pub(crate) async fn encoded(&self, num_spans: usize) -> Result<Bytes, ExportError> {
        match self {
            Payload::Encoded(bytes) => Ok(bytes.clone()),
            Payload::Spans(spans) if num_spans <= INLINE_ENCODE_MAX_SPANS => {
                Ok(Bytes::from(encode_request(spans)))
            }
            Payload::Spans(spans) => {
                let spans = Arc::clone(spans);
                tokio::task::spawn_blocking(move || Bytes::from(encode_request(&spans)))
                    .await
                    .map_err(|error| {
                        ExportError::permanent(format!("encoding task failed: {error}"))
                    })
            }
        }
    }

    /// The decoded spans (the debug exporter needs them).
    pub(crate) fn decoded(&self) -> Result<Arc<Vec<OtlpResourceSpans>>, ExportError> {
        match self {
            Payload::Spans(spans) => Ok(Arc::clone(spans)),
            Payload::Encoded(bytes) => OtlpExportRequest::decode(bytes.as_ref())
                .map(|request| Arc::new(request.resource_spans))
                .map_err(|error| {
                    ExportError::permanent(format!("stored batch does not decode: {error}"))
                }),
        }
    }
}

/// Encodes an `ExportTraceServiceRequest` (field 1, repeated `ResourceSpans`) straight
/// from a slice, without building the request.
pub(crate) fn encode_request(resource_spans: &[OtlpResourceSpans]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(encoded_request_len(resource_spans));
    encode_request_into(resource_spans, &mut buf);
    buf
}

pub(crate) fn encode_request_into(resource_spans: &[OtlpResourceSpans], buf: &mut Vec<u8>) {
    for rs in resource_spans {
        prost::encoding::message::encode(1, rs, buf);
    }
}

pub(crate) fn encoded_request_len(resource_spans: &[OtlpResourceSpans]) -> usize {
    resource_spans
        .iter()
        .map(|rs| prost::encoding::message::encoded_len(1, rs))
        .sum()
}

/// Why an export attempt failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ExportError {
    pub(crate) retryable: bool,
    /// The delay the backend asked for (gRPC RetryInfo, HTTP Retry-After).
    pub(crate) throttle: Option<Duration>,
    pub(crate) message: String,
}

impl ExportError {
    pub(crate) fn retryable(message: impl Into<String>, throttle: Option<Duration>) -> ExportError {
        ExportError {
            retryable: true,
            throttle,
            message: message.into(),
        }
    }

    pub(crate) fn permanent(message: impl Into<String>) -> ExportError {
        ExportError {
            retryable: false,
            throttle: None,
            message: message.into(),
        }
    }
}

/// A successful export; the backend may still have rejected some spans.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Exported {
    pub(crate) rejected_spans: u64,
    pub(crate) message: String,
}

/// The exporter types.
#[derive(Debug)]
pub(crate) enum Exporter {
    Otlp(otlp_grpc::OtlpGrpcExporter),
    OtlpHttp(otlp_http::OtlpHttpExporter),
    Debug(debug::DebugExporter),
}

impl Exporter {
    pub(crate) async fn export(
        &self,
        tenant: &TenantId,
        payload: &Payload,
        num_spans: usize,
    ) -> Result<Exported, ExportError> {
        match self {
            Exporter::Otlp(exporter) => exporter.export(tenant, payload, num_spans).await,
            Exporter::OtlpHttp(exporter) => exporter.export(tenant, payload, num_spans).await,
            Exporter::Debug(exporter) => exporter.export(tenant, payload, num_spans),
        }
    }
}

/// The debug exporter has no queue settings; it logs from a small in-memory queue.
fn debug_queue_config() -> QueueConfig {
    QueueConfig {
        enabled: true,
        num_consumers: 1,
        queue_size: 1000,
        sizer: crate::config::collector::QueueSizer::Requests,
        block_on_overflow: true,
        wait_for_result: false,
        persistent: None,
    }
}

fn no_retry() -> RetryConfig {
    RetryConfig {
        enabled: false,
        initial_interval: Duration::from_secs(1),
        randomization_factor: 0.0,
        multiplier: 1.0,
        max_interval: Duration::from_secs(1),
        max_elapsed_time: None,
    }
}

/// One running exporter, as a pipeline sees it.
#[derive(Debug)]
pub(crate) enum ExporterRuntime {
    /// An exporter with its own sending queue.
    Queued(Arc<QueuedExporter>),
    /// `loadbalancing`: a queued `otlp` exporter per backend.
    LoadBalancing(loadbalancing::LoadBalancer),
}

/// `tls.insecure_skip_verify` is only ever set on purpose, but it must not go unnoticed:
/// anyone on the path can read and alter what this exporter sends.
fn warn_unverified(id: &str, config: &ExporterConfig) {
    let unverified = match config {
        ExporterConfig::Otlp(otlp) => otlp
            .tls
            .as_ref()
            .is_some_and(|tls| tls.insecure_skip_verify),
        ExporterConfig::OtlpHttp(otlp) => {
            otlp.traces_url.starts_with("https://") && otlp.tls.insecure_skip_verify
        }
        ExporterConfig::LoadBalancing(balancing) => balancing
            .backends
            .iter()
            .map(|backend| &backend.exporter)
            .chain(balancing.dns.as_ref().map(|dns| &dns.backend))
            .any(|exporter| {
                exporter
                    .tls
                    .as_ref()
                    .is_some_and(|tls| tls.insecure_skip_verify)
            }),
        ExporterConfig::Debug(_) => false,
    };
    if unverified {
        tracing::warn!(
            exporter = id,
            "tls.insecure_skip_verify is set: the backend's certificate is not verified, \
             so anyone on the network path can impersonate it"
        );
    }
}

impl ExporterRuntime {
    /// Builds the exporter, opens its queue(s) (replaying persistent ones) and starts
    /// the consumers.
    pub(crate) async fn start(
        id: String,
        config: &ExporterConfig,
        metrics: Arc<CollectorMetrics>,
    ) -> Result<Arc<ExporterRuntime>, ExporterError> {
        let setup_error = |message: String| ExporterError::Setup {
            exporter: id.clone(),
            message,
        };
        warn_unverified(&id, config);
        let (exporter, queue_config, retry) = match config {
            ExporterConfig::Otlp(config) => (
                Exporter::Otlp(otlp_grpc::OtlpGrpcExporter::new(config).map_err(setup_error)?),
                config.queue.clone(),
                config.retry.clone(),
            ),
            ExporterConfig::OtlpHttp(config) => (
                Exporter::OtlpHttp(otlp_http::OtlpHttpExporter::new(config).map_err(setup_error)?),
                config.queue.clone(),
                config.retry.clone(),
            ),
            ExporterConfig::Debug(config) => (
                Exporter::Debug(debug::DebugExporter::new(id.clone(), config)),
                debug_queue_config(),
                no_retry(),
            ),
            ExporterConfig::LoadBalancing(config) => {
                let balancer = loadbalancing::LoadBalancer::start(id, config, metrics).await?;
                return Ok(Arc::new(ExporterRuntime::LoadBalancing(balancer)));
            }
        };
        let names = ExporterNames {
            name: id.clone(),
            id,
        };
        let queued =
            QueuedExporter::start(names, exporter, &queue_config, retry, None, metrics).await?;
        Ok(Arc::new(ExporterRuntime::Queued(queued)))
    }

    pub(crate) fn id(&self) -> &str {
        match self {
            ExporterRuntime::Queued(exporter) => &exporter.names.id,
            ExporterRuntime::LoadBalancing(balancer) => balancer.id(),
        }
    }

    /// Hands a batch to the exporter's queue(s); see [`QueuedExporter::enqueue_item`].
    pub(crate) async fn enqueue_item(&self, item: QueueItem) {
        match self {
            ExporterRuntime::Queued(exporter) => exporter.enqueue_item(item).await,
            ExporterRuntime::LoadBalancing(balancer) => balancer.enqueue_item(item).await,
        }
    }

    /// Whether the queues' machinery answers (watchdog).
    pub(crate) async fn probe(&self) -> bool {
        match self {
            ExporterRuntime::Queued(exporter) => exporter.probe().await,
            ExporterRuntime::LoadBalancing(balancer) => balancer.probe().await,
        }
    }

    /// See [`QueuedExporter::shutdown`].
    pub(crate) async fn shutdown(&self, deadline: Instant) {
        match self {
            ExporterRuntime::Queued(exporter) => exporter.shutdown(deadline).await,
            ExporterRuntime::LoadBalancing(balancer) => balancer.shutdown(deadline).await,
        }
    }
}

/// How a queued exporter is named in metrics and logs.
#[derive(Debug, Clone)]
pub(crate) struct ExporterNames {
    /// The configured exporter ID: the `exporter` label of the span counters.
    pub(crate) id: String,
    /// The queue's name (its `exporter` label) and the `exporter` field of log lines:
    /// the ID, or `loadbalancing/<hostname>` for a backend of a `loadbalancing`
    /// exporter.
    pub(crate) name: String,
}

/// An exporter with its sending queue and the consumers draining it.
#[derive(Debug)]
pub(crate) struct QueuedExporter {
    names: ExporterNames,
    exporter: Exporter,
    /// The `loadbalancing` backend this exporter serves, if any.
    backend: Option<Arc<loadbalancing::Backend>>,
    queue: SendingQueue,
    retry: RetryConfig,
    metrics: Arc<CollectorMetrics>,
    /// Cancelled at the shutdown deadline: in-flight sends and backoff waits stop.
    cancel: CancellationToken,
    consumers: Mutex<Vec<JoinHandle<()>>>,
    refusal_warning: WarnEvery,
}

impl QueuedExporter {
    /// Opens the queue (replaying a persistent one) and starts the consumers.
    pub(crate) async fn start(
        names: ExporterNames,
        exporter: Exporter,
        queue_config: &QueueConfig,
        retry: RetryConfig,
        backend: Option<Arc<loadbalancing::Backend>>,
        metrics: Arc<CollectorMetrics>,
    ) -> Result<Arc<QueuedExporter>, ExporterError> {
        let queue = SendingQueue::open(&names.name, queue_config, Arc::clone(&metrics))
            .await
            .map_err(|source| ExporterError::Queue {
                exporter: names.name.clone(),
                source,
            })?;
        let runtime = Arc::new(QueuedExporter {
            names,
            exporter,
            backend,
            queue,
            retry,
            metrics,
            cancel: CancellationToken::new(),
            consumers: Mutex::new(Vec::new()),
            refusal_warning: WarnEvery::new(REFUSAL_WARNING_INTERVAL),
        });
        let consumers = (0..queue_config.num_consumers)
            .map(|_| {
                let runtime = Arc::clone(&runtime);
                tokio::spawn(async move { runtime.run_consumer().await })
            })
            .collect();
        *runtime.consumers.lock() = consumers;
        Ok(runtime)
    }

    /// Sends an empty export, as a `loadbalancing` backend's health probe.
    pub(crate) async fn send_probe(&self) {
        let probe = Payload::Encoded(Bytes::new());
        let result = self.exporter.export(&TenantId::single(), &probe, 0).await;
        if let Some(backend) = &self.backend {
            backend.attempted(result.is_ok());
        }
    }

    /// Queues a batch (its spans possibly shared with other exporters); its acks are
    /// committed once it is safe in the queue (or, with `wait_for_result`, once
    /// exported), or failed when the queue refuses it.
    pub(crate) async fn enqueue_item(&self, item: QueueItem) {
        let num_spans = item.num_spans;
        let tenant = item.tenant.clone();
        if let Err((refusal, acks)) = self.queue.push(item).await {
            self.metrics
                .exporter_enqueue_failed(&self.names.id, num_spans);
            if self.refusal_warning.ready() {
                warn!(
                    exporter = %self.names.name,
                    tenant = %tenant,
                    num_spans,
                    error = %refusal,
                    "sending queue refused data; clients are told to retry (logged once per 10s)"
                );
            }
            fail_all(acks, &refusal);
        }
    }

    /// Whether the queue's machinery answers (watchdog).
    pub(crate) async fn probe(&self) -> bool {
        self.queue.probe().await
    }

    /// Whether no batch waits in the queue (see [`SendingQueue::is_empty`]).
    pub(crate) async fn queue_is_empty(&self) -> bool {
        self.queue.is_empty().await
    }

    async fn run_consumer(self: Arc<Self>) {
        while let Some(item) = self.queue.next().await {
            self.send(item).await;
        }
    }

    async fn send(&self, item: Dispatched) {
        if let Some(backend) = self.backend.as_ref().filter(|backend| backend.is_retired()) {
            self.hand_over_withdrawn(backend, item).await;
            return;
        }
        let outcome = retry::send_with_retry(
            &self.exporter,
            &item.tenant,
            &item.payload,
            item.num_spans,
            &self.retry,
            &self.cancel,
            self.backend.as_ref().map(|backend| backend.withdrawn()),
            &self.names.name,
            |success| {
                if let Some(backend) = &self.backend {
                    backend.attempted(success);
                }
            },
        )
        .await;
        if let (Outcome::Withdrawn, Some(backend)) = (&outcome, &self.backend) {
            self.hand_over_withdrawn(backend, item).await;
            return;
        }
        let num_spans = item.num_spans;
        if matches!(outcome, Outcome::Exhausted(_)) {
            if let Some(backend) = &self.backend {
                if backend.hand_over(&item).await {
                    warn!(
                        exporter = %self.names.name,
                        tenant = %item.tenant,
                        num_spans,
                        "retries exhausted; the batch went to the next backends on the ring"
                    );
                    commit_all(self.queue.done(item).await);
                    return;
                }
            }
        }
        match outcome {
            Outcome::Sent(exported) => {
                let rejected = usize::try_from(exported.rejected_spans)
                    .unwrap_or(usize::MAX)
                    .min(num_spans);
                self.metrics
                    .exporter_sent(&self.names.id, num_spans - rejected);
                if rejected > 0 {
                    self.metrics.exporter_send_failed(&self.names.id, rejected);
                    warn!(
                        exporter = %self.names.name,
                        tenant = %item.tenant,
                        rejected_spans = rejected,
                        error = %exported.message,
                        "backend rejected some spans"
                    );
                }
                commit_all(self.queue.done(item).await);
            }
            Outcome::Permanent(export_error) => {
                self.metrics.exporter_send_failed(&self.names.id, num_spans);
                error!(
                    exporter = %self.names.name,
                    tenant = %item.tenant,
                    num_spans,
                    error = %export_error.message,
                    "export failed permanently; dropping data"
                );
                let acks = self.queue.done(item).await;
                fail_all(acks, &ConsumeError::Invalid(export_error.message));
            }
            Outcome::Exhausted(export_error) if self.queue.is_persistent() => {
                warn!(
                    exporter = %self.names.name,
                    tenant = %item.tenant,
                    num_spans,
                    error = %export_error.message,
                    "retries exhausted; the batch stays in the persistent queue and is retried later"
                );
                self.queue.requeue(item);
            }
            Outcome::Exhausted(export_error) => {
                self.metrics.exporter_send_failed(&self.names.id, num_spans);
                error!(
                    exporter = %self.names.name,
                    tenant = %item.tenant,
                    num_spans,
                    error = %export_error.message,
                    "retries exhausted; dropping data"
                );
                let acks = self.queue.done(item).await;
                fail_all(
                    acks,
                    &ConsumeError::Full {
                        what: "export destination",
                        retry_after: Duration::from_secs(5),
                    },
                );
            }
            // Withdrawn only comes with a backend's token, and was handled above.
            Outcome::Cancelled | Outcome::Withdrawn => self.cancelled(item),
        }
    }

    /// The shutdown deadline came before the batch was sent.
    fn cancelled(&self, item: Dispatched) {
        if self.queue.is_persistent() {
            // Still on disk: sent after the next start.
            self.queue.release(item);
        } else {
            self.metrics
                .exporter_send_failed(&self.names.id, item.num_spans);
            error!(
                exporter = %self.names.name,
                tenant = %item.tenant,
                num_spans = item.num_spans,
                "shutdown deadline reached before the batch was sent; dropping data"
            );
        }
    }

    /// Queues a batch of a backend the resolver dropped on the backends that now own
    /// its traces; it leaves this queue only once they all hold it, so while their
    /// queues are full it waits here (until the shutdown deadline).
    async fn hand_over_withdrawn(&self, backend: &loadbalancing::Backend, item: Dispatched) {
        loop {
            if backend.hand_over(&item).await {
                commit_all(self.queue.done(item).await);
                return;
            }
            if self.refusal_warning.ready() {
                warn!(
                    exporter = %self.names.name,
                    tenant = %item.tenant,
                    num_spans = item.num_spans,
                    "the backends now owning this removed backend's traces refused its batch; \
                     retrying (logged once per 10s)"
                );
            }
            tokio::select! {
                biased;
                _ = self.cancel.cancelled() => {
                    self.cancelled(item);
                    return;
                }
                _ = tokio::time::sleep(WITHDRAWN_HAND_OVER_RETRY) => {}
            }
        }
    }

    /// Stops taking new data, lets the consumers drain (a memory queue is sent out; a
    /// persistent queue keeps what is left on disk) until `deadline`, then cancels what
    /// is still in flight and closes the queue.
    pub(crate) async fn shutdown(&self, deadline: Instant) {
        self.shutdown_by(tokio::time::sleep_until(deadline)).await;
    }

    /// [`QueuedExporter::shutdown`] with a deadline not known yet (a `loadbalancing`
    /// backend draining after its address left: the collector's shutdown sets it).
    pub(crate) async fn shutdown_by(&self, deadline: impl std::future::Future<Output = ()>) {
        use futures::future::FusedFuture as _;
        use futures::FutureExt as _;
        self.queue.close();
        let consumers: Vec<JoinHandle<()>> = std::mem::take(&mut *self.consumers.lock());
        let mut unfinished = Vec::new();
        let deadline = deadline.fuse();
        tokio::pin!(deadline);
        for consumer in consumers {
            let mut consumer = consumer;
            if !deadline.is_terminated() {
                tokio::select! {
                    _ = &mut consumer => continue,
                    () = &mut deadline => {}
                }
            }
            unfinished.push(consumer);
        }
        if !unfinished.is_empty() {
            self.cancel.cancel();
            for consumer in unfinished {
                let _ = tokio::time::timeout(Duration::from_secs(1), consumer).await;
            }
        }
        let dropped = self.queue.shutdown().await;
        if dropped.num_spans > 0 {
            self.metrics
                .exporter_send_failed(&self.names.id, dropped.num_spans);
            error!(
                exporter = %self.names.name,
                num_batches = dropped.num_batches,
                num_spans = dropped.num_spans,
                "shutdown deadline reached with data still in the memory queue; dropping it"
            );
        }
        info!(exporter = %self.names.name, "exporter stopped");
    }
}
