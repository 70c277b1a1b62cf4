//! TIFF input: TIFF and BigTIFF files (strips or tiles; none, LZW, Deflate, PackBits, Zstd,
//! and JPEG for 8-bit data), OME-TIFF (one series of one file or of a multi-file set),
//! ImageJ hyperstacks, and folders or glob patterns of 2-D slices, read through the `tiff`
//! crate one strip or tile at a time.
//!
//! A [`TiffSource`] is a [`Source`] like a Zarr input: its read chunks are the file's tiles
//! (or runs of strips) of one plane, so a build decodes each once, on all cores, within
//! `--memory`, and writes level 0 as chunked Zarr in the pass that computes the first
//! levels.
//!
//! - [`page`]: one page's layout and the checks it can be read.
//! - [`series`]: planes, axes and physical sizes of the image a build reads.
//! - [`ome`], [`imagej`], [`slices`]: what each kind of input says about its series.
//! - [`pool`]: decoders, one per reading thread, each over its own file handle.

pub(crate) mod imagej;
pub(crate) mod ome;
pub(crate) mod page;
pub(crate) mod pool;
pub(crate) mod series;
pub(crate) mod slices;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tiff::decoder::Decoder;
use tiff::tags::Tag;

use self::page::{Chunking, PageCodec};
use self::pool::{DecoderPool, TiffFile, guarded, open_decoder};
use self::series::{Parts, Physical, PhysicalSize, PlaneRef, Role, Series, SeriesKind};
use super::grid::RegularGrid;
use super::source::{ChunkSource, DEFAULT_PLANE_CHUNK, DEFAULT_Z_CHUNK, ImageMetadata, Source};
use super::{StoreError, tree};
use crate::dtype::DType;
use crate::journal::InputFingerprint;
use crate::tile::Region;

/// Rows a run of strips read as one chunk aims at.
const STRIP_RUN_ROWS: u32 = 256;
/// The most bytes a run of strips read as one chunk holds (one strip may hold more).
const STRIP_RUN_BYTES: u64 = 16 << 20;

/// True if `path` names TIFF input: a file starting with a TIFF or BigTIFF header, a
/// folder holding TIFF files and no Zarr metadata, or a glob pattern.
#[must_use]
pub fn is_tiff_input(path: &Path) -> bool {
    if slices::is_pattern(path) {
        return true;
    }
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => has_tiff_header(path) || has_tiff_extension(path),
        Ok(meta) if meta.is_dir() => {
            let zarr = [".zarray", ".zgroup", "zarr.json"]
                .iter()
                .any(|m| path.join(m).exists());
            !zarr && slices::folder_files(path).is_ok_and(|files| !files.is_empty())
        }
        _ => false,
    }
}

fn has_tiff_extension(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| ["tif", "tiff", "btf", "tf8"].iter().any(|t| e.eq_ignore_ascii_case(t)))
}

/// `Some(true)` for a BigTIFF header, `Some(false)` for a classic TIFF one, `None` for a
/// file that starts with neither (or cannot be read).
fn tiff_header(path: &Path) -> Option<bool> {
    let mut head = [0u8; 4];
    fs::File::open(path).and_then(|mut f| f.read_exact(&mut head)).ok()?;
    match &head {
        b"II*\0" | b"MM\0*" => Some(false),
        b"II+\0" | b"MM\0+" => Some(true),
        _ => None,
    }
}

fn has_tiff_header(path: &Path) -> bool {
    tiff_header(path).is_some()
}

fn is_bigtiff(path: &Path) -> bool {
    tiff_header(path) == Some(true)
}

/// A TIFF series read as level 0 of a build.
pub struct TiffSource {
    path: PathBuf,
    series_index: usize,
    series: Series,
    codec: PageCodec,
    bigtiff: bool,
    chunk: Vec<u64>,
    strips_per_chunk: u32,
    grid: RegularGrid,
    pool: DecoderPool,
    fill: Vec<u8>,
    image: ImageMetadata,
}

impl std::fmt::Debug for TiffSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TiffSource")
            .field("path", &self.path)
            .field("series", &self.series_index)
            .field("shape", &self.series.shape)
            .finish_non_exhaustive()
    }
}

/// Opens series `series` of TIFF input `path` (a file, a folder of slices or a glob
/// pattern), checking every page it needs: same layout, supported codec, within the file.
///
/// # Errors
/// [`StoreError::NotFound`] for a missing path; [`StoreError::Tiff`] with one line saying
/// what is wrong with the file.
pub fn open_tiff(path: &Path, series: usize) -> Result<TiffSource, StoreError> {
    let fail = |reason: String| StoreError::Tiff {
        path: path.to_path_buf(),
        reason,
    };
    let pattern = slices::is_pattern(path);
    if !pattern && !path.exists() {
        return Err(StoreError::NotFound(path.to_path_buf()));
    }
    if !pattern && path.is_file() {
        if fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            return Err(fail("the file is empty".into()));
        }
        if !has_tiff_header(path) {
            return Err(fail(
                "it is not a TIFF file: it does not start with a TIFF or BigTIFF header".into(),
            ));
        }
    }
    let (parts, first_codec, bigtiff) = if pattern || path.is_dir() {
        if series != 0 {
            return Err(fail(format!(
                "--series {series} was asked for, and a stack of slices is one series (0)"
            )));
        }
        let files = if pattern {
            slices::pattern_files(path).map_err(&fail)?
        } else {
            slices::folder_files(path).map_err(|e| fail(format!("cannot list the folder: {e}")))?
        };
        if files.is_empty() {
            return Err(fail("no TIFF file matches".into()));
        }
        slice_parts(files)?
    } else {
        file_parts(path, series)?
    };
    let series_value = Series::assemble(parts).map_err(&fail)?;
    for warning in &series_value.warnings {
        tracing::warn!("{}: {warning}", path.display());
    }
    check_planes(&series_value)?;
    let missing = series_value.planes.iter().filter(|p| p.is_none()).count();
    if missing > 0 {
        tracing::warn!(
            "{}: {missing} of the {} planes are not stored in the file (its TiffData does not map them); they read as 0",
            path.display(),
            series_value.planes.len()
        );
    }
    TiffSource::new(path, series, series_value, first_codec, bigtiff)
}

/// A one-line summary of each series in TIFF input `path`, for `info`.
///
/// # Errors
/// As [`open_tiff`] for series 0.
pub fn describe_tiff(path: &Path) -> Result<Value, StoreError> {
    let first = open_tiff(path, 0)?;
    let mut series = vec![first.describe()];
    for index in 1..first.series.series_count {
        series.push(open_tiff(path, index)?.describe());
    }
    Ok(json!({
        "kind": first.series.kind.describe(),
        "files": first.series.files.len(),
        "bigtiff": first.bigtiff,
        "series": series,
    }))
}

/// The parts of a series of one TIFF file.
fn file_parts(path: &Path, series: usize) -> Result<(Parts, PageCodec, bool), StoreError> {
    let fail = |reason: String| StoreError::Tiff {
        path: path.to_path_buf(),
        reason,
    };
    let mut decoder = open_decoder(path).map_err(&fail)?;
    let bigtiff = is_bigtiff(path);
    let mut layout = page::read_layout(&mut decoder).map_err(|e| fail(format!("page 0: {e}")))?;
    let codec = page::read_codec(&mut decoder);
    let description = description(&mut decoder);
    let one_series = |what: &str| {
        if series == 0 {
            Ok(())
        } else {
            Err(fail(format!(
                "--series {series} was asked for, and {what} holds one series (0)"
            )))
        }
    };
    let parts = if let Some(xml) = description.as_deref().filter(|d| ome::is_ome_xml(d)) {
        let ome_xml = ome::parse(xml).map_err(&fail)?;
        if let Some(binary) = &ome_xml.binary_only {
            return Err(fail(format!(
                "this file of a multi-file OME-TIFF set holds no metadata; open `{}`, which does",
                binary.metadata_file
            )));
        }
        let mut resolved = ome::resolve(&ome_xml, path, series, layout.samples).map_err(&fail)?;
        // The series' own pages decide its layout (series 1 may differ from page 0's).
        if let Some(first) = resolved.planes.iter().flatten().next().copied()
            && first != (PlaneRef { file: 0, page: 0 })
        {
            let file = &resolved.files[first.file];
            let mut decoder = open_decoder(file).map_err(&fail)?;
            guarded(|| decoder.seek_to_image(first.page))
                .map_err(|e| fail(format!("page {} cannot be read: {e}", first.page)))?;
            let own = page::read_layout(&mut decoder).map_err(|e| fail(format!("page {}: {e}", first.page)))?;
            if own.samples != layout.samples {
                resolved = ome::resolve(&ome_xml, path, series, own.samples).map_err(&fail)?;
            }
            layout = own;
        }
        let image = &ome_xml.images[series];
        if let Some(dtype) = ome_dtype(&image.pixels.pixel_type)
            && dtype != layout.dtype
        {
            return Err(fail(format!(
                "the OME-XML says {} pixels, and the pages hold {}",
                image.pixels.pixel_type, layout.dtype
            )));
        }
        if (image.pixels.size_x, image.pixels.size_y) != (u64::from(layout.width), u64::from(layout.height)) {
            return Err(fail(format!(
                "the OME-XML says {}×{} pixels, and the pages are {}×{}",
                image.pixels.size_x, image.pixels.size_y, layout.width, layout.height
            )));
        }
        Parts {
            kind: SeriesKind::Ome,
            files: resolved.files,
            dims: resolved.dims,
            planes: resolved.planes,
            layout,
            physical: resolved.physical,
            name: resolved.name,
            channels: resolved.channels,
            series_count: resolved.series_count,
        }
    } else if let Some(text) = description.as_deref().filter(|d| imagej::is_imagej(d)) {
        one_series("an ImageJ hyperstack")?;
        let ij = imagej::parse(text).map_err(&fail)?;
        let pages = count_pages(&mut decoder).map_err(&fail)?;
        if pages < ij.images {
            return Err(fail(format!(
                "the ImageJ description says images={}, and the file has {pages} pages (ImageJ stores files over 4 GiB as one page followed by raw planes, which is not supported; save as OME-TIFF or a folder of slices)",
                ij.images
            )));
        }
        let (x, y) = resolution(&mut decoder, ij.unit.as_deref());
        Parts {
            kind: SeriesKind::ImageJ,
            files: vec![path.to_path_buf()],
            dims: ij.dims,
            planes: ij.planes(),
            layout,
            physical: Physical {
                x,
                y,
                z: ij
                    .spacing
                    .map(|s| (s, ij.unit.clone().unwrap_or_else(|| "pixel".into()))),
                t: ij.frame_interval.map(|s| (s, ij.time_unit.clone())),
            },
            name: None,
            channels: None,
            series_count: 1,
        }
    } else {
        one_series("a TIFF without OME or ImageJ metadata")?;
        let pages = full_resolution_pages(&mut decoder).map_err(&fail)?;
        let (x, y) = resolution(&mut decoder, None);
        let planes = pages.into_iter().map(|page| PlaneRef { file: 0, page }).collect();
        Parts::z_stack(SeriesKind::Plain, vec![path.to_path_buf()], planes, layout, (x, y))
    };
    Ok((parts, codec, bigtiff))
}

/// The parts of a stack of 2-D slices, one file each.
fn slice_parts(files: Vec<PathBuf>) -> Result<(Parts, PageCodec, bool), StoreError> {
    let first = &files[0];
    let fail = |file: &Path, reason: String| StoreError::Tiff {
        path: file.to_path_buf(),
        reason,
    };
    let mut decoder = open_decoder(first).map_err(|e| fail(first, e))?;
    let layout = page::read_layout(&mut decoder).map_err(|e| fail(first, e))?;
    let codec = page::read_codec(&mut decoder);
    let (x, y) = resolution(&mut decoder, None);
    let bigtiff = is_bigtiff(first);
    let planes = (0..files.len()).map(|file| PlaneRef { file, page: 0 }).collect();
    Ok((
        Parts::z_stack(SeriesKind::Slices, files, planes, layout, (x, y)),
        codec,
        bigtiff,
    ))
}

/// Checks every page the series reads: it exists, has the first page's layout and lies
/// within its file. Files are checked in parallel.
fn check_planes(series: &Series) -> Result<(), StoreError> {
    use rayon::prelude::*;
    let mut by_file: Vec<Vec<usize>> = vec![Vec::new(); series.files.len()];
    for plane in series.planes.iter().flatten() {
        by_file[plane.file].push(plane.page);
    }
    by_file.par_iter().enumerate().try_for_each(|(file, pages)| {
        if pages.is_empty() {
            return Ok(());
        }
        let path = &series.files[file];
        let fail = |reason: String| StoreError::Tiff {
            path: path.clone(),
            reason,
        };
        if !path.is_file() {
            return Err(fail("the file is missing".into()));
        }
        let file_len = fs::metadata(path).map_or(0, |m| m.len());
        let mut decoder = open_decoder(path).map_err(&fail)?;
        let mut pages = pages.clone();
        pages.sort_unstable();
        pages.dedup();
        for page in pages {
            guarded(|| decoder.seek_to_image(page)).map_err(|e| {
                fail(format!(
                    "page {page} cannot be read ({e}): the metadata (OME-XML SizeZ, SizeC and SizeT, or ImageJ images) names more planes than the file holds"
                ))
            })?;
            let layout = page::read_layout(&mut decoder).map_err(|e| fail(format!("page {page}: {e}")))?;
            if let Some(difference) = series.layout.difference(&layout) {
                let what = if series.kind == SeriesKind::Slices {
                    "the slice".to_string()
                } else {
                    format!("page {page}")
                };
                return Err(fail(format!(
                    "{what} is {difference}; every plane must have the same shape and type"
                )));
            }
            page::check_extent(&mut decoder, file_len).map_err(|e| fail(format!("page {page}: {e}")))?;
        }
        Ok(())
    })
}

/// Page indices of the full-resolution pages (reduced-resolution pages, NewSubfileType
/// bit 0, are skipped).
fn full_resolution_pages(decoder: &mut Decoder<TiffFile>) -> Result<Vec<usize>, String> {
    let mut pages = Vec::new();
    let mut index = 0;
    loop {
        let subfile = decoder
            .find_tag_unsigned::<u32>(Tag::NewSubfileType)
            .ok()
            .flatten()
            .unwrap_or(0);
        if subfile & 1 == 0 {
            pages.push(index);
        }
        if !decoder.more_images() {
            break;
        }
        guarded(|| decoder.next_image()).map_err(|e| format!("page {}: {e}", index + 1))?;
        index += 1;
    }
    guarded(|| decoder.seek_to_image(0)).map_err(|e| e.to_string())?;
    Ok(pages)
}

/// The number of pages.
fn count_pages(decoder: &mut Decoder<TiffFile>) -> Result<u64, String> {
    Ok(u64::try_from(full_resolution_pages(decoder)?.len()).unwrap_or(u64::MAX))
}

/// The page's description, if it has one in UTF-8.
fn description(decoder: &mut Decoder<TiffFile>) -> Option<String> {
    decoder.get_tag_ascii_string(Tag::ImageDescription).ok()
}

/// Pixel width and height from XResolution and YResolution (pixels per unit): in `unit`
/// when given (ImageJ), else in micrometres when ResolutionUnit is inch or centimetre.
fn resolution(decoder: &mut Decoder<TiffFile>, unit: Option<&str>) -> (Option<PhysicalSize>, Option<PhysicalSize>) {
    let mut size = |tag: Tag| -> Option<f64> {
        let value = decoder.find_tag(tag).ok().flatten()?.into_u64_vec().ok()?;
        #[allow(clippy::cast_precision_loss)]
        match value.as_slice() {
            [n, d] if *n > 0 && *d > 0 => Some(*d as f64 / *n as f64),
            _ => None,
        }
    };
    let (x, y) = (size(Tag::XResolution), size(Tag::YResolution));
    let (factor, unit) = match unit {
        Some(unit) => (1.0, unit.to_string()),
        None => match decoder
            .find_tag_unsigned::<u16>(Tag::ResolutionUnit)
            .ok()
            .flatten()
            .unwrap_or(2)
        {
            2 => (25_400.0, "micrometer".to_string()),
            3 => (10_000.0, "micrometer".to_string()),
            _ => return (None, None),
        },
    };
    let with_unit = |s: Option<f64>| s.map(|s| (s * factor, unit.clone()));
    (with_unit(x), with_unit(y))
}

/// The element type an OME `Type` names.
fn ome_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "uint8" => DType::U8,
        "uint16" => DType::U16,
        "uint32" => DType::U32,
        "int8" => DType::I8,
        "int16" => DType::I16,
        "int32" => DType::I32,
        "float" => DType::F32,
        "double" => DType::F64,
        _ => return None,
    })
}

impl TiffSource {
    fn new(
        path: &Path,
        series_index: usize,
        series: Series,
        codec: PageCodec,
        bigtiff: bool,
    ) -> Result<Self, StoreError> {
        let layout = &series.layout;
        let element = layout.dtype.size() as u64;
        let (piece_width, piece_rows) = layout.chunking.size(layout.width);
        let interleaved = if layout.planar { 1 } else { u64::from(layout.samples) };
        let strips_per_chunk = match layout.chunking {
            Chunking::Tiles { .. } => 1,
            Chunking::Strips { rows } => {
                let strip_bytes = u64::from(rows) * u64::from(layout.width) * interleaved * element;
                let by_rows = STRIP_RUN_ROWS.div_ceil(rows);
                let by_bytes = u32::try_from(STRIP_RUN_BYTES / strip_bytes.max(1)).unwrap_or(u32::MAX);
                by_rows.min(by_bytes).clamp(1, layout.chunks_down())
            }
        };
        let chunk: Vec<u64> = series
            .roles
            .iter()
            .map(|role| match role {
                Role::Plane { .. } => 1,
                Role::Sample => interleaved,
                Role::Y => u64::from(piece_rows) * u64::from(strips_per_chunk),
                Role::X => u64::from(piece_width),
            })
            .collect();
        let fill = vec![0u8; layout.dtype.size()];
        let image = ImageMetadata {
            name: series.name.clone(),
            axes: series.axes.clone(),
            scale: series.scale.clone(),
            translation: None,
            multiscale_transforms: None,
            omero: None,
            omero_dropped: None,
            channel_labels: series
                .channels
                .as_ref()
                .map(|c| c.iter().map(|c| (c.label.clone(), c.color.clone())).collect()),
            axes_replaceable: series.axes_replaceable,
        };
        let threads = rayon::current_num_threads();
        Ok(Self {
            path: path.to_path_buf(),
            series_index,
            grid: RegularGrid::new(&series.shape, &chunk),
            pool: DecoderPool::new(series.files.clone(), 2 * threads + 2),
            series,
            codec,
            bigtiff,
            chunk,
            strips_per_chunk,
            fill,
            image,
        })
    }

    /// What `info` shows of this series.
    #[must_use]
    pub fn describe(&self) -> Value {
        let layout = &self.series.layout;
        let (piece, count) = match layout.chunking {
            Chunking::Strips { rows } => (format!("strips of {rows} rows"), layout.chunks_down()),
            Chunking::Tiles { width, height } => (
                format!("{width}×{height} tiles"),
                layout.chunks_down() * layout.chunks_across(),
            ),
        };
        json!({
            "series": self.series_index,
            "name": self.series.name,
            "axes": self.series.axes.iter().map(|a| a.name.as_str()).collect::<String>(),
            "shape": self.series.shape,
            "dtype": layout.dtype,
            "scale": self.series.scale,
            "units": self.series.axes.iter().map(|a| a.unit.clone()).collect::<Vec<_>>(),
            "channels": self.series.channels.as_ref().map(|c| c.iter().map(|c| json!({"label": c.label, "color": c.color})).collect::<Vec<_>>()),
            "compression": self.codec.compression,
            "predictor": self.codec.predictor,
            "layout": piece,
            "pieces_per_plane": count,
            "samples_per_pixel": layout.samples,
            "planar": layout.planar,
            "planes": self.series.planes.len(),
            "missing_planes": self.series.planes.iter().filter(|p| p.is_none()).count(),
            "read_chunk": self.chunk,
        })
    }

    /// Decodes read chunk (`sample`, `row`, `column`) of the page `decoder` is on into
    /// `out`, a zeroed chunk buffer.
    fn decode_into(
        &self,
        decoder: &mut Decoder<TiffFile>,
        sample: u32,
        row: u32,
        column: u32,
        out: &mut [u8],
    ) -> Result<(), String> {
        let layout = &self.series.layout;
        let element = layout.dtype.size();
        let (piece_width, piece_rows) = layout.chunking.size(layout.width);
        let interleaved = if layout.planar { 1 } else { usize::from(layout.samples) };
        let out_rows = to_usize(piece_rows) * to_usize(self.strips_per_chunk);
        let out_cols = to_usize(piece_width);
        let per_plane = layout.chunks_across() * layout.chunks_down();
        let plane_offset = if layout.planar { sample * per_plane } else { 0 };
        let mut pieces = Vec::new();
        match layout.chunking {
            Chunking::Tiles { width, height } => {
                let index = plane_offset + row * layout.chunks_across() + column;
                let w = width.min(layout.width - column * width);
                let h = height.min(layout.height - row * height);
                pieces.push((index, 0usize, w, h));
            }
            Chunking::Strips { rows } => {
                for j in 0..self.strips_per_chunk {
                    let strip = row * self.strips_per_chunk + j;
                    if strip >= layout.chunks_down() {
                        break;
                    }
                    let h = rows.min(layout.height - strip * rows);
                    pieces.push((plane_offset + strip, to_usize(j * rows), layout.width, h));
                }
            }
        }
        let mut buffer = Vec::new();
        for (index, row_offset, w, h) in pieces {
            // The decoder's own idea of the piece's size: the tiles of the second and later
            // sample planes of a planar file come back uncropped (tiff 0.11 takes their
            // row from the index without the plane), so only the top-left w×h is kept.
            let (dw, dh) = guarded(|| Ok(decoder.chunk_data_dimensions(index)))
                .map(|(dw, dh)| (to_usize(dw), to_usize(dh)))
                .map_err(|e| format!("piece {index}: {e}"))?;
            let (w, h) = (to_usize(w), to_usize(h));
            let decoded = dw * dh * interleaved * element;
            let preferred = guarded(|| decoder.image_chunk_buffer_layout(index)).map_err(|e| e.to_string())?;
            if preferred.len != decoded || dw < w || dh < h {
                return Err(format!(
                    "piece {index} decodes to {} bytes ({dw}×{dh}) where {w}×{h} pixels were expected",
                    preferred.len
                ));
            }
            buffer.clear();
            buffer.resize(decoded, 0);
            guarded(|| decoder.read_chunk_bytes(index, &mut buffer)).map_err(|e| e.to_string())?;
            if layout.ycbcr {
                ycbcr_to_rgb(&mut buffer);
            }
            let piece = Piece {
                bytes: &buffer,
                stride: dw,
                width: w,
                height: h,
            };
            place(&piece, out, interleaved, element, (out_rows, out_cols), row_offset);
        }
        Ok(())
    }

    /// The plane, sample and piece coordinates of read chunk `indices`.
    fn locate(&self, indices: &[u64]) -> (u64, u32, u32, u32) {
        let (mut plane, mut sample, mut row, mut column) = (0, 0, 0, 0);
        for (role, &i) in self.series.roles.iter().zip(indices) {
            match role {
                Role::Plane { stride } => plane += i * stride,
                Role::Sample => sample = u32::try_from(i).unwrap_or(0),
                Role::Y => row = u32::try_from(i).unwrap_or(u32::MAX),
                Role::X => column = u32::try_from(i).unwrap_or(u32::MAX),
            }
        }
        (plane, sample, row, column)
    }
}

/// A decoded strip or tile: rows of `stride` pixels, of which the top-left `width`×`height`
/// are kept.
struct Piece<'a> {
    bytes: &'a [u8],
    stride: usize,
    width: usize,
    height: usize,
}

/// Copies a decoded piece of `samples` interleaved samples per pixel into a chunk buffer of
/// `samples` planes of `rows`×`cols`, from row `row_offset` on.
fn place(
    piece: &Piece<'_>,
    out: &mut [u8],
    samples: usize,
    element: usize,
    (rows, cols): (usize, usize),
    row_offset: usize,
) {
    let row_bytes = piece.stride * samples * element;
    for r in 0..piece.height {
        let row = &piece.bytes[r * row_bytes..(r + 1) * row_bytes];
        if samples == 1 {
            let to = (row_offset + r) * cols * element;
            out[to..to + piece.width * element].copy_from_slice(&row[..piece.width * element]);
            continue;
        }
        for x in 0..piece.width {
            let pixel = x * samples * element;
            for s in 0..samples {
                let to = ((s * rows + row_offset + r) * cols + x) * element;
                out[to..to + element].copy_from_slice(&row[pixel + s * element..pixel + (s + 1) * element]);
            }
        }
    }
}

/// Converts interleaved 8-bit YCbCr (JPEG's full-range BT.601) to RGB in place.
fn ycbcr_to_rgb(pixels: &mut [u8]) {
    for px in pixels.chunks_exact_mut(3) {
        let y = f32::from(px[0]);
        let cb = f32::from(px[1]) - 128.0;
        let cr = f32::from(px[2]) - 128.0;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let to_u8 = |v: f32| v.round().clamp(0.0, 255.0) as u8;
        px[0] = to_u8(y + 1.402 * cr);
        px[1] = to_u8(y - 0.344_136 * cb - 0.714_136 * cr);
        px[2] = to_u8(y + 1.772 * cb);
    }
}

fn to_usize(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl ChunkSource for TiffSource {
    fn path(&self) -> &Path {
        &self.path
    }

    fn dtype(&self) -> DType {
        self.series.layout.dtype
    }

    fn shape(&self) -> &[u64] {
        &self.series.shape
    }

    fn chunk_shape(&self) -> &[u64] {
        &self.chunk
    }

    fn grid_shape(&self) -> Vec<u64> {
        self.grid.grid_shape()
    }

    fn chunks_in(&self, region: &Region) -> Vec<Vec<u64>> {
        self.grid.chunks_in(region)
    }

    fn chunk_region(&self, indices: &[u64]) -> Region {
        self.grid.region(indices)
    }

    fn chunk_name(&self, indices: &[u64]) -> String {
        let (plane, sample, row, column) = self.locate(indices);
        let page = usize::try_from(plane)
            .ok()
            .and_then(|p| self.series.planes.get(p).copied().flatten());
        let Some(PlaneRef { file, page }) = page else {
            return format!("plane {plane} (not stored)");
        };
        let file = self.series.files[file]
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let sample = if self.series.layout.planar {
            format!(" sample {sample}")
        } else {
            String::new()
        };
        match self.series.layout.chunking {
            Chunking::Tiles { .. } => format!("{file} page {page}{sample} tile {row},{column}"),
            Chunking::Strips { .. } => {
                let first = row * self.strips_per_chunk;
                format!(
                    "{file} page {page}{sample} strips {first}..{}",
                    first + self.strips_per_chunk
                )
            }
        }
    }

    fn fill_bytes(&self) -> &[u8] {
        &self.fill
    }

    fn read_chunk(&self, indices: &[u64]) -> Result<Vec<u8>, StoreError> {
        let elements: u64 = self.chunk.iter().product();
        let bytes =
            usize::try_from(elements * self.series.layout.dtype.size() as u64).map_err(|_| StoreError::TooLarge {
                path: self.path.clone(),
                what: "a read chunk".into(),
            })?;
        let mut out = vec![0u8; bytes];
        let (plane, sample, row, column) = self.locate(indices);
        let Some(Some(stored)) = usize::try_from(plane).ok().and_then(|p| self.series.planes.get(p)) else {
            return Ok(out);
        };
        self.pool
            .with_page(stored.file, stored.page, |decoder| {
                self.decode_into(decoder, sample, row, column, &mut out)
            })
            .map_err(|reason| StoreError::ReadChunk {
                path: self.pool.files()[stored.file].clone(),
                key: self.chunk_name(indices),
                source: reason.into(),
            })?;
        Ok(out)
    }

    fn nothing_stored_in(&self, _region: &Region) -> Result<bool, StoreError> {
        Ok(false)
    }
}

impl Source for TiffSource {
    fn image(&self) -> &ImageMetadata {
        &self.image
    }

    fn identity(&self) -> Value {
        json!({
            "input_format": self.series.kind.describe(),
            "input_series": self.series_index,
            "input_layout": self.series.layout.to_string(),
            "input_files": self.series.files.iter().map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone())).collect::<Vec<_>>(),
        })
    }

    fn fingerprint(&self) -> Result<InputFingerprint, StoreError> {
        tree::fingerprint_paths(&self.series.files).map_err(|source| StoreError::Io {
            action: "cannot read the input",
            path: self.path.clone(),
            source,
        })
    }

    fn preferred_chunks(&self) -> Vec<u64> {
        let tiles = match self.series.layout.chunking {
            Chunking::Tiles { width, height } if width >= 128 && height >= 128 => Some((height, width)),
            _ => None,
        };
        self.series
            .roles
            .iter()
            .zip(&self.series.axes)
            .zip(&self.series.shape)
            .map(|((role, axis), &n)| {
                let chunk = match (role, tiles) {
                    (Role::Y, Some((h, _))) => u64::from(h),
                    (Role::X, Some((_, w))) => u64::from(w),
                    (Role::Y | Role::X, None) => DEFAULT_PLANE_CHUNK,
                    (Role::Plane { .. }, _) if axis.name == "z" => DEFAULT_Z_CHUNK,
                    _ => 1,
                };
                chunk.min(n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_samples_are_split_into_planes_and_edges_stay_zero() {
        // A 2×1 piece of RGB u8 placed in a 3-row, 3-column chunk from row 1.
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        let piece = Piece {
            bytes: &bytes,
            stride: 3,
            width: 2,
            height: 1,
        };
        let mut out = vec![0u8; 3 * 3 * 3];
        place(&piece, &mut out, 3, 1, (3, 3), 1);
        let plane = |s: usize| out[s * 9..(s + 1) * 9].to_vec();
        assert_eq!(plane(0), [0, 0, 0, 1, 4, 0, 0, 0, 0]);
        assert_eq!(plane(2), [0, 0, 0, 3, 6, 0, 0, 0, 0]);
    }

    #[test]
    fn grey_ycbcr_stays_grey() {
        let mut px = [100, 128, 128, 255, 128, 128];
        ycbcr_to_rgb(&mut px);
        assert_eq!(px, [100, 100, 100, 255, 255, 255]);
    }
}
