//! Lists the GPU adapters wgpu finds and opens the GPU backend on the best one.
fn main() {
    for a in ome_pyramid::backend::gpu::list_adapters() {
        println!("{a:?}");
    }
    match ome_pyramid::backend::gpu::GpuBackend::new(true) {
        Ok(gpu) => println!("opened: {}", ome_pyramid::Downsampler::description(&gpu)),
        Err(e) => println!("error: {e}"),
    }
}
