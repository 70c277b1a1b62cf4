//! The viewer test in CI (issue 17, item 5): the demo output and a multi-channel image open
//! in vizarr in headless Chromium, served from 127.0.0.1, and render (lit, non-flat pixels
//! at fit, zoomed in and zoomed out), with at least two pyramid levels requested and no
//! error logged; see `tests/viewer/README.md`. Needs node, npm and Debian's `chromium`
//! (`.ci/run` installs them); under `CI=true` their absence is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

const TEST: &str = "vizarr_renders_the_demo_and_a_multichannel_image";

fn viewer_ready() -> bool {
    let found = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let chromium = [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/lib/chromium/chromium",
    ]
    .iter()
    .any(|p| Path::new(p).exists())
        || std::env::var_os("CHROMIUM").is_some();
    let ready = found("node") && found("npm") && chromium;
    if !ready {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "CI=true but node, npm or chromium is missing (apt-get install chromium nodejs npm)"
        );
        common::skip(
            TEST,
            "node, npm or chromium not found (apt-get install chromium nodejs npm)",
        );
    }
    ready
}

/// Runs `tests/viewer/run.sh` on `image`; fails the test with the viewer's own words.
fn open_in_vizarr(image: &Path, shots: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/viewer/run.sh");
    let out = Command::new("bash").arg(script).arg(image).arg(shots).output().unwrap();
    let summary = common::stdout(&out);
    assert!(
        out.status.success(),
        "vizarr did not render `{}` (screenshots in {}):\n{summary}\n{}",
        image.display(),
        shots.display(),
        common::stderr(&out)
    );
    eprintln!("vizarr rendered {}: {summary}", image.display());
}

fn ome_pyramid(args: &[&str]) {
    let out = common::run(args);
    assert!(out.status.success(), "{args:?}: {}", common::stderr(&out));
}

#[test]
fn vizarr_renders_the_demo_and_a_multichannel_image() {
    if !viewer_ready() {
        return;
    }
    let dir = TempDir::new().unwrap();
    let path = |name: &str| -> PathBuf { dir.path().join(name) };
    // The demo as the README runs it, with z kept at every level: vizarr indexes every
    // level with the level-0 z plane (README, "Which viewers read which pyramid").
    let demo = path("demo.ome.zarr");
    ome_pyramid(&["demo", demo.to_str().unwrap(), "--factors", "xy", "-q"]);
    open_in_vizarr(&demo, &path("shots-demo"));

    // Three channels, each with its own colour and window from the omero block.
    let input = path("channels.zarr");
    ome_pyramid(&[
        "synth",
        input.to_str().unwrap(),
        "--size",
        "3,8,1024,1024",
        "--chunks",
        "1,8,256,256",
        "-q",
    ]);
    let channels = path("channels.ome.zarr");
    ome_pyramid(&[
        "build",
        input.to_str().unwrap(),
        channels.to_str().unwrap(),
        "--axes",
        "czyx",
        "--factors",
        "xy",
        "-q",
    ]);
    open_in_vizarr(&channels, &path("shots-channels"));
}
