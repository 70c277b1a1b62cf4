//! Faults while running: corrupt, truncated and missing chunks, failing reads and writes
//! (through a store wrapper), a locked output, interruptions (SIGKILL, Ctrl-C) and
//! `--resume`. In every case the input is unchanged and no `.zattrs` claims levels that
//! are not complete.

mod common;

use common::snapshot;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ome_pyramid::store::{ReadStorage, WriteStorage};
use ome_pyramid::synthetic;
use ome_pyramid::{BuildError, PyramidBuilder, StoreError};
use tempfile::TempDir;
use zarrs::storage::byte_range::ByteRangeIterator;
use zarrs::storage::{
    Bytes, MaybeBytes, MaybeBytesIterator, OffsetBytesIterator, ReadableStorageTraits, StorageError, StoreKey,
    StorePrefix, WritableStorageTraits,
};

/// A store that forwards to another and fails the reads of keys containing `fail_reads_of`,
/// or every write after the first `writes_allowed`.
struct FaultyStore<S: ?Sized> {
    inner: Arc<S>,
    fail_reads_of: Option<String>,
    writes_allowed: Option<u64>,
    writes: AtomicU64,
}

impl<S: ?Sized> FaultyStore<S> {
    fn injected(what: &str) -> StorageError {
        StorageError::IOError(Arc::new(std::io::Error::other(format!("injected fault: {what}"))))
    }
}

impl<S: ?Sized + ReadableStorageTraits> ReadableStorageTraits for FaultyStore<S> {
    fn get_partial_many<'a>(
        &'a self,
        key: &StoreKey,
        byte_ranges: ByteRangeIterator<'a>,
    ) -> Result<MaybeBytesIterator<'a>, StorageError> {
        if self.fail_reads_of.as_deref().is_some_and(|k| key.as_str().contains(k)) {
            return Err(Self::injected("read"));
        }
        self.inner.get_partial_many(key, byte_ranges)
    }
    fn size_key(&self, key: &StoreKey) -> Result<Option<u64>, StorageError> {
        self.inner.size_key(key)
    }
    fn supports_get_partial(&self) -> bool {
        self.inner.supports_get_partial()
    }
}

impl<S: ?Sized + ReadableStorageTraits + WritableStorageTraits> WritableStorageTraits for FaultyStore<S> {
    fn set(&self, key: &StoreKey, value: Bytes) -> Result<(), StorageError> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst);
        if self.writes_allowed.is_some_and(|allowed| n >= allowed) {
            return Err(Self::injected("write (disk full)"));
        }
        self.inner.set(key, value)
    }
    fn set_partial_many(&self, key: &StoreKey, offset_values: OffsetBytesIterator) -> Result<(), StorageError> {
        self.inner.set_partial_many(key, offset_values)
    }
    fn erase(&self, key: &StoreKey) -> Result<(), StorageError> {
        self.inner.erase(key)
    }
    fn erase_prefix(&self, prefix: &StorePrefix) -> Result<(), StorageError> {
        self.inner.erase_prefix(prefix)
    }
    fn supports_set_partial(&self) -> bool {
        self.inner.supports_set_partial()
    }
}

// Silence "unused" for the alias the trait signatures name.
#[allow(dead_code)]
type Unused = MaybeBytes;

fn input(dir: &Path, shape: &[u64], chunks: &[u64]) -> PathBuf {
    let path = dir.join("in.zarr");
    common::u16_input(&path, shape, chunks, 1);
    path
}

fn build_cmd(args: &[&str]) -> Command {
    common::build_command(args)
}

#[test]
fn a_corrupt_chunk_fails_with_exit_1_naming_it() {
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[16, 32, 32], &[8, 16, 16]);
    std::fs::write(input.join("1/0/1"), b"this is not zstd").unwrap();
    let before = snapshot(&input);
    let output = dir.path().join("out.zarr");
    let out = build_cmd(&[input.to_str().unwrap(), output.to_str().unwrap()])
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read chunk `1/0/1`"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{err}");
    assert!(!output.join(".zattrs").exists(), "no metadata after a failed run");
    assert_eq!(before, snapshot(&input));
}

#[test]
fn a_truncated_chunk_fails_with_exit_1() {
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[16, 32, 32], &[8, 16, 16]);
    let chunk = input.join("0/1/1");
    let bytes = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
    let output = dir.path().join("out.zarr");
    let out = build_cmd(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--method",
        "gaussian",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("`0/1/1`"), "{}", common::stderr(&out));
    assert!(!output.join(".zattrs").exists());
}

#[test]
fn missing_chunks_read_as_the_fill_value() {
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[16, 32, 32], &[8, 16, 16]);
    std::fs::remove_file(input.join("1/1/0")).unwrap();
    let output = dir.path().join("out.zarr");
    let out = build_cmd(&[input.to_str().unwrap(), output.to_str().unwrap(), "--levels", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let (_, level1) = synthetic::read_array(&output, "/1").unwrap();
    let ome_pyramid::TileData::U16(values) = level1 else {
        panic!()
    };
    // Level 1 is 8×16×16; the missing chunk covers z 4..8, y 8..16, x 0..8 of it.
    for z in 4..8 {
        for y in 8..16 {
            for x in 0..8 {
                assert_eq!(values[z * 256 + y * 16 + x], 0);
            }
        }
    }
    assert!(values.iter().any(|&v| v != 0));
}

#[test]
fn a_failing_read_ends_the_build_with_a_run_time_error() {
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[16, 32, 32], &[8, 16, 16]);
    let output = dir.path().join("out.zarr");
    let result = PyramidBuilder::new(&input, &output)
        .input_store_layer(|inner: ReadStorage| -> ReadStorage {
            Arc::new(FaultyStore {
                inner,
                fail_reads_of: Some("1/1/1".into()),
                writes_allowed: None,
                writes: AtomicU64::new(0),
            })
        })
        .build();
    let err = result.unwrap_err();
    assert!(!err.is_invalid_input(), "{err}");
    assert!(
        matches!(&err, BuildError::Store(StoreError::ReadChunk { key, .. }) if key == "1/1/1"),
        "{err:?}"
    );
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ");
    assert!(chain.contains("injected fault: read"), "{chain}");
    assert!(!output.join(".zattrs").exists());
}

#[test]
fn a_failing_write_ends_the_build_without_metadata() {
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[16, 32, 32], &[8, 16, 16]);
    for allowed in [0, 3, 9] {
        let output = dir.path().join(format!("out-{allowed}.zarr"));
        let result = PyramidBuilder::new(&input, &output)
            .chunks(vec![8, 8, 8])
            .output_store_layer(move |inner: WriteStorage| -> WriteStorage {
                Arc::new(FaultyStore {
                    inner,
                    fail_reads_of: None,
                    writes_allowed: Some(allowed),
                    writes: AtomicU64::new(0),
                })
            })
            .build();
        let err = result.unwrap_err();
        assert!(
            matches!(err, BuildError::Store(StoreError::WriteChunk { .. })),
            "{err:?}"
        );
        assert!(!err.is_invalid_input());
        assert!(!output.join(".zattrs").exists());
        // The failed run can be resumed once the disk has room again.
        let report = PyramidBuilder::new(&input, &output)
            .chunks(vec![8, 8, 8])
            .resume(true)
            .build()
            .unwrap();
        assert_eq!(report.levels.len(), 3);
        assert!(output.join(".zattrs").exists());
    }
}

#[test]
fn a_second_build_cannot_write_into_a_locked_output() {
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[8, 16, 16], &[8, 16, 16]);
    let output = dir.path().join("out.zarr");
    std::fs::create_dir(&output).unwrap();
    std::fs::write(output.join(".zgroup"), "{\"zarr_format\": 2}").unwrap();
    // This test process holds the lock, as a running build does.
    let _lock = ome_pyramid::journal::OutputLock::acquire(&output).unwrap();
    for extra in [&["--overwrite"][..], &["--resume"][..]] {
        let mut args = vec![input.to_str().unwrap(), output.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = build_cmd(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
        assert!(
            common::stderr(&out).contains("being written by another ome-pyramid process"),
            "{}",
            common::stderr(&out)
        );
        assert!(
            output.join(".zgroup").exists(),
            "{extra:?} left the locked output alone"
        );
    }
}

/// Builds `input` into `output` (gaussian, two threads) with a pause per task, sends
/// `signal` after `after`; see [`common::interrupt_build`].
fn interrupt(input: &Path, output: &Path, after: Duration, signal: &str) -> (bool, std::process::Output) {
    common::interrupt_build(
        &[
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--method",
            "gaussian",
            "--threads",
            "2",
        ],
        250,
        after,
        signal,
    )
}

#[test]
fn killed_builds_leave_honest_metadata_and_resume_to_identical_output() {
    let dir = TempDir::new().unwrap();
    // 8 tasks in the first pass (one per level-1 chunk), then one for the levels above.
    let input = input(dir.path(), &[96, 512, 512], &[32, 128, 128]);
    let clean = dir.path().join("clean.zarr");
    let out = build_cmd(&[input.to_str().unwrap(), clean.to_str().unwrap(), "--method", "gaussian"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let expected = snapshot(&clean);
    assert!(
        expected.keys().all(|k| !k.to_string_lossy().contains(".ome-pyramid")),
        "no bookkeeping files remain"
    );
    let mut interrupted_runs = 0;
    for (i, millis) in [150u64, 700, 1300, 6000].into_iter().enumerate() {
        let output = dir.path().join(format!("killed-{i}.zarr"));
        let (killed, _) = interrupt(&input, &output, Duration::from_millis(millis), "-KILL");
        if !killed {
            assert_eq!(snapshot(&output), expected, "finished before the kill at {millis} ms");
            continue;
        }
        interrupted_runs += 1;
        // Honest: no multiscales metadata for a build that did not finish.
        assert!(
            !output.join(".zattrs").exists(),
            "killed at {millis} ms but .zattrs exists"
        );
        let out = build_cmd(&[
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--method",
            "gaussian",
            "--resume",
        ])
        .output()
        .unwrap();
        assert!(
            out.status.success(),
            "resume after {millis} ms: {}",
            common::stderr(&out)
        );
        assert_eq!(snapshot(&output), expected, "resumed after a kill at {millis} ms");
    }
    assert!(
        interrupted_runs >= 2,
        "at least two builds were killed part-way (got {interrupted_runs})"
    );
}

/// A resumed `auto` build writes the backend entry the interrupted build chose, with the
/// measurements that decided it, rather than timing the backends again: its metadata is
/// what the uninterrupted build's would have been.
#[test]
fn a_resumed_auto_build_describes_its_backend_as_the_interrupted_build_measured_it() {
    if common::gpu_or_skip("a_resumed_auto_build_describes_its_backend_as_the_interrupted_build_measured_it").is_none()
    {
        return;
    }
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[32, 256, 256], &[16, 64, 64]);
    let output = dir.path().join("out.zarr");
    // `auto` times the CPU against lavapipe however small the build.
    let auto_build = |extra: &[&str]| {
        let mut args = vec![input.to_str().unwrap(), output.to_str().unwrap(), "--method", "mean"];
        args.extend_from_slice(extra);
        let mut command = build_cmd(&args);
        command
            .env("OME_PYRAMID_AUTO_SOFTWARE_GPU", "1")
            .env("OME_PYRAMID_AUTO_MIN_SECONDS", "0");
        command
    };
    // Killed once the record is written, while its tasks are held back.
    let record = output.join(ome_pyramid::journal::RECORD_FILE);
    let child = auto_build(&["--threads", "1"])
        .env("OME_PYRAMID_TEST_TASK_DELAY_MS", "2000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !record.is_file() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status()
        .unwrap();
    let killed = common::wait_at_most(child, Duration::from_secs(30), "the killed build");
    assert!(!killed.status.success(), "killed before its first task was done");
    assert!(!output.join(".zattrs").exists());
    let recorded = common::read_json(&record)["backend_description"]
        .as_str()
        .expect("the record holds the backend's description")
        .to_string();
    assert!(recorded.contains("measured faster"), "{recorded}");
    let resumed = auto_build(&["--resume"]).output().unwrap();
    assert!(resumed.status.success(), "{}", common::stderr(&resumed));
    assert!(
        common::stderr(&resumed).contains("resuming with the backend the interrupted build recorded"),
        "{}",
        common::stderr(&resumed)
    );
    assert_eq!(
        common::multiscale(&output)["metadata"]["backend"].as_str(),
        Some(recorded.as_str()),
        "the metadata says what the interrupted build measured"
    );
}

#[test]
fn ctrl_c_stops_cleanly_and_prints_the_resume_command() {
    let dir = TempDir::new().unwrap();
    // 8 tasks in the first pass (one per level-1 chunk), then one for the levels above.
    let input = input(dir.path(), &[96, 512, 512], &[32, 128, 128]);
    let output = dir.path().join("out.zarr");
    let (signalled, out) = interrupt(&input, &output, Duration::from_millis(400), "-INT");
    assert!(signalled);
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the build was interrupted"), "{err}");
    assert!(err.contains("--resume"), "{err}");
    assert!(!output.join(".zattrs").exists());
    assert!(
        !output.join(ome_pyramid::journal::LOCK_FILE).exists(),
        "the lock is released"
    );
    // Resuming with different settings is refused; with the same ones it completes.
    let other = build_cmd(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--method",
        "mean",
        "--resume",
    ])
    .output()
    .unwrap();
    assert_eq!(other.status.code(), Some(2));
    assert!(
        common::stderr(&other).contains("cannot be resumed with these settings: method"),
        "{}",
        common::stderr(&other)
    );
    let done = build_cmd(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--method",
        "gaussian",
        "--resume",
    ])
    .output()
    .unwrap();
    assert!(done.status.success(), "{}", common::stderr(&done));
    let clean = dir.path().join("clean.zarr");
    assert!(
        build_cmd(&[input.to_str().unwrap(), clean.to_str().unwrap(), "--method", "gaussian"])
            .output()
            .unwrap()
            .status
            .success()
    );
    assert_eq!(snapshot(&output), snapshot(&clean));
    // A complete output has nothing to resume.
    let again = build_cmd(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--method",
        "gaussian",
        "--resume",
    ])
    .output()
    .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(
        common::stderr(&again).contains("is complete"),
        "{}",
        common::stderr(&again)
    );
}

/// The arguments of a gaussian build of `input` into `output` plus `extra`.
fn gaussian_args<'a>(input: &'a Path, output: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--method",
        "gaussian",
    ];
    args.extend_from_slice(extra);
    args
}

/// A clean gaussian build of `input` next to it, as the reference for resumed builds.
fn clean_build(input: &Path, dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let clean = dir.join("clean.zarr");
    let out = build_cmd(&gaussian_args(input, &clean, &[])).output().unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    snapshot(&clean)
}

/// Kills a gaussian build of `input` into `output` with SIGKILL part-way (retrying later
/// kill times until one lands before the end).
fn kill_part_way(input: &Path, output: &Path) {
    for millis in [700u64, 400, 150] {
        let (killed, _) = interrupt(input, output, Duration::from_millis(millis), "-KILL");
        if killed {
            return;
        }
        std::fs::remove_dir_all(output).unwrap();
    }
    panic!("every build finished before it could be killed");
}

/// `rm -rf dir` while a build writes into it: a file the build makes in a directory after
/// the removal listed it leaves that directory not empty, so the removal is repeated until
/// the directory is gone, as a user would repeat it.
fn remove_while_written(dir: &Path) {
    for _ in 0..100 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(_) if !dir.exists() => return,
            // A file made after its directory was listed, or renamed away before its turn.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::NotFound
                ) =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("removing {}: {e}", dir.display()),
        }
    }
    panic!("{} could not be removed while the build wrote into it", dir.display());
}

#[test]
fn output_deleted_during_a_build_fails_without_metadata() {
    // Issue 16 item 3: `rm -rf OUTPUT` mid-run used to end in "Built 5 levels", exit 0.
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[96, 512, 512], &[32, 128, 128]);
    let output = dir.path().join("out.zarr");
    let child = build_cmd(&gaussian_args(&input, &output, &["--threads", "2"]))
        .env("OME_PYRAMID_TEST_TASK_DELAY_MS", "250")
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    remove_while_written(&output);
    let out = common::wait_at_most(child, Duration::from_secs(120), "build after its output was deleted");
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("changed during the build"), "{err}");
    assert!(!err.contains("Built"), "{err}");
    assert!(
        !output.join(".zattrs").exists(),
        "no metadata claims the deleted levels"
    );
}

#[test]
fn resume_refuses_a_changed_input() {
    // Issue 16 item 4: rewriting the input between the interruption and the resume left
    // stale voxels in the output.
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[96, 512, 512], &[32, 128, 128]);
    let output = dir.path().join("out.zarr");
    kill_part_way(&input, &output);
    // The same metadata, other data.
    std::fs::remove_dir_all(&input).unwrap();
    common::u16_input(&input, &[96, 512, 512], &[32, 128, 128], 2);
    let out = build_cmd(&gaussian_args(&input, &output, &["--resume"]))
        .output()
        .unwrap();
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("changed since the interrupted build"), "{err}");
    assert!(err.contains(input.to_str().unwrap()), "names the input: {err}");
    assert!(!output.join(".zattrs").exists());
}

#[test]
fn resume_redoes_tasks_whose_chunks_were_deleted_or_forged() {
    // Issue 16 item 5: resume trusted the journal: deleted chunk files and forged `done`
    // lines gave exit 0 and chunks of zeros.
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[96, 512, 512], &[32, 128, 128]);
    let expected = clean_build(&input, dir.path());
    let journal_path = |output: &Path| output.join(ome_pyramid::journal::JOURNAL_FILE);

    // Finished chunk files deleted after the kill.
    let deleted = dir.path().join("deleted.zarr");
    kill_part_way(&input, &deleted);
    assert!(
        std::fs::read_to_string(journal_path(&deleted))
            .unwrap()
            .contains("\ndone "),
        "some tasks finished before the kill"
    );
    for level in ["0", "1"] {
        let level_dir = deleted.join(level);
        if level_dir.exists() {
            for entry in std::fs::read_dir(&level_dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    std::fs::remove_dir_all(path).unwrap();
                }
            }
        }
    }
    let out = build_cmd(&gaussian_args(&input, &deleted, &["--resume"]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(
        common::stderr(&out).contains("are done again"),
        "{}",
        common::stderr(&out)
    );
    assert_eq!(snapshot(&deleted), expected, "resumed after chunk files were deleted");

    // `done` lines appended by hand for every task, as the old format wrote them.
    let forged = dir.path().join("forged.zarr");
    kill_part_way(&input, &forged);
    let mut journal = std::fs::OpenOptions::new()
        .append(true)
        .open(journal_path(&forged))
        .unwrap();
    use std::io::Write;
    for task in 0..16 {
        writeln!(journal, "done 0 {task}").unwrap();
        writeln!(journal, "done 0 {task} #0123456789abcdef").unwrap();
    }
    drop(journal);
    let out = build_cmd(&gaussian_args(&input, &forged, &["--resume"]))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert_eq!(snapshot(&forged), expected, "resumed after forged journal lines");
}

#[test]
fn a_stale_lock_naming_a_live_pid_is_taken_over() {
    // Issue 16 item 13: a build killed as PID 1 in a container left a lock that a live
    // PID 1 (the next container's, or init) kept forever.
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[96, 512, 512], &[32, 128, 128]);
    let expected = clean_build(&input, dir.path());
    let output = dir.path().join("out.zarr");
    kill_part_way(&input, &output);
    let lock = output.join(ome_pyramid::journal::LOCK_FILE);
    assert!(lock.exists(), "the killed build left its lock file");
    // PID 1 is alive on every Linux machine, and so is this test process.
    for holder in [
        "1\n".to_string(),
        format!("{{\"pid\": {}, \"host\": \"elsewhere\"}}", std::process::id()),
    ] {
        std::fs::write(&lock, &holder).unwrap();
        let out = build_cmd(&gaussian_args(&input, &output, &["--resume"]))
            .output()
            .unwrap();
        assert!(out.status.success(), "lock {holder:?}: {}", common::stderr(&out));
        assert_eq!(snapshot(&output), expected);
        // Start the next round from an interrupted build again.
        std::fs::remove_dir_all(&output).unwrap();
        kill_part_way(&input, &output);
    }
}

#[test]
fn a_single_ctrl_c_stops_a_build_that_is_one_task() {
    // Issue 16 item 14: with the whole volume in one task, Ctrl-C printed "stopping" and
    // then finished with exit 0.
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[64, 256, 256], &[32, 64, 64]);
    let output = dir.path().join("out.zarr");
    let args = [input.to_str().unwrap(), output.to_str().unwrap(), "--threads", "2"];
    let (signalled, out) = common::interrupt_build(&args, 1500, Duration::from_millis(500), "-INT");
    let err = common::stderr(&out);
    assert!(signalled, "{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the build was interrupted (0 of 1 tasks"), "{err}");
    assert!(!output.join(".zattrs").exists());
    let resumed = build_cmd(&[args[0], args[1], "--resume"]).output().unwrap();
    assert!(resumed.status.success(), "{}", common::stderr(&resumed));
}

#[test]
fn sigterm_and_sighup_stop_like_ctrl_c() {
    // Issue 16 item 15: SIGTERM (schedulers, `docker stop`) and SIGHUP killed the build at
    // once, with no message and the lock left behind.
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[96, 512, 512], &[32, 128, 128]);
    let expected = clean_build(&input, dir.path());
    for signal in ["-TERM", "-HUP"] {
        let output = dir.path().join(format!("out{signal}.zarr"));
        let (signalled, out) = interrupt(&input, &output, Duration::from_millis(400), signal);
        let err = common::stderr(&out);
        assert!(signalled, "{signal}: {err}");
        assert_eq!(out.status.code(), Some(1), "{signal}: {err}");
        assert!(err.contains("the build was interrupted"), "{signal}: {err}");
        assert!(err.contains("--resume"), "{signal}: {err}");
        assert!(
            !output.join(ome_pyramid::journal::LOCK_FILE).exists(),
            "{signal}: lock released"
        );
        let resumed = build_cmd(&gaussian_args(&input, &output, &["--resume"]))
            .output()
            .unwrap();
        assert!(resumed.status.success(), "{signal}: {}", common::stderr(&resumed));
        assert_eq!(snapshot(&output), expected, "{signal}");
    }
}

#[test]
fn a_fifo_chunk_fails_instead_of_blocking() {
    // Issue 16 item 16: a FIFO named like a chunk made the build block forever.
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[16, 32, 32], &[8, 16, 16]);
    let chunk = input.join("1/0/1");
    std::fs::remove_file(&chunk).unwrap();
    common::make_fifo(&chunk);
    let output = dir.path().join("out.zarr");
    let child = build_cmd(&[input.to_str().unwrap(), output.to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = common::wait_at_most(child, Duration::from_secs(60), "build over a FIFO chunk");
    let err = common::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`1/0/1`") && err.contains("not a regular file"), "{err}");
    assert!(!output.join(".zattrs").exists());
}

#[test]
fn resume_mismatches_name_the_option_and_its_values() {
    // Issue 16 item 17: --chunks, --levels, --factors or --scale mismatches printed a
    // 1.2 KB JSON dump.
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[96, 512, 512], &[32, 128, 128]);
    let output = dir.path().join("out.zarr");
    kill_part_way(&input, &output);
    let cases: [(&[&str], &str); 4] = [
        (&["--chunks", "16,64,64"], "chunks was [32,128,128], now [16,64,64]"),
        (&["--levels", "2"], "levels was 3, now 2"),
        (
            &["--factors", "z=2,y=4,x=4"],
            // Level 1 is 48×128×128: y and x fit their chunk, so only z goes on.
            "factors was [[2,2,2],[2,2,2]], now [[2,4,4],[2,1,1]]",
        ),
        (&["--scale", "z=2"], "scale was [1.0,1.0,1.0], now [2.0,1.0,1.0]"),
    ];
    for (extra, message) in cases {
        let mut args = gaussian_args(&input, &output, &["--resume"]);
        args.extend_from_slice(extra);
        let out = build_cmd(&args).output().unwrap();
        let err = common::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(message), "{extra:?}: expected `{message}` in {err}");
        assert!(err.len() < 600, "{extra:?}: a short message, not a dump: {err}");
    }
}

#[test]
fn a_half_removed_output_can_be_replaced() {
    // Issue 16 item 1: --overwrite removes only an ome-pyramid output, in an order that
    // leaves a killed removal recognisable, so it can still be replaced.
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[16, 32, 32], &[8, 16, 16]);
    let output = dir.path().join("out.zarr");
    let out = build_cmd(&[input.to_str().unwrap(), output.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    // What a removal killed part-way leaves: the lock (removed last), some chunk files of
    // level 0 with its metadata, no group metadata any more.
    std::fs::write(
        output.join(ome_pyramid::journal::LOCK_FILE),
        "{\"pid\": 4294967290, \"host\": \"x\"}",
    )
    .unwrap();
    for name in ["1", "2"] {
        let _ = std::fs::remove_dir_all(output.join(name));
    }
    std::fs::remove_file(output.join(".zattrs")).unwrap();
    std::fs::remove_file(output.join(".zgroup")).unwrap();
    std::fs::remove_dir_all(output.join("0/1")).unwrap();
    let out = build_cmd(&[input.to_str().unwrap(), output.to_str().unwrap(), "--overwrite"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    assert!(output.join(".zattrs").exists());
}

#[test]
fn killed_sharded_builds_never_show_a_torn_shard_and_resume_identically() {
    // Issue 10: SIGKILL at several moments of a sharded 0.5 build, then --resume: every
    // shard under its final name decodes, and the result equals a clean build byte for byte.
    let dir = TempDir::new().unwrap();
    let input = input(dir.path(), &[96, 512, 512], &[32, 128, 128]);
    let args = |output: &Path| -> Vec<String> {
        [
            input.to_str().unwrap(),
            output.to_str().unwrap(),
            "--method",
            "gaussian",
            "--threads",
            "2",
            "--ngff-version",
            "0.5",
            "--shard-size",
            "4MiB",
        ]
        .map(str::to_string)
        .to_vec()
    };
    let clean = dir.path().join("clean.zarr");
    let clean_args = args(&clean);
    let out = build_cmd(&clean_args.iter().map(String::as_str).collect::<Vec<_>>())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", common::stderr(&out));
    let expected = snapshot(&clean);
    assert!(
        expected.keys().any(|k| k.starts_with("0/c")) && expected.keys().all(|k| !k.to_string_lossy().contains("tmp-")),
        "shards and no temporary files"
    );
    let mut interrupted_runs = 0;
    for (i, millis) in [150u64, 600, 1100, 1800, 3000].into_iter().enumerate() {
        let output = dir.path().join(format!("killed-{i}.zarr"));
        let run_args = args(&output);
        let refs: Vec<&str> = run_args.iter().map(String::as_str).collect();
        let (killed, _) = common::interrupt_build(&refs, 250, Duration::from_millis(millis), "-KILL");
        if !killed {
            assert_eq!(snapshot(&output), expected, "finished before the kill at {millis} ms");
            continue;
        }
        interrupted_runs += 1;
        let attributes: serde_json::Value =
            serde_json::from_slice(&std::fs::read(output.join("zarr.json")).unwrap()).unwrap();
        assert!(
            attributes["attributes"].get("ome").is_none(),
            "killed at {millis} ms: no image metadata"
        );
        // Every shard file under its final name is whole: each level reads back.
        for level in 0..4 {
            if output.join(format!("{level}/zarr.json")).exists() {
                synthetic::read_array(&output, &format!("/{level}"))
                    .unwrap_or_else(|e| panic!("killed at {millis} ms: level {level} unreadable: {e}"));
            }
        }
        let mut resume = refs.clone();
        resume.push("--resume");
        let out = build_cmd(&resume).output().unwrap();
        assert!(
            out.status.success(),
            "resume after {millis} ms: {}",
            common::stderr(&out)
        );
        assert_eq!(snapshot(&output), expected, "resumed after a kill at {millis} ms");
    }
    assert!(
        interrupted_runs >= 3,
        "at least three builds were killed part-way ({interrupted_runs})"
    );
}
