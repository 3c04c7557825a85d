//! Embeddings: one pooled, L2-normalised vector per input text.
//!
//! Owns: the embedding context (its own, never the generation context), the
//! pooling choice and input length checks. Must not touch: HTTP shapes.
//!
//! Bounded: llama.cpp pools one micro-batch, so an input is evaluated whole,
//! and it computes (and copies out) logits for every token of it: 8 bytes
//! per token and vocabulary entry. One 4,000-token input to gemma (262,144
//! entries) took 8 GiB. An input is therefore at most the caller's context
//! (a server's, not the model's trained one), the model's trained context,
//! and what [`OUTPUT_BUDGET`] allows for the model's vocabulary.
//!
//! Pooling is the model's own when its GGUF declares one (embedding models
//! such as BERT or nomic-embed); generative models, which declare none, are
//! mean-pooled, as llama.cpp's `--pooling mean` and Ollama do. Rerankers
//! (`rank` pooling) score pairs of texts and cannot embed one.

use std::sync::atomic::{AtomicBool, Ordering};

use llama_cpp_2::context::params::LlamaPoolingType;
use llama_cpp_2::llama_batch::LlamaBatch;

use super::{ContextShape, EngineError, Model};

/// Bytes of logits (computed and copied out) one embedding may take.
pub const OUTPUT_BUDGET: u64 = 2 << 30;

/// How to embed: threads, and the longest input in tokens (the caller's
/// context; the model's trained context bounds it too).
#[derive(Debug, Clone, Copy)]
pub struct EmbedOptions {
    pub threads: u32,
    pub max_tokens: u32,
}

/// Vectors for a list of inputs and the tokens they took.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: usize,
}

/// The longest prefix of `text` of at most `bytes` bytes.
fn cut_at_char_boundary(text: &str, bytes: usize) -> &str {
    if text.len() <= bytes {
        return text;
    }
    let mut end = bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Why a model cannot embed, if it cannot.
pub fn embedding_refusal(model: &Model) -> Option<String> {
    (declared_pooling(model).as_deref() == Some("4"))
        .then(|| "this model is a reranker (rank pooling) and cannot produce embeddings".to_owned())
}

/// Embed each input. Inputs longer than `options.max_tokens` (or the
/// model's trained context) are an error, or cut to fit with `truncate`.
/// `cancel` stops the work between inputs and while tokenizing.
pub fn embed(
    model: &Model,
    inputs: &[String],
    truncate: bool,
    options: EmbedOptions,
    cancel: &AtomicBool,
) -> Result<Embedded, EngineError> {
    if let Some(reason) = embedding_refusal(model) {
        return Err(EngineError::CannotEmbed(reason));
    }
    let vocabulary = u64::from(model.n_vocab().max(1));
    let affordable = u32::try_from(OUTPUT_BUDGET / (vocabulary * 8)).unwrap_or(u32::MAX);
    let limit = model
        .n_ctx_train()
        .min(options.max_tokens)
        .min(affordable)
        .max(1) as usize;
    let limit_tokens = u32::try_from(limit).unwrap_or(u32::MAX);
    // Text past this many bytes is past `limit` tokens too: with `truncate`
    // it is cut before tokenizing, not after.
    let most_bytes = model.prompt_limits().max_bytes(limit_tokens);
    let mut tokenized = Vec::with_capacity(inputs.len());
    for input in inputs {
        if cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        let text = if truncate {
            cut_at_char_boundary(input, most_bytes)
        } else {
            input
        };
        let prompt = super::Prompt::Raw(text.to_owned());
        let mut tokens = model.tokenize(&prompt, limit_tokens, cancel)?.tokens;
        if tokens.len() > limit {
            if !truncate {
                return Err(EngineError::EmbeddingInputTooLong {
                    tokens: tokens.len(),
                    limit,
                });
            }
            tokens.truncate(limit);
        }
        tokenized.push(tokens);
    }
    let longest = tokenized.iter().map(Vec::len).max().unwrap_or(1);
    let n_ctx = (longest.div_ceil(256) * 256).min(limit).max(1) as u32;
    let pooling = if declared_pooling(model).is_some() {
        LlamaPoolingType::Unspecified
    } else {
        LlamaPoolingType::Mean
    };
    // Pooling takes one micro-batch: each input is evaluated whole.
    let shape = ContextShape {
        n_ctx,
        n_batch: n_ctx,
        n_ubatch: n_ctx,
        sequences: 1,
        threads: options.threads,
    };
    let mut context = model.create_embedding_context(shape, pooling)?;
    let mut batch = LlamaBatch::new(n_ctx as usize, 1);
    let mut embedded = Embedded::default();
    for tokens in &tokenized {
        if cancel.load(Ordering::Relaxed) {
            return Err(EngineError::Cancelled);
        }
        context.clear_kv_cache();
        batch.clear();
        for (position, token) in tokens.iter().enumerate() {
            batch
                .add(*token, position as i32, &[0], true)
                .map_err(|error| EngineError::Decode(error.to_string()))?;
        }
        context
            .decode(&mut batch)
            .map_err(|error| EngineError::Decode(error.to_string()))?;
        let vector = context
            .embeddings_seq_ith(0)
            .map_err(|_| EngineError::Decode("llama.cpp returned no embedding".into()))?;
        if !super::sampling::all_finite(vector) {
            return Err(EngineError::NonFiniteOutput {
                what: "an embedding",
            });
        }
        let mut vector = vector.to_vec();
        normalize(&mut vector);
        embedded.vectors.push(vector);
        embedded.prompt_tokens += tokens.len();
    }
    Ok(embedded)
}

/// `{arch}.pooling_type` from the GGUF header, if the model declares one.
fn declared_pooling(model: &Model) -> Option<String> {
    let architecture = model.metadata("general.architecture")?;
    model.metadata(&format!("{architecture}.pooling_type"))
}

/// Scale `vector` to unit length in place (a zero vector stays zero).
pub fn normalize(vector: &mut [f32]) {
    let norm = vector
        .iter()
        .map(|value| f64::from(*value).powi(2))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return;
    }
    for value in vector {
        *value = (f64::from(*value) / norm) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn vectors_are_scaled_to_unit_length() {
        let mut unit = [3.0, 4.0];
        normalize(&mut unit);
        assert!((unit[0] - 0.6).abs() < 1e-6 && (unit[1] - 0.8).abs() < 1e-6);
        let mut zero = [0.0, 0.0];
        normalize(&mut zero);
        assert_eq!(zero, [0.0, 0.0]);
    }
}
