//! What the server and a model's worker process say to each other: one JSON
//! object per line, the server writing to the worker's stdin and the worker
//! answering on its stdout. Every request carries an id the answers repeat.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::{ChatTraits, EngineError, ErrorKind, SchedulerError};
use crate::engine::{GenerateRequest, LoadOptions, Prompt, SchedulerMetrics, SchedulerOptions};
use crate::engine::{Stats, StopReason};

/// The first line a worker reads: what to load and how to run it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerConfig {
    pub path: std::path::PathBuf,
    pub load: LoadOptions,
    pub scheduler: SchedulerOptions,
    pub verbose: bool,
    /// Skip olm's GGUF validation (only for tests that need llama.cpp to see
    /// a hostile file, to prove that its crash is contained).
    pub skip_gguf_check: bool,
}

/// A request from the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToWorker {
    /// Tokenize and queue a generation; `whole` gathers the text into one piece.
    Generate {
        id: u64,
        prompt: Prompt,
        request: GenerateRequest,
        whole: bool,
        /// A context smaller than the model's for this request (Ollama's
        /// `num_ctx`): the prompt must fit it, and the answer stops where
        /// prompt and answer fill it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        context_limit: Option<u32>,
    },
    /// The client left: stop the generation at the next decode step.
    Cancel { id: u64 },
    /// Embed each input (one vector per input).
    Embed {
        id: u64,
        inputs: Vec<String>,
        truncate: bool,
    },
    /// Report the scheduler's counters.
    Metrics { id: u64 },
}

/// A message from the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FromWorker {
    /// The model is loaded and the scheduler runs.
    Ready(ReadyInfo),
    /// The model could not be loaded; the worker exits after this.
    Fatal {
        error: WireError,
    },
    /// The generation passed the worker's checks and is queued; sent before
    /// its text, so the server can still answer with an error status.
    Accepted {
        id: u64,
    },
    Text {
        id: u64,
        text: String,
    },
    Done {
        id: u64,
        stats: WireStats,
    },
    Failed {
        id: u64,
        error: WireError,
    },
    Embedded {
        id: u64,
        embeddings: Embeddings,
    },
    Metrics {
        id: u64,
        metrics: WorkerMetrics,
    },
}

/// A worker's counters: its scheduler's, and its preparing threads'.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct WorkerMetrics {
    #[serde(flatten)]
    pub scheduler: SchedulerMetrics,
    /// Requests being rendered, tokenized or given their grammar now.
    pub preparing: usize,
    /// How long the oldest of those has taken so far.
    pub oldest_preparation_ms: u64,
}

/// What the server needs to know about a loaded model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadyInfo {
    pub context_per_sequence: u32,
    pub parallel: u32,
    /// Bytes of weights.
    pub size: u64,
    /// Width of the model's embedding vectors (the most `dimensions` can ask).
    pub embedding_size: u32,
    /// Most bytes of prompt text that could fit one sequence's context:
    /// the server refuses more before sending it here.
    pub max_prompt_bytes: u64,
    pub load_seconds: f64,
    /// How the layers are placed over this machine and RPC workers
    /// (`--rpc`); `None` when they are not split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<crate::engine::rpc::Split>,
    /// What the chat template does with tools and reasoning.
    #[serde(default)]
    pub chat: ChatTraits,
    /// Bytes of weights on a GPU (0 on a CPU-only machine): the share of
    /// layers offloaded, times the weights' size.
    #[serde(default)]
    pub size_vram: u64,
}

/// An engine failure as it crosses the process boundary: what kind it is
/// and what to tell the client. The server alone decides what a kind means
/// in HTTP ([`crate::server::error::ApiError::from_engine`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<&EngineError> for WireError {
    fn from(error: &EngineError) -> Self {
        let message = match error {
            // The path stays in the worker; the client named the model.
            EngineError::Load { .. } => "llama.cpp could not load the model file".to_owned(),
            other => other.to_string(),
        };
        Self::new(error.kind(), message)
    }
}

impl From<&SchedulerError> for WireError {
    fn from(error: &SchedulerError) -> Self {
        match error {
            SchedulerError::Engine(engine) => Self::from(engine),
            other => Self::new(other.kind(), other.to_string()),
        }
    }
}

/// One embedding per input, and the tokens they took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
}

/// [`Stats`] with its durations as nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireStats {
    pub stop_reason: StopReason,
    pub prompt_tokens: usize,
    pub prompt_tokens_evaluated: usize,
    pub generated_tokens: usize,
    pub decoded_tokens: usize,
    pub prompt_ns: u64,
    pub first_token_ns: u64,
    pub generation_ns: u64,
    #[serde(default)]
    pub drafted_tokens: usize,
    #[serde(default)]
    pub accepted_tokens: usize,
}

impl From<&Stats> for WireStats {
    fn from(stats: &Stats) -> Self {
        let nanos = |duration: Duration| u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        Self {
            stop_reason: stats.stop_reason,
            prompt_tokens: stats.prompt_tokens,
            prompt_tokens_evaluated: stats.prompt_tokens_evaluated,
            generated_tokens: stats.generated_tokens,
            decoded_tokens: stats.decoded_tokens,
            prompt_ns: nanos(stats.prompt_time),
            first_token_ns: nanos(stats.time_to_first_token),
            generation_ns: nanos(stats.generation_time),
            drafted_tokens: stats.drafted_tokens,
            accepted_tokens: stats.accepted_tokens,
        }
    }
}

impl From<WireStats> for Stats {
    fn from(wire: WireStats) -> Self {
        Stats {
            stop_reason: wire.stop_reason,
            prompt_tokens: wire.prompt_tokens,
            prompt_tokens_evaluated: wire.prompt_tokens_evaluated,
            generated_tokens: wire.generated_tokens,
            prompt_time: Duration::from_nanos(wire.prompt_ns),
            time_to_first_token: Duration::from_nanos(wire.first_token_ns),
            generation_time: Duration::from_nanos(wire.generation_ns),
            decoded_tokens: wire.decoded_tokens,
            drafted_tokens: wire.drafted_tokens,
            accepted_tokens: wire.accepted_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generate_request_survives_the_wire() {
        let message = ToWorker::Generate {
            id: 7,
            prompt: Prompt::Raw("hi\n\"there\"".into()),
            request: GenerateRequest {
                max_tokens: Some(3),
                stop: vec!["\n".into()],
                ..GenerateRequest::default()
            },
            whole: true,
            context_limit: Some(100),
        };
        let line = serde_json::to_string(&message).unwrap();
        assert!(!line.contains('\n'), "one message per line: {line}");
        let back: ToWorker = serde_json::from_str(&line).unwrap();
        let ToWorker::Generate {
            id,
            prompt: Prompt::Raw(text),
            request,
            whole,
            context_limit: Some(100),
        } = back
        else {
            panic!("wrong variant: {line}");
        };
        assert_eq!((id, text.as_str(), whole), (7, "hi\n\"there\"", true));
        assert_eq!(request.max_tokens, Some(3));
        assert_eq!(request.stop, vec!["\n".to_owned()]);
    }

    #[test]
    fn stats_keep_their_durations() {
        let stats = Stats {
            stop_reason: StopReason::MaxTokens,
            prompt_tokens: 10,
            prompt_tokens_evaluated: 4,
            generated_tokens: 5,
            prompt_time: Duration::from_millis(12),
            time_to_first_token: Duration::from_millis(15),
            generation_time: Duration::from_micros(40_123),
            decoded_tokens: 4,
            drafted_tokens: 6,
            accepted_tokens: 2,
        };
        let back = Stats::from(WireStats::from(&stats));
        assert_eq!(back.generation_time, stats.generation_time);
        assert_eq!(back.prompt_tokens_evaluated, 4);
        assert_eq!(back.stop_reason, StopReason::MaxTokens);
    }
}
