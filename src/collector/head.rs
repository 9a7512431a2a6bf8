//! The collector's [`TraceConsumer`]: one per receiver and transport, feeding every
//! pipeline that lists the receiver.
//!
//! A request is admitted only if every pipeline has room (reserved up front, so a
//! request is either in all of its pipelines or in none), then answered once every
//! exporter queue of every pipeline holds it (see [`super::delivery`]). A refusal
//! anywhere becomes the client's answer: RESOURCE_EXHAUSTED / 429 with a retry delay
//! when something is full, so the client retries instead of losing data.

use std::sync::Arc;

use tracing::debug;

use super::batch::SpanBatch;
use super::delivery::Delivery;
use super::metrics::CollectorMetrics;
use super::pipeline::PipelineHead;
use crate::otlp::count_spans;
use crate::otlp::OtlpResourceSpans;
use crate::receiver::{Accepted, ConsumeError, TraceBatch, TraceConsumer};

/// Requests with more spans than this are copied on the blocking pool when a receiver
/// feeds several pipelines (a copy of a large request takes well over the ~500 µs an
/// async worker may be blocked).
const INLINE_COPY_MAX_SPANS: usize = 1024;

#[derive(Debug)]
pub(crate) struct ReceiverConsumer {
    receiver: String,
    transport: &'static str,
    heads: Vec<PipelineHead>,
    metrics: Arc<CollectorMetrics>,
}

impl ReceiverConsumer {
    pub(crate) fn new(
        receiver: String,
        transport: &'static str,
        heads: Vec<PipelineHead>,
        metrics: Arc<CollectorMetrics>,
    ) -> ReceiverConsumer {
        debug_assert!(!heads.is_empty(), "a receiver feeds at least one pipeline");
        ReceiverConsumer {
            receiver,
            transport,
            heads,
            metrics,
        }
    }

    fn refused(&self, num_spans: usize, error: ConsumeError) -> ConsumeError {
        self.metrics
            .receiver_refused(&self.receiver, self.transport, num_spans);
        debug!(
            receiver = %self.receiver,
            transport = self.transport,
            num_spans,
            %error,
            "request refused"
        );
        error
    }
}

#[async_trait::async_trait]
impl TraceConsumer for ReceiverConsumer {
    async fn consume(&self, batch: TraceBatch) -> Result<Accepted, ConsumeError> {
        let num_spans = count_spans(&batch.resource_spans);
        let mut reservations = Vec::with_capacity(self.heads.len());
        for head in &self.heads {
            match head.reserve(batch.num_bytes) {
                Ok(reservation) => reservations.push(reservation),
                Err(error) => {
                    debug!(pipeline = head.id(), "pipeline has no room");
                    return Err(self.refused(num_spans, error));
                }
            }
        }
        let (slots, permits): (Vec<_>, Vec<_>) = reservations
            .into_iter()
            .map(|reservation| (reservation.slot, reservation.bytes))
            .unzip();
        let (delivery, ack) = Delivery::new(permits);
        let Some(copies) = copies_for(batch.resource_spans, slots.len(), num_spans).await else {
            return Err(self.refused(num_spans, ConsumeError::Closed));
        };
        debug_assert_eq!(copies.len(), slots.len());
        for (slot, spans) in slots.into_iter().zip(copies) {
            slot.send(SpanBatch {
                tenant: batch.tenant.clone(),
                resource_spans: spans,
                num_spans,
                acks: vec![ack.clone()],
            });
        }
        ack.commit();
        match delivery.wait().await {
            Ok(()) => {
                self.metrics
                    .receiver_accepted(&self.receiver, self.transport, num_spans);
                Ok(Accepted::default())
            }
            Err(error) => Err(self.refused(num_spans, error)),
        }
    }
}

/// `count` copies of the request's spans (the original is the last one); `None` only
/// when the blocking pool is shutting down.
async fn copies_for(
    resource_spans: Vec<OtlpResourceSpans>,
    count: usize,
    num_spans: usize,
) -> Option<Vec<Vec<OtlpResourceSpans>>> {
    let make = move || {
        let mut copies = Vec::with_capacity(count);
        for _ in 1..count {
            copies.push(resource_spans.clone());
        }
        copies.push(resource_spans);
        copies
    };
    if count <= 1 || num_spans <= INLINE_COPY_MAX_SPANS {
        return Some(make());
    }
    tokio::task::spawn_blocking(make).await.ok()
}
