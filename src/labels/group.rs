//! An image's `labels` group on disk: reading its list of label images and replacing it,
//! atomically, under a lock so that two `labels` runs on one image cannot lose each
//! other's entry.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::engine::BuildError;
use crate::journal::OutputLock;
use crate::ngff::NgffVersion;
use crate::ngff::label::{label_names, labels_group_attributes};
use crate::store::node::{read_json, write_json_atomically};
use crate::store::{self, NodeKind, StoreError};

/// The `labels` group of an image.
#[derive(Debug, Clone)]
pub(crate) struct LabelsGroup {
    dir: PathBuf,
    version: NgffVersion,
}

impl LabelsGroup {
    /// The `labels` group of the image at `image` (which need not exist yet).
    pub(crate) fn of(image: &Path, version: NgffVersion) -> Self {
        Self {
            dir: image.join("labels"),
            version,
        }
    }

    /// The group's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The attributes the group has now (none when it does not exist).
    fn attributes(&self) -> Result<Map<String, Value>, StoreError> {
        match self.version {
            NgffVersion::V04 => Ok(read_json(&self.dir.join(".zattrs"))?
                .and_then(|v| v.as_object().cloned())
                .unwrap_or_default()),
            NgffVersion::V05 => match store::probe_node(&self.dir) {
                Ok(NodeKind::Group(attributes)) => Ok(attributes),
                Ok(_) => Err(StoreError::InvalidMetadata {
                    path: self.dir.join("zarr.json"),
                    reason: "the `labels` node is an array, not a group".into(),
                }),
                Err(StoreError::NotZarr(_) | StoreError::NotFound(_)) => Ok(Map::new()),
                Err(e) => Err(e),
            },
        }
    }

    /// The label images the group lists.
    ///
    /// # Errors
    /// [`StoreError`] if its metadata cannot be read.
    pub(crate) fn names(&self) -> Result<Vec<String>, StoreError> {
        Ok(label_names(&self.attributes()?))
    }

    /// Changes the list with `edit`, under the group's lock, writing the group metadata
    /// atomically (0.4: `.zgroup` once, then `.zattrs`; 0.5: `zarr.json`).
    ///
    /// # Errors
    /// [`BuildError`] if the lock is held by another run or a file cannot be written.
    pub(crate) fn update(&self, edit: impl FnOnce(&mut Vec<String>)) -> Result<(), BuildError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| StoreError::Io {
            action: "cannot create",
            path: self.dir.clone(),
            source,
        })?;
        let lock = OutputLock::acquire(&self.dir)?;
        let previous = self.attributes()?;
        let mut names = label_names(&previous);
        edit(&mut names);
        let attributes = labels_group_attributes(self.version, &previous, &names);
        match self.version {
            NgffVersion::V04 => {
                let group = self.dir.join(".zgroup");
                if !group.exists() {
                    write_json_atomically(&group, &json!({"zarr_format": 2}))?;
                }
                write_json_atomically(&self.dir.join(".zattrs"), &attributes)?;
            }
            NgffVersion::V05 => {
                let node = json!({"zarr_format": 3, "node_type": "group", "attributes": attributes});
                write_json_atomically(&self.dir.join("zarr.json"), &node)?;
            }
        }
        drop(lock);
        Ok(())
    }
}
