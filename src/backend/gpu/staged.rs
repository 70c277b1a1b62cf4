//! Source tiles read straight into the host-visible memory the device copies them from.
//!
//! Without staging, a worker reads a tile into a host buffer and the slot's submission
//! thread copies it into the slot's upload buffer ([`super::upload`]): one more pass over
//! every tile's bytes, on a thread that does it alone. A worker that stages the tile takes
//! a mapped buffer from the context's pool first ([`StagedTile`]) and the tile reader
//! copies each decoded chunk into its rows there, on every thread that reads. The
//! submission thread then only unmaps it and records a device copy from it at the head of
//! the task's commands; once that submission is done the buffer is mapped again and goes
//! back to the pool.
//!
//! The pool is the context's, not a ring slot's, so that reading a tile holds no slot.

use std::marker::PhantomData;

use wgpu::WriteOnly;

use super::pool::BufferPool;
use super::program::Program;
use super::upload::UploadBuffer;
use crate::backend::BackendError;
use crate::dtype::{DType, Sample};
use crate::tile::{Region, RowTarget, RowWrite};

/// Mapped buffers that source tiles are staged in, each mapped (or being mapped again
/// after the submission that copied from it).
pub type StagingPool = BufferPool<UploadBuffer>;

/// A source tile's place in mapped host memory the device copies from, and the program
/// that will compute the tile's chain: what a worker takes before reading a tile that the
/// GPU computes ([`crate::Downsampler::stage_source`]).
pub struct StagedTile {
    pub(super) upload: UploadBuffer,
    pub(super) program: Program,
    pub(super) region: Region,
    pub(super) dtype: DType,
}

impl std::fmt::Debug for StagedTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StagedTile")
            .field("region", &self.region)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

impl StagedTile {
    /// Bytes of its source, padded to whole words: what the device copies.
    #[must_use]
    pub fn source_bytes(&self) -> u64 {
        source_bytes(self.dtype, &self.region)
    }

    /// Lets `read` write the tile's elements, in C order, into the staged memory (as
    /// [`StagedRows`] of `T`, the tile's data type); zeros pad it to whole words.
    ///
    /// # Errors
    /// [`BackendError::Gpu`] if the memory cannot be viewed.
    ///
    /// # Panics
    /// If `T` is not the tile's data type.
    pub fn write_with<T: Sample, R>(&mut self, read: impl FnOnce(StagedRows<'_, T>) -> R) -> Result<R, BackendError> {
        assert_eq!(T::DTYPE, self.dtype, "a staged tile is written as its own dtype");
        let bytes = self.region.len() * size_of::<T>();
        self.upload.write_with(source_bytes(self.dtype, &self.region), |view| {
            let (tile, mut padding) = view.split_at(bytes);
            padding.fill(0);
            read(StagedRows::new(tile))
        })
    }
}

/// The bytes of a source tile of `region` and `dtype` padded to whole words: what the device
/// copies, and what its staging buffer holds.
pub(super) fn source_bytes(dtype: DType, region: &Region) -> u64 {
    (region.len() as u64 * dtype.size() as u64).next_multiple_of(4)
}

/// Write-only rows of `T` in a staged tile, cut as the tile reader deals them
/// ([`crate::tile::split_rows`]).
pub struct StagedRows<'a, T> {
    bytes: WriteOnly<'a, [u8]>,
    element: PhantomData<T>,
}

// SAFETY: a `WriteOnly<'a, [u8]>` is an exclusive borrow of bytes that may only be
// written, as `&'a mut [u8]` is an exclusive borrow that may also be read; `&mut [u8]` is
// `Send`, and writing plain bytes from another thread is as sound through one as through
// the other. wgpu-types 30 implements `Send` for `WriteOnly<'_, T>` only where `T: Send`
// is sized, which leaves out slices, not because a slice would be unsound to send.
#[allow(unsafe_code)]
unsafe impl<T: Send> Send for StagedRows<'_, T> {}

impl<'a, T> StagedRows<'a, T> {
    fn new(bytes: WriteOnly<'a, [u8]>) -> Self {
        Self {
            bytes,
            element: PhantomData,
        }
    }
}

impl<T: Sample> RowTarget for StagedRows<'_, T> {
    fn len(&self) -> usize {
        self.bytes.len() / size_of::<T>()
    }

    fn split_at(self, mid: usize) -> (Self, Self) {
        let (first, rest) = self.bytes.split_at(mid * size_of::<T>());
        (Self::new(first), Self::new(rest))
    }

    fn empty() -> Self {
        Self::new(WriteOnly::default())
    }
}

impl<T: Sample> RowWrite<T> for StagedRows<'_, T> {
    fn write(&mut self, src: &[T]) {
        self.bytes.copy_from_slice(bytemuck::cast_slice(src));
    }

    fn fill(&mut self, value: T) {
        let row = vec![value; RowTarget::len(self)];
        self.write(&row);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{GpuBackend, backend_on_own_context};
    use super::StagedTile;
    use crate::backend::{ComputedLevels, Downsampler, Step, required_source};
    use crate::method::Method;
    use crate::store::{NdarraySource, StoreElement, TileReader};
    use crate::tile::{Region, Tile};

    /// The tile of `src` read through the tile reader (chunks of `chunks` over an array
    /// holding `array`) into staging memory for `chain`, and `chain` computed from the same
    /// region read into a host tile.
    fn stage_and_expect<T: StoreElement>(
        gpu: &GpuBackend,
        array: &Tile,
        chunks: &[u64],
        src: &Region,
        chain: &[(Step, Region)],
    ) -> (StagedTile, Vec<Tile>) {
        let data: &[T] = T::view(&array.data).expect("dtype");
        let shape: Vec<usize> = array.region.shape.iter().map(|&n| n as usize).collect();
        let view = ndarray::ArrayViewD::from_shape(ndarray::IxDyn(&shape), data).expect("shape");
        let source = Arc::new(
            NdarraySource::new(view)
                .expect("source")
                .with_chunks(chunks)
                .expect("chunks"),
        );
        let reader = || TileReader::new(source.clone(), 1 << 30, Arc::new(|_: &Region| 1));
        let host = Tile::new(src.clone(), T::wrap(reader().read(src).expect("read")));
        let expected = gpu.downsample_chain(&host, chain).expect("from a host tile");
        let mut staged = gpu
            .stage_source(T::DTYPE, src, chain)
            .expect("the chain runs in one program");
        let reader = reader();
        staged
            .write_with::<T, _>(|rows| reader.read_rows(src, rows))
            .expect("mapped")
            .expect("read");
        (staged, expected)
    }

    /// `chain`'s levels computed from `staged` alone.
    fn compute_alone(gpu: &GpuBackend, staged: StagedTile, chain: &[(Step, Region)]) -> ComputedLevels {
        let regions = chain.iter().map(|(_, region)| region.clone()).collect();
        let mut levels = gpu.downsample_staged(vec![(staged, regions)]).expect("computed");
        assert_eq!(levels.len(), 1, "one tile, one set of levels");
        levels.pop().expect("one")
    }

    /// Checks that `got` (read back into mapped memory) holds the tiles of `expected`.
    fn assert_levels<T: StoreElement>(got: &ComputedLevels, expected: &[Tile], what: &str) {
        assert!(
            matches!(got, ComputedLevels::Mapped { .. }),
            "{what}: read back into mapped memory"
        );
        assert_eq!(got.len(), expected.len(), "{what}");
        for (level, expected) in expected.iter().enumerate() {
            let (data, region) = got.level::<T>(level);
            assert_eq!(region, &expected.region, "{what}");
            assert!(
                data == T::view(&expected.data).expect("dtype"),
                "{what}, {} level {level}: staged and host tiles differ",
                T::DTYPE
            );
        }
    }

    /// `chain` computed from `src` staged (as [`stage_and_expect`] reads it) and from a host
    /// tile: the same bytes.
    fn staged_equals_host<T: StoreElement>(
        gpu: &GpuBackend,
        array: &Tile,
        chunks: &[u64],
        src: &Region,
        chain: &[(Step, Region)],
    ) {
        let (staged, expected) = stage_and_expect::<T>(gpu, array, chunks, src, chain);
        let got = compute_alone(gpu, staged, chain);
        assert_levels::<T>(&got, &expected, &format!("{src:?}"));
    }

    /// Steps of `method` halving every axis, from `src` to `levels` levels above it.
    fn halving_chain(method: Method, src: &Region, levels: usize) -> Vec<(Step, Region)> {
        let mut chain = Vec::new();
        let mut shape = src.shape.clone();
        for _ in 0..levels {
            let step = Step {
                method,
                factors: vec![2; shape.len()],
                src_shape: shape.clone(),
            };
            shape = step.dst_shape();
            chain.push((step, Region::whole(&shape)));
        }
        chain
    }

    #[test]
    fn a_tile_read_into_staging_memory_computes_as_a_host_tile_does() {
        // A context of its own, so that no other test's tiles share its pools.
        let Some(gpu) = backend_on_own_context("a_tile_read_into_staging_memory_computes_as_a_host_tile_does", |_| {})
        else {
            return;
        };
        // Chunks that do not divide the arrays, so the tile's rows are cut unevenly, and an
        // odd count of 8-bit elements, so the staged words are padded.
        let shape = [7u64, 13, 11];
        for method in [Method::Mean, Method::Nearest, Method::Gaussian] {
            let whole = Region::whole(&shape);
            let chain = halving_chain(method, &whole, 2);
            for dtype in [
                crate::DType::U8,
                crate::DType::I16,
                crate::DType::U16,
                crate::DType::F32,
            ] {
                let array = crate::synthetic::random_tile(dtype, &shape, 11);
                crate::dispatch_dtype!(dtype, T => {
                    staged_equals_host::<T>(&gpu, &array, &[3, 5, 4], &whole, &chain);
                });
            }
        }
        // A tile inside the array, as the engine reads one of several.
        let array = crate::synthetic::random_tile(crate::DType::U16, &[16, 24, 20], 5);
        let step = Step {
            method: Method::Mean,
            factors: vec![2, 2, 2],
            src_shape: vec![16, 24, 20],
        };
        let dst = Region::new(vec![2, 3, 1], vec![4, 6, 5]);
        let src = required_source(&step, &dst);
        staged_equals_host::<u16>(&gpu, &array, &[5, 7, 6], &src, &[(step, dst)]);
    }

    #[test]
    fn staging_and_readback_buffers_go_back_to_their_pools_and_serve_the_next_tiles() {
        // A context of its own, so that no other test's tiles share its pools.
        let Some(gpu) = backend_on_own_context(
            "staging_and_readback_buffers_go_back_to_their_pools_and_serve_the_next_tiles",
            |_| {},
        ) else {
            return;
        };
        let context = gpu.context();
        let mut first = None;
        for (task, side) in [(0, 32u64), (1, 16), (2, 32)] {
            let src = Region::whole(&[side, side, side]);
            let chain = halving_chain(Method::Mean, &src, 1);
            let mut staged = gpu.stage_source(crate::DType::U16, &src, &chain).expect("staged");
            match &first {
                None => first = Some(staged.upload.buffer().clone()),
                Some(buffer) => assert!(staged.upload.buffer() == buffer, "task {task} reuses the buffer"),
            }
            assert_eq!(context.staged_buffers(), 0, "task {task} holds the pool's only buffer");
            let value = 1000 + task;
            staged
                .write_with::<u16, _>(|mut rows| {
                    use crate::tile::RowWrite;
                    rows.fill(value);
                })
                .expect("mapped");
            let levels = compute_alone(&gpu, staged, &chain);
            let (data, _) = levels.level::<u16>(0);
            assert!(
                data.iter().all(|&v| v == value),
                "task {task}: the mean of what was staged"
            );
            assert_eq!(context.staged_buffers(), 1, "task {task}: back in the pool");
            assert_eq!(
                context.readback_buffers(),
                0,
                "task {task}: its levels hold the readback"
            );
            drop(levels);
            assert_eq!(
                context.readback_buffers(),
                1,
                "task {task}: the readback is back in the pool"
            );
        }
    }

    #[test]
    fn the_last_backend_on_a_context_releases_the_buffers_kept_for_next_tiles() {
        // A context of its own, so that no other test's backends use it.
        let Some(first) = backend_on_own_context(
            "the_last_backend_on_a_context_releases_the_buffers_kept_for_next_tiles",
            |_| {},
        ) else {
            return;
        };
        let context = first.context.clone();
        let shape = [16u64, 32, 32];
        let array = crate::synthetic::random_tile(crate::DType::U16, &shape, 3);
        let whole = Region::whole(&shape);
        let chain = halving_chain(Method::Mean, &whole, 2);
        // A host tile (a ring slot's device and upload buffers) and a staged one (the
        // staging and readback pools).
        staged_equals_host::<u16>(&first, &array, &[8, 16, 16], &whole, &chain);
        let kept = context.idle_buffer_bytes();
        let source_bytes = whole.num_elements() * 2;
        assert!(
            kept >= 3 * source_bytes,
            "the slot's source and upload buffers and the staging buffer: {kept} bytes"
        );
        let second = GpuBackend::using(context.clone());
        drop(first);
        assert_eq!(
            context.idle_buffer_bytes(),
            kept,
            "another backend still uses the context"
        );
        drop(second);
        assert_eq!(context.idle_buffer_bytes(), 0, "the last backend released them");
        // The context serves the next build.
        let third = GpuBackend::using(context.clone());
        staged_equals_host::<u16>(&third, &array, &[8, 16, 16], &whole, &chain);
        assert!(context.idle_buffer_bytes() >= 3 * source_bytes);
    }

    #[test]
    fn staged_tiles_computed_in_one_batch_each_get_their_own_levels() {
        // A context of its own, so that no other test's tiles share its pools.
        let Some(gpu) = backend_on_own_context("staged_tiles_computed_in_one_batch_each_get_their_own_levels", |_| {})
        else {
            return;
        };
        // Tiles of different methods (gaussian with its stencil tables), dtypes, shapes and
        // chain depths, a small one first, so that the slot's buffers hold the largest and
        // each tile's parameters and tables replace the last's between them.
        let tiles = [
            (Method::Mean, crate::DType::U8, [5u64, 9, 7], 1),
            (Method::Gaussian, crate::DType::U16, [16, 24, 20], 2),
            (Method::Nearest, crate::DType::F32, [8, 8, 8], 2),
            (Method::Gaussian, crate::DType::U8, [7, 13, 11], 1),
            (Method::Mean, crate::DType::I16, [12, 6, 10], 2),
        ];
        let mut batch = Vec::new();
        let mut expected = Vec::new();
        for (i, &(method, dtype, shape, levels)) in tiles.iter().enumerate() {
            let array = crate::synthetic::random_tile(dtype, &shape, 20 + i as u64);
            let whole = Region::whole(&shape);
            let chain = halving_chain(method, &whole, levels);
            let (staged, host) = crate::dispatch_dtype!(dtype, T => {
                stage_and_expect::<T>(&gpu, &array, &[3, 5, 4], &whole, &chain)
            });
            batch.push((staged, chain.into_iter().map(|(_, region)| region).collect()));
            expected.push(host);
        }
        let context = gpu.context();
        let got = gpu.downsample_staged(batch).expect("computed");
        assert_eq!(got.len(), tiles.len(), "one set of levels per tile");
        assert_eq!(context.staged_buffers(), tiles.len(), "every staging buffer is back");
        for (((method, dtype, shape, _), got), expected) in tiles.iter().zip(&got).zip(&expected) {
            let what = format!("{method} {dtype} {shape:?} in a batch");
            crate::dispatch_dtype!(*dtype, T => assert_levels::<T>(got, expected, &what));
        }
        drop(got);
        assert_eq!(
            context.readback_buffers(),
            tiles.len(),
            "each tile's readback is back in the pool once its levels are dropped"
        );
    }
}
