//! Which blocks to merge, after Tempo's time-window block selector: blocks of one tenant
//! whose newest span ended in the same `compaction.window` are merged, smallest first, as
//! many as `max_input_blocks` and `max_block_bytes` allow. In the window that is still
//! receiving data only blocks of the same compaction level are merged, so a large block
//! is not rewritten every time a small one arrives; older windows are merged whatever
//! the levels.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::CompactionConfig;
use crate::server::block::BlockMeta;

/// Bytes a block occupies in the store.
pub fn block_bytes(meta: &BlockMeta) -> u64 {
    meta.data_size_bytes + meta.bloom_size_bytes
}

/// Groups of blocks of one tenant to merge, the largest groups first. `blocks` are the
/// blocks queries see (none replaced); `eligible` filters out those that must not be
/// touched (e.g. about to expire).
pub fn plan_tenant(
    blocks: &[BlockMeta],
    config: &CompactionConfig,
    now: SystemTime,
    eligible: impl Fn(&BlockMeta) -> bool,
) -> Vec<Vec<BlockMeta>> {
    let window_nanos = config.window.as_nanos().max(1);
    let window_of = |nanos: u128| nanos / window_nanos;
    let active_window = window_of(
        now.duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_nanos(),
    );
    let mut groups: BTreeMap<(u128, Option<u32>), Vec<&BlockMeta>> = BTreeMap::new();
    for meta in blocks.iter().filter(|meta| eligible(meta)) {
        let window = window_of(u128::from(meta.max_end_time_unix_nano));
        let level = (window >= active_window).then_some(meta.compaction_level);
        groups.entry((window, level)).or_default().push(meta);
    }
    let mut jobs: Vec<Vec<BlockMeta>> = Vec::new();
    for mut group in groups.into_values() {
        group.sort_by_key(|meta| (block_bytes(meta), meta.block_id));
        let mut job: Vec<BlockMeta> = Vec::new();
        let mut job_bytes = 0u64;
        for meta in group {
            let bytes = block_bytes(meta);
            if job.len() == config.max_input_blocks
                || job_bytes.saturating_add(bytes) > config.max_block_bytes
            {
                if job.len() >= 2 {
                    jobs.push(std::mem::take(&mut job));
                }
                job.clear();
                job_bytes = 0;
            }
            // A block that is already as large as allowed has nothing to merge with.
            if bytes <= config.max_block_bytes {
                job.push(meta.clone());
                job_bytes += bytes;
            }
        }
        if job.len() >= 2 {
            jobs.push(job);
        }
    }
    // Most blocks first: they cost queries the most. The sort is stable, so older
    // windows go first among equals.
    jobs.sort_by_key(|job| std::cmp::Reverse(job.len()));
    jobs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::server::block::meta::tests::meta_for_test;

    const HOUR_NANOS: u64 = 3_600_000_000_000;

    fn config(max_input_blocks: usize, max_block_bytes: u64) -> CompactionConfig {
        CompactionConfig {
            enabled: true,
            window: Duration::from_secs(3600),
            max_input_blocks,
            max_block_bytes,
            cycle: Duration::from_secs(30),
            compacted_block_retention: Duration::from_secs(3600),
            lease_duration: Duration::from_secs(120),
        }
    }

    /// A block of `bytes` bytes whose newest span ended `end_nanos` after the epoch.
    fn block(id: u128, end_nanos: u64, bytes: u64, level: u32) -> BlockMeta {
        BlockMeta {
            block_id: Uuid::from_u128(id),
            max_end_time_unix_nano: end_nanos,
            data_size_bytes: bytes,
            bloom_size_bytes: 0,
            compaction_level: level,
            ..meta_for_test()
        }
    }

    fn ids(jobs: &[Vec<BlockMeta>]) -> Vec<Vec<u128>> {
        jobs.iter()
            .map(|job| job.iter().map(|m| m.block_id.as_u128()).collect())
            .collect()
    }

    fn far_future() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(4_000_000_000)
    }

    #[test]
    fn blocks_are_grouped_by_the_window_their_newest_span_ended_in() {
        let blocks = [
            block(1, 10 * HOUR_NANOS + 5, 100, 0),
            block(2, 11 * HOUR_NANOS - 1, 100, 0),
            block(3, 11 * HOUR_NANOS, 100, 0),
            block(4, 11 * HOUR_NANOS + 9, 100, 1),
            block(5, 12 * HOUR_NANOS, 100, 0),
        ];
        let jobs = plan_tenant(&blocks, &config(8, 1 << 30), far_future(), |_| true);
        // Hour 10 and hour 11 pair up; hour 12 has one block and nothing to merge with.
        assert_eq!(ids(&jobs), vec![vec![1, 2], vec![3, 4]]);
    }

    #[test]
    fn smallest_first_within_the_block_and_byte_limits_largest_jobs_first() {
        let blocks: Vec<BlockMeta> = (1..=7)
            .map(|i| block(i, HOUR_NANOS, 100 * (8 - i as u64), 0))
            .chain([
                block(8, HOUR_NANOS, 5000, 0),
                block(9, 3 * HOUR_NANOS, 1, 0),
            ])
            .chain([block(10, 3 * HOUR_NANOS, 1, 0)])
            .collect();
        // Sizes 100 (7), 200 (6), … 700 (1): at most 3 blocks and 1000 bytes per job;
        // 2 and 1 do not fit together.
        let jobs = plan_tenant(&blocks, &config(3, 1000), far_future(), |_| true);
        assert_eq!(ids(&jobs), vec![vec![7, 6, 5], vec![4, 3], vec![9, 10]]);
        // Block 8 alone exceeds the limit and is never an input.
        assert!(jobs.iter().flatten().all(|m| m.block_id.as_u128() != 8));
    }

    #[test]
    fn the_active_window_only_merges_equal_levels() {
        let now = UNIX_EPOCH + Duration::from_secs(100 * 3600 + 60);
        let active = 100 * HOUR_NANOS + 10;
        let blocks = [
            block(1, active, 10, 0),
            block(2, active, 10, 0),
            block(3, active, 1000, 1),
            block(4, 99 * HOUR_NANOS, 10, 0),
            block(5, 99 * HOUR_NANOS, 1000, 1),
        ];
        let jobs = plan_tenant(&blocks, &config(8, 1 << 30), now, |_| true);
        assert_eq!(ids(&jobs), vec![vec![4, 5], vec![1, 2]]);
    }

    #[test]
    fn ineligible_blocks_are_left_alone() {
        let blocks = [
            block(1, HOUR_NANOS, 10, 0),
            block(2, HOUR_NANOS, 10, 0),
            block(3, HOUR_NANOS, 10, 0),
        ];
        let jobs = plan_tenant(&blocks, &config(8, 1 << 30), far_future(), |m| {
            m.block_id.as_u128() != 2
        });
        assert_eq!(ids(&jobs), vec![vec![1, 3]]);
        let none = plan_tenant(&blocks[..1], &config(8, 1 << 30), far_future(), |_| true);
        assert!(none.is_empty());
    }
}
