//! Turning per-channel projections into an RGB picture: each channel's values are mapped
//! through its display window (`start` black, `end` full colour) and its colour, and the
//! channels are added, as viewers blend them. Pure: no I/O.

use serde_json::Value;

use crate::ngff::omero::{CHANNEL_COLORS, ChannelWindow, SINGLE_CHANNEL_COLOR};

/// How one channel is shown.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelStyle {
    /// Colour at full intensity, 0 to 1 per component.
    pub rgb: [f64; 3],
    /// Values at or below it are black.
    pub start: f64,
    /// Values at or above it are full colour.
    pub end: f64,
}

/// Parses an `omero` colour (`RRGGBB`, with or without a leading `#`).
fn parse_color(hex: &str) -> Option<[f64; 3]> {
    let hex = hex.trim_start_matches('#');
    if hex.len() != 6 {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
    Some([
        f64::from(byte(0)?) / 255.0,
        f64::from(byte(2)?) / 255.0,
        f64::from(byte(4)?) / 255.0,
    ])
}

/// The default colour of channel `c` of `count`, as `build` writes it.
fn default_color(c: usize, count: usize) -> [f64; 3] {
    let hex = if count == 1 {
        SINGLE_CHANNEL_COLOR
    } else {
        CHANNEL_COLORS[c % CHANNEL_COLORS.len()]
    };
    parse_color(hex).expect("the default colours are valid")
}

/// The style of every channel: from the image's `omero` block where it has one (inactive
/// channels are left out), else the defaults `build` writes, with windows measured on the
/// projections themselves.
#[must_use]
pub fn channel_styles(omero: Option<&Value>, projections: &[Vec<f64>]) -> Vec<Option<ChannelStyle>> {
    let count = projections.len();
    let channels = omero.and_then(|o| o.get("channels")).and_then(Value::as_array);
    (0..count)
        .map(|c| {
            let entry = channels.and_then(|list| list.get(c));
            if entry.and_then(|e| e.get("active")).and_then(Value::as_bool) == Some(false) {
                return None;
            }
            let window = entry.and_then(|e| e.get("window"));
            let number = |key: &str| window.and_then(|w| w.get(key)).and_then(Value::as_f64);
            let (start, end) = match (number("start"), number("end")) {
                (Some(start), Some(end)) => (start, end),
                _ => {
                    let measured = ChannelWindow::of_values(&mut projections[c].clone());
                    (measured.start, measured.end)
                }
            };
            let rgb = entry
                .and_then(|e| e.get("color"))
                .and_then(Value::as_str)
                .and_then(parse_color)
                .unwrap_or_else(|| default_color(c, count));
            Some(ChannelStyle { rgb, start, end })
        })
        .collect()
}

/// Blends the channels into RGB bytes: each value mapped through its window to 0..1, times
/// its colour, added over the channels and clipped. NaN counts as black.
#[must_use]
pub fn blend(projections: &[Vec<f64>], styles: &[Option<ChannelStyle>], pixels: usize) -> Vec<u8> {
    let mut sum = vec![[0.0f64; 3]; pixels];
    for (values, style) in projections.iter().zip(styles) {
        let Some(style) = style else { continue };
        let span = style.end - style.start;
        for (pixel, &v) in sum.iter_mut().zip(values) {
            let level = if span > 0.0 {
                ((v - style.start) / span).clamp(0.0, 1.0)
            } else if v > style.start {
                1.0
            } else {
                0.0
            };
            let level = if level.is_nan() { 0.0 } else { level };
            for (component, weight) in pixel.iter_mut().zip(style.rgb) {
                *component += level * weight;
            }
        }
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let byte = |c: f64| (c.clamp(0.0, 1.0) * 255.0).round() as u8;
    sum.iter().flat_map(|p| p.map(byte)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn windows_and_colours_map_values_to_rgb() {
        let omero = json!({"channels": [
            {"color": "FF0000", "window": {"start": 10.0, "end": 20.0}, "active": true},
            {"color": "#0000FF", "window": {"start": 0.0, "end": 100.0}, "active": true},
            {"color": "00FF00", "window": {"start": 0.0, "end": 1.0}, "active": false},
        ]});
        let projections = vec![vec![5.0, 15.0, 30.0], vec![0.0, 50.0, 100.0], vec![1.0, 1.0, 1.0]];
        let styles = channel_styles(Some(&omero), &projections);
        assert!(styles[2].is_none(), "inactive channels are left out");
        let rgb = blend(&projections, &styles, 3);
        assert_eq!(rgb, vec![0, 0, 0, 128, 0, 128, 255, 0, 255]);
    }

    #[test]
    fn without_omero_the_build_defaults_apply() {
        let projections = vec![(0..1000).map(f64::from).collect::<Vec<_>>()];
        let styles = channel_styles(None, &projections);
        let style = styles[0].unwrap();
        assert_eq!(style.rgb, [1.0, 1.0, 1.0], "one channel is white");
        assert_eq!((style.start, style.end), (1.0, 998.0), "0.1% and 99.9%");
        let two = channel_styles(None, &[vec![0.0, 1.0], vec![0.0, 1.0]]);
        assert_eq!(two[0].unwrap().rgb, [0.0, 1.0, 0.0], "green first");
        assert_eq!(two[1].unwrap().rgb, [1.0, 0.0, 1.0], "then magenta");
        assert_eq!(blend(&[vec![f64::NAN]], &styles, 1), vec![0, 0, 0]);
    }
}
