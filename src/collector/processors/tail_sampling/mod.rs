//! `tail_sampling`: holds each trace's spans until `decision_wait` after its first span
//! arrived, then evaluates the policies on the whole trace and forwards (sampled) or
//! drops (not sampled) it. The OpenTelemetry Collector contrib `tailsamplingprocessor`,
//! with two differences: `num_traces` is a hard bound (the oldest trace is decided early,
//! on what has arrived, rather than dropped), and acknowledgements are end to end.
//!
//! Acknowledgements: by default a request is acknowledged once its spans are held, as in
//! contrib — holding them end to end would make every export call take `decision_wait`
//! (30 s by default, past the SDKs' 10 s export timeout), so clients would time out and
//! resend. A process killed with traces still undecided loses those (SIGTERM decides
//! and forwards them). With `acknowledge_after_decision` a request is acknowledged like
//! the batch processor does: once every trace it contributed to is decided and, when
//! sampled, in the exporters' queues; a trace dropped by the policies is successful
//! processing. Late spans of a decided trace
//! follow the decision while it is in the decision cache (bounded, oldest forgotten
//! first); after that they start a new trace.
//!
//! Each span is O(1): a hash lookup of its trace. Pending traces are kept in arrival
//! order, which with a fixed `decision_wait` is also deadline order, so finding the due
//! ones and the oldest one is O(1) too. At most [`DECISIONS_PER_TURN`] traces are decided
//! per call so the pipeline task answers its input and the watchdog in between.

mod policy;

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::collector::batch::SpanBatch;
use crate::collector::delivery::{commit_all, AckRef};
use crate::collector::metrics::CollectorMetrics;
use crate::config::collector::TailSamplingConfig;
use crate::otlp::{OtlpResourceSpans, OtlpScopeSpans, OtlpSpan};
use crate::tenant::TenantId;
use policy::{Decision, Policy, TraceView};

/// The most traces decided in one call of [`TailSampler::flush_due`] or
/// [`TailSampler::push`]; the rest are due at once and decided on the next turn.
const DECISIONS_PER_TURN: usize = 4096;
/// Sampled traces decided together are forwarded in batches of about this many spans.
const MAX_OUTPUT_SPANS: usize = 8192;

/// A trace, per tenant: tenants never share a decision.
type TraceKey = (TenantId, [u8; 16]);

#[derive(Debug)]
struct PendingTrace {
    resource_spans: Vec<OtlpResourceSpans>,
    num_spans: usize,
    /// One per request that contributed spans, when acknowledging after the decision.
    acks: Vec<AckRef>,
}

/// Decided traces, the oldest forgotten first beyond `capacity`. Keyed by a 64-bit hash
/// of the trace key, as contrib keys its cache by half the trace ID: a collision (about
/// `capacity` in 2^64 per lookup) only lets a span follow another trace's decision.
#[derive(Debug)]
struct DecisionCache {
    capacity: usize,
    decided_at: HashMap<u64, Instant>,
    order: VecDeque<u64>,
}

impl DecisionCache {
    fn new(capacity: usize) -> DecisionCache {
        DecisionCache {
            capacity,
            decided_at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn insert(&mut self, key: u64, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if self.decided_at.insert(key, now).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.decided_at.remove(&oldest);
            }
        }
    }

    fn decided_at(&self, key: u64) -> Option<Instant> {
        self.decided_at.get(&key).copied()
    }
}

/// Batches going out, one per tenant up to [`MAX_OUTPUT_SPANS`] spans.
#[derive(Debug, Default)]
struct Outbox {
    batches: Vec<SpanBatch>,
}

impl Outbox {
    fn add(
        &mut self,
        tenant: &TenantId,
        resource_spans: Vec<OtlpResourceSpans>,
        num_spans: usize,
        acks: Vec<AckRef>,
    ) {
        let piece = SpanBatch {
            tenant: tenant.clone(),
            resource_spans,
            num_spans,
            acks,
        };
        match self.batches.iter_mut().find(|batch| {
            batch.tenant == *tenant && batch.num_spans + num_spans <= MAX_OUTPUT_SPANS
        }) {
            Some(batch) => batch.absorb(piece),
            None => self.batches.push(piece),
        }
    }
}

/// One pipeline's instance of a `tail_sampling` processor.
#[derive(Debug)]
pub(crate) struct TailSampler {
    id: String,
    decision_wait: Duration,
    num_traces: usize,
    acknowledge_after_decision: bool,
    policies: Vec<Policy>,
    pending: HashMap<TraceKey, PendingTrace>,
    /// Pending traces by arrival of their first span (= by deadline).
    arrivals: VecDeque<(Instant, TraceKey)>,
    sampled: DecisionCache,
    not_sampled: DecisionCache,
    cache_hasher: RandomState,
    /// Rate-limiting policies count spans per whole second since this instant.
    clock_origin: Instant,
    /// Pending traces as last added to the `traces_on_memory` gauge.
    reported_on_memory: usize,
    metrics: Arc<CollectorMetrics>,
}

impl TailSampler {
    pub(crate) fn new(
        id: String,
        config: &TailSamplingConfig,
        metrics: Arc<CollectorMetrics>,
    ) -> TailSampler {
        TailSampler {
            id,
            decision_wait: config.decision_wait,
            num_traces: config.num_traces.max(1),
            acknowledge_after_decision: config.acknowledge_after_decision,
            policies: config.policies.iter().map(Policy::new).collect(),
            pending: HashMap::new(),
            arrivals: VecDeque::new(),
            sampled: DecisionCache::new(config.sampled_cache_size),
            not_sampled: DecisionCache::new(config.non_sampled_cache_size),
            cache_hasher: RandomState::new(),
            clock_origin: Instant::now(),
            reported_on_memory: 0,
            metrics,
        }
    }

    /// Takes a batch in; returns what is ready to go on now: spans of traces already
    /// decided sampled, and traces decided (due, or early to make room).
    pub(crate) fn push(&mut self, batch: SpanBatch, now: Instant) -> Vec<SpanBatch> {
        let mut outbox = Outbox::default();
        self.decide_due(now, &mut outbox);
        let SpanBatch {
            tenant,
            resource_spans,
            acks,
            ..
        } = batch;
        for TraceSpans {
            trace_id,
            resource_spans: pieces,
            num_spans,
        } in split_by_trace(resource_spans)
        {
            let key = (tenant.clone(), trace_id);
            let cache_key = self.cache_hasher.hash_one(&key);
            if let Some(decided) = self.sampled.decided_at(cache_key) {
                self.metrics.tail_late_span(&self.id, now - decided);
                outbox.add(&tenant, pieces, num_spans, acks.clone());
                continue;
            }
            if let Some(decided) = self.not_sampled.decided_at(cache_key) {
                self.metrics.tail_late_span(&self.id, now - decided);
                continue;
            }
            if !self.pending.contains_key(&key) {
                if self.pending.len() >= self.num_traces {
                    self.decide_oldest(now, true, &mut outbox);
                }
                self.metrics.tail_new_trace(&self.id);
                self.arrivals.push_back((now, key.clone()));
            }
            let held_acks = if self.acknowledge_after_decision {
                acks.clone()
            } else {
                Vec::new()
            };
            match self.pending.entry(key) {
                Entry::Occupied(entry) => {
                    let trace = entry.into_mut();
                    trace.resource_spans.extend(pieces);
                    trace.num_spans += num_spans;
                    trace.acks.extend(held_acks);
                }
                Entry::Vacant(entry) => {
                    entry.insert(PendingTrace {
                        resource_spans: pieces,
                        num_spans,
                        acks: held_acks,
                    });
                }
            }
        }
        // Every held trace (when acknowledging after the decision) and every forwarded
        // late span holds its own share of the requests now.
        commit_all(acks);
        debug_assert!(self.pending.len() <= self.num_traces);
        debug_assert_eq!(self.pending.len(), self.arrivals.len());
        self.report_on_memory();
        outbox.batches
    }

    /// When the oldest pending trace is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.arrivals
            .front()
            .map(|(arrived, _)| *arrived + self.decision_wait)
    }

    /// Decides the traces whose `decision_wait` has passed.
    pub(crate) fn flush_due(&mut self, now: Instant) -> Vec<SpanBatch> {
        let mut outbox = Outbox::default();
        self.decide_due(now, &mut outbox);
        self.report_on_memory();
        outbox.batches
    }

    /// Decides every pending trace on what has arrived (shutdown).
    pub(crate) fn flush_all(&mut self) -> Vec<SpanBatch> {
        let mut outbox = Outbox::default();
        let now = Instant::now();
        while !self.arrivals.is_empty() {
            self.decide_oldest(now, false, &mut outbox);
        }
        self.report_on_memory();
        outbox.batches
    }

    fn report_on_memory(&mut self) {
        let held = self.pending.len();
        if held != self.reported_on_memory {
            let delta = held as i64 - self.reported_on_memory as i64;
            self.metrics.tail_traces_on_memory_changed(&self.id, delta);
            self.reported_on_memory = held;
        }
    }

    fn decide_due(&mut self, now: Instant, outbox: &mut Outbox) {
        for _ in 0..DECISIONS_PER_TURN {
            match self.next_deadline() {
                Some(deadline) if deadline <= now => self.decide_oldest(now, false, outbox),
                _ => return,
            }
        }
    }

    fn decide_oldest(&mut self, now: Instant, early: bool, outbox: &mut Outbox) {
        let Some((_, key)) = self.arrivals.pop_front() else {
            return;
        };
        let Some(trace) = self.pending.remove(&key) else {
            debug_assert!(false, "every arrival has a pending trace");
            return;
        };
        let sampled = self.evaluate(&key.1, &trace, now);
        self.metrics.tail_trace_decided(&self.id, sampled, early);
        let cache_key = self.cache_hasher.hash_one(&key);
        if sampled {
            outbox.add(&key.0, trace.resource_spans, trace.num_spans, trace.acks);
            self.sampled.insert(cache_key, now);
        } else {
            // Dropped by decision: the requests' data was processed successfully.
            commit_all(trace.acks);
            self.not_sampled.insert(cache_key, now);
        }
    }

    fn evaluate(&mut self, trace_id: &[u8; 16], trace: &PendingTrace, now: Instant) -> bool {
        let view = TraceView {
            trace_id,
            resource_spans: &trace.resource_spans,
            num_spans: trace.num_spans as u64,
        };
        let second = now.saturating_duration_since(self.clock_origin).as_secs();
        // Every policy sees every trace (rate budgets and metrics count it), as in contrib.
        let mut decisions = Vec::with_capacity(self.policies.len());
        for policy in &mut self.policies {
            let started = std::time::Instant::now();
            let decision = policy.evaluate(&view, second);
            self.metrics.tail_policy_evaluated(
                &self.id,
                &policy.name,
                decision.samples(),
                started.elapsed(),
            );
            decisions.push(decision);
        }
        Decision::combine(decisions)
    }
}

/// Spans of one trace from one batch: its pieces (under their resources and scopes) and
/// their number.
struct TraceSpans {
    trace_id: [u8; 16],
    resource_spans: Vec<OtlpResourceSpans>,
    num_spans: usize,
}

/// Groups the spans by trace ID, in order of first appearance, each group keeping its
/// spans' resources and scopes (a resource or scope holding several traces is copied
/// into each). Spans with a malformed trace ID (the collector passes them on; the server
/// refuses them) share the all-zero trace.
fn split_by_trace(resource_spans: Vec<OtlpResourceSpans>) -> Vec<TraceSpans> {
    let mut traces: Vec<TraceSpans> = Vec::new();
    let mut trace_of: HashMap<[u8; 16], usize> = HashMap::new();
    for rs in resource_spans {
        let OtlpResourceSpans {
            resource,
            scope_spans,
            schema_url,
        } = rs;
        // Each trace's piece for this resource: its index in the trace's pieces.
        let mut piece_of: HashMap<usize, usize> = HashMap::new();
        for ss in scope_spans {
            let OtlpScopeSpans {
                scope,
                spans,
                schema_url: scope_schema_url,
            } = ss;
            let mut groups: Vec<(usize, Vec<OtlpSpan>)> = Vec::new();
            let mut group_of: HashMap<usize, usize> = HashMap::new();
            for span in spans {
                let trace_id = <[u8; 16]>::try_from(span.trace_id.as_slice()).unwrap_or_default();
                let trace = *trace_of.entry(trace_id).or_insert_with(|| {
                    traces.push(TraceSpans {
                        trace_id,
                        resource_spans: Vec::new(),
                        num_spans: 0,
                    });
                    traces.len() - 1
                });
                let group = *group_of.entry(trace).or_insert_with(|| {
                    groups.push((trace, Vec::new()));
                    groups.len() - 1
                });
                groups[group].1.push(span);
            }
            for (trace, spans) in groups {
                let pieces = &mut traces[trace];
                pieces.num_spans += spans.len();
                let piece = *piece_of.entry(trace).or_insert_with(|| {
                    pieces.resource_spans.push(OtlpResourceSpans {
                        resource: resource.clone(),
                        scope_spans: Vec::new(),
                        schema_url: schema_url.clone(),
                    });
                    pieces.resource_spans.len() - 1
                });
                pieces.resource_spans[piece]
                    .scope_spans
                    .push(OtlpScopeSpans {
                        scope: scope.clone(),
                        spans,
                        schema_url: scope_schema_url.clone(),
                    });
            }
        }
    }
    traces
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::policy::tests::{attribute, resource_spans, span, trace_id};
    use super::*;
    use crate::collector::delivery::Delivery;
    use crate::config::collector::{PolicyRule, SamplingPolicy};
    use crate::otlp::{count_spans, OtlpValue};

    const WAIT: Duration = Duration::from_secs(10);
    const OK: i32 = 1;
    const ERROR: i32 = 2;

    fn sampler(num_traces: usize, cache_size: usize) -> (TailSampler, Arc<CollectorMetrics>) {
        let metrics = Arc::new(CollectorMetrics::new());
        let config = TailSamplingConfig {
            decision_wait: WAIT,
            num_traces,
            acknowledge_after_decision: true,
            sampled_cache_size: cache_size,
            non_sampled_cache_size: cache_size,
            policies: vec![SamplingPolicy {
                name: "errors".into(),
                rule: PolicyRule::StatusCode(vec![ERROR]),
            }],
        };
        (
            TailSampler::new("tail_sampling".into(), &config, Arc::clone(&metrics)),
            metrics,
        )
    }

    fn request(resource_spans: Vec<OtlpResourceSpans>) -> (Delivery, SpanBatch) {
        let (delivery, ack) = Delivery::new(Vec::new());
        let batch = SpanBatch::new(TenantId::single(), resource_spans, vec![ack]);
        (delivery, batch)
    }

    /// A request with one span of each `(trace, status)`.
    fn spans(of: &[(u64, i32)]) -> (Delivery, SpanBatch) {
        let spans = of
            .iter()
            .enumerate()
            .map(|(index, (trace, status))| span(*trace, *status, index as u64, 1))
            .collect();
        request(vec![resource_spans(Vec::new(), spans)])
    }

    /// Trace numbers in `batches`, per span, sorted; the batches' acks are committed (the
    /// exporter queues took them).
    fn forwarded(batches: Vec<SpanBatch>) -> Vec<u64> {
        let mut traces = Vec::new();
        for batch in batches {
            assert_eq!(batch.num_spans, count_spans(&batch.resource_spans));
            for span in batch
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
            {
                traces.push(u64::from_be_bytes(span.trace_id[8..].try_into().unwrap()));
            }
            commit_all(batch.acks);
        }
        traces.sort_unstable();
        traces
    }

    async fn settled(delivery: Delivery) -> bool {
        let mut waiting = Box::pin(delivery.wait());
        match futures::poll!(&mut waiting) {
            std::task::Poll::Ready(result) => result.is_ok(),
            std::task::Poll::Pending => false,
        }
    }

    #[tokio::test]
    async fn spans_within_decision_wait_are_decided_together() {
        let (mut sampler, _) = sampler(100, 100);
        let start = Instant::now();
        let (first, batch) = spans(&[(1, OK), (2, OK)]);
        assert!(sampler.push(batch, start).is_empty());
        // The error arrives later, in another request: trace 1 is sampled whole.
        let (second, batch) = spans(&[(1, ERROR)]);
        assert!(sampler
            .push(batch, start + Duration::from_secs(9))
            .is_empty());
        assert_eq!(sampler.next_deadline(), Some(start + WAIT));
        assert!(sampler
            .flush_due(start + WAIT - Duration::from_millis(1))
            .is_empty());
        assert_eq!(forwarded(sampler.flush_due(start + WAIT)), vec![1, 1]);
        assert_eq!(sampler.next_deadline(), None);
        // Both requests are settled: trace 2 was dropped by decision, which is success.
        assert!(settled(first).await);
        assert!(settled(second).await);
    }

    #[tokio::test]
    async fn held_requests_are_acknowledged_only_after_the_decision() {
        let (mut sampler, _) = sampler(100, 100);
        let start = Instant::now();
        let (delivery, batch) = spans(&[(1, ERROR)]);
        assert!(sampler.push(batch, start).is_empty());
        let mut waiting = Box::pin(delivery.wait());
        assert!(futures::poll!(&mut waiting).is_pending());
        let out = sampler.flush_due(start + WAIT);
        assert!(
            futures::poll!(&mut waiting).is_pending(),
            "not before the exporters took it"
        );
        assert_eq!(forwarded(out), vec![1]);
        assert!(waiting.await.is_ok());
    }

    #[tokio::test]
    async fn by_default_held_requests_are_acknowledged_at_once() {
        let (mut sampler, _) = sampler(100, 100);
        sampler.acknowledge_after_decision = false;
        let start = Instant::now();
        let (delivery, batch) = spans(&[(1, ERROR), (2, OK)]);
        assert!(sampler.push(batch, start).is_empty());
        assert!(settled(delivery).await, "acknowledged while held");
        assert_eq!(forwarded(sampler.flush_due(start + WAIT)), vec![1]);
    }

    #[tokio::test]
    async fn late_spans_follow_the_cached_decision() {
        let (mut sampler, metrics) = sampler(100, 100);
        let start = Instant::now();
        let (_, batch) = spans(&[(1, ERROR), (2, OK)]);
        sampler.push(batch, start);
        assert_eq!(forwarded(sampler.flush_due(start + WAIT)), vec![1]);
        let late = start + WAIT + Duration::from_secs(3);
        let (delivery, batch) = spans(&[(1, OK), (2, ERROR)]);
        // Late span of sampled trace 1 goes straight on; trace 2 stays dropped even
        // though its late span is an error.
        assert_eq!(forwarded(sampler.push(batch, late)), vec![1]);
        assert!(settled(delivery).await);
        assert_eq!(sampler.next_deadline(), None);
        let text = metrics.encode();
        assert!(text.contains("otelcol_processor_tail_sampling_sampling_late_span_age_count{processor=\"tail_sampling\"} 2"), "{text}");
    }

    #[tokio::test]
    async fn a_forgotten_decision_starts_a_new_trace() {
        let (mut sampler, _) = sampler(100, 2);
        let start = Instant::now();
        let (_, batch) = spans(&[(1, OK), (2, OK), (3, OK)]);
        sampler.push(batch, start);
        assert!(forwarded(sampler.flush_due(start + WAIT)).is_empty());
        // Cache of 2: trace 1 is forgotten, 3 is remembered.
        let later = start + WAIT * 2;
        let (_, batch) = spans(&[(1, ERROR), (3, ERROR)]);
        assert!(sampler.push(batch, later).is_empty());
        assert_eq!(forwarded(sampler.flush_due(later + WAIT)), vec![1]);
    }

    #[tokio::test]
    async fn num_traces_is_a_hard_bound_and_early_decisions_are_counted() {
        let (mut sampler, metrics) = sampler(3, 100);
        let start = Instant::now();
        let mut out = Vec::new();
        for trace in 1..=10u64 {
            let status = if trace % 2 == 0 { ERROR } else { OK };
            let (_, batch) = spans(&[(trace, status)]);
            out.extend(sampler.push(batch, start + Duration::from_millis(trace)));
            assert!(sampler.pending.len() <= 3);
        }
        // Traces 1..=7 were decided early, oldest first; the errors among them went on.
        assert_eq!(forwarded(out), vec![2, 4, 6]);
        assert_eq!(forwarded(sampler.flush_all()), vec![8, 10]);
        let text = metrics.encode();
        for line in [
            "otelcol_processor_tail_sampling_sampling_trace_dropped_too_early_total{processor=\"tail_sampling\"} 7",
            "otelcol_processor_tail_sampling_new_trace_id_received_total{processor=\"tail_sampling\"} 10",
            "otelcol_processor_tail_sampling_global_count_traces_sampled_total{processor=\"tail_sampling\",sampled=\"true\"} 5",
            "otelcol_processor_tail_sampling_count_traces_sampled_total{processor=\"tail_sampling\",policy=\"errors\",sampled=\"false\"} 5",
            "otelcol_processor_tail_sampling_sampling_traces_on_memory{processor=\"tail_sampling\"} 0",
            "otelcol_processor_tail_sampling_sampling_decision_latency_count{processor=\"tail_sampling\",policy=\"errors\"} 10",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn instances_in_several_pipelines_add_up_in_traces_on_memory() {
        let (mut first, metrics) = sampler(100, 100);
        let config = TailSamplingConfig {
            decision_wait: WAIT,
            num_traces: 100,
            acknowledge_after_decision: true,
            sampled_cache_size: 0,
            non_sampled_cache_size: 0,
            policies: Vec::new(),
        };
        let mut second = TailSampler::new("tail_sampling".into(), &config, Arc::clone(&metrics));
        let start = Instant::now();
        first.push(spans(&[(1, OK), (2, OK)]).1, start);
        second.push(spans(&[(1, OK)]).1, start);
        let gauge = "otelcol_processor_tail_sampling_sampling_traces_on_memory{processor=\"tail_sampling\"}";
        assert!(metrics.encode().contains(&format!("{gauge} 3")));
        assert!(forwarded(first.flush_due(start + WAIT)).is_empty());
        assert!(metrics.encode().contains(&format!("{gauge} 1")));
    }

    #[tokio::test]
    async fn sampled_traces_keep_their_resources_and_scopes() {
        let (mut sampler, _) = sampler(100, 100);
        let start = Instant::now();
        let service = |name: &str| {
            vec![attribute(
                "service.name",
                OtlpValue::StringValue(name.into()),
            )]
        };
        let (_, batch) = request(vec![
            resource_spans(service("a"), vec![span(1, ERROR, 0, 1), span(2, OK, 1, 1)]),
            resource_spans(service("b"), vec![span(2, OK, 2, 1), span(1, OK, 3, 1)]),
        ]);
        sampler.push(batch, start);
        let out = sampler.flush_due(start + WAIT);
        assert_eq!(out.len(), 1);
        let services: Vec<_> = out[0]
            .resource_spans
            .iter()
            .map(|rs| rs.resource.as_ref().unwrap().attributes[0].clone())
            .collect();
        assert_eq!(services, [service("a"), service("b")].concat());
        for rs in &out[0].resource_spans {
            assert_eq!(rs.scope_spans.len(), 1);
            assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "test-scope");
            assert!(rs.scope_spans[0]
                .spans
                .iter()
                .all(|span| span.trace_id == trace_id(1)));
        }
        assert_eq!(forwarded(out), vec![1, 1]);
    }

    #[tokio::test]
    async fn tenants_never_share_a_trace() {
        let (mut sampler, _) = sampler(100, 100);
        let start = Instant::now();
        let (_, mut batch) = spans(&[(1, OK)]);
        batch.tenant = TenantId::new("acme").unwrap();
        sampler.push(batch, start);
        let (_, batch) = spans(&[(1, ERROR)]);
        sampler.push(batch, start);
        let out = sampler.flush_due(start + WAIT);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].tenant, TenantId::single());
        assert_eq!(forwarded(out), vec![1]);
    }

    #[tokio::test]
    async fn a_turn_decides_a_bounded_number_of_traces() {
        let (mut sampler, _) = sampler(DECISIONS_PER_TURN + 10, 0);
        let start = Instant::now();
        let all: Vec<(u64, i32)> = (0..DECISIONS_PER_TURN as u64 + 10)
            .map(|trace| (trace, ERROR))
            .collect();
        let (_, batch) = spans(&all);
        sampler.push(batch, start);
        let first = forwarded(sampler.flush_due(start + WAIT));
        assert_eq!(first.len(), DECISIONS_PER_TURN);
        assert_eq!(
            sampler.next_deadline(),
            Some(start + WAIT),
            "the rest is due at once"
        );
        assert_eq!(forwarded(sampler.flush_due(start + WAIT)).len(), 10);
    }
}
