// Shared by every kernel (prepended to nearest.wgsl, mean.wgsl, gaussian.wgsl, mode.wgsl,
// extremum.wgsl). Each windowed kernel defines `fn output_bits(index: array<u32, 5>) -> u32`,
// the element bits of the output at that index of the destination tile, and gets its
// output binding and entry point from windowed_main.wgsl;
// gaussian binds its own from binding 3 on. Bindings 0 to 2 (parameters, stencil tables,
// the packed source tile) are declared here.
//
// Element kinds, chosen per pipeline with the override ELEM:
//   0 u8, 1 u16, 2 u32, 3 i8, 4 i16, 5 i32, 6 f32.
// 8- and 16-bit elements travel packed in u32 words, little-endian: element i of a
// buffer is bits [w·(i mod p), w·(i mod p + 1)) of word i / p, with p elements per word.
//
// Every array is padded to 5 axes with leading 1s. The parameter block (u32 words, read with
// `param(i)` from a uniform buffer of 32 rows of 4):
//   [0..5)   source tile shape          [5..10)  source strides (elements)
//   [10..15) destination tile shape     [15..20) stencil offset per axis (into aux)
//   [20] destination elements   [21] pass axis (gaussian)   [22] first pass (gaussian)
//   [23] last pass (gaussian)    [24..29) source offset per axis (gaussian identity axes)
//   [29] 1 for max, 0 for min (extremum)
//   [31] rows layout: log2 of a workgroup's lanes along a row, 0 to WORKGROUP_LOG2 (the
//   workgroup spans 2^(WORKGROUP_LOG2 − that) rows)
//   gaussian, the pass axis's interior run (outputs [lo, hi) read inputs first + stride·(o − lo)
//   + k with weight k; lo == hi: none): [32] lo  [33] hi  [34] first  [35] stride  [36] taps
//   [37] rows layout: destination words per row
//   [40..64) the weights' f32 bits
//   gaussian's fused y–x pass (`main_tiles` in gaussian.wgsl), the x axis's interior run:
//   [64] lo  [65] hi  [66] first  [67] stride  [68] taps  [72..96) the weights' f32 bits;
//   [69] offset in aux of the tiles' (first input column, columns) pairs
//   gaussian's fused z–y–x pass (`main_volume`), the x axis's as above and the y axis's
//   interior run: [96] lo  [97] hi  [98] first  [99] stride  [100] taps  [104..128) the
//   weights' f32 bits; [101] offset in aux of the tiles' (first input row, rows) pairs;
//   [102] floats of a row of workgroup memory  [103] where the y pass's values start there
override ELEM: u32 = 2u;

const P_SRC_SHAPE: u32 = 0u;
const P_SRC_STRIDE: u32 = 5u;
const P_DST_SHAPE: u32 = 10u;
const P_STENCIL: u32 = 15u;
const P_DST_LEN: u32 = 20u;
const P_AXIS: u32 = 21u;
const P_FIRST: u32 = 22u;
const P_LAST: u32 = 23u;
const P_OFFSET: u32 = 24u;
const P_MAXIMUM: u32 = 29u;
const P_ROW_LANES: u32 = 31u;
const P_ROW_WORDS: u32 = 37u;
const P_INTERIOR_LO: u32 = 32u;
const P_INTERIOR_HI: u32 = 33u;
const P_INTERIOR_FIRST: u32 = 34u;
const P_INTERIOR_STRIDE: u32 = 35u;
const P_INTERIOR_TAPS: u32 = 36u;
const P_WEIGHTS: u32 = 40u;
const P_X_INTERIOR_LO: u32 = 64u;
const P_X_INTERIOR_HI: u32 = 65u;
const P_X_INTERIOR_FIRST: u32 = 66u;
const P_X_INTERIOR_STRIDE: u32 = 67u;
const P_X_INTERIOR_TAPS: u32 = 68u;
const P_TILE_COLUMNS: u32 = 69u;
const P_X_WEIGHTS: u32 = 72u;
const P_Y_INTERIOR_LO: u32 = 96u;
const P_Y_INTERIOR_HI: u32 = 97u;
const P_Y_INTERIOR_FIRST: u32 = 98u;
const P_Y_INTERIOR_STRIDE: u32 = 99u;
const P_Y_INTERIOR_TAPS: u32 = 100u;
const P_TILE_ROWS: u32 = 101u;
const P_TILE_WIDTH: u32 = 102u;
const P_Y_VALUES_AT: u32 = 103u;
const P_Y_WEIGHTS: u32 = 104u;
const WORKGROUP: u32 = 256u;
const WORKGROUP_LOG2: u32 = 8u;
// Two layouts map invocations to the destination's words, each with its entry point (the
// windowed kernels' in windowed_main.wgsl, gaussian's in gaussian.wgsl):
// - flat (`main`): one invocation per word of the flat destination, its 5-axis index
//   divided out; a 2-D dispatch of 256-wide workgroups, any shape;
// - rows (`main_rows`): one invocation per word of a destination row (the last axis), found
//   without dividing; a 3-D dispatch, x over the words of a row, y over rows, z over the
//   planes (the three leading axes; where the two first are not 1, a pipeline with
//   NESTED_PLANES divides them out once per invocation). Where a row ends inside a word, a
//   pipeline with RAGGED_ROWS gives each row the words whose first output lies in it.
// Gaussian adds the rows layout's grid over workgroup tiles, for its fused y–x pass
// (`main_tiles`, in gaussian.wgsl) and its fused z–y–x pass (`main_volume`).
// Separate entry points, not a branch on a parameter, and no loop around the kernel's
// body: on lavapipe (a software Vulkan) either made the gaussian passes about twice as
// slow, even in the flat layout.

@group(0) @binding(0) var<uniform> params: array<vec4<u32>, 32>;

// Word `i` of the parameter block.
fn param(i: u32) -> u32 {
    return params[i / 4u][i % 4u];
}

@group(0) @binding(1) var<storage, read> aux: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<u32>;

fn elems_per_word() -> u32 {
    if (ELEM == 0u || ELEM == 3u) { return 4u; }
    if (ELEM == 1u || ELEM == 4u) { return 2u; }
    return 1u;
}

fn elem_bits() -> u32 {
    return 32u / elems_per_word();
}

fn is_signed() -> bool {
    return ELEM == 3u || ELEM == 4u || ELEM == 5u;
}

fn is_float() -> bool {
    return ELEM == 6u;
}

// The raw bits of element `lane` of `word`, zero-extended.
fn unpack_bits(word: u32, lane: u32) -> u32 {
    let bits = elem_bits();
    if (bits == 32u) { return word; }
    return (word >> (bits * lane)) & ((1u << bits) - 1u);
}

// The raw bits of source element `i`.
fn load(i: u32) -> u32 {
    let per = elems_per_word();
    return unpack_bits(src[i / per], i % per);
}

// Places raw element bits at `lane` of a word.
fn pack_bits(value: u32, lane: u32) -> u32 {
    let bits = elem_bits();
    if (bits == 32u) { return value; }
    return (value & ((1u << bits) - 1u)) << (bits * lane);
}

// Sign-extends raw bits of a signed element.
fn as_i32(bits: u32) -> i32 {
    let shift = 32u - elem_bits();
    return (bitcast<i32>(bits << shift)) >> shift;
}

fn to_f32(bits: u32) -> f32 {
    if (is_float()) { return bitcast<f32>(bits); }
    if (is_signed()) { return f32(as_i32(bits)); }
    return f32(bits);
}

// A filtered value back to element bits: integers round half to even and clamp
// (8- and 16-bit types only; 32-bit integer gaussian runs on the CPU), floats are kept.
fn from_f32(value: f32) -> u32 {
    if (is_float()) { return bitcast<u32>(value); }
    let r = round(value);
    switch ELEM {
        case 0u: { return u32(clamp(r, 0.0, 255.0)); }
        case 1u: { return u32(clamp(r, 0.0, 65535.0)); }
        case 3u: { return bitcast<u32>(i32(clamp(r, -128.0, 127.0))) & 0xffu; }
        case 4u: { return bitcast<u32>(i32(clamp(r, -32768.0, 32767.0))) & 0xffffu; }
        default: { return u32(max(r, 0.0)); }
    }
}

// Index of this invocation across a 2-D dispatch of 256-wide workgroups.
fn invocation(wg: vec3<u32>, groups: vec3<u32>, local: u32) -> u32 {
    return (wg.y * groups.x + wg.x) * WORKGROUP + local;
}

// Rows layout: this invocation's word of the destination (`dst_word`) and the index of its
// first output, `per` outputs to a word; `valid` is false past the destination's edge.
struct RowSite {
    index: array<u32, 5>,
    dst_word: u32,
    valid: bool,
}

// Rows layout: 1 where a destination row ends inside a word (ragged rows: rows of 5 uint16
// outputs, say), whose last word then holds outputs of the next rows too; chosen per
// pipeline like NESTED_PLANES, so that rows of whole words pay nothing for it.
override RAGGED_ROWS: u32 = 0u;

// Rows layout: 1 where the destination's two leading axes are not both 1 (several times or
// channels in one tile), chosen per pipeline like ELEM, so that other tiles pay nothing for
// them (a branch on a parameter cost lavapipe 5–20% of the kernels' speed).
override NESTED_PLANES: u32 = 0u;

// Rows layout: the index of row `row`, column `column` of plane `plane` (z of the dispatch,
// the three leading axes flattened). With NESTED_PLANES, the leading axes' indices are
// divided out of `plane`, the same for every invocation of a workgroup.
fn plane_index(plane: u32, row: u32, column: u32) -> array<u32, 5> {
    if (NESTED_PLANES == 0u) {
        return array<u32, 5>(0u, 0u, plane, row, column);
    }
    let planes = param(P_DST_SHAPE + 2u);
    let outer = plane / planes;
    let channels = param(P_DST_SHAPE + 1u);
    return array<u32, 5>(outer / channels, outer % channels, plane % planes, row, column);
}

fn row_site(wg: vec3<u32>, local: u32, per: u32) -> RowSite {
    let lanes = param(P_ROW_LANES);
    var site: RowSite;
    // The `word`-th of the words whose first output lies in this invocation's row.
    let word = (wg.x << lanes) + (local & ((1u << lanes) - 1u));
    let row = (wg.y << (WORKGROUP_LOG2 - lanes)) + (local >> lanes);
    let rows = param(P_DST_SHAPE + 3u);
    if (RAGGED_ROWS == 0u) {
        let words = param(P_ROW_WORDS);
        site.valid = word < words && row < rows;
        site.dst_word = (wg.z * rows + row) * words + word;
        site.index = plane_index(wg.z, row, word * per);
        return site;
    }
    // The row's first output is element `first` of the destination; its words are those
    // from the first that starts in it, as long as they start in it.
    let width = param(P_DST_SHAPE + 4u);
    let first = (wg.z * rows + row) * width;
    site.dst_word = (first + per - 1u) / per + word;
    let column = site.dst_word * per - first;
    site.valid = row < rows && column < width;
    site.index = plane_index(wg.z, row, column);
    return site;
}

// Rows layout: the word of outputs from `site`'s first, each from the kernel's
// `output_bits(index)`: along the row, or with RAGGED_ROWS on into the next rows (and
// planes) up to the destination's last output.
fn packed_row(site: RowSite) -> u32 {
    var index = site.index;
    var packed = 0u;
    if (RAGGED_ROWS == 1u) {
        let per = elems_per_word();
        let left = param(P_DST_LEN) - site.dst_word * per;
        for (var lane = 0u; lane < min(per, left); lane = lane + 1u) {
            packed = packed | pack_bits(output_bits(index), lane);
            index = next_index(index);
        }
        return packed;
    }
    for (var lane = 0u; lane < elems_per_word(); lane = lane + 1u) {
        packed = packed | pack_bits(output_bits(index), lane);
        index[4] = index[4] + 1u;
    }
    return packed;
}

// The 5-axis index of flat element `e` of the destination tile.
fn dst_index(e: u32) -> array<u32, 5> {
    var index: array<u32, 5>;
    var rest = e;
    for (var a = 4i; a >= 0i; a = a - 1i) {
        let n = param(P_DST_SHAPE + u32(a));
        index[a] = rest % n;
        rest = rest / n;
    }
    return index;
}

// The index after `index` in C order over the destination shape, by carrying instead of
// dividing.
fn next_index(index: array<u32, 5>) -> array<u32, 5> {
    var next = index;
    for (var a = 4i; a >= 0i; a = a - 1i) {
        next[a] = next[a] + 1u;
        if (next[a] < param(P_DST_SHAPE + u32(a))) { return next; }
        next[a] = 0u;
    }
    return next;
}

// The word of the output buffer holding outputs word·p … word·p + p − 1 (p elements per
// word), each from the kernel's `output_bits(index)`; `n` is the number of outputs. The
// first output's index is divided out once per word, the others' stepped from it.
fn packed_outputs(word: u32, n: u32) -> u32 {
    let per = elems_per_word();
    var index = dst_index(word * per);
    var packed = 0u;
    for (var lane = 0u; lane < per; lane = lane + 1u) {
        if (word * per + lane >= n) { break; }
        packed = packed | pack_bits(output_bits(index), lane);
        index = next_index(index);
    }
    return packed;
}

// The window of the output at `index` of a windowed kernel (mode, extremum): per axis its
// first input and voxel count, from the (first, count) pairs in aux; `size` voxels in all.
struct Window {
    first: array<u32, 5>,
    count: array<u32, 5>,
    size: u32,
}

fn window_of(index: array<u32, 5>) -> Window {
    var win: Window;
    win.size = 1u;
    for (var a = 0u; a < 5u; a = a + 1u) {
        let at = param(P_STENCIL + a) + 2u * index[a];
        win.first[a] = aux[at];
        win.count[a] = aux[at + 1u];
        win.size = win.size * win.count[a];
    }
    return win;
}

// The raw bits of voxel `w` of a window, its voxels taken in C order.
fn window_voxel(win: Window, w: u32) -> u32 {
    var rest = w;
    var offset = 0u;
    for (var a = 4i; a >= 0i; a = a - 1i) {
        let count = win.count[a];
        offset = offset + (win.first[a] + rest % count) * param(P_SRC_STRIDE + u32(a));
        rest = rest / count;
    }
    return load(offset);
}

// A u32 whose unsigned order is the elements' order: signed integers offset by 2^31, f32
// by the IEEE total order (−0.0 below +0.0, as the CPU's min and max).
fn order_key(bits: u32) -> u32 {
    if (is_float()) {
        if ((bits >> 31u) == 1u) { return ~bits; }
        return bits | 0x80000000u;
    }
    if (is_signed()) { return bitcast<u32>(as_i32(bits)) ^ 0x80000000u; }
    return bits;
}

fn is_nan_bits(bits: u32) -> bool {
    return is_float() && (bits & 0x7fffffffu) > 0x7f800000u;
}
