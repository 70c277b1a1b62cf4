//! ImageJ hyperstacks: the `ImageJ=` description of the first page (`images`, `channels`,
//! `slices`, `frames`, `spacing`, `unit`, `finterval`), pages in t, z, c order with c
//! fastest.

use std::collections::HashMap;

use super::series::{Dims, PlaneRef};

/// What an ImageJ description says.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ImageJ {
    /// Planes in the file.
    pub images: u64,
    /// Plane counts.
    pub dims: Dims,
    /// Distance between slices, in `unit`.
    pub spacing: Option<f64>,
    /// Space unit as written (`micron`, `um`, `\u00B5m`, `pixel`…).
    pub unit: Option<String>,
    /// Time between frames.
    pub frame_interval: Option<f64>,
    /// Time unit (seconds unless `tunit` says otherwise).
    pub time_unit: String,
}

/// True if an image description is ImageJ's.
pub(crate) fn is_imagej(description: &str) -> bool {
    description.starts_with("ImageJ=")
}

/// Parses an ImageJ description.
///
/// # Errors
/// A one-line reason when counts are not numbers or do not multiply to `images`.
pub(crate) fn parse(description: &str) -> Result<ImageJ, String> {
    let values: HashMap<&str, &str> = description
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let count = |key: &str| -> Result<Option<u64>, String> {
        values
            .get(key)
            .map(|v| {
                v.parse::<u64>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("the ImageJ description's `{key}={v}` is not a positive count"))
            })
            .transpose()
    };
    let number = |key: &str| values.get(key).and_then(|v| v.parse::<f64>().ok());
    let dims = Dims {
        t: count("frames")?.unwrap_or(1),
        c: count("channels")?.unwrap_or(1),
        z: count("slices")?.unwrap_or(1),
    };
    let images = count("images")?.unwrap_or(dims.planes());
    if images != dims.planes() {
        return Err(format!(
            "the ImageJ description says images={images}, and frames×channels×slices = {}×{}×{} = {}",
            dims.t,
            dims.c,
            dims.z,
            dims.planes()
        ));
    }
    Ok(ImageJ {
        images,
        dims,
        spacing: number("spacing"),
        unit: values.get("unit").map(|u| (*u).to_string()),
        frame_interval: number("finterval"),
        time_unit: values
            .get("tunit")
            .map_or_else(|| "s".to_string(), |u| (*u).to_string()),
    })
}

impl ImageJ {
    /// Where each plane is, in t, c, z order: page `(t × slices + z) × channels + c`.
    pub(crate) fn planes(&self) -> Vec<Option<PlaneRef>> {
        let d = self.dims;
        let mut planes = vec![None; usize::try_from(d.planes()).unwrap_or(0)];
        for t in 0..d.t {
            for c in 0..d.c {
                for z in 0..d.z {
                    let page = (t * d.z + z) * d.c + c;
                    if let (Ok(at), Ok(page)) = (usize::try_from(d.index(t, c, z)), usize::try_from(page)) {
                        planes[at] = Some(PlaneRef { file: 0, page });
                    }
                }
            }
        }
        planes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hyperstack_description_gives_counts_and_sizes() {
        let text = "ImageJ=1.11a\nimages=24\nchannels=2\nslices=4\nframes=3\nhyperstack=true\nspacing=1.5\nunit=um\nfinterval=2.0\n";
        let ij = parse(text).unwrap();
        assert_eq!(ij.dims, Dims { t: 3, c: 2, z: 4 });
        assert_eq!(
            (ij.spacing, ij.unit.as_deref(), ij.frame_interval),
            (Some(1.5), Some("um"), Some(2.0))
        );
        let planes = ij.planes();
        // t=1, c=1, z=2: page (1×4 + 2)×2 + 1 = 13.
        assert_eq!(
            planes[usize::try_from(ij.dims.index(1, 1, 2)).unwrap()],
            Some(PlaneRef { file: 0, page: 13 })
        );
    }

    #[test]
    fn counts_that_disagree_are_refused() {
        assert!(
            parse("ImageJ=1\nimages=5\nslices=4\n")
                .unwrap_err()
                .contains("images=5")
        );
        assert!(parse("ImageJ=1\nslices=x\n").unwrap_err().contains("slices=x"));
        assert_eq!(parse("ImageJ=1\n").unwrap().dims, Dims { t: 1, c: 1, z: 1 });
    }
}
