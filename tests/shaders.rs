//! Every WGSL kernel parses, validates, and compiles to SPIR-V for each element kind, entry
//! point and `NESTED_PLANES`, with naga and no GPU: a shader error is caught even where no
//! adapter exists.
#![cfg(feature = "gpu")]

use ome_pyramid::DType;
use ome_pyramid::backend::gpu::program::{PARAM_WORDS, elem_code};
use ome_pyramid::backend::gpu::{Kernel, shader_source};

#[test]
fn every_kernel_validates_and_compiles_for_every_element_kind() {
    for kernel in Kernel::ALL {
        let source = shader_source(kernel);
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{kernel:?} does not parse:\n{}", e.emit_to_string(&source)));
        let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{kernel:?} does not validate:\n{}", e.emit_to_string(&source)));
        let elems: Vec<u32> = DType::ALL.iter().filter_map(|&d| elem_code(d)).collect();
        assert_eq!(elems.len(), 7, "u8, u16, u32, i8, i16, i32, f32 on the GPU");
        for elem in elems {
            for (&entry_point, nested) in kernel.entry_points().iter().flat_map(|e| [(e, 0u32), (e, 1)]) {
                let mut constants = naga::back::PipelineConstants::default();
                constants.insert("ELEM".to_string(), f64::from(elem));
                constants.insert("NESTED_PLANES".to_string(), f64::from(nested));
                let (specialised, specialised_info) = naga::back::pipeline_constants::process_overrides(
                    &module,
                    &info,
                    Some((naga::ShaderStage::Compute, entry_point)),
                    &constants,
                )
                .unwrap_or_else(|e| panic!("{kernel:?} {entry_point} with ELEM={elem}, NESTED_PLANES={nested}: {e}"));
                let pipeline = naga::back::spv::PipelineOptions {
                    shader_stage: naga::ShaderStage::Compute,
                    entry_point: entry_point.into(),
                };
                let words = naga::back::spv::write_vec(
                    &specialised,
                    &specialised_info,
                    &naga::back::spv::Options::default(),
                    Some(&pipeline),
                )
                .unwrap_or_else(|e| {
                    panic!(
                        "{kernel:?} {entry_point} with ELEM={elem}, NESTED_PLANES={nested} does not compile to SPIR-V: {e}"
                    )
                });
                assert!(words.len() > 100);
            }
        }
    }
}

#[test]
fn every_kernel_reads_its_parameter_block_from_a_uniform_buffer_of_the_host_size() {
    for kernel in Kernel::ALL {
        let module = naga::front::wgsl::parse_str(&shader_source(kernel)).expect("parses (checked above)");
        let (_, params) = module
            .global_variables
            .iter()
            .find(|(_, g)| g.name.as_deref() == Some("params"))
            .unwrap_or_else(|| panic!("{kernel:?} declares `params`"));
        assert_eq!(params.space, naga::AddressSpace::Uniform, "{kernel:?}");
        let bytes = module.types[params.ty].inner.size(module.to_ctx());
        let host = PARAM_WORDS as u64 * 4;
        assert_eq!(u64::from(bytes), host, "{kernel:?}: blocks as large as the host writes");
    }
}

#[test]
fn an_invalid_shader_is_caught() {
    // The check above would notice a broken kernel: a type error fails validation.
    let broken = shader_source(Kernel::Mean).replace("let n = count[0] * count[1]", "let n = 1.5 * count[1]");
    let module = naga::front::wgsl::parse_str(&broken);
    let failed = match module {
        Err(_) => true,
        Ok(m) => naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::empty())
            .validate(&m)
            .is_err(),
    };
    assert!(failed);
}
