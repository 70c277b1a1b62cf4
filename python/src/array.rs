//! NumPy arrays as build inputs: a borrowed, read-only `ndarray` view of the array's own
//! memory (any strides: C or Fortran order, slices), wrapped in the library's
//! [`NdarraySource`]. The array is never copied whole: the engine's threads compute from a
//! C-contiguous array in place (or fill a GPU's staging memory from it), and copy each read
//! chunk out of any other, while the GIL is released, so the array must not be written to
//! by other Python threads during the build.

use std::sync::Arc;

use numpy::{Element, PyReadonlyArrayDyn};
use ome_pyramid::store::{NdarraySource, Source, StoreElement};
use ome_pyramid::{DType, StoreError};
use pyo3::prelude::*;

use crate::InvalidInputError;

/// A source over `array`, for the build.
pub(crate) fn source_of<'a, T: StoreElement + Element>(
    array: &'a PyReadonlyArrayDyn<'_, T>,
) -> PyResult<Arc<dyn Source + 'a>> {
    let source =
        NdarraySource::new(array.as_array()).map_err(|e: StoreError| InvalidInputError::new_err(e.to_string()))?;
    Ok(Arc::new(source))
}

/// The error for an array whose element type no pyramid holds.
pub(crate) fn unsupported(array: &Bound<'_, PyAny>) -> PyErr {
    let dtype = array
        .getattr("dtype")
        .and_then(|d| d.str())
        .map_or_else(|_| "?".to_string(), |s| s.to_string());
    let supported: Vec<&str> = DType::ALL.iter().map(|d| d.name()).collect();
    InvalidInputError::new_err(format!(
        "arrays of dtype {dtype} cannot be made into a pyramid; convert to one of {} (in native byte order)",
        supported.join(", ")
    ))
}

/// Returns `$body` from the enclosing function with `$source` bound to an `Arc<dyn Source>`
/// over the NumPy array `$array`, whatever its element type; for an unsupported type the
/// macro's value is an `InvalidInputError` (so it ends a function's body).
macro_rules! with_array_source {
    ($array:expr, |$source:ident| $body:expr) => {{
        let array: &pyo3::Bound<'_, pyo3::PyAny> = $array;
        $crate::array::with_array_source!(@try array, $source, $body; u8 u16 u32 u64 i8 i16 i32 i64 f32 f64)
    }};
    (@try $array:ident, $source:ident, $body:expr; $($t:ty)*) => {{
        $(
            if let Ok(readonly) = $array.extract::<numpy::PyReadonlyArrayDyn<'_, $t>>() {
                let $source = $crate::array::source_of(&readonly)?;
                return $body;
            }
        )*
        Err($crate::array::unsupported($array))
    }};
}
pub(crate) use with_array_source;
