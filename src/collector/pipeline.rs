//! One traces pipeline: a bounded input channel, its processors in order, and fan-out to
//! its exporters' queues. One task per pipeline owns the processors' state, so no
//! processor needs a lock.
//!
//! Admission happens at the head ([`PipelineHead::reserve`]), before anything is queued:
//! the pipeline's memory limiters, its in-flight bytes (everything between the receiver
//! and the exporters' queues, released when the request is settled) and a slot in the
//! input channel. Any of them full → the receiver answers RESOURCE_EXHAUSTED / 429.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info};

use super::batch::SpanBatch;
use super::exporters::{ExporterRuntime, QueueItem};
use super::processors::memory_limiter::MemoryLimiter;
use super::processors::Stage;
use crate::receiver::ConsumeError;

/// Batches waiting at a pipeline's input. Memory is bounded by the in-flight bytes; this
/// bounds how many requests can be queued ahead of the processors.
pub(crate) const PIPELINE_INPUT_CAPACITY: usize = 1024;
/// Encoded request bytes in a pipeline at once, from the receiver until every exporter
/// queue holds them (decoded spans take a few times this in memory). Beyond it,
/// receivers answer RESOURCE_EXHAUSTED / 429.
pub(crate) const PIPELINE_MAX_INFLIGHT_BYTES: usize = 64 << 20;
/// In-flight accounting granularity (semaphore permits).
const PERMIT_BYTES: usize = 1024;
/// The delay suggested to clients refused because a pipeline is full.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long the watchdog waits for a pipeline task to answer.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// The receiving end's handle on a pipeline.
#[derive(Debug, Clone)]
pub(crate) struct PipelineHead {
    id: String,
    input: mpsc::Sender<SpanBatch>,
    inflight: Arc<Semaphore>,
    limiters: Vec<Arc<MemoryLimiter>>,
}

/// Room reserved in a pipeline for one request.
#[derive(Debug)]
pub(crate) struct Reservation {
    pub(crate) slot: mpsc::OwnedPermit<SpanBatch>,
    pub(crate) bytes: OwnedSemaphorePermit,
}

impl PipelineHead {
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Reserves room for a request of `num_bytes`, or says why there is none.
    pub(crate) fn reserve(&self, num_bytes: usize) -> Result<Reservation, ConsumeError> {
        for limiter in &self.limiters {
            limiter.admit()?;
        }
        let full = || ConsumeError::Full {
            what: "pipeline",
            retry_after: FULL_RETRY_AFTER,
        };
        // A request larger than the whole allowance still passes when the pipeline is
        // idle, rather than never.
        let permits = num_bytes
            .div_ceil(PERMIT_BYTES)
            .clamp(1, PIPELINE_MAX_INFLIGHT_BYTES / PERMIT_BYTES);
        let bytes = Arc::clone(&self.inflight)
            .try_acquire_many_owned(u32::try_from(permits).unwrap_or(u32::MAX))
            .map_err(|error| match error {
                tokio::sync::TryAcquireError::Closed => ConsumeError::Closed,
                tokio::sync::TryAcquireError::NoPermits => full(),
            })?;
        let slot = self
            .input
            .clone()
            .try_reserve_owned()
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => full(),
                mpsc::error::TrySendError::Closed(_) => ConsumeError::Closed,
            })?;
        Ok(Reservation { slot, bytes })
    }
}

/// What the watchdog checks.
#[derive(Debug, Clone)]
pub(crate) struct PipelineProbe {
    id: String,
    ping: mpsc::Sender<oneshot::Sender<()>>,
    /// Set while the task waits for room in an exporter queue (`block_on_overflow`):
    /// waiting on a slow backend is not being stuck.
    in_backpressure: Arc<AtomicBool>,
}

impl PipelineProbe {
    pub(crate) async fn alive(&self) -> bool {
        let (answer, answered) = oneshot::channel();
        let answered_in_time = match self.ping.try_send(answer) {
            Ok(()) => matches!(
                tokio::time::timeout(PING_TIMEOUT, answered).await,
                Ok(Ok(()))
            ),
            Err(_) => false,
        };
        let alive = answered_in_time || self.in_backpressure.load(Ordering::Relaxed);
        if !alive {
            debug!(pipeline = %self.id, "pipeline did not answer the watchdog probe");
        }
        alive
    }
}

/// A running pipeline task.
#[derive(Debug)]
pub(crate) struct RunningPipeline {
    pub(crate) head: PipelineHead,
    pub(crate) probe: PipelineProbe,
    pub(crate) task: JoinHandle<()>,
}

struct Pipeline {
    id: String,
    stages: Vec<Stage>,
    exporters: Vec<Arc<ExporterRuntime>>,
    input: mpsc::Receiver<SpanBatch>,
    pings: mpsc::Receiver<oneshot::Sender<()>>,
    in_backpressure: Arc<AtomicBool>,
}

/// Starts a pipeline task.
pub(crate) fn spawn_pipeline(
    id: String,
    stages: Vec<Stage>,
    limiters: Vec<Arc<MemoryLimiter>>,
    exporters: Vec<Arc<ExporterRuntime>>,
) -> RunningPipeline {
    let (input_tx, input) = mpsc::channel(PIPELINE_INPUT_CAPACITY);
    // One ping at a time: a second probe while one is unanswered fails fast.
    let (ping_tx, pings) = mpsc::channel(1);
    let in_backpressure = Arc::new(AtomicBool::new(false));
    let pipeline = Pipeline {
        id: id.clone(),
        stages,
        exporters,
        input,
        pings,
        in_backpressure: Arc::clone(&in_backpressure),
    };
    let task = tokio::spawn(pipeline.run());
    RunningPipeline {
        head: PipelineHead {
            id: id.clone(),
            input: input_tx,
            inflight: Arc::new(Semaphore::new(PIPELINE_MAX_INFLIGHT_BYTES / PERMIT_BYTES)),
            limiters,
        },
        probe: PipelineProbe {
            id,
            ping: ping_tx,
            in_backpressure,
        },
        task,
    }
}

impl Pipeline {
    async fn run(mut self) {
        loop {
            let deadline = self.stages.iter().filter_map(Stage::next_deadline).min();
            tokio::select! {
                biased;
                Some(answer) = self.pings.recv() => {
                    let _ = answer.send(());
                }
                received = self.input.recv() => match received {
                    Some(batch) => self.process_from(0, vec![batch]).await,
                    None => break,
                },
                _ = sleep_until_opt(deadline), if deadline.is_some() => {
                    self.flush_due(Instant::now()).await;
                }
            }
        }
        // Every receiver is gone: send out what the processors still hold.
        for index in 0..self.stages.len() {
            let held = self.stages[index].flush_all();
            if !held.is_empty() {
                self.process_from(index + 1, held).await;
            }
        }
        info!(pipeline = %self.id, "pipeline drained");
    }

    async fn flush_due(&mut self, now: Instant) {
        for index in 0..self.stages.len() {
            let due = self.stages[index].flush_due(now);
            if !due.is_empty() {
                self.process_from(index + 1, due).await;
            }
        }
    }

    /// Runs batches through the stages from `start` on, then to the exporters.
    async fn process_from(&mut self, start: usize, batches: Vec<SpanBatch>) {
        let now = Instant::now();
        let mut current = batches;
        for stage in &mut self.stages[start..] {
            let mut next = Vec::with_capacity(current.len());
            for batch in current {
                next.extend(stage.push(batch, now));
            }
            current = next;
            if current.is_empty() {
                return;
            }
        }
        for batch in current {
            self.fan_out(batch).await;
        }
    }

    /// Hands the batch to every exporter; the spans are shared, each exporter holds its
    /// own acks.
    async fn fan_out(&self, batch: SpanBatch) {
        let Some((last, others)) = self.exporters.split_last() else {
            crate::collector::delivery::commit_all(batch.acks);
            return;
        };
        self.in_backpressure.store(true, Ordering::Relaxed);
        let spans = Arc::new(batch.resource_spans);
        for exporter in others {
            exporter
                .enqueue_item(QueueItem {
                    tenant: batch.tenant.clone(),
                    spans: Arc::clone(&spans),
                    num_spans: batch.num_spans,
                    acks: batch.acks.clone(),
                })
                .await;
        }
        last.enqueue_item(QueueItem {
            tenant: batch.tenant,
            spans,
            num_spans: batch.num_spans,
            acks: batch.acks,
        })
        .await;
        self.in_backpressure.store(false, Ordering::Relaxed);
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
