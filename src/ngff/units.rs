//! The units OME-NGFF lists for space and time axes (UDUNITS-2 names), and the
//! abbreviations people type for them.

use super::NgffError;

/// Space units OME-NGFF v0.4 lists (UDUNITS-2 names).
pub const SPACE_UNITS: &[&str] = &[
    "angstrom",
    "attometer",
    "centimeter",
    "decimeter",
    "exameter",
    "femtometer",
    "foot",
    "gigameter",
    "hectometer",
    "inch",
    "kilometer",
    "megameter",
    "meter",
    "micrometer",
    "mile",
    "millimeter",
    "nanometer",
    "parsec",
    "petameter",
    "picometer",
    "terameter",
    "yard",
    "yoctometer",
    "yottameter",
    "zeptometer",
    "zettameter",
];

/// Time units OME-NGFF v0.4 lists.
pub const TIME_UNITS: &[&str] = &[
    "attosecond",
    "centisecond",
    "day",
    "decisecond",
    "exasecond",
    "femtosecond",
    "gigasecond",
    "hectosecond",
    "hour",
    "kilosecond",
    "megasecond",
    "microsecond",
    "millisecond",
    "minute",
    "nanosecond",
    "petasecond",
    "picosecond",
    "second",
    "terasecond",
    "yoctosecond",
    "yottasecond",
    "zeptosecond",
    "zettasecond",
];

/// Accepts a v0.4 space unit, or a common abbreviation (`um`, `µm`, `nm`, `mm`, `cm`, `m`, `Å`),
/// and returns the v0.4 name.
///
/// # Errors
/// [`NgffError::UnknownUnit`] listing the accepted names.
pub fn normalize_space_unit(unit: &str) -> Result<String, NgffError> {
    let canonical = match unit.trim() {
        "um" | "µm" | "μm" | "micron" | "microns" => "micrometer",
        "nm" => "nanometer",
        "mm" => "millimeter",
        "cm" => "centimeter",
        "m" => "meter",
        "Å" | "A" => "angstrom",
        "pm" => "picometer",
        other => other,
    };
    if SPACE_UNITS.contains(&canonical) {
        Ok(canonical.to_string())
    } else {
        Err(NgffError::UnknownUnit {
            kind: "space",
            unit: unit.to_string(),
            expected: SPACE_UNITS.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_normalised() {
        assert_eq!(normalize_space_unit("um").unwrap(), "micrometer");
        assert_eq!(normalize_space_unit("nanometer").unwrap(), "nanometer");
        assert!(normalize_space_unit("furlong").is_err());
    }
}
