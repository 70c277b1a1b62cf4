// The output binding and entry point of the windowed kernels (nearest.wgsl, mean.wgsl,
// mode.wgsl, extremum.wgsl), appended after the kernel: one invocation per output word,
// each element from the kernel's `output_bits(index)`; `main` in the flat layout,
// `main_rows` in the rows layout (common.wgsl).

@group(0) @binding(3) var<storage, read_write> dst: array<u32>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>,
        @builtin(local_invocation_index) local: u32) {
    let word = invocation(wg, groups, local);
    let n = param(P_DST_LEN);
    if (word * elems_per_word() >= n) { return; }
    dst[word] = packed_outputs(word, n);
}

@compute @workgroup_size(256)
fn main_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) local: u32) {
    let site = row_site(wg, local, elems_per_word());
    if (!site.valid) { return; }
    dst[site.dst_word] = packed_row(site);
}
