//! Processors, run in the order a pipeline lists them. Each is a [`Stage`]: it takes a
//! batch and returns the batches to pass on (none, the same, or several), and may hold
//! data until a deadline. New processor types are new variants here.

pub(crate) mod batch;
pub(crate) mod memory_limiter;

use std::sync::Arc;

use tokio::time::Instant;

use super::batch::SpanBatch;
use super::delivery::fail_all;
use super::metrics::CollectorMetrics;
use batch::Batcher;
use memory_limiter::MemoryLimiter;

/// One processor instance in one pipeline.
#[derive(Debug)]
pub(crate) enum Stage {
    Batch(Batcher),
    MemoryLimiter {
        limiter: Arc<MemoryLimiter>,
        metrics: Arc<CollectorMetrics>,
    },
}

impl Stage {
    pub(crate) fn push(&mut self, batch: SpanBatch, now: Instant) -> Vec<SpanBatch> {
        match self {
            Stage::Batch(batcher) => batcher.push(batch, now),
            Stage::MemoryLimiter { limiter, metrics } => match limiter.admit() {
                Ok(()) => vec![batch],
                Err(refusal) => {
                    metrics.processor_refused(limiter.id(), batch.num_spans);
                    fail_all(batch.acks, &refusal);
                    Vec::new()
                }
            },
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match self {
            Stage::Batch(batcher) => batcher.next_deadline(),
            Stage::MemoryLimiter { .. } => None,
        }
    }

    pub(crate) fn flush_due(&mut self, now: Instant) -> Vec<SpanBatch> {
        match self {
            Stage::Batch(batcher) => batcher.flush_due(now),
            Stage::MemoryLimiter { .. } => Vec::new(),
        }
    }

    pub(crate) fn flush_all(&mut self) -> Vec<SpanBatch> {
        match self {
            Stage::Batch(batcher) => batcher.flush_all(),
            Stage::MemoryLimiter { .. } => Vec::new(),
        }
    }
}
