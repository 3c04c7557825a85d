//! Model references and where their files are.
//!
//! Owns: parsing what the user typed as MODEL and resolving it to a file on
//! disk. Today a reference is a path to a `.gguf` file; store names, catalog
//! aliases and Hugging Face repos come with the model store.
//! Must not touch: llama.cpp, the network, the terminal.

use std::path::{Path, PathBuf};

/// Why a model reference could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("model reference is empty")]
    EmptyReference,
    #[error("no such file: {}", .0.display())]
    NoSuchFile(PathBuf),
    #[error("model '{0}' is not in the store")]
    NotInStore(String),
}

impl StoreError {
    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            StoreError::EmptyReference => Some("give a path to a .gguf file".into()),
            StoreError::NoSuchFile(_) => None,
            StoreError::NotInStore(_) => {
                Some("give the path to a .gguf file, e.g. `olm run ./model.gguf \"hi\"`".into())
            }
        }
    }
}

/// What the user typed as MODEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A file on disk.
    Path(PathBuf),
    /// A name to look up in the store.
    Name(String),
}

impl ModelRef {
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        if text.is_empty() {
            return Err(StoreError::EmptyReference);
        }
        let path = Path::new(text);
        let looks_like_path = text.ends_with(".gguf")
            || text.starts_with('.')
            || text.starts_with('/')
            || text.starts_with('~')
            || path.exists();
        if looks_like_path {
            Ok(ModelRef::Path(path.to_owned()))
        } else {
            Ok(ModelRef::Name(text.to_owned()))
        }
    }

    /// The file this reference names.
    pub fn resolve(&self) -> Result<PathBuf, StoreError> {
        match self {
            ModelRef::Path(path) if path.exists() => Ok(path.clone()),
            ModelRef::Path(path) => Err(StoreError::NoSuchFile(path.clone())),
            ModelRef::Name(name) => Err(StoreError::NotInStore(name.clone())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gguf_suffix_and_relative_paths_are_paths() {
        assert_eq!(ModelRef::parse("x.gguf").unwrap(), ModelRef::Path("x.gguf".into()));
        assert_eq!(ModelRef::parse("./x").unwrap(), ModelRef::Path("./x".into()));
        assert_eq!(ModelRef::parse("/abs/m").unwrap(), ModelRef::Path("/abs/m".into()));
    }

    #[test]
    fn bare_words_are_names() {
        assert_eq!(ModelRef::parse("qwen-7b").unwrap(), ModelRef::Name("qwen-7b".into()));
        assert!(matches!(ModelRef::parse(""), Err(StoreError::EmptyReference)));
    }

    #[test]
    fn missing_files_and_names_do_not_resolve() {
        assert!(matches!(
            ModelRef::parse("/nonexistent/m.gguf").unwrap().resolve(),
            Err(StoreError::NoSuchFile(_))
        ));
        assert!(matches!(
            ModelRef::parse("nothing-here").unwrap().resolve(),
            Err(StoreError::NotInStore(_))
        ));
    }
}
