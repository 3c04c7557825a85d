//! Sampling settings and the llama.cpp sampler chain built from them.
//!
//! Owns: defaults (llama.cpp's own), the order of samplers, greedy at
//! temperature 0, seeded randomness, and grammar constraints, lazy ones
//! (tool calls under `auto`) included.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::LlamaToken;

use super::schema::check_schema;
use super::tools::{self, Grammar, ToolConstraint, ToolSpec, Trigger};
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
    /// Tool calls in the model's convention (see [`tools::grammar`]).
    Tools(Box<ToolConstraint>),
}

/// One request's sampler: the chain (penalties, top-k/p, min-p, temperature,
/// the pick), and its grammar kept apart, as llama.cpp's own tools do: the
/// token is first picked without the grammar and only that token is checked
/// against it; the whole vocabulary is filtered by the grammar only when the
/// grammar rejects the pick. A grammar with many live alternatives (a
/// 250-value enum) costs one check per token instead of one per
/// vocabulary entry.
pub struct Sampler {
    chain: LlamaSampler,
    /// Dropped if it ever refuses a token it was given (a lazy grammar woken
    /// by text it cannot follow): llama.cpp aborts on the next use of a
    /// grammar in that state. The answer is then unconstrained, and whoever
    /// reads the calls checks them against their schemas.
    grammar: Option<LlamaSampler>,
    /// Reused for each token's candidates when there is a grammar.
    candidates: LlamaTokenDataArray,
    /// The chain is llama.cpp's greedy pick alone (temperature 0, no
    /// penalties): the pick is then read straight from the logits, as
    /// greedy picks (the first of the largest), without copying the whole
    /// vocabulary into candidates for each token and each verified draft
    /// position (gemma: 262,144 entries, 3 MB).
    greedy_only: bool,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sampler")
            .field("grammar", &self.grammar.is_some())
            .finish()
    }
}

impl Sampler {
    /// Pick the next token from the logits at `index` of the last decode
    /// and record it (penalty window, grammar state). Logits that are not
    /// all numbers are an error: no sampler handles them (greedy picks
    /// token 0, often end-of-generation; the grammar refuses what the
    /// chain picks among NaNs and would be dropped).
    pub fn sample(
        &mut self,
        context: &LlamaContext<'_>,
        index: i32,
    ) -> Result<LlamaToken, EngineError> {
        let logits = context.get_logits_ith(index);
        if !all_finite(logits) {
            return Err(EngineError::NonFiniteOutput {
                what: "its next token",
            });
        }
        let Some(grammar) = &mut self.grammar else {
            if self.greedy_only {
                return Ok(greedy_pick(logits));
            }
            return Ok(self.chain.sample(context, index));
        };
        fill(&mut self.candidates, logits);
        self.chain.apply(&mut self.candidates);
        let picked = self.candidates.selected_token();
        let allowed = picked.is_some_and(|token| {
            let mut single =
                LlamaTokenDataArray::new(vec![LlamaTokenData::new(token, 1.0, 0.0)], false);
            grammar.apply(&mut single);
            single
                .data
                .first()
                .is_some_and(|data| data.logit().is_finite())
        });
        let token = match picked {
            Some(token) if allowed => token,
            _ => {
                fill(&mut self.candidates, logits);
                grammar.apply(&mut self.candidates);
                self.chain.apply(&mut self.candidates);
                // The chain always ends with a pick; the grammar leaves at
                // least end-of-generation when nothing else fits.
                self.candidates
                    .selected_token()
                    .unwrap_or(LlamaToken::new(0))
            }
        };
        if grammar.try_accept(token).is_err() {
            tracing::debug!("the grammar could not follow the answer; it is no longer applied");
            self.grammar = None;
        }
        self.chain.accept(token);
        Ok(token)
    }
}

/// Whether no value is NaN or infinite (an exponent of all ones), checked
/// in chunks that vectorise: about 20 µs for gemma's 262,144 logits.
pub(super) fn all_finite(logits: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    logits.chunks(1024).all(|chunk| {
        chunk.iter().fold(0u32, |found, logit| {
            found | u32::from(logit.to_bits() & EXPONENT == EXPONENT)
        }) == 0
    })
}

/// What llama.cpp's greedy sampler picks: the first of the largest logits
/// (`llama_sampler_greedy_apply` replaces its pick only on a strictly
/// larger one). `logits` are all finite and not empty (a vocabulary has a
/// token); token ids fit in `i32` (llama.cpp's own type for them).
///
/// Two passes that vectorise (the largest value, then the first span that
/// holds it) instead of one that follows the best index: gemma's 262,144
/// logits took 0.3-0.4 ms a token, 35 µs now; a verified draft of 12 picks
/// 13 times a step. Equal values compare equal (`-0.0 == 0.0`), as in the
/// one-pass loop, so the first of them is picked.
fn greedy_pick(logits: &[f32]) -> LlamaToken {
    const SPAN: usize = 256;
    let largest = largest_logit(logits);
    let best = logits
        .chunks(SPAN)
        .enumerate()
        .find(|(_, span)| {
            span.iter()
                .fold(false, |found, &logit| found | (logit == largest))
        })
        .and_then(|(number, span)| {
            let within = span.iter().position(|&logit| logit == largest)?;
            Some(number * SPAN + within)
        })
        .unwrap_or(0);
    LlamaToken::new(i32::try_from(best).unwrap_or(i32::MAX))
}

/// The largest of finite `logits`, kept in lanes that vectorise.
fn largest_logit(logits: &[f32]) -> f32 {
    const LANES: usize = 16;
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for chunk in chunks {
        for (lane, &logit) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(logit);
        }
    }
    lanes
        .iter()
        .chain(rest)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Every vocabulary entry with its logit, unsorted and unpicked.
fn fill(candidates: &mut LlamaTokenDataArray, logits: &[f32]) {
    candidates.data.clear();
    candidates.data.extend(
        (0_i32..)
            .zip(logits)
            .map(|(id, &logit)| LlamaTokenData::new(LlamaToken::new(id), logit, 0.0)),
    );
    candidates.selected = None;
    candidates.sorted = false;
}

/// A sampler built for one request, ready to move to the thread that
/// decodes (see [`super::Model::prepare`]).
pub struct PreparedSampler(Sampler);

// SAFETY: a llama.cpp sampler chain is plain heap state (a random number
// generator, a penalty window, grammar stacks) plus a read-only pointer to
// the model's vocabulary, which outlives it. Nothing in it belongs to the
// thread that built it, and it is moved to one other thread, never shared.
unsafe impl Send for PreparedSampler {}

impl PreparedSampler {
    pub(super) fn new(sampler: Sampler) -> Self {
        Self(sampler)
    }

    pub(super) fn into_inner(self) -> Sampler {
        self.0
    }
}

impl std::fmt::Debug for PreparedSampler {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PreparedSampler")
    }
}

/// llama.cpp's marker for "pick a random seed".
const RANDOM_SEED: u32 = u32::MAX;

impl Constraint {
    /// Refuse a schema llama.cpp's converter should never see (see
    /// [`super::schema`]); cheap and pure, so callers check before queueing.
    pub fn check(&self) -> Result<(), EngineError> {
        match self {
            Constraint::JsonSchema(schema) => check_schema(schema),
            Constraint::JsonObject | Constraint::Grammar(_) => Ok(()),
            Constraint::Tools(constraint) => check_tools(&constraint.tools),
        }
    }

    /// The grammar for this constraint. Boxed so that a caller's
    /// `grammar.as_deref()` hands [`build_sampler`] a `&Grammar`.
    pub fn to_grammar(&self) -> Result<Box<Grammar>, EngineError> {
        self.check()?;
        let schema = match self {
            Constraint::Grammar(grammar) => return Ok(Box::new(Grammar::eager(grammar.clone()))),
            Constraint::Tools(constraint) => {
                return tools::grammar::tool_grammar(constraint, schema_to_gbnf).map(Box::new)
            }
            Constraint::JsonObject => r#"{"type": "object"}"#,
            Constraint::JsonSchema(schema) => schema.as_str(),
        };
        schema_to_gbnf(schema).map(|text| Box::new(Grammar::eager(text)))
    }
}

fn schema_to_gbnf(schema: &str) -> Result<String, EngineError> {
    llama_cpp_2::json_schema_to_grammar(schema)
        .map_err(|error| EngineError::InvalidSchema(error.to_string()))
}

/// Tools a grammar can be built for: a bounded count, valid distinct names,
/// and parameter schemas within [`check_schema`]'s bounds.
fn check_tools(tools: &[ToolSpec]) -> Result<(), EngineError> {
    if tools.is_empty() || tools.len() > tools::MAX_TOOLS {
        return Err(EngineError::InvalidSchema(format!(
            "give between 1 and {} tools, got {}",
            tools::MAX_TOOLS,
            tools.len()
        )));
    }
    let mut names = std::collections::HashSet::new();
    for tool in tools {
        ToolSpec::check_name(&tool.name).map_err(EngineError::InvalidSchema)?;
        if !names.insert(tool.name.as_str()) {
            return Err(EngineError::InvalidSchema(format!(
                "the tool '{}' is given twice",
                tool.name
            )));
        }
        if !tool.parameters.is_null() {
            check_schema(&tool.parameters.to_string()).map_err(|error| {
                EngineError::InvalidSchema(format!(
                    "the parameters of tool '{}': {error}",
                    tool.name
                ))
            })?;
        }
    }
    Ok(())
}

/// llama.cpp's grammar sampler for `grammar`: lazy when it has triggers. A
/// trigger word that is one token of this vocabulary (Qwen's `<tool_call>`,
/// Mistral's `[TOOL_CALLS]`) wakes it as that token; other words and the
/// patterns are searched in the answer's text.
fn grammar_sampler(model: &Model, grammar: &Grammar) -> Result<LlamaSampler, EngineError> {
    let rejected = |error: llama_cpp_2::GrammarError| {
        EngineError::InvalidSchema(format!("grammar rejected: {error}"))
    };
    if grammar.triggers.is_empty() {
        return LlamaSampler::grammar(&model.inner, &grammar.text, &grammar.root).map_err(rejected);
    }
    let vocab = model.inner.vocab();
    let mut tokens = Vec::new();
    let mut patterns = Vec::new();
    for trigger in &grammar.triggers {
        match trigger {
            Trigger::Word(word) => match vocab.tokenize(word.as_bytes(), false, true).as_slice() {
                // A one-token marker is an added token of this vocabulary:
                // the model writes it as that token.
                [token] => tokens.push(*token),
                _ => patterns.push(regex_escape(word)),
            },
            Trigger::Pattern(pattern) => patterns.push(pattern.clone()),
        }
    }
    LlamaSampler::grammar_lazy_patterns(
        &model.inner,
        &grammar.text,
        &grammar.root,
        &patterns,
        &tokens,
    )
    .map_err(rejected)
}

/// `text` as a regular expression matching itself.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for character in text.chars() {
        if "\\^$.|?*+()[]{}".contains(character) {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    format!("({escaped})")
}

/// Build the sampler: the grammar (if any), and the chain in llama.cpp's
/// order: penalties, top-k, top-p, min-p, temperature, then the final pick.
pub(super) fn build_sampler(
    model: &Model,
    config: &SamplingConfig,
    grammar: Option<&Grammar>,
) -> Result<Sampler, EngineError> {
    let grammar = grammar
        .map(|grammar| grammar_sampler(model, grammar))
        .transpose()?;
    let mut chain = Vec::with_capacity(6);
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
    let greedy_only = config.temperature <= 0.0 && chain.is_empty();
    if config.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
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
    }
    Ok(Sampler {
        chain: LlamaSampler::chain_simple(chain),
        grammar,
        candidates: LlamaTokenDataArray::new(Vec::new(), false),
        greedy_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_the_first_of_the_largest_logits() {
        assert_eq!(greedy_pick(&[0.5]), LlamaToken::new(0));
        assert_eq!(greedy_pick(&[1.0, 3.0, 2.0]), LlamaToken::new(1));
        assert_eq!(greedy_pick(&[-1.0, 2.0, 2.0, 1.0]), LlamaToken::new(1));
        assert_eq!(greedy_pick(&[-0.0, 0.0]), LlamaToken::new(0));
        assert_eq!(greedy_pick(&[-5.0, -4.0, -4.5]), LlamaToken::new(1));
    }

    /// The one-pass loop the vectorised pick replaces.
    fn first_of_the_largest(logits: &[f32]) -> i32 {
        let mut best = 0;
        for (index, &logit) in logits.iter().enumerate().skip(1) {
            if logit > logits[best] {
                best = index;
            }
        }
        best as i32
    }

    #[test]
    fn greedy_picks_as_the_one_pass_loop_at_every_place_and_length() {
        // Lengths around the lanes (16) and spans (256), the largest value
        // at the start, the end, across a boundary, in the remainder, tied.
        for len in [1usize, 15, 16, 17, 255, 256, 257, 1000, 4099] {
            let base: Vec<f32> = (0..len)
                .map(|i| ((i * 7919) % 1013) as f32 / 97.0 - 5.0)
                .collect();
            for at in [
                0,
                len / 2,
                len.saturating_sub(1),
                255.min(len - 1),
                256.min(len - 1),
            ] {
                let mut logits = base.clone();
                logits[at] = 100.0;
                assert_eq!(
                    greedy_pick(&logits).0,
                    first_of_the_largest(&logits),
                    "{len} {at}"
                );
                if at + 1 < len {
                    logits[len - 1] = 100.0;
                    assert_eq!(greedy_pick(&logits).0, at as i32, "tie, {len} {at}");
                }
            }
            assert_eq!(greedy_pick(&base).0, first_of_the_largest(&base), "{len}");
            let mut zeros = vec![-1.0f32; len];
            zeros[len - 1] = 0.0;
            zeros[len / 2] = -0.0;
            assert_eq!(
                greedy_pick(&zeros).0,
                first_of_the_largest(&zeros),
                "zeros {len}"
            );
        }
    }

    #[test]
    fn only_numbers_are_finite() {
        let mut logits = vec![-3.5f32; 5000];
        logits[7] = f32::MAX;
        logits[8] = f32::MIN_POSITIVE / 2.0;
        assert!(all_finite(&logits));
        assert!(all_finite(&[]));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN] {
            for at in [0, 1023, 1024, 4999] {
                let mut damaged = logits.clone();
                damaged[at] = bad;
                assert!(!all_finite(&damaged), "{bad} at {at}");
            }
        }
    }

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
        assert!(grammar.text.contains("root ::="), "{}", grammar.text);
        assert!(grammar.text.contains("name"), "{}", grammar.text);
        assert!(grammar.triggers.is_empty());
    }

    fn tools_constraint(tools: Vec<ToolSpec>, choice: tools::ToolChoice) -> Constraint {
        Constraint::Tools(Box::new(ToolConstraint {
            format: tools::ToolFormat::Hermes,
            tools,
            choice,
            parallel: false,
            reasoning: tools::ReasoningMode::Off,
        }))
    }

    fn tool(name: &str, parameters: serde_json::Value) -> ToolSpec {
        ToolSpec {
            name: name.into(),
            description: None,
            parameters,
        }
    }

    /// llama.cpp's converter on real schemas, renamed apart: two tools whose
    /// schemas share rule names (`space`, `root`, their `$defs`) make one grammar.
    #[test]
    fn tools_become_one_grammar() {
        let weather = serde_json::json!({
            "type": "object",
            "properties": {"city": {"$ref": "#/$defs/city"}, "days": {"type": "integer"}},
            "required": ["city"],
            "$defs": {"city": {"type": "string", "maxLength": 40}}
        });
        let time =
            serde_json::json!({"type": "object", "properties": {"zone": {"type": "string"}}});
        let grammar = tools_constraint(
            vec![tool("get_weather", weather), tool("get_time", time)],
            tools::ToolChoice::Required,
        )
        .to_grammar()
        .expect("grammar");
        assert!(grammar.text.contains("t0-root ::="), "{}", grammar.text);
        assert!(grammar.text.contains("t1-root ::="), "{}", grammar.text);
        assert!(grammar.text.contains("root ::= block"), "{}", grammar.text);
        assert!(
            !grammar
                .text
                .lines()
                .any(|line| line.starts_with("space ::=")),
            "{}",
            grammar.text
        );
    }

    #[test]
    fn bad_tools_are_refused_before_the_converter() {
        let object = serde_json::json!({"type": "object"});
        for tools in [
            vec![],
            vec![tool("has space", object.clone())],
            vec![tool("twice", object.clone()), tool("twice", object.clone())],
            vec![tool("deep", serde_json::json!({"$ref": "#"}))],
        ] {
            let constraint = tools_constraint(tools.clone(), tools::ToolChoice::Auto);
            assert!(constraint.check().is_err(), "{tools:?}");
        }
        assert_eq!(regex_escape("[TOOL_CALLS]"), "(\\[TOOL_CALLS\\])");
    }
}
