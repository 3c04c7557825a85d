//! Where chat keeps its files: the line-editor history in olm's data
//! directory.
//!
//! `data_dir` is chat's own small copy of "olm's data directory" (`OLM_HOME`,
//! else the platform data directory from the `directories` crate), kept here
//! until `store` offers one; then this should call it. Must not touch the
//! model store's files.

use std::path::PathBuf;

use crate::env;

/// olm's data directory: `OLM_HOME` if set and not empty, else the platform
/// data directory (`~/.local/share/olm` on Linux). `None` when neither is known.
pub fn data_dir() -> Option<PathBuf> {
    match std::env::var_os(env::OLM_HOME) {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home)),
        _ => directories::ProjectDirs::from("", "", "olm")
            .map(|directories| directories.data_dir().to_owned()),
    }
}

/// The chat history file (`chat_history` in the data directory).
pub fn history_file() -> Option<PathBuf> {
    data_dir().map(|directory| directory.join("chat_history"))
}
