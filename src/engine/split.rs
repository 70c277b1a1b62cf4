//! How a partitioned build splits its work: the first pass (level 0 to level `k`) is cut
//! into contiguous ranges of its blocks, balanced by the bytes of level 0 they cover. A
//! block owns whole write units (shards, or chunks) at every level it writes, so no file is
//! ever written by two parts; `k` is as deep as there are still enough blocks for every
//! part and a tile fits the memory budget. `finalize` computes the levels above `k`.

use std::ops::Range;

use super::BuildError;
use super::pass::{Pass, PassLayout};
use crate::journal::partition::PartRange;
use crate::tile::c_order;

/// The parts of a partitioned build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Split {
    /// The last level the parts write.
    pub(super) last: usize,
    /// Blocks of the first pass.
    pub(super) blocks: u64,
    /// Each part's blocks and the bytes of level 0 they cover.
    pub(super) parts: Vec<PartRange>,
}

/// What the split depends on besides the layout.
pub(super) struct SplitRequest {
    pub(super) parts: usize,
    pub(super) element_size: u64,
    pub(super) memory_bytes: u64,
    pub(super) threads: usize,
}

/// Splits the first pass of `layout` into `request.parts` parts.
pub(super) fn split_first_pass(layout: &PassLayout<'_>, request: &SplitRequest) -> Result<Split, BuildError> {
    let parts = request.parts as u64;
    if parts == 0 {
        return Err(BuildError::InvalidOption {
            option: "parts",
            reason: "must be at least 1".into(),
        });
    }
    let levels = layout.plan.len();
    let (last, extents): (usize, Vec<Vec<u64>>) = if levels == 1 {
        // Only level 0: the parts copy its write units.
        let unit = &layout.units[0];
        let shape = &layout.plan.levels[0].shape;
        let extents = (0..shape.len())
            .map(|a| {
                let count = shape[a].div_ceil(unit[a]);
                (0..count).map(|i| (shape[a] - i * unit[a]).min(unit[a])).collect()
            })
            .collect();
        (0, extents)
    } else {
        let pass = deepest_first_pass(layout, request)?;
        let extents = (0..pass.block_grid().len()).map(|a| pass.block_extents(a)).collect();
        (pass.last, extents)
    };
    let blocks = block_bytes(&extents, request.element_size);
    if (blocks.len() as u64) < parts {
        return Err(too_many_parts(request.parts, blocks.len() as u64));
    }
    Ok(Split {
        last,
        blocks: blocks.len() as u64,
        parts: balanced_ranges(&blocks, parts)
            .into_iter()
            .map(|range| PartRange {
                input_bytes: blocks[range.start as usize..range.end as usize].iter().sum(),
                first_block: range.start,
                end_block: range.end,
            })
            .collect(),
    })
}

fn too_many_parts(parts: usize, blocks: u64) -> BuildError {
    BuildError::InvalidOption {
        option: "parts",
        reason: format!(
            "{parts} parts asked for, but the first pass of this pyramid has {blocks} blocks of whole chunks or shards, so at most {blocks} parts can each own their own files; use --parts {blocks} or fewer (or smaller --chunks or --shards)"
        ),
    }
}

/// The first pass with the deepest last level that still has a block for every part and
/// whose tiles fit the memory budget with enough of them for the threads of each part (the
/// rule a whole build's first pass follows, per part).
fn deepest_first_pass(layout: &PassLayout<'_>, request: &SplitRequest) -> Result<Pass, BuildError> {
    let parts = request.parts as u64;
    let budget = request.memory_bytes * 7 / 10;
    let threads = request.threads.max(1) as u64;
    let source_bytes = layout.plan.levels[0].shape.iter().product::<u64>() * request.element_size;
    let mut chosen: Option<Pass> = None;
    for last in 1..layout.plan.len() {
        let pass = Pass::new(layout, 0, last);
        if pass.block_count() < parts {
            if chosen.is_none() {
                return Err(too_many_parts(request.parts, pass.block_count()));
            }
            break;
        }
        let tiles_per_part = pass.tile_count() / parts;
        let workers = tiles_per_part.clamp(1, threads);
        let fits = workers.saturating_mul(pass.worker_bytes(request.element_size, layout.method)) <= budget;
        let parallel_enough = tiles_per_part >= 2 * threads || source_bytes / parts <= 32 << 20;
        if chosen.is_none() || (fits && parallel_enough) {
            chosen = Some(pass);
        } else {
            break;
        }
    }
    Ok(chosen.expect("a pyramid of two or more levels has a first pass"))
}

/// Bytes of every block, in C order, from the extents of the block columns per axis.
fn block_bytes(extents: &[Vec<u64>], element_size: u64) -> Vec<u64> {
    let ranges: Vec<(u64, u64)> = extents.iter().map(|e| (0, e.len() as u64)).collect();
    c_order(&ranges)
        .map(|index| index.iter().zip(extents).map(|(&i, e)| e[i as usize]).product::<u64>() * element_size)
        .collect()
}

/// `parts` contiguous, non-empty ranges of `weights` whose sums are as even as a cut
/// between blocks allows.
fn balanced_ranges(weights: &[u64], parts: u64) -> Vec<Range<u64>> {
    let n = weights.len() as u64;
    let mut prefix = Vec::with_capacity(weights.len() + 1);
    prefix.push(0u128);
    for &w in weights {
        prefix.push(prefix.last().copied().unwrap_or(0) + u128::from(w));
    }
    let total = prefix[weights.len()];
    let mut cuts = vec![0u64];
    for i in 1..parts {
        let target = total * u128::from(i) / u128::from(parts);
        // The first cut whose prefix reaches the target, kept so that every part before
        // and after it has at least one block.
        let at = prefix.partition_point(|&p| p < target) as u64;
        let previous = *cuts.last().expect("starts with 0");
        cuts.push(at.clamp(previous + 1, n - (parts - i)));
    }
    cuts.push(n);
    cuts.windows(2).map(|w| w[0]..w[1]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_contiguous_non_empty_and_balanced() {
        let weights = vec![10, 10, 10, 10, 10, 10, 5, 5];
        let ranges = balanced_ranges(&weights, 3);
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, 8);
        for w in ranges.windows(2) {
            assert_eq!(w[0].end, w[1].start);
        }
        let sums: Vec<u64> = ranges
            .iter()
            .map(|r| weights[r.start as usize..r.end as usize].iter().sum())
            .collect();
        assert_eq!(sums.iter().sum::<u64>(), 70);
        assert!(sums.iter().all(|&s| (20..=30).contains(&s)), "{sums:?}");
        // As many parts as blocks: one block each, whatever the weights.
        let ranges = balanced_ranges(&[100, 1, 1, 1], 4);
        assert_eq!(ranges, vec![0..1, 1..2, 2..3, 3..4]);
        // Heavy first block: the others still get one each.
        let ranges = balanced_ranges(&[1000, 1, 1, 1, 1], 3);
        assert!(ranges.iter().all(|r| r.end > r.start), "{ranges:?}");
        assert_eq!(balanced_ranges(&[5, 5], 1), vec![0..2]);
    }

    #[test]
    fn block_bytes_follow_the_extents_in_c_order() {
        let extents = vec![vec![2, 1], vec![4, 4, 3]];
        assert_eq!(block_bytes(&extents, 2), vec![16, 16, 12, 8, 8, 6]);
    }
}
