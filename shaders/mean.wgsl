// mean (SPEC §2): the sum of each window's in-bounds voxels divided by their count; the
// same as src/backend/cpu/mean.rs.
//
// Integers are summed exactly in 64 bits (two u32 words with carry; WGSL has no 64-bit
// integers) and the quotient is rounded to nearest, ties to even, in integer arithmetic.
// f32 is summed with Neumaier compensation, so the result is within a few ulp.
//
// aux holds, per axis at param(P_STENCIL + a), pairs (first input, count) per output.

// (hi:lo) += (b:a)
fn add64(lo: ptr<function, u32>, hi: ptr<function, u32>, a: u32, b: u32) {
    let sum = *lo + a;
    let carry = select(0u, 1u, sum < *lo);
    *lo = sum;
    *hi = *hi + b + carry;
}

// round_half_even(sum / count) for a 64-bit two's complement sum (signed or not).
fn divide_rounded(lo_in: u32, hi_in: u32, count: u32) -> u32 {
    let negative = is_signed() && (hi_in >> 31u) == 1u;
    var lo = lo_in;
    var hi = hi_in;
    if (negative) {
        lo = ~lo_in + 1u;
        hi = ~hi_in + select(0u, 1u, lo == 0u);
    }
    // Magnitude / count: quotient q (fits 32 bits for a mean), remainder r.
    var q = 0u;
    var r = 0u;
    if (hi == 0u) {
        q = lo / count;
        r = lo % count;
    } else {
        for (var bit = 63i; bit >= 0i; bit = bit - 1i) {
            var next: u32;
            if (bit >= 32i) { next = (hi >> u32(bit - 32i)) & 1u; } else { next = (lo >> u32(bit)) & 1u; }
            r = (r << 1u) | next;
            q = q << 1u;
            if (r >= count) {
                r = r - count;
                q = q | 1u;
            }
        }
    }
    if (!is_signed()) {
        let up = r > count - r || (r == count - r && (q & 1u) == 1u);
        return q + select(0u, 1u, up);
    }
    // Signed: floor division first (remainder in [0, count)), then round half to even.
    var quotient = bitcast<i32>(q);
    var remainder = r;
    if (negative) {
        quotient = -quotient;
        if (r != 0u) {
            quotient = quotient - 1i;
            remainder = count - r;
        }
    }
    let odd = (bitcast<u32>(quotient) & 1u) == 1u;
    let up = remainder > count - remainder || (remainder == count - remainder && odd);
    return bitcast<u32>(quotient + select(0i, 1i, up)) & select(0xffffffffu, (1u << elem_bits()) - 1u, elem_bits() < 32u);
}

// The element bits of the output at `index` (called by `packed_outputs` in common.wgsl).
fn output_bits(index: array<u32, 5>) -> u32 {
    var first: array<u32, 5>;
    var count: array<u32, 5>;
    for (var a = 0u; a < 5u; a = a + 1u) {
        let at = param(P_STENCIL + a) + 2u * index[a];
        first[a] = aux[at];
        count[a] = aux[at + 1u];
    }
    let s = P_SRC_STRIDE;
    var lo = 0u;
    var hi = 0u;
    var sum = 0.0;
    var compensation = 0.0;
    for (var i0 = 0u; i0 < count[0]; i0 = i0 + 1u) {
    for (var i1 = 0u; i1 < count[1]; i1 = i1 + 1u) {
    for (var i2 = 0u; i2 < count[2]; i2 = i2 + 1u) {
    for (var i3 = 0u; i3 < count[3]; i3 = i3 + 1u) {
        let row = (first[0] + i0) * param(s) + (first[1] + i1) * param(s + 1u)
            + (first[2] + i2) * param(s + 2u) + (first[3] + i3) * param(s + 3u) + first[4];
        for (var i4 = 0u; i4 < count[4]; i4 = i4 + 1u) {
            let bits = load(row + i4);
            if (is_float()) {
                let x = bitcast<f32>(bits);
                let t = sum + x;
                if (abs(sum) >= abs(x)) {
                    compensation = compensation + ((sum - t) + x);
                } else {
                    compensation = compensation + ((x - t) + sum);
                }
                sum = t;
            } else if (is_signed()) {
                let v = as_i32(bits);
                add64(&lo, &hi, bitcast<u32>(v), select(0u, 0xffffffffu, v < 0i));
            } else {
                add64(&lo, &hi, bits, 0u);
            }
        }
    }
    }
    }
    }
    let n = count[0] * count[1] * count[2] * count[3] * count[4];
    if (is_float()) {
        // An infinite sum stays infinite (the compensation would turn it into NaN).
        var total = sum;
        let finite = (bitcast<u32>(sum) & 0x7f800000u) != 0x7f800000u;
        if (finite) { total = sum + compensation; }
        return bitcast<u32>(total / f32(n));
    }
    return divide_rounded(lo, hi, n);
}
