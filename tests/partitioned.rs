//! Partitioned builds through the command line (issue 13): `plan`, parts run at once as
//! array tasks of different schedulers, `finalize`; the output equals a single build byte
//! for byte. Also a part killed with SIGKILL and retried, finalize before every part has
//! finished, and the mistakes a user can make.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{json_stdout, run, snapshot, stderr, stdout, subcommand};
use tempfile::TempDir;

// The scheduler variables a part takes its index from, and the index of their first task.
use ome_pyramid::scheduler::INDEX_VARIABLES as SCHEDULERS;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn succeed(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({:?}): {}{}",
        output.status,
        stdout(output),
        stderr(output)
    );
}

/// A `part OUTPUT` command without an index, told its part as array task `part` of
/// scheduler `scheduler` (every other scheduler variable unset).
fn part_as_array_task(output: &Path, part: usize, scheduler: usize) -> Command {
    let mut command = subcommand("part", &[path(output), "-q"]);
    for (variable, _) in SCHEDULERS {
        command.env_remove(variable);
    }
    command.env_remove("SLURM_ARRAY_TASK_MIN");
    let (variable, first) = SCHEDULERS[scheduler % SCHEDULERS.len()];
    command.env(variable, (part as u64 + first).to_string());
    command
}

/// `plan` with `args`, then every part at once as array tasks (started in a shuffled
/// order, each told its index by another scheduler), then `finalize`.
fn partitioned_build(input: &Path, output: &Path, parts: usize, args: &[&str]) {
    let parts_arg = parts.to_string();
    let mut plan_args = vec![path(input), path(output), "--parts", &parts_arg, "-q"];
    plan_args.extend_from_slice(args);
    succeed(&subcommand("plan", &plan_args).output().unwrap(), "plan");
    let mut order: Vec<usize> = (0..parts).collect();
    // A fixed shuffle: the last part first, then every other one.
    order.reverse();
    order.sort_by_key(|i| i % 2);
    let children: Vec<_> = order
        .iter()
        .enumerate()
        .map(|(n, &part)| {
            part_as_array_task(output, part, n)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (child, part) in children.into_iter().zip(order) {
        succeed(&child.wait_with_output().unwrap(), &format!("part {part}"));
    }
    succeed(&run(&["finalize", path(output), "-q"]), "finalize");
}

fn single_build(input: &Path, output: &Path, args: &[&str]) {
    let mut build_args = vec!["build", path(input), path(output), "-q"];
    build_args.extend_from_slice(args);
    succeed(&run(&build_args), "build");
}

/// Every file of both outputs, byte for byte.
fn assert_same_files(single: &Path, partitioned: &Path, what: &str) {
    let (a, b) = (snapshot(single), snapshot(partitioned));
    let names = |s: &std::collections::BTreeMap<PathBuf, Vec<u8>>| s.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "{what}: the files differ");
    for (name, bytes) in &a {
        assert!(bytes == &b[name], "{what}: `{}` differs", name.display());
    }
}

fn input(dir: &Path) -> PathBuf {
    let input = dir.join("in.zarr");
    common::u16_input(&input, &[40, 150, 200], &[8, 32, 32], 7);
    input
}

#[test]
fn partitioned_output_equals_a_single_build_for_every_method_version_and_part_count() {
    let dir = TempDir::new().unwrap();
    let input = input(dir.path());
    let layouts: [(&str, &[&str]); 2] = [
        ("0.4", &["--ngff-version", "0.4"]),
        ("0.5-sharded", &["--ngff-version", "0.5", "--shards", "16,64,64"]),
    ];
    for (layout, layout_args) in layouts {
        for method in ["nearest", "mean", "gaussian", "mode", "min", "max"] {
            let mut args = vec!["--method", method, "--backend", "cpu"];
            args.extend_from_slice(layout_args);
            let single = dir.path().join(format!("{layout}-{method}.ome.zarr"));
            single_build(&input, &single, &args);
            for parts in [1, 3, 8] {
                let output = dir.path().join(format!("{layout}-{method}-{parts}.ome.zarr"));
                partitioned_build(&input, &output, parts, &args);
                assert_same_files(&single, &output, &format!("{layout}, {method}, {parts} parts"));
            }
        }
    }
}

#[test]
fn the_split_is_written_into_the_plan_and_balanced() {
    let dir = TempDir::new().unwrap();
    let input = input(dir.path());
    let output = dir.path().join("out.ome.zarr");
    let out = run(&["plan", path(&input), path(&output), "--parts", "3", "--json"]);
    succeed(&out, "plan");
    let report = json_stdout(&out);
    let plan = &report["plan"];
    let parts = plan["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    // Contiguous ranges covering every block, each with its share of level 0.
    let mut next = 0;
    let mut bytes = Vec::new();
    for part in parts {
        assert_eq!(part["first_block"].as_u64().unwrap(), next, "{plan}");
        next = part["end_block"].as_u64().unwrap();
        bytes.push(part["input_bytes"].as_u64().unwrap());
    }
    assert_eq!(next, plan["blocks"].as_u64().unwrap());
    assert_eq!(bytes.iter().sum::<u64>(), 40 * 150 * 200 * 2, "{plan}");
    let (least, most) = (bytes.iter().min().unwrap(), bytes.iter().max().unwrap());
    assert!(most - least <= most / 2, "unbalanced: {bytes:?}");
    // The output has its level arrays and no image metadata until finalize.
    assert!(output.join("0/.zarray").is_file() && output.join(".zgroup").is_file());
    assert!(!output.join(".zattrs").exists());
    // The plan says what to run next.
    let out = run(&[
        "plan",
        path(&input),
        path(&dir.path().join("other.zarr")),
        "--parts",
        "3",
    ]);
    succeed(&out, "plan");
    let text = stdout(&out);
    assert!(text.contains("part") && text.contains("finalize"), "{text}");
}

#[test]
fn a_part_killed_with_sigkill_is_retried_and_the_result_is_unchanged() {
    let dir = TempDir::new().unwrap();
    let input = dir.path().join("in.zarr");
    common::u16_input(&input, &[32, 256, 256], &[16, 64, 64], 3);
    let single = dir.path().join("single.ome.zarr");
    let args = ["--method", "gaussian", "--backend", "cpu", "--threads", "2"];
    single_build(&input, &single, &args);
    let output = dir.path().join("out.ome.zarr");
    let mut plan_args = vec![path(&input), path(&output), "--parts", "2", "-q"];
    plan_args.extend_from_slice(&args);
    succeed(&subcommand("plan", &plan_args).output().unwrap(), "plan");

    // Part 1 is killed while it runs: on one thread, with a pause of 300 ms before each of
    // its tiles, it runs for more than the 450 ms it is given.
    let (killed, _) = common::interrupt(
        subcommand("part", &[path(&output), "1", "--threads", "1", "-q"]),
        300,
        Duration::from_millis(450),
        "-KILL",
    );
    assert!(killed, "the part finished before it could be killed");
    succeed(&run(&["part", path(&output), "0", "-q"]), "part 0");

    // Finalize refuses, naming part 1, and writes no image metadata.
    let out = run(&["finalize", path(&output)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.contains("1 of 2 parts have not finished") && message.contains("part 1 "),
        "{message}"
    );
    assert!(!message.contains("part 0 "), "{message}");
    assert!(!output.join(".zattrs").exists());

    // The retry (as a scheduler would run it) finishes what is missing.
    let out = run(&["part", path(&output), "1", "--json"]);
    succeed(&out, "part 1 again");
    let report = json_stdout(&out);
    let blocks = report["range"]["end_block"].as_u64().unwrap() - report["range"]["first_block"].as_u64().unwrap();
    assert!(
        report["blocks_done_before"].as_u64().unwrap() < blocks,
        "the killed run finished everything: {report}"
    );
    succeed(&run(&["finalize", path(&output), "-q"]), "finalize");
    assert_same_files(&single, &output, "after a killed part");
}

#[test]
fn finalize_names_parts_that_did_not_run_or_failed_and_a_retry_recovers() {
    let dir = TempDir::new().unwrap();
    let input = input(dir.path());
    let single = dir.path().join("single.ome.zarr");
    single_build(&input, &single, &["--backend", "cpu"]);
    let output = dir.path().join("out.ome.zarr");
    succeed(
        &run(&[
            "plan",
            path(&input),
            path(&output),
            "--parts",
            "3",
            "--backend",
            "cpu",
            "-q",
        ]),
        "plan",
    );
    succeed(&run(&["part", path(&output), "0", "-q"]), "part 0");
    // Part 2 fails: its host's budget is below the engine's minimum.
    let out = run(&["part", path(&output), "2", "--memory", "1MiB"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = run(&["finalize", path(&output)]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let message = stderr(&out);
    assert!(message.contains("2 of 3 parts have not finished"), "{message}");
    assert!(message.contains("part 1 has not run"), "{message}");
    assert!(message.contains("part 2 failed: invalid memory"), "{message}");
    assert!(message.contains("no image metadata was written"), "{message}");
    assert!(!output.join(".zattrs").exists());
    // `info` says where the parts stand and what to run next.
    let out = run(&["info", path(&output)]);
    succeed(&out, "info");
    let text = stdout(&out);
    assert!(text.contains("(partitioned build in progress)"), "{text}");
    assert!(
        text.contains("planned in 3 parts") && text.contains("1 done, 1 failed, 0 unfinished, 1 not run"),
        "{text}"
    );
    assert!(
        text.contains("part 2 failed: invalid memory") && text.contains("ome-pyramid finalize"),
        "{text}"
    );
    let out = run(&["info", path(&output), "--json"]);
    let info = json_stdout(&out);
    let states: Vec<&str> = info["partitioned"]["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["done", "not-run", "failed"], "{info}");
    for part in ["1", "2"] {
        succeed(&run(&["part", path(&output), part, "-q"]), "part");
    }
    succeed(&run(&["finalize", path(&output), "-q"]), "finalize");
    assert_same_files(&single, &output, "after a failed part");
    // A scheduler's late retry of a part has nothing to do; finalize again is refused.
    succeed(&run(&["part", path(&output), "1", "-q"]), "late part");
    let out = run(&["finalize", path(&output)]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is complete"), "{}", stderr(&out));
}

#[test]
fn mistakes_get_clear_errors() {
    let dir = TempDir::new().unwrap();
    let input = input(dir.path());
    let output = dir.path().join("out.ome.zarr");
    let expect = |args: &[&str], code: i32, text: &str| {
        let mut command = Command::new(common::binary());
        command.args(args).env("NO_COLOR", "1");
        for (variable, _) in SCHEDULERS {
            command.env_remove(variable);
        }
        let out = command.output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(text), "{args:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    };
    expect(&["part", path(&output), "0"], 2, "holds no plan of a partitioned build");
    expect(&["finalize", path(&output)], 2, "holds no plan of a partitioned build");
    expect(
        &["plan", path(&input), path(&output), "--parts", "1000"],
        2,
        "use --parts",
    );
    assert!(!output.exists(), "a refused plan created the output");
    expect(&["plan", path(&input), path(&output), "--parts", "0"], 2, "at least 1");
    expect(
        &["plan", path(&input), path(&output), "--parts", "2", "--resume"],
        2,
        "--resume does not apply",
    );
    succeed(
        &run(&["plan", path(&input), path(&output), "--parts", "2", "-q"]),
        "plan",
    );
    expect(&["part", path(&output), "2"], 2, "part 2 is not in the plan");
    expect(&["part", path(&output)], 2, "SLURM_ARRAY_TASK_ID");
    let mut command = part_as_array_task(&output, 0, 4);
    command.env("LSB_JOBINDEX", "0");
    let out = command.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("LSB_JOBINDEX=0 is not a task index (counted from 1)"),
        "{}",
        stderr(&out)
    );
    expect(
        &["build", path(&input), path(&output), "--resume"],
        2,
        "partitioned build made by `ome-pyramid plan`",
    );
    // The plan's output is an ome-pyramid output: --overwrite replaces it.
    succeed(
        &run(&["plan", path(&input), path(&output), "--parts", "2", "--overwrite", "-q"]),
        "plan --overwrite",
    );
}
