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
