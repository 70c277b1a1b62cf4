//! Level shapes, per-axis factors and the stop rule (SPEC §3). Pure: no I/O.
//!
//! - Output shape of a step is `ceil(n / f)` on every axis.
//! - An axis is *still being reduced* while it is a space axis larger than its output chunk
//!   (with `--levels N`: larger than one voxel). No level shrinks an axis that already fits
//!   one chunk, and an axis held at factor 1 never keeps the pyramid going.
//! - `--factors auto` (the anisotropy rule): an axis still being reduced is halved when its
//!   current pixel size is at most 1.5× the smallest current pixel size among the axes still
//!   being reduced; other axes keep factor 1. (Axes that are done take no part in the
//!   comparison: a flat axis with a tiny nominal pixel size would otherwise stop every other
//!   axis from ever being reduced.) Fixed factors apply to the axes still being reduced.
//! - Default level count: add levels until no axis is reduced. `--levels N` asks for
//!   exactly `N`, or says why it cannot be had.

pub mod shards;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use shards::{ShardChoice, shard_shapes};

/// The kind of an axis, as OME-NGFF v0.4 names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AxisKind {
    /// `time`
    Time,
    /// `channel`
    Channel,
    /// `space`
    Space,
    /// Any other type, or none.
    Other(Option<String>),
}

impl AxisKind {
    /// The v0.4 `type` string, if any.
    #[must_use]
    pub fn type_name(&self) -> Option<&str> {
        match self {
            AxisKind::Time => Some("time"),
            AxisKind::Channel => Some("channel"),
            AxisKind::Space => Some("space"),
            AxisKind::Other(name) => name.as_deref(),
        }
    }

    /// Parses a v0.4 `type` string.
    #[must_use]
    pub fn from_type_name(name: Option<&str>) -> Self {
        match name {
            Some("time") => AxisKind::Time,
            Some("channel") => AxisKind::Channel,
            Some("space") => AxisKind::Space,
            other => AxisKind::Other(other.map(str::to_string)),
        }
    }
}

/// One named axis of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Axis {
    /// Axis name, e.g. `z`.
    pub name: String,
    /// Axis kind.
    pub kind: AxisKind,
    /// Physical unit, e.g. `micrometer`.
    pub unit: Option<String>,
}

impl Axis {
    /// An axis whose kind follows from its name: `t` time, `c` channel, `z`/`y`/`x` space,
    /// anything else a custom axis without a type.
    #[must_use]
    pub fn from_name(name: &str) -> Self {
        let kind = match name {
            "t" => AxisKind::Time,
            "c" => AxisKind::Channel,
            "z" | "y" | "x" => AxisKind::Space,
            _ => AxisKind::Other(None),
        };
        Self {
            name: name.to_string(),
            kind,
            unit: None,
        }
    }

    /// True for a space axis.
    #[must_use]
    pub fn is_space(&self) -> bool {
        self.kind == AxisKind::Space
    }
}

/// Errors in the axes, factors or level count.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The axes do not form a valid OME-NGFF v0.4 image.
    #[error("invalid axes `{axes}`: {reason}")]
    InvalidAxes {
        /// The axis names.
        axes: String,
        /// What is wrong.
        reason: String,
    },
    /// No default axes exist for this many dimensions.
    #[error("a {0}-dimensional array is not supported (OME-NGFF v0.4 images have 2 to 5 axes)")]
    UnsupportedDimensionality(usize),
    /// The number of axes differs from the array's dimensionality.
    #[error("{given} axes given ({axes}) but the array has {ndim} dimensions")]
    AxisCountMismatch {
        /// The axis names.
        axes: String,
        /// Number of axes given.
        given: usize,
        /// Array dimensionality.
        ndim: usize,
    },
    /// A factor is zero or names an axis that is not a space axis.
    #[error("invalid factor {factor} for axis `{axis}`: {reason}")]
    InvalidFactor {
        /// Axis name.
        axis: String,
        /// The factor given.
        factor: u32,
        /// What is wrong.
        reason: String,
    },
    /// More levels were requested than the volume allows.
    #[error("{requested} levels requested, but only {possible} are possible: {reason}")]
    TooManyLevels {
        /// Levels asked for.
        requested: usize,
        /// Levels that can be made.
        possible: usize,
        /// Why no more.
        reason: String,
    },
    /// `--levels 0`.
    #[error("the level count must be at least 1 (level 0 is the input itself)")]
    ZeroLevels,
    /// A shard shape that cannot be used.
    #[error("invalid shards: {0}")]
    InvalidShards(String),
    /// A pixel size is not a positive finite number.
    #[error("invalid pixel size {value} for axis `{axis}`: it must be a positive finite number")]
    InvalidPixelSize {
        /// Axis name.
        axis: String,
        /// The value.
        value: f64,
    },
}

/// Comma-free names of the axes, e.g. `tczyx`, for messages.
#[must_use]
pub fn axis_names(axes: &[Axis]) -> String {
    let names: Vec<&str> = axes.iter().map(|a| a.name.as_str()).collect();
    if names.iter().all(|n| n.chars().count() == 1) {
        names.concat()
    } else {
        names.join(",")
    }
}

/// The default axes of a plain array: `yx`, `zyx`, `czyx` or `tczyx`.
///
/// # Errors
/// [`PlanError::UnsupportedDimensionality`] outside 2 to 5 dimensions.
pub fn default_axes(ndim: usize) -> Result<Vec<Axis>, PlanError> {
    let names = match ndim {
        2 => "yx",
        3 => "zyx",
        4 => "czyx",
        5 => "tczyx",
        _ => return Err(PlanError::UnsupportedDimensionality(ndim)),
    };
    Ok(names.chars().map(|c| Axis::from_name(&c.to_string())).collect())
}

/// Axes from a string such as `tczyx` (one letter per axis) or `t,c,z,y,x`.
///
/// # Errors
/// If the axes are not a valid v0.4 image (see [`validate_axes`]).
pub fn parse_axes(spec: &str) -> Result<Vec<Axis>, PlanError> {
    let names: Vec<String> = if spec.contains(',') {
        spec.split(',').map(|s| s.trim().to_string()).collect()
    } else {
        spec.chars().map(|c| c.to_string()).collect()
    };
    if names.iter().any(String::is_empty) {
        return Err(PlanError::InvalidAxes {
            axes: spec.to_string(),
            reason: "empty axis name".into(),
        });
    }
    let axes: Vec<Axis> = names.iter().map(|n| Axis::from_name(n)).collect();
    validate_axes(&axes)?;
    Ok(axes)
}

/// Checks the OME-NGFF v0.4 rules: 2 to 5 axes with unique names; 2 or 3 space axes; at
/// most one time axis, first; at most one channel or custom axis, after time and before
/// the space axes.
///
/// # Errors
/// [`PlanError::InvalidAxes`] naming the broken rule.
pub fn validate_axes(axes: &[Axis]) -> Result<(), PlanError> {
    let fail = |reason: &str| {
        Err(PlanError::InvalidAxes {
            axes: axis_names(axes),
            reason: reason.to_string(),
        })
    };
    if !(2..=5).contains(&axes.len()) {
        return fail("an OME-NGFF v0.4 image has 2 to 5 axes");
    }
    for (i, a) in axes.iter().enumerate() {
        if axes[..i].iter().any(|b| b.name == a.name) {
            return fail(&format!("axis name `{}` appears twice", a.name));
        }
    }
    let space = axes.iter().filter(|a| a.is_space()).count();
    if !(2..=3).contains(&space) {
        return fail("there must be 2 or 3 space axes (z, y, x)");
    }
    let rank = |a: &Axis| match a.kind {
        AxisKind::Time => 0,
        AxisKind::Channel | AxisKind::Other(_) => 1,
        AxisKind::Space => 2,
    };
    if axes.windows(2).any(|w| rank(&w[0]) > rank(&w[1])) {
        return fail("axes must be ordered time, then channel (or custom), then space");
    }
    if axes.iter().filter(|a| a.kind == AxisKind::Time).count() > 1 {
        return fail("at most one time axis");
    }
    if axes.iter().filter(|a| rank(a) == 1).count() > 1 {
        return fail("at most one channel or custom axis");
    }
    Ok(())
}

/// How step factors are chosen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum FactorRule {
    /// The anisotropy rule of SPEC §3.
    #[default]
    Auto,
    /// The same factor per axis at every step (1 on non-space axes). An axis that has
    /// reached size 1 is no longer reduced.
    Fixed(Vec<u32>),
    /// Exactly these factors, one list per step, whatever the stop rule says: the geometry
    /// of another pyramid (a label image follows its image's levels). The level count is
    /// one more than the number of steps.
    PerStep(Vec<Vec<u32>>),
}

/// What a pyramid should look like.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    /// Level-0 shape.
    pub shape: Vec<u64>,
    /// Output chunk shape (before clipping to each level).
    pub chunks: Vec<u64>,
    /// The axes.
    pub axes: Vec<Axis>,
    /// Level-0 pixel size per axis (only space axes matter to the rule).
    pub pixel_size: Vec<f64>,
    /// Factor rule.
    pub factors: FactorRule,
    /// Exact total level count, or `None` for the stop rule.
    pub levels: Option<usize>,
}

/// One level of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LevelPlan {
    /// Shape of the level.
    pub shape: Vec<u64>,
    /// Output chunk shape, clipped to the level shape.
    pub chunks: Vec<u64>,
    /// Factors of the step that produced this level (all 1 for level 0).
    pub step_factors: Vec<u32>,
    /// Product of all step factors up to this level.
    pub cumulative_factors: Vec<u64>,
}

impl LevelPlan {
    /// Number of chunks along each axis.
    #[must_use]
    pub fn chunk_grid(&self) -> Vec<u64> {
        self.shape
            .iter()
            .zip(&self.chunks)
            .map(|(&n, &c)| n.div_ceil(c))
            .collect()
    }
}

/// The levels of a pyramid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PyramidPlan {
    /// Level 0 first.
    pub levels: Vec<LevelPlan>,
}

impl PyramidPlan {
    /// Number of levels, level 0 included.
    #[must_use]
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Always false: a plan holds level 0 at least.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }
}

impl fmt::Display for PyramidPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, level) in self.levels.iter().enumerate() {
            writeln!(f, "level {k}: shape {:?} chunks {:?}", level.shape, level.chunks)?;
        }
        Ok(())
    }
}

fn clip_chunks(chunks: &[u64], shape: &[u64]) -> Vec<u64> {
    chunks.iter().zip(shape).map(|(&c, &n)| c.min(n).max(1)).collect()
}

/// Step factors by the anisotropy rule (SPEC §3): 2 on an axis still being reduced whose
/// current pixel size is within 1.5× of the smallest among those axes, else 1.
fn auto_factors(reduced: &[bool], pixel: &[f64]) -> Vec<u32> {
    let smallest = (0..reduced.len())
        .filter(|&a| reduced[a])
        .map(|a| pixel[a])
        .fold(f64::INFINITY, f64::min);
    (0..reduced.len())
        .map(|a| {
            let within = pixel[a] <= 1.5 * smallest * (1.0 + 1e-9);
            if reduced[a] && within { 2 } else { 1 }
        })
        .collect()
}

/// Computes the levels of a pyramid.
///
/// # Errors
/// - [`PlanError::InvalidFactor`] for a zero factor or one on a non-space axis;
/// - [`PlanError::TooManyLevels`] when `levels` cannot be reached;
/// - [`PlanError::ZeroLevels`], [`PlanError::InvalidPixelSize`].
pub fn plan_pyramid(request: &PlanRequest) -> Result<PyramidPlan, PlanError> {
    let ndim = request.shape.len();
    debug_assert_eq!(request.axes.len(), ndim);
    if request.levels == Some(0) {
        return Err(PlanError::ZeroLevels);
    }
    for (axis, &p) in request.axes.iter().zip(&request.pixel_size) {
        if !(p.is_finite() && p > 0.0) {
            return Err(PlanError::InvalidPixelSize {
                axis: axis.name.clone(),
                value: p,
            });
        }
    }
    let given: &[Vec<u32>] = match &request.factors {
        FactorRule::Auto => &[],
        FactorRule::Fixed(factors) => std::slice::from_ref(factors),
        FactorRule::PerStep(steps) => steps,
    };
    for factors in given {
        for (axis, &f) in request.axes.iter().zip(factors) {
            if f == 0 {
                return Err(PlanError::InvalidFactor {
                    axis: axis.name.clone(),
                    factor: f,
                    reason: "factors must be at least 1".into(),
                });
            }
            if f > 1 && !axis.is_space() {
                return Err(PlanError::InvalidFactor {
                    axis: axis.name.clone(),
                    factor: f,
                    reason: "only space axes are downsampled".into(),
                });
            }
        }
        if factors.iter().all(|&f| f == 1) {
            return Err(PlanError::InvalidFactor {
                axis: axis_names(&request.axes),
                factor: 1,
                reason: "at least one space axis needs a factor above 1".into(),
            });
        }
    }

    if let FactorRule::PerStep(steps) = &request.factors
        && request.levels.is_some_and(|n| n != steps.len() + 1)
    {
        return Err(PlanError::TooManyLevels {
            requested: request.levels.unwrap_or_default(),
            possible: steps.len() + 1,
            reason: "the levels are those of the given steps".into(),
        });
    }
    let mut shape = request.shape.clone();
    let mut pixel = request.pixel_size.clone();
    let mut levels = vec![LevelPlan {
        shape: shape.clone(),
        chunks: clip_chunks(&request.chunks, &shape),
        step_factors: vec![1; ndim],
        cumulative_factors: vec![1; ndim],
    }];
    loop {
        if request.levels == Some(levels.len()) {
            break;
        }
        if let FactorRule::PerStep(steps) = &request.factors {
            match steps.get(levels.len() - 1) {
                Some(factors) => {
                    push_level(&mut levels, &request.chunks, factors.clone());
                    continue;
                }
                None => break,
            }
        }
        // The axes still being reduced (SPEC §3): space axes larger than their chunk, so no
        // level shrinks an axis that already fits one; with an exact level count, any space
        // axis longer than one voxel.
        let reduced: Vec<bool> = (0..ndim)
            .map(|a| {
                let limit = if request.levels.is_some() { 1 } else { request.chunks[a] };
                request.axes[a].is_space() && shape[a] > limit
            })
            .collect();
        let factors: Vec<u32> = match &request.factors {
            FactorRule::Auto => auto_factors(&reduced, &pixel),
            FactorRule::Fixed(fixed) => fixed
                .iter()
                .zip(&reduced)
                .map(|(&f, &r)| if r { f } else { 1 })
                .collect(),
            FactorRule::PerStep(_) => unreachable!("per-step factors are taken above"),
        };
        if factors.iter().all(|&f| f == 1) {
            if let Some(wanted) = request.levels {
                return Err(PlanError::TooManyLevels {
                    requested: wanted,
                    possible: levels.len(),
                    reason: format!(
                        "level {} has shape {:?} and no space axis can be reduced further",
                        levels.len() - 1,
                        shape
                    ),
                });
            }
            break;
        }
        for a in 0..ndim {
            pixel[a] *= f64::from(factors[a]);
        }
        push_level(&mut levels, &request.chunks, factors);
        shape.clone_from(&levels.last().expect("level 0 is there").shape);
    }
    Ok(PyramidPlan { levels })
}

/// Appends the level one step of `factors` makes from the last level.
fn push_level(levels: &mut Vec<LevelPlan>, chunks: &[u64], factors: Vec<u32>) {
    let last = levels.last().expect("level 0 is there");
    let shape: Vec<u64> = last
        .shape
        .iter()
        .zip(&factors)
        .map(|(&n, &f)| n.div_ceil(u64::from(f)))
        .collect();
    let cumulative_factors = last
        .cumulative_factors
        .iter()
        .zip(&factors)
        .map(|(&c, &f)| c * u64::from(f))
        .collect();
    levels.push(LevelPlan {
        chunks: clip_chunks(chunks, &shape),
        shape,
        step_factors: factors,
        cumulative_factors,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(shape: &[u64], chunks: &[u64], pixel: &[f64]) -> PlanRequest {
        PlanRequest {
            shape: shape.to_vec(),
            chunks: chunks.to_vec(),
            axes: default_axes(shape.len()).unwrap(),
            pixel_size: pixel.to_vec(),
            factors: FactorRule::Auto,
            levels: None,
        }
    }

    #[test]
    fn isotropic_volume_halves_every_space_axis_until_one_chunk() {
        let plan = plan_pyramid(&request(&[256, 1024, 1024], &[64, 256, 256], &[1.0; 3])).unwrap();
        let shapes: Vec<_> = plan.levels.iter().map(|l| l.shape.clone()).collect();
        assert_eq!(
            shapes,
            vec![vec![256, 1024, 1024], vec![128, 512, 512], vec![64, 256, 256]]
        );
    }

    #[test]
    fn anisotropic_z_waits_until_xy_catch_up() {
        // z=2.0, y=x=0.5: two xy-only steps, then isotropic ones (SPEC §3).
        let plan = plan_pyramid(&request(&[64, 2048, 2048], &[16, 64, 64], &[2.0, 0.5, 0.5])).unwrap();
        let factors: Vec<_> = plan.levels[1..].iter().map(|l| l.step_factors.clone()).collect();
        assert_eq!(factors[0], vec![1, 2, 2]);
        assert_eq!(factors[1], vec![1, 2, 2]);
        assert_eq!(factors[2], vec![2, 2, 2]);
    }

    #[test]
    fn an_axis_fixed_at_one_never_keeps_the_pyramid_going() {
        // 128×512×512, chunks 64×256×256, z=1: y and x fit one chunk after one step; z,
        // which never will, does not make levels down to 128×1×1.
        let mut r = request(&[128, 512, 512], &[64, 256, 256], &[1.0; 3]);
        r.factors = FactorRule::Fixed(vec![1, 2, 2]);
        let shapes: Vec<_> = plan_pyramid(&r)
            .unwrap()
            .levels
            .iter()
            .map(|l| l.shape.clone())
            .collect();
        assert_eq!(shapes, vec![vec![128, 512, 512], vec![128, 256, 256]]);
    }

    #[test]
    fn per_step_factors_are_taken_as_given() {
        // Another pyramid's steps, past where the stop rule would end (y fits its chunk).
        let mut r = request(&[9, 40, 30], &[8, 64, 64], &[1.0; 3]);
        r.factors = FactorRule::PerStep(vec![vec![1, 2, 2], vec![3, 1, 2]]);
        let plan = plan_pyramid(&r).unwrap();
        let shapes: Vec<_> = plan.levels.iter().map(|l| l.shape.clone()).collect();
        assert_eq!(shapes, vec![vec![9, 40, 30], vec![9, 20, 15], vec![3, 20, 8]]);
        assert_eq!(plan.levels[2].cumulative_factors, vec![3, 2, 4]);
        r.levels = Some(3);
        assert_eq!(plan_pyramid(&r).unwrap(), plan);
        r.levels = Some(2);
        assert!(plan_pyramid(&r).is_err(), "the level count is that of the steps");
        r.levels = None;
        r.factors = FactorRule::PerStep(vec![vec![1, 2, 2], vec![1, 1, 1]]);
        assert!(plan_pyramid(&r).is_err(), "a step that reduces nothing is refused");
    }

    #[test]
    fn a_deep_stack_is_reduced_along_z_alone() {
        // y and x already fit one chunk: only z is reduced, and y and x keep their size.
        let plan = plan_pyramid(&request(&[600, 60, 70], &[64, 64, 128], &[0.3, 0.145, 0.145])).unwrap();
        let shapes: Vec<_> = plan.levels.iter().map(|l| l.shape.clone()).collect();
        assert_eq!(
            shapes,
            vec![
                vec![600, 60, 70],
                vec![300, 60, 70],
                vec![150, 60, 70],
                vec![75, 60, 70],
                vec![38, 60, 70]
            ]
        );
    }

    #[test]
    fn a_lattice_stack_never_gets_one_voxel_axes() {
        // t×c×z×y×x = 2×3×501×11×13 in chunks 1×1×64×64×64: y and x fit from the start.
        let mut r = request(&[2, 3, 501, 11, 13], &[1, 1, 64, 64, 64], &[1.0, 1.0, 0.4, 0.1, 0.1]);
        r.axes = parse_axes("tczyx").unwrap();
        let plan = plan_pyramid(&r).unwrap();
        let top = &plan.levels.last().unwrap().shape;
        assert_eq!(top, &vec![2, 3, 63, 11, 13]);
        assert!(plan.levels.iter().all(|l| l.shape[3..] == [11, 13]));
    }

    #[test]
    fn an_exact_level_count_still_reduces_past_one_chunk() {
        let mut r = request(&[128, 512, 512], &[64, 256, 256], &[1.0; 3]);
        r.factors = FactorRule::Fixed(vec![1, 2, 2]);
        r.levels = Some(4);
        let plan = plan_pyramid(&r).unwrap();
        assert_eq!(plan.levels[3].shape, vec![128, 64, 64]);
    }

    #[test]
    fn ceil_shapes_keep_the_far_edge() {
        let mut r = request(&[5, 7], &[1, 1], &[1.0; 2]);
        r.levels = Some(3);
        let plan = plan_pyramid(&r).unwrap();
        assert_eq!(plan.levels[1].shape, vec![3, 4]);
        assert_eq!(plan.levels[2].shape, vec![2, 2]);
    }

    #[test]
    fn impossible_level_count_says_why() {
        let mut r = request(&[4, 4], &[1, 1], &[1.0; 2]);
        r.levels = Some(5);
        let err = plan_pyramid(&r).unwrap_err();
        assert!(
            matches!(
                err,
                PlanError::TooManyLevels {
                    requested: 5,
                    possible: 3,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn axes_rules() {
        assert!(parse_axes("tczyx").is_ok());
        assert!(parse_axes("zyx").is_ok());
        assert!(parse_axes("yxz").is_ok()); // three space axes in any order
        assert!(parse_axes("ctzyx").is_err());
        assert!(parse_axes("zyxc").is_err());
        assert!(parse_axes("x").is_err());
        assert!(parse_axes("cqyx").is_err());
        assert!(parse_axes("yy").is_err());
    }

    #[test]
    fn factors_on_channel_axes_are_refused() {
        let mut r = request(&[3, 64, 64, 64], &[1, 8, 8, 8], &[1.0; 4]);
        r.factors = FactorRule::Fixed(vec![2, 2, 2, 2]);
        assert!(matches!(plan_pyramid(&r), Err(PlanError::InvalidFactor { .. })));
    }
}
