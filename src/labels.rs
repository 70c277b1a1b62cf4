//! Label images attached to an image (`ome-pyramid labels IMAGE SEG --name NAME`): a
//! segmentation's pyramid with exactly the image's levels, written to `IMAGE/labels/NAME`
//! and listed in the image's `labels` group.
//!
//! - The label pyramid repeats the image's geometry: its level count, the factors of each
//!   step (read from the image's scales and checked against its shapes), its level-0 pixel
//!   size and translation, and its axes (without the channel axis when the segmentation
//!   has none). Translations follow SPEC §4 for the label's method.
//! - It is a normal engine run (bounded memory, progress, `--resume`, any backend) whose
//!   output is `IMAGE/labels/NAME`, with an `image-label` block instead of `omero`.
//! - The image's own arrays and metadata are never touched. The `labels` group's list gains
//!   the name only after the label image is complete, so a killed run leaves no name that
//!   points at a partial label image; `--overwrite` takes the name out of the list before
//!   it replaces the label image.
//!
//! [`crate::image`] reads the image; `group` keeps the `labels` group's list.

mod group;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use serde_json::Value;

use crate::engine::{BuildError, BuildOptions, BuildReport, LabelTarget, Progress, PyramidBuilder};
use crate::image::{OmeZarrImage, not_an_image};
use crate::method::Method;
use crate::ngff::NgffVersion;
use crate::ngff::label::{check_colors, check_label_name, check_properties, image_label};
use crate::plan::{AxisKind, axis_names};
use crate::store::{self, Source, StoreError};
use group::LabelsGroup;

/// Adds a label image to an OME-Zarr image:
/// `LabelsBuilder::new("image.ome.zarr", "cells.zarr", "cells").build()`.
///
/// The lifetime is that of a segmentation given as a [`Source`] (an array in memory, see
/// [`LabelsBuilder::from_source`]); one given as a path makes a `LabelsBuilder<'static>`.
#[derive(Clone)]
pub struct LabelsBuilder<'a> {
    image: PathBuf,
    /// The segmentation's path, or the source's name for messages.
    segmentation: PathBuf,
    /// The segmentation, when given as a source rather than a path to open.
    segmentation_source: Option<Arc<dyn Source + 'a>>,
    name: String,
    colors: Option<Value>,
    properties: Option<Value>,
    options: BuildOptions,
    progress: Option<Arc<dyn Progress>>,
    cancel: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for LabelsBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelsBuilder")
            .field("image", &self.image)
            .field("segmentation", &self.segmentation)
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl LabelsBuilder<'static> {
    /// The label image `name` of `image`, made from the segmentation `segmentation` (a Zarr
    /// array, an OME-Zarr image or label image, or a TIFF) with `mode`.
    #[must_use]
    pub fn new(image: impl Into<PathBuf>, segmentation: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        LabelsBuilder::with_segmentation(image.into(), segmentation.into(), None, name.into())
    }
}

impl<'a> LabelsBuilder<'a> {
    /// The label image `name` of `image`, made from an already opened segmentation (for
    /// example an [`NdarraySource`](crate::store::NdarraySource) over a mask in memory).
    #[must_use]
    pub fn from_source(image: impl Into<PathBuf>, segmentation: Arc<dyn Source + 'a>, name: impl Into<String>) -> Self {
        let path = segmentation.path().to_path_buf();
        Self::with_segmentation(image.into(), path, Some(segmentation), name.into())
    }

    fn with_segmentation(
        image: PathBuf,
        segmentation: PathBuf,
        segmentation_source: Option<Arc<dyn Source + 'a>>,
        name: String,
    ) -> Self {
        Self {
            image,
            segmentation,
            segmentation_source,
            name,
            colors: None,
            properties: None,
            options: BuildOptions {
                method: Method::Mode,
                ..BuildOptions::default()
            },
            progress: None,
            cancel: None,
        }
    }

    /// The engine options: `method` (mode or nearest), `backend`, `chunks` (default: the
    /// image's), `compression`, `clevel`, `memory_bytes`, `threads`, `overwrite`, `resume`.
    /// The geometry options (levels, factors, axes, scale, unit, OME-NGFF version, shards)
    /// come from the image and are ignored here.
    #[must_use]
    pub fn options(mut self, options: BuildOptions) -> Self {
        self.options = options;
        self
    }

    /// The `colors` list of the `image-label` block (`[{"label-value": 1, "rgba": [..]}, ..]`);
    /// without it every value of the top level gets a default colour.
    #[must_use]
    pub fn colors(mut self, colors: Value) -> Self {
        self.colors = Some(colors);
        self
    }

    /// The `properties` list of the `image-label` block (`[{"label-value": 1, ..}, ..]`).
    #[must_use]
    pub fn properties(mut self, properties: Value) -> Self {
        self.properties = Some(properties);
        self
    }

    /// Reports progress to `progress`.
    #[must_use]
    pub fn progress(mut self, progress: Arc<dyn Progress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Stops the build (with [`BuildError::Interrupted`]) when `flag` becomes true.
    #[must_use]
    pub fn cancel_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.cancel = Some(flag);
        self
    }

    /// Where the label image goes: `IMAGE/labels/NAME`.
    #[must_use]
    pub fn output(&self) -> PathBuf {
        self.image.join("labels").join(&self.name)
    }

    /// Builds the label pyramid and lists it in the image's `labels` group.
    ///
    /// # Errors
    /// [`BuildError`]; [`BuildError::is_invalid_input`] tells mistakes (an image that is not
    /// one, a segmentation of another shape, an existing name, bad colours) from failures
    /// while running. Nothing is written before the request is found valid, and the list
    /// never names an unfinished label image.
    pub fn build(self) -> Result<BuildReport, BuildError> {
        let invalid = |option: &'static str, reason: String| BuildError::InvalidOption { option, reason };
        check_label_name(&self.name).map_err(|e| invalid("name", e.to_string()))?;
        if !matches!(self.options.method, Method::Mode | Method::Nearest) {
            return Err(invalid(
                "method",
                format!(
                    "label images take mode or nearest, which keep label values as they are; {} would make values that are no label",
                    self.options.method
                ),
            ));
        }
        if let Some(colors) = &self.colors {
            check_colors(colors).map_err(|e| invalid("colors", e.to_string()))?;
        }
        if let Some(properties) = &self.properties {
            check_properties(properties).map_err(|e| invalid("properties", e.to_string()))?;
        }
        let parent = OmeZarrImage::open(&self.image)?;
        if parent.is_label {
            return Err(not_an_image(
                &self.image,
                "is itself a label image; labels are added to the image they annotate",
            ));
        }
        let target = self.label_target(&parent)?;
        let group = LabelsGroup::of(&self.image, parent.version);
        let listed = group.names()?.contains(&self.name);
        if listed && !self.options.overwrite {
            return Err(invalid(
                "name",
                format!(
                    "`{}` already lists a label image `{}` (pass --overwrite to replace it)",
                    group.dir().display(),
                    self.name
                ),
            ));
        }

        let mut options = self.options.clone();
        options.name = Some(self.name.clone());
        options.ngff_version = parent.version;
        options.levels = None;
        options.factors = None;
        options.axes = None;
        options.scale = Vec::new();
        options.unit = None;
        options.shards = None;
        options.shard_size = None;
        if options.chunks.is_none() {
            options.chunks = Some(label_chunks(&parent, &target));
        }
        let builder = match &self.segmentation_source {
            Some(source) => PyramidBuilder::from_source(source.clone(), self.output()),
            None => PyramidBuilder::new(&self.segmentation, self.output()),
        };
        let mut builder = builder.options(options).label_target(target);
        if let Some(progress) = &self.progress {
            builder = builder.progress(progress.clone());
        }
        if let Some(cancel) = &self.cancel {
            builder = builder.cancel_flag(cancel.clone());
        }
        if listed {
            // Out of the list before the label image is replaced (once the request is found
            // valid): a run killed while replacing it leaves no name that points at a
            // partial label image.
            let (group, name) = (group.clone(), self.name.clone());
            builder = builder.before_writing(Arc::new(move || group.update(|names| names.retain(|n| n != &name))));
        }
        let report = builder.build()?;
        group.update(|names| {
            if !names.contains(&self.name) {
                names.push(self.name.clone());
            }
        })?;
        Ok(report)
    }

    /// The geometry the label pyramid takes from `parent`, after checking that the
    /// segmentation has the image's level-0 shape (or that shape without the channel axis).
    fn label_target(&self, parent: &OmeZarrImage) -> Result<LabelTarget, BuildError> {
        let segmentation = match &self.segmentation_source {
            Some(source) => source.clone(),
            None => store::open_input(&self.segmentation, None, None)?,
        };
        let dtype = segmentation.dtype();
        if dtype.is_float() {
            return Err(BuildError::InvalidOption {
                option: "segmentation",
                reason: format!(
                    "`{}` holds {dtype} values; a label image holds integer label values",
                    self.segmentation.display()
                ),
            });
        }
        let level0 = &parent.levels[0].shape;
        let shape = segmentation.shape();
        let channel = parent.axes.iter().position(|a| a.kind == AxisKind::Channel);
        let keep: Vec<usize> = if shape == level0.as_slice() {
            (0..level0.len()).collect()
        } else {
            (0..level0.len()).filter(|&a| Some(a) != channel).collect()
        };
        let expected: Vec<u64> = keep.iter().map(|&a| level0[a]).collect();
        if shape != expected.as_slice() {
            let without_channel = match channel {
                Some(_) if keep.len() < level0.len() => format!(" or, without the channel axis, {expected:?}"),
                _ => String::new(),
            };
            return Err(BuildError::InvalidOption {
                option: "segmentation",
                reason: format!(
                    "`{}` has shape {shape:?} but the image's level 0 has shape {level0:?} (axes {}){without_channel}; a label image has the image's shape",
                    self.segmentation.display(),
                    axis_names(&parent.axes)
                ),
            });
        }
        let steps = parent.step_factors()?;
        let pixel_size = parent.pixel_size();
        Ok(LabelTarget {
            axes: keep.iter().map(|&a| parent.axes[a].clone()).collect(),
            pixel_size: keep.iter().map(|&a| pixel_size[a]).collect(),
            translation: keep.iter().map(|&a| parent.translation[a]).collect(),
            steps: steps
                .iter()
                .map(|step| keep.iter().map(|&a| step[a]).collect())
                .collect(),
            image_label: image_label(self.colors.as_ref(), self.properties.as_ref()),
        })
    }
}

/// The image's level-0 chunk shape on the label's axes, so label chunks lie over image chunks.
fn label_chunks(parent: &OmeZarrImage, target: &LabelTarget) -> Vec<u64> {
    parent
        .axes
        .iter()
        .zip(&parent.levels[0].chunks)
        .filter(|(axis, _)| target.axes.contains(axis))
        .map(|(_, &c)| c)
        .collect()
}

/// The label images an image's `labels` group lists (empty when it has none), with the
/// OME-NGFF version the image is read as.
///
/// # Errors
/// [`StoreError`] if the group's metadata cannot be read.
pub fn list_labels(image: &Path, version: NgffVersion) -> Result<Vec<String>, StoreError> {
    LabelsGroup::of(image, version).names()
}
