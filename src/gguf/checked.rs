//! The proof that a model passed every check: a [`CheckedModel`] can only be
//! made by [`check_model`], so code that takes one (the engine's loader)
//! knows llama.cpp will get nothing olm refuses. It owns the first part's
//! header and the paths of all parts, in the order llama.cpp loads them.

use std::path::{Path, PathBuf};

use super::{parse, split, validate, GgufError, GgufFile};

/// A model file (and, for a split model, all its parts) that passed
/// [`check_model`].
#[derive(Clone, Debug)]
pub struct CheckedModel {
    path: PathBuf,
    header: GgufFile,
    parts: Vec<PathBuf>,
}

impl CheckedModel {
    /// The path that was checked: the model, or the first part of a split one.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The (first part's) header, metadata and tensor table.
    pub fn header(&self) -> &GgufFile {
        &self.header
    }

    /// Every file of the model in load order: `[path]` for a model in one
    /// file, all `split.count` parts for a split one.
    pub fn parts(&self) -> &[PathBuf] {
        &self.parts
    }

    /// The header, for callers that need nothing else.
    pub fn into_header(self) -> GgufFile {
        self.header
    }
}

/// Checks the model at `path` as [`super::inspect`] describes and wraps it
/// in the proof type.
pub fn check_model(path: &Path) -> Result<CheckedModel, GgufError> {
    let (file, length) = split::open_regular(path)?;
    let header = parse(file, length)?;
    split::check_is_first_part(path, &header)?;
    validate::check_runnable(&header)?;
    let parts = split::check_parts(path, &header)?;
    validate::check_tensor_set(&header, &parts.tensors)?;
    Ok(CheckedModel {
        path: path.to_owned(),
        header,
        parts: parts.paths,
    })
}
