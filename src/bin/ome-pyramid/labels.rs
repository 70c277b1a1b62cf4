//! `ome-pyramid labels IMAGE SEG --name NAME`: adds a label image to an OME-Zarr image.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow};
use clap::Args;
use serde_json::Value;

use ome_pyramid::{BuildOptions, LabelsBuilder, Method};

use crate::{EngineArgs, UsageError, cancel_flag, outln, parse_method, run_with_progress};

#[derive(Args, Debug)]
#[command(after_help = "\
The label pyramid has exactly the image's levels: the same count, per-axis factors, shapes \
and scales, read from the image's metadata. It is written to IMAGE/labels/NAME and listed in \
IMAGE/labels (.zattrs in 0.4, zarr.json in 0.5) once it is complete; the image's own arrays \
and metadata are never modified.

Example:
  ome-pyramid labels cells.ome.zarr segmentation.zarr --name nuclei --colors colors.json")]
pub(crate) struct LabelsArgs {
    /// The OME-Zarr image (0.4 or 0.5) the labels belong to; only its `labels` group changes.
    image: PathBuf,
    /// The segmentation: a Zarr array, or an OME-Zarr image or label image (its level 0), of
    /// integer labels with the image's level-0 shape, or that shape without the channel axis.
    segmentation: PathBuf,
    /// Name of the label image, written to IMAGE/labels/NAME.
    #[arg(long)]
    name: String,
    /// mode (the most frequent label of each window, ties to the smallest) or nearest (the
    /// first voxel of each window).
    #[arg(long, default_value = "mode", value_parser = parse_method)]
    method: Method,
    /// JSON file with the label colours: a list of {"label-value": 1, "rgba": [255, 0, 0, 255]}
    /// [default: one colour per label value found on the coarsest level, 0 transparent].
    #[arg(long)]
    colors: Option<PathBuf>,
    /// JSON file with label properties: a list of {"label-value": 1, "class": "nucleus", …}.
    #[arg(long)]
    properties: Option<PathBuf>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Replace a label image of the same name.
    #[arg(long)]
    overwrite: bool,
    /// Continue an interrupted `labels` run with the same options.
    #[arg(long, conflicts_with = "overwrite")]
    resume: bool,
    /// Print the result as JSON on stdout instead of the summary.
    #[arg(long)]
    json: bool,
}

/// Reads a `--colors` or `--properties` file as JSON.
fn read_json_file(option: &str, path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow!(UsageError(format!("cannot read --{option} `{}`: {e}", path.display()))))?;
    serde_json::from_str(&text)
        .map_err(|e| anyhow!(UsageError(format!("--{option} `{}` is not JSON: {e}", path.display()))))
}

pub(crate) fn run(args: &LabelsArgs, quiet: bool) -> Result<()> {
    let options = args.engine.apply(BuildOptions {
        method: args.method,
        overwrite: args.overwrite,
        resume: args.resume,
        ..BuildOptions::default()
    });
    let mut builder = LabelsBuilder::new(&args.image, &args.segmentation, &args.name)
        .options(options)
        .cancel_flag(cancel_flag());
    if let Some(path) = &args.colors {
        builder = builder.colors(read_json_file("colors", path)?);
    }
    if let Some(path) = &args.properties {
        builder = builder.properties(read_json_file("properties", path)?);
    }
    let output = builder.output();
    run_with_progress(|progress| builder.progress(progress).build(), args.json, quiet)?;
    if !quiet && !args.json {
        outln!(
            "Listed `{}` in `{}`.",
            args.name,
            output.parent().unwrap_or(&output).display()
        );
    }
    Ok(())
}
