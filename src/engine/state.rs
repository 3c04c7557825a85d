//! A session's KV cache as bytes, and back: what a prompt cache stores so
//! that a later run with the same beginning skips evaluating it, and what
//! chat's `/save` keeps beside a transcript.
//!
//! Owns: llama.cpp's sequence state calls. Must not touch: files. The bytes
//! are llama.cpp's own format for this build and this model; the caller
//! stores them with a key naming both and a hash over them, and hands back
//! only bytes that this build wrote for this model (llama.cpp checks shapes
//! but trusts the rest).

use llama_cpp_2::context::session::LlamaStateSeqFlags;
use llama_cpp_2::token::LlamaToken;

use super::generate::Session;
use super::EngineError;

/// What a cache entry's key must include besides the model: the format of
/// the state bytes and what computed them (this llama.cpp and olm's patches
/// to it, olm's fixed context settings: an f16 KV cache, llama.cpp's
/// automatic flash attention).
pub const KV_STATE_FORMAT: &str = concat!(
    "llama-cpp-sys-2 ",
    "0.1.161",
    "; patches 0001 0002 0003 0004 0005 0006 0007 0008 0009",
    "; kv f16; flash-attention auto; olm ",
    env!("CARGO_PKG_VERSION")
);

/// The KV cache of a session's sequence, and the tokens it holds.
#[derive(Debug, Clone)]
pub struct KvSnapshot {
    pub tokens: Vec<i32>,
    pub state: Vec<u8>,
}

impl Session<'_> {
    /// The cache as it is now (it must hold only evaluated tokens: take the
    /// snapshot after [`Session::prefill_prefix`], not after generating).
    pub fn snapshot(&self) -> Result<KvSnapshot, EngineError> {
        let context = self.context();
        let size = context.state_seq_get_size_ext(0, LlamaStateSeqFlags::empty());
        let mut state = vec![0u8; size];
        // SAFETY: `state` holds the size llama.cpp asked for, for sequence 0.
        let written = unsafe {
            context.state_seq_get_data_ext(state.as_mut_ptr(), 0, LlamaStateSeqFlags::empty())
        };
        if written != size {
            return Err(EngineError::Decode(format!(
                "llama.cpp wrote {written} bytes of state, not {size}"
            )));
        }
        Ok(KvSnapshot {
            tokens: self.cached_ids(),
            state,
        })
    }

    /// Replace the cache with `snapshot` (bytes this build of llama.cpp wrote
    /// for this model), then keep only its first `keep` tokens.
    pub fn restore(&mut self, snapshot: &KvSnapshot, keep: usize) -> Result<(), EngineError> {
        self.clear();
        // Tokens are the model's own: a forged id would reach llama.cpp's
        // token tables at the next prefix match or draft.
        let vocabulary = i32::try_from(self.model().n_vocab()).unwrap_or(i32::MAX);
        if snapshot.tokens.iter().any(|&id| id < 0 || id >= vocabulary) {
            return Err(EngineError::Decode(
                "the saved state holds token ids outside the vocabulary".into(),
            ));
        }
        let loaded = {
            let context = self.context_mut();
            // SAFETY: the bytes are a state this build wrote for this model
            // (the caller checked its key and hash); llama.cpp validates the
            // shapes and answers false when they do not fit.
            unsafe {
                context.state_seq_set_data_ext(&snapshot.state, 0, LlamaStateSeqFlags::empty())
            }
        };
        if !loaded {
            self.clear();
            return Err(EngineError::Decode(
                "llama.cpp could not restore the saved state".into(),
            ));
        }
        if !self.positions_match(snapshot.tokens.len()) {
            self.clear();
            return Err(EngineError::Decode(
                "the saved state's positions do not match its tokens".into(),
            ));
        }
        let tokens: Vec<LlamaToken> = snapshot.tokens.iter().map(|&id| LlamaToken(id)).collect();
        self.set_cached(tokens);
        self.keep_first(keep);
        Ok(())
    }

    /// Whether the restored cache ends where `tokens` tokens end: its last
    /// position is `tokens - 1` and none is negative (a sliding-window
    /// cache may have dropped the first ones). llama.cpp checks the state's
    /// shapes, not its positions: a file with a forged hash could otherwise
    /// leave positions the next decode refuses, or worse.
    fn positions_match(&self, tokens: usize) -> bool {
        let context = self.context();
        let (first, last) = (
            context.kv_cache_seq_pos_min(0),
            context.kv_cache_seq_pos_max(0),
        );
        match tokens.checked_sub(1).map(i32::try_from) {
            None => last < 0,
            Some(Ok(expected)) => first >= 0 && first <= last && last == expected,
            Some(Err(_)) => false,
        }
    }
}
