// nearest (SPEC §2): y[i] = x[i·f], the first voxel of each window; the same as
// src/backend/cpu/nearest.rs. Bits are copied, so every element kind is exact.
//
// aux holds, per axis at param(P_STENCIL + a), pairs (first input, count) per output.

// The element bits of the output at `index` (called by `packed_outputs` in common.wgsl).
fn output_bits(index: array<u32, 5>) -> u32 {
    var offset = 0u;
    for (var a = 0u; a < 5u; a = a + 1u) {
        let first = aux[param(P_STENCIL + a) + 2u * index[a]];
        offset = offset + first * param(P_SRC_STRIDE + a);
    }
    return load(offset);
}
