//! Kernel tests, run once per backend (`cpu::…` and `gpu::…`): the golden vectors of
//! `tests/data/golden`, a literal float64 reference of SPEC §2 on every dtype, and property
//! tests of the invariants (shapes, constants, ranges, tiling independence).

mod common;

use std::sync::Arc;

use common::{Tolerance, as_f64, compare, golden_cases, reference_step, round_to, tolerance};
use ome_pyramid::backend::required_source;
use ome_pyramid::dtype::Sample;
use ome_pyramid::synthetic::SplitMix64;
use ome_pyramid::tile::{TileElement, copy_overlap};
use ome_pyramid::{DType, Downsampler, Method, Region, Step, Tile, TileData};
use proptest::prelude::*;

/// Runs one step on the whole array.
fn downsample_whole(
    backend: &dyn Downsampler,
    method: Method,
    shape: &[u64],
    factors: &[u32],
    input: TileData,
) -> Tile {
    let step = Step {
        method,
        factors: factors.to_vec(),
        src_shape: shape.to_vec(),
    };
    let src = Tile::new(Region::whole(shape), input);
    backend
        .downsample(&step, &src, &Region::whole(&step.dst_shape()))
        .expect("downsample")
}

fn check_golden(backend: &dyn Downsampler, is_gpu: bool, method: Method) {
    let cases = golden_cases(method);
    assert!(cases.len() >= 40, "golden file has its cases");
    let mut failures = Vec::new();
    for case in cases {
        if !backend.supports(method, case.dtype) {
            continue;
        }
        let out = downsample_whole(backend, method, &case.shape, &case.factors, case.input.clone());
        assert_eq!(
            out.region.shape, case.expected_shape,
            "case {} output shape",
            case.index
        );
        let tol = tolerance(method, case.dtype, is_gpu);
        if let Err(e) = compare(&out.data, &case.expected, tol) {
            failures.push(format!(
                "case {} ({} {:?} f={:?}): {e}",
                case.index, case.dtype, case.shape, case.factors
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} golden cases differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn golden_nearest(backend: &dyn Downsampler, is_gpu: bool) {
    check_golden(backend, is_gpu, Method::Nearest);
}
fn golden_mean(backend: &dyn Downsampler, is_gpu: bool) {
    check_golden(backend, is_gpu, Method::Mean);
}
fn golden_gaussian(backend: &dyn Downsampler, is_gpu: bool) {
    check_golden(backend, is_gpu, Method::Gaussian);
}
fn golden_mode(backend: &dyn Downsampler, is_gpu: bool) {
    check_golden(backend, is_gpu, Method::Mode);
}

/// Random data spanning most of a dtype's range (so sums stress the accumulators).
fn random_data(dtype: DType, len: usize, seed: u64) -> TileData {
    let mut rng = SplitMix64::new(seed);
    ome_pyramid::dispatch_dtype!(dtype, T => {
        let values: Vec<T> = (0..len)
            .map(|_| {
                let bits = rng.next_u64();
                let v: T = bytemuck::cast_slice::<u64, T>(std::slice::from_ref(&bits))[0];
                if dtype.is_float() {
                    // Finite floats of both signs and mixed magnitudes.
                    T::from_f64((rng.next_f64() - 0.3) * 1000.0_f64.powf(rng.next_f64() * 2.0))
                } else {
                    v
                }
            })
            .collect();
        T::wrap(values)
    })
}

/// Label-like data: a few distinct values (negative ones for signed types), so windows
/// hold repeated values and mode has something to count.
fn random_labels(dtype: DType, len: usize, seed: u64) -> TileData {
    let mut rng = SplitMix64::new(seed);
    let offset = if matches!(dtype, DType::I8 | DType::I16 | DType::I32 | DType::I64) {
        2.0
    } else {
        0.0
    };
    let values: Vec<f64> = (0..len).map(|_| (rng.next_u64() % 4) as f64 - offset).collect();
    round_to(dtype, &values, &values)
}

/// The input a method is tested on: labels for mode, values over the dtype's range else.
fn test_input(method: Method, dtype: DType, len: usize, seed: u64) -> TileData {
    if method == Method::Mode {
        random_labels(dtype, len, seed)
    } else {
        random_data(dtype, len, seed)
    }
}

/// Every dtype (u64, i64, i8 included, which the golden files lack) against the literal
/// float64 reference, on shapes with partial edge windows and factors 2 and 3.
fn reference_every_dtype(backend: &dyn Downsampler, is_gpu: bool) {
    let shapes: [(&[u64], &[u32]); 4] = [
        (&[7, 9], &[2, 2]),
        (&[5, 6, 7], &[2, 3, 2]),
        (&[2, 5, 9, 4], &[1, 2, 2, 3]),
        (&[1, 2, 5, 6, 3], &[1, 1, 3, 2, 2]),
    ];
    for method in Method::ALL {
        for dtype in DType::ALL {
            if !backend.supports(method, dtype) {
                continue;
            }
            for (k, (shape, factors)) in shapes.iter().enumerate() {
                let len = shape.iter().product::<u64>() as usize;
                let input = test_input(method, dtype, len, 1000 + k as u64);
                let expected = reference_step(method, &input, shape, factors);
                let out = downsample_whole(backend, method, shape, factors, input);
                // 64-bit integers beyond 2^53 lose precision in the float64 reference.
                let tol = match (method, dtype) {
                    (Method::Gaussian, DType::U64 | DType::I64) => Tolerance::Relative(1e-12),
                    (Method::Mean, DType::U64 | DType::I64) => Tolerance::Relative(1e-13),
                    _ => tolerance(method, dtype, is_gpu),
                };
                compare(&out.data, &expected, tol)
                    .unwrap_or_else(|e| panic!("{method} {dtype} shape {shape:?} factors {factors:?}: {e}"));
            }
        }
    }
}

/// 64-bit integer means are exact (i128 sums), including ties at the extremes.
fn mean_exact_for_64_bit_extremes(backend: &dyn Downsampler, _is_gpu: bool) {
    if !backend.supports(Method::Mean, DType::U64) {
        return;
    }
    let input = TileData::U64(vec![u64::MAX, u64::MAX - 1, u64::MAX, u64::MAX - 2]);
    let out = downsample_whole(backend, Method::Mean, &[2, 2], &[2, 2], input);
    // sum = 4·MAX − 3 → mean = MAX − 0.75 → MAX − 1.
    assert_eq!(out.data, TileData::U64(vec![u64::MAX - 1]));
    let input = TileData::I64(vec![i64::MIN, i64::MIN + 1]);
    let out = downsample_whole(backend, Method::Mean, &[1, 2], &[1, 2], input);
    // MIN + 0.5 → ties to even → MIN.
    assert_eq!(out.data, TileData::I64(vec![i64::MIN]));
}

/// Ties round to even: [1,2] → 2 (1.5), [2,3] → 2 (2.5), [-3,-2] → -2 (-2.5).
fn mean_rounds_half_to_even(backend: &dyn Downsampler, _is_gpu: bool) {
    let out = downsample_whole(
        backend,
        Method::Mean,
        &[1, 6],
        &[1, 2],
        TileData::I16(vec![1, 2, 2, 3, -3, -2]),
    );
    assert_eq!(out.data, TileData::I16(vec![2, 2, -2]));
    let out = downsample_whole(
        backend,
        Method::Mean,
        &[1, 4],
        &[1, 2],
        TileData::U8(vec![254, 255, 0, 1]),
    );
    assert_eq!(out.data, TileData::U8(vec![254, 0]));
}

/// Mode is exact on 64-bit labels that float64 cannot tell apart (above 2^53).
fn mode_exact_for_64_bit_labels(backend: &dyn Downsampler, _is_gpu: bool) {
    if !backend.supports(Method::Mode, DType::U64) {
        return;
    }
    let (a, b) = ((1u64 << 53) + 1, 1u64 << 53);
    assert_eq!(a as f64, b as f64, "the two labels are one float64");
    let input = TileData::U64(vec![a, b, b, b, a, a, b, 7]);
    let out = downsample_whole(backend, Method::Mode, &[2, 4], &[2, 2], input);
    assert_eq!(
        out.data,
        TileData::U64(vec![a, b]),
        "three a against one b; three b against one 7"
    );
    let out = downsample_whole(backend, Method::Mode, &[1, 2], &[1, 2], TileData::U64(vec![a, b]));
    assert_eq!(out.data, TileData::U64(vec![b]), "a tie goes to the smaller label");
    let input = TileData::I64(vec![i64::MIN, i64::MAX, i64::MAX, i64::MIN + 1]);
    let out = downsample_whole(backend, Method::Mode, &[1, 4], &[1, 4], input);
    assert_eq!(out.data, TileData::I64(vec![i64::MAX]));
}

/// Ties go to the smallest value; partial edge windows count their in-bounds voxels only.
fn mode_ties_and_partial_windows(backend: &dyn Downsampler, _is_gpu: bool) {
    // Rows of 5: windows [0,1], [2,3] and the partial [4] on the last axis.
    let input = TileData::I16(vec![9, -4, 3, 3, 8, -4, 9, 5, 3, 8]);
    let out = downsample_whole(backend, Method::Mode, &[2, 5], &[2, 2], input);
    assert_eq!(out.data, TileData::I16(vec![-4, 3, 8]));
    let input = TileData::U8(vec![200, 17, 17, 200, 255, 0]);
    let out = downsample_whole(backend, Method::Mode, &[1, 6], &[1, 3], input);
    assert_eq!(
        out.data,
        TileData::U8(vec![17, 0]),
        "[200,17,17] → 17; [200,255,0] all once → 0"
    );
    // Ties decided by the window's last voxel, a winner found first, one found last.
    let input = TileData::U8(vec![7, 3, 7, 3, 9, 9, 9, 1, 4, 5, 6, 4, 2, 8, 1, 1]);
    let out = downsample_whole(backend, Method::Mode, &[1, 16], &[1, 4], input);
    assert_eq!(out.data, TileData::U8(vec![3, 9, 4, 1]));
}

/// Windows of hundreds of voxels equal their definition: lavapipe ends an invocation's
/// loops after 65 535 iterations, which mode's 243-voxel windows over uint8 passed (the last
/// output of each word came back 0), so the GPU backend leaves such steps to the CPU there.
fn large_windows_equal_their_definition(backend: &dyn Downsampler, _is_gpu: bool) {
    let cases: [(&[u64], &[u32]); 3] = [
        (&[3, 3, 3, 5, 6], &[3, 3, 3, 3, 3]),
        (&[2, 2, 10, 12, 12], &[1, 1, 5, 6, 6]),
        (&[6, 40, 40], &[2, 16, 16]),
    ];
    for (shape, factors) in cases {
        for dtype in [DType::U8, DType::U16, DType::I32] {
            let len = shape.iter().product::<u64>() as usize;
            for method in [Method::Mode, Method::Max, Method::Mean] {
                let input = test_input(method, dtype, len, 11);
                let expected = reference_step(method, &input, shape, factors);
                let out = downsample_whole(backend, method, shape, factors, input);
                assert!(
                    compare(&out.data, &expected, Tolerance::Exact).is_ok(),
                    "{method} {dtype} {shape:?} by {factors:?}: {:?}",
                    compare(&out.data, &expected, Tolerance::Exact)
                );
            }
        }
    }
}

/// Mode is refused on floats by every backend (the engine refuses it before any work).
fn mode_is_not_defined_on_floats(backend: &dyn Downsampler, _is_gpu: bool) {
    for dtype in [DType::F32, DType::F64] {
        assert!(!backend.supports(Method::Mode, dtype));
        let step = Step {
            method: Method::Mode,
            factors: vec![2],
            src_shape: vec![4],
        };
        let src = Tile::new(Region::whole(&[4]), TileData::zeros(dtype, 4));
        assert!(backend.downsample(&step, &src, &Region::whole(&[2])).is_err());
    }
}

/// Min and max: NaN propagates, and −0.0 is below +0.0 whatever the order in the window.
fn min_max_nan_and_signed_zeros(backend: &dyn Downsampler, _is_gpu: bool) {
    let values = vec![1.0f32, f32::NAN, 3.0, 4.0, 0.0, -0.0, -0.0, 0.0, 5.0, -7.5, 2.0, 6.0];
    let min = downsample_whole(backend, Method::Min, &[3, 4], &[1, 2], TileData::F32(values.clone()));
    let max = downsample_whole(backend, Method::Max, &[3, 4], &[1, 2], TileData::F32(values));
    let (TileData::F32(min), TileData::F32(max)) = (min.data, max.data) else {
        panic!()
    };
    assert!(min[0].is_nan() && max[0].is_nan(), "the window holding NaN");
    assert_eq!((min[1], max[1]), (3.0, 4.0));
    for zeros in [2, 3] {
        assert!(min[zeros] == 0.0 && min[zeros].is_sign_negative(), "min of ±0 is −0");
        assert!(max[zeros] == 0.0 && max[zeros].is_sign_positive(), "max of ±0 is +0");
    }
    assert_eq!((min[4], max[4], min[5], max[5]), (-7.5, 5.0, 2.0, 6.0));
}

/// NaN propagates through mean and gaussian (SPEC §2).
fn nan_propagates(backend: &dyn Downsampler, _is_gpu: bool) {
    let mut values = vec![1.0f32; 16];
    values[5] = f32::NAN;
    for method in [Method::Mean, Method::Gaussian, Method::Min, Method::Max] {
        let out = downsample_whole(backend, method, &[4, 4], &[2, 2], TileData::F32(values.clone()));
        let TileData::F32(v) = out.data else { panic!() };
        assert!(v[0].is_nan(), "{method}: the window holding NaN gives NaN");
        if method != Method::Gaussian {
            assert_eq!(&v[1..], &[1.0, 1.0, 1.0]);
        }
    }
}

/// Computes `dst` of a step as several tiles, each reading only its required source.
fn downsample_tiled(backend: &dyn Downsampler, step: &Step, input: &Tile, split: &[u64]) -> TileData {
    let dst_shape = step.dst_shape();
    let whole = Region::whole(&dst_shape);
    let mut out = TileData::zeros(input.data.dtype(), whole.len());
    let ndim = dst_shape.len();
    let counts: Vec<u64> = (0..ndim).map(|a| dst_shape[a].div_ceil(split[a])).collect();
    let total: u64 = counts.iter().product();
    for t in 0..total {
        let mut rest = t;
        let mut start = vec![0u64; ndim];
        let mut end = vec![0u64; ndim];
        for a in (0..ndim).rev() {
            let i = rest % counts[a];
            rest /= counts[a];
            start[a] = i * split[a];
            end[a] = ((i + 1) * split[a]).min(dst_shape[a]);
        }
        let dst = Region::from_bounds(&start, &end);
        let needed = required_source(step, &dst);
        let src = input.extract(&needed);
        let tile = backend.downsample(step, &src, &dst).expect("tile");
        ome_pyramid::dispatch_dtype!(input.data.dtype(), T => {
            let mut buffer = T::unwrap(std::mem::replace(&mut out, TileData::U8(vec![]))).unwrap();
            copy_overlap(T::view(&tile.data).unwrap(), &tile.region, &mut buffer, &whole);
            out = T::wrap(buffer);
        });
    }
    out
}

/// A random case for property tests: shape (2 to 5 axes), factors, dtype, data.
#[derive(Debug, Clone)]
struct Case {
    shape: Vec<u64>,
    factors: Vec<u32>,
    dtype: DType,
    method: Method,
    seed: u64,
    split: Vec<u64>,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (2usize..=5)
        .prop_flat_map(|ndim| {
            (
                proptest::collection::vec(1u64..=11, ndim),
                proptest::collection::vec(1u32..=3, ndim),
                proptest::sample::select(DType::ALL.to_vec()),
                proptest::sample::select(Method::ALL.to_vec()),
                any::<u64>(),
                proptest::collection::vec(1u64..=4, ndim),
            )
        })
        .prop_filter("at most 4000 voxels", |(shape, ..)| {
            shape.iter().product::<u64>() <= 4000
        })
        .prop_map(|(shape, mut factors, dtype, method, seed, split)| {
            if factors.iter().all(|&f| f == 1) {
                factors[0] = 2;
            }
            Case {
                shape,
                factors,
                dtype,
                method,
                seed,
                split,
            }
        })
}

/// The invariants of SPEC §2 on one random case.
fn check_invariants(backend: &dyn Downsampler, case: &Case) -> Result<(), TestCaseError> {
    if !backend.supports(case.method, case.dtype) {
        return Ok(());
    }
    let len = case.shape.iter().product::<u64>() as usize;
    let input = test_input(case.method, case.dtype, len, case.seed);
    let step = Step {
        method: case.method,
        factors: case.factors.clone(),
        src_shape: case.shape.clone(),
    };
    let src = Tile::new(Region::whole(&case.shape), input.clone());
    let whole = backend
        .downsample(&step, &src, &Region::whole(&step.dst_shape()))
        .unwrap();

    // Output shape is ceil(n / f) on every axis.
    let expected_shape: Vec<u64> = case
        .shape
        .iter()
        .zip(&case.factors)
        .map(|(&n, &f)| n.div_ceil(u64::from(f)))
        .collect();
    prop_assert_eq!(&whole.region.shape, &expected_shape);

    // Results never depend on the tiling.
    let tiled = downsample_tiled(backend, &step, &src, &case.split);
    prop_assert!(
        compare(&tiled, &whole.data, Tolerance::Exact).is_ok(),
        "tiling changed the result"
    );

    // Selecting methods equal the literal definition exactly, on every dtype.
    if case.method.selects_input_values() && case.method != Method::Nearest {
        let expected = reference_step(case.method, &input, &case.shape, &case.factors);
        prop_assert!(
            compare(&whole.data, &expected, Tolerance::Exact).is_ok(),
            "{} differs from its definition",
            case.method
        );
    }

    let values = as_f64(&input);
    let outputs = as_f64(&whole.data);
    let strides: Vec<u64> = {
        let mut s = vec![1u64; case.shape.len()];
        for a in (0..case.shape.len() - 1).rev() {
            s[a] = s[a + 1] * case.shape[a + 1];
        }
        s
    };
    for (flat, &y) in outputs.iter().enumerate() {
        let mut rest = flat as u64;
        let mut index = vec![0u64; case.shape.len()];
        for a in (0..case.shape.len()).rev() {
            index[a] = rest % expected_shape[a];
            rest /= expected_shape[a];
        }
        // The voxels the output may depend on: the window (nearest, mean) or the blur
        // support around it (gaussian), clipped to the array.
        let support: Vec<(u64, u64)> = (0..case.shape.len())
            .map(|a| {
                let f = u64::from(case.factors[a]);
                let halo = case.method.halo(case.factors[a]);
                let lo = (index[a] * f).saturating_sub(halo);
                let hi = (((index[a] + 1) * f).min(case.shape[a]) + halo).min(case.shape[a]);
                (lo, hi)
            })
            .collect();
        if case.method == Method::Nearest {
            let source: u64 = index
                .iter()
                .zip(&case.factors)
                .zip(&strides)
                .map(|((&i, &f), &s)| i * u64::from(f) * s)
                .sum();
            let x = values[source as usize];
            prop_assert!(x == y || (x.is_nan() && y.is_nan()), "nearest output {y} is input {x}");
            continue;
        }
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        let mut position: Vec<u64> = support.iter().map(|s| s.0).collect();
        'support: loop {
            let offset: u64 = position.iter().zip(&strides).map(|(&p, &s)| p * s).sum();
            lo = lo.min(values[offset as usize]);
            hi = hi.max(values[offset as usize]);
            let mut a = position.len();
            loop {
                if a == 0 {
                    break 'support;
                }
                a -= 1;
                position[a] += 1;
                if position[a] < support[a].1 {
                    break;
                }
                position[a] = support[a].0;
            }
        }
        if case.method.selects_input_values() {
            let window: Vec<f64> = common::window_offsets(case.method, &case.shape, &case.factors)[flat]
                .iter()
                .map(|&i| values[i])
                .collect();
            prop_assert!(
                window.iter().any(|&x| x == y || (x.is_nan() && y.is_nan())),
                "{} output {y} is not a value of its window {window:?}",
                case.method
            );
        }
        // Within the window's range (plus float rounding of the result type).
        // 64-bit integers beyond 2^53 are only approximately held by the f64 blur.
        let slack = match case.dtype {
            DType::F32 | DType::F64 => 1e-5 * lo.abs().max(hi.abs()),
            DType::U64 | DType::I64 => 0.5f64.max(4.0 * f64::EPSILON * lo.abs().max(hi.abs())),
            _ => 0.5,
        };
        prop_assert!(
            y >= lo - slack && y <= hi + slack,
            "output {y} outside [{lo}, {hi}] for {:?}",
            case
        );
    }
    Ok(())
}

/// Every method but nearest gives a constant array's constant, for every dtype.
fn constant_stays_constant(backend: &dyn Downsampler, _is_gpu: bool) {
    for dtype in DType::ALL {
        for method in Method::ALL.into_iter().filter(|&m| m != Method::Nearest) {
            if !backend.supports(method, dtype) {
                continue;
            }
            let value = match dtype {
                DType::U8 => 201.0,
                DType::I8 => -77.0,
                DType::F32 | DType::F64 => 3.25,
                _ => 12_345.0,
            };
            let shape = [3u64, 7, 5];
            let input = round_to(dtype, &vec![value; 105], &[value]);
            let out = downsample_whole(backend, method, &shape, &[2, 2, 3], input);
            let expected = round_to(dtype, &vec![value; out.data.len()], &[value]);
            let tol = if dtype.is_float() {
                Tolerance::Relative(1e-6)
            } else {
                Tolerance::Exact
            };
            compare(&out.data, &expected, tol).unwrap_or_else(|e| panic!("{method} {dtype}: {e}"));
        }
    }
}

fn property_invariants(backend: &dyn Downsampler, is_gpu: bool) {
    let cases = if is_gpu { 24 } else { 256 };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases,
        ..ProptestConfig::default()
    });
    runner
        .run(&case_strategy(), |case| check_invariants(backend, &case))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Generates `cpu::name` and `gpu::name` for each kernel test. The GPU variant runs on any
/// adapter (lavapipe in CI); under `CI=true` a missing adapter fails the test.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod cpu {
            $(
                #[test]
                fn $name() {
                    let backend = ome_pyramid::backend::cpu::CpuBackend::new();
                    super::$name(&backend, false);
                }
            )*
        }
        mod gpu {
            $(
                #[test]
                fn $name() {
                    if let Some(gpu) = super::common::gpu_or_skip(concat!("gpu::", stringify!($name))) {
                        super::$name(gpu.as_ref(), true);
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    golden_nearest,
    golden_mean,
    golden_gaussian,
    golden_mode,
    reference_every_dtype,
    mode_exact_for_64_bit_labels,
    mode_ties_and_partial_windows,
    large_windows_equal_their_definition,
    mode_is_not_defined_on_floats,
    min_max_nan_and_signed_zeros,
    mean_exact_for_64_bit_extremes,
    mean_rounds_half_to_even,
    nan_propagates,
    constant_stays_constant,
    property_invariants,
);

/// Integer nearest, mean, mode, min and max are bit-identical between the CPU and the GPU
/// (SPEC §2), on windows of factors 2 and 3, partial edges included, in both of the
/// kernels' layouts (`shaders/common.wgsl`).
#[test]
fn gpu_matches_cpu_bit_for_bit_on_integers() {
    let Some(gpu) = common::gpu_or_skip("gpu_matches_cpu_bit_for_bit_on_integers") else {
        return;
    };
    let cpu: Arc<dyn Downsampler> = Arc::new(ome_pyramid::backend::cpu::CpuBackend::new());
    for dtype in DType::ALL
        .into_iter()
        .filter(|d| !d.is_float() && gpu.supports(Method::Mean, *d))
    {
        for method in [Method::Nearest, Method::Mean, Method::Mode, Method::Min, Method::Max] {
            for (shape, factors) in [
                (&[33u64, 47][..], &[2u32, 2][..]),
                (&[9, 17, 31], &[2, 2, 2]),
                (&[3, 5, 12, 13], &[1, 3, 2, 3]),
                // Rows of whole words of every dtype: the rows layout.
                (&[8, 32, 128], &[2, 2, 2]),
                // Several channels, and times, in one tile: the rows layout with the
                // leading axes flattened into its planes.
                (&[3, 8, 64, 128], &[1, 2, 2, 2]),
                (&[2, 3, 4, 64, 128], &[1, 1, 2, 2, 2]),
                // Rows that end inside a word (the rows layout's ragged variant): a row's
                // last word holds outputs of the next rows, and of the next plane or
                // channel; rows shorter than a word; a last word past the last output.
                (&[16, 66, 202], &[2, 2, 2]),
                (&[4, 3, 2, 10, 22], &[1, 1, 1, 2, 2]),
                (&[21, 6], &[1, 3]),
            ] {
                let len = shape.iter().product::<u64>() as usize;
                let input = test_input(method, dtype, len, 7);
                let a = downsample_whole(cpu.as_ref(), method, shape, factors, input.clone());
                let b = downsample_whole(gpu.as_ref(), method, shape, factors, input);
                assert_eq!(a.data, b.data, "{method} {dtype} {shape:?}");
            }
        }
    }
}

/// Integer gaussian on the GPU is within ±1 of the CPU's (SPEC §2) on tiles of several
/// channels and times, whose planes the rows layout and the fused y–x pass flatten into the
/// dispatch's z.
#[test]
fn gpu_gaussian_agrees_with_the_cpu_on_tiles_of_several_channels() {
    let Some(gpu) = common::gpu_or_skip("gpu_gaussian_agrees_with_the_cpu_on_tiles_of_several_channels") else {
        return;
    };
    let cpu: Arc<dyn Downsampler> = Arc::new(ome_pyramid::backend::cpu::CpuBackend::new());
    for dtype in [DType::U8, DType::U16, DType::I8, DType::I16] {
        for (shape, factors) in [
            (&[3u64, 8, 64, 128][..], &[1u32, 2, 2, 2][..]),
            (&[2, 3, 4, 64, 128], &[1, 1, 2, 2, 2]),
            (&[2, 3, 4, 64, 128], &[1, 1, 1, 2, 2]),
        ] {
            let len = shape.iter().product::<u64>() as usize;
            let input = test_input(Method::Gaussian, dtype, len, 5);
            let a = downsample_whole(cpu.as_ref(), Method::Gaussian, shape, factors, input.clone());
            let b = downsample_whole(gpu.as_ref(), Method::Gaussian, shape, factors, input);
            compare(&b.data, &a.data, tolerance(Method::Gaussian, dtype, true))
                .unwrap_or_else(|e| panic!("{dtype} {shape:?} {factors:?}: {e}"));
        }
    }
}

/// A GPU task's upload staging and readback buffers, and on a software or integrated
/// adapter its device buffers, count against `--memory`; a CPU task holds nothing beyond
/// the tiles the engine counts itself.
#[test]
fn gpu_tasks_count_their_buffers_against_the_memory_budget() {
    let (source, outputs) = (64u64 << 20, 8u64 << 20);
    let cpu = ome_pyramid::backend::cpu::CpuBackend::new();
    assert_eq!(cpu.task_memory_bytes(Method::Gaussian, source, outputs), 0);
    let Some(gpu) = common::gpu_or_skip("gpu_tasks_count_their_buffers_against_the_memory_budget") else {
        return;
    };
    let mean = gpu.task_memory_bytes(Method::Mean, source, outputs);
    assert!(mean >= source + outputs, "the staging copy and the readback: {mean}");
    if gpu.description().contains("software") {
        // lavapipe's device buffers are host memory: the source and levels once more.
        assert!(mean >= 2 * (source + outputs), "{mean}");
        assert!(gpu.task_memory_bytes(Method::Gaussian, source, outputs) > mean);
    }
}
