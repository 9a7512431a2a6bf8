//! Sending queues: in memory ([`memory`]) or on disk ([`persistent`]), behind one enum.

pub(crate) mod memory;
pub(crate) mod persistent;

use std::path::PathBuf;
use std::sync::Arc;

use tracing::info;

use super::delivery::AckRef;
use super::exporters::{Payload, QueueItem};
use super::metrics::CollectorMetrics;
use crate::config::collector::{QueueConfig, QueueSizer};
use crate::receiver::ConsumeError;
use crate::tenant::TenantId;
use memory::MemoryQueue;
use persistent::{PersistentQueue, QueueLimits};

#[derive(Debug, thiserror::Error)]
pub(crate) enum QueueError {
    #[error("persistent queue {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a spoor queue segment (bad magic); move it out of the queue directory", path.display())]
    Foreign { path: PathBuf },
    #[error("{} has queue format version {version}, which this spoor-collector cannot read", path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("opening the persistent queue failed: {0}")]
    Task(String),
}

/// A batch handed to a consumer.
#[derive(Debug)]
pub(crate) struct Dispatched {
    pub(crate) tenant: TenantId,
    pub(crate) payload: Payload,
    pub(crate) num_spans: usize,
    /// Receiver acks still waiting for the export (`wait_for_result`, disabled queue).
    pub(crate) deferred_acks: Vec<AckRef>,
    /// Where the batch lives on disk (persistent queues).
    pub(crate) persistent: Option<persistent::Entry>,
}

/// What a memory queue still held when the shutdown deadline passed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dropped {
    pub(crate) num_batches: usize,
    pub(crate) num_spans: usize,
}

#[derive(Debug)]
pub(crate) enum SendingQueue {
    Memory(MemoryQueue),
    Persistent(PersistentQueue),
}

impl SendingQueue {
    pub(crate) async fn open(
        exporter: &str,
        config: &QueueConfig,
        metrics: Arc<CollectorMetrics>,
    ) -> Result<SendingQueue, QueueError> {
        let Some(persistent) = &config.persistent else {
            return Ok(SendingQueue::Memory(MemoryQueue::new(
                exporter, config, metrics,
            )));
        };
        let limits = QueueLimits {
            max_bytes: match config.sizer {
                QueueSizer::Bytes => persistent.max_bytes.min(config.queue_size),
                _ => persistent.max_bytes,
            },
            max_count: match config.sizer {
                QueueSizer::Bytes => None,
                sizer => Some((sizer, config.queue_size)),
            },
        };
        let exporter_id = exporter.to_owned();
        let persistent = persistent.clone();
        let (queue, recovered) = tokio::task::spawn_blocking(move || {
            PersistentQueue::open(&exporter_id, &persistent, limits, metrics)
        })
        .await
        .map_err(|error| QueueError::Task(error.to_string()))??;
        info!(
            exporter,
            directory = %queue.directory().display(),
            pending_batches = recovered.pending_batches,
            pending_spans = recovered.pending_spans,
            damaged_bytes = recovered.damaged_bytes,
            "persistent queue opened"
        );
        Ok(SendingQueue::Persistent(queue))
    }

    pub(crate) fn is_persistent(&self) -> bool {
        matches!(self, SendingQueue::Persistent(_))
    }

    pub(crate) async fn push(&self, item: QueueItem) -> Result<(), (ConsumeError, Vec<AckRef>)> {
        match self {
            SendingQueue::Memory(queue) => queue.push(item).await,
            SendingQueue::Persistent(queue) => queue.push(item).await,
        }
    }

    pub(crate) async fn next(&self) -> Option<Dispatched> {
        match self {
            SendingQueue::Memory(queue) => queue.next().await,
            SendingQueue::Persistent(queue) => queue.next().await,
        }
    }

    /// The batch is finished with (sent, or dropped for good): remove it; returns the
    /// acks still waiting for this outcome.
    pub(crate) async fn done(&self, item: Dispatched) -> Vec<AckRef> {
        if let (SendingQueue::Persistent(queue), Some(entry)) = (self, &item.persistent) {
            queue.sent(entry).await;
        }
        item.deferred_acks
    }

    /// Tries the batch again later (persistent queues).
    pub(crate) fn requeue(&self, item: Dispatched) {
        if let (SendingQueue::Persistent(queue), Some(entry)) = (self, item.persistent) {
            queue.requeue(entry);
        }
    }

    /// Leaves the batch where it is (persistent queues at shutdown: it stays on disk).
    pub(crate) fn release(&self, item: Dispatched) {
        drop(item);
    }

    pub(crate) fn close(&self) {
        match self {
            SendingQueue::Memory(queue) => queue.close(),
            SendingQueue::Persistent(queue) => queue.close(),
        }
    }

    /// Whether no batch waits for a consumer, counting batches pushed before the call
    /// (not those consumers hold).
    pub(crate) async fn is_empty(&self) -> bool {
        match self {
            SendingQueue::Memory(queue) => queue.is_empty(),
            SendingQueue::Persistent(queue) => {
                // The writer answers a barrier after committing the appends sent before
                // it, so those are pending by then.
                queue.probe().await;
                queue.is_empty()
            }
        }
    }

    pub(crate) async fn probe(&self) -> bool {
        match self {
            SendingQueue::Memory(_) => true,
            SendingQueue::Persistent(queue) => queue.probe().await,
        }
    }

    /// Stops the queue; for a memory queue, returns what could not be sent.
    pub(crate) async fn shutdown(&self) -> Dropped {
        match self {
            SendingQueue::Memory(queue) => queue.drain(),
            SendingQueue::Persistent(queue) => {
                queue.shutdown().await;
                Dropped::default()
            }
        }
    }
}
