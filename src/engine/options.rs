//! What `build` can be asked (SPEC §1), with the documented defaults.

use serde_json::Value;

use crate::backend::BackendChoice;
use crate::method::Method;
use crate::ngff::NgffVersion;
use crate::plan::{Axis, ShardChoice};
use crate::store::Compression;

/// Everything `build` can be asked (SPEC §1). `Default` gives the documented defaults.
/// A partitioned build stores them in its plan, as JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct BuildOptions {
    /// Downsampling method.
    pub method: Method,
    /// Compute backend.
    pub backend: BackendChoice,
    /// Total number of levels including level 0; `None` for the stop rule.
    pub levels: Option<usize>,
    /// Per-axis factors by axis name (`None` for the anisotropy rule).
    pub factors: Option<Vec<(String, u32)>>,
    /// Axis names for a plain array (e.g. `tczyx`); `None` for the default by dimensionality.
    pub axes: Option<String>,
    /// Level-0 pixel size per axis name; unnamed axes keep the input's value, else 1.
    pub scale: Vec<(String, f64)>,
    /// Unit of the space axes.
    pub unit: Option<String>,
    /// Output chunk shape; `None` for the input's chunk shape.
    pub chunks: Option<Vec<u64>>,
    /// Output codec.
    pub compression: Compression,
    /// Codec level.
    pub clevel: Option<i32>,
    /// Replace an existing output.
    pub overwrite: bool,
    /// Working-set budget in bytes.
    pub memory_bytes: u64,
    /// CPU threads; `None` for all cores.
    pub threads: Option<usize>,
    /// Image name in the metadata; `None` for the input's name or file name.
    pub name: Option<String>,
    /// Continue an interrupted build of the same output with the same settings.
    pub resume: bool,
    /// OME-NGFF version of the output: 0.4 (Zarr v2) or 0.5 (Zarr v3).
    pub ngff_version: NgffVersion,
    /// Sharding of 0.5 output; `None` for the default (`auto` with 0.5).
    pub shards: Option<ShardChoice>,
    /// Largest uncompressed shard `auto` makes, in bytes; `None` for 1 GiB.
    pub shard_size: Option<u64>,
    /// The series of a TIFF input with several (OME-TIFF); `None` for the first.
    pub series: Option<usize>,
}

impl Default for BuildOptions {
    fn default() -> Self {
        Self {
            method: Method::Mean,
            backend: BackendChoice::Auto,
            levels: None,
            factors: None,
            axes: None,
            scale: Vec::new(),
            unit: None,
            chunks: None,
            compression: Compression::Input,
            clevel: None,
            overwrite: false,
            memory_bytes: 2 << 30,
            threads: None,
            name: None,
            resume: false,
            ngff_version: NgffVersion::V04,
            shards: None,
            shard_size: None,
            series: None,
        }
    }
}

/// A label image's geometry and metadata, taken from its parent image by
/// [`crate::labels`]: used in place of the input's metadata and of the level rules of
/// SPEC §3, so that every label level has the shape and scale of the image's level.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LabelTarget {
    /// The image's axes (without its channel axis when the segmentation has none).
    pub(crate) axes: Vec<Axis>,
    /// The image's level-0 pixel size.
    pub(crate) pixel_size: Vec<f64>,
    /// The image's level-0 translation.
    pub(crate) translation: Vec<f64>,
    /// The factors of every step, as the image's levels have them.
    pub(crate) steps: Vec<Vec<u32>>,
    /// The `image-label` block; without `colors`, default colours are given to the values
    /// found on the top level.
    pub(crate) image_label: Value,
}
