//! The build record: every setting that decides the output's bytes, and a fingerprint of
//! the input's data. `--resume` continues only a build whose record matches, so a resumed
//! output equals an uninterrupted one.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{JournalError, io};

/// The build record's name inside OUTPUT.
pub const RECORD_FILE: &str = ".ome-pyramid-build.json";

/// The record key that holds the input fingerprint.
pub const INPUT_DATA_KEY: &str = "input_data";

/// The record key that holds the backend's description as the metadata gives it (with
/// `auto`'s reason): a resumed `auto` build writes it again rather than measuring anew, so
/// its metadata equals the uninterrupted build's. Not compared: `backend` is.
pub const BACKEND_DESCRIPTION_KEY: &str = "backend_description";

/// What the input's level-0 files looked like when the build started: a change in any
/// file's size or modification time changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFingerprint {
    /// Regular files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// A digest of every file's relative path, size and modification time.
    pub digest: u64,
}

/// The order differing settings are listed in, so a mismatch names first the option that
/// was probably changed rather than what follows from it (`--levels` changes the factors
/// too, `--scale` the level count). Keys not listed come after, in name order.
const KEY_ORDER: &[&str] = &[
    "software",
    "input",
    "input_array",
    "input_metadata",
    "method",
    "chunks",
    "scale",
    "translation",
    "axes",
    "levels",
    "factors",
    "compressor",
];

/// Writes the build record.
///
/// # Errors
/// [`JournalError::Io`].
pub fn write_record(output: &Path, record: &Value) -> Result<(), JournalError> {
    let path = output.join(RECORD_FILE);
    let text = serde_json::to_string_pretty(record).expect("JSON values serialise");
    fs::write(&path, text).map_err(io("cannot write", &path))
}

/// The backend an interrupted build recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedBackend {
    /// `cpu`, or the GPU's description: what a resumed build's record must match.
    pub kind: String,
    /// What the metadata says of it ([`BACKEND_DESCRIPTION_KEY`]).
    pub description: String,
}

/// The backend an interrupted build recorded; `None` without a readable record or where it
/// names none (a partitioned build).
#[must_use]
pub fn recorded_backend(output: &Path) -> Option<RecordedBackend> {
    let text = fs::read_to_string(output.join(RECORD_FILE)).ok()?;
    let record: Value = serde_json::from_str(&text).ok()?;
    let text_of = |key: &str| record.get(key)?.as_str().map(str::to_string);
    Some(RecordedBackend {
        kind: text_of("backend")?,
        description: text_of(BACKEND_DESCRIPTION_KEY)?,
    })
}

/// Checks that a resumed build's settings and input equal the interrupted build's.
///
/// # Errors
/// [`JournalError::NothingToResume`] without a record, [`JournalError::AlreadyComplete`]
/// for a finished output, [`JournalError::SettingsDiffer`] naming the first differing
/// setting with its old and new values, [`JournalError::InputChanged`] when the input's
/// data changed since.
pub fn check_record(output: &Path, record: &Value) -> Result<(), JournalError> {
    let path = output.join(RECORD_FILE);
    let Ok(text) = fs::read_to_string(&path) else {
        return Err(
            if output.join(".zattrs").is_file() || output.join("zarr.json").is_file() {
                JournalError::AlreadyComplete(output.to_path_buf())
            } else {
                JournalError::NothingToResume(output.to_path_buf())
            },
        );
    };
    let before: Value = serde_json::from_str(&text).map_err(|_| JournalError::NothingToResume(output.to_path_buf()))?;
    let (Some(old), Some(new)) = (before.as_object(), record.as_object()) else {
        return Err(JournalError::NothingToResume(output.to_path_buf()));
    };
    let all: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let rank = |key: &str| KEY_ORDER.iter().position(|k| *k == key).unwrap_or(KEY_ORDER.len());
    let mut keys: Vec<&String> = all
        .into_iter()
        .filter(|k| ![INPUT_DATA_KEY, BACKEND_DESCRIPTION_KEY].contains(&k.as_str()))
        .collect();
    keys.sort_by_key(|k| rank(k));
    let differences: Vec<(String, String, String)> = keys
        .into_iter()
        .filter(|key| old.get(key.as_str()) != new.get(key.as_str()))
        .map(|key| (key.clone(), show(old.get(key.as_str())), show(new.get(key.as_str()))))
        .collect();
    if !differences.is_empty() {
        return Err(JournalError::SettingsDiffer {
            path: output.to_path_buf(),
            differences,
        });
    }
    let fingerprint = |v: Option<&Value>| v.and_then(|v| serde_json::from_value::<InputFingerprint>(v.clone()).ok());
    let (was, is) = (
        fingerprint(old.get(INPUT_DATA_KEY)),
        fingerprint(new.get(INPUT_DATA_KEY)),
    );
    if was != is {
        let detail = match (was, is) {
            (Some(w), Some(i)) if (w.files, w.bytes) != (i.files, i.bytes) => format!(
                "it held {} files of {} bytes, now {} files of {} bytes",
                w.files, w.bytes, i.files, i.bytes
            ),
            (Some(_), Some(_)) => "files were rewritten since (same count and size, other modification times)".into(),
            _ => "no fingerprint of it was recorded".into(),
        };
        return Err(JournalError::InputChanged {
            path: output.to_path_buf(),
            input: new
                .get("input")
                .map_or_else(|| "?".into(), |v| v.as_str().unwrap_or("?").to_string()),
            detail,
        });
    }
    Ok(())
}

/// `a was 1, now 2; b was …` for the first three differences (and how many more).
#[must_use]
pub fn describe_differences(differences: &[(String, String, String)]) -> String {
    const SHOWN: usize = 3;
    let mut text = differences
        .iter()
        .take(SHOWN)
        .map(|(key, before, now)| format!("{key} was {before}, now {now}"))
        .collect::<Vec<_>>()
        .join("; ");
    if differences.len() > SHOWN {
        text.push_str(&format!("; and {} more", differences.len() - SHOWN));
    }
    text
}

/// A recorded value for a message: compact JSON, shortened when long.
fn show(value: Option<&Value>) -> String {
    const LIMIT: usize = 160;
    let Some(value) = value else {
        return "unset".into();
    };
    let text = value.to_string();
    if text.chars().count() <= LIMIT {
        text
    } else {
        let cut: String = text.chars().take(LIMIT).collect();
        format!("{cut}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_must_match() {
        let dir = tempfile::TempDir::new().unwrap();
        let record = json!({"method": "mean", "levels": 3});
        assert!(matches!(
            check_record(dir.path(), &record),
            Err(JournalError::NothingToResume(_))
        ));
        write_record(dir.path(), &record).unwrap();
        check_record(dir.path(), &record).unwrap();
        let other = json!({"method": "gaussian", "levels": 3});
        let err = check_record(dir.path(), &other).unwrap_err();
        assert!(
            err.to_string().contains("method was \"mean\", now \"gaussian\""),
            "{err}"
        );
    }

    #[test]
    fn the_backend_must_match_but_not_how_auto_described_it() {
        let dir = tempfile::TempDir::new().unwrap();
        let record = |kind: &str, description: &str| json!({"backend": kind, BACKEND_DESCRIPTION_KEY: description});
        write_record(
            dir.path(),
            &record("cpu", "cpu, 2 threads; auto: the CPU measured faster"),
        )
        .unwrap();
        assert_eq!(
            recorded_backend(dir.path()),
            Some(RecordedBackend {
                kind: "cpu".into(),
                description: "cpu, 2 threads; auto: the CPU measured faster".into()
            })
        );
        check_record(
            dir.path(),
            &record("cpu", "cpu, 4 threads; auto: no hardware GPU adapter"),
        )
        .unwrap();
        let err = check_record(dir.path(), &record("gpu: A100", "gpu: A100")).unwrap_err();
        assert!(err.to_string().contains("backend was \"cpu\""), "{err}");
    }

    #[test]
    fn long_values_are_shortened() {
        let long = json!((0..200).collect::<Vec<u32>>());
        let text = show(Some(&long));
        assert!(text.chars().count() <= 161 && text.ends_with('…'), "{text}");
    }

    #[test]
    fn a_changed_input_is_named() {
        let dir = tempfile::TempDir::new().unwrap();
        let print = |files, digest| InputFingerprint {
            files,
            bytes: 100,
            digest,
        };
        let record = |f: InputFingerprint| json!({"input": "/data/in.zarr", "method": "mean", INPUT_DATA_KEY: f});
        write_record(dir.path(), &record(print(4, 1))).unwrap();
        let err = check_record(dir.path(), &record(print(4, 2))).unwrap_err();
        assert!(matches!(err, JournalError::InputChanged { .. }), "{err:?}");
        assert!(err.to_string().contains("/data/in.zarr"), "{err}");
        assert!(err.to_string().contains("other modification times"), "{err}");
        let err = check_record(dir.path(), &record(print(5, 1))).unwrap_err();
        assert!(err.to_string().contains("held 4 files"), "{err}");
    }
}
