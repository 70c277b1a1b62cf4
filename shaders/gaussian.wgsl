// gaussian (SPEC §2): reflect-border Gaussian blur (σ = f/3, radius floor(4σ + 0.5)) along
// every reduced axis, then the window mean; the same as src/backend/cpu/gaussian.rs.
//
// The blur and the window mean are folded into one tap list per output index (reflection
// included), built on the CPU from the same stencils. One dispatch applies the taps of one
// axis: the first pass reads the packed source elements, later passes the f32 result of
// the previous one; the last pass rounds (integers: half to even, clamped) and packs.
//
// aux at param(P_STENCIL + pass axis): offsets[outputs + 1], then (input index, weight
// bits) pairs. Other axes map output i to input i + param(P_OFFSET + a). The outputs away
// from the edges share one weight list, in the parameter block (P_INTERIOR_*, P_WEIGHTS):
// they read consecutive inputs from a computed first one, in the same tap order, and only
// the outputs near the edges, where reflection makes each one's taps differ, read aux.
//
// Where a step reduces both of the last two axes, their passes may run as one dispatch
// (`main_tiles`): each workgroup makes the y pass's values for the input columns its
// outputs need in workgroup memory, then its outputs' x pass from there. Where it reduces
// the last three, z's pass may join them (`main_volume`): each workgroup first makes the z
// pass's values for the input rows and columns its y values need. The terms and their
// order are those of the separate passes, so the results are the same bit for bit; the
// fused passes' values never travel through a device buffer.

@group(0) @binding(3) var<storage, read> src_f32: array<f32>;
@group(0) @binding(4) var<storage, read_write> dst: array<u32>;
@group(0) @binding(5) var<storage, read_write> dst_f32: array<f32>;

fn read_input(i: u32) -> f32 {
    if (param(P_FIRST) == 1u) {
        return to_f32(load(i));
    }
    return src_f32[i];
}

fn blurred_at(index: array<u32, 5>) -> f32 {
    let axis = param(P_AXIS);
    var base = 0u;
    for (var a = 0u; a < 5u; a = a + 1u) {
        if (a != axis) {
            base = base + (index[a] + param(P_OFFSET + a)) * param(P_SRC_STRIDE + a);
        }
    }
    let stride = param(P_SRC_STRIDE + axis);
    let o = index[axis];
    var sum = 0.0;
    let lo = param(P_INTERIOR_LO);
    if (o >= lo && o < param(P_INTERIOR_HI)) {
        var at = base + (param(P_INTERIOR_FIRST) + param(P_INTERIOR_STRIDE) * (o - lo)) * stride;
        for (var k = 0u; k < param(P_INTERIOR_TAPS); k = k + 1u) {
            sum = sum + bitcast<f32>(param(P_WEIGHTS + k)) * read_input(at);
            at = at + stride;
        }
        return sum;
    }
    let table = param(P_STENCIL + axis);
    let outputs = param(P_DST_SHAPE + axis);
    let taps = table + outputs + 1u;
    for (var t = aux[table + o]; t < aux[table + o + 1u]; t = t + 1u) {
        let j = aux[taps + 2u * t];
        let w = bitcast<f32>(aux[taps + 2u * t + 1u]);
        sum = sum + w * read_input(base + j * stride);
    }
    return sum;
}

// Output bits of the last pass: rounded (integers) and packed by `packed_outputs`.
fn output_bits(index: array<u32, 5>) -> u32 {
    return from_f32(blurred_at(index));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) local: u32) {
    let word = invocation(wg, groups, local);
    let n = param(P_DST_LEN);
    if (param(P_LAST) == 0u) {
        if (word < n) { dst_f32[word] = blurred_at(dst_index(word)); }
        return;
    }
    if (word * elems_per_word() >= n) { return; }
    dst[word] = packed_outputs(word, n);
}

@compute @workgroup_size(256)
fn main_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let last = param(P_LAST) == 1u;
    // f32 intermediates are one to a word.
    let site = row_site(wg, local, select(1u, elems_per_word(), last));
    if (!site.valid) { return; }
    if (last) {
        dst[site.dst_word] = packed_row(site);
    } else {
        dst_f32[site.dst_word] = blurred_at(site.index);
    }
}

// The fused passes' f32 values per workgroup, in rows one after the other (16352 bytes,
// wgpu's downlevel limit, which every adapter meets).
// - y–x: the y pass's values, `TILE_FLOATS >> (WORKGROUP_LOG2 − lanes)` to a row;
// - z–y–x: the z pass's values of the tile's input rows, then from `P_Y_VALUES_AT` the y
//   pass's values of its output rows, `P_TILE_WIDTH` to a row.
const TILE_FLOATS: u32 = 3584u;
const VOLUME_FLOATS: u32 = 4088u;
var<workgroup> tile_values: array<f32, VOLUME_FLOATS>;

// The pass along padded axis `axis` (y or x) of output `o`, from values in `tile_values`
// where input `j` is at `at0 + (j − first) · step`, with that axis's interior run at
// `interior` (lo, hi, first, stride, taps) and its weights at `weights`: the same taps in the
// same order as `blurred_at`.
fn tile_blurred(axis: u32, interior: u32, weights: u32, at0: u32, first: u32, step: u32, o: u32) -> f32 {
    var sum = 0.0;
    let lo = param(interior);
    if (o >= lo && o < param(interior + 1u)) {
        var at = at0 + (param(interior + 2u) + param(interior + 3u) * (o - lo) - first) * step;
        for (var k = 0u; k < param(interior + 4u); k = k + 1u) {
            sum = sum + bitcast<f32>(param(weights + k)) * tile_values[at];
            at = at + step;
        }
        return sum;
    }
    let table = param(P_STENCIL + axis);
    let outputs = param(P_DST_SHAPE + axis);
    let taps = table + outputs + 1u;
    for (var t = aux[table + o]; t < aux[table + o + 1u]; t = t + 1u) {
        let j = aux[taps + 2u * t];
        let w = bitcast<f32>(aux[taps + 2u * t + 1u]);
        sum = sum + w * tile_values[at0 + (j - first) * step];
    }
    return sum;
}

// The y pass's value of output row `o` at column `column` of the z pass's values, whose
// first row is input row `row0`.
fn y_blurred(row0: u32, column: u32, o: u32) -> f32 {
    return tile_blurred(3u, P_Y_INTERIOR_LO, P_Y_WEIGHTS, column, row0, param(P_TILE_WIDTH), o);
}

// The x pass's value of output `o` from a row of `tile_values` starting at `row_at`, whose
// first value is input column `column0`.
fn x_blurred(row_at: u32, column0: u32, o: u32) -> f32 {
    return tile_blurred(4u, P_X_INTERIOR_LO, P_X_WEIGHTS, row_at, column0, 1u, o);
}

// The fused y–x pass, always a step's last: the rows layout's grid, each workgroup's rows
// and words a tile. Parameters are the y pass's (P_AXIS is y), with the destination shape
// the step's.
@compute @workgroup_size(256)
fn main_tiles(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let lanes = param(P_ROW_LANES);
    let rows_log2 = WORKGROUP_LOG2 - lanes;
    let width = TILE_FLOATS >> rows_log2;
    let columns = param(P_TILE_COLUMNS) + 2u * wg.x;
    let column0 = aux[columns];
    let count = aux[columns + 1u];
    let row0 = wg.y << rows_log2;
    let rows = min(1u << rows_log2, param(P_DST_SHAPE + 3u) - row0);
    for (var r = 0u; r < rows; r = r + 1u) {
        for (var c = local; c < count; c = c + WORKGROUP) {
            tile_values[r * width + c] = blurred_at(plane_index(wg.z, row0 + r, column0 + c));
        }
    }
    workgroupBarrier();
    write_x_outputs(wg, local, 0u, width, column0);
}

// The fused passes' last step: this invocation's word of outputs, each the x pass of a row
// of `tile_values` (the workgroup's rows from `at`, `width` apart) whose first value is
// input column `column0`.
fn write_x_outputs(wg: vec3<u32>, local: u32, at: u32, width: u32, column0: u32) {
    let site = row_site(wg, local, elems_per_word());
    if (!site.valid) { return; }
    let row_at = at + (local >> param(P_ROW_LANES)) * width;
    var o = site.index[4];
    var packed = 0u;
    for (var lane = 0u; lane < elems_per_word(); lane = lane + 1u) {
        packed = packed | pack_bits(from_f32(x_blurred(row_at, column0, o)), lane);
        o = o + 1u;
    }
    dst[site.dst_word] = packed;
}

// A cell of a workgroup's rows of `columns` values in workgroup memory, the workgroup's
// invocations spread over all of them: the first at (row, column) = `local` in C order, then
// every WORKGROUP-th after it, `step` cells on (WORKGROUP in rows and columns, divided out
// once per invocation), so no cell divides.
struct Cell {
    row: u32,
    column: u32,
}

fn cell_at(local: u32, columns: u32) -> Cell {
    return Cell(local / columns, local % columns);
}

fn next_cell(cell: Cell, step: Cell, columns: u32) -> Cell {
    var next = Cell(cell.row + step.row, cell.column + step.column);
    if (next.column >= columns) {
        next.column = next.column - columns;
        next.row = next.row + 1u;
    }
    return next;
}

// The fused z–y–x pass, always a step's last: the rows layout's grid, each workgroup's rows
// and words a tile. Parameters are the z pass's (P_AXIS is z), with the destination shape
// the step's; y's taps are at P_STENCIL + 3 and P_Y_*, x's as in `main_tiles`.
@compute @workgroup_size(256)
fn main_volume(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let width = param(P_TILE_WIDTH);
    let columns = param(P_TILE_COLUMNS) + 2u * wg.x;
    let column0 = aux[columns];
    let count = aux[columns + 1u];
    let tile_rows = param(P_TILE_ROWS) + 2u * wg.y;
    let input_row0 = aux[tile_rows];
    let input_rows = aux[tile_rows + 1u];
    let step = cell_at(WORKGROUP, count);
    // The plane's indices, divided out once.
    let corner = plane_index(wg.z, input_row0, column0);
    for (var cell = cell_at(local, count); cell.row < input_rows; cell = next_cell(cell, step, count)) {
        var index = corner;
        index[3] = index[3] + cell.row;
        index[4] = index[4] + cell.column;
        tile_values[cell.row * width + cell.column] = blurred_at(index);
    }
    workgroupBarrier();
    let y_at = param(P_Y_VALUES_AT);
    let rows_log2 = WORKGROUP_LOG2 - param(P_ROW_LANES);
    let row0 = wg.y << rows_log2;
    let rows = min(1u << rows_log2, param(P_DST_SHAPE + 3u) - row0);
    for (var cell = cell_at(local, count); cell.row < rows; cell = next_cell(cell, step, count)) {
        tile_values[y_at + cell.row * width + cell.column] = y_blurred(input_row0, cell.column, row0 + cell.row);
    }
    workgroupBarrier();
    write_x_outputs(wg, local, y_at, width, column0);
}
