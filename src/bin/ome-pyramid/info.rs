//! `ome-pyramid info`: what a Zarr array or OME-Zarr image holds (levels, shapes, chunks,
//! dtype, codecs, transforms, label images), what `build` makes of a TIFF input (series,
//! axes, scales, layout, codec), and `info --gpu`: the GPU adapters.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use ome_pyramid::store;
use ome_pyramid::units::format_bytes;

use crate::outln;

#[derive(Args, Debug)]
pub(crate) struct InfoArgs {
    /// A Zarr array, group or OME-Zarr image, or TIFF input (a file, a folder of slices, a quoted glob).
    #[arg(required_unless_present = "gpu")]
    path: Option<PathBuf>,
    /// List the GPU adapters wgpu finds, their limits, and which one `--backend auto` uses.
    #[arg(long)]
    gpu: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn cmd_gpu_info(json_output: bool) -> Result<()> {
    let adapters = ome_pyramid::backend::list_adapters();
    if json_output {
        outln!("{}", serde_json::to_string_pretty(&adapters)?);
        return Ok(());
    }
    if !ome_pyramid::backend::GPU_SUPPORT {
        outln!(
            "This build of ome-pyramid has no GPU support (built without the `gpu` feature); builds use the CPU backend."
        );
        return Ok(());
    }
    if adapters.is_empty() {
        outln!("No GPU adapter found (no Vulkan, Metal or DX12 driver); builds use the CPU backend.");
    }
    let auto = adapters.iter().position(|a| a.used_by_auto);
    for (i, a) in adapters.iter().enumerate() {
        let role = match (auto == Some(i), a.software) {
            (true, _) => "used by --backend auto",
            (false, true) => "software: only with --backend gpu",
            (false, false) => "",
        };
        outln!("{} ({}, {}) {role}", a.name, a.backend, a.device_type);
        outln!("  driver: {}", a.driver);
        if let Some(bytes) = a.device_memory {
            outln!("  device memory {}", format_bytes(bytes));
        }
        if let Some(bytes) = a.buffer_memory {
            outln!(
                "  buffers of the tiles on the device: up to {} in all, shared by the ring's slots ({})",
                format_bytes(bytes),
                if a.buffer_memory_from_env {
                    "as OME_PYRAMID_GPU_MEMORY_MIB sets"
                } else {
                    "half the device's; OME_PYRAMID_GPU_MEMORY_MIB sets another amount"
                }
            );
        }
        outln!(
            "  max storage binding {}, max buffer {}, {} workgroups per dimension, {} invocations per workgroup",
            format_bytes(a.max_storage_buffer_binding_size),
            format_bytes(a.max_buffer_size),
            a.max_compute_workgroups_per_dimension,
            a.max_compute_invocations_per_workgroup
        );
    }
    if auto.is_none() && !adapters.is_empty() {
        outln!("No hardware adapter: --backend auto uses the CPU.");
    }
    Ok(())
}

pub(crate) fn run(args: &InfoArgs) -> Result<()> {
    if args.gpu {
        return cmd_gpu_info(args.json);
    }
    let path = args.path.as_ref().expect("clap requires PATH without --gpu");
    let info = ome_pyramid::info::describe(path)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(());
    }
    if store::is_tiff_input(path) {
        return tiff_info(path, &info);
    }
    outln!("{} ({})", path.display(), info["kind"].as_str().unwrap_or("?"));
    if let Some(partitioned) = info.get("partitioned").filter(|p| !p.is_null()) {
        partition_info(path, partitioned);
    }
    if let Some(axes) = info.get("axes").and_then(|a| a.as_array()) {
        let names: Vec<String> = axes
            .iter()
            .map(|a| {
                let name = a["name"].as_str().unwrap_or("?");
                match (a["type"].as_str(), a["unit"].as_str()) {
                    (Some(t), Some(u)) => format!("{name} ({t}, {u})"),
                    (Some(t), None) => format!("{name} ({t})"),
                    _ => name.to_string(),
                }
            })
            .collect();
        outln!("  axes: {}", names.join(", "));
    }
    if let Some(kind) = info.get("type").and_then(|t| t.as_str()) {
        let backend = info["metadata"]["backend"].as_str().unwrap_or("?");
        outln!(
            "  method: {kind} (backend {backend}), OME-NGFF {}",
            info["version"].as_str().unwrap_or("?")
        );
    }
    for array in info["arrays"].as_array().into_iter().flatten() {
        let shards = match &array["shards"] {
            serde_json::Value::Null => String::new(),
            shards => format!(" shards {shards}"),
        };
        let mut line = format!(
            "  {:>4}  {} {} chunks {}{shards} {}, {} files, {}",
            array["path"].as_str().filter(|p| !p.is_empty()).unwrap_or("."),
            array["dtype"].as_str().unwrap_or("?"),
            array["shape"],
            array["chunks"],
            array["codecs"].as_str().unwrap_or("?"),
            array["files"],
            format_bytes(array["bytes_on_disk"].as_u64().unwrap_or(0)),
        );
        if let Some(transforms) = array.get("coordinateTransformations").and_then(|t| t.as_array()) {
            for t in transforms {
                if let Some(kind) = t["type"].as_str() {
                    line.push_str(&format!("  {kind} {}", t[kind]));
                }
            }
        }
        outln!("{line}");
    }
    for label in info["labels"].as_array().into_iter().flatten() {
        outln!(
            "  label image `{}`: {} {} in {} levels",
            label["name"].as_str().unwrap_or("?"),
            label["dtype"].as_str().unwrap_or("?"),
            label["shape"],
            label["levels"],
        );
    }
    Ok(())
}

/// What `build` makes of TIFF input, as text: one block per series.
fn tiff_info(path: &Path, info: &serde_json::Value) -> Result<()> {
    let files = info["files"].as_u64().unwrap_or(1);
    let bigtiff = if info["bigtiff"] == true { ", BigTIFF" } else { "" };
    let files = if files > 1 {
        format!(", {files} files")
    } else {
        String::new()
    };
    outln!(
        "{} ({}{bigtiff}{files})",
        path.display(),
        info["kind"].as_str().unwrap_or("TIFF")
    );
    for series in info["series"].as_array().into_iter().flatten() {
        let name = series["name"].as_str().map(|n| format!(" `{n}`")).unwrap_or_default();
        outln!(
            "  series {}{name}: {} {} {}",
            series["series"],
            series["axes"].as_str().unwrap_or("?"),
            series["shape"],
            series["dtype"].as_str().unwrap_or("?"),
        );
        let axes: Vec<char> = series["axes"].as_str().unwrap_or_default().chars().collect();
        if let Some(scale) = series["scale"].as_array() {
            let sizes: Vec<String> = axes
                .iter()
                .zip(scale)
                .zip(series["units"].as_array().into_iter().flatten())
                .map(|((axis, s), unit)| match unit.as_str() {
                    Some(unit) => format!("{axis}={s} {unit}"),
                    None => format!("{axis}={s}"),
                })
                .collect();
            outln!("    pixel size: {}", sizes.join(", "));
        } else {
            outln!("    pixel size: not in the file (1 per axis unless --scale)");
        }
        if let Some(channels) = series["channels"].as_array() {
            let names: Vec<String> = channels
                .iter()
                .map(|c| {
                    format!(
                        "{} #{}",
                        c["label"].as_str().unwrap_or("?"),
                        c["color"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            outln!("    channels: {}", names.join(", "));
        }
        let samples = match series["samples_per_pixel"].as_u64().unwrap_or(1) {
            1 => String::new(),
            n if series["planar"] == true => format!(", {n} samples per pixel (planar)"),
            n => format!(", {n} samples per pixel"),
        };
        outln!(
            "    {} planes ({} missing) in {} ({} per plane){samples}, compression {}, predictor {}",
            series["planes"],
            series["missing_planes"],
            series["layout"].as_str().unwrap_or("?"),
            series["pieces_per_plane"],
            series["compression"].as_str().unwrap_or("?"),
            series["predictor"].as_str().unwrap_or("?"),
        );
    }
    Ok(())
}

/// Where a partitioned build stands: its parts, those not done named, and what to run next.
fn partition_info(path: &Path, partitioned: &serde_json::Value) {
    let parts = partitioned["parts"].as_array().map_or(&[][..], Vec::as_slice);
    let count = |state: &str| parts.iter().filter(|p| p["state"] == state).count();
    outln!(
        "  planned in {} parts (levels 0..={} by the parts, {} levels in all): {} done, {} failed, {} unfinished, {} not run",
        parts.len(),
        partitioned["part_last_level"],
        partitioned["levels"],
        count("done"),
        count("failed"),
        count("unfinished"),
        count("not-run"),
    );
    const SHOWN: usize = 8;
    let pending: Vec<&serde_json::Value> = parts.iter().filter(|p| p["state"] != "done").collect();
    for part in pending.iter().take(SHOWN) {
        outln!("    {}", part["description"].as_str().unwrap_or("?"));
    }
    if pending.len() > SHOWN {
        outln!("    … and {} more", pending.len() - SHOWN);
    }
    if pending.is_empty() {
        outln!("  next: ome-pyramid finalize {}", path.display());
    } else {
        outln!(
            "  next: ome-pyramid part {} INDEX for each part not done, then ome-pyramid finalize {}",
            path.display(),
            path.display()
        );
    }
}
