//! Turns a chain of steps into GPU work: the dispatches, their parameter blocks, and the
//! `aux` table of stencils they read. Pure: no wgpu, so it is tested without a GPU.
//!
//! Arrays are padded to 5 axes with leading 1s. The layout of a parameter block is written
//! down once, in `shaders/common.wgsl`; the constants here follow it.

use crate::backend::Step;
use crate::dtype::DType;
use crate::method::{AxisStencil, Interior, Method};
use crate::tile::Region;

/// Axes every kernel sees (shapes are padded with leading 1s).
pub const MAX_AXES: usize = 5;
/// u32 values in a parameter block: the shaders' uniform `params`, 32 rows of 4.
pub const PARAM_WORDS: usize = 128;

const P_SRC_SHAPE: usize = 0;
const P_SRC_STRIDE: usize = 5;
const P_DST_SHAPE: usize = 10;
const P_STENCIL: usize = 15;
const P_DST_LEN: usize = 20;
const P_AXIS: usize = 21;
const P_FIRST: usize = 22;
const P_LAST: usize = 23;
const P_OFFSET: usize = 24;
const P_MAXIMUM: usize = 29;
const P_ROW_LANES: usize = 31;
/// A gaussian pass axis's interior run: lo, hi, first, stride and taps, in that order.
const P_INTERIOR: usize = 32;
const P_ROW_WORDS: usize = 37;
const P_WEIGHTS: usize = 40;
/// The fused y–x pass's x axis: its interior run (laid out as at [`P_INTERIOR`]), the
/// offset in `aux` of its tiles' input columns, and its weights.
const P_X_INTERIOR: usize = 64;
const P_TILE_COLUMNS: usize = 69;
const P_X_WEIGHTS: usize = 72;
/// The fused z–y–x pass's y axis: its interior run (laid out as at [`P_INTERIOR`]), the
/// offset in `aux` of its tiles' input rows, the length of a row of its workgroup memory,
/// where the y pass's values start there, and y's weights.
const P_Y_INTERIOR: usize = 96;
const P_TILE_ROWS: usize = 101;
const P_TILE_WIDTH: usize = 102;
const P_Y_VALUES_AT: usize = 103;
const P_Y_WEIGHTS: usize = 104;
/// Invocations per workgroup (`WORKGROUP` in the shaders), `2^WORKGROUP_LOG2`.
pub const WORKGROUP: u32 = 1 << WORKGROUP_LOG2;
const WORKGROUP_LOG2: u32 = 8;
/// Workgroups per dispatch dimension that every adapter allows (WebGPU's minimum limit;
/// devices are opened with the adapter's own limits, never lower).
const MAX_GROUPS_PER_DIMENSION: u64 = 65_535;
/// The rows layout is taken while its workgroups do at most this many times the flat
/// layout's work (lanes past a row's end or the last rows idle): thin tiles stay flat.
const ROWS_MAX_OVERHEAD: (u64, u64) = (3, 2);
/// The most taps a gaussian axis's interior run passes in the parameter block (factors up to
/// 6); an axis with more reads every output's taps from `aux`.
pub const MAX_INTERIOR_TAPS: usize = P_X_INTERIOR - P_WEIGHTS;
/// `f32` values of the fused y–x pass's workgroup memory (`TILE_FLOATS` in
/// `shaders/gaussian.wgsl`), shared by a workgroup's rows.
const TILE_FLOATS: u64 = 3584;
/// `f32` values of the fused z–y–x pass's workgroup memory (`VOLUME_FLOATS` in
/// `shaders/gaussian.wgsl`): 16352 bytes, wgpu's downlevel limit, which every adapter meets.
const VOLUME_FLOATS: u64 = 4088;
const _: () = assert!(
    P_Y_WEIGHTS + MAX_INTERIOR_TAPS == PARAM_WORDS,
    "the parameter block holds y's weights"
);

/// Which shader a dispatch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `shaders/nearest.wgsl`
    Nearest,
    /// `shaders/mean.wgsl`
    Mean,
    /// `shaders/gaussian.wgsl`, one axis per dispatch, or the last two in one
    /// ([`Grid::Tiles`]), or the last three ([`Grid::Volume`])
    GaussianPass,
    /// `shaders/mode.wgsl`
    Mode,
    /// `shaders/extremum.wgsl`: min, or max where the parameter block says so
    Extremum,
}

impl Kernel {
    /// Every kernel, one shader module each.
    pub const ALL: [Kernel; 5] = [
        Kernel::Nearest,
        Kernel::Mean,
        Kernel::GaussianPass,
        Kernel::Mode,
        Kernel::Extremum,
    ];

    /// The shader's file name in `shaders/`.
    #[must_use]
    pub fn file_name(self) -> &'static str {
        match self {
            Kernel::Nearest => "nearest.wgsl",
            Kernel::Mean => "mean.wgsl",
            Kernel::GaussianPass => "gaussian.wgsl",
            Kernel::Mode => "mode.wgsl",
            Kernel::Extremum => "extremum.wgsl",
        }
    }

    /// Its entry points: every kernel's layouts ([`Grid::ENTRY_POINTS`]), and gaussian's
    /// fused y–x and z–y–x passes.
    #[must_use]
    pub fn entry_points(self) -> &'static [&'static str] {
        match self {
            Kernel::GaussianPass => &["main", "main_rows", "main_tiles", "main_volume"],
            _ => &Grid::ENTRY_POINTS,
        }
    }

    /// The kernel of a windowed method (everything but gaussian, which runs in passes).
    fn windowed(method: Method) -> Self {
        match method {
            Method::Nearest => Kernel::Nearest,
            Method::Mean => Kernel::Mean,
            Method::Mode => Kernel::Mode,
            Method::Min | Method::Max => Kernel::Extremum,
            Method::Gaussian => unreachable!("gaussian runs in passes"),
        }
    }
}

/// A buffer a dispatch reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Packed elements of level `k + i` of the chain (`0` is the source tile).
    Level(usize),
    /// An `f32` scratch buffer (gaussian intermediates), `0` or `1`.
    Scratch(usize),
}

/// One compute dispatch.
#[derive(Debug, Clone, PartialEq)]
pub struct Dispatch {
    /// The shader.
    pub kernel: Kernel,
    /// Its parameter block.
    pub params: [u32; PARAM_WORDS],
    /// What it reads.
    pub input: Slot,
    /// What it writes.
    pub output: Slot,
    /// How its invocations map to the output's words.
    pub grid: Grid,
}

impl Dispatch {
    /// The shaders' overrides (besides `ELEM`) and their values for this dispatch's
    /// pipeline: `NESTED_PLANES`, 1 where the rows layout's planes span several times or
    /// channels, whose indices its pipeline divides out; `RAGGED_ROWS`, 1 where its rows
    /// end inside a word.
    #[must_use]
    pub fn overrides(&self) -> [(&'static str, u32); 2] {
        let rows = !matches!(self.grid, Grid::Flat { .. });
        let nested = rows && self.params[P_DST_SHAPE] * self.params[P_DST_SHAPE + 1] != 1;
        let ragged = matches!(self.grid, Grid::Rows { ragged: true, .. });
        [("NESTED_PLANES", u32::from(nested)), ("RAGGED_ROWS", u32::from(ragged))]
    }
}

/// How a dispatch's invocations map to the words it writes (the layouts of
/// `shaders/common.wgsl`; an `f32` scratch output has one value to a word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grid {
    /// One invocation per word of the flat output, each dividing its 5-axis index out; the
    /// context spreads the workgroups over two dimensions.
    Flat {
        /// Output words.
        invocations: u32,
    },
    /// One invocation per word of a row, found without a division: this many workgroups
    /// along x (words of a row), y (rows) and z (planes: the three leading axes, whose
    /// indices are divided out once per invocation where the two first are not 1).
    Rows {
        /// Workgroups per dimension.
        groups: [u32; 3],
        /// The rows end inside a word: a row's words are those whose first output lies in
        /// it, and its last one holds outputs of the next rows too.
        ragged: bool,
    },
    /// Gaussian's fused y–x pass: the rows layout's grid, each workgroup making the y pass's
    /// values its outputs read in workgroup memory first.
    Tiles {
        /// Workgroups per dimension.
        groups: [u32; 3],
    },
    /// Gaussian's fused z–y–x pass: the rows layout's grid, each workgroup making the z
    /// pass's values its y pass reads, and those, in workgroup memory first.
    Volume {
        /// Workgroups per dimension.
        groups: [u32; 3],
    },
}

impl Grid {
    /// Every kernel's entry points: the flat layout's, then the rows layout's (gaussian has
    /// two more, [`Kernel::entry_points`]).
    pub const ENTRY_POINTS: [&'static str; 2] = ["main", "main_rows"];

    /// The kernel's entry point for this layout.
    #[must_use]
    pub fn entry_point(self) -> &'static str {
        match self {
            Grid::Flat { .. } => Self::ENTRY_POINTS[0],
            Grid::Rows { .. } => Self::ENTRY_POINTS[1],
            Grid::Tiles { .. } => "main_tiles",
            Grid::Volume { .. } => "main_volume",
        }
    }
}

/// All GPU work of one chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    /// Dispatches in order.
    pub dispatches: Vec<Dispatch>,
    /// Stencil tables, indexed by the parameter blocks.
    pub aux: Vec<u32>,
    /// Elements of each level buffer (`0` is the source).
    pub level_elements: Vec<u64>,
    /// `f32` values each scratch buffer must hold.
    pub scratch_elements: [u64; 2],
}

/// Elements of `dtype` per u32 word.
#[must_use]
pub fn elements_per_word(dtype: DType) -> u64 {
    match dtype.size() {
        1 => 4,
        2 => 2,
        _ => 1,
    }
}

/// The `ELEM` override of the shaders for a dtype, if the GPU holds it.
#[must_use]
pub fn elem_code(dtype: DType) -> Option<u32> {
    Some(match dtype {
        DType::U8 => 0,
        DType::U16 => 1,
        DType::U32 => 2,
        DType::I8 => 3,
        DType::I16 => 4,
        DType::I32 => 5,
        DType::F32 => 6,
        DType::U64 | DType::I64 | DType::F64 => return None,
    })
}

/// True if the GPU computes `method` on `dtype` within SPEC §2's agreement. Gaussian on
/// 32-bit integers is not: `f32` arithmetic cannot keep values up to 2³² within ±1. Mode
/// takes integer types only, as on the CPU.
#[must_use]
pub fn gpu_computes(method: Method, dtype: DType) -> bool {
    elem_code(dtype).is_some()
        && method.accepts(dtype)
        && !(method == Method::Gaussian && matches!(dtype, DType::U32 | DType::I32))
}

/// `values` right-aligned in five `u32`s after `fill`; `None` if a value exceeds `u32`.
fn pad(values: &[u64], fill: u32) -> Option<[u32; MAX_AXES]> {
    let mut out = [fill; MAX_AXES];
    let lead = MAX_AXES - values.len();
    for (slot, &v) in out[lead..].iter_mut().zip(values) {
        *slot = u32::try_from(v).ok()?;
    }
    Some(out)
}

fn strides(shape: &[u64]) -> Vec<u64> {
    let mut s = vec![1u64; shape.len()];
    for a in (0..shape.len().saturating_sub(1)).rev() {
        s[a] = s[a + 1].saturating_mul(shape[a + 1]);
    }
    s
}

/// A size or index as the kernels hold it; `None` beyond `u32` (the tile must be split).
fn to_u32(v: impl TryInto<u32>) -> Option<u32> {
    v.try_into().ok()
}

/// Appends (first, count) pairs for one axis; returns the table offset.
fn push_windows(aux: &mut Vec<u32>, stencil: &AxisStencil, outputs: usize) -> Option<u32> {
    let at = to_u32(aux.len())?;
    for o in 0..outputs {
        let (first, count) = match stencil {
            AxisStencil::Identity { offset } => (offset + o, 1),
            AxisStencil::Pick { first } => (first[o], 1),
            AxisStencil::Window { start, count } => (start[o], count[o]),
            AxisStencil::Taps { .. } => unreachable!("taps are not windows"),
        };
        aux.push(to_u32(first)?);
        aux.push(to_u32(count)?);
    }
    Some(at)
}

/// Appends a tap table (CSR offsets, then index/weight pairs); returns its offset.
fn push_taps(aux: &mut Vec<u32>, offsets: &[usize], index: &[usize], weight: &[f64]) -> Option<u32> {
    let at = to_u32(aux.len())?;
    for &o in offsets {
        aux.push(to_u32(o)?);
    }
    for (&i, &w) in index.iter().zip(weight) {
        aux.push(to_u32(i)?);
        #[allow(clippy::cast_possible_truncation)]
        aux.push((w as f32).to_bits());
    }
    Some(at)
}

/// A table for padded leading axes: one output, reading input 0.
fn push_unit_axis(aux: &mut Vec<u32>) -> Option<u32> {
    let at = to_u32(aux.len())?;
    aux.extend([0, 1]);
    Some(at)
}

/// Passes a gaussian axis's interior run ([`Interior`]) in the parameter block, at `block`
/// (lo, hi, first, stride, taps) and `weights`: its outputs read
/// `first + stride · (o − lo) + k` for tap `k`, with one weight list, so the kernel looks up
/// per-output taps in `aux` only near the edges, where reflection makes them differ. No run
/// (`lo == hi`) where there is none or its taps do not fit.
fn set_interior(params: &mut [u32; PARAM_WORDS], stencil: &AxisStencil, block: usize, weights: usize) -> Option<()> {
    let Some(run) = Interior::of(stencil).filter(|run| run.weights.len() <= MAX_INTERIOR_TAPS) else {
        return Some(());
    };
    params[block] = to_u32(run.outputs.start)?;
    params[block + 1] = to_u32(run.outputs.end)?;
    params[block + 2] = to_u32(run.first)?;
    params[block + 3] = to_u32(run.stride)?;
    params[block + 4] = to_u32(run.weights.len())?;
    for (slot, &w) in params[weights..weights + MAX_INTERIOR_TAPS]
        .iter_mut()
        .zip(&run.weights)
    {
        #[allow(clippy::cast_possible_truncation)]
        let w = (w as f32).to_bits();
        *slot = w;
    }
    Some(())
}

/// The grid of a dispatch whose destination shape is in `params`, `per_word` outputs to a
/// word: rows (its words written into `params`) where the rows grid is within
/// [`ROWS_MAX_OVERHEAD`] of the flat one, flat otherwise.
fn lay_out(params: &mut [u32; PARAM_WORDS], per_word: u64) -> Option<Grid> {
    let shape = dst_shape(params);
    // A ragged row's last word may start past the destination's last output: its index must
    // stay within u32.
    let ragged = !shape[4].is_multiple_of(per_word);
    let indexable = shape.iter().product::<u64>() + per_word <= u64::from(u32::MAX);
    if let Some((lanes, groups)) =
        rows_grid(&shape, per_word, indexable).filter(|(_, groups)| dense(&shape, per_word, groups))
    {
        set_rows(params, &shape, per_word, lanes)?;
        return Some(Grid::Rows {
            groups: groups_u32(groups),
            ragged,
        });
    }
    Some(Grid::Flat {
        invocations: to_u32(shape.iter().product::<u64>().div_ceil(per_word))?,
    })
}

/// The padded destination shape of a parameter block.
fn dst_shape(params: &[u32; PARAM_WORDS]) -> [u64; MAX_AXES] {
    std::array::from_fn(|a| u64::from(params[P_DST_SHAPE + a]))
}

/// True if the rows layout's `groups` do at most [`ROWS_MAX_OVERHEAD`] times the flat
/// layout's work on a destination of `shape`.
fn dense(shape: &[u64; MAX_AXES], per_word: u64, groups: &[u64; 3]) -> bool {
    let flat_work = shape
        .iter()
        .product::<u64>()
        .div_ceil(per_word)
        .div_ceil(u64::from(WORKGROUP));
    let (num, den) = ROWS_MAX_OVERHEAD;
    groups.iter().product::<u64>() * den <= flat_work * num
}

/// Writes the rows layout's lanes along a row and words per row into `params`.
fn set_rows(params: &mut [u32; PARAM_WORDS], shape: &[u64; MAX_AXES], per_word: u64, lanes: u32) -> Option<()> {
    params[P_ROW_LANES] = lanes;
    params[P_ROW_WORDS] = to_u32(shape[4].div_ceil(per_word))?;
    Some(())
}

/// Workgroup counts as a dispatch takes them (already checked against the limits).
fn groups_u32(groups: [u64; 3]) -> [u32; 3] {
    groups.map(|g| u32::try_from(g).expect("within MAX_GROUPS_PER_DIMENSION"))
}

/// The rows layout's workgroups for a padded destination `shape` with `per_word` outputs to
/// a word: `(log2 of the lanes along a row, groups along x, y, z)`, with the fewest
/// workgroups (the most lanes along a row among equals); `None` where a row does not hold
/// whole words and `ragged` does not allow that, or no split fits the dispatch limits.
fn rows_grid(shape: &[u64; MAX_AXES], per_word: u64, ragged: bool) -> Option<(u32, [u64; 3])> {
    rows_grids(shape, per_word, ragged).min_by_key(|(_, groups)| groups.iter().product::<u64>())
}

/// Every split of the rows layout within the dispatch limits, the most lanes along a row
/// first; none where a row does not hold whole words, unless `ragged` (a row's words are
/// then those whose first output lies in it, at most its outputs over `per_word`, rounded
/// up).
fn rows_grids(shape: &[u64; MAX_AXES], per_word: u64, ragged: bool) -> impl Iterator<Item = (u32, [u64; 3])> {
    let fits = ragged || shape[4].is_multiple_of(per_word);
    let words = shape[4].div_ceil(per_word);
    let (rows, planes) = (shape[3], shape[0] * shape[1] * shape[2]);
    (0..=WORKGROUP_LOG2)
        .rev()
        .filter(move |_| fits)
        .map(move |lanes| {
            let rows_per_group = 1u64 << (WORKGROUP_LOG2 - lanes);
            (
                lanes,
                [words.div_ceil(1 << lanes), rows.div_ceil(rows_per_group), planes],
            )
        })
        .filter(|(_, groups)| groups.iter().all(|&g| g <= MAX_GROUPS_PER_DIMENSION))
}

/// How gaussian's last passes run where a step reduces the last two or three axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaussianPasses {
    /// Each axis in a dispatch of its own.
    PerAxis,
    /// y and x in one dispatch ([`Grid::Tiles`]) wherever the tiles fit workgroup memory.
    FuseYx,
    /// z, y and x in one dispatch ([`Grid::Volume`]) wherever the tiles fit workgroup
    /// memory, else as [`GaussianPasses::FuseYx`].
    FuseZyx,
}

/// A fused pass's layout: the rows layout's split and, per workgroup column, the (first,
/// count) input columns its outputs read; for the z–y–x pass also per workgroup row the
/// input rows, and the rows' length in workgroup memory.
struct Tiles {
    /// log2 of a workgroup's lanes along a row.
    lanes: u32,
    /// Workgroups along x, y and z.
    groups: [u64; 3],
    /// (first input column, count) per workgroup column, flattened.
    columns: Vec<u32>,
    /// The z–y–x pass's (first input row, count) per workgroup row, flattened, and the
    /// floats of a row of its workgroup memory; `None` for the y–x pass.
    rows: Option<(Vec<u32>, u64)>,
}

impl Tiles {
    /// The axes the pass reduces besides the one its dispatch's parameters name.
    fn fused_axes(&self) -> usize {
        if self.rows.is_some() { 2 } else { 1 }
    }
}

/// The (first, count) inputs along `stencil`'s axis that each run of `per_tile` of its
/// `outputs` reads, and the largest count; `None` where `stencil` has no taps.
fn input_spans(stencil: &AxisStencil, outputs: usize, per_tile: usize) -> Option<(Vec<u32>, u64)> {
    let AxisStencil::Taps { offsets, index, .. } = stencil else {
        return None;
    };
    let mut spans = Vec::new();
    let mut widest = 0;
    for start in (0..outputs).step_by(per_tile) {
        let taps = &index[offsets[start]..offsets[(start + per_tile).min(outputs)]];
        let (first, last) = (*taps.iter().min()?, *taps.iter().max()?);
        let count = last - first + 1;
        widest = widest.max(count as u64);
        spans.extend([to_u32(first)?, to_u32(count)?]);
    }
    Some((spans, widest))
}

/// The fused y–x pass's layout for a padded destination `shape` whose x axis reads
/// `x`: among the rows layout's dense splits, the one with the fewest workgroups (the most
/// lanes among equals) whose every tile's input columns fit its row of workgroup memory;
/// `None` where there is none.
fn tiles_of(shape: &[u64; MAX_AXES], per_word: u64, x: &AxisStencil) -> Option<Tiles> {
    let outputs = usize::try_from(shape[4]).ok()?;
    rows_grids(shape, per_word, false)
        .filter(|(_, groups)| dense(shape, per_word, groups))
        .filter_map(|(lanes, groups)| {
            let width = TILE_FLOATS >> (WORKGROUP_LOG2 - lanes);
            let (columns, widest) = input_spans(x, outputs, usize::try_from(per_word << lanes).ok()?)?;
            (widest <= width).then_some(Tiles {
                lanes,
                groups,
                columns,
                rows: None,
            })
        })
        .min_by_key(|tiles| tiles.groups.iter().product::<u64>())
}

/// The fused z–y–x pass's layout for a padded destination `shape` whose y and x axes read
/// `y` and `x`: among the rows layout's dense splits whose tiles' z values (their input rows
/// by their input columns) and y values fit workgroup memory, the one computing the fewest
/// z values (tiles overlap by the taps' reach), then the fewest workgroups; `None` where
/// there is none.
fn volume_of(shape: &[u64; MAX_AXES], per_word: u64, y: &AxisStencil, x: &AxisStencil) -> Option<Tiles> {
    let (rows_out, columns_out) = (usize::try_from(shape[3]).ok()?, usize::try_from(shape[4]).ok()?);
    rows_grids(shape, per_word, false)
        .filter(|(_, groups)| dense(shape, per_word, groups))
        .filter_map(|(lanes, groups)| {
            let rows_per_group = (1u64 << (WORKGROUP_LOG2 - lanes)).min(shape[3]);
            let (columns, width) = input_spans(x, columns_out, usize::try_from(per_word << lanes).ok()?)?;
            let (rows, tallest) = input_spans(y, rows_out, usize::try_from(rows_per_group).ok()?)?;
            if (tallest + rows_per_group) * width > VOLUME_FLOATS {
                return None;
            }
            let counts = |spans: &[u32]| spans.iter().skip(1).step_by(2).map(|&n| u64::from(n)).sum::<u64>();
            let z_values = counts(&rows) * counts(&columns);
            let tiles = Tiles {
                lanes,
                groups,
                columns,
                rows: Some((rows, width)),
            };
            Some((z_values, tiles))
        })
        .min_by_key(|(z_values, tiles)| (*z_values, tiles.groups.iter().product::<u64>()))
        .map(|(_, tiles)| tiles)
}

/// Writes a fused pass's x axis (its taps, interior run and tiles' input columns) and
/// layout into `params`, and, for the z–y–x pass, its y axis; returns its grid.
fn set_fused(
    params: &mut [u32; PARAM_WORDS],
    aux: &mut Vec<u32>,
    tiles: &Tiles,
    [y, x]: [&AxisStencil; 2],
    per_word: u64,
) -> Option<Grid> {
    set_taps(params, aux, MAX_AXES - 1, x, P_X_INTERIOR, P_X_WEIGHTS)?;
    params[P_TILE_COLUMNS] = to_u32(aux.len())?;
    aux.extend(&tiles.columns);
    let shape = dst_shape(params);
    set_rows(params, &shape, per_word, tiles.lanes)?;
    let groups = groups_u32(tiles.groups);
    let Some((rows, width)) = &tiles.rows else {
        return Some(Grid::Tiles { groups });
    };
    set_taps(params, aux, MAX_AXES - 2, y, P_Y_INTERIOR, P_Y_WEIGHTS)?;
    params[P_TILE_ROWS] = to_u32(aux.len())?;
    aux.extend(rows);
    let tallest = rows.iter().skip(1).step_by(2).max().copied()?;
    params[P_TILE_WIDTH] = to_u32(*width)?;
    params[P_Y_VALUES_AT] = to_u32(u64::from(tallest) * width)?;
    Some(Grid::Volume { groups })
}

/// Writes padded axis `axis`'s tap table (into `aux`) and interior run into `params`.
fn set_taps(
    params: &mut [u32; PARAM_WORDS],
    aux: &mut Vec<u32>,
    axis: usize,
    stencil: &AxisStencil,
    interior: usize,
    weights: usize,
) -> Option<()> {
    let AxisStencil::Taps { offsets, index, weight } = stencil else {
        unreachable!("fused axes have taps")
    };
    params[P_STENCIL + axis] = push_taps(aux, offsets, index, weight)?;
    set_interior(params, stencil, interior, weights)
}

/// The fused pass a gaussian step with passes along `passes` takes to a padded destination
/// `shape`, as `gaussian` allows: z–y–x where the step reduces the last three axes and the
/// tiles fit, else y–x where it reduces the last two and they fit, else none.
fn fuse(
    gaussian: GaussianPasses,
    passes: &[usize],
    stencils: &[AxisStencil],
    shape: &[u64; MAX_AXES],
    per_word: u64,
) -> Option<Tiles> {
    let ndim = stencils.len();
    let reduces_last = |n: usize| ndim >= n && passes.ends_with(&(ndim - n..ndim).collect::<Vec<_>>());
    let (y, x) = (ndim >= 2).then(|| (&stencils[ndim - 2], &stencils[ndim - 1]))?;
    match gaussian {
        GaussianPasses::PerAxis => None,
        GaussianPasses::FuseZyx if reduces_last(3) => {
            volume_of(shape, per_word, y, x).or_else(|| tiles_of(shape, per_word, x))
        }
        GaussianPasses::FuseZyx | GaussianPasses::FuseYx => reduces_last(2).then(|| tiles_of(shape, per_word, x))?,
    }
}

/// Builds the program for `chain` starting from a source tile over `src_region`, or
/// `None` if a size or index does not fit the kernels' `u32` (the caller splits the tile).
/// Gaussian fuses its z, y and x passes, or its y and x passes, where it can
/// ([`GaussianPasses::FuseZyx`]).
///
/// # Panics
/// If a region does not cover what the next step needs (an engine bug).
#[must_use]
pub fn build(dtype: DType, src_region: &Region, chain: &[(Step, Region)]) -> Option<Program> {
    build_with(dtype, src_region, chain, GaussianPasses::FuseZyx)
}

/// [`build`], with gaussian's last two passes run as `gaussian` says.
///
/// # Panics
/// If a region does not cover what the next step needs (an engine bug).
#[must_use]
pub fn build_with(
    dtype: DType,
    src_region: &Region,
    chain: &[(Step, Region)],
    gaussian: GaussianPasses,
) -> Option<Program> {
    let per_word = elements_per_word(dtype);
    let ndim = src_region.ndim();
    let lead = MAX_AXES - ndim;
    let mut aux = Vec::new();
    let mut dispatches = Vec::new();
    let mut level_elements = vec![src_region.num_elements()];
    let mut scratch_elements = [0u64; 2];
    let mut src = src_region.clone();
    for (level, (step, dst)) in chain.iter().enumerate() {
        level_elements.push(dst.num_elements());
        let stencils = step.stencils(&src, dst);
        let dst_len = dst.num_elements();
        match step.method {
            Method::Nearest | Method::Mean | Method::Mode | Method::Min | Method::Max => {
                let mut params = [0u32; PARAM_WORDS];
                params[P_SRC_SHAPE..P_SRC_SHAPE + 5].copy_from_slice(&pad(&src.shape, 1)?);
                params[P_SRC_STRIDE..P_SRC_STRIDE + 5].copy_from_slice(&pad(&strides(&src.shape), 0)?);
                params[P_DST_SHAPE..P_DST_SHAPE + 5].copy_from_slice(&pad(&dst.shape, 1)?);
                for a in 0..MAX_AXES {
                    params[P_STENCIL + a] = if a < lead {
                        push_unit_axis(&mut aux)?
                    } else {
                        let outputs = usize::try_from(dst.shape[a - lead]).ok()?;
                        push_windows(&mut aux, &stencils[a - lead], outputs)?
                    };
                }
                params[P_DST_LEN] = to_u32(dst_len)?;
                params[P_MAXIMUM] = u32::from(step.method == Method::Max);
                let grid = lay_out(&mut params, per_word)?;
                dispatches.push(Dispatch {
                    kernel: Kernel::windowed(step.method),
                    params,
                    input: Slot::Level(level),
                    output: Slot::Level(level + 1),
                    grid,
                });
            }
            Method::Gaussian => {
                let passes: Vec<usize> = (0..ndim)
                    .filter(|&a| matches!(stencils[a], AxisStencil::Taps { .. }))
                    .collect();
                assert!(!passes.is_empty(), "a gaussian step reduces at least one axis");
                let fused = fuse(
                    gaussian,
                    &passes,
                    &stencils,
                    &pad(&dst.shape, 1)?.map(u64::from),
                    per_word,
                );
                let dispatched = passes.len() - fused.as_ref().map_or(0, Tiles::fused_axes);
                let mut shape = src.shape.clone();
                let mut input = Slot::Level(level);
                for (i, &axis) in passes[..dispatched].iter().enumerate() {
                    let first = i == 0;
                    let last = i + 1 == dispatched;
                    let mut out_shape = shape.clone();
                    out_shape[axis] = dst.shape[axis];
                    if let Some(tiles) = fused.as_ref().filter(|_| last) {
                        // The fused pass (y's or z's) writes the outputs of the axes after it.
                        let after = ndim - tiles.fused_axes()..ndim;
                        out_shape[after.clone()].copy_from_slice(&dst.shape[after]);
                    }
                    let mut offsets = [0u32; MAX_AXES];
                    if first {
                        // Identity axes are cropped to the destination in the first pass.
                        for a in 0..ndim {
                            if let AxisStencil::Identity { offset } = stencils[a] {
                                out_shape[a] = dst.shape[a];
                                offsets[a + lead] = to_u32(offset)?;
                            }
                        }
                    }
                    let AxisStencil::Taps {
                        offsets: csr,
                        index,
                        weight,
                    } = &stencils[axis]
                    else {
                        unreachable!()
                    };
                    let mut params = [0u32; PARAM_WORDS];
                    params[P_SRC_SHAPE..P_SRC_SHAPE + 5].copy_from_slice(&pad(&shape, 1)?);
                    params[P_SRC_STRIDE..P_SRC_STRIDE + 5].copy_from_slice(&pad(&strides(&shape), 0)?);
                    params[P_DST_SHAPE..P_DST_SHAPE + 5].copy_from_slice(&pad(&out_shape, 1)?);
                    params[P_STENCIL + axis + lead] = push_taps(&mut aux, csr, index, weight)?;
                    set_interior(&mut params, &stencils[axis], P_INTERIOR, P_WEIGHTS)?;
                    let out_len: u64 = out_shape.iter().product();
                    params[P_DST_LEN] = to_u32(out_len)?;
                    params[P_AXIS] = to_u32(axis + lead)?;
                    params[P_FIRST] = u32::from(first);
                    params[P_LAST] = u32::from(last);
                    params[P_OFFSET..P_OFFSET + 5].copy_from_slice(&offsets);
                    let output = if last {
                        Slot::Level(level + 1)
                    } else {
                        Slot::Scratch(i % 2)
                    };
                    if let Slot::Scratch(s) = output {
                        scratch_elements[s] = scratch_elements[s].max(out_len);
                    }
                    let grid = match &fused {
                        Some(tiles) if last => {
                            let yx = [&stencils[ndim - 2], &stencils[ndim - 1]];
                            set_fused(&mut params, &mut aux, tiles, yx, per_word)?
                        }
                        _ => lay_out(&mut params, if last { per_word } else { 1 })?,
                    };
                    dispatches.push(Dispatch {
                        kernel: Kernel::GaussianPass,
                        params,
                        input,
                        output,
                        grid,
                    });
                    input = output;
                    shape = out_shape;
                }
                assert_eq!(shape, dst.shape, "passes end on the destination shape");
            }
        }
        src = dst.clone();
    }
    Some(Program {
        dispatches,
        aux,
        level_elements,
        scratch_elements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::required_source;

    const P_INTERIOR_LO: usize = P_INTERIOR;
    const P_INTERIOR_HI: usize = P_INTERIOR + 1;
    const P_INTERIOR_FIRST: usize = P_INTERIOR + 2;
    const P_INTERIOR_STRIDE: usize = P_INTERIOR + 3;
    const P_INTERIOR_TAPS: usize = P_INTERIOR + 4;

    fn step(method: Method, factors: &[u32], shape: &[u64]) -> Step {
        Step {
            method,
            factors: factors.to_vec(),
            src_shape: shape.to_vec(),
        }
    }

    #[test]
    fn mean_chain_pads_to_five_axes() {
        let s1 = step(Method::Mean, &[2, 2], &[7, 9]);
        let s2 = step(Method::Mean, &[2, 2], &[4, 5]);
        let program = build(
            DType::U16,
            &Region::whole(&[7, 9]),
            &[(s1, Region::whole(&[4, 5])), (s2, Region::whole(&[2, 3]))],
        )
        .unwrap();
        assert_eq!(program.dispatches.len(), 2);
        let p = &program.dispatches[0].params;
        assert_eq!(&p[0..5], &[1, 1, 1, 7, 9]);
        assert_eq!(&p[5..10], &[0, 0, 0, 9, 1]);
        assert_eq!(&p[10..15], &[1, 1, 1, 4, 5]);
        assert_eq!(p[20], 20);
        // u16: two per word; rows of 5 end inside a word: 3 words start in each row.
        let grid = Grid::Rows {
            groups: [1, 1, 1],
            ragged: true,
        };
        assert_eq!(program.dispatches[0].grid, grid);
        assert_eq!(program.dispatches[0].params[P_ROW_WORDS], 3);
        assert_eq!(program.level_elements, vec![63, 20, 6]);
        // The last window of the 7-long axis has one voxel.
        let y_table = p[15 + 3] as usize;
        assert_eq!(&program.aux[y_table + 6..y_table + 8], &[6, 1]);
    }

    #[test]
    fn gaussian_makes_one_pass_per_reduced_axis() {
        let s = step(Method::Gaussian, &[1, 2, 2], &[3, 10, 12]);
        let dst = Region::new(vec![1, 0, 0], vec![1, 5, 6]);
        let program = build_with(
            DType::F32,
            &Region::whole(&[3, 10, 12]),
            &[(s, dst)],
            GaussianPasses::PerAxis,
        )
        .unwrap();
        assert_eq!(program.dispatches.len(), 2);
        let first = &program.dispatches[0];
        assert_eq!((first.input, first.output), (Slot::Level(0), Slot::Scratch(0)));
        // The identity axis is cropped to 1 with offset 1 in the first pass.
        assert_eq!(&first.params[10..15], &[1, 1, 1, 5, 12]);
        assert_eq!(first.params[24 + 2], 1);
        let last = &program.dispatches[1];
        assert_eq!((last.input, last.output), (Slot::Scratch(0), Slot::Level(1)));
        assert_eq!(&last.params[10..15], &[1, 1, 1, 5, 6]);
        assert_eq!(program.scratch_elements[0], 60);
    }

    #[test]
    fn rows_that_hold_whole_words_take_the_rows_layout() {
        // uint16 [16, 128, 128] outputs: 64 words a row, 64 lanes by 4 rows per workgroup
        // (32 lanes by 8 rows makes as many workgroups; the wider one is kept).
        let s = step(Method::Mean, &[2, 2, 2], &[32, 256, 256]);
        let dst = Region::whole(&[16, 128, 128]);
        let program = build(DType::U16, &Region::whole(&[32, 256, 256]), &[(s, dst)]).unwrap();
        let d = &program.dispatches[0];
        let grid = Grid::Rows {
            groups: [1, 32, 16],
            ragged: false,
        };
        assert_eq!(d.grid, grid);
        assert_eq!((d.params[P_ROW_LANES], d.params[P_ROW_WORDS]), (6, 64));
        assert_eq!(d.grid.entry_point(), "main_rows");
        assert_eq!(d.overrides(), [("NESTED_PLANES", 0), ("RAGGED_ROWS", 0)]);
    }

    #[test]
    fn rows_that_end_inside_a_word_take_the_ragged_rows_layout() {
        // uint8 rows of 6 outputs: a row's words are those whose first output lies in it,
        // at most 2 (rows starting at outputs 0, 6, 12, 18 hold words from 0, 2, 3, 5).
        let s = step(Method::Nearest, &[1, 2], &[4, 12]);
        let program = build(DType::U8, &Region::whole(&[4, 12]), &[(s, Region::whole(&[4, 6]))]).unwrap();
        let d = &program.dispatches[0];
        let grid = Grid::Rows {
            groups: [1, 1, 1],
            ragged: true,
        };
        assert_eq!(d.grid, grid);
        // One workgroup of 64 lanes by 4 rows (the widest split of one workgroup).
        assert_eq!((d.params[P_ROW_LANES], d.params[P_ROW_WORDS]), (6, 2));
        assert_eq!(d.grid.entry_point(), "main_rows");
        assert_eq!(d.overrides(), [("NESTED_PLANES", 0), ("RAGGED_ROWS", 1)]);
        // Gaussian's fused passes need whole words: ragged rows take a pass per axis.
        let s = step(Method::Gaussian, &[2, 2, 2], &[32, 256, 250]);
        let program = build(
            DType::U16,
            &Region::whole(&[32, 256, 250]),
            &[(s, Region::whole(&[16, 128, 125]))],
        )
        .unwrap();
        let grids: Vec<_> = program.dispatches.iter().map(|d| d.grid.entry_point()).collect();
        assert_eq!(grids, ["main_rows"; 3]);
        assert_eq!(program.dispatches[2].overrides()[1], ("RAGGED_ROWS", 1));
        // Rows past what a u32 index can reach stay flat: 2^32 − 1 uint16 outputs, rows of 3.
        let mut params = [0u32; PARAM_WORDS];
        params[P_DST_SHAPE..P_DST_SHAPE + 5].copy_from_slice(&[1, 5, 17, 16_843_009, 3]);
        assert!(matches!(lay_out(&mut params, 2), Some(Grid::Flat { .. })));
    }

    #[test]
    fn tiles_of_several_times_and_channels_take_the_rows_layout() {
        // The shapes of the kernel tests' reference check (tests/kernels.rs).
        for (shape, factors) in [
            (vec![3u64, 8, 64, 128], vec![1u32, 2, 2, 2]),
            (vec![2, 3, 4, 64, 128], vec![1, 1, 2, 2, 2]),
        ] {
            for dtype in [DType::U8, DType::U16, DType::F32] {
                for method in [Method::Mean, Method::Gaussian] {
                    let s = step(method, &factors, &shape);
                    let dst = Region::whole(&s.dst_shape());
                    let program = build(dtype, &Region::whole(&shape), &[(s, dst)]).unwrap();
                    for d in &program.dispatches {
                        assert!(
                            matches!(
                                d.grid,
                                Grid::Rows { groups: [_, _, 12], .. }
                                    | Grid::Tiles { groups: [_, _, 12] }
                                    | Grid::Volume { groups: [_, _, 12] }
                            ),
                            "{method} {dtype} {shape:?}: {:?}",
                            d.grid
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn gaussian_intermediates_are_one_to_a_word() {
        // Rows of 13 f32 after the first pass, of 7 uint16 (not whole words) after the last.
        let s = step(Method::Gaussian, &[2, 2], &[10, 13]);
        let program = build(DType::U16, &Region::whole(&[10, 13]), &[(s, Region::whole(&[5, 7]))]).unwrap();
        let [first, last] = &program.dispatches[..] else {
            panic!("two passes")
        };
        let grid = |ragged| Grid::Rows {
            groups: [1, 1, 1],
            ragged,
        };
        assert_eq!(first.grid, grid(false));
        assert_eq!(first.params[P_ROW_WORDS], 13);
        assert_eq!(last.grid, grid(true));
    }

    #[test]
    fn thin_tiles_stay_flat_and_grids_keep_to_the_dispatch_limits() {
        // 1000 rows of one f32: a workgroup per row would idle 255 of its 256 lanes.
        let mut params = [0u32; PARAM_WORDS];
        params[P_DST_SHAPE..P_DST_SHAPE + 5].copy_from_slice(&[1, 1, 1000, 1, 1]);
        assert_eq!(lay_out(&mut params, 1), Some(Grid::Flat { invocations: 1000 }));
        assert_eq!(params[P_ROW_WORDS], 0);
        // With 256 per row it is as dense as flat, one workgroup per row.
        params[P_DST_SHAPE + 4] = 256;
        let grid = Grid::Rows {
            groups: [1, 1, 1000],
            ragged: false,
        };
        assert_eq!(lay_out(&mut params, 1), Some(grid));
        // The third axis from the end maps to z, within WebGPU's 65535 workgroups.
        assert!(rows_grid(&[1, 1, 65_535, 16, 64], 1, false).is_some());
        assert_eq!(rows_grid(&[1, 1, 65_536, 16, 64], 1, false), None);
        // Ragged rows only where asked for: 32 words start in each row of 63 uint16.
        assert_eq!(rows_grid(&[1, 1, 2, 16, 63], 2, false), None);
        assert_eq!(rows_grid(&[1, 1, 2, 16, 63], 2, true), Some((5, [1, 2, 2])));
        // Several times and channels in one tile: their planes, flattened, are z.
        assert_eq!(rows_grid(&[3, 2, 2, 16, 64], 2, false), Some((5, [1, 2, 12])));
        assert_eq!(rows_grid(&[2, 2, 16_384, 16, 64], 1, false), None, "65536 planes");
        assert_eq!(rows_grid(&[2, 2, 16_383, 16, 64], 1, false), Some((6, [1, 4, 65_532])));
    }

    /// Output `o`'s (input, weight bits) taps as a gaussian pass's `aux` table holds them.
    fn aux_taps(program: &Program, params: &[u32; PARAM_WORDS], axis: usize, o: usize) -> Vec<(u32, u32)> {
        let table = params[P_STENCIL + axis] as usize;
        let outputs = params[P_DST_SHAPE + axis] as usize;
        let taps = table + outputs + 1;
        (program.aux[table + o]..program.aux[table + o + 1])
            .map(|t| {
                let at = taps + 2 * t as usize;
                (program.aux[at], program.aux[at + 1])
            })
            .collect()
    }

    #[test]
    fn gaussian_interior_runs_pass_the_taps_the_aux_table_holds() {
        // Factors 2 and 3 (8 and 11 taps), and 8 (30 taps: beyond the parameter block).
        let s = step(Method::Gaussian, &[2, 3, 8], &[40, 61, 200]);
        // The whole of the first two axes (reflected at both ends), part of the third.
        let dst = Region::new(vec![0, 0, 1], vec![20, 21, 19]);
        let src = required_source(&s, &dst);
        let program = build_with(DType::U16, &src, &[(s, dst)], GaussianPasses::PerAxis).unwrap();
        let mut runs = 0;
        for d in &program.dispatches {
            let p = &d.params;
            let axis = p[P_AXIS] as usize;
            let (lo, hi) = (p[P_INTERIOR_LO] as usize, p[P_INTERIOR_HI] as usize);
            if axis == MAX_AXES - 1 {
                assert_eq!(lo, hi, "30 taps do not fit: no interior run");
                continue;
            }
            assert!(hi > lo + 1, "axis {axis}: an interior run");
            runs += 1;
            let taps = p[P_INTERIOR_TAPS] as usize;
            for o in 0..p[P_DST_SHAPE + axis] as usize {
                let expected: Vec<(i64, u32)> = aux_taps(&program, p, axis, o)
                    .into_iter()
                    .map(|(i, w)| (i64::from(i), w))
                    .collect();
                let first = i64::from(p[P_INTERIOR_FIRST]) + i64::from(p[P_INTERIOR_STRIDE]) * (o as i64 - lo as i64);
                let shared: Vec<(i64, u32)> = (0..taps).map(|k| (first + k as i64, p[P_WEIGHTS + k])).collect();
                // Inside the run both give the same taps in the same order; outside, the
                // per-output taps differ (reflection), which is why they stay in aux.
                assert_eq!((lo..hi).contains(&o), shared == expected, "axis {axis} output {o}");
            }
        }
        assert_eq!(runs, 2);
    }

    #[test]
    fn gaussian_fuses_y_and_x_where_every_tiles_input_columns_fit_workgroup_memory() {
        // uint16 [32, 256, 256] → [16, 128, 128]: z in a pass of its own, then y and x in one
        // dispatch reading z's values, with no scratch buffer for y's.
        let s = step(Method::Gaussian, &[2, 2, 2], &[32, 256, 256]);
        let program = build_with(
            DType::U16,
            &Region::whole(&[32, 256, 256]),
            &[(s, Region::whole(&[16, 128, 128]))],
            GaussianPasses::FuseYx,
        )
        .unwrap();
        let [z, yx] = &program.dispatches[..] else {
            panic!("two dispatches")
        };
        assert_eq!((z.params[P_AXIS], z.output), (2, Slot::Scratch(0)));
        assert_eq!(
            (yx.params[P_AXIS], yx.input, yx.output),
            (3, Slot::Scratch(0), Slot::Level(1))
        );
        // 64 words a row: 64 lanes by 4 rows, as the rows layout would split it.
        assert_eq!(yx.grid, Grid::Tiles { groups: [1, 32, 16] });
        assert_eq!(yx.grid.entry_point(), "main_tiles");
        assert_eq!(&yx.params[P_DST_SHAPE..P_DST_SHAPE + 5], &[1, 1, 16, 128, 128]);
        assert_eq!(program.scratch_elements, [16 * 256 * 256, 0]);
        // The x axis's interior run sits in its own block, y's where every pass has it.
        assert!(yx.params[P_X_INTERIOR + 1] > yx.params[P_X_INTERIOR] + 1);
        assert_eq!(yx.params[P_X_INTERIOR + 4], 8, "factor 2: 8 taps");
        assert_eq!(yx.params[P_INTERIOR_TAPS], 8);
        // Per tile the input columns its outputs read (128 outputs read 0..=258, clipped to
        // the row's 256).
        let at = yx.params[P_TILE_COLUMNS] as usize;
        assert_eq!(&program.aux[at..at + 2], &[0, 256]);

        // Asked not to, or where y is not reduced, the passes stay one per axis.
        let s = step(Method::Gaussian, &[2, 2, 2], &[32, 256, 256]);
        let dst = Region::whole(&[16, 128, 128]);
        let per_axis = build_with(
            DType::U16,
            &Region::whole(&[32, 256, 256]),
            &[(s, dst)],
            GaussianPasses::PerAxis,
        )
        .unwrap();
        assert_eq!(per_axis.dispatches.len(), 3);
        let s = step(Method::Gaussian, &[2, 1, 2], &[32, 256, 256]);
        let dst = Region::whole(&[16, 256, 128]);
        let program = build(DType::U16, &Region::whole(&[32, 256, 256]), &[(s, dst)]).unwrap();
        assert!(program.dispatches.iter().all(|d| !matches!(d.grid, Grid::Tiles { .. })));
        assert_eq!(program.dispatches.len(), 2);
    }

    #[test]
    fn each_fused_tile_reads_only_input_columns_it_holds() {
        // Factors 2 and 3 on every kernel element size, a region inside the level (halos on
        // both sides) and regions at its edges (reflection), y/x only and 3-D.
        let mut fused = 0;
        for dtype in [DType::U8, DType::U16, DType::F32] {
            for (factors, level, dst) in [
                (vec![2, 2], vec![300u64, 1000], Region::new(vec![0, 0], vec![150, 500])),
                (
                    vec![1, 3, 3],
                    vec![4, 90, 800],
                    Region::new(vec![1, 6, 12], vec![2, 24, 240]),
                ),
                (
                    vec![2, 2, 2],
                    vec![20, 64, 2048],
                    Region::new(vec![2, 8, 256], vec![8, 24, 768]),
                ),
            ] {
                let s = step(Method::Gaussian, &factors, &level);
                let src = required_source(&s, &dst);
                let program = build_with(dtype, &src, &[(s, dst.clone())], GaussianPasses::FuseYx).unwrap();
                let last = program.dispatches.last().unwrap();
                let Grid::Tiles { groups } = last.grid else {
                    panic!("{dtype} {factors:?}: not fused")
                };
                fused += 1;
                let p = &last.params;
                let lanes = p[P_ROW_LANES];
                let width = TILE_FLOATS >> (WORKGROUP_LOG2 - lanes);
                let per_tile = (elements_per_word(dtype) << lanes) as usize;
                let outputs = p[P_DST_SHAPE + 4] as usize;
                let table = p[P_TILE_COLUMNS] as usize;
                assert_eq!(groups[0] as usize, outputs.div_ceil(per_tile));
                let x_axis = MAX_AXES - 1;
                for o in 0..outputs {
                    let tile = table + 2 * (o / per_tile);
                    let (first, count) = (program.aux[tile], program.aux[tile + 1]);
                    assert!(
                        u64::from(count) <= width,
                        "{dtype} {factors:?}: a tile's row of workgroup memory"
                    );
                    for (j, _) in aux_taps(&program, p, x_axis, o) {
                        assert!(
                            (first..first + count).contains(&j),
                            "{dtype} {factors:?} output {o} reads {j}"
                        );
                    }
                }
            }
        }
        assert_eq!(fused, 9);
        // uint8 with factor 4: 2^lanes words of 4 outputs read 16 · 2^lanes + 10 columns, more
        // than a row of workgroup memory (14 · 2^lanes) whatever the split.
        let s = step(Method::Gaussian, &[4, 4], &[64, 1024]);
        let program = build(
            DType::U8,
            &Region::whole(&[64, 1024]),
            &[(s, Region::whole(&[16, 256]))],
        )
        .unwrap();
        assert_eq!(program.dispatches.len(), 2, "one pass per axis");
    }

    #[test]
    fn gaussian_fuses_z_y_and_x_where_every_tiles_values_fit_workgroup_memory() {
        // uint16 [32, 256, 256] → [16, 128, 128]: one dispatch from the source tile, no
        // scratch buffer.
        let s = step(Method::Gaussian, &[2, 2, 2], &[32, 256, 256]);
        let program = build(
            DType::U16,
            &Region::whole(&[32, 256, 256]),
            &[(s, Region::whole(&[16, 128, 128]))],
        )
        .unwrap();
        let [zyx] = &program.dispatches[..] else {
            panic!("one dispatch")
        };
        assert_eq!(
            (zyx.params[P_AXIS], zyx.params[P_FIRST], zyx.input, zyx.output),
            (2, 1, Slot::Level(0), Slot::Level(1))
        );
        assert_eq!(zyx.grid.entry_point(), "main_volume");
        assert_eq!(&zyx.params[P_DST_SHAPE..P_DST_SHAPE + 5], &[1, 1, 16, 128, 128]);
        assert_eq!(program.scratch_elements, [0, 0]);
        // Of the dense splits that fit, 16 lanes by 16 rows computes the fewest z values: 16
        // output rows read 38 input rows, 32 outputs 70 columns (54 rows of 70 floats), so
        // the tiles' z values are 1.25 times the z pass's (32 lanes by 8 rows: 1.38).
        assert_eq!(zyx.grid, Grid::Volume { groups: [4, 8, 16] });
        assert_eq!((zyx.params[P_TILE_WIDTH], zyx.params[P_Y_VALUES_AT]), (70, 38 * 70));
        assert_eq!(zyx.params[P_Y_INTERIOR + 4], 8, "factor 2: 8 taps");
        let rows = zyx.params[P_TILE_ROWS] as usize;
        assert_eq!(&program.aux[rows..rows + 4], &[0, 35, 29, 38], "reflected at the top");

        // uint8 tiles' values do not fit whatever the split: z's pass, then y and x fused.
        let s = step(Method::Gaussian, &[2, 2, 2], &[32, 256, 256]);
        let program = build(
            DType::U8,
            &Region::whole(&[32, 256, 256]),
            &[(s, Region::whole(&[16, 128, 128]))],
        )
        .unwrap();
        let grids: Vec<_> = program.dispatches.iter().map(|d| d.grid.entry_point()).collect();
        assert_eq!(grids, ["main_rows", "main_tiles"]);
        // Where z is not reduced, y and x fuse as before.
        let s = step(Method::Gaussian, &[1, 2, 2], &[32, 256, 256]);
        let program = build(
            DType::U16,
            &Region::whole(&[32, 256, 256]),
            &[(s, Region::whole(&[32, 128, 128]))],
        )
        .unwrap();
        assert!(matches!(
            program.dispatches[..],
            [Dispatch {
                grid: Grid::Tiles { .. },
                ..
            }]
        ));
    }

    #[test]
    fn each_volume_tile_reads_only_input_rows_and_columns_it_holds() {
        // A region inside the level (halos on both sides), one at its edges (reflection),
        // several times and channels in one tile, on both kernel element sizes that fit.
        let mut fused = 0;
        for dtype in [DType::U16, DType::I16, DType::F32] {
            for (factors, level, dst) in [
                (
                    vec![2, 2, 2],
                    vec![20, 64, 2048],
                    Region::new(vec![2, 8, 256], vec![8, 24, 768]),
                ),
                (vec![2, 2, 2], vec![9, 61, 300], Region::whole(&[5, 31, 150])),
                (
                    vec![1, 1, 2, 2, 2],
                    vec![2, 3, 8, 40, 256],
                    Region::new(vec![0, 1, 1, 0, 0], vec![2, 2, 3, 20, 128]),
                ),
            ] {
                let s = step(Method::Gaussian, &factors, &level);
                let src = required_source(&s, &dst);
                let program = build(dtype, &src, &[(s, dst.clone())]).unwrap();
                let [last] = &program.dispatches[..] else {
                    panic!("{dtype} {factors:?}: not one dispatch")
                };
                let Grid::Volume { groups } = last.grid else {
                    panic!("{dtype} {factors:?}: not fused")
                };
                fused += 1;
                let p = &last.params;
                let rows_per_group = 1usize << (WORKGROUP_LOG2 - p[P_ROW_LANES]);
                let per_tile = (elements_per_word(dtype) << p[P_ROW_LANES]) as usize;
                let (rows, columns) = (p[P_DST_SHAPE + 3] as usize, p[P_DST_SHAPE + 4] as usize);
                assert_eq!(
                    groups[..2],
                    [columns.div_ceil(per_tile) as u32, rows.div_ceil(rows_per_group) as u32]
                );
                let width = p[P_TILE_WIDTH];
                let span =
                    |table: usize, tile: usize| (program.aux[table + 2 * tile], program.aux[table + 2 * tile + 1]);
                for (axis, outputs, per_tile, table) in [
                    (MAX_AXES - 2, rows, rows_per_group, P_TILE_ROWS),
                    (MAX_AXES - 1, columns, per_tile, P_TILE_COLUMNS),
                ] {
                    for o in 0..outputs {
                        let (first, count) = span(p[table] as usize, o / per_tile);
                        for (j, _) in aux_taps(&program, p, axis, o) {
                            assert!(
                                (first..first + count).contains(&j),
                                "{dtype} {factors:?} axis {axis} output {o} reads {j}"
                            );
                        }
                    }
                }
                for tile in 0..groups[0] as usize {
                    assert!(span(p[P_TILE_COLUMNS] as usize, tile).1 <= width);
                }
                let tallest = (0..groups[1] as usize)
                    .map(|t| span(p[P_TILE_ROWS] as usize, t).1)
                    .max()
                    .unwrap();
                assert_eq!(p[P_Y_VALUES_AT], tallest * width);
                let y_rows = rows_per_group.min(rows) as u32;
                assert!(
                    u64::from((tallest + y_rows) * width) <= VOLUME_FLOATS,
                    "{dtype} {factors:?}: workgroup memory"
                );
            }
        }
        assert_eq!(fused, 9);
    }

    #[test]
    fn the_fused_passes_workgroup_memory_is_the_shaders() {
        let shader = include_str!("../../../shaders/gaussian.wgsl");
        assert!(shader.contains(&format!("const TILE_FLOATS: u32 = {TILE_FLOATS}u;")));
        assert!(shader.contains(&format!("const VOLUME_FLOATS: u32 = {VOLUME_FLOATS}u;")));
        assert!(shader.contains("var<workgroup> tile_values: array<f32, VOLUME_FLOATS>;"));
    }

    #[test]
    fn tiles_beyond_u32_indices_are_split_not_a_panic() {
        // 2^16 × 2^17 outputs: more than u32 elements in one program.
        let shape = [1u64 << 17, 1 << 18];
        let s = step(Method::Mean, &[2, 2], &shape);
        assert!(
            build(
                DType::U8,
                &Region::whole(&shape),
                &[(s, Region::whole(&[1 << 16, 1 << 17]))]
            )
            .is_none()
        );
    }

    #[test]
    fn label_and_extremum_kernels_cover_the_32_bit_types() {
        assert!(gpu_computes(Method::Mode, DType::I32));
        assert!(!gpu_computes(Method::Mode, DType::F32), "mode takes integers only");
        assert!(gpu_computes(Method::Max, DType::F32));
        assert!(!gpu_computes(Method::Min, DType::U64), "WGSL has no 64-bit integers");
        let s = step(Method::Max, &[2, 2], &[7, 9]);
        let p = build(
            DType::U16,
            &Region::whole(&[7, 9]),
            &[(s.clone(), Region::whole(&s.dst_shape()))],
        )
        .unwrap();
        assert_eq!(p.dispatches[0].kernel, Kernel::Extremum);
        assert_eq!(p.dispatches[0].params[P_MAXIMUM], 1, "max, not min");
    }

    #[test]
    fn gaussian_on_32_bit_integers_stays_on_the_cpu() {
        assert!(!gpu_computes(Method::Gaussian, DType::U32));
        assert!(gpu_computes(Method::Mean, DType::I32));
        assert!(gpu_computes(Method::Gaussian, DType::I16));
        assert!(!gpu_computes(Method::Nearest, DType::F64));
    }
}
