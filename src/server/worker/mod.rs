//! Crash isolation: each loaded model runs in its own `olm __worker` child
//! process, as Ollama runs its runners, so that an abort inside llama.cpp
//! (a `GGML_ASSERT` on some input, the OOM killer) ends that process only.
//! The server answers the requests it had in flight with a 500, keeps
//! serving every other model and client, and loads the model again on its
//! next use.
//!
//! Owns: the wire protocol ([`protocol`]), the server's handle on a child
//! ([`handle`]) and the child's main loop ([`child`]). Must not touch: HTTP
//! shapes (handlers translate [`GenerationEvent`]s), the store.

mod child;
mod handle;
mod protocol;

pub use child::run as run_child;
pub use handle::{Generation, GenerationEvent, SpawnError, WorkerProcess};
pub use protocol::{ReadyInfo, WorkerConfig, WorkerMetrics};
