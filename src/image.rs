//! An OME-Zarr image on disk, as `labels` and `thumbnail` read it: its OME-NGFF version,
//! axes, display settings and levels (path, shape, chunk shape, scale), and the per-step
//! factors that made the levels, which a label pyramid repeats.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::engine::BuildError;
use crate::ngff::{self, AxisMetadata, NgffError, NgffVersion, ScaleTranslation};
use crate::plan::Axis;
use crate::store::{self, ChunkSource, NodeKind, StoreError};

/// One level of the parent image.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImageLevel {
    /// The dataset path.
    pub(crate) path: String,
    /// Its shape.
    pub(crate) shape: Vec<u64>,
    /// Its chunk shape.
    pub(crate) chunks: Vec<u64>,
    /// Its scale (`None` where the image has no transformations).
    pub(crate) scale: Option<Vec<f64>>,
}

/// An OME-Zarr image (0.4 or 0.5).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OmeZarrImage {
    /// Its directory.
    pub(crate) path: PathBuf,
    /// 0.4 (a Zarr v2 group) or 0.5 (a Zarr v3 group).
    pub(crate) version: NgffVersion,
    /// Its axes.
    pub(crate) axes: Vec<Axis>,
    /// Level-0 translation (zeros where there is none).
    pub(crate) translation: Vec<f64>,
    /// Its levels, level 0 first.
    pub(crate) levels: Vec<ImageLevel>,
    /// Its valid `omero` block, if any.
    pub(crate) omero: Option<Value>,
    /// True for a label image (it has an `image-label` block).
    pub(crate) is_label: bool,
}

pub(crate) fn not_an_image(path: &Path, reason: impl Into<String>) -> BuildError {
    BuildError::InvalidOption {
        option: "image",
        reason: format!("`{}` {}", path.display(), reason.into()),
    }
}

impl OmeZarrImage {
    /// Reads an OME-Zarr image's metadata and the shape of each of its levels.
    ///
    /// # Errors
    /// [`BuildError::InvalidOption`] (`image`) when `path` is not an OME-Zarr image;
    /// [`BuildError::Store`] when its metadata cannot be read.
    pub(crate) fn open(path: &Path) -> Result<Self, BuildError> {
        if !path.exists() {
            return Err(StoreError::NotFound(path.to_path_buf()).into());
        }
        let attributes = match store::probe_node(path)? {
            NodeKind::Group(attributes) => attributes,
            NodeKind::ArrayV2(_) | NodeKind::ArrayV3(_) => {
                return Err(not_an_image(
                    path,
                    "is a Zarr array, not an OME-Zarr image (build its pyramid first)",
                ));
            }
        };
        let version = if ngff::v05::image_root(&attributes).is_some() {
            NgffVersion::V05
        } else {
            NgffVersion::V04
        };
        let root = ngff::v05::image_root(&attributes).unwrap_or(&attributes);
        let multiscale = ngff::read::first_multiscale(root).map_err(|e| StoreError::Ngff {
            path: path.to_path_buf(),
            source: e,
        })?;
        let Some(multiscale) = multiscale else {
            return Err(not_an_image(path, "is a Zarr group without OME `multiscales` metadata"));
        };
        let omero = root
            .get("omero")
            .filter(|omero| ngff::omero_problem(omero).is_none())
            .cloned();
        let ndim = multiscale.axes.len();
        let mut levels = Vec::with_capacity(multiscale.datasets.len());
        let mut translation = None;
        for (k, dataset) in multiscale.datasets.iter().enumerate() {
            let ngff_error = |source: NgffError| StoreError::Ngff {
                path: path.to_path_buf(),
                source,
            };
            ngff::check_dataset_path(&dataset.path).map_err(ngff_error)?;
            let place = format!("dataset `{}`", dataset.path);
            let ScaleTranslation {
                scale,
                translation: offset,
            } = ngff::scale_and_translation(&dataset.coordinate_transformations, ndim, &place).map_err(ngff_error)?;
            if k == 0 {
                translation = offset;
            }
            let array = store::open_source(&path.join(&dataset.path))?;
            if array.shape().len() != ndim {
                return Err(not_an_image(
                    path,
                    format!(
                        "has {ndim} axes but its dataset `{}` has {} dimensions",
                        dataset.path,
                        array.shape().len()
                    ),
                ));
            }
            levels.push(ImageLevel {
                path: dataset.path.clone(),
                shape: array.shape().to_vec(),
                chunks: array.chunk_shape().to_vec(),
                scale,
            });
        }
        let axes = multiscale.axes.iter().map(AxisMetadata::to_axis).collect();
        Ok(Self {
            path: path.to_path_buf(),
            version,
            axes,
            translation: translation.unwrap_or_else(|| vec![0.0; ndim]),
            levels,
            omero,
            is_label: root.contains_key("image-label"),
        })
    }

    /// Level-0 pixel size (ones where the image has no transformations).
    pub(crate) fn pixel_size(&self) -> Vec<f64> {
        self.levels[0]
            .scale
            .clone()
            .unwrap_or_else(|| vec![1.0; self.axes.len()])
    }

    /// The factors of each step between the image's levels: the ratio of their scales, an
    /// integer, and each level's shape `ceil(n / f)` of the one below, as ome-pyramid's
    /// levels are. (Without scales, the shapes alone decide.)
    ///
    /// # Errors
    /// [`BuildError::InvalidOption`] (`image`) naming the level a label pyramid cannot repeat.
    pub(crate) fn step_factors(&self) -> Result<Vec<Vec<u32>>, BuildError> {
        self.levels
            .windows(2)
            .map(|pair| {
                let (below, above) = (&pair[0], &pair[1]);
                (0..self.axes.len())
                    .map(|a| self.axis_factor(below, above, a))
                    .collect::<Result<Vec<u32>, BuildError>>()
            })
            .collect()
    }

    fn axis_factor(&self, below: &ImageLevel, above: &ImageLevel, a: usize) -> Result<u32, BuildError> {
        let (n, m) = (below.shape[a], above.shape[a]);
        #[allow(clippy::cast_precision_loss)]
        let ratio = match (&below.scale, &above.scale) {
            (Some(s0), Some(s1)) => s1[a] / s0[a],
            _ => n as f64 / m.max(1) as f64,
        };
        let factor = ratio.round();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let f = factor as u32;
        let integral = factor >= 1.0 && factor <= f64::from(u32::MAX) && (ratio - factor).abs() <= 1e-6 * factor;
        if !integral || n.div_ceil(u64::from(f)) != m {
            return Err(not_an_image(
                &self.path,
                format!(
                    "has levels a label pyramid cannot repeat: on axis `{}` dataset `{}` ({n} voxels) becomes `{}` ({m} voxels) at a scale ratio of {ratio}; ome-pyramid needs an integer factor f with ceil({n} / f) = {m}",
                    self.axes[a].name, below.path, above.path
                ),
            ));
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(levels: &[(&[u64], Option<&[f64]>)]) -> OmeZarrImage {
        OmeZarrImage {
            path: "img".into(),
            version: NgffVersion::V04,
            axes: crate::plan::default_axes(2).unwrap(),
            translation: vec![0.0, 0.0],
            levels: levels
                .iter()
                .enumerate()
                .map(|(k, (shape, scale))| ImageLevel {
                    path: k.to_string(),
                    shape: shape.to_vec(),
                    chunks: shape.to_vec(),
                    scale: scale.map(<[f64]>::to_vec),
                })
                .collect(),
            omero: None,
            is_label: false,
        }
    }

    #[test]
    fn factors_come_from_the_scales_and_must_match_the_shapes() {
        let parent = image(&[
            (&[101, 64], Some(&[0.5, 0.25])),
            (&[51, 32], Some(&[1.0, 0.5])),
            (&[51, 11], Some(&[1.0, 1.5])),
        ]);
        assert_eq!(parent.step_factors().unwrap(), vec![vec![2, 2], vec![1, 3]]);
        assert_eq!(parent.pixel_size(), vec![0.5, 0.25]);
        // Without scales, the shapes decide.
        let parent = image(&[(&[100, 64], None), (&[50, 64], None)]);
        assert_eq!(parent.step_factors().unwrap(), vec![vec![2, 1]]);
        // A floor-divided level (50 from 101) is not what a factor of 2 makes.
        let floor = image(&[(&[101, 64], Some(&[1.0, 1.0])), (&[50, 32], Some(&[2.0, 2.0]))]);
        let message = floor.step_factors().unwrap_err().to_string();
        assert!(message.contains("ceil(101 / f) = 50"), "{message}");
        // A scale ratio of 1.5 is no integer factor.
        let odd = image(&[(&[90, 64], Some(&[1.0, 1.0])), (&[60, 64], Some(&[1.5, 1.0]))]);
        assert!(odd.step_factors().is_err());
    }
}
