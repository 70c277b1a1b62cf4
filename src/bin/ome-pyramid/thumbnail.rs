//! `ome-pyramid thumbnail IMAGE OUT.png`: a PNG preview of an OME-Zarr image.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use ome_pyramid::units::parse_size;

use crate::outln;

#[derive(Args, Debug)]
#[command(after_help = "\
The picture is the finest level whose y and x fit --size (the coarsest, reduced further by a \
block maximum, if none does), projected by the maximum over z (t = 0), with the channels \
blended in the image's omero colours and windows (the defaults build writes where it has none). \
It says how much of the picture is lit, so a blank conversion shows at once.")]
pub(crate) struct ThumbnailArgs {
    /// The OME-Zarr image (0.4 or 0.5).
    image: PathBuf,
    /// The PNG to write (replaced if it exists).
    output: PathBuf,
    /// Largest width and height in pixels.
    #[arg(long, default_value_t = 512)]
    size: u32,
    /// Memory budget for reading the level.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    memory: u64,
}

pub(crate) fn run(args: &ThumbnailArgs, quiet: bool) -> Result<()> {
    let thumbnail = ome_pyramid::thumbnail::render(&args.image, args.size, args.memory)?;
    thumbnail.write_png(&args.output)?;
    if !quiet {
        outln!(
            "Wrote `{}`: {}×{} from level {}, maximum over {} planes, {} channel{}; {:.1}% of the pixels lit.",
            args.output.display(),
            thumbnail.width,
            thumbnail.height,
            thumbnail.level,
            thumbnail.planes,
            thumbnail.channels,
            if thumbnail.channels == 1 { "" } else { "s" },
            100.0 * thumbnail.lit_fraction()
        );
    }
    Ok(())
}
