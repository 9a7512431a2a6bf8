//! Start-up replay: rebuild the head from the WAL and finish any cut that a crash
//! interrupted, before the server announces readiness.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use parking_lot::Mutex;

use crate::otlp::TraceId;
use crate::server::flush::{FlushError, Flusher};
use crate::server::head::Head;
use crate::server::metrics::ServerMetrics;
use crate::server::wal::{Damage, WalDir, WalError, WalRecord};
use crate::tenant::TenantId;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error("redoing an interrupted block cut: {0}")]
    Flush(#[from] FlushError),
}

/// What replay found, for the start-up log line.
#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub segments: usize,
    pub records: u64,
    pub damaged_regions: u64,
    pub damaged_bytes: u64,
    pub undecodable_records: u64,
    pub redone_cuts: usize,
    /// The highest segment ID seen (0 when the WAL is empty); writing resumes after it.
    pub last_segment: u64,
}

/// Replays every segment after the `flushed-through` marker into `head`.
pub async fn replay(
    wal: &WalDir,
    head: &Mutex<Head>,
    flusher: &Flusher,
    metrics: &ServerMetrics,
) -> Result<ReplaySummary, ReplayError> {
    let mut summary = ReplaySummary::default();
    let mut flushed_through = wal.flushed_through()?.unwrap_or(0);
    let segments = wal.segments()?;
    summary.last_segment = segments.last().copied().unwrap_or(0).max(flushed_through);
    wal.delete_through(flushed_through)?;

    // A redone cut only ever covers segments already read, so this filter stays right.
    let replay_after = flushed_through;
    for segment_id in segments.into_iter().filter(|id| *id > replay_after) {
        let segment = {
            let wal = wal.clone();
            tokio::task::spawn_blocking(move || wal.replay_segment(segment_id))
                .await
                .map_err(|e| WalError::BadFile {
                    path: wal_path(segment_id),
                    reason: e.to_string(),
                })??
        };
        summary.segments += 1;
        if segment.records.is_empty() && segment.damage.is_empty() && segment.undecodable == 0 {
            // A start or rotation that never got a record: nothing to keep. Without this,
            // every restart of an idle server would leave one more empty file behind.
            wal.delete_segment(segment_id)?;
            continue;
        }
        summary.undecodable_records += segment.undecodable as u64;
        for damage in &segment.damage {
            let (kind, offset, len) = match *damage {
                Damage::CorruptRecord { offset, len } => ("corrupt record skipped", offset, len),
                Damage::Garbage { offset, len } => ("unreadable bytes skipped", offset, len),
                Damage::TornTail { offset, len } => ("torn tail truncated", offset, len),
            };
            tracing::warn!(
                segment = segment_id,
                offset,
                bytes = len,
                "wal damage: {kind}"
            );
            summary.damaged_regions += 1;
            summary.damaged_bytes += len as u64;
        }
        // Traces an interrupted cut carried forward, by the segment that cut sealed.
        let mut carried: HashMap<u64, HashSet<(TenantId, TraceId)>> = HashMap::new();
        let now = Instant::now();
        for record in segment.records {
            summary.records += 1;
            match record {
                WalRecord::Batch { tenant, pieces } => head.lock().insert(&tenant, pieces, now),
                WalRecord::Carry {
                    through_segment,
                    tenant,
                    pieces,
                } => {
                    if through_segment <= flushed_through {
                        // That cut completed: the originals are gone, this copy is the data.
                        head.lock().insert(&tenant, pieces, now);
                    } else {
                        // The originals are still here and were replayed already.
                        let ids = carried.entry(through_segment).or_default();
                        ids.extend(pieces.into_iter().map(|(id, _)| (tenant.clone(), id)));
                    }
                }
                WalRecord::Cut { through_segment } if through_segment > flushed_through => {
                    let carried = carried.remove(&through_segment).unwrap_or_default();
                    let partition = head.lock().partition_for_redo(through_segment, &carried);
                    tracing::info!(
                        through_segment,
                        carried = carried.len(),
                        "redoing interrupted block cut"
                    );
                    flusher.flush(&partition.flushing, "replay").await?;
                    flushed_through = through_segment;
                    summary.redone_cuts += 1;
                }
                WalRecord::Cut { .. } => {}
            }
        }
    }
    metrics.wal_replayed(summary.records);
    metrics.wal_damage(summary.damaged_regions);
    let head = head.lock();
    metrics.set_head(head.live_traces(), head.total_bytes());
    Ok(summary)
}

fn wal_path(segment_id: u64) -> std::path::PathBuf {
    format!("segment {segment_id}").into()
}
