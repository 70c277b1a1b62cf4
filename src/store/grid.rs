//! A regular chunk grid: the chunks (or shards) of an output level, by index and by
//! region. Output levels always have one; inputs may have others (zarrs reads them).

use crate::tile::{Region, c_order};

/// Chunks of `chunk` voxels tiling an array of `shape` (the last along each axis partial).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegularGrid {
    shape: Vec<u64>,
    chunk: Vec<u64>,
}

impl RegularGrid {
    /// The grid of `chunk`-sized chunks over `shape`.
    #[must_use]
    pub fn new(shape: &[u64], chunk: &[u64]) -> Self {
        Self {
            shape: shape.to_vec(),
            chunk: chunk.to_vec(),
        }
    }

    /// The chunk shape.
    #[must_use]
    pub fn chunk(&self) -> &[u64] {
        &self.chunk
    }

    /// Chunks along each axis.
    #[must_use]
    pub fn grid_shape(&self) -> Vec<u64> {
        self.shape
            .iter()
            .zip(&self.chunk)
            .map(|(&n, &c)| n.div_ceil(c))
            .collect()
    }

    /// The region of chunk `indices` (not clipped to the array).
    #[must_use]
    pub fn region(&self, indices: &[u64]) -> Region {
        Region::new(
            indices.iter().zip(&self.chunk).map(|(&i, &c)| i * c).collect(),
            self.chunk.clone(),
        )
    }

    /// Indices of the chunks that intersect `region`, in C order.
    #[must_use]
    pub fn chunks_in(&self, region: &Region) -> Vec<Vec<u64>> {
        if region.is_empty() {
            return Vec::new();
        }
        let ranges: Vec<(u64, u64)> = (0..region.ndim())
            .map(|a| {
                let end = region.end(a).min(self.shape[a]);
                (region.start[a] / self.chunk[a], end.div_ceil(self.chunk[a]))
            })
            .collect();
        c_order(&ranges).collect()
    }

    /// The flat (C-order) index of chunk `indices`.
    #[must_use]
    pub fn flat_index(&self, indices: &[u64]) -> u64 {
        indices
            .iter()
            .zip(self.grid_shape())
            .fold(0, |flat, (&i, n)| flat * n + i)
    }

    /// The chunk indices of a flat (C-order) index.
    #[must_use]
    pub fn indices(&self, flat: u64) -> Vec<u64> {
        let grid = self.grid_shape();
        let mut rest = flat;
        let mut indices = vec![0u64; grid.len()];
        for a in (0..grid.len()).rev() {
            indices[a] = rest % grid[a].max(1);
            rest /= grid[a].max(1);
        }
        indices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_regions_and_indices_agree() {
        let grid = RegularGrid::new(&[10, 7], &[4, 3]);
        assert_eq!(grid.grid_shape(), vec![3, 3]);
        assert_eq!(grid.region(&[2, 1]), Region::new(vec![8, 3], vec![4, 3]));
        assert_eq!(
            grid.chunks_in(&Region::new(vec![3, 2], vec![2, 2])),
            vec![vec![0, 0], vec![0, 1], vec![1, 0], vec![1, 1]]
        );
        assert_eq!(grid.chunks_in(&Region::new(vec![8, 6], vec![4, 4])), vec![vec![2, 2]]);
        for flat in 0..9 {
            assert_eq!(grid.flat_index(&grid.indices(flat)), flat);
        }
    }
}
