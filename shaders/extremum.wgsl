// min and max (SPEC §2): the smallest / largest value of each window, chosen by
// `order_key` (−0.0 below +0.0); a NaN in the window gives NaN. The same as
// src/backend/cpu/extremum.rs; param(P_MAXIMUM) picks max.
//
// aux holds, per axis at param(P_STENCIL + a), pairs (first input, count) per output.

// The element bits of the output at `index` (called by `packed_outputs` in common.wgsl).
fn output_bits(index: array<u32, 5>) -> u32 {
    let win = window_of(index);
    let maximum = param(P_MAXIMUM) == 1u;
    var best = window_voxel(win, 0u);
    for (var w = 1u; w < win.size && !is_nan_bits(best); w = w + 1u) {
        let v = window_voxel(win, w);
        let key = order_key(v);
        let best_key = order_key(best);
        if (is_nan_bits(v) || select((key < best_key), (key > best_key), maximum)) {
            best = v;
        }
    }
    return best;
}
