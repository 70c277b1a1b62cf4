//! One TIFF page (image file directory) as the reader sees it: size, sample type and count,
//! strips or tiles, codec; and the checks that a page can be read chunk by chunk.

use std::fmt;

use tiff::ColorType;
use tiff::decoder::{ChunkType, Decoder, DecodingSampleType};
use tiff::tags::{CompressionMethod, PlanarConfiguration, Predictor, Tag};

use super::TiffFile;
use crate::dtype::DType;

/// How a page's pixels are cut into separately compressed pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunking {
    /// Strips of whole rows.
    Strips {
        /// Rows per strip (the last strip may be shorter).
        rows: u32,
    },
    /// Tiles, edge tiles padded.
    Tiles {
        /// Tile width.
        width: u32,
        /// Tile height.
        height: u32,
    },
}

impl Chunking {
    /// Width and height of one strip or tile of a page `width` pixels wide.
    pub(crate) fn size(self, width: u32) -> (u32, u32) {
        match self {
            Chunking::Strips { rows } => (width, rows),
            Chunking::Tiles { width, height } => (width, height),
        }
    }
}

/// The layout of one page: what every page of a series must share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PageLayout {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Sample type.
    pub dtype: DType,
    /// Samples per pixel (3 for RGB).
    pub samples: u16,
    /// Samples stored in separate planes (PlanarConfiguration 2) rather than interleaved.
    pub planar: bool,
    /// Strips or tiles.
    pub chunking: Chunking,
    /// JPEG-compressed YCbCr, which the decoder returns as YCbCr and the reader turns into RGB.
    pub ycbcr: bool,
}

impl PageLayout {
    /// Strips or tiles across one sample plane.
    pub(crate) fn chunks_across(&self) -> u32 {
        let (w, _) = self.chunking.size(self.width);
        self.width.div_ceil(w)
    }

    /// Strips or tiles down one sample plane.
    pub(crate) fn chunks_down(&self) -> u32 {
        let (_, h) = self.chunking.size(self.width);
        self.height.div_ceil(h)
    }

    /// What differs between two layouts, for a message; `None` if they agree.
    pub(crate) fn difference(&self, other: &PageLayout) -> Option<String> {
        if self == other {
            return None;
        }
        Some(format!("{other}, where the first is {self}"))
    }
}

impl fmt::Display for PageLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}×{} {}", self.width, self.height, self.dtype)?;
        if self.samples > 1 {
            let order = if self.planar { "planar" } else { "interleaved" };
            write!(f, " × {} samples ({order})", self.samples)?;
        }
        match self.chunking {
            Chunking::Strips { rows } => write!(f, " in strips of {rows} rows"),
            Chunking::Tiles { width, height } => write!(f, " in {width}×{height} tiles"),
        }
    }
}

/// What `info` shows of a page beyond its layout.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PageCodec {
    /// The compression, by name.
    pub compression: String,
    /// The predictor, by name (`none` if there is none).
    pub predictor: String,
}

/// Reads the layout of the page `decoder` is on.
///
/// # Errors
/// A one-line reason: the decoder's error, or what the reader does not support.
pub(crate) fn read_layout(decoder: &mut Decoder<TiffFile>) -> Result<PageLayout, String> {
    let (width, height) = decoder.dimensions().map_err(|e| e.to_string())?;
    let color = decoder.colortype().map_err(|e| e.to_string())?;
    let (samples, ycbcr) = match color {
        ColorType::Gray(_) => (1, false),
        ColorType::GrayA(_) => (2, false),
        ColorType::RGB(_) => (3, false),
        ColorType::RGBA(_) | ColorType::CMYK(_) => (4, false),
        ColorType::CMYKA(_) => (5, false),
        ColorType::YCbCr(_) => (3, true),
        ColorType::Multiband { num_samples, .. } => (num_samples, false),
        ColorType::Palette(_) => return Err("palette (colour-mapped) images are not supported".into()),
        ColorType::Lab(_) => return Err("CIE L*a*b* images are not supported".into()),
        other => return Err(format!("{other:?} images are not supported")),
    };
    let bits = color.bit_depth();
    if !matches!(bits, 8 | 16 | 32 | 64) {
        return Err(format!(
            "{bits} bits per sample are not supported (8, 16, 32 or 64 are)"
        ));
    }
    let layout = decoder.image_chunk_buffer_layout(0).map_err(|e| e.to_string())?;
    let dtype = match layout.sample_type {
        Some(DecodingSampleType::U8) => DType::U8,
        Some(DecodingSampleType::U16) => DType::U16,
        Some(DecodingSampleType::U32) => DType::U32,
        Some(DecodingSampleType::U64) => DType::U64,
        Some(DecodingSampleType::I8) => DType::I8,
        Some(DecodingSampleType::I16) => DType::I16,
        Some(DecodingSampleType::I32) => DType::I32,
        Some(DecodingSampleType::I64) => DType::I64,
        Some(DecodingSampleType::F32) => DType::F32,
        Some(DecodingSampleType::F64) => DType::F64,
        Some(DecodingSampleType::F16) => {
            return Err("16-bit float (float16) samples are not supported; supported are uint8/16/32/64, int8/16/32/64, float32/64".into());
        }
        None => {
            return Err(format!(
                "{bits}-bit samples of format {:?} are not supported",
                layout.sample_format
            ));
        }
    };
    let compression = decoder
        .find_tag_unsigned::<u16>(Tag::Compression)
        .map_err(|e| e.to_string())?
        .unwrap_or(1);
    match CompressionMethod::from_u16(compression) {
        Some(
            CompressionMethod::None
            | CompressionMethod::LZW
            | CompressionMethod::Deflate
            | CompressionMethod::OldDeflate
            | CompressionMethod::PackBits
            | CompressionMethod::ZSTD,
        ) => {}
        Some(CompressionMethod::ModernJPEG) if bits == 8 => {}
        _ => {
            return Err(format!(
                "{} is not supported; supported are none, LZW, Deflate, PackBits, Zstd, and JPEG for 8-bit data",
                compression_name(compression).trim_end_matches(" (unsupported)")
            ));
        }
    }
    let planar = matches!(
        decoder
            .find_tag_unsigned::<u16>(Tag::PlanarConfiguration)
            .map_err(|e| e.to_string())?
            .and_then(PlanarConfiguration::from_u16),
        Some(PlanarConfiguration::Planar)
    ) && samples > 1;
    if ycbcr && planar {
        return Err("planar YCbCr images are not supported".into());
    }
    let (chunk_width, chunk_height) = decoder.chunk_dimensions();
    let chunking = match decoder.get_chunk_type() {
        ChunkType::Strip => Chunking::Strips {
            rows: chunk_height.clamp(1, height.max(1)),
        },
        ChunkType::Tile => Chunking::Tiles {
            width: chunk_width,
            height: chunk_height,
        },
    };
    if width == 0 || height == 0 || chunk_width == 0 || chunk_height == 0 {
        return Err(format!(
            "the page is {width}×{height} in {chunk_width}×{chunk_height} pieces"
        ));
    }
    Ok(PageLayout {
        width,
        height,
        dtype,
        samples,
        planar,
        chunking,
        ycbcr,
    })
}

/// Checks that every strip or tile of the page lies within the file's `file_len` bytes,
/// so that a truncated file is found when it is opened rather than mid-build.
///
/// # Errors
/// A one-line reason naming the first strip or tile that does not.
pub(crate) fn check_extent(decoder: &mut Decoder<TiffFile>, file_len: u64) -> Result<(), String> {
    let (offsets, counts, what) = match decoder.get_chunk_type() {
        ChunkType::Strip => (Tag::StripOffsets, Tag::StripByteCounts, "strip"),
        ChunkType::Tile => (Tag::TileOffsets, Tag::TileByteCounts, "tile"),
    };
    let offsets = decoder.get_tag_u64_vec(offsets).map_err(|e| e.to_string())?;
    let counts = decoder.get_tag_u64_vec(counts).map_err(|e| e.to_string())?;
    for (i, (&offset, &count)) in offsets.iter().zip(&counts).enumerate() {
        let end = offset.saturating_add(count);
        if count > 0 && end > file_len {
            return Err(format!(
                "the file is truncated: {what} {i} ends at byte {end}, and the file has {file_len} bytes"
            ));
        }
    }
    Ok(())
}

/// The compression and predictor of the page `decoder` is on, by name.
pub(crate) fn read_codec(decoder: &mut Decoder<TiffFile>) -> PageCodec {
    let compression = decoder
        .find_tag_unsigned::<u16>(Tag::Compression)
        .ok()
        .flatten()
        .unwrap_or(1);
    let predictor = decoder
        .find_tag_unsigned::<u16>(Tag::Predictor)
        .ok()
        .flatten()
        .unwrap_or(1);
    PageCodec {
        compression: compression_name(compression),
        predictor: match Predictor::from_u16(predictor) {
            Some(Predictor::None) => "none".into(),
            Some(Predictor::Horizontal) => "horizontal".into(),
            Some(Predictor::FloatingPoint) => "floating-point".into(),
            _ => format!("predictor {predictor}"),
        },
    }
}

/// The name of TIFF compression `code`.
pub(crate) fn compression_name(code: u16) -> String {
    match CompressionMethod::from_u16(code) {
        Some(CompressionMethod::None) => "none".into(),
        Some(CompressionMethod::LZW) => "lzw".into(),
        Some(CompressionMethod::Deflate | CompressionMethod::OldDeflate) => "deflate".into(),
        Some(CompressionMethod::PackBits) => "packbits".into(),
        Some(CompressionMethod::ZSTD) => "zstd".into(),
        Some(CompressionMethod::ModernJPEG) => "jpeg".into(),
        Some(CompressionMethod::JPEG) => "old-style jpeg (unsupported)".into(),
        _ => format!("compression {code} (unsupported)"),
    }
}
