//! `probabilistic_sampler`, mode `hash_seed`: keeps a span when the 32-bit murmur3 hash
//! of its trace ID (seeded with `hash_seed`) falls into the sampled part of 2^14
//! buckets, the OpenTelemetry Collector contrib scheme. The decision depends only on the
//! trace ID, so every span of a trace (in any batch, on any collector of the tier with
//! the same seed) gets the same decision. As in contrib, a span attribute
//! `sampling.priority` overrides the hash: 0 drops, any other number keeps.

use crate::collector::batch::SpanBatch;
use crate::config::collector::ProbabilisticSamplerConfig;
use crate::otlp::{count_spans, OtlpSpan, OtlpValue};

const NUM_HASH_BUCKETS: u32 = 0x4000;
const BUCKET_MASK: u32 = NUM_HASH_BUCKETS - 1;

#[derive(Debug)]
pub(crate) struct ProbabilisticSampler {
    hash_seed: u32,
    /// Buckets below this are sampled.
    scaled_rate: u32,
}

impl ProbabilisticSampler {
    pub(crate) fn new(config: &ProbabilisticSamplerConfig) -> ProbabilisticSampler {
        let scaled = config.sampling_percentage * f64::from(NUM_HASH_BUCKETS) / 100.0;
        ProbabilisticSampler {
            hash_seed: config.hash_seed,
            // Truncation, as contrib's uint32 conversion; 100% covers every bucket.
            scaled_rate: scaled as u32,
        }
    }

    pub(crate) fn keeps_trace(&self, trace_id: &[u8]) -> bool {
        murmur3_32(trace_id, self.hash_seed) & BUCKET_MASK < self.scaled_rate
    }

    fn keeps(&self, span: &OtlpSpan) -> bool {
        let priority = span
            .attributes
            .iter()
            .find(|kv| kv.key == "sampling.priority")
            .and_then(|kv| kv.value.as_ref()?.value.as_ref());
        match priority {
            Some(OtlpValue::IntValue(priority)) => *priority != 0,
            Some(OtlpValue::DoubleValue(priority)) => *priority != 0.0,
            _ => self.keeps_trace(&span.trace_id),
        }
    }

    /// Removes the spans not sampled; `None` when nothing is left (the caller then
    /// commits the acks: dropping by sampling is successful processing).
    pub(crate) fn process(&self, mut batch: SpanBatch) -> Option<SpanBatch> {
        for rs in &mut batch.resource_spans {
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|span| self.keeps(span));
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        batch.resource_spans.retain(|rs| !rs.scope_spans.is_empty());
        batch.num_spans = count_spans(&batch.resource_spans);
        if batch.num_spans == 0 {
            crate::collector::delivery::commit_all(std::mem::take(&mut batch.acks));
            return None;
        }
        Some(batch)
    }
}

/// MurmurHash3 x86 32-bit, the hash contrib uses for trace IDs.
pub(crate) fn murmur3_32(data: &[u8], seed: u32) -> u32 {
    const C1: u32 = 0xcc9e_2d51;
    const C2: u32 = 0x1b87_3593;
    let mut hash = seed;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        hash ^= k;
        hash = hash
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }
    let mut k = 0u32;
    for (index, byte) in tail.iter().enumerate() {
        k |= u32::from(*byte) << (8 * index);
    }
    if !tail.is_empty() {
        k = k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
        hash ^= k;
    }
    hash ^= data.len() as u32;
    hash ^= hash >> 16;
    hash = hash.wrapping_mul(0x85eb_ca6b);
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(0xc2b2_ae35);
    hash ^ (hash >> 16)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn murmur3_matches_reference_vectors() {
        assert_eq!(murmur3_32(b"", 0), 0);
        assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
        assert_eq!(murmur3_32(b"", 0xffff_ffff), 0x81f1_6f39);
        assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
        assert_eq!(murmur3_32(b"Hello, world!", 1234), 0xfaf6_cdb3);
        assert_eq!(
            murmur3_32(&[0x21, 0x43, 0x65, 0x87], 0x5082_edee),
            0x2362_f9de
        );
    }

    fn sampler(percent: f64, seed: u32) -> ProbabilisticSampler {
        ProbabilisticSampler::new(&ProbabilisticSamplerConfig {
            sampling_percentage: percent,
            hash_seed: seed,
        })
    }

    /// Sampled out is processed: the request's ack resolves as success, not failure.
    #[tokio::test]
    async fn fully_sampled_out_batch_acknowledges_success() {
        let (delivery, ack) = crate::collector::delivery::Delivery::new(Vec::new());
        let pieces = crate::testing::make_trace_for_test(3, 4);
        let batch = SpanBatch::new(crate::tenant::TenantId::single(), pieces.batches, vec![ack]);
        assert!(sampler(0.0, 0).process(batch).is_none());
        assert!(delivery.wait().await.is_ok());
    }

    #[test]
    fn rate_is_close_to_percentage_and_bounds_are_exact() {
        let trace_ids: Vec<[u8; 16]> = (0..20_000u64)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
                id[8..].copy_from_slice(&i.to_le_bytes());
                id
            })
            .collect();
        let rate = |sampler: &ProbabilisticSampler| {
            trace_ids
                .iter()
                .filter(|id| sampler.keeps_trace(&id[..]))
                .count() as f64
                / trace_ids.len() as f64
        };
        assert_eq!(rate(&sampler(0.0, 1)), 0.0);
        assert_eq!(rate(&sampler(100.0, 1)), 1.0);
        let observed = rate(&sampler(25.0, 22));
        assert!((observed - 0.25).abs() < 0.02, "observed {observed}");
        // Lower rates sample a subset of higher ones with the same seed.
        let low = sampler(10.0, 5);
        let high = sampler(50.0, 5);
        assert!(trace_ids
            .iter()
            .filter(|id| low.keeps_trace(&id[..]))
            .all(|id| high.keeps_trace(&id[..])));
    }

    #[test]
    fn spans_of_one_trace_share_the_decision_and_dropped_batches_commit() {
        let sampler = sampler(50.0, 7);
        let pieces = crate::testing::make_traces_for_test(0, 40, 5);
        let mut kept_per_trace = std::collections::HashMap::<Vec<u8>, Vec<bool>>::new();
        for rs in pieces.into_iter().flat_map(|trace| trace.batches) {
            let batch = SpanBatch::new(
                crate::tenant::TenantId::single(),
                vec![rs.clone()],
                Vec::new(),
            );
            let all: Vec<Vec<u8>> = rs
                .scope_spans
                .iter()
                .flat_map(|ss| ss.spans.iter().map(|span| span.trace_id.clone()))
                .collect();
            let out = sampler.process(batch);
            for trace_id in all {
                kept_per_trace
                    .entry(trace_id.clone())
                    .or_default()
                    .push(out.is_some());
                assert_eq!(out.is_some(), sampler.keeps_trace(&trace_id));
            }
        }
        assert!(kept_per_trace.values().any(|kept| kept[0]));
        assert!(kept_per_trace.values().any(|kept| !kept[0]));
        for kept in kept_per_trace.values() {
            assert!(kept.iter().all(|k| *k == kept[0]));
        }
    }
}
