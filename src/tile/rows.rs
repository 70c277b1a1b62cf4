//! A C-order buffer cut into the blocks of a grid, each handed out as its own rows:
//! disjoint mutable slices, so that threads can fill different blocks at once with no lock.
//!
//! The tile reader fills a tile from the chunks that cover it. Each chunk's part of the
//! tile is a block of the grid the chunk boundaries cut the tile into; a block's rows (runs
//! along the last axis) are scattered through the tile's buffer, one per row of the tile
//! it spans, so a block is not one slice. [`split_rows`] walks the buffer once, splitting
//! it into row segments and dealing each to its block.
//!
//! The buffer is any [`RowTarget`]: a mutable slice, or memory the host may only write (a
//! GPU upload buffer mapped into the host, which the GPU backend reads tiles into), or
//! [`Both`] of two, each row written to both while it is in cache.

use super::Region;

/// Memory that rows are cut from: it splits in two like a mutable slice.
pub trait RowTarget: Sized {
    /// Elements it spans.
    fn len(&self) -> usize;
    /// True if it spans none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The first `mid` elements, and the rest.
    fn split_at(self, mid: usize) -> (Self, Self);
    /// A target of no elements.
    fn empty() -> Self;
}

/// A row that elements of type `T` are written into.
pub trait RowWrite<T> {
    /// Writes `src`, exactly as long as the row.
    fn write(&mut self, src: &[T]);
    /// Writes `value` to every element.
    fn fill(&mut self, value: T);
}

impl<T> RowTarget for &mut [T] {
    fn len(&self) -> usize {
        <[T]>::len(self)
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        self.split_at_mut(mid)
    }
    fn empty() -> Self {
        &mut []
    }
}

impl<T: Copy> RowWrite<T> for &mut [T] {
    fn write(&mut self, src: &[T]) {
        self.copy_from_slice(src);
    }
    fn fill(&mut self, value: T) {
        <[T]>::fill(self, value);
    }
}

/// Two targets of the same length written together: every row goes to both.
#[derive(Debug)]
pub struct Both<A, B>(pub A, pub B);

impl<A: RowTarget, B: RowTarget> RowTarget for Both<A, B> {
    fn len(&self) -> usize {
        debug_assert_eq!(self.0.len(), self.1.len(), "both targets span the same elements");
        self.0.len()
    }
    fn split_at(self, mid: usize) -> (Self, Self) {
        let (a, a_rest) = self.0.split_at(mid);
        let (b, b_rest) = self.1.split_at(mid);
        (Self(a, b), Self(a_rest, b_rest))
    }
    fn empty() -> Self {
        Self(A::empty(), B::empty())
    }
}

impl<T: Copy, A: RowWrite<T>, B: RowWrite<T>> RowWrite<T> for Both<A, B> {
    fn write(&mut self, src: &[T]) {
        self.0.write(src);
        self.1.write(src);
    }
    fn fill(&mut self, value: T) {
        self.0.fill(value);
        self.1.fill(value);
    }
}

/// The rows of each block of a [`split_rows`] grid, in the order of the blocks, each in C
/// order (as many as the block has rows, each as long as its extent on the last axis);
/// and the row segments of the cells no block covers, in C order.
pub struct DealtRows<R> {
    /// Per block, its rows.
    pub blocks: Vec<Vec<R>>,
    /// What no block covers.
    pub uncovered: Vec<R>,
}

/// Splits `buffer`, which holds `region` in C order, into the rows of each of `blocks`
/// (returned in the order of `blocks`).
///
/// `blocks` must be disjoint, inside `region`, and each a cell of one rectilinear grid
/// over it: the blocks' boundaries on each axis, together with the region's, cut it into
/// cells, and every block is exactly one of them. The parts of a chunk grid that overlap a
/// region are such blocks. The cells no block covers are dealt as `uncovered`.
///
/// # Panics
/// If `buffer` does not hold `region`, or a block is not one cell of that grid (outside
/// `region`, overlapping another, or spanning a boundary another block sets).
pub fn split_rows<R: RowTarget>(buffer: R, region: &Region, blocks: &[Region]) -> DealtRows<R> {
    assert_eq!(buffer.len(), region.len(), "the buffer holds {region:?}");
    let ndim = region.ndim();
    assert!(ndim > 0, "a region has at least one axis");
    let grid = Grid::new(region, blocks);
    let mut rows: Vec<Vec<R>> = blocks
        .iter()
        .map(|b| Vec::with_capacity(usize::try_from(b.num_elements() / b.shape[ndim - 1].max(1)).unwrap_or(0)))
        .collect();
    let last = ndim - 1;
    let widths: Vec<usize> = grid.bounds[last]
        .windows(2)
        .map(|w| usize::try_from(w[1] - w[0]).expect("a row fits in memory"))
        .collect();
    let mut rest = buffer;
    let mut uncovered = Vec::new();
    if region.is_empty() {
        return DealtRows {
            blocks: rows,
            uncovered,
        };
    }
    // The coordinates of the row (outer axes, relative to the region) and the cell it lies
    // in on each of them, advanced together.
    let mut coordinate = vec![0u64; last];
    let mut cell = vec![0usize; last];
    for _ in 0..region.shape[..last].iter().product::<u64>() {
        let row_cells = grid.flat(&cell);
        for (x, &width) in widths.iter().enumerate() {
            let (segment, tail) = std::mem::replace(&mut rest, R::empty()).split_at(width);
            rest = tail;
            match grid.owner[row_cells + x] {
                Some(block) => rows[block].push(segment),
                None => uncovered.push(segment),
            }
        }
        for a in (0..last).rev() {
            coordinate[a] += 1;
            if coordinate[a] < region.shape[a] {
                if coordinate[a] == grid.bounds[a][cell[a] + 1] {
                    cell[a] += 1;
                }
                break;
            }
            coordinate[a] = 0;
            cell[a] = 0;
        }
    }
    debug_assert!(rest.is_empty());
    DealtRows {
        blocks: rows,
        uncovered,
    }
}

/// The grid the blocks' boundaries cut a region into, and which block owns each cell.
struct Grid {
    /// Per axis, the cells' boundaries relative to the region's start, from 0 to its extent.
    bounds: Vec<Vec<u64>>,
    /// Cells per step of each axis in the flat (C-order) cell index, the last axis excluded.
    strides: Vec<usize>,
    /// Per cell in C order, the block that is that cell.
    owner: Vec<Option<usize>>,
}

impl Grid {
    fn new(region: &Region, blocks: &[Region]) -> Self {
        let ndim = region.ndim();
        let mut bounds: Vec<Vec<u64>> = region.shape.iter().map(|&n| vec![0, n]).collect();
        for block in blocks {
            assert!(region.contains(block), "{block:?} is not inside {region:?}");
            for (a, axis) in bounds.iter_mut().enumerate() {
                axis.push(block.start[a] - region.start[a]);
                axis.push(block.end(a) - region.start[a]);
            }
        }
        for axis in &mut bounds {
            axis.sort_unstable();
            axis.dedup();
        }
        let cells: Vec<usize> = bounds.iter().map(|b| b.len().saturating_sub(1)).collect();
        let mut strides = vec![1usize; ndim];
        for a in (0..ndim.saturating_sub(1)).rev() {
            strides[a] = strides[a + 1] * cells[a + 1];
        }
        let mut owner = vec![None; cells.iter().product()];
        for (i, block) in blocks.iter().enumerate() {
            let mut flat = 0;
            for (a, axis) in bounds.iter().enumerate() {
                let start = block.start[a] - region.start[a];
                let at = axis.binary_search(&start).expect("every start is a bound");
                assert_eq!(
                    axis.get(at + 1),
                    Some(&(block.end(a) - region.start[a])),
                    "{block:?} spans more than one cell of the grid its blocks cut {region:?} into"
                );
                flat += at * strides[a];
            }
            assert!(owner[flat].is_none(), "{block:?} overlaps another block");
            owner[flat] = Some(i);
        }
        // The row walk indexes cells by their outer axes only.
        strides.pop();
        Self { bounds, strides, owner }
    }

    /// The flat index of the first cell of the row of cells at `cell` (outer axes).
    fn flat(&self, cell: &[usize]) -> usize {
        cell.iter().zip(&self.strides).map(|(c, s)| c * s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tile::{c_order, copy_overlap};

    /// The blocks a grid of `chunk`-shaped chunks (from the origin) cuts `region` into.
    fn chunk_parts(region: &Region, chunk: &[u64]) -> Vec<Region> {
        let ranges: Vec<(u64, u64)> = (0..region.ndim())
            .map(|a| (region.start[a] / chunk[a], region.end(a).div_ceil(chunk[a])))
            .collect();
        c_order(&ranges)
            .filter_map(|index| {
                let start: Vec<u64> = index.iter().zip(chunk).map(|(i, c)| i * c).collect();
                Region::new(start, chunk.to_vec()).intersect(region)
            })
            .collect()
    }

    /// Each block's rows, filled from a source holding `region` with distinct values, give
    /// back that source.
    fn round_trip(region: &Region, blocks: &[Region]) {
        let source: Vec<u32> = (0..region.len() as u32).collect();
        let mut buffer = vec![u32::MAX; region.len()];
        let dealt = split_rows(buffer.as_mut_slice(), region, blocks);
        for (block, mut rows) in blocks.iter().zip(dealt.blocks) {
            let mut expected = vec![0u32; block.len()];
            copy_overlap(&source, region, &mut expected, block);
            let width = block.shape[block.ndim() - 1] as usize;
            assert_eq!(rows.len(), block.len() / width, "rows of {block:?}");
            for (row, values) in rows.iter_mut().zip(expected.chunks(width)) {
                row.copy_from_slice(values);
            }
        }
        assert_eq!(buffer, source, "{region:?} cut into {blocks:?}");
    }

    #[test]
    fn chunk_blocks_get_exactly_their_rows() {
        round_trip(
            &Region::new(vec![3, 5, 7], vec![9, 10, 13]),
            &chunk_parts(&Region::new(vec![3, 5, 7], vec![9, 10, 13]), &[4, 3, 5]),
        );
        round_trip(&Region::whole(&[17]), &chunk_parts(&Region::whole(&[17]), &[5]));
        let five = Region::new(vec![0, 1, 2, 3, 4], vec![2, 3, 4, 5, 6]);
        round_trip(&five, &chunk_parts(&five, &[1, 2, 3, 2, 4]));
        // One chunk covering the whole region.
        round_trip(&Region::whole(&[4, 6]), &[Region::whole(&[4, 6])]);
    }

    #[test]
    fn both_targets_get_every_row_and_every_fill() {
        let region = Region::new(vec![1, 2], vec![5, 7]);
        // The array ends before the region does on the last axis: those cells are filled.
        let blocks = chunk_parts(&Region::from_bounds(&[1, 2], &[6, 8]), &[2, 3]);
        let source: Vec<u16> = (0..region.len() as u16).collect();
        let (mut first, mut second) = (vec![0u16; region.len()], vec![1u16; region.len()]);
        let dealt = split_rows(Both(first.as_mut_slice(), second.as_mut_slice()), &region, &blocks);
        for (block, rows) in blocks.iter().zip(dealt.blocks) {
            let mut values = vec![0u16; block.len()];
            copy_overlap(&source, &region, &mut values, block);
            let width = block.shape[1] as usize;
            for (mut row, values) in rows.into_iter().zip(values.chunks(width)) {
                row.write(values);
            }
        }
        for mut row in dealt.uncovered {
            row.fill(u16::MAX);
        }
        let expected: Vec<u16> = (0..region.len())
            .map(|i| if i % 7 == 6 { u16::MAX } else { source[i] })
            .collect();
        assert_eq!(first, expected);
        assert_eq!(second, expected);
    }

    #[test]
    fn cells_no_block_covers_are_dealt_apart() {
        let region = Region::whole(&[4, 6]);
        // The array ends at 3×5: the reader fills the rest with the fill value.
        let blocks = chunk_parts(&Region::whole(&[3, 5]), &[2, 2]);
        let mut buffer = vec![7u8; region.len()];
        let dealt = split_rows(buffer.as_mut_slice(), &region, &blocks);
        for rows in dealt.blocks {
            for row in rows {
                row.fill(1);
            }
        }
        for row in dealt.uncovered {
            row.fill(2);
        }
        let expected: Vec<u8> = (0..4)
            .flat_map(|y| (0..6).map(move |x| if y < 3 && x < 5 { 1 } else { 2 }))
            .collect();
        assert_eq!(buffer, expected);
    }

    #[test]
    #[should_panic(expected = "spans more than one cell")]
    fn blocks_off_one_grid_are_refused() {
        let region = Region::whole(&[4, 4]);
        let blocks = [
            Region::from_bounds(&[0, 0], &[2, 4]),
            Region::from_bounds(&[2, 0], &[4, 2]),
            Region::from_bounds(&[2, 2], &[4, 4]),
        ];
        let mut buffer = vec![0u8; 16];
        let _ = split_rows(buffer.as_mut_slice(), &region, &blocks);
    }
}
