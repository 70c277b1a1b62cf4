//! The device's own memory, which bounds the buffers of the ring's slots: a program whose
//! buffers would not fit a slot's share is split like one over the binding limit, instead
//! of failing with an out-of-memory error.
//!
//! wgpu does not report memory sizes; on Vulkan (Linux, Windows) the size of the largest
//! device-local heap is read from the driver. Elsewhere (Metal, DX12) it is unknown and only
//! the adapter's buffer limits bound a slot.

/// Bytes of the adapter's largest device-local memory heap, where the driver tells (Vulkan);
/// `None` elsewhere.
#[must_use]
pub fn device_local_bytes(adapter: &wgpu::Adapter) -> Option<u64> {
    #[cfg(any(target_os = "linux", target_os = "windows"))]
    {
        vulkan_device_local_bytes(adapter)
    }
    #[cfg(not(any(target_os = "linux", target_os = "windows")))]
    {
        let _ = adapter;
        None
    }
}

#[cfg(any(target_os = "linux", target_os = "windows"))]
#[allow(unsafe_code)]
fn vulkan_device_local_bytes(adapter: &wgpu::Adapter) -> Option<u64> {
    // SAFETY: the hal adapter is only read through, and nothing of it is destroyed; the
    // guard is dropped before this returns.
    let hal = unsafe { adapter.as_hal::<wgpu::hal::api::Vulkan>() }?;
    let instance = hal.shared_instance().raw_instance();
    // SAFETY: a query of a physical device of the instance that enumerated it, both alive.
    let properties = unsafe { instance.get_physical_device_memory_properties(hal.raw_physical_device()) };
    properties
        .memory_heaps_as_slice()
        .iter()
        .filter(|heap| heap.flags.contains(ash::vk::MemoryHeapFlags::DEVICE_LOCAL))
        .map(|heap| heap.size)
        .max()
}

/// The bytes of device buffers each of `slots` ring slots may hold: half of `device_bytes`
/// (the rest is for the driver, other programs, and the buffers a slot keeps from larger
/// programs before), shared by the slots. Unbounded where the device's memory is unknown.
#[must_use]
pub fn slot_share(device_bytes: Option<u64>, slots: usize) -> u64 {
    device_bytes.map_or(u64::MAX, |bytes| bytes / 2 / (slots.max(1) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_gets_an_equal_part_of_half_the_device() {
        assert_eq!(slot_share(Some(80 << 30), 4), 10 << 30);
        assert_eq!(slot_share(Some(8 << 30), 1), 4 << 30);
        assert_eq!(slot_share(Some(8 << 30), 0), 4 << 30, "no slots counts as one");
        assert_eq!(slot_share(None, 4), u64::MAX);
    }

    #[test]
    fn a_vulkan_adapter_reports_its_device_memory() {
        let adapters = super::super::all_adapters();
        let vulkan: Vec<_> = adapters
            .iter()
            .filter(|a| a.get_info().backend == wgpu::Backend::Vulkan)
            .collect();
        if vulkan.is_empty() {
            super::super::no_adapter("a_vulkan_adapter_reports_its_device_memory", &"no Vulkan adapter");
            return;
        }
        for adapter in vulkan {
            let bytes = device_local_bytes(adapter);
            assert!(
                bytes.is_some_and(|b| b >= 1 << 20),
                "{}: {bytes:?}",
                adapter.get_info().name
            );
        }
    }
}
