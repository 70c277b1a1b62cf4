// mode (SPEC §2, label images): the most frequent value of each window, ties to the
// smallest; integer element kinds only. The same as src/backend/cpu/mode.rs.
//
// Each voxel counts the voxels equal to it from itself onwards. At a value's first
// occurrence that is its full count, and a later occurrence always counts fewer, so the
// largest count (ties to the smallest `order_key`) is the mode.
//
// Counts that cannot reach the best one are cut short: a count stops once the voxels left
// could not bring it level with the best, and the window once fewer voxels are left than
// the best count (no later value can win or tie). A window of one label takes n steps, not
// n(n + 1)/2; one of distinct values still takes them all.
//
// aux holds, per axis at param(P_STENCIL + a), pairs (first input, count) per output.

// The element bits of the output at `index` (called by `packed_outputs` in common.wgsl).
fn output_bits(index: array<u32, 5>) -> u32 {
    let win = window_of(index);
    var best = 0u;
    var best_count = 0u;
    for (var w = 0u; w < win.size && win.size - w >= best_count; w = w + 1u) {
        let v = window_voxel(win, w);
        var count = 1u;
        for (var u = w + 1u; u < win.size && count + (win.size - u) >= best_count; u = u + 1u) {
            count = count + select(0u, 1u, window_voxel(win, u) == v);
        }
        if (count > best_count || (count == best_count && order_key(v) < order_key(best))) {
            best = v;
            best_count = count;
        }
    }
    return best;
}
