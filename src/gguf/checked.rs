//! The proof that a model file passed olm's check: the engine loads only a
//! [`CheckedModel`], and [`check_model`] is the only way to make one, so
//! "validate before llama.cpp sees it" cannot be forgotten.

use std::path::{Path, PathBuf};

use super::{inspect, GgufError, GgufFile};

/// A model file (and, for a split model, its parts) that [`inspect`] accepted.
#[derive(Debug, Clone)]
pub struct CheckedModel {
    path: PathBuf,
    header: GgufFile,
    parts: Vec<PathBuf>,
}

impl CheckedModel {
    /// The file to load: the model, or the first part of a split set.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first file's header, metadata and tensor table.
    pub fn header(&self) -> &GgufFile {
        &self.header
    }

    /// Every file of the model in load order (one for a model in one file).
    pub fn parts(&self) -> &[PathBuf] {
        &self.parts
    }
}

/// Check the model at `path` with [`inspect`].
pub fn check_model(path: &Path) -> Result<CheckedModel, GgufError> {
    let header = inspect(path)?;
    Ok(CheckedModel {
        path: path.to_owned(),
        header,
        parts: vec![path.to_owned()],
    })
}
