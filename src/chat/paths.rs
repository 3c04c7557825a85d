//! Where chat keeps its files: the line-editor history in olm's home
//! directory, which the store defines ([`crate::store::olm_home`]).
//! Must not touch the model store's files.

use std::path::PathBuf;

/// olm's data directory: `OLM_HOME` if set and not empty, else the platform
/// data directory (`~/.local/share/olm` on Linux); the store's
/// [`crate::store::olm_home`].
pub fn data_dir() -> Option<PathBuf> {
    Some(crate::store::olm_home())
}

/// The chat history file (`chat_history` in the data directory).
pub fn history_file() -> Option<PathBuf> {
    data_dir().map(|directory| directory.join("chat_history"))
}
