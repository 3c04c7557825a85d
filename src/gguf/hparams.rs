//! Hyper-parameters: the `{arch}.*` keys llama.cpp reads in
//! `llama_model_base::load_hparams` (src/llama-model.cpp) and in each
//! architecture's `load_arch_hparams` (src/models/*.cpp). A value of the
//! wrong GGUF type makes llama.cpp throw; a zero, negative, non-finite or
//! inconsistent one makes it abort in a `GGML_ASSERT` while loading, while
//! building the compute graph, or in the middle of computing it. olm refuses
//! all of them here, naming the key.
//!
//! [`check`] applies to the keys a file has (at [`super::parse`] level);
//! [`check_required`] adds the keys llama.cpp cannot do without (at
//! [`super::inspect`] level).

use std::fmt::Display;

use super::arch::{Coverage, Family};
use super::arch_asserts;
use super::error::{printable, GgufError};
use super::keys::{self, arch_key};
use super::value::{Array, Value};
use super::{GgufFile, MAX_BLOCK_COUNT};

/// Largest `{arch}.expert_count`: `LLAMA_MAX_EXPERTS` (llama-hparams.h),
/// asserted in `load_hparams` (`GGML_ASSERT(hparams.n_expert <= LLAMA_MAX_EXPERTS)`).
pub const MAX_EXPERT_COUNT: u32 = 1024;

/// Entries of `{arch}.attention.sliding_window_pattern` as an array: llama.cpp
/// reads it into a `std::array<uint32_t, LLAMA_MAX_LAYERS>`
/// (`llama_model_loader::get_arr` throws "array length … exceeds max").
pub const MAX_LAYER_ARRAY_LENGTH: u64 = MAX_BLOCK_COUNT;

/// Largest norm epsilon olm accepts. ggml asserts `eps >= 0.0f`
/// (ggml-cpu/ops.cpp `ggml_compute_forward_rms_norm_f32` and `_norm_f32`),
/// so a NaN or negative epsilon aborts; 0 divides by zero on a zero row. Real
/// models use 1e-5 or 1e-6: anything above 1 is a broken file.
pub const MAX_NORM_EPSILON: f32 = 1.0;

/// Largest rope frequency base olm accepts: ggml's rope takes
/// `powf(freq_base, -2.0f/n_dims)` (ggml-cpu/ops.cpp `ggml_compute_forward_rope`),
/// which a NaN, zero or negative base turns into NaN activations. Published
/// models use 1e4 to 1e8.
pub const MAX_ROPE_FREQ_BASE: f32 = 1e12;

/// Fewest rope dimensions: rope rotates pairs, and zero pairs make ggml's
/// CPU rope kernel loop forever (ggml-cpu/ops.cpp `ggml_compute_forward_rope_flt`,
/// "fill the remain channels": `i0 += n_dims - 2` with `n_dims == 0`).
pub const MIN_ROPE_DIMENSIONS: u32 = 2;

/// `LLAMA_POOLING_TYPE_NONE` … `LLAMA_POOLING_TYPE_RANK` (include/llama.h);
/// llama-graph.cpp `build_pooling` aborts with "unknown pooling type" on
/// any other value when embeddings are computed (as `olm serve` does).
pub const MAX_POOLING_TYPE: u32 = 4;

/// `LLAMA_ROPE_SCALING_TYPES` (src/llama-model.cpp); `load_hparams` asserts
/// `rope_scaling_type_train != LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED`.
const ROPE_SCALING_TYPES: [&str; 4] = ["none", "linear", "yarn", "longrope"];

/// Float keys read with `get_key<float>`: they must be finite, and within
/// the bounds given.
#[rustfmt::skip]
const FLOAT_KEYS: [(&str, FloatRange); 17] = [
    ("rope.freq_base", FloatRange::Positive { max: MAX_ROPE_FREQ_BASE }),
    ("rope.freq_base_swa", FloatRange::Positive { max: MAX_ROPE_FREQ_BASE }),
    ("attention.layer_norm_rms_epsilon", FloatRange::Positive { max: MAX_NORM_EPSILON }),
    ("attention.layer_norm_epsilon", FloatRange::Positive { max: MAX_NORM_EPSILON }),
    ("attention.group_norm_epsilon", FloatRange::Positive { max: MAX_NORM_EPSILON }),
    // 0 means "no scaling" (load_hparams: `ropescale == 0.0f ? 1.0f : 1.0f/ropescale`).
    ("rope.scaling.factor", FloatRange::NonNegative),
    ("rope.scale_linear", FloatRange::NonNegative),
    ("rope.scaling.attn_factor", FloatRange::NonNegative),
    ("rope.scaling.alpha", FloatRange::NonNegative),
    // 0 turns soft-capping off where it is optional (gemma3, llama-graph.cpp `build_attn_mha`).
    ("attn_logit_softcapping", FloatRange::NonNegative),
    ("final_logit_softcapping", FloatRange::NonNegative),
    ("router_logit_softcapping", FloatRange::NonNegative),
    ("attention.scale", FloatRange::Finite),
    ("logit_scale", FloatRange::Finite),
    ("embedding_scale", FloatRange::Finite),
    ("residual_scale", FloatRange::Finite),
    ("expert_weights_scale", FloatRange::Finite),
];

/// `u32` keys read with `get_key<uint32_t>`, with their smallest value.
#[rustfmt::skip]
const U32_KEYS: [(&str, u32); 18] = [
    ("context_length", 1),
    ("embedding_length", 1),
    ("embedding_length_out", 0),
    ("block_count", 1),
    ("vocab_size", 1),
    ("nextn_predict_layers", 0),
    ("expert_count", 0),
    ("expert_group_count", 0),
    ("expert_group_used_count", 0),
    ("rope.scaling.original_context_length", 1),
    ("attention.key_length", 1),
    ("attention.value_length", 1),
    ("attention.key_length_swa", 1),
    ("attention.value_length_swa", 1),
    // ggml-cpu/ops.cpp ggml_compute_forward_rope_flt: with n_dims == 0 the
    // loop that copies the unrotated channels steps back forever
    // (`i0 += n_dims - 2`): `olm run` hung. Found by the gguf_llama fuzz target.
    ("rope.dimension_count", MIN_ROPE_DIMENSIONS),
    ("rope.dimension_count_swa", MIN_ROPE_DIMENSIONS),
    ("attention.sliding_window", 0),
    ("expert_gating_func", 0),
];

/// `bool` keys read with `get_key<bool>`.
const BOOL_KEYS: [&str; 4] = [
    "attention.causal",
    "rope.scaling.finetuned",
    "expert_weights_norm",
    "use_parallel_residual",
];

#[derive(Clone, Copy, Debug)]
enum FloatRange {
    Finite,
    NonNegative,
    Positive { max: f32 },
}

impl FloatRange {
    fn accepts(self, value: f32) -> bool {
        value.is_finite()
            && match self {
                FloatRange::Finite => true,
                FloatRange::NonNegative => value >= 0.0,
                FloatRange::Positive { max } => value > 0.0 && value <= max,
            }
    }

    fn describe(self) -> String {
        match self {
            FloatRange::Finite => "a finite number".to_owned(),
            FloatRange::NonNegative => "a finite number, 0 or more".to_owned(),
            FloatRange::Positive { max } => format!("a finite number above 0, at most {max}"),
        }
    }
}

/// The hyper-parameters a file has, checked one by one and against each
/// other. Does nothing for a file without `general.architecture`: its keys
/// mean nothing to llama.cpp.
pub fn check(file: &GgufFile, coverage: Option<Coverage>) -> Result<(), GgufError> {
    let Some(architecture) = file.architecture() else {
        return Ok(());
    };
    let key = |suffix: &str| arch_key(architecture, suffix);
    check_scalar_types(file, architecture)?;
    let layers = keys::u32_value(file, &key("block_count"))?.map(u64::from);
    if let Some(layers) = layers {
        check_layer_count(&key("block_count"), layers)?;
    }
    let family = match coverage {
        Some(Coverage::Covered(family)) => Some(family),
        _ => None,
    };
    check_pooling_type(file, &key("pooling_type"))?;
    check_rope_sections(file, architecture)?;
    check_rope_scaling_type(file, &key("rope.scaling.type"))?;
    check_sliding_window_pattern(file, architecture, family, layers)?;
    if let Some(family) = family {
        check_softcapping(file, architecture, family)?;
    }
    arch_asserts::check(file, architecture, layers)?;
    let Some(layers) = layers else {
        return Ok(());
    };
    let heads = LayerShape::read(file, architecture, layers, family)?;
    check_experts(file, architecture, layers)?;
    check_next_token_layers(file, architecture, layers)?;
    heads.check_head_sizes(file, architecture, family)
}

/// The keys llama.cpp cannot load a model without: `get_key` without
/// `required = false` in `load_hparams` (every architecture) and in the
/// covered architectures' `load_arch_hparams`, plus the feed-forward and
/// head counts their tensor shapes are computed from.
pub fn check_required(
    file: &GgufFile,
    architecture: &str,
    coverage: Coverage,
) -> Result<(), GgufError> {
    const GENERIC: [&str; 3] = ["context_length", "embedding_length", "block_count"];
    const COVERED: [&str; 3] = [
        "feed_forward_length",
        "attention.head_count",
        "attention.layer_norm_rms_epsilon",
    ];
    let covered: &[&str] = match coverage {
        Coverage::Covered(_) => &COVERED,
        Coverage::Generic => &[],
    };
    for suffix in GENERIC.iter().chain(covered) {
        let key = arch_key(architecture, suffix);
        if file.get(&key).is_none() {
            return Err(GgufError::MissingKey {
                key: printable(&key),
                needed_by: format!("llama.cpp's '{}' loader", printable(architecture)),
            });
        }
    }
    Ok(())
}

pub(super) fn out_of_range(
    key: &str,
    value: impl Display,
    expected: impl Into<String>,
) -> GgufError {
    GgufError::HyperParameterOutOfRange {
        key: printable(key),
        value: value.to_string().into(),
        expected: expected.into().into(),
    }
}

/// Every scalar key llama.cpp reads with one exact type: that type, and a
/// sane value.
fn check_scalar_types(file: &GgufFile, architecture: &str) -> Result<(), GgufError> {
    for (suffix, min) in U32_KEYS {
        let key = arch_key(architecture, suffix);
        if let Some(value) = keys::u32_value(file, &key)? {
            if value < min {
                return Err(out_of_range(&key, value, format!("at least {min}")));
            }
        }
    }
    for (suffix, range) in FLOAT_KEYS {
        let key = arch_key(architecture, suffix);
        if let Some(value) = keys::f32_value(file, &key)? {
            if !range.accepts(value) {
                return Err(out_of_range(&key, value, range.describe()));
            }
        }
    }
    for suffix in BOOL_KEYS {
        keys::bool_value(file, &arch_key(architecture, suffix))?;
    }
    Ok(())
}

fn check_layer_count(key: &str, layers: u64) -> Result<(), GgufError> {
    if layers == 0 || layers > MAX_BLOCK_COUNT {
        return Err(out_of_range(
            key,
            layers,
            format!("from 1 to {MAX_BLOCK_COUNT}"),
        ));
    }
    Ok(())
}

/// Architectures whose rope is always multi-dimensional (M-RoPE or
/// interleaved M-RoPE: `llama_model_rope_type` in llama-model.cpp).
const MULTI_ROPE_ARCHITECTURES: [&str; 9] = [
    "qwen2vl",
    "paddleocr",
    "qwen3vl",
    "qwen3vlmoe",
    "qwen35",
    "qwen35moe",
    "clef",
    "qwen4exp",
    "qwen3tts",
];

/// Largest rope section: a count of rotated pairs, at most half a head.
const MAX_ROPE_SECTION: u32 = 1 << 16;

/// `rope.dimension_sections` (`get_key_or_arr` into 4 `int`s): at most four
/// entries, small enough that ggml's `int` sums of them cannot overflow
/// (their sum is a modulus in `ggml_mrope_cache_init`). A multi-dimensional
/// rope asserts that one of the first three is positive (ggml-cpu/ops.cpp
/// `GGML_ASSERT(sections[0] > 0 || sections[1] > 0 || sections[2] > 0)`) at
/// the first decode: the architectures that always use one need it, and
/// any file whose sections turn it on (any nonzero entry) too. Found by an
/// audit relabelling SmolLM2 as paddleocr.
fn check_rope_sections(file: &GgufFile, architecture: &str) -> Result<(), GgufError> {
    let key = arch_key(architecture, "rope.dimension_sections");
    let sections: Vec<u32> = match file.get(&key) {
        None if MULTI_ROPE_ARCHITECTURES.contains(&architecture) => {
            return Err(GgufError::MissingKey {
                key: printable(&key),
                needed_by: format!(
                    "the multi-dimensional rope of '{}'",
                    printable(architecture)
                ),
            })
        }
        None => return Ok(()),
        Some(Value::U32(value)) => vec![*value; 4],
        Some(Value::Array(Array::U32(values))) => values.clone(),
        Some(Value::Array(Array::I32(values))) => {
            values.iter().map(|&value| value as u32).collect()
        }
        Some(other) => {
            return Err(keys::wrong_type(
                &key,
                "u32, or an array of at most 4 u32",
                other,
            ))
        }
    };
    if sections.len() > 4 {
        return Err(GgufError::ArrayTooLong {
            key: printable(&key),
            length: sections.len() as u64,
            limit: 4,
        });
    }
    if let Some(&large) = sections.iter().find(|&&value| value > MAX_ROPE_SECTION) {
        return Err(out_of_range(
            &key,
            large,
            format!("sections of at most {MAX_ROPE_SECTION}"),
        ));
    }
    let turned_on =
        sections.iter().any(|&value| value > 0) || MULTI_ROPE_ARCHITECTURES.contains(&architecture);
    if turned_on && sections.iter().take(3).all(|&value| value == 0) {
        return Err(out_of_range(
            &key,
            file.get(&key).map_or_else(String::new, Value::describe),
            "one of the first three sections above 0 (ggml's multi-dimensional rope asserts it)",
        ));
    }
    Ok(())
}

fn check_pooling_type(file: &GgufFile, key: &str) -> Result<(), GgufError> {
    match keys::u32_value(file, key)? {
        Some(value) if value > MAX_POOLING_TYPE => Err(out_of_range(
            key,
            value,
            format!("a pooling type from 0 to {MAX_POOLING_TYPE}"),
        )),
        _ => Ok(()),
    }
}

fn check_rope_scaling_type(file: &GgufFile, key: &str) -> Result<(), GgufError> {
    match keys::str_value(file, key)? {
        Some(value) if !ROPE_SCALING_TYPES.contains(&value) => Err(GgufError::UnknownKeyValue {
            key: printable(key),
            value: printable(value).into(),
            allowed: "one of none, linear, yarn, longrope",
        }),
        _ => Ok(()),
    }
}

/// `load_swa_pattern` (llama-model.cpp): an array of at most
/// `LLAMA_MAX_LAYERS` bool/u32/i32 entries, or one `u32` period. When the
/// model uses sliding-window attention (a window above 0, or Gemma 2,
/// which always does), the pattern must make at least one layer a
/// sliding-window layer: `llama_model::create_memory` asserts
/// `hparams.is_swa_any()`. A period of 1 marks none (`il % 1 < 0`), nor
/// does an array of zeros. Found by the mutation fuzzing.
fn check_sliding_window_pattern(
    file: &GgufFile,
    architecture: &str,
    family: Option<Family>,
    layers: Option<u64>,
) -> Result<(), GgufError> {
    let key = arch_key(architecture, "attention.sliding_window_pattern");
    let window = keys::u32_value(file, &arch_key(architecture, "attention.sliding_window"))?;
    let uses_sliding_window = window.is_some_and(|window| window > 0)
        || family.is_some_and(|family| family.name == "gemma2");
    let marks_a_layer = match file.get(&key) {
        None => true,
        Some(Value::U32(period)) => *period != 1,
        Some(Value::Array(array @ (Array::Bool(_) | Array::U32(_) | Array::I32(_)))) => {
            let length = array.len() as u64;
            if length > MAX_LAYER_ARRAY_LENGTH {
                return Err(GgufError::ArrayTooLong {
                    key: printable(&key),
                    length,
                    limit: MAX_LAYER_ARRAY_LENGTH,
                });
            }
            let layers = layers.unwrap_or(length) as usize;
            match array {
                Array::Bool(values) => values.iter().take(layers).any(|&value| value),
                Array::U32(values) => values.iter().take(layers).any(|&value| value != 0),
                Array::I32(values) => values.iter().take(layers).any(|&value| value != 0),
                _ => true,
            }
        }
        Some(other) => {
            return Err(keys::wrong_type(
                &key,
                "u32, or an array of bool, u32 or i32",
                other,
            ))
        }
    };
    if uses_sliding_window && !marks_a_layer {
        return Err(out_of_range(
            &key,
            file.get(&key).map_or_else(String::new, Value::describe),
            "a pattern that makes at least one layer a sliding-window layer",
        ));
    }
    Ok(())
}

fn check_softcapping(file: &GgufFile, architecture: &str, family: Family) -> Result<(), GgufError> {
    if !family.always_softcaps {
        return Ok(());
    }
    for suffix in ["attn_logit_softcapping", "final_logit_softcapping"] {
        let key = arch_key(architecture, suffix);
        if let Some(value) = keys::f32_value(file, &key)? {
            if value <= 0.0 {
                return Err(out_of_range(
                    &key,
                    value,
                    format!("above 0 ({architecture} always divides by it)"),
                ));
            }
        }
    }
    Ok(())
}

/// The asserts of `load_hparams` on experts:
/// `n_expert <= LLAMA_MAX_EXPERTS`, `n_expert_used_max <= n_expert`, and
/// with experts `n_expert_used_max > 0`, `n_expert_groups < n_expert`,
/// `n_expert % n_expert_groups == 0`, `0 < n_group_used < n_expert_groups`;
/// without, no experts used and no groups.
fn check_experts(file: &GgufFile, architecture: &str, layers: u64) -> Result<(), GgufError> {
    let key = |suffix: &str| arch_key(architecture, suffix);
    let count_key = key("expert_count");
    let used_key = key("expert_used_count");
    let groups_key = key("expert_group_count");
    let group_used_key = key("expert_group_used_count");
    let experts = keys::u32_value(file, &count_key)?.unwrap_or(0);
    let used = keys::u32_per_layer(file, &used_key, layers)?
        .and_then(|used| used.into_iter().max())
        .unwrap_or(0);
    let groups = keys::u32_value(file, &groups_key)?.unwrap_or(0);
    let group_used = keys::u32_value(file, &group_used_key)?.unwrap_or(0);
    if experts > MAX_EXPERT_COUNT {
        return Err(out_of_range(
            &count_key,
            experts,
            format!("at most {MAX_EXPERT_COUNT}"),
        ));
    }
    if used > experts {
        return Err(out_of_range(
            &used_key,
            used,
            format!("at most '{}' ({experts})", printable(&count_key)),
        ));
    }
    if experts == 0 {
        if groups > 0 {
            return Err(out_of_range(
                &groups_key,
                groups,
                "0 in a model without experts",
            ));
        }
        return Ok(());
    }
    if used == 0 {
        return Err(out_of_range(
            &used_key,
            used,
            "at least 1 in a model with experts",
        ));
    }
    if groups >= experts {
        return Err(out_of_range(
            &groups_key,
            groups,
            format!("below '{}' ({experts})", printable(&count_key)),
        ));
    }
    if groups > 1 {
        if experts % groups != 0 {
            return Err(GgufError::HyperParameterMismatch {
                key: printable(&groups_key).into(),
                value: u64::from(groups),
                expected: format!("a divisor of '{}' ({experts})", printable(&count_key)).into(),
                reason: "experts are split evenly into groups",
            });
        }
        if group_used == 0 || group_used >= groups {
            return Err(out_of_range(
                &group_used_key,
                group_used,
                format!("from 1 to {}", groups - 1),
            ));
        }
    }
    Ok(())
}

/// `GGML_ASSERT(hparams.n_layer_nextn <= hparams.n_layer_all)` in `load_hparams`.
fn check_next_token_layers(
    file: &GgufFile,
    architecture: &str,
    layers: u64,
) -> Result<(), GgufError> {
    let key = arch_key(architecture, "nextn_predict_layers");
    match keys::u32_value(file, &key)? {
        Some(value) if u64::from(value) > layers => Err(out_of_range(
            &key,
            value,
            format!("at most the block count ({layers})"),
        )),
        _ => Ok(()),
    }
}

/// A covered architecture shapes every layer's key and value projections
/// with layer 0's counts (`LLAMA_LOAD_LOCALS` in llama-model.h:
/// `n_embd_k_gqa = hparams.n_embd_k_gqa()`), but sizes each layer's KV cache
/// with its own (`n_embd_k_gqa(il)`): a layer whose count differs writes
/// keys of one width into a cache row of another, and ggml aborts
/// (ggml.c `ggml_set_rows`: `GGML_ASSERT(a->ne[0] == b->ne[0])`). Found by
/// the mutation test.
fn check_same_for_every_layer(values: &[u32], key: &str) -> Result<(), GgufError> {
    let Some(&first) = values.first() else {
        return Ok(());
    };
    match values.iter().position(|&value| value != first) {
        Some(layer) => Err(GgufError::HyperParameterMismatch {
            key: printable(key).into(),
            value: u64::from(values[layer]),
            expected: format!("{first} for layer {layer}, as for layer 0").into(),
            reason: "the architecture shapes every layer's key and value projections alike",
        }),
        None => Ok(()),
    }
}

/// Sliding-window layers of a covered architecture use the same tensors as
/// the others (`n_embd_head_k` of layer 0 in `load_arch_tensors`) but their
/// own head sizes (`n_embd_head_k_swa`) in the graph and KV cache: they
/// must agree, or ggml's reshapes abort.
fn check_sliding_window_sizes(
    file: &GgufFile,
    architecture: &str,
    head_size: u32,
    value_size: u32,
) -> Result<(), GgufError> {
    for (suffix, size) in [
        ("attention.key_length_swa", head_size),
        ("attention.value_length_swa", value_size),
    ] {
        let key = arch_key(architecture, suffix);
        if let Some(value) = keys::u32_value(file, &key)? {
            if value != size {
                return Err(GgufError::HyperParameterMismatch {
                    key: printable(&key).into(),
                    value: u64::from(value),
                    expected: format!("the head size, {size}").into(),
                    reason: "sliding-window layers share the other layers' tensors",
                });
            }
        }
    }
    Ok(())
}

/// Heads per layer.
struct LayerShape {
    heads: Vec<u32>,
}

impl LayerShape {
    /// Reads `feed_forward_length`, `attention.head_count` and
    /// `attention.head_count_kv` (`get_key_or_arr`: one value or one per
    /// layer). Covered architectures need every layer to have heads and a
    /// feed-forward width (their tensor shapes multiply by them).
    fn read(
        file: &GgufFile,
        architecture: &str,
        layers: u64,
        family: Option<Family>,
    ) -> Result<Self, GgufError> {
        let key = |suffix: &str| arch_key(architecture, suffix);
        let feed_forward_key = key("feed_forward_length");
        let heads_key = key("attention.head_count");
        let kv_heads_key = key("attention.head_count_kv");
        let feed_forward = keys::u32_per_layer(file, &feed_forward_key, layers)?;
        let heads = keys::u32_per_layer(file, &heads_key, layers)?;
        // llama.cpp: "n_head_kv is optional, default to n_head".
        let kv_heads = keys::u32_per_layer(file, &kv_heads_key, layers)?;
        if family.is_some() {
            for (values, key) in [
                (&feed_forward, &feed_forward_key),
                (&heads, &heads_key),
                (&kv_heads, &kv_heads_key),
            ] {
                if let Some(zero) = values.iter().flatten().find(|&&value| value == 0) {
                    return Err(out_of_range(key, zero, "at least 1 for every layer"));
                }
            }
        }
        let heads = heads.unwrap_or_default();
        let kv_heads = kv_heads.unwrap_or_else(|| heads.clone());
        if family.is_some() {
            check_same_for_every_layer(&kv_heads, &kv_heads_key)?;
        }
        for (layer, (&query, &kv)) in heads.iter().zip(&kv_heads).enumerate() {
            // ggml_mul_mat broadcasts K over Q heads: ggml_can_mul_mat
            // asserts `t1->ne[2] % t0->ne[2] == 0` (ggml.c) when the
            // attention graph is built.
            if kv > 0 && query % kv != 0 {
                return Err(GgufError::HyperParameterMismatch {
                    key: printable(&kv_heads_key).into(),
                    value: u64::from(kv),
                    expected: format!(
                        "a divisor of '{}' ({query}) for layer {layer}",
                        printable(&heads_key)
                    )
                    .into(),
                    reason: "attention shares each key head among a whole number of query heads",
                });
            }
        }
        Ok(Self { heads })
    }

    /// Head sizes and rope dimensions, as `load_hparams` derives them from
    /// layer 0 (`n_embd / n_head()` unless `attention.key_length` says).
    fn check_head_sizes(
        &self,
        file: &GgufFile,
        architecture: &str,
        family: Option<Family>,
    ) -> Result<(), GgufError> {
        let key = |suffix: &str| arch_key(architecture, suffix);
        let Some(&heads) = self.heads.first().filter(|&&heads| heads > 0) else {
            return Ok(());
        };
        let Some(embedding) = keys::u32_value(file, &key("embedding_length"))? else {
            return Ok(());
        };
        let key_length = keys::u32_value(file, &key("attention.key_length"))?;
        let value_length = keys::u32_value(file, &key("attention.value_length"))?;
        if family.is_some() && key_length.is_none() && embedding % heads != 0 {
            return Err(GgufError::HyperParameterMismatch {
                key: printable(&key("attention.head_count")).into(),
                value: u64::from(heads),
                expected: format!(
                    "a divisor of '{}' ({embedding}), or 'attention.key_length' given",
                    printable(&key("embedding_length"))
                )
                .into(),
                reason: "each head gets an equal share of the embedding",
            });
        }
        let head_size = key_length.unwrap_or(embedding / heads);
        let value_size = value_length.unwrap_or(embedding / heads);
        if family.is_some() && value_size != head_size {
            return Err(GgufError::HyperParameterMismatch {
                key: printable(&key("attention.value_length")).into(),
                value: u64::from(value_size),
                expected: format!("the key head size, {head_size}").into(),
                reason: "the graph asserts n_embd_head_v == n_embd_head_k",
            });
        }
        if family.is_some() {
            check_sliding_window_sizes(file, architecture, head_size, value_size)?;
        }
        let rope_key = key("rope.dimension_count");
        let rope_dimensions = keys::u32_value(file, &rope_key)?;
        if let Some(family) = family {
            let rope = rope_dimensions.unwrap_or(head_size);
            if family.rope_spans_head && rope != head_size {
                return Err(GgufError::HyperParameterMismatch {
                    key: printable(&rope_key).into(),
                    value: u64::from(rope),
                    expected: format!("the head size, {head_size}").into(),
                    reason: "the graph asserts n_rot == n_embd_head",
                });
            }
        }
        let rope = match (rope_dimensions, family) {
            (Some(rope), _) => Some(rope),
            (None, Some(_)) => Some(head_size),
            (None, None) => None,
        };
        let rope_swa_key = key("rope.dimension_count_swa");
        let rope_swa = keys::u32_value(file, &rope_swa_key)?;
        for (key, rope) in [(&rope_key, rope), (&rope_swa_key, rope_swa)] {
            // ggml-cpu/ops.cpp rope: `GGML_ASSERT(n_dims <= ne0)` and `GGML_ASSERT(n_dims % 2 == 0)`.
            if let Some(rope) = rope.filter(|&rope| rope > head_size || rope % 2 != 0) {
                return Err(GgufError::HyperParameterMismatch {
                    key: printable(key).into(),
                    value: u64::from(rope),
                    expected: format!("even and at most the head size, {head_size}").into(),
                    reason: "ggml's rope rotates pairs of a head's elements",
                });
            }
        }
        Ok(())
    }
}
