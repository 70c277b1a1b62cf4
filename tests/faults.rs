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
use std::time::{Duration, Instant};

use ome_pyramid::store::{ReadStorage, WriteStorage};
use ome_pyramid::synthetic::{self, ArrayFormat, ArraySpec, Codec};
use ome_pyramid::{BuildError, DType, PyramidBuilder, StoreError};
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
    let spec = ArraySpec {
        shape: shape.to_vec(),
        chunks: chunks.to_vec(),
        dtype: DType::U16,
        format: ArrayFormat::V2,
        codec: Codec::Zstd(1),
    };
    synthetic::write_synthetic(&path, &spec, 1).unwrap();
    path
}

fn build_cmd(args: &[&str]) -> Command {
    let mut command = Command::new(common::binary());
    command.arg("build").args(args).env("NO_COLOR", "1");
    command
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
    // This test process is alive: its pid in the lock means "being written".
    std::fs::write(
        output.join(ome_pyramid::journal::LOCK_FILE),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
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

/// Builds `input` into `output` with a pause per task, sends `signal` after `after`, and
/// returns whether the signal ended the process (rather than the build finishing first).
fn interrupt(input: &Path, output: &Path, after: Duration, signal: &str) -> (bool, std::process::Output) {
    let child = build_cmd(&[
        input.to_str().unwrap(),
        output.to_str().unwrap(),
        "--method",
        "gaussian",
        "--threads",
        "2",
    ])
    .env("OME_PYRAMID_TEST_TASK_DELAY_MS", "250")
    .stderr(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let started = Instant::now();
    while started.elapsed() < after {
        std::thread::sleep(Duration::from_millis(5));
    }
    Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    let interrupted = out.status.signal().is_some() || out.status.code() == Some(1);
    (interrupted, out)
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
