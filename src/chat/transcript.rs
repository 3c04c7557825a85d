//! Transcripts: `/save FILE` writes the conversation as markdown (or JSON when
//! FILE ends in `.json`); `/load FILE` reads a JSON transcript back.
//!
//! Owns: both formats and their files (written atomically: temp file in the
//! same directory, then rename). Must not touch: the terminal, the model.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::conversation::{Conversation, ASSISTANT, SYSTEM, USER};
use crate::engine::Message;
use crate::files::{self, ReadError};

/// Largest transcript `/load` reads (a context never holds more).
const MAX_TRANSCRIPT_BYTES: u64 = 64 << 20;

/// The JSON form of a saved conversation.
#[derive(Debug, Serialize, Deserialize)]
pub struct Transcript {
    /// The model the conversation was held with, as the user named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// System prompt first (when there is one), then user and assistant messages.
    pub messages: Vec<Message>,
}

#[derive(Debug, thiserror::Error)]
pub enum TranscriptError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {} MiB", MAX_TRANSCRIPT_BYTES >> 20)]
    TooLarge { path: PathBuf },
    /// Not a regular file (a FIFO, a device, a folder) or not text.
    #[error(transparent)]
    Unreadable(ReadError),
    #[error("{path} is not a JSON transcript (save one with /save FILE.json): {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// Whether `path` asks for JSON (by its extension).
pub fn is_json(path: &Path) -> bool {
    path.extension()
        .is_some_and(|extension| extension.eq_ignore_ascii_case("json"))
}

/// Save `conversation` to `path`: JSON for `.json`, markdown otherwise.
pub fn save(path: &Path, model: &str, conversation: &Conversation) -> Result<(), TranscriptError> {
    let text = if is_json(path) {
        to_json(model, conversation)
    } else {
        to_markdown(model, conversation)
    };
    write_atomically(path, text.as_bytes()).map_err(|source| TranscriptError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Read a JSON transcript.
pub fn load(path: &Path) -> Result<Conversation, TranscriptError> {
    let read_error = |source| TranscriptError::Read {
        path: path.to_owned(),
        source,
    };
    let text =
        files::read_text_bounded(path, MAX_TRANSCRIPT_BYTES).map_err(|error| match error {
            ReadError::Io { error, .. } => read_error(error),
            ReadError::TooLarge { .. } => TranscriptError::TooLarge {
                path: path.to_owned(),
            },
            other => TranscriptError::Unreadable(other),
        })?;
    let invalid = |reason: String| TranscriptError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let transcript: Transcript =
        serde_json::from_str(&text).map_err(|error| invalid(error.to_string()))?;
    Conversation::from_messages(transcript.messages).map_err(invalid)
}

pub fn to_json(model: &str, conversation: &Conversation) -> String {
    let transcript = Transcript {
        model: Some(model.to_owned()),
        messages: conversation.prompt_messages(),
    };
    // Serializing strings and a Vec cannot fail.
    let mut text = serde_json::to_string_pretty(&transcript).unwrap_or_default();
    text.push('\n');
    text
}

pub fn to_markdown(model: &str, conversation: &Conversation) -> String {
    let mut text = format!("# Chat with {model}\n");
    for message in conversation.prompt_messages() {
        let heading = match message.role.as_str() {
            SYSTEM => "System",
            USER => "User",
            ASSISTANT => "Assistant",
            other => other,
        };
        text.push_str(&format!(
            "\n## {heading}\n\n{}\n",
            message.content.trim_end()
        ));
    }
    text
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    crate::store::refuse_non_regular_target(path)?;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let file_name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let temporary = directory.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversation() -> Conversation {
        let mut conversation = Conversation::new(Some("You are terse.".into()));
        conversation.push_user("Hi\nthere".into());
        conversation.push_assistant("Hello.".into());
        conversation
    }

    #[test]
    fn json_round_trips() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("talk.json");
        save(&path, "smollm2", &conversation()).unwrap();
        assert_eq!(load(&path).unwrap(), conversation());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"model\": \"smollm2\""), "{text}");
    }

    #[test]
    fn markdown_has_a_heading_per_message() {
        let text = to_markdown("smollm2", &conversation());
        assert_eq!(
            text,
            "# Chat with smollm2\n\n## System\n\nYou are terse.\n\n## User\n\nHi\nthere\n\n## Assistant\n\nHello.\n"
        );
    }

    #[test]
    fn markdown_is_not_loadable_and_says_why() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("talk.md");
        save(&path, "smollm2", &conversation()).unwrap();
        let error = load(&path).unwrap_err().to_string();
        assert!(error.contains("not a JSON transcript"), "{error}");
        assert!(matches!(
            load(&directory.path().join("missing.json")),
            Err(TranscriptError::Read { .. })
        ));
    }

    #[test]
    fn a_fifo_or_folder_in_the_way_is_refused_not_replaced() {
        let directory = tempfile::tempdir().unwrap();
        let fifo = directory.path().join("pipe.json");
        crate::files::make_fifo_for_tests(&fifo);
        let folder = directory.path().join("folder.json");
        std::fs::create_dir(&folder).unwrap();
        for path in [&fifo, &folder] {
            let error = save(path, "m", &conversation()).unwrap_err().to_string();
            assert!(error.contains("not a regular file"), "{error}");
        }
        let fifo_type = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(
            std::os::unix::fs::FileTypeExt::is_fifo(&fifo_type),
            "still a FIFO"
        );
        assert!(folder.is_dir());
    }

    #[test]
    fn no_temporary_file_is_left_behind() {
        let directory = tempfile::tempdir().unwrap();
        save(&directory.path().join("t.md"), "m", &conversation()).unwrap();
        let names: Vec<_> = std::fs::read_dir(directory.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["t.md"]);
    }
}
