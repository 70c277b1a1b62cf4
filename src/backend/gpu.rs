//! The GPU backend: WGSL compute shaders through wgpu (SPEC §5). Not built yet: every
//! request for it answers with [`BackendError::NoAdapter`].

use crate::backend::{BackendError, BackendKind, Downsampler, Step};
use crate::dtype::DType;
use crate::tile::{Region, Tile};

/// The GPU backend.
#[derive(Debug)]
pub struct GpuBackend {
    _private: (),
}

impl GpuBackend {
    /// Opens a GPU adapter; software adapters only when `allow_software`.
    ///
    /// # Errors
    /// [`BackendError::NoAdapter`] (always, for now).
    pub fn new(_allow_software: bool) -> Result<Self, BackendError> {
        Err(BackendError::NoAdapter(
            "the GPU backend is not built yet".into(),
        ))
    }
}

impl Downsampler for GpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }
    fn description(&self) -> String {
        "gpu".into()
    }
    fn supports(&self, _dtype: DType) -> bool {
        false
    }
    fn downsample(&self, _step: &Step, _src: &Tile, _dst: &Region) -> Result<Tile, BackendError> {
        Err(BackendError::NoAdapter(
            "the GPU backend is not built yet".into(),
        ))
    }
}
