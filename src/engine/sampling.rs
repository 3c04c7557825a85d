//! Sampling settings and the llama.cpp sampler chain built from them.
//!
//! Owns: defaults (llama.cpp's own), the order of samplers, greedy at
//! temperature 0, seeded randomness, and grammar constraints.

use llama_cpp_2::sampling::LlamaSampler;

use super::{EngineError, Model};

/// How the next token is chosen. Defaults match llama.cpp's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingConfig {
    pub temperature: f32,
    pub top_k: u32,
    pub top_p: f32,
    pub min_p: f32,
    pub repeat_penalty: f32,
    /// OpenAI's penalties: subtract `frequency_penalty` times the count of a
    /// token, and `presence_penalty` once, over the last `repeat_last_n`.
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub repeat_last_n: u32,
    /// `None` draws a fresh random seed.
    pub seed: Option<u32>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            repeat_last_n: 64,
            seed: None,
        }
    }
}

/// A constraint on the shape of the output.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Constraint {
    /// Any JSON object.
    JsonObject,
    /// JSON matching this JSON schema (the schema's text).
    JsonSchema(String),
    /// A GBNF grammar.
    Grammar(String),
}

/// llama.cpp's marker for "pick a random seed".
const RANDOM_SEED: u32 = u32::MAX;

impl Constraint {
    /// The GBNF grammar for this constraint.
    pub fn to_grammar(&self) -> Result<String, EngineError> {
        let schema = match self {
            Constraint::Grammar(grammar) => return Ok(grammar.clone()),
            Constraint::JsonObject => r#"{"type": "object"}"#,
            Constraint::JsonSchema(schema) => schema.as_str(),
        };
        serde_json::from_str::<serde_json::Value>(schema)
            .map_err(|error| EngineError::InvalidSchema(error.to_string()))?;
        llama_cpp_2::json_schema_to_grammar(schema)
            .map_err(|error| EngineError::InvalidSchema(error.to_string()))
    }
}

/// Build the sampler chain, in llama.cpp's order: grammar, penalties,
/// top-k, top-p, min-p, temperature, then the final pick.
pub(super) fn build_sampler(
    model: &Model,
    config: &SamplingConfig,
    grammar: Option<&str>,
) -> Result<LlamaSampler, EngineError> {
    let mut chain = Vec::with_capacity(7);
    if let Some(grammar) = grammar {
        let sampler = LlamaSampler::grammar(&model.inner, grammar, "root")
            .map_err(|error| EngineError::InvalidSchema(format!("grammar rejected: {error}")))?;
        chain.push(sampler);
    }
    let penalized = config.repeat_penalty != 1.0
        || config.frequency_penalty != 0.0
        || config.presence_penalty != 0.0;
    if penalized && config.repeat_last_n > 0 {
        let last_n = i32::try_from(config.repeat_last_n).unwrap_or(i32::MAX);
        chain.push(LlamaSampler::penalties(
            model.inner.n_vocab(),
            last_n,
            config.repeat_penalty,
            config.frequency_penalty,
            config.presence_penalty,
        ));
    }
    if config.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return Ok(LlamaSampler::chain_simple(chain));
    }
    if config.top_k > 0 {
        chain.push(LlamaSampler::top_k(
            i32::try_from(config.top_k).unwrap_or(i32::MAX),
        ));
    }
    if config.top_p < 1.0 {
        chain.push(LlamaSampler::top_p(config.top_p, 1));
    }
    if config.min_p > 0.0 {
        chain.push(LlamaSampler::min_p(config.min_p, 1));
    }
    chain.push(LlamaSampler::temp(config.temperature));
    chain.push(LlamaSampler::dist(config.seed.unwrap_or(RANDOM_SEED)));
    Ok(LlamaSampler::chain_simple(chain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_schema_json_is_rejected_before_llama_cpp() {
        let error = Constraint::JsonSchema("{not json".into())
            .to_grammar()
            .unwrap_err();
        assert!(matches!(error, EngineError::InvalidSchema(_)), "{error}");
    }

    #[test]
    fn schema_becomes_a_grammar() {
        let schema =
            r#"{"type":"object","properties":{"name":{"type":"string"}},"required":["name"]}"#;
        let grammar = Constraint::JsonSchema(schema.into())
            .to_grammar()
            .expect("grammar");
        assert!(grammar.contains("root ::="), "{grammar}");
        assert!(grammar.contains("name"), "{grammar}");
    }
}
