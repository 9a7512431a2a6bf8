//! Live traces: everything acknowledged (and so in the WAL) that is not yet in a block.
//!
//! The head is mutated only by the WAL writer thread, which inserts pieces after they
//! are durable and partitions the head when a block is cut. Queries read it under a
//! short lock, cloning only reference-counted piece bytes; decoding happens outside.
//!
//! Pieces stay protobuf-encoded in memory (`TracesData` bytes per request and trace):
//! a decoded OTLP span costs several times its wire size, and the head is the largest
//! memory consumer of the server.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::otlp::TraceId;
use crate::server::wal::TracePiece;
use crate::tenant::TenantId;

#[derive(Debug)]
struct LiveTrace {
    pieces: Vec<Bytes>,
    bytes: usize,
    first_append: Instant,
    last_append: Instant,
}

/// Traces handed to a block cut. Queries keep seeing them here until the blocks that
/// hold them are registered in the block list.
#[derive(Debug)]
pub struct FlushingSet {
    /// The cut covers WAL segments up to and including this one.
    pub through_segment: u64,
    pub tenants: BTreeMap<TenantId, BTreeMap<TraceId, Vec<Bytes>>>,
    pub bytes: u64,
}

/// The result of partitioning the head for a cut.
#[derive(Debug)]
pub struct CutPartition {
    pub flushing: Arc<FlushingSet>,
    /// Pieces of traces that stay live; they are rewritten into the new segment.
    pub carried: Vec<(TenantId, Vec<TracePiece>)>,
}

/// A consistent copy of one tenant's part of the head (see [`Head::tenant_snapshot`]).
#[derive(Debug, Default)]
pub struct HeadSnapshot {
    pub traces: HashMap<TraceId, Vec<Bytes>>,
    /// `through_segment` of every cut whose blocks may already be registered while its
    /// traces are still here: queries must not read both.
    pub flushing_segments: Vec<u64>,
}

#[derive(Debug, Default)]
pub struct Head {
    tenants: HashMap<TenantId, HashMap<TraceId, LiveTrace>>,
    flushing: Vec<Arc<FlushingSet>>,
    live_bytes: u64,
    live_traces: usize,
    /// The earliest first-append among live traces (drives age-based cuts).
    oldest_live: Option<Instant>,
}

/// Why the head should be cut now, if it should.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutReason {
    Size,
    Age,
    Shutdown,
}

impl CutReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CutReason::Size => "size",
            CutReason::Age => "age",
            CutReason::Shutdown => "shutdown",
        }
    }
}

impl Head {
    pub fn insert(&mut self, tenant: &TenantId, pieces: Vec<TracePiece>, now: Instant) {
        let traces = self.tenants.entry(tenant.clone()).or_default();
        for (trace_id, data) in pieces {
            let len = data.len();
            let trace = traces.entry(trace_id).or_insert_with(|| {
                self.live_traces += 1;
                self.oldest_live = Some(self.oldest_live.map_or(now, |t| t.min(now)));
                LiveTrace {
                    pieces: Vec::new(),
                    bytes: 0,
                    first_append: now,
                    last_append: now,
                }
            });
            trace.pieces.push(data);
            trace.bytes += len;
            trace.last_append = now;
            self.live_bytes += len as u64;
        }
    }

    /// Live traces of `tenant`, and how many of `trace_ids` would be new ones.
    pub fn live_and_new_traces(
        &self,
        tenant: &TenantId,
        trace_ids: impl Iterator<Item = TraceId>,
    ) -> (usize, usize) {
        let live = self.tenants.get(tenant);
        let mut new: HashSet<TraceId> = HashSet::new();
        for trace_id in trace_ids {
            if !live.is_some_and(|traces| traces.contains_key(&trace_id)) {
                new.insert(trace_id);
            }
        }
        (live.map_or(0, HashMap::len), new.len())
    }

    /// Bytes `trace_id` holds live (0 when it is not live).
    pub fn live_trace_bytes(&self, tenant: &TenantId, trace_id: &TraceId) -> usize {
        self.tenants
            .get(tenant)
            .and_then(|traces| traces.get(trace_id))
            .map_or(0, |trace| trace.bytes)
    }

    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }

    pub fn live_traces(&self) -> usize {
        self.live_traces
    }

    /// Bytes held in memory, live and waiting for upload.
    pub fn total_bytes(&self) -> u64 {
        self.live_bytes + self.flushing.iter().map(|f| f.bytes).sum::<u64>()
    }

    pub fn is_empty(&self) -> bool {
        self.live_traces == 0
    }

    /// The oldest first-append among live traces.
    pub fn oldest_append(&self) -> Option<Instant> {
        self.oldest_live
    }

    /// Pieces of one trace, oldest first: those being flushed, then live ones.
    pub fn find_trace(&self, tenant: &TenantId, trace_id: TraceId) -> Vec<Bytes> {
        let mut pieces = Vec::new();
        for set in &self.flushing {
            if let Some(found) = set.tenants.get(tenant).and_then(|t| t.get(&trace_id)) {
                pieces.extend(found.iter().cloned());
            }
        }
        if let Some(live) = self.tenants.get(tenant).and_then(|t| t.get(&trace_id)) {
            pieces.extend(live.pieces.iter().cloned());
        }
        pieces
    }

    /// Every trace of one tenant with its pieces, oldest first per trace (pieces being
    /// flushed, then live ones), and the cuts still being flushed. Search reads this
    /// under the lock and decodes outside it; only reference-counted bytes are cloned.
    pub fn tenant_snapshot(&self, tenant: &TenantId) -> HeadSnapshot {
        let mut traces: HashMap<TraceId, Vec<Bytes>> = HashMap::new();
        let mut flushing_segments = Vec::new();
        for set in &self.flushing {
            flushing_segments.push(set.through_segment);
            if let Some(found) = set.tenants.get(tenant) {
                for (trace_id, pieces) in found {
                    traces
                        .entry(*trace_id)
                        .or_default()
                        .extend(pieces.iter().cloned());
                }
            }
        }
        if let Some(live) = self.tenants.get(tenant) {
            for (trace_id, trace) in live {
                traces
                    .entry(*trace_id)
                    .or_default()
                    .extend(trace.pieces.iter().cloned());
            }
        }
        HeadSnapshot {
            traces,
            flushing_segments,
        }
    }

    /// Splits the head for a cut through `through_segment`. A trace goes into the block
    /// when it has been idle for `trace_idle`, or has been live longer than `max_live`
    /// (so a trace that never goes quiet can't pin WAL segments forever), or when
    /// `carry_nothing` is set. Every other trace stays live and is returned as carried.
    pub fn partition_for_cut(
        &mut self,
        through_segment: u64,
        now: Instant,
        trace_idle: Duration,
        max_live: Duration,
        carry_nothing: bool,
    ) -> CutPartition {
        self.partition(through_segment, |_, _, trace| {
            carry_nothing
                || now.saturating_duration_since(trace.last_append) >= trace_idle
                || now.saturating_duration_since(trace.first_append) >= max_live
        })
    }

    /// Redoes an interrupted cut at replay: every trace goes into the block except those
    /// the interrupted cut had carried forward.
    pub fn partition_for_redo(
        &mut self,
        through_segment: u64,
        carried: &HashSet<(TenantId, TraceId)>,
    ) -> CutPartition {
        self.partition(through_segment, |tenant, trace_id, _| {
            !carried.contains(&(tenant.clone(), *trace_id))
        })
    }

    fn partition(
        &mut self,
        through_segment: u64,
        mut goes_to_block: impl FnMut(&TenantId, &TraceId, &LiveTrace) -> bool,
    ) -> CutPartition {
        let mut flushing = FlushingSet {
            through_segment,
            tenants: BTreeMap::new(),
            bytes: 0,
        };
        let mut carried = Vec::new();
        for (tenant, traces) in self.tenants.iter_mut() {
            let mut carried_pieces = Vec::new();
            let mut to_block = BTreeMap::new();
            traces.retain(|trace_id, trace| {
                if goes_to_block(tenant, trace_id, trace) {
                    flushing.bytes += trace.bytes as u64;
                    to_block.insert(*trace_id, std::mem::take(&mut trace.pieces));
                    false
                } else {
                    carried_pieces.extend(trace.pieces.iter().map(|p| (*trace_id, p.clone())));
                    true
                }
            });
            if !to_block.is_empty() {
                flushing.tenants.insert(tenant.clone(), to_block);
            }
            if !carried_pieces.is_empty() {
                carried.push((tenant.clone(), carried_pieces));
            }
        }
        self.tenants.retain(|_, traces| !traces.is_empty());
        self.live_bytes -= flushing.bytes;
        self.live_traces = self.tenants.values().map(HashMap::len).sum();
        self.oldest_live = self
            .tenants
            .values()
            .flat_map(|traces| traces.values())
            .map(|t| t.first_append)
            .min();
        let flushing = Arc::new(flushing);
        if !flushing.tenants.is_empty() {
            self.flushing.push(Arc::clone(&flushing));
        }
        CutPartition { flushing, carried }
    }

    /// Forgets a flushing set once its blocks are registered for queries.
    pub fn finish_flush(&mut self, through_segment: u64) {
        self.flushing
            .retain(|set| set.through_segment != through_segment);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(n: u8) -> TracePiece {
        (TraceId([n; 16]), Bytes::from(vec![n; 10]))
    }

    #[test]
    fn cut_moves_idle_traces_and_carries_live_ones() {
        let tenant = TenantId::new("t").unwrap();
        let start = Instant::now();
        let mut head = Head::default();
        head.insert(&tenant, vec![piece(1), piece(2)], start);
        head.insert(&tenant, vec![piece(2)], start + Duration::from_secs(9));
        assert_eq!(head.live_bytes(), 30);
        assert_eq!(head.live_traces(), 2);

        let now = start + Duration::from_secs(10);
        let cut = head.partition_for_cut(
            5,
            now,
            Duration::from_secs(5),
            Duration::from_secs(60),
            false,
        );
        let moved = &cut.flushing.tenants[&tenant];
        assert_eq!(
            moved.keys().copied().collect::<Vec<_>>(),
            vec![TraceId([1; 16])]
        );
        assert_eq!(cut.carried.len(), 1);
        assert_eq!(
            cut.carried[0].1.len(),
            2,
            "both pieces of the live trace are carried"
        );
        assert_eq!(head.live_bytes(), 20);
        assert_eq!(head.total_bytes(), 30);
        // Queries still see the flushing trace until the flush finishes.
        assert_eq!(head.find_trace(&tenant, TraceId([1; 16])).len(), 1);
        head.finish_flush(5);
        assert!(head.find_trace(&tenant, TraceId([1; 16])).is_empty());
        assert_eq!(head.find_trace(&tenant, TraceId([2; 16])).len(), 2);
    }

    #[test]
    fn long_lived_traces_are_cut_anyway() {
        let tenant = TenantId::new("t").unwrap();
        let start = Instant::now();
        let mut head = Head::default();
        head.insert(&tenant, vec![piece(1)], start);
        let now = start + Duration::from_secs(61);
        head.insert(&tenant, vec![piece(1)], now);
        let cut = head.partition_for_cut(
            1,
            now,
            Duration::from_secs(5),
            Duration::from_secs(60),
            false,
        );
        assert!(cut.carried.is_empty());
        assert!(head.is_empty());
    }

    #[test]
    fn redo_excludes_exactly_the_carried_traces() {
        let tenant = TenantId::new("t").unwrap();
        let mut head = Head::default();
        head.insert(&tenant, vec![piece(1), piece(2), piece(3)], Instant::now());
        let carried = HashSet::from([(tenant.clone(), TraceId([2; 16]))]);
        let cut = head.partition_for_redo(7, &carried);
        assert_eq!(cut.flushing.tenants[&tenant].len(), 2);
        assert_eq!(head.live_traces(), 1);
    }
}
