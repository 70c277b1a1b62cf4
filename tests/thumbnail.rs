//! `ome-pyramid thumbnail` (issue 17, item 4): the picture is the maximum over z of the
//! right level, blended in the image's colours and windows, within `--size`; a blank image
//! gives a black picture and says so.

mod common;

use std::path::{Path, PathBuf};

use common::{run, stderr, stdout};
use ome_pyramid::TileData;
use ome_pyramid::synthetic::{self, ArrayFormat, ArraySpec, Codec};
use tempfile::TempDir;

/// A c×z×y×x = 2×6×64×64 uint16 image: channel 0 is 1000 on the left half of plane z = 3
/// only, channel 1 is 1000 on the top half of plane z = 0 only; everything else is 0.
fn two_channel_input(path: &Path) {
    let (z, y, x) = (6usize, 64usize, 64usize);
    let mut values = vec![0u16; 2 * z * y * x];
    for yy in 0..y {
        for xx in 0..x {
            if xx < x / 2 {
                values[((3) * y + yy) * x + xx] = 1000;
            }
            if yy < y / 2 {
                values[((z) * y + yy) * x + xx] = 1000;
            }
        }
    }
    let spec = ArraySpec {
        shape: vec![2, 6, 64, 64],
        chunks: vec![1, 3, 32, 32],
        dtype: ome_pyramid::DType::U16,
        format: ArrayFormat::V2,
        codec: Codec::Zstd(1),
    };
    synthetic::write_array(path, &spec, &TileData::U16(values)).unwrap();
}

fn build(dir: &Path, input: &Path, extra: &[&str]) -> PathBuf {
    let output = dir.join("img.ome.zarr");
    let mut args = vec!["build", input.to_str().unwrap(), output.to_str().unwrap(), "-q"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    output
}

/// Width, height and RGB bytes of a PNG.
fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = png::Decoder::new(file).read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buffer.truncate(info.buffer_size());
    (info.width, info.height, buffer)
}

fn pixel(png: &(u32, u32, Vec<u8>), x: u32, y: u32) -> [u8; 3] {
    let i = 3 * (y * png.0 + x) as usize;
    [png.2[i], png.2[i + 1], png.2[i + 2]]
}

#[test]
fn channels_are_projected_over_z_and_blended_in_their_colours() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("in.zarr");
    two_channel_input(&input);
    // z kept at every level, so level 0 (64×64) is the one that fits --size 64.
    let image = build(
        dir.path(),
        &input,
        &["--axes", "czyx", "--factors", "xy", "--chunks", "1,3,16,16"],
    );
    let png = dir.path().join("t.png");
    let out = run(&[
        "thumbnail",
        image.to_str().unwrap(),
        png.to_str().unwrap(),
        "--size",
        "64",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("64×64 from level 0, maximum over 6 planes, 2 channels"),
        "{}",
        stdout(&out)
    );
    let picture = read_png(&png);
    assert_eq!((picture.0, picture.1), (64, 64));
    // Channel 0 is green (00FF00), channel 1 magenta (FF00FF): the planes z = 3 and z = 0
    // both show, so top-left is white, bottom-left green, top-right magenta, the rest black.
    assert_eq!(pixel(&picture, 8, 8), [255, 255, 255]);
    assert_eq!(pixel(&picture, 8, 56), [0, 255, 0]);
    assert_eq!(pixel(&picture, 56, 8), [255, 0, 255]);
    assert_eq!(pixel(&picture, 56, 56), [0, 0, 0]);

    // A smaller --size takes a coarser level, reduced further if none fits.
    let out = run(&[
        "thumbnail",
        image.to_str().unwrap(),
        png.to_str().unwrap(),
        "--size",
        "20",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let small = read_png(&png);
    assert!(small.0 <= 20 && small.1 <= 20, "{}×{}", small.0, small.1);
    assert_eq!(pixel(&small, 0, 0), [255, 255, 255]);
    assert!(stdout(&out).contains("from level 2"), "{}", stdout(&out));
}

#[test]
fn a_blank_image_gives_a_black_picture_and_says_so() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("zeros.zarr");
    let spec = ArraySpec {
        shape: vec![4, 40, 30],
        chunks: vec![4, 20, 15],
        dtype: ome_pyramid::DType::U8,
        format: ArrayFormat::V2,
        codec: Codec::None,
    };
    synthetic::write_array(&input, &spec, &TileData::U8(vec![0; 4 * 40 * 30])).unwrap();
    let image = build(dir.path(), &input, &[]);
    let png = dir.path().join("t.png");
    let out = run(&["thumbnail", image.to_str().unwrap(), png.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("0.0% of the pixels lit"), "{}", stdout(&out));
    let picture = read_png(&png);
    assert_eq!((picture.0, picture.1), (30, 40));
    assert!(picture.2.iter().all(|&c| c == 0));

    // Not an image: one clear error, exit 2, no file.
    let missing = dir.path().join("none.png");
    let out = run(&["thumbnail", input.to_str().unwrap(), missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is a Zarr array, not an OME-Zarr image"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists());
}
