//! The output's `multiscales` entry (SPEC §4), the same in v0.4 and v0.5: per axis, with
//! cumulative factor `F(k)`, level-0 pixel size `s` and translation `t`, `scale = s·F(k)`;
//! `translation = t + s·(F(k) − 1)/2` for methods that represent the window centre (mean,
//! gaussian, mode, min, max), `translation = t` for nearest.

use serde_json::json;

use super::{AxisMetadata, CoordinateTransformation, Dataset, Multiscale};
use crate::method::{Method, gaussian_sigma};
use crate::plan::{Axis, PyramidPlan};

/// Everything the output `multiscales` says.
#[derive(Debug, Clone)]
pub struct MultiscalesSpec<'a> {
    /// Image name.
    pub name: &'a str,
    /// Axes with units.
    pub axes: &'a [Axis],
    /// Level-0 pixel size per axis.
    pub pixel_size: &'a [f64],
    /// Level-0 translation per axis.
    pub translation: &'a [f64],
    /// The levels.
    pub plan: &'a PyramidPlan,
    /// The method.
    pub method: Method,
    /// True if the data type is an integer type (values are rounded).
    pub integer_dtype: bool,
    /// Backend description, e.g. `cpu (2 threads)`.
    pub backend: &'a str,
    /// Multiscale-level transformations to carry over.
    pub multiscale_transforms: Option<&'a [CoordinateTransformation]>,
}

/// Scale and translation of level `k`, per SPEC §4.
#[must_use]
pub fn level_transforms(spec: &MultiscalesSpec<'_>, level: usize) -> (Vec<f64>, Vec<f64>) {
    let factors = &spec.plan.levels[level].cumulative_factors;
    factors
        .iter()
        .zip(spec.pixel_size)
        .zip(spec.translation)
        .map(|((&factor, &pixel), &offset)| {
            #[allow(clippy::cast_precision_loss)]
            let f = factor as f64;
            let shift = if spec.method.samples_window_centre() {
                pixel * (f - 1.0) / 2.0
            } else {
                0.0
            };
            (pixel * f, offset + shift)
        })
        .unzip()
}

/// The output `multiscales` entry.
#[must_use]
pub fn build_multiscale(spec: &MultiscalesSpec<'_>) -> Multiscale {
    let datasets = (0..spec.plan.len())
        .map(|k| {
            let (scale, translation) = level_transforms(spec, k);
            Dataset {
                path: k.to_string(),
                coordinate_transformations: vec![
                    CoordinateTransformation::Scale { scale },
                    CoordinateTransformation::Translation { translation },
                ],
            }
        })
        .collect();
    let step_factors: Vec<&Vec<u32>> = spec.plan.levels[1..].iter().map(|l| &l.step_factors).collect();
    let mut metadata = json!({
        "method": spec.method.name(),
        "software": "ome-pyramid",
        "version": env!("CARGO_PKG_VERSION"),
        "factors": step_factors,
        "edges": "partial windows at the far edge; only in-bounds voxels are averaged",
        "rounding": if spec.integer_dtype { "nearest, ties to even, clamped to the dtype range" } else { "none (float)" },
        "backend": spec.backend,
    });
    if let Some(description) = selection_description(spec.method) {
        metadata["edges"] = json!("partial windows at the far edge; only in-bounds voxels count");
        metadata["rounding"] = json!("none: every value is a value of its window");
        metadata["description"] = json!(description);
    }
    if spec.method == Method::Gaussian {
        let sigma: Vec<Vec<f64>> = step_factors
            .iter()
            .map(|fs| {
                fs.iter()
                    .map(|&f| if f > 1 { gaussian_sigma(f) } else { 0.0 })
                    .collect()
            })
            .collect();
        metadata["sigma"] = json!(sigma);
        metadata["truncate"] = json!(4.0);
        metadata["border"] = json!("reflect (half-sample symmetric)");
        metadata["description"] =
            json!("gaussian blur along each reduced axis, then the window mean (scipy.ndimage.gaussian_filter + mean)");
    }
    Multiscale {
        version: Some("0.4".into()),
        name: Some(spec.name.to_string()),
        axes: spec
            .axes
            .iter()
            .map(|a| AxisMetadata {
                name: a.name.clone(),
                kind: a.kind.type_name().map(str::to_string),
                unit: a.unit.clone(),
            })
            .collect(),
        datasets,
        coordinate_transformations: spec.multiscale_transforms.map(<[_]>::to_vec),
        kind: Some(spec.method.name().into()),
        metadata: Some(metadata),
    }
}

/// What `metadata.description` says of a method that selects a value of each window
/// (mode, min, max); `None` for the others, whose metadata predates these methods.
fn selection_description(method: Method) -> Option<&'static str> {
    match method {
        Method::Mode => Some("the most frequent value of each window, ties to the smallest value"),
        Method::Min => Some("the smallest value of each window; NaN propagates"),
        Method::Max => Some("the largest value of each window; NaN propagates"),
        Method::Nearest | Method::Mean | Method::Gaussian => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{FactorRule, PlanRequest, default_axes, plan_pyramid};

    #[test]
    fn transforms_follow_the_spec() {
        let axes = default_axes(3).unwrap();
        let plan = plan_pyramid(&PlanRequest {
            shape: vec![8, 64, 64],
            chunks: vec![8, 16, 16],
            axes: axes.clone(),
            pixel_size: vec![2.0, 0.5, 0.5],
            factors: FactorRule::Auto,
            levels: Some(3),
        })
        .unwrap();
        let mut spec = MultiscalesSpec {
            name: "x",
            axes: &axes,
            pixel_size: &[2.0, 0.5, 0.5],
            translation: &[10.0, 0.0, 0.0],
            plan: &plan,
            method: Method::Mean,
            integer_dtype: true,
            backend: "cpu",
            multiscale_transforms: None,
        };
        let (scale, translation) = level_transforms(&spec, 2);
        assert_eq!(scale, vec![2.0, 2.0, 2.0]);
        assert_eq!(translation, vec![10.0, 0.75, 0.75]);
        spec.method = Method::Nearest;
        assert_eq!(level_transforms(&spec, 2).1, vec![10.0, 0.0, 0.0]);
    }
}
