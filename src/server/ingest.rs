//! Ingest: the server's [`TraceConsumer`]. A request is validated, split per trace,
//! appended to the WAL by the single writer thread, made durable (group commit: one
//! fsync covers every request that queued up meanwhile), inserted into the head, and
//! only then acknowledged.
//!
//! The writer thread is also where the head is partitioned for a block cut, so a cut
//! sees a consistent cut-off: every piece in the head is in a segment ≤ the one sealed.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::config::{FsyncPolicy, HeadConfig, ServerConfig};
use crate::otlp::validate::{
    retain_spans_by_trace, retain_spans_with_values_within, retain_valid_spans,
};
use crate::otlp::{count_spans, OtlpResourceSpans, TraceId};
use crate::receiver::{Accepted, ConsumeError, TraceBatch, TraceConsumer};
use crate::server::generator::Generator;
use crate::server::head::{CutPartition, CutReason, Head};
use crate::server::limits::IngestLimiter;
use crate::server::metrics::ServerMetrics;
use crate::server::wal::{
    batch_record, frame, SegmentWriter, TracePiece, WalDir, WalError, WalRecord,
};
use crate::tenant::TenantId;

/// Requests waiting for the writer thread. Memory is bounded by the in-flight byte
/// semaphore; this bounds the number of queued requests.
const WRITER_QUEUE_CAPACITY: usize = 4096;
/// Upper bound on what one group commit writes before it fsyncs.
const MAX_GROUP_BYTES: usize = 16 << 20;
/// In-flight accounting granularity (semaphore permits are u32).
const PERMIT_BYTES: usize = 1024;
/// Requests larger than this are encoded on the blocking pool.
const INLINE_ENCODE_LIMIT: usize = 128 << 10;

/// A cut handed from the writer thread to the flusher.
#[derive(Debug)]
pub struct CutJob {
    pub partition: CutPartition,
    pub reason: CutReason,
}

enum Command {
    Append {
        framed: Bytes,
        tenant: crate::tenant::TenantId,
        pieces: Vec<TracePiece>,
        done: oneshot::Sender<Result<(), WalError>>,
    },
    Cut {
        reason: CutReason,
        carry_nothing: bool,
        done: oneshot::Sender<Result<Option<CutJob>, WalError>>,
    },
    /// Test hook and watchdog probe: answers once everything queued before it is durable.
    Barrier(oneshot::Sender<()>),
    /// Interval fsync policy: sync what was appended since the last sync.
    Tick,
    /// Sync and stop; requests queued after it are refused.
    Shutdown(oneshot::Sender<()>),
}

/// Cloneable handle to the ingest path.
#[derive(Debug, Clone)]
pub struct Ingest {
    inner: Arc<IngestInner>,
}

#[derive(Debug)]
struct IngestInner {
    tx: mpsc::Sender<Command>,
    inflight: Semaphore,
    max_inflight_permits: u32,
    head: Arc<Mutex<Head>>,
    max_head_bytes: u64,
    retry_after: Duration,
    metrics: Arc<ServerMetrics>,
    /// Sees every acknowledged request; `None` when the generator is disabled.
    generator: Option<Generator>,
    limiter: IngestLimiter,
    closed: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Command::Append { .. } => "Append",
            Command::Cut { .. } => "Cut",
            Command::Barrier(_) => "Barrier",
            Command::Tick => "Tick",
            Command::Shutdown(_) => "Shutdown",
        })
    }
}

/// Owns the open segment; runs on its own OS thread because every group ends in a
/// blocking fsync.
struct Writer {
    wal: WalDir,
    segment: SegmentWriter,
    fsync: FsyncPolicy,
    segment_max_bytes: u64,
    head: Arc<Mutex<Head>>,
    head_config: HeadConfig,
    metrics: Arc<ServerMetrics>,
    last_sync: Instant,
    unsynced: bool,
}

impl Ingest {
    /// The traces of `pieces` that would hold more than `max` bytes live with their piece
    /// added, each with the reason for the sender.
    fn traces_over_size(
        &self,
        tenant: &TenantId,
        pieces: &[TracePiece],
        max: usize,
    ) -> HashMap<TraceId, String> {
        let head = self.inner.head.lock();
        pieces
            .iter()
            .filter_map(|(trace_id, piece)| {
                let held = head.live_trace_bytes(tenant, trace_id);
                (held + piece.len() > max).then(|| {
                    let reason = format!(
                        "trace {trace_id} would hold {} bytes, over limits.max_bytes_per_trace = {max} \
                         (it holds {held} bytes)",
                        held + piece.len()
                    );
                    (*trace_id, reason)
                })
            })
            .collect()
    }

    /// Starts the writer thread on a fresh segment after `last_segment`. The head must
    /// already hold everything replayed from the WAL.
    pub fn start(
        wal: WalDir,
        last_segment: u64,
        head: Arc<Mutex<Head>>,
        server_config: &ServerConfig,
        metrics: Arc<ServerMetrics>,
        generator: Option<Generator>,
    ) -> Result<(Ingest, thread::JoinHandle<()>), WalError> {
        let config = &server_config.ingest;
        let wal_config = &server_config.wal;
        let head_config = server_config.head.clone();
        let segment = wal.create_segment(last_segment + 1)?;
        let (tx, rx) = mpsc::channel(WRITER_QUEUE_CAPACITY);
        let max_inflight_permits = (config.max_inflight_bytes as usize / PERMIT_BYTES)
            .clamp(1, u32::MAX as usize >> 4) as u32;
        // Twice a block keeps ingest going while the previous block uploads; beyond
        // that the backend is not keeping up and clients are told to back off.
        let max_head_bytes = head_config.max_block_bytes.saturating_mul(2);
        let writer = Writer {
            wal,
            segment,
            fsync: wal_config.fsync,
            segment_max_bytes: wal_config.segment_max_bytes,
            head: Arc::clone(&head),
            head_config,
            metrics: Arc::clone(&metrics),
            last_sync: Instant::now(),
            unsynced: false,
        };
        if let FsyncPolicy::Interval(interval) = wal_config.fsync {
            let weak = tx.downgrade();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    let Some(tx) = weak.upgrade() else { break };
                    // A full queue means the writer is busy and will sync on its own.
                    let _ = tx.try_send(Command::Tick);
                }
            });
        }
        let handle = thread::Builder::new()
            .name("spoor-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| WalError::Io {
                path: "spoor-wal thread".into(),
                source,
            })?;
        let ingest = Ingest {
            inner: Arc::new(IngestInner {
                tx,
                inflight: Semaphore::new(max_inflight_permits as usize),
                max_inflight_permits,
                head,
                max_head_bytes,
                retry_after: config.retry_after,
                metrics,
                generator,
                limiter: IngestLimiter::new(server_config.limits.clone()),
                closed: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        Ok((ingest, handle))
    }

    pub fn head(&self) -> &Arc<Mutex<Head>> {
        &self.inner.head
    }

    /// Refuses new requests from now on; already queued ones still complete.
    pub fn close(&self) {
        self.inner
            .closed
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Asks the writer thread to partition the head for a block cut.
    pub async fn cut(
        &self,
        reason: CutReason,
        carry_nothing: bool,
    ) -> Result<Option<CutJob>, WalError> {
        let (done, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Cut {
                reason,
                carry_nothing,
                done,
            })
            .await
            .map_err(|_| WalError::Closed)?;
        rx.await.map_err(|_| WalError::Closed)?
    }

    /// Resolves once everything queued before the call is durable.
    pub async fn barrier(&self) -> Result<(), WalError> {
        let (done, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Barrier(done))
            .await
            .map_err(|_| WalError::Closed)?;
        rx.await.map_err(|_| WalError::Closed)
    }

    /// Stops the writer thread once everything queued before the call is written and
    /// synced. Later requests are refused with UNAVAILABLE.
    pub async fn shutdown(&self) -> Result<(), WalError> {
        self.close();
        let (done, rx) = oneshot::channel();
        self.inner
            .tx
            .send(Command::Shutdown(done))
            .await
            .map_err(|_| WalError::Closed)?;
        rx.await.map_err(|_| WalError::Closed)
    }
}

#[async_trait::async_trait]
impl TraceConsumer for Ingest {
    async fn consume(&self, mut batch: TraceBatch) -> Result<Accepted, ConsumeError> {
        let inner = &self.inner;
        if inner.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ConsumeError::Closed);
        }
        let tenant = batch.tenant.clone();
        let mut rejected = retain_valid_spans(&mut batch.resource_spans);
        if rejected.num_spans > 0 {
            inner
                .metrics
                .discarded_spans(&tenant, "invalid_span", rejected.num_spans);
        }
        if let Some(max) = inner.limiter.for_tenant(&tenant).max_attribute_value_length {
            let too_long = retain_spans_with_values_within(
                &mut batch.resource_spans,
                max,
                "limits.max_attribute_value_length",
            );
            if too_long.num_spans > 0 {
                inner
                    .metrics
                    .discarded_spans(&tenant, "attribute_too_long", too_long.num_spans);
                tracing::warn!(tenant = %tenant, num_spans = too_long.num_spans, reason = too_long.first_reason.as_deref().unwrap_or_default(), "refusing spans: attribute value over the tenant's limit");
                rejected.merge(too_long);
            }
        }
        let mut num_spans = count_spans(&batch.resource_spans) as u64;
        if num_spans == 0 {
            return Ok(Accepted::from(rejected));
        }
        if let Err(limited) = inner
            .limiter
            .admit(&tenant, batch.num_bytes as u64, Instant::now())
        {
            inner
                .metrics
                .discarded_spans(&tenant, "rate_limited", num_spans);
            tracing::warn!(tenant = %tenant, num_spans, num_bytes = batch.num_bytes, rate = limited.rate, burst = limited.burst, "refusing spans: tenant over its ingest rate limit");
            return Err(ConsumeError::Limited {
                message: limited.to_string(),
                retry_after: limited.retry_after,
            });
        }
        let full = |what: &'static str| ConsumeError::Full {
            what,
            retry_after: inner.retry_after,
        };
        if inner.head.lock().total_bytes() >= inner.max_head_bytes {
            inner
                .metrics
                .discarded_spans(&tenant, "head_full", num_spans);
            tracing::warn!(tenant = %tenant, num_spans, "refusing spans: head is full, blocks are not being flushed fast enough");
            return Err(full("head"));
        }
        let permits =
            (batch.num_bytes / PERMIT_BYTES + 1).min(inner.max_inflight_permits as usize) as u32;
        let Ok(_permit) = inner.inflight.try_acquire_many(permits) else {
            inner
                .metrics
                .discarded_spans(&tenant, "inflight_full", num_spans);
            return Err(full("ingest buffer"));
        };

        let num_bytes = batch.num_bytes;
        let limits = *inner.limiter.for_tenant(&tenant);
        let (mut framed, mut pieces, mut resource_spans) =
            encode_record(&tenant, batch.resource_spans, num_bytes).await?;
        if let Some(max) = limits.max_bytes_per_trace {
            let too_large = self.traces_over_size(&tenant, &pieces, max);
            if !too_large.is_empty() {
                let refused = retain_spans_by_trace(&mut resource_spans, |trace_id| {
                    too_large.get(trace_id).cloned()
                });
                inner
                    .metrics
                    .discarded_spans(&tenant, "trace_too_large", refused.num_spans);
                tracing::warn!(tenant = %tenant, num_spans = refused.num_spans, traces = too_large.len(), max, reason = refused.first_reason.as_deref().unwrap_or_default(), "refusing spans: trace over the tenant's size limit");
                num_spans -= refused.num_spans;
                rejected.merge(refused);
                if num_spans == 0 {
                    return Ok(Accepted::from(rejected));
                }
                (framed, pieces, resource_spans) =
                    encode_record(&tenant, resource_spans, num_bytes).await?;
            }
        }
        if let Some(max) = limits.max_live_traces {
            let (live, new) = inner
                .head
                .lock()
                .live_and_new_traces(&tenant, pieces.iter().map(|(trace_id, _)| *trace_id));
            if new > 0 && live + new > max {
                inner
                    .metrics
                    .discarded_spans(&tenant, "live_traces_exceeded", num_spans);
                tracing::warn!(tenant = %tenant, num_spans, live, new, max, "refusing spans: tenant at its live-trace limit");
                return Err(ConsumeError::Limited {
                    message: format!(
                        "tenant {tenant} has {live} live traces and this request starts {new} more, \
                         over limits.max_live_traces = {max}; retry once traces are flushed"
                    ),
                    retry_after: inner.retry_after,
                });
            }
        }
        let (done, rx) = oneshot::channel();
        inner
            .tx
            .send(Command::Append {
                framed,
                tenant: tenant.clone(),
                pieces,
                done,
            })
            .await
            .map_err(|_| ConsumeError::Closed)?;
        match rx.await {
            Ok(Ok(())) => {
                inner.metrics.ingested(&tenant, num_spans, num_bytes as u64);
                if let Some(generator) = &inner.generator {
                    generator.submit(&tenant, resource_spans);
                }
                Ok(Accepted::from(rejected))
            }
            Ok(Err(error)) => {
                tracing::error!(tenant = %tenant, %error, "wal append failed");
                Err(ConsumeError::Internal(format!(
                    "write-ahead log append failed: {error}"
                )))
            }
            Err(_) => Err(ConsumeError::Closed),
        }
    }
}

struct PendingAppend {
    tenant: crate::tenant::TenantId,
    pieces: Vec<TracePiece>,
    done: oneshot::Sender<Result<(), WalError>>,
}

/// Encodes the WAL record of one request (and the head's pieces, slices of it), on the
/// blocking pool when the request is large enough for the hop to pay.
async fn encode_record(
    tenant: &TenantId,
    resource_spans: Vec<OtlpResourceSpans>,
    num_bytes: usize,
) -> Result<(Bytes, Vec<TracePiece>, Vec<OtlpResourceSpans>), ConsumeError> {
    if num_bytes <= INLINE_ENCODE_LIMIT {
        let (framed, pieces) = batch_record(tenant, &resource_spans);
        return Ok((framed, pieces, resource_spans));
    }
    let tenant = tenant.clone();
    tokio::task::spawn_blocking(move || {
        let (framed, pieces) = batch_record(&tenant, &resource_spans);
        (framed, pieces, resource_spans)
    })
    .await
    .map_err(|e| ConsumeError::Internal(format!("encoding task failed: {e}")))
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(first) = rx.blocking_recv() {
            let mut group = vec![first];
            let mut group_bytes = 0usize;
            while group_bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(command) => {
                        if let Command::Append { framed, .. } = &command {
                            group_bytes += framed.len();
                        }
                        group.push(command);
                    }
                    Err(_) => break,
                }
            }
            if let Some(done) = self.process_group(group) {
                self.sync_now();
                rx.close();
                let _ = done.send(());
                break;
            }
        }
        // Every sender is gone or shutdown was asked: make what was written durable.
        self.sync_now();
        tracing::info!(segment = self.segment.id(), "wal writer stopped");
    }

    /// Handles one group; returns the shutdown acknowledgement if shutdown was asked.
    fn process_group(&mut self, group: Vec<Command>) -> Option<oneshot::Sender<()>> {
        let mut pending: Vec<PendingAppend> = Vec::new();
        let mut shutdown = None;
        for command in group {
            if shutdown.is_some() {
                // Queued behind the shutdown: dropping the reply channel refuses it.
                continue;
            }
            match command {
                Command::Append {
                    framed,
                    tenant,
                    pieces,
                    done,
                } => match self.segment.append(&framed) {
                    Ok(()) => pending.push(PendingAppend {
                        tenant,
                        pieces,
                        done,
                    }),
                    Err(error) => {
                        let _ = done.send(Err(error));
                    }
                },
                Command::Cut {
                    reason,
                    carry_nothing,
                    done,
                } => {
                    self.commit(std::mem::take(&mut pending));
                    let _ = done.send(self.cut(reason, carry_nothing));
                }
                Command::Barrier(done) => {
                    self.commit(std::mem::take(&mut pending));
                    let _ = done.send(());
                }
                Command::Tick => {
                    if self.unsynced {
                        self.sync_now();
                    }
                }
                Command::Shutdown(done) => shutdown = Some(done),
            }
        }
        self.commit(pending);
        if shutdown.is_some() {
            return shutdown;
        }
        if self.segment.len() >= self.segment_max_bytes {
            if let Err(error) = self.rotate() {
                tracing::error!(%error, "wal segment rotation failed; continuing in the current segment");
            }
        }
        None
    }

    /// Makes appended records durable (per policy), publishes them to the head, acks.
    fn commit(&mut self, pending: Vec<PendingAppend>) {
        if pending.is_empty() {
            return;
        }
        self.unsynced = true;
        let sync_result = match self.fsync {
            FsyncPolicy::Always => self.sync_checked(),
            FsyncPolicy::Interval(interval) if self.last_sync.elapsed() >= interval => {
                self.sync_checked()
            }
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => Ok(()),
        };
        if let Err(error) = sync_result {
            tracing::error!(%error, "wal fsync failed; refusing the affected requests");
            for append in pending {
                let _ = append.done.send(Err(WalError::Io {
                    path: self.wal.path().to_path_buf(),
                    source: std::io::Error::other(error.to_string()),
                }));
            }
            return;
        }
        let now = Instant::now();
        {
            let mut head = self.head.lock();
            for append in &pending {
                head.insert(&append.tenant, append.pieces.clone(), now);
            }
            self.metrics
                .set_head(head.live_traces(), head.total_bytes());
        }
        for append in pending {
            let _ = append.done.send(Ok(()));
        }
    }

    fn sync_checked(&mut self) -> Result<(), WalError> {
        let started = Instant::now();
        self.segment.sync()?;
        self.metrics.observe_fsync(started.elapsed());
        self.last_sync = Instant::now();
        self.unsynced = false;
        Ok(())
    }

    fn sync_now(&mut self) {
        if let Err(error) = self.sync_checked() {
            tracing::error!(%error, "wal fsync failed");
        }
    }

    fn rotate(&mut self) -> Result<(), WalError> {
        self.sync_checked()?;
        let next = self.wal.create_segment(self.segment.id() + 1)?;
        tracing::debug!(
            sealed = self.segment.id(),
            opened = next.id(),
            "wal segment rotated"
        );
        self.segment = next;
        Ok(())
    }

    /// Seals the current segment and partitions the head: idle traces go to the flusher,
    /// live ones are carried into the new segment, then the `Cut` record makes the cut
    /// redoable should the process die before the blocks are durable.
    fn cut(&mut self, reason: CutReason, carry_nothing: bool) -> Result<Option<CutJob>, WalError> {
        if self.head.lock().is_empty() {
            return Ok(None);
        }
        let through_segment = self.segment.id();
        self.rotate()?;
        let partition = self.head.lock().partition_for_cut(
            through_segment,
            Instant::now(),
            self.head_config.trace_idle,
            self.head_config.max_block_duration,
            carry_nothing,
        );
        for (tenant, pieces) in &partition.carried {
            self.segment.append(&frame(&WalRecord::Carry {
                through_segment,
                tenant: tenant.clone(),
                pieces: pieces.clone(),
            }))?;
        }
        self.segment
            .append(&frame(&WalRecord::Cut { through_segment }))?;
        self.sync_checked()?;
        Ok(Some(CutJob { partition, reason }))
    }
}
