//! The device's own memory, which bounds the buffers of the ring's slots: a program whose
//! buffers would not fit a slot's share is split like one over the binding limit, instead
//! of failing with an out-of-memory error.
//!
//! wgpu does not report memory sizes; on Vulkan (Linux, Windows) the size of the largest
//! device-local heap is read from the driver. Elsewhere (Metal, DX12) it is unknown and only
//! the adapter's buffer limits bound a slot. [`GPU_MEMORY_ENV`] sets what the slots may
//! fill, for a device shared with other programs.

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

/// Environment variable: the MiB of device memory the ring slots' buffers may fill
/// together (at most the device's), instead of half the device's memory. For a GPU shared
/// with other programs; the planner then keeps passes shallow enough that their tiles fit.
pub const GPU_MEMORY_ENV: &str = "OME_PYRAMID_GPU_MEMORY_MIB";

/// The bytes of device memory the ring slots may fill together: `limit_mib` MiB (from
/// [`GPU_MEMORY_ENV`]) where given, at most `device_bytes`; else half of `device_bytes`
/// (the rest is for the driver, other programs, and the buffers a slot keeps from larger
/// programs before). `None` (unbounded) where neither is known.
#[must_use]
pub fn usable_bytes(device_bytes: Option<u64>, limit_mib: Option<u64>) -> Option<u64> {
    match (limit_mib.map(|mib| mib.saturating_mul(1 << 20)), device_bytes) {
        (Some(limit), Some(device)) => Some(limit.min(device)),
        (Some(limit), None) => Some(limit),
        (None, device) => device.map(|bytes| bytes / 2),
    }
}

/// [`GPU_MEMORY_ENV`]'s MiB: `None` where it is unset or empty, or (with a warning) not a
/// positive whole number.
#[must_use]
pub fn limit_mib_from_env() -> Option<u64> {
    let value = std::env::var(GPU_MEMORY_ENV).ok().filter(|v| !v.trim().is_empty())?;
    match value.trim().parse::<u64>() {
        Ok(mib) if mib > 0 => Some(mib),
        _ => {
            tracing::warn!("{GPU_MEMORY_ENV}={value:?} is not a positive number of MiB; ignored");
            None
        }
    }
}

/// The bytes of device buffers each of `slots` ring slots may hold: an equal part of
/// `usable` ([`usable_bytes`]). Unbounded where that is unknown.
#[must_use]
pub fn slot_share(usable: Option<u64>, slots: usize) -> u64 {
    usable.map_or(u64::MAX, |bytes| bytes / (slots.max(1) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_slot_gets_an_equal_part_of_half_the_device() {
        let share = |device, slots| slot_share(usable_bytes(device, None), slots);
        assert_eq!(share(Some(80 << 30), 4), 10 << 30);
        assert_eq!(share(Some(8 << 30), 1), 4 << 30);
        assert_eq!(share(Some(8 << 30), 0), 4 << 30, "no slots counts as one");
        assert_eq!(share(None, 4), u64::MAX);
    }

    #[test]
    fn a_memory_limit_replaces_half_the_device_but_never_exceeds_it() {
        assert_eq!(usable_bytes(Some(80 << 30), Some(1024)), Some(1 << 30));
        assert_eq!(
            usable_bytes(Some(80 << 30), Some(60 << 10)),
            Some(60 << 30),
            "above half"
        );
        assert_eq!(
            usable_bytes(Some(8 << 30), Some(16 << 10)),
            Some(8 << 30),
            "at most the device"
        );
        assert_eq!(
            usable_bytes(None, Some(512)),
            Some(512 << 20),
            "where the device's is unknown"
        );
        assert_eq!(slot_share(usable_bytes(None, Some(512)), 2), 256 << 20);
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
