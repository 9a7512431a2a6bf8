//! `batch`: groups spans into larger batches, per tenant, and splits batches above
//! `send_batch_max_size`.
//!
//! A tenant's batch is sent as soon as it holds `send_batch_size` spans (in pieces of at
//! most `send_batch_max_size`), or `timeout` after its first span arrived, whichever
//! comes first. Tenants are never mixed: the tenant travels with the batch to the
//! exporter's `x-scope-orgid`. The number of tenants batched at once is bounded by
//! `metadata_cardinality_limit`; beyond it new tenants are refused (retryable) until a
//! batch is sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::collector::batch::SpanBatch;
use crate::collector::delivery::fail_all;
use crate::collector::metrics::CollectorMetrics;
use crate::config::collector::BatchConfig;
use crate::receiver::ConsumeError;
use crate::tenant::TenantId;

#[derive(Debug)]
struct Pending {
    batch: SpanBatch,
    /// When the batch goes out regardless of its size.
    deadline: Instant,
}

/// One pipeline's instance of a `batch` processor.
#[derive(Debug)]
pub(crate) struct Batcher {
    id: String,
    config: BatchConfig,
    pending: HashMap<TenantId, Pending>,
    metrics: Arc<CollectorMetrics>,
}

impl Batcher {
    pub(crate) fn new(id: String, config: BatchConfig, metrics: Arc<CollectorMetrics>) -> Batcher {
        Batcher {
            id,
            config,
            pending: HashMap::new(),
            metrics,
        }
    }

    /// The size at which a batch is sent without waiting.
    fn trigger_size(&self) -> Option<usize> {
        self.config
            .send_batch_size
            .or(self.config.send_batch_max_size)
    }

    /// Adds a batch; returns the batches that are ready now.
    pub(crate) fn push(&mut self, batch: SpanBatch, now: Instant) -> Vec<SpanBatch> {
        if batch.num_spans == 0 {
            crate::collector::delivery::commit_all(batch.acks);
            return Vec::new();
        }
        if self.config.timeout.is_zero() {
            let mut out = Vec::new();
            self.split_into(batch, false, &mut out);
            return out;
        }
        if !self.pending.contains_key(&batch.tenant)
            && self.pending.len() >= self.config.max_tenants
        {
            self.metrics.processor_refused(&self.id, batch.num_spans);
            fail_all(
                batch.acks,
                &ConsumeError::Full {
                    what: "batch processor (too many tenants at once)",
                    retry_after: self.config.timeout.max(Duration::from_secs(1)),
                },
            );
            return Vec::new();
        }
        let tenant = batch.tenant.clone();
        let timeout = self.config.timeout;
        let trigger = self.trigger_size();
        let max_size = self.config.send_batch_max_size;
        let pending = match self.pending.entry(tenant.clone()) {
            std::collections::hash_map::Entry::Occupied(entry) => {
                let pending = entry.into_mut();
                pending.batch.absorb(batch);
                pending
            }
            std::collections::hash_map::Entry::Vacant(entry) => entry.insert(Pending {
                batch,
                deadline: now + timeout,
            }),
        };
        let Some(trigger) = trigger else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while pending.batch.num_spans >= trigger {
            let take = match max_size {
                Some(max) => max.min(pending.batch.num_spans),
                None => pending.batch.num_spans,
            };
            let piece = pending.batch.split_off_front(take);
            self.metrics.batch_sent(&self.id, piece.num_spans, false);
            out.push(piece);
        }
        if pending.batch.num_spans == 0 {
            if let Some(emptied) = self.pending.remove(&tenant) {
                crate::collector::delivery::commit_all(emptied.batch.acks);
            }
        }
        out
    }

    /// The earliest moment a pending batch must go out.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.pending.values().map(|pending| pending.deadline).min()
    }

    /// Takes out every batch whose timeout has passed.
    pub(crate) fn flush_due(&mut self, now: Instant) -> Vec<SpanBatch> {
        let due: Vec<TenantId> = self
            .pending
            .iter()
            .filter(|(_, pending)| pending.deadline <= now)
            .map(|(tenant, _)| tenant.clone())
            .collect();
        let mut out = Vec::new();
        for tenant in due {
            if let Some(pending) = self.pending.remove(&tenant) {
                self.split_into(pending.batch, true, &mut out);
            }
        }
        out
    }

    /// Takes out everything (shutdown).
    pub(crate) fn flush_all(&mut self) -> Vec<SpanBatch> {
        let mut out = Vec::new();
        let all: Vec<Pending> = self.pending.drain().map(|(_, pending)| pending).collect();
        for pending in all {
            self.split_into(pending.batch, true, &mut out);
        }
        out
    }

    /// Sends `batch` in pieces of at most `send_batch_max_size`.
    fn split_into(&self, mut batch: SpanBatch, by_timeout: bool, out: &mut Vec<SpanBatch>) {
        if let Some(max) = self.config.send_batch_max_size {
            while batch.num_spans > max {
                let piece = batch.split_off_front(max);
                self.metrics
                    .batch_sent(&self.id, piece.num_spans, by_timeout);
                out.push(piece);
            }
        }
        if batch.num_spans > 0 {
            self.metrics
                .batch_sent(&self.id, batch.num_spans, by_timeout);
            out.push(batch);
        } else {
            crate::collector::delivery::commit_all(batch.acks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::delivery::{commit_all, Delivery};
    use crate::otlp::{OtlpResourceSpans, OtlpScopeSpans, OtlpSpan};

    fn spans(n: usize) -> Vec<OtlpResourceSpans> {
        vec![OtlpResourceSpans {
            resource: None,
            scope_spans: vec![OtlpScopeSpans {
                scope: None,
                spans: vec![OtlpSpan::default(); n],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }]
    }

    fn batch(tenant: &str, n: usize) -> (Delivery, SpanBatch) {
        let (delivery, ack) = Delivery::new(Vec::new());
        let tenant = TenantId::new(tenant).expect("tenant");
        (delivery, SpanBatch::new(tenant, spans(n), vec![ack]))
    }

    fn batcher(size: usize, max: Option<usize>, timeout_ms: u64, max_tenants: usize) -> Batcher {
        Batcher::new(
            "batch".into(),
            BatchConfig {
                send_batch_size: Some(size),
                send_batch_max_size: max,
                timeout: Duration::from_millis(timeout_ms),
                max_tenants,
            },
            Arc::new(CollectorMetrics::new()),
        )
    }

    fn sizes(batches: &[SpanBatch]) -> Vec<usize> {
        batches.iter().map(|batch| batch.num_spans).collect()
    }

    fn settle(batches: Vec<SpanBatch>) {
        for batch in batches {
            commit_all(batch.acks);
        }
    }

    #[tokio::test]
    async fn sends_at_size_splits_at_max_and_waits_for_timeout() {
        let mut batcher = batcher(10, Some(15), 200, 10);
        let now = Instant::now();
        let (d1, b1) = batch("a", 6);
        assert!(batcher.push(b1, now).is_empty());
        assert_eq!(
            batcher.next_deadline(),
            Some(now + Duration::from_millis(200))
        );
        let (d2, b2) = batch("a", 30);
        let out = batcher.push(b2, now);
        // 36 spans: two pieces of 15 go out, 6 wait (below send_batch_size).
        assert_eq!(sizes(&out), vec![15, 15]);
        settle(out);
        assert!(batcher
            .flush_due(now + Duration::from_millis(199))
            .is_empty());
        let late = batcher.flush_due(now + Duration::from_millis(200));
        assert_eq!(sizes(&late), vec![6]);
        settle(late);
        assert_eq!(batcher.next_deadline(), None);
        assert!(d1.wait().await.is_ok());
        assert!(d2.wait().await.is_ok());
    }

    #[tokio::test]
    async fn tenants_are_never_mixed_and_bounded() {
        let mut batcher = batcher(100, None, 200, 2);
        let now = Instant::now();
        let (_da, a) = batch("a", 1);
        let (_db, b) = batch("b", 1);
        let (dc, c) = batch("c", 1);
        assert!(batcher.push(a, now).is_empty());
        assert!(batcher.push(b, now).is_empty());
        assert!(batcher.push(c, now).is_empty());
        assert!(matches!(dc.wait().await, Err(ConsumeError::Full { .. })));
        let out = batcher.flush_all();
        let mut tenants: Vec<&str> = out.iter().map(|batch| batch.tenant.as_str()).collect();
        tenants.sort_unstable();
        assert_eq!(tenants, vec!["a", "b"]);
        settle(out);
    }

    #[tokio::test]
    async fn a_request_is_acknowledged_only_when_all_its_pieces_are() {
        let mut batcher = batcher(4, Some(4), 200, 10);
        let now = Instant::now();
        let (delivery, b) = batch("a", 6);
        let mut out = batcher.push(b, now);
        assert_eq!(sizes(&out), vec![4]);
        settle(std::mem::take(&mut out));
        let mut waiting = Box::pin(delivery.wait());
        assert!(futures::poll!(&mut waiting).is_pending());
        settle(batcher.flush_all());
        assert!(waiting.await.is_ok());
    }

    #[tokio::test]
    async fn zero_timeout_sends_immediately() {
        let mut batcher = batcher(100, Some(3), 0, 10);
        let (_d, b) = batch("a", 7);
        let out = batcher.push(b, Instant::now());
        assert_eq!(sizes(&out), vec![3, 3, 1]);
        settle(out);
    }
}
