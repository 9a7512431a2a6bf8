//! Processors, run in the order a pipeline lists them. Each is a [`Stage`]: it takes a
//! batch and returns the batches to pass on (none, the same, or several), and may hold
//! data until a deadline. New processor types are new variants here.

pub(crate) mod attraction;
pub(crate) mod attributes;
pub(crate) mod batch;
pub(crate) mod memory_limiter;
pub(crate) mod probabilistic;
pub(crate) mod redaction;
pub(crate) mod tail_sampling;

use std::sync::Arc;

use tokio::time::Instant;

use super::batch::SpanBatch;
use super::delivery::fail_all;
use super::metrics::CollectorMetrics;
use crate::config::collector::ProcessorConfig;
use attributes::{AttributesProcessor, ResourceProcessor};
use batch::Batcher;
use memory_limiter::MemoryLimiter;
use probabilistic::ProbabilisticSampler;
use redaction::Redaction;
use tail_sampling::TailSampler;

/// One processor instance in one pipeline.
#[derive(Debug)]
pub(crate) enum Stage {
    Batch(Batcher),
    MemoryLimiter {
        limiter: Arc<MemoryLimiter>,
        metrics: Arc<CollectorMetrics>,
    },
    Attributes(AttributesProcessor),
    Resource(ResourceProcessor),
    Redaction(Redaction),
    ProbabilisticSampler(ProbabilisticSampler),
    TailSampling(TailSampler),
}

impl Stage {
    /// The stage for a processor of which each pipeline gets its own instance; `None`
    /// for `batch` and `memory_limiter`, which the pipeline builder creates itself.
    pub(crate) fn per_pipeline(
        id: &str,
        config: &ProcessorConfig,
        metrics: &Arc<CollectorMetrics>,
    ) -> Option<Stage> {
        match config {
            ProcessorConfig::Batch(_) | ProcessorConfig::MemoryLimiter(_) => None,
            ProcessorConfig::TailSampling(config) => Some(Stage::TailSampling(TailSampler::new(
                id.to_owned(),
                config,
                Arc::clone(metrics),
            ))),
            ProcessorConfig::Attributes(config) => {
                Some(Stage::Attributes(AttributesProcessor::new(config.clone())))
            }
            ProcessorConfig::Resource(config) => {
                Some(Stage::Resource(ResourceProcessor::new(config.clone())))
            }
            ProcessorConfig::Redaction(config) => {
                Some(Stage::Redaction(Redaction::new(config.clone())))
            }
            ProcessorConfig::ProbabilisticSampler(config) => Some(Stage::ProbabilisticSampler(
                ProbabilisticSampler::new(config),
            )),
        }
    }

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
            Stage::Attributes(processor) => {
                let mut batch = batch;
                processor.process(&mut batch);
                vec![batch]
            }
            Stage::Resource(processor) => {
                let mut batch = batch;
                processor.process(&mut batch);
                vec![batch]
            }
            Stage::Redaction(processor) => {
                let mut batch = batch;
                processor.process(&mut batch);
                vec![batch]
            }
            Stage::ProbabilisticSampler(sampler) => sampler.process(batch).into_iter().collect(),
            Stage::TailSampling(sampler) => sampler.push(batch, now),
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        match self {
            Stage::Batch(batcher) => batcher.next_deadline(),
            Stage::TailSampling(sampler) => sampler.next_deadline(),
            _ => None,
        }
    }

    pub(crate) fn flush_due(&mut self, now: Instant) -> Vec<SpanBatch> {
        match self {
            Stage::Batch(batcher) => batcher.flush_due(now),
            Stage::TailSampling(sampler) => sampler.flush_due(now),
            _ => Vec::new(),
        }
    }

    pub(crate) fn flush_all(&mut self) -> Vec<SpanBatch> {
        match self {
            Stage::Batch(batcher) => batcher.flush_all(),
            Stage::TailSampling(sampler) => sampler.flush_all(),
            _ => Vec::new(),
        }
    }
}
