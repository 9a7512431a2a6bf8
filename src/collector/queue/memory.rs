//! The in-memory sending queue: bounded by `queue_size` in the sizer's units. Full →
//! the batch is refused (the receiver answers RESOURCE_EXHAUSTED / 429), or with
//! `block_on_overflow` the pipeline waits for room. Lost on a crash, like the
//! OpenTelemetry Collector's memory queue; use a persistent queue where that matters.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::{Dispatched, Dropped};
use crate::collector::delivery::{commit_all, AckRef};
use crate::collector::exporters::{encoded_request_len, Payload, QueueItem};
use crate::collector::metrics::CollectorMetrics;
use crate::config::collector::{QueueConfig, QueueSizer};
use crate::receiver::ConsumeError;

/// The delay suggested to clients refused because this queue is full.
const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct State {
    items: VecDeque<(QueueItem, u64)>,
    used: u64,
    closed: bool,
}

#[derive(Debug)]
pub(crate) struct MemoryQueue {
    exporter: String,
    capacity: u64,
    sizer: QueueSizer,
    block_on_overflow: bool,
    /// Acknowledge receivers only after the export (`wait_for_result`, or no queue).
    defer_acks: bool,
    state: Mutex<State>,
    item_ready: Notify,
    space_ready: Notify,
    metrics: Arc<CollectorMetrics>,
}

impl MemoryQueue {
    pub(crate) fn new(
        exporter: &str,
        config: &QueueConfig,
        metrics: Arc<CollectorMetrics>,
    ) -> MemoryQueue {
        // A disabled queue is a hand-off: at most one batch per consumer waits, and the
        // pipeline blocks until a consumer takes it and the export finishes.
        let (capacity, sizer, block_on_overflow, defer_acks) = if config.enabled {
            (
                config.queue_size,
                config.sizer,
                config.block_on_overflow,
                config.wait_for_result,
            )
        } else {
            (
                config.num_consumers as u64,
                QueueSizer::Requests,
                true,
                true,
            )
        };
        metrics.set_queue_capacity(exporter, capacity);
        metrics.set_queue_size(exporter, 0);
        MemoryQueue {
            exporter: exporter.to_owned(),
            capacity,
            sizer,
            block_on_overflow,
            defer_acks,
            state: Mutex::new(State {
                items: VecDeque::new(),
                used: 0,
                closed: false,
            }),
            item_ready: Notify::new(),
            space_ready: Notify::new(),
            metrics,
        }
    }

    fn measure(&self, item: &QueueItem) -> u64 {
        match self.sizer {
            QueueSizer::Requests => 1,
            QueueSizer::Items => item.num_spans as u64,
            QueueSizer::Bytes => encoded_request_len(&item.spans) as u64,
        }
    }

    pub(crate) async fn push(
        &self,
        mut item: QueueItem,
    ) -> Result<(), (ConsumeError, Vec<AckRef>)> {
        let size = self.measure(&item);
        loop {
            // Created before the check so a wake-up between check and wait is not lost.
            let space = self.space_ready.notified();
            {
                let mut state = self.state.lock();
                if state.closed {
                    return Err((ConsumeError::Closed, std::mem::take(&mut item.acks)));
                }
                // An item larger than the whole queue still goes in when the queue is
                // empty; otherwise it could never be sent.
                if state.used + size <= self.capacity || state.items.is_empty() {
                    if !self.defer_acks {
                        commit_all(std::mem::take(&mut item.acks));
                    }
                    state.used += size;
                    state.items.push_back((item, size));
                    self.metrics.set_queue_size(&self.exporter, state.used);
                    drop(state);
                    self.item_ready.notify_one();
                    return Ok(());
                }
                if !self.block_on_overflow {
                    return Err((
                        ConsumeError::Full {
                            what: "sending queue",
                            retry_after: FULL_RETRY_AFTER,
                        },
                        std::mem::take(&mut item.acks),
                    ));
                }
            }
            space.await;
        }
    }

    /// The next batch; `None` once the queue is closed and empty.
    pub(crate) async fn next(&self) -> Option<Dispatched> {
        loop {
            let ready = self.item_ready.notified();
            {
                let mut state = self.state.lock();
                if let Some((item, size)) = state.items.pop_front() {
                    state.used -= size;
                    self.metrics.set_queue_size(&self.exporter, state.used);
                    drop(state);
                    self.space_ready.notify_waiters();
                    return Some(Dispatched {
                        tenant: item.tenant,
                        payload: Payload::Spans(item.spans),
                        num_spans: item.num_spans,
                        deferred_acks: item.acks,
                        persistent: None,
                    });
                }
                if state.closed {
                    return None;
                }
            }
            ready.await;
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.state.lock().items.is_empty()
    }

    /// Refuses new batches; consumers still drain what is queued.
    pub(crate) fn close(&self) {
        self.state.lock().closed = true;
        self.item_ready.notify_waiters();
        self.space_ready.notify_waiters();
    }

    /// What is left after the consumers stopped.
    pub(crate) fn drain(&self) -> Dropped {
        let mut state = self.state.lock();
        let mut dropped = Dropped::default();
        for (item, _) in state.items.drain(..) {
            dropped.num_batches += 1;
            dropped.num_spans += item.num_spans;
        }
        state.used = 0;
        self.metrics.set_queue_size(&self.exporter, 0);
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::delivery::Delivery;
    use crate::tenant::TenantId;

    fn item(num_spans: usize) -> (Delivery, QueueItem) {
        let (delivery, ack) = Delivery::new(Vec::new());
        (
            delivery,
            QueueItem {
                tenant: TenantId::single(),
                spans: Arc::new(Vec::new()),
                num_spans,
                acks: vec![ack],
            },
        )
    }

    fn config(queue_size: u64, sizer: QueueSizer) -> QueueConfig {
        QueueConfig {
            enabled: true,
            num_consumers: 1,
            queue_size,
            sizer,
            block_on_overflow: false,
            wait_for_result: false,
            persistent: None,
        }
    }

    #[tokio::test]
    async fn refuses_exactly_at_capacity_and_acks_on_enqueue() {
        let queue = MemoryQueue::new(
            "otlp",
            &config(10, QueueSizer::Items),
            Arc::new(CollectorMetrics::new()),
        );
        let (d1, i1) = item(6);
        let (d2, i2) = item(4);
        let (d3, i3) = item(1);
        assert!(queue.push(i1).await.is_ok());
        assert!(queue.push(i2).await.is_ok());
        let (refusal, acks) = queue.push(i3).await.expect_err("full at 10 items");
        assert!(matches!(
            refusal,
            ConsumeError::Full {
                what: "sending queue",
                ..
            }
        ));
        crate::collector::delivery::fail_all(acks, &refusal);
        assert!(d1.wait().await.is_ok());
        assert!(d2.wait().await.is_ok());
        assert!(d3.wait().await.is_err());
        let first = queue.next().await.expect("item");
        assert_eq!(first.num_spans, 6);
        // Room again for one more span.
        let (_d4, i4) = item(1);
        assert!(queue.push(i4).await.is_ok());
        queue.close();
        assert_eq!(queue.next().await.map(|d| d.num_spans), Some(4));
        assert_eq!(queue.next().await.map(|d| d.num_spans), Some(1));
        assert!(queue.next().await.is_none());
    }

    #[tokio::test]
    async fn a_disabled_queue_hands_off_and_acks_after_export() {
        let mut disabled = config(1000, QueueSizer::Requests);
        disabled.enabled = false;
        let queue = Arc::new(MemoryQueue::new(
            "otlp",
            &disabled,
            Arc::new(CollectorMetrics::new()),
        ));
        let (delivery, first) = item(1);
        queue.push(first).await.expect("room for one");
        let (_d, second) = item(1);
        let blocked = {
            let queue = Arc::clone(&queue);
            tokio::spawn(async move { queue.push(second).await.is_ok() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !blocked.is_finished(),
            "the second push waits for a consumer"
        );
        let dispatched = queue.next().await.expect("item");
        assert_eq!(dispatched.deferred_acks.len(), 1);
        assert!(blocked.await.expect("task"));
        commit_all(dispatched.deferred_acks);
        assert!(delivery.wait().await.is_ok());
    }
}
