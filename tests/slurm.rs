//! The SLURM recipe of `examples/cluster/` on a real single-node SLURM (issue 13): Debian's
//! `slurm-wlm` and `munge` daemons started by `tests/slurm/run.sh` without systemd, the parts
//! submitted as a job array, `finalize` as a job depending on it, and the output compared
//! with a single build; also finalize without the parts, and a failed task. Skipped where
//! the daemons are not installed, except under `CI=true`, where that fails.

mod common;

use std::process::Command;

/// Runs the script as root: directly, or through `sudo -n` where that works.
fn script_command() -> Command {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slurm/run.sh");
    let binary = common::binary();
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let sudo_works = !is_root
        && Command::new("sudo")
            .args(["-n", "true"])
            .status()
            .is_ok_and(|s| s.success());
    let mut command = if sudo_works {
        let mut sudo = Command::new("sudo");
        sudo.args(["-n", "bash", script]);
        sudo
    } else {
        let mut bash = Command::new("bash");
        bash.arg(script);
        bash
    };
    command.arg(binary);
    command
}

#[test]
fn the_slurm_recipe_runs_on_a_real_slurm_and_equals_a_single_build() {
    let out = script_command().output().expect("bash runs");
    let text = format!("{}{}", common::stdout(&out), common::stderr(&out));
    match out.status.code() {
        Some(0) => assert!(text.contains("ALL PASS"), "{text}"),
        Some(77) if std::env::var("CI").as_deref() != Ok("true") => {
            common::skip("the_slurm_recipe_runs_on_a_real_slurm", text.trim());
        }
        _ => panic!("tests/slurm/run.sh failed ({:?}):\n{text}", out.status),
    }
}
