//! # ome-pyramid
//!
//! Builds multiscale OME-Zarr pyramids (OME-NGFF 0.4, or 0.5 with sharding) from large Zarr
//! volumes. The downsampling runs in WGSL compute shaders through `wgpu`, or on all CPU
//! cores with the same results; memory stays within a budget however large the volume.
//!
//! ```no_run
//! use ome_pyramid::{Method, PyramidBuilder};
//!
//! let report = PyramidBuilder::new("volume.zarr", "volume.ome.zarr")
//!     .method(Method::Mean)
//!     .memory_bytes(4 << 30)
//!     .build()?;
//! println!("{} levels in {:.1} s", report.levels.len(), report.seconds);
//! # Ok::<(), ome_pyramid::BuildError>(())
//! ```
//!
//! An array in memory is read in place, chunk by chunk, through an [`NdarraySource`]:
//!
//! ```no_run
//! use std::sync::Arc;
//! use ome_pyramid::{NdarraySource, PyramidBuilder};
//!
//! let volume = ndarray::Array3::<u16>::zeros((64, 512, 512));
//! let source = NdarraySource::new(volume.view().into_dyn())?;
//! let report = PyramidBuilder::from_source(Arc::new(source), "volume.ome.zarr")
//!     .axes("zyx")
//!     .build()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Data flows source → engine → backend → sink:
//! - [`plan`] decides level shapes and factors and [`ngff`] the metadata, without I/O;
//! - [`store`] holds the [`Source`](store::Source) of the input (Zarr v2/v3, OME-Zarr,
//!   TIFF, or an `ndarray` view in memory as an [`NdarraySource`]), the tile reader with its
//!   chunk cache, and the sink that writes the level arrays in an OME-NGFF layout;
//! - [`backend`] holds the [`Downsampler`] trait and the CPU and GPU kernels;
//! - [`engine`] is the only module that joins the store and the backends;
//! - [`labels`] adds label images to an image, with the image's own levels, and
//!   [`thumbnail`] draws a PNG preview of one;
//! - [`journal`] keeps the lock, the build record and the task journal that make builds
//!   safe to interrupt and resume, and a partitioned build's plan and per-part journals;
//! - a build too large for one host is split by [`PyramidBuilder::plan`] into parts that
//!   any scheduler runs as array tasks ([`engine::run_part`], the index from [`scheduler`]),
//!   then finished by [`engine::finalize`], with the same bytes as a single build.
//!
//! The methods are defined exactly in [`method`]; integer results are identical on every
//! backend for nearest and mean.

pub mod backend;
pub(crate) mod digest;
pub mod dtype;
pub mod engine;
pub(crate) mod image;
pub mod info;
pub mod journal;
pub mod labels;
pub mod method;
pub mod ngff;
pub mod plan;
pub mod scheduler;
pub mod store;
pub mod synthetic;
pub mod thumbnail;
pub mod tile;
pub mod units;

pub use backend::{BackendChoice, BackendError, BackendKind, Downsampler, Step};
pub use dtype::DType;
pub use engine::{BuildError, BuildOptions, BuildReport, NoProgress, Progress, PyramidBuilder};
pub use labels::LabelsBuilder;
pub use method::Method;
pub use plan::{Axis, AxisKind, FactorRule, PlanError, PyramidPlan};
pub use store::{Compression, NdarraySource, StoreError};
pub use tile::{Region, Tile, TileData};
