//! The CPU backend: the SPEC §2 kernels in plain Rust, one file per method
//! (`nearest.rs`, `mean.rs`, `gaussian.rs`, `mode.rs`, and `extremum.rs` for min and max,
//! named like the shaders in `shaders/`).
//!
//! Each kernel works on one tile and is single-threaded for small tiles; the engine runs
//! many tiles at once on all cores, and large tiles are split across threads with rayon.
//! Every dtype of SPEC §5 is supported.

mod extremum;
mod gaussian;
mod mean;
mod mode;
mod nearest;

use crate::backend::{BackendError, BackendKind, Downsampler, Step};
use crate::dtype::DType;
use crate::method::{AxisStencil, Method};
use crate::tile::{Region, Tile, TileElement, TileRef};

/// Tiles above this many output voxels are split across threads inside the kernel.
pub(crate) const PARALLEL_MIN_OUTPUTS: usize = 1 << 18;

/// Multi-threaded CPU kernels (the global rayon pool, or the one installed by the engine).
#[derive(Debug, Clone, Default)]
pub struct CpuBackend;

impl CpuBackend {
    /// The CPU backend.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

/// Per-axis stencils of a step from `src` to `dst`, plus both shapes as `usize`.
pub(crate) struct StepGeometry {
    pub src_shape: Vec<usize>,
    pub src_strides: Vec<usize>,
    pub dst_shape: Vec<usize>,
    pub stencils: Vec<AxisStencil>,
}

impl StepGeometry {
    pub(crate) fn new(step: &Step, src: &Region, dst: &Region) -> Self {
        let stencils = step.stencils(src, dst);
        let to_usize = |s: &[u64]| {
            s.iter()
                .map(|&n| usize::try_from(n).expect("tile axis fits usize"))
                .collect()
        };
        Self {
            src_shape: to_usize(&src.shape),
            src_strides: src.strides(),
            dst_shape: to_usize(&dst.shape),
            stencils,
        }
    }
}

/// The single input index of output `o` for stencils that pick one voxel per output.
#[inline]
pub(crate) fn first_input(stencil: &AxisStencil, o: usize) -> usize {
    match stencil {
        AxisStencil::Identity { offset } => offset + o,
        AxisStencil::Pick { first } => first[o],
        AxisStencil::Window { start, .. } => start[o],
        AxisStencil::Taps { offsets, index, .. } => index[offsets[o]],
    }
}

/// The input window `(first, count)` of output `o` on an axis of a windowed method (mean,
/// mode, min, max).
#[inline]
pub(crate) fn window_of(stencil: &AxisStencil, o: usize) -> (usize, usize) {
    match stencil {
        AxisStencil::Identity { offset } => (offset + o, 1),
        AxisStencil::Pick { first } => (first[o], 1),
        AxisStencil::Window { start, count } => (start[o], count[o]),
        AxisStencil::Taps { .. } => unreachable!("windowed methods never build taps"),
    }
}

/// The span `[lo, hi)` of the input row that the last-axis stencil reads.
pub(crate) fn row_span(stencil: &AxisStencil, outputs: usize) -> (usize, usize) {
    if outputs == 0 {
        return (0, 0);
    }
    let (lo, _) = window_of(stencil, 0);
    let (first, count) = window_of(stencil, outputs - 1);
    (lo, first + count)
}

/// Fills `rows` with the source offset of every input row in the window of one output
/// row (`outer`: its index on every axis but the last) and returns how many there are.
pub(crate) fn window_rows(geometry: &StepGeometry, outer: &[usize], rows: &mut Vec<usize>) -> u64 {
    rows.clear();
    rows.push(0);
    let mut outer_count = 1u64;
    for (a, &o) in outer.iter().enumerate() {
        let (first, count) = window_of(&geometry.stencils[a], o);
        outer_count *= count as u64;
        let stride = geometry.src_strides[a];
        let previous = rows.len();
        for r in 0..previous {
            for k in 1..count {
                rows.push(rows[r] + (first + k) * stride);
            }
            rows[r] += first * stride;
        }
    }
    outer_count
}

/// Whether the CPU has AVX2, for the kernels that have a variant compiled for it (detected
/// once, then a cached load). Those variants run the same integer and IEEE operations in
/// the same order (Rust never fuses a multiply and an add), on wider vectors: their results
/// are bit-identical to the baseline build's.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Runs the step's kernel on a typed source slice over `src_region`.
fn run_typed<T: TileElement>(step: &Step, data: &[T], src_region: &Region, dst: &Region) -> Vec<T> {
    let geometry = StepGeometry::new(step, src_region, dst);
    match step.method {
        Method::Nearest => nearest::nearest(data, &geometry),
        Method::Mean => mean::mean(data, &geometry),
        Method::Gaussian => gaussian::gaussian(data, &geometry),
        Method::Mode => mode::mode(data, &geometry),
        Method::Min => extremum::extremum(data, &geometry, T::lesser),
        Method::Max => extremum::extremum(data, &geometry, T::greater),
    }
}

impl Downsampler for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn description(&self) -> String {
        format!("cpu, {} threads", rayon::current_num_threads())
    }

    fn supports(&self, method: Method, dtype: DType) -> bool {
        method.accepts(dtype)
    }

    fn downsample(&self, step: &Step, src: &Tile, dst: &Region) -> Result<Tile, BackendError> {
        let dtype = src.data.dtype();
        check_accepts(step.method, dtype)?;
        let data = crate::dispatch_dtype!(dtype, T => {
            let typed = T::view(&src.data).expect("tile data matches its dtype");
            T::wrap(run_typed::<T>(step, typed, &src.region, dst))
        });
        Ok(Tile::new(dst.clone(), data))
    }

    fn downsample_ref(&self, step: &Step, src: TileRef<'_>, dst: &Region) -> Result<Tile, BackendError> {
        check_accepts(step.method, src.dtype)?;
        let data = crate::dispatch_dtype!(src.dtype, T => match src.typed::<T>() {
            Some(typed) => T::wrap(run_typed::<T>(step, typed, src.region, dst)),
            // Bytes not aligned for the type: a copy that is.
            None => return self.downsample(step, &src.to_tile(), dst),
        });
        Ok(Tile::new(dst.clone(), data))
    }
}

fn check_accepts(method: Method, dtype: DType) -> Result<(), BackendError> {
    if method.accepts(dtype) {
        Ok(())
    } else {
        Err(BackendError::UnsupportedDType { backend: "cpu", dtype })
    }
}

/// Fills `dst` (C order, `shape`) row by row: `fill(scratch, outer_index, row)` for every
/// row of the innermost axis. Large outputs are split across rayon threads, each with its
/// own `scratch` from `init`.
pub(crate) fn fill_rows<T, S>(
    dst: &mut [T],
    shape: &[usize],
    init: impl Fn() -> S + Sync,
    fill: impl Fn(&mut S, &[usize], &mut [T]) + Sync,
) where
    T: Send,
{
    use rayon::prelude::*;
    let row_len = shape[shape.len() - 1];
    if row_len == 0 || dst.is_empty() {
        return;
    }
    let fill_group = |first_row: usize, group: &mut [T]| {
        let mut scratch = init();
        let mut index = row_index(shape, first_row);
        let outer = &shape[..shape.len() - 1];
        for row in group.chunks_exact_mut(row_len) {
            fill(&mut scratch, &index, row);
            for a in (0..outer.len()).rev() {
                index[a] += 1;
                if index[a] < outer[a] {
                    break;
                }
                index[a] = 0;
            }
        }
    };
    if dst.len() < PARALLEL_MIN_OUTPUTS {
        fill_group(0, dst);
        return;
    }
    let rows_per_group = (PARALLEL_MIN_OUTPUTS / 4 / row_len).max(1);
    dst.par_chunks_mut(rows_per_group * row_len)
        .enumerate()
        .for_each(|(g, group)| fill_group(g * rows_per_group, group));
}

/// The multi-index of row `row` over the outer axes of `shape`.
pub(crate) fn row_index(shape: &[usize], mut row: usize) -> Vec<usize> {
    let outer = &shape[..shape.len() - 1];
    let mut index = vec![0usize; outer.len()];
    for a in (0..outer.len()).rev() {
        index[a] = row % outer[a];
        row /= outer[a];
    }
    index
}
