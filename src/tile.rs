//! Boxes in a level's voxel grid and the typed buffers that hold their data.
//!
//! A [`Region`] is an axis-aligned box in global coordinates of one level; a [`Tile`] is a
//! region plus its elements in C order. Tiles are what travels between the store, the
//! engine and the backends.

use crate::dtype::{DType, Sample};

mod rows;

pub use rows::{Both, DealtRows, RowTarget, RowWrite, split_rows};

/// An axis-aligned box `[start, start + shape)` in a level's voxel grid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Region {
    /// First voxel on each axis.
    pub start: Vec<u64>,
    /// Extent on each axis.
    pub shape: Vec<u64>,
}

impl Region {
    /// A region from its start and shape.
    #[must_use]
    pub fn new(start: Vec<u64>, shape: Vec<u64>) -> Self {
        debug_assert_eq!(start.len(), shape.len());
        Self { start, shape }
    }

    /// The whole of an array of `shape`.
    #[must_use]
    pub fn whole(shape: &[u64]) -> Self {
        Self::new(vec![0; shape.len()], shape.to_vec())
    }

    /// A region from per-axis `[start, end)` bounds.
    #[must_use]
    pub fn from_bounds(start: &[u64], end: &[u64]) -> Self {
        Self::new(start.to_vec(), start.iter().zip(end).map(|(s, e)| e - s).collect())
    }

    /// Number of axes.
    #[must_use]
    pub fn ndim(&self) -> usize {
        self.start.len()
    }

    /// One past the last voxel on `axis`.
    #[must_use]
    pub fn end(&self, axis: usize) -> u64 {
        self.start[axis] + self.shape[axis]
    }

    /// Number of voxels.
    #[must_use]
    pub fn num_elements(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Number of voxels as `usize`.
    ///
    /// # Panics
    /// If the count does not fit in `usize` (never on 64-bit targets for regions the engine
    /// builds, which are bounded by the memory budget).
    #[must_use]
    pub fn len(&self) -> usize {
        usize::try_from(self.num_elements()).expect("region larger than the address space")
    }

    /// True if the region holds no voxel.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.shape.contains(&0)
    }

    /// True if `other` lies entirely inside `self`.
    #[must_use]
    pub fn contains(&self, other: &Region) -> bool {
        (0..self.ndim()).all(|a| other.start[a] >= self.start[a] && other.end(a) <= self.end(a))
    }

    /// The overlap of two regions, if any.
    #[must_use]
    pub fn intersect(&self, other: &Region) -> Option<Region> {
        let mut start = Vec::with_capacity(self.ndim());
        let mut end = Vec::with_capacity(self.ndim());
        for a in 0..self.ndim() {
            let s = self.start[a].max(other.start[a]);
            let e = self.end(a).min(other.end(a));
            if s >= e {
                return None;
            }
            start.push(s);
            end.push(e);
        }
        Some(Region::from_bounds(&start, &end))
    }

    /// C-order strides of a buffer holding this region.
    #[must_use]
    pub fn strides(&self) -> Vec<usize> {
        c_strides(&self.shape)
    }
}

/// Every index of the box `ranges` (per axis `[lo, hi)`) in C order, the last axis
/// fastest; nothing if any range is empty.
pub fn c_order(ranges: &[(u64, u64)]) -> impl Iterator<Item = Vec<u64>> + '_ {
    let mut next = ranges
        .iter()
        .all(|&(lo, hi)| lo < hi)
        .then(|| ranges.iter().map(|r| r.0).collect::<Vec<u64>>());
    std::iter::from_fn(move || {
        let current = next.take()?;
        let mut index = current.clone();
        for a in (0..index.len()).rev() {
            index[a] += 1;
            if index[a] < ranges[a].1 {
                next = Some(index);
                break;
            }
            index[a] = ranges[a].0;
        }
        Some(current)
    })
}

/// C-order strides (in elements) of an array of `shape`.
#[must_use]
pub fn c_strides(shape: &[u64]) -> Vec<usize> {
    let mut strides = vec![1usize; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        strides[a] = strides[a + 1] * usize::try_from(shape[a + 1]).unwrap_or(usize::MAX);
    }
    strides
}

/// Copies the part of `src` (holding `src_region`) that overlaps `dst_region` into `dst`
/// (holding `dst_region`). Both buffers are C order.
pub fn copy_overlap<T: Copy>(src: &[T], src_region: &Region, dst: &mut [T], dst_region: &Region) {
    for_each_overlap_row(src_region, dst_region, |src_off, dst_off, len| {
        dst[dst_off..dst_off + len].copy_from_slice(&src[src_off..src_off + len]);
    });
}

/// Copies the part of `src` (holding `src_region`) that `rows_region` covers into `rows`,
/// the rows of `rows_region` in C order as [`split_rows`] deals them.
///
/// # Panics
/// If `rows_region` is not inside `src_region` or `rows` are not its rows.
pub fn copy_into_rows<T: Copy, R: RowWrite<T>>(src: &[T], src_region: &Region, rows: &mut [R], rows_region: &Region) {
    assert!(
        src_region.contains(rows_region),
        "{rows_region:?} is not inside {src_region:?}"
    );
    let mut rows = rows.iter_mut();
    // The overlap is all of `rows_region`, whose rows come in C order.
    for_each_overlap_row(src_region, rows_region, |src_off, _, len| {
        let row = rows.next().expect("a row per row of the region");
        row.write(&src[src_off..src_off + len]);
    });
    assert!(rows.next().is_none(), "a row per row of the region");
}

/// The elements of `dst_region`, which lies inside `src_region`, copied out of `src`
/// (holding `src_region`, C order) into a new C-order buffer. Unlike [`copy_overlap`] into
/// a filled buffer, every element is written once.
///
/// # Panics
/// If `dst_region` is not inside `src_region`.
#[must_use]
pub fn extract_within<T: Copy>(src: &[T], src_region: &Region, dst_region: &Region) -> Vec<T> {
    assert!(
        src_region.contains(dst_region),
        "{dst_region:?} is not inside {src_region:?}"
    );
    let mut out = Vec::with_capacity(dst_region.len());
    // Rows come in C order of the overlap, which is all of `dst_region`: appending them in
    // turn lays them out where they belong.
    for_each_overlap_row(src_region, dst_region, |src_off, _, len| {
        out.extend_from_slice(&src[src_off..src_off + len]);
    });
    out
}

/// Calls `row(src_offset, dst_offset, len)` for every row (run along the last axis) of the
/// overlap of the two regions, in C order, with offsets into C-order buffers holding each.
fn for_each_overlap_row(src_region: &Region, dst_region: &Region, mut row: impl FnMut(usize, usize, usize)) {
    let Some(overlap) = src_region.intersect(dst_region) else {
        return;
    };
    let ndim = overlap.ndim();
    let src_strides = src_region.strides();
    let dst_strides = dst_region.strides();
    let row_len = usize::try_from(overlap.shape[ndim - 1]).unwrap_or(0);
    let outer_shape = &overlap.shape[..ndim - 1];
    let outer_rows: u64 = outer_shape.iter().product();
    let mut index = vec![0u64; ndim.saturating_sub(1)];
    for _ in 0..outer_rows {
        let mut src_off = 0usize;
        let mut dst_off = 0usize;
        for a in 0..ndim {
            let coordinate = overlap.start[a] + if a + 1 < ndim { index[a] } else { 0 };
            src_off += usize::try_from(coordinate - src_region.start[a]).unwrap_or(0) * src_strides[a];
            dst_off += usize::try_from(coordinate - dst_region.start[a]).unwrap_or(0) * dst_strides[a];
        }
        row(src_off, dst_off, row_len);
        // Advance the odometer over the outer axes.
        for a in (0..ndim - 1).rev() {
            index[a] += 1;
            if index[a] < outer_shape[a] {
                break;
            }
            index[a] = 0;
        }
    }
}

/// Elements of a tile, typed by the array's data type.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum TileData {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Conversion between a typed `Vec<T>` and [`TileData`].
pub trait TileElement: Sample {
    /// Wraps a vector.
    fn wrap(data: Vec<Self>) -> TileData;
    /// Borrows the vector if `data` holds this type.
    fn view(data: &TileData) -> Option<&[Self]>;
    /// Unwraps the vector if `data` holds this type.
    fn unwrap(data: TileData) -> Option<Vec<Self>>;
}

macro_rules! impl_tile_element {
    ($t:ty, $variant:ident) => {
        impl TileElement for $t {
            fn wrap(data: Vec<Self>) -> TileData {
                TileData::$variant(data)
            }
            fn view(data: &TileData) -> Option<&[Self]> {
                match data {
                    TileData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn unwrap(data: TileData) -> Option<Vec<Self>> {
                match data {
                    TileData::$variant(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

impl_tile_element!(u8, U8);
impl_tile_element!(u16, U16);
impl_tile_element!(u32, U32);
impl_tile_element!(u64, U64);
impl_tile_element!(i8, I8);
impl_tile_element!(i16, I16);
impl_tile_element!(i32, I32);
impl_tile_element!(i64, I64);
impl_tile_element!(f32, F32);
impl_tile_element!(f64, F64);

impl TileData {
    /// The data type held.
    #[must_use]
    pub fn dtype(&self) -> DType {
        match self {
            TileData::U8(_) => DType::U8,
            TileData::U16(_) => DType::U16,
            TileData::U32(_) => DType::U32,
            TileData::U64(_) => DType::U64,
            TileData::I8(_) => DType::I8,
            TileData::I16(_) => DType::I16,
            TileData::I32(_) => DType::I32,
            TileData::I64(_) => DType::I64,
            TileData::F32(_) => DType::F32,
            TileData::F64(_) => DType::F64,
        }
    }

    /// Number of elements.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            TileData::U8(v) => v.len(),
            TileData::U16(v) => v.len(),
            TileData::U32(v) => v.len(),
            TileData::U64(v) => v.len(),
            TileData::I8(v) => v.len(),
            TileData::I16(v) => v.len(),
            TileData::I32(v) => v.len(),
            TileData::I64(v) => v.len(),
            TileData::F32(v) => v.len(),
            TileData::F64(v) => v.len(),
        }
    }

    /// True if there are no elements.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as little-endian bytes (the layout of every Zarr output here).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            TileData::U8(v) => bytemuck::cast_slice(v),
            TileData::U16(v) => bytemuck::cast_slice(v),
            TileData::U32(v) => bytemuck::cast_slice(v),
            TileData::U64(v) => bytemuck::cast_slice(v),
            TileData::I8(v) => bytemuck::cast_slice(v),
            TileData::I16(v) => bytemuck::cast_slice(v),
            TileData::I32(v) => bytemuck::cast_slice(v),
            TileData::I64(v) => bytemuck::cast_slice(v),
            TileData::F32(v) => bytemuck::cast_slice(v),
            TileData::F64(v) => bytemuck::cast_slice(v),
        }
    }

    /// A buffer of `len` zeros of `dtype`.
    #[must_use]
    pub fn zeros(dtype: DType, len: usize) -> Self {
        crate::dispatch_dtype!(dtype, T => T::wrap(vec![T::default(); len]))
    }
}

/// A region of a level and its elements in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tile {
    /// Where the data lies in the level.
    pub region: Region,
    /// The elements, `region.len()` of them.
    pub data: TileData,
}

/// A borrowed source tile: `region.len()` elements of `dtype` in C order, as bytes (a
/// decoded chunk, read in place instead of being copied into a tile first).
#[derive(Debug, Clone, Copy)]
pub struct TileRef<'a> {
    /// Where the data lies in the level.
    pub region: &'a Region,
    /// The data type of the elements.
    pub dtype: DType,
    /// The elements' bytes, aligned for `dtype`.
    pub bytes: &'a [u8],
}

impl<'a> TileRef<'a> {
    /// A view of typed elements over `region`.
    ///
    /// # Panics
    /// If the element count does not match the region.
    #[must_use]
    pub fn new<T: TileElement + bytemuck::Pod>(region: &'a Region, data: &'a [T]) -> Self {
        assert_eq!(region.len(), data.len(), "tile data does not match its region");
        Self {
            region,
            dtype: T::DTYPE,
            bytes: bytemuck::cast_slice(data),
        }
    }

    /// The elements as `T`, if that is their type.
    #[must_use]
    pub fn typed<T: TileElement + bytemuck::Pod>(&self) -> Option<&'a [T]> {
        (T::DTYPE == self.dtype)
            .then(|| bytemuck::try_cast_slice(self.bytes).ok())
            .flatten()
    }

    /// An owned copy.
    #[must_use]
    pub fn to_tile(&self) -> Tile {
        let data = crate::dispatch_dtype!(self.dtype, T => T::wrap(bytemuck::pod_collect_to_vec(self.bytes)));
        Tile::new(self.region.clone(), data)
    }
}

impl Tile {
    /// A tile from a region and matching data.
    ///
    /// # Panics
    /// If the element count does not match the region.
    #[must_use]
    pub fn new(region: Region, data: TileData) -> Self {
        assert_eq!(region.len(), data.len(), "tile data does not match its region");
        Self { region, data }
    }

    /// The elements of `dst_region` (which must lie inside this tile) as a new tile.
    ///
    /// # Panics
    /// If `dst_region` is not inside the tile.
    #[must_use]
    pub fn extract(&self, dst_region: &Region) -> Tile {
        let data = crate::dispatch_dtype!(self.data.dtype(), T => {
            let src = T::view(&self.data).expect("dtype matches");
            T::wrap(extract_within(src, &self.region, dst_region))
        });
        Tile::new(dst_region.clone(), data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_order_runs_the_last_axis_fastest() {
        let all: Vec<Vec<u64>> = c_order(&[(1, 3), (5, 7)]).collect();
        assert_eq!(all, vec![vec![1, 5], vec![1, 6], vec![2, 5], vec![2, 6]]);
        assert_eq!(c_order(&[(0, 2), (3, 3)]).count(), 0);
        assert_eq!(c_order(&[]).collect::<Vec<_>>(), vec![Vec::<u64>::new()]);
    }

    #[test]
    fn copy_overlap_copies_exactly_the_intersection() {
        // src: 3x4 at (1,1); dst: 4x4 at (0,0)
        let src_region = Region::new(vec![1, 1], vec![3, 4]);
        let src: Vec<u32> = (0..12).collect();
        let dst_region = Region::new(vec![0, 0], vec![4, 4]);
        let mut dst = vec![99u32; 16];
        copy_overlap(&src, &src_region, &mut dst, &dst_region);
        assert_eq!(dst, vec![99, 99, 99, 99, 99, 0, 1, 2, 99, 4, 5, 6, 99, 8, 9, 10]);
    }

    #[test]
    fn extract_within_equals_copy_overlap_into_a_filled_buffer() {
        let src_region = Region::new(vec![2, 1, 3], vec![4, 5, 6]);
        let src: Vec<u32> = (0..120).collect();
        for dst_region in [
            Region::new(vec![3, 2, 4], vec![2, 3, 4]),
            Region::new(vec![2, 1, 3], vec![4, 5, 6]),
            Region::new(vec![5, 5, 8], vec![1, 1, 1]),
        ] {
            let mut expected = vec![0u32; dst_region.len()];
            copy_overlap(&src, &src_region, &mut expected, &dst_region);
            assert_eq!(
                extract_within(&src, &src_region, &dst_region),
                expected,
                "{dst_region:?}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "is not inside")]
    fn extract_within_refuses_a_region_outside() {
        let src_region = Region::new(vec![0, 0], vec![2, 2]);
        let _ = extract_within(&[0u8; 4], &src_region, &Region::new(vec![1, 1], vec![2, 2]));
    }

    #[test]
    fn intersect_and_contains() {
        let a = Region::new(vec![0, 0], vec![4, 4]);
        let b = Region::new(vec![2, 3], vec![4, 4]);
        assert_eq!(a.intersect(&b), Some(Region::new(vec![2, 3], vec![2, 1])));
        assert!(a.contains(&Region::new(vec![1, 1], vec![2, 2])));
        assert!(!a.contains(&b));
        assert_eq!(a.intersect(&Region::new(vec![4, 0], vec![1, 1])), None);
    }
}
