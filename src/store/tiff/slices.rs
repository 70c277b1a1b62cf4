//! Stacks of 2-D slices: a folder of TIFF files, or a quoted glob pattern, one file per z
//! plane in natural order (`z2` before `z10`).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// True if `path` is a glob pattern rather than a path (it does not exist as written and
/// holds `*`, `?` or `[`).
pub(crate) fn is_pattern(path: &Path) -> bool {
    let text = path.to_string_lossy();
    !path.exists() && text.contains(['*', '?', '['])
}

/// The TIFF files of folder `dir` (`.tif`/`.tiff`, any case; hidden files skipped), in
/// natural order.
///
/// # Errors
/// The error of listing the folder.
pub(crate) fn folder_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_tiff = Path::new(&name)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tif") || e.eq_ignore_ascii_case("tiff"));
        if is_tiff && !name.starts_with('.') && entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    sort_naturally(&mut files);
    Ok(files)
}

/// The files matching glob `pattern`, in natural order.
///
/// # Errors
/// A one-line reason: an invalid pattern or an unreadable match.
pub(crate) fn pattern_files(pattern: &Path) -> Result<Vec<PathBuf>, String> {
    let text = pattern.to_string_lossy();
    let matches = glob::glob(&text).map_err(|e| format!("`{text}` is not a valid glob pattern: {e}"))?;
    let mut files = Vec::new();
    for entry in matches {
        let path = entry.map_err(|e| e.to_string())?;
        if path.is_file() {
            files.push(path);
        }
    }
    sort_naturally(&mut files);
    Ok(files)
}

fn sort_naturally(files: &mut [PathBuf]) {
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
}

/// Compares names with runs of digits as numbers: `z2` < `z10`, `a01` < `a1` on a tie.
pub(crate) fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        match (a.chars().next(), b.chars().next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.len() - a.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let db = b.len() - b.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let (na, nb) = (&a[..da], &b[..db]);
                let (ta, tb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
                let by_value = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb));
                match by_value.then_with(|| db.cmp(&da)) {
                    Ordering::Equal => {
                        a = &a[da..];
                        b = &b[db..];
                    }
                    other => return other,
                }
            }
            (Some(x), Some(y)) if x == y => {
                a = &a[x.len_utf8()..];
                b = &b[y.len_utf8()..];
            }
            (Some(x), Some(y)) => return x.cmp(&y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_sort_by_value() {
        let mut names = vec!["z10.tif", "z2.tif", "z1.tif", "z002.tif", "a.tif", "z1b.tif"];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(names, ["a.tif", "z1.tif", "z1b.tif", "z002.tif", "z2.tif", "z10.tif"]);
        assert_eq!(
            natural_cmp("img_99999999999999999999", "img_100000000000000000000"),
            Ordering::Less
        );
    }
}
