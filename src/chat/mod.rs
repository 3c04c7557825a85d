//! `olm chat`: the interactive REPL session.
//!
//! Owns: the conversation (message history and the context-trimming policy),
//! slash-command parsing, multi-line input assembly, transcripts (markdown
//! and JSON), the chat history file's location, and the line-editor loop that
//! ties them to a loaded model.
//!
//! The pure parts (`command`, `conversation`, `input`, `settings`,
//! `transcript`) know nothing of terminals or llama.cpp and are unit-tested;
//! `repl` is the only part that talks to the engine, the line editor and the
//! terminal (through `ui::Printer`).
//!
//! Must not touch: the server, the hub, the model store's files, command-line
//! parsing (it receives plain values from `commands::chat`), or the process's
//! exit (Ctrl-C is a cancel flag, never `process::exit`).

mod command;
mod conversation;
mod input;
mod paths;
mod repl;
mod settings;
mod transcript;

pub use paths::{data_dir, history_file};
pub use repl::{run, ChatSetup, ModelChoice};
