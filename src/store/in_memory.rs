//! An array in memory as the input of a build: [`NdarraySource`] reads an `ndarray` view
//! (for example a NumPy array handed over by the Python package) in place, one read chunk
//! at a time, whatever its memory order. Nothing is copied whole.

use std::path::{Path, PathBuf};

use ndarray::{ArrayD, ArrayViewD, IxDyn, Slice};
use serde_json::{Value, json};

use super::grid::RegularGrid;
use super::source::{ChunkSource, DEFAULT_PLANE_CHUNK, DEFAULT_Z_CHUNK, ImageMetadata, Source};
use super::{StoreElement, StoreError};
use crate::dtype::DType;
use crate::journal::InputFingerprint;
use crate::tile::Region;

/// An `ndarray` view read in place as a build's input, like a plain Zarr array: its axes
/// are the default for its dimensionality unless the build names them.
#[derive(Debug, Clone)]
pub struct NdarraySource<'a, T> {
    name: PathBuf,
    array: ArrayViewD<'a, T>,
    shape: Vec<u64>,
    grid: RegularGrid,
    metadata: ImageMetadata,
    fill: Vec<u8>,
}

impl<'a, T: StoreElement> NdarraySource<'a, T> {
    /// A source reading `array` in chunks of 256 along y and x, 64 along z and 1 along
    /// the axes before z (also the output's chunks unless the build sets them).
    ///
    /// # Errors
    /// [`StoreError::InvalidArray`] for an array with fewer than 2 or more than 5
    /// dimensions, or with an axis of length 0.
    pub fn new(array: ArrayViewD<'a, T>) -> Result<Self, StoreError> {
        let ndim = array.ndim();
        if !(2..=5).contains(&ndim) {
            return Err(StoreError::InvalidArray {
                reason: format!("an image has 2 to 5 dimensions, this array has {ndim}"),
            });
        }
        if array.is_empty() {
            return Err(StoreError::InvalidArray {
                reason: format!("it is empty (shape {:?})", array.shape()),
            });
        }
        let shape: Vec<u64> = array.shape().iter().map(|&n| n as u64).collect();
        let chunk: Vec<u64> = shape
            .iter()
            .enumerate()
            .map(|(axis, &n)| {
                let from_end = ndim - axis;
                let length = match from_end {
                    1 | 2 => DEFAULT_PLANE_CHUNK,
                    3 => DEFAULT_Z_CHUNK,
                    _ => 1,
                };
                length.min(n)
            })
            .collect();
        Ok(Self {
            name: PathBuf::from(format!("<{} array {:?} in memory>", T::DTYPE, array.shape())),
            grid: RegularGrid::new(&shape, &chunk),
            shape,
            array,
            metadata: ImageMetadata {
                name: Some("image".to_string()),
                axes_replaceable: true,
                ..ImageMetadata::default()
            },
            fill: vec![0; T::DTYPE.size()],
        })
    }

    /// Reads in chunks of `chunk` instead (the output's chunks unless the build sets them).
    ///
    /// # Errors
    /// [`StoreError::InvalidArray`] if `chunk` does not have one positive length per axis.
    pub fn with_chunks(mut self, chunk: &[u64]) -> Result<Self, StoreError> {
        if chunk.len() != self.shape.len() || chunk.contains(&0) {
            return Err(StoreError::InvalidArray {
                reason: format!(
                    "the chunks {chunk:?} are not one positive length for each of its {} axes",
                    self.shape.len()
                ),
            });
        }
        let clipped: Vec<u64> = chunk.iter().zip(&self.shape).map(|(&c, &n)| c.min(n)).collect();
        self.grid = RegularGrid::new(&self.shape, &clipped);
        Ok(self)
    }

    /// Names the image (the output's multiscales name unless the build sets one; `image`
    /// when not named, as ome-zarr-py's `write_image` does).
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.metadata.name = Some(name.into());
        self
    }
}

impl<T: StoreElement> ChunkSource for NdarraySource<'_, T> {
    fn path(&self) -> &Path {
        &self.name
    }

    fn dtype(&self) -> DType {
        T::DTYPE
    }

    fn shape(&self) -> &[u64] {
        &self.shape
    }

    fn chunk_shape(&self) -> &[u64] {
        self.grid.chunk()
    }

    fn grid_shape(&self) -> Vec<u64> {
        self.grid.grid_shape()
    }

    fn chunks_in(&self, region: &Region) -> Vec<Vec<u64>> {
        self.grid.chunks_in(region)
    }

    fn chunk_region(&self, indices: &[u64]) -> Region {
        self.grid.region(indices)
    }

    fn chunk_name(&self, indices: &[u64]) -> String {
        format!("chunk {indices:?}")
    }

    fn fill_bytes(&self) -> &[u8] {
        &self.fill
    }

    fn read_chunk(&self, indices: &[u64]) -> Result<Vec<u8>, StoreError> {
        let region = self.grid.region(indices);
        let chunk: Vec<usize> = region.shape.iter().map(|&n| n as usize).collect();
        let mut out = ArrayD::<T>::from_elem(IxDyn(&chunk), T::default());
        // The part inside the array; the rest of an edge chunk stays 0 (the fill value).
        let inside = |axis: usize| {
            let start = region.start[axis] as usize;
            let end = (region.start[axis] + region.shape[axis]).min(self.shape[axis]) as usize;
            (start, end)
        };
        let from = self.array.slice_each_axis(|ax| {
            let (start, end) = inside(ax.axis.index());
            Slice::from(start..end)
        });
        out.slice_each_axis_mut(|ax| {
            let (start, end) = inside(ax.axis.index());
            Slice::from(0..end - start)
        })
        .assign(&from);
        let values = out.as_slice().expect("a new array is in standard order");
        Ok(bytemuck::cast_slice(values).to_vec())
    }

    fn resident_bytes(&self) -> Option<&[u8]> {
        // A view in standard order is one block; any other (a transposed or strided NumPy
        // array) is read chunk by chunk.
        self.array.as_slice().map(bytemuck::cast_slice)
    }

    fn nothing_stored_in(&self, _region: &Region) -> Result<bool, StoreError> {
        Ok(false)
    }
}

impl<T: StoreElement> Source for NdarraySource<'_, T> {
    fn image(&self) -> &ImageMetadata {
        &self.metadata
    }

    fn identity(&self) -> Value {
        json!({ "input_format": "array in memory", "input_shape": self.shape })
    }

    fn fingerprint(&self) -> Result<InputFingerprint, StoreError> {
        // Never compared: an array in memory is not resumable.
        Ok(InputFingerprint {
            files: 0,
            bytes: T::DTYPE.bytes_of(&self.shape).unwrap_or(u64::MAX),
            digest: 0,
        })
    }

    fn resumable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array3, ShapeBuilder};

    use super::*;

    fn values(source: &NdarraySource<'_, u16>, indices: &[u64]) -> Vec<u16> {
        bytemuck::pod_collect_to_vec(&source.read_chunk(indices).unwrap())
    }

    #[test]
    fn chunks_read_the_same_from_c_and_fortran_order_with_edges_zero_filled() {
        let c_order = Array3::<u16>::from_shape_fn((3, 5, 4), |(z, y, x)| (100 * z + 10 * y + x) as u16);
        let mut f_order = Array3::<u16>::zeros((3, 5, 4).f());
        f_order.assign(&c_order);
        for array in [c_order.view().into_dyn(), f_order.view().into_dyn()] {
            let source = NdarraySource::new(array).unwrap().with_chunks(&[2, 3, 4]).unwrap();
            assert_eq!(source.grid_shape(), vec![2, 2, 1]);
            // Chunk (1, 1, 0): z 2..4 (only 2 inside), y 3..6 (3, 4 inside).
            let chunk = values(&source, &[1, 1, 0]);
            assert_eq!(chunk.len(), 2 * 3 * 4);
            assert_eq!(&chunk[..4], &[230, 231, 232, 233]);
            assert_eq!(&chunk[4..8], &[240, 241, 242, 243]);
            assert!(chunk[8..].iter().all(|&v| v == 0), "{chunk:?}");
        }
    }

    #[test]
    fn tiles_read_straight_from_an_array_in_standard_order_as_chunk_by_chunk_from_any_other() {
        use std::sync::Arc;
        use std::sync::atomic::Ordering;

        use crate::store::TileReader;

        let c_order = Array3::<u16>::from_shape_fn((5, 7, 6), |(z, y, x)| (1 + 100 * z + 10 * y + x) as u16);
        let mut f_order = Array3::<u16>::zeros((5, 7, 6).f());
        f_order.assign(&c_order);
        fn reader(array: &Array3<u16>, resident: bool) -> TileReader<'_, u16> {
            let source = NdarraySource::new(array.view().into_dyn())
                .unwrap()
                .with_chunks(&[2, 3, 4])
                .unwrap();
            assert_eq!(source.resident_bytes().is_some(), resident);
            TileReader::<u16>::new(Arc::new(source), 1 << 20, Arc::new(|_: &Region| 1))
        }
        let (in_place, by_chunk) = (reader(&c_order, true), reader(&f_order, false));
        let regions = [
            Region::whole(&[5, 7, 6]),
            // Inside, across chunk edges.
            Region::new(vec![1, 2, 3], vec![3, 4, 2]),
            // Past the array's edge on two axes: the fill value there.
            Region::new(vec![3, 5, 2], vec![4, 4, 7]),
        ];
        for region in &regions {
            let got = in_place.read_into(region, vec![u16::MAX; 1000]).unwrap();
            assert_eq!(got, by_chunk.read(region).unwrap(), "{region:?}");
            let outside = region.len() - region.intersect(&Region::whole(&[5, 7, 6])).unwrap().len();
            assert_eq!(
                got.iter().filter(|&&v| v == 0).count(),
                outside,
                "{region:?}: zeros outside only"
            );
        }
        assert_eq!(in_place.stats.decoded.load(Ordering::Relaxed), 0, "no chunk copied out");
        assert!(by_chunk.stats.decoded.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn default_chunks_follow_the_image_axes_and_bad_arrays_are_refused() {
        let array = ndarray::ArrayD::<u8>::zeros(IxDyn(&[2, 3, 100, 300, 40]));
        let source = NdarraySource::new(array.view()).unwrap();
        assert_eq!(source.chunk_shape(), &[1, 1, 64, 256, 40]);
        assert!(!source.resumable());
        let flat = ndarray::ArrayD::<u8>::zeros(IxDyn(&[7]));
        assert!(NdarraySource::new(flat.view()).is_err());
        let empty = ndarray::ArrayD::<u8>::zeros(IxDyn(&[0, 4]));
        assert!(NdarraySource::new(empty.view()).is_err());
        let square = ndarray::ArrayD::<u8>::zeros(IxDyn(&[4, 4]));
        assert!(NdarraySource::new(square.view()).unwrap().with_chunks(&[2]).is_err());
    }
}
