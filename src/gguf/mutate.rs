//! A structure-aware mutator for model files: it takes a valid model (as a
//! [`GgufBuilder`], such as [`super::writer::tiny_model`]) and changes the
//! *values* llama.cpp reads — hyper-parameters, vocabulary entries, token
//! types, merges, special token ids, tokenizer flags, tensor types and
//! shapes, split keys — to zero, negative, NaN, infinite, huge, duplicated,
//! invalid UTF-8 or mistyped values, while keeping the container valid, so
//! that the result gets past the container checks and tests the rules
//! behind them.
//!
//! Pure and deterministic: the same seed (or the same fuzz input) gives the
//! same file. Used by the `gguf_llama` fuzz target, whose oracle is "if
//! olm's check accepts the file, llama.cpp loads and runs it without
//! aborting", and by a seeded integration test that runs the real binary.

use super::types::GgmlType;
use super::value::{Array, Value, ValueType};
use super::writer::{raw_string_array, token_type, GgufBuilder, TensorSpec};

/// Most changes one mutation makes.
pub const MAX_CHANGES: u64 = 3;

/// A source of choices: a seeded generator (SplitMix64), optionally fed by
/// fuzz input first.
#[derive(Clone, Debug)]
pub struct Choices<'a> {
    input: &'a [u8],
    state: u64,
}

impl<'a> Choices<'a> {
    /// Choices from `seed` alone.
    pub fn from_seed(seed: u64) -> Choices<'static> {
        Choices {
            input: &[],
            state: seed,
        }
    }

    /// Choices read from `input`, 8 bytes at a time, then from a generator
    /// seeded by it: how a fuzzer steers the mutator.
    pub fn from_bytes(input: &'a [u8]) -> Self {
        let seed = input.iter().fold(0x9E37_79B9_7F4A_7C15u64, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
        });
        Self { input, state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        if self.input.len() >= 8 {
            let (head, rest) = self.input.split_at(8);
            self.input = rest;
            let mut bytes = [0; 8];
            bytes.copy_from_slice(head);
            return u64::from_le_bytes(bytes);
        }
        // SplitMix64.
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number below `bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }

    /// One of `items`.
    pub fn pick<'b, T>(&mut self, items: &'b [T]) -> &'b T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// True about `numerator` times in `denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }
}

/// One mutated model: what was changed, and the file.
#[derive(Clone, Debug)]
pub struct Mutation {
    /// The changes, one line each ("llama.block_count = u32 0").
    pub changes: Vec<String>,
    pub builder: GgufBuilder,
}

impl Mutation {
    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.builder.to_bytes()
    }

    /// The changes on one line.
    pub fn describe(&self) -> String {
        self.changes.join("; ")
    }
}

/// `base` with one to [`MAX_CHANGES`] changes chosen by `seed`.
pub fn mutate(base: &GgufBuilder, seed: u64) -> Mutation {
    mutate_with(base, &mut Choices::from_seed(seed))
}

/// `base` with one to [`MAX_CHANGES`] changes chosen by `choices`.
pub fn mutate_with(base: &GgufBuilder, choices: &mut Choices<'_>) -> Mutation {
    let mut mutation = Mutation {
        changes: Vec::new(),
        builder: base.clone(),
    };
    let changes = 1 + choices.below(MAX_CHANGES);
    for _ in 0..changes {
        let kind = *choices.pick(&ChangeKind::ALL);
        kind.apply(&mut mutation, choices);
    }
    mutation
}

/// What a change touches.
#[derive(Clone, Copy, Debug)]
enum ChangeKind {
    HyperParameter,
    Token,
    TokenType,
    Tokenizer,
    SpecialToken,
    Scores,
    Merges,
    TensorType,
    TensorShape,
    Split,
    Architecture,
}

impl ChangeKind {
    /// Weighted by how many rules each reaches: hyper-parameters and the
    /// vocabulary most.
    const ALL: [ChangeKind; 16] = [
        ChangeKind::HyperParameter,
        ChangeKind::HyperParameter,
        ChangeKind::HyperParameter,
        ChangeKind::HyperParameter,
        ChangeKind::Token,
        ChangeKind::Token,
        ChangeKind::TokenType,
        ChangeKind::Tokenizer,
        ChangeKind::Tokenizer,
        ChangeKind::SpecialToken,
        ChangeKind::Scores,
        ChangeKind::Merges,
        ChangeKind::TensorType,
        ChangeKind::TensorShape,
        ChangeKind::Split,
        ChangeKind::Architecture,
    ];

    fn apply(self, mutation: &mut Mutation, choices: &mut Choices<'_>) {
        let builder = std::mem::take(&mut mutation.builder);
        let (builder, change) = match self {
            ChangeKind::HyperParameter => hyper_parameter(builder, choices),
            ChangeKind::Token => token(builder, choices),
            ChangeKind::TokenType => token_type_change(builder, choices),
            ChangeKind::Tokenizer => tokenizer(builder, choices),
            ChangeKind::SpecialToken => special_token(builder, choices),
            ChangeKind::Scores => scores(builder, choices),
            ChangeKind::Merges => merges(builder, choices),
            ChangeKind::TensorType => tensor_type(builder, choices),
            ChangeKind::TensorShape => tensor_shape(builder, choices),
            ChangeKind::Split => split(builder, choices),
            ChangeKind::Architecture => architecture(builder, choices),
        };
        mutation.builder = builder;
        mutation.changes.push(change);
    }
}

/// Hyper-parameter keys (after `{arch}.`) llama.cpp reads.
const HYPER_PARAMETERS: [&str; 33] = [
    "context_length",
    "embedding_length",
    "embedding_length_out",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.layer_norm_rms_epsilon",
    "attention.layer_norm_epsilon",
    "attention.key_length",
    "attention.value_length",
    "attention.sliding_window",
    "attention.sliding_window_pattern",
    "attention.scale",
    "attention.causal",
    "rope.freq_base",
    "rope.freq_base_swa",
    "rope.dimension_count",
    "rope.scaling.type",
    "rope.scaling.factor",
    "rope.scaling.original_context_length",
    "rope.scaling.attn_factor",
    "expert_count",
    "expert_used_count",
    "expert_group_count",
    "expert_group_used_count",
    "nextn_predict_layers",
    "vocab_size",
    "final_logit_softcapping",
    "attn_logit_softcapping",
    "pooling_type",
    "logit_scale",
    "embedding_scale",
];

const INTERESTING_U32: [u32; 22] = [
    0,
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    16,
    31,
    32,
    33,
    64,
    256,
    511,
    512,
    513,
    1024,
    65_535,
    1 << 24,
    1 << 31,
    u32::MAX,
];

const INTERESTING_F32: [f32; 16] = [
    0.0,
    -0.0,
    -1.0,
    1.0,
    0.5,
    2.0,
    1e-5,
    1e-30,
    1e-45,
    1e30,
    10_000.0,
    f32::MAX,
    f32::MIN_POSITIVE,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
];

const STRINGS: [&str; 9] = [
    "",
    "none",
    "linear",
    "yarn",
    "longrope",
    "LINEAR",
    "7",
    "x",
    "\u{1b}[2J",
];

fn architecture_of(builder: &GgufBuilder) -> String {
    builder
        .get_metadata("general.architecture")
        .and_then(Value::as_str)
        .unwrap_or("llama")
        .to_owned()
}

fn layers_of(builder: &GgufBuilder) -> u64 {
    let key = format!("{}.block_count", architecture_of(builder));
    builder
        .get_metadata(&key)
        .and_then(Value::as_u64)
        .unwrap_or(2)
        .min(8)
}

/// A value of any shape llama.cpp might be handed for a key: interesting
/// numbers of the expected type, other types, per-layer arrays.
fn any_value(choices: &mut Choices<'_>, current: Option<&Value>, layers: u64) -> Value {
    let like_float = matches!(current, Some(Value::F32(_)));
    match choices.below(12) {
        0..=4 if like_float => Value::F32(*choices.pick(&INTERESTING_F32)),
        0..=4 => Value::U32(*choices.pick(&INTERESTING_U32)),
        5 => Value::F32(*choices.pick(&INTERESTING_F32)),
        6 => Value::U32(*choices.pick(&INTERESTING_U32)),
        7 => Value::String((*choices.pick(&STRINGS)).to_owned()),
        8 => match choices.below(5) {
            0 => Value::U64(u64::from(*choices.pick(&INTERESTING_U32))),
            1 => Value::I32(-1 - choices.below(3) as i32),
            2 => Value::I32(*choices.pick(&INTERESTING_U32) as i32),
            3 => Value::Bool(choices.chance(1, 2)),
            _ => Value::F64(f64::from(*choices.pick(&INTERESTING_F32))),
        },
        9 | 10 => {
            let length = match choices.below(4) {
                0 => layers.saturating_sub(1),
                1 => layers + 1,
                _ => layers,
            };
            let values: Vec<u32> = (0..length)
                .map(|_| *choices.pick(&INTERESTING_U32[..12]))
                .collect();
            if like_float {
                Value::Array(Array::F32(
                    values.iter().map(|&value| value as f32).collect(),
                ))
            } else {
                Value::Array(Array::U32(values))
            }
        }
        _ => Value::Array(Array::F32(
            (0..layers)
                .map(|_| *choices.pick(&INTERESTING_F32))
                .collect(),
        )),
    }
}

fn hyper_parameter(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    let key = format!(
        "{}.{}",
        architecture_of(&builder),
        choices.pick(&HYPER_PARAMETERS)
    );
    if choices.chance(1, 10) {
        return (builder.remove_metadata(&key), format!("remove {key}"));
    }
    let layers = layers_of(&builder);
    let value = if key.ends_with("rope.scaling.type") && choices.chance(3, 4) {
        Value::String((*choices.pick(&STRINGS)).to_owned())
    } else {
        any_value(choices, builder.get_metadata(&key), layers)
    };
    let change = format!("{key} = {}", value.describe());
    (builder.set_metadata(&key, value), change)
}

fn tokens_of(builder: &GgufBuilder) -> Vec<String> {
    builder
        .get_metadata("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .and_then(Array::as_strings)
        .map(<[String]>::to_vec)
        .unwrap_or_default()
}

fn token(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    const KEY: &str = "tokenizer.ggml.tokens";
    let mut tokens = tokens_of(&builder);
    if tokens.is_empty() {
        return (builder, "no tokens to change".to_owned());
    }
    let count = tokens.len() as u64;
    let index = choices.below(count) as usize;
    let other = choices.below(count) as usize;
    let change = match choices.below(9) {
        0 => {
            tokens[index] = tokens[other].clone();
            format!("token {index} = token {other}")
        }
        1 => {
            tokens[index].clear();
            format!("token {index} = empty")
        }
        2 => {
            tokens[index] = format!("[EMPTY_{other}]");
            if choices.chance(1, 2) {
                tokens[other].clear();
            }
            format!("token {index} = [EMPTY_{other}]")
        }
        3 => {
            // Invalid UTF-8: written raw, it cannot be a `String`.
            let mut raw: Vec<Vec<u8>> = tokens
                .iter()
                .map(|token| token.as_bytes().to_vec())
                .collect();
            raw[index] = choices
                .pick(&[
                    &b"\xff"[..],
                    b"\xc3",
                    b"a\xe2\x82",
                    b"\xed\xa0\x80",
                    b"\xf8\x88\x80\x80\x80",
                ])
                .to_vec();
            let payload = raw_string_array(&raw);
            return (
                builder.set_raw_metadata(KEY, ValueType::Array.id(), payload),
                format!("token {index} = invalid UTF-8"),
            );
        }
        4 => {
            let byte = choices.below(256);
            let target = format!("<0x{byte:02X}>");
            match tokens.iter().position(|token| *token == target) {
                Some(position) => tokens[position] = format!("<0x{byte:02x}?"),
                None => return (builder, "no byte token to rename".to_owned()),
            }
            format!("byte token {target} renamed")
        }
        5 => {
            tokens[index] = (*choices
                .pick(&["<0x-1>", "<0xZZ>", "<0x", "<0x0A", "<0x0a>", "<0x100>"]))
            .to_owned();
            format!("token {index} = {:?}", tokens[index])
        }
        6 => {
            let keep = choices.below(count) as usize;
            tokens.truncate(keep);
            format!("tokens cut to {keep}")
        }
        7 => {
            tokens.push(format!("extra{}", choices.below(1000)));
            "one token more".to_owned()
        }
        _ => {
            tokens[index] = "a".repeat(1 + choices.below(300) as usize);
            format!("token {index} = long run")
        }
    };
    (builder.set_metadata(KEY, tokens), change)
}

fn token_type_change(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    const KEY: &str = "tokenizer.ggml.token_type";
    let Some(Value::Array(Array::I32(types))) = builder.get_metadata(KEY) else {
        return (
            builder.set_metadata(KEY, vec![token_type::NORMAL; 4]),
            "token types added".to_owned(),
        );
    };
    let mut types = types.clone();
    if types.is_empty() {
        return (builder, "no token types".to_owned());
    }
    let index = choices.below(types.len() as u64) as usize;
    let value = *choices.pick(&[
        token_type::BYTE,
        token_type::CONTROL,
        token_type::UNKNOWN,
        token_type::NORMAL,
        0,
        4,
        5,
        7,
        -1,
        i32::MAX,
        i32::MIN,
    ]);
    if choices.chance(1, 6) {
        types.pop();
        return (
            builder.set_metadata(KEY, types),
            "token types one short".to_owned(),
        );
    }
    types[index] = value;
    (
        builder.set_metadata(KEY, types),
        format!("token type {index} = {value}"),
    )
}

fn tokenizer(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    match choices.below(4) {
        0 | 1 => {
            let model = *choices.pick(&[
                "gpt2",
                "bert",
                "t5",
                "rwkv",
                "none",
                "no_vocab",
                "test",
                "plamo2",
                "gemma4",
                "hybriddna",
                "whitespace",
                "llama",
                "",
                "unknown",
            ]);
            (
                builder.set_metadata("tokenizer.ggml.model", model),
                format!("tokenizer.ggml.model = {model:?}"),
            )
        }
        2 => {
            let pre = *choices.pick(&[
                "default", "llama3", "gpt-2", "smollm", "kimi-k2", "tekken", "nope", "",
            ]);
            (
                builder.set_metadata("tokenizer.ggml.pre", pre),
                format!("tokenizer.ggml.pre = {pre:?}"),
            )
        }
        _ => {
            let key = *choices.pick(&[
                "tokenizer.ggml.add_bos_token",
                "tokenizer.ggml.add_eos_token",
                "tokenizer.ggml.add_sep_token",
                "tokenizer.ggml.add_space_prefix",
                "tokenizer.ggml.remove_extra_whitespaces",
            ]);
            let value = if choices.chance(3, 4) {
                Value::Bool(choices.chance(1, 2))
            } else {
                Value::U32(1)
            };
            let change = format!("{key} = {}", value.describe());
            (builder.set_metadata(key, value), change)
        }
    }
}

fn special_token(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    let key = *choices.pick(&[
        "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.seperator_token_id",
        "tokenizer.ggml.padding_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
        "tokenizer.ggml.mask_token_id",
        "tokenizer.ggml.fim_pre_token_id",
    ]);
    let vocab = tokens_of(&builder).len() as u64;
    if choices.chance(1, 4) {
        return (builder.remove_metadata(key), format!("remove {key}"));
    }
    let value = match choices.below(6) {
        0 => Value::U32(vocab as u32),
        1 => Value::U32(u32::MAX),
        2 => Value::I32(-1),
        3 => Value::U64(choices.below(vocab.max(1))),
        _ => Value::U32(choices.below(vocab.max(1)) as u32),
    };
    let change = format!("{key} = {}", value.describe());
    (builder.set_metadata(key, value), change)
}

fn scores(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    const KEY: &str = "tokenizer.ggml.scores";
    let Some(Value::Array(Array::F32(scores))) = builder.get_metadata(KEY) else {
        return (builder.remove_metadata(KEY), format!("remove {KEY}"));
    };
    let mut scores = scores.clone();
    if scores.is_empty() {
        return (builder, "no scores".to_owned());
    }
    let index = choices.below(scores.len() as u64) as usize;
    let change = match choices.below(4) {
        0 => {
            scores.pop();
            "scores one short".to_owned()
        }
        1 => {
            let ints: Vec<i32> = scores.iter().map(|&score| score as i32).collect();
            return (builder.set_metadata(KEY, ints), "scores as i32".to_owned());
        }
        _ => {
            scores[index] = *choices.pick(&INTERESTING_F32);
            format!("score {index} = {}", scores[index])
        }
    };
    (builder.set_metadata(KEY, scores), change)
}

fn merges(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    const KEY: &str = "tokenizer.ggml.merges";
    let tokens = tokens_of(&builder);
    let mut words: Vec<&str> = tokens
        .iter()
        .map(String::as_str)
        .filter(|token| !token.is_empty())
        .collect();
    if words.is_empty() {
        words.push("a");
    }
    let mut merges: Vec<String> = (0..1 + choices.below(4))
        .map(|_| {
            let left = choices.pick(&words).to_string();
            let right = choices.pick(&words).to_string();
            format!("{left} {right}")
        })
        .collect();
    let change = match choices.below(5) {
        0 => {
            merges.push((*choices.pick(&["", " ", "ab", "a ", " a", "a  b"])).to_owned());
            "a malformed merge".to_owned()
        }
        1 => {
            let mut raw: Vec<Vec<u8>> = merges
                .iter()
                .map(|merge| merge.as_bytes().to_vec())
                .collect();
            raw.push(b"\xff \xfe".to_vec());
            return (
                builder.set_raw_metadata(KEY, ValueType::Array.id(), raw_string_array(&raw)),
                "a merge that is not UTF-8".to_owned(),
            );
        }
        2 => {
            return (
                builder.set_metadata(KEY, vec![1u32, 2]),
                "merges as u32".to_owned(),
            )
        }
        3 => return (builder.remove_metadata(KEY), format!("remove {KEY}")),
        _ => format!("{} merges", merges.len()),
    };
    (builder.set_metadata(KEY, merges), change)
}

const TYPES: [GgmlType; 16] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::Q4_0,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q4_K,
    GgmlType::Q8_K,
    GgmlType::IQ4_NL,
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::I64,
    GgmlType::F64,
    GgmlType::TQ2_0,
    GgmlType::MXFP4,
];

fn pick_tensor(builder: &GgufBuilder, choices: &mut Choices<'_>) -> Option<TensorSpec> {
    let specs = builder.tensor_specs();
    if specs.is_empty() {
        return None;
    }
    Some(specs[choices.below(specs.len() as u64) as usize].clone())
}

fn tensor_type(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    let Some(spec) = pick_tensor(&builder, choices) else {
        return (builder, "no tensors".to_owned());
    };
    let ggml_type = *choices.pick(&TYPES);
    let change = format!("tensor {} type = {ggml_type}", spec.name);
    (
        builder.edit_tensor(&spec.name, |spec| spec.type_id = ggml_type.id()),
        change,
    )
}

fn tensor_shape(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    let Some(spec) = pick_tensor(&builder, choices) else {
        return (builder, "no tensors".to_owned());
    };
    let name = spec.name.clone();
    match choices.below(5) {
        0 => (
            builder.remove_tensor(&name),
            format!("remove tensor {name}"),
        ),
        1 => {
            let new_name = format!("blk.{}.attn_q.weight", choices.below(6));
            let change = format!("tensor {name} renamed {new_name}");
            (
                builder.edit_tensor(&name, |spec| spec.name = new_name),
                change,
            )
        }
        2 => (
            builder.edit_tensor(&name, |spec| spec.dimensions.reverse()),
            format!("tensor {name} dimensions reversed"),
        ),
        3 => {
            let width = 32 * (1 + choices.below(4));
            (
                builder.edit_tensor(&name, |spec| spec.dimensions[0] = width),
                format!("tensor {name} rows of {width}"),
            )
        }
        _ => (
            builder.edit_tensor(&name, |spec| spec.dimensions.push(2)),
            format!("tensor {name} gets a dimension"),
        ),
    }
}

fn split(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    let count = *choices.pick(&[0u16, 1, 2, 3, 65_535]);
    let index = *choices.pick(&[0u16, 1, 2]);
    let builder = if choices.chance(1, 3) {
        builder.set_metadata("split.count", Value::U32(u32::from(count)))
    } else {
        builder.set_metadata("split.count", count)
    };
    let builder = if choices.chance(1, 4) {
        builder.set_metadata("split.no", Value::I32(i32::from(index)))
    } else {
        builder.set_metadata("split.no", index)
    };
    let tensors = builder.tensor_specs().len() as i32;
    let builder = builder.set_metadata("split.tensors.count", tensors + choices.below(2) as i32);
    (builder, format!("split {index} of {count}"))
}

fn architecture(builder: GgufBuilder, choices: &mut Choices<'_>) -> (GgufBuilder, String) {
    let architecture = *choices.pick(&[
        "qwen2", "qwen3", "phi3", "gemma2", "gemma3", "gpt2", "bert", "mamba", "clip", "llama4",
        "none", "",
    ]);
    // Move the hyper-parameters along, as a converter would have written them.
    let old = architecture_of(&builder);
    let mut builder = builder.set_metadata("general.architecture", architecture);
    if choices.chance(3, 4) {
        let prefix = format!("{old}.");
        for key in builder
            .metadata_keys()
            .iter()
            .map(|key| key.to_string())
            .collect::<Vec<_>>()
        {
            if let Some(suffix) = key.strip_prefix(&prefix) {
                if let Some(value) = builder.get_metadata(&key).cloned() {
                    builder = builder
                        .remove_metadata(&key)
                        .set_metadata(&format!("{architecture}.{suffix}"), value);
                }
            }
        }
    }
    (builder, format!("general.architecture = {architecture:?}"))
}

#[cfg(test)]
mod tests {
    use super::super::writer::tiny_model;
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_file() {
        let base = tiny_model();
        for seed in 0..50 {
            let first = mutate(&base, seed);
            let second = mutate(&base, seed);
            assert_eq!(first.to_bytes(), second.to_bytes(), "seed {seed}");
            assert_eq!(first.changes, second.changes);
        }
    }

    #[test]
    fn seeds_give_different_files() {
        let base = tiny_model();
        let distinct: std::collections::HashSet<Vec<u8>> = (0..200)
            .map(|seed| mutate(&base, seed).to_bytes())
            .collect();
        assert!(distinct.len() > 150, "{} distinct files", distinct.len());
    }

    #[test]
    fn fuzz_input_steers_the_choices() {
        let input = [1, 0, 0, 0, 0, 0, 0, 0, 9];
        let mut choices = Choices::from_bytes(&input);
        // Whole 8-byte words of input first, then the generator.
        assert_eq!(choices.next_u64(), 1);
        let generated = choices.next_u64();
        assert_eq!(Choices::from_bytes(&input).next_u64(), 1);
        let mut again = Choices::from_bytes(&input);
        again.next_u64();
        assert_eq!(again.next_u64(), generated);
    }
}
