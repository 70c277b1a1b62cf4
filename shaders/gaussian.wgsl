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
// outputs need in workgroup memory, then its outputs' x pass from there. The terms and their
// order are those of the two passes, so the results are the same bit for bit; the y pass's
// values never travel through a device buffer.

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
        dst[row_word(site)] = packed_row(site.index);
    } else {
        dst_f32[row_word(site)] = blurred_at(site.index);
    }
}

// Fused y–x pass: f32 values of the y pass per workgroup, its rows one after the other,
// `TILE_FLOATS >> (WORKGROUP_LOG2 − lanes)` to a row (14 KiB: within every adapter's limit,
// wgpu's downlevel 16352 bytes included).
const TILE_FLOATS: u32 = 3584u;
var<workgroup> y_values: array<f32, TILE_FLOATS>;

// The x pass's value of output `o` from a row of `y_values` starting at `row_at`, whose
// first value is input column `column0`: the same taps in the same order as `blurred_at`.
fn x_blurred(row_at: u32, column0: u32, o: u32) -> f32 {
    var sum = 0.0;
    let lo = param(P_X_INTERIOR_LO);
    if (o >= lo && o < param(P_X_INTERIOR_HI)) {
        var at = row_at + param(P_X_INTERIOR_FIRST) + param(P_X_INTERIOR_STRIDE) * (o - lo) - column0;
        for (var k = 0u; k < param(P_X_INTERIOR_TAPS); k = k + 1u) {
            sum = sum + bitcast<f32>(param(P_X_WEIGHTS + k)) * y_values[at];
            at = at + 1u;
        }
        return sum;
    }
    let table = param(P_STENCIL + 4u);
    let outputs = param(P_DST_SHAPE + 4u);
    let taps = table + outputs + 1u;
    for (var t = aux[table + o]; t < aux[table + o + 1u]; t = t + 1u) {
        let j = aux[taps + 2u * t];
        let w = bitcast<f32>(aux[taps + 2u * t + 1u]);
        sum = sum + w * y_values[row_at + j - column0];
    }
    return sum;
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
            y_values[r * width + c] = blurred_at(plane_index(wg.z, row0 + r, column0 + c));
        }
    }
    workgroupBarrier();
    let site = row_site(wg, local, elems_per_word());
    if (!site.valid) { return; }
    let row_at = (local >> lanes) * width;
    var o = site.index[4];
    var packed = 0u;
    for (var lane = 0u; lane < elems_per_word(); lane = lane + 1u) {
        packed = packed | pack_bits(from_f32(x_blurred(row_at, column0, o)), lane);
        o = o + 1u;
    }
    dst[row_word(site)] = packed;
}
