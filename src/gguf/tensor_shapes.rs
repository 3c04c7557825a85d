//! The shape llama.cpp's loader creates each tensor of a covered
//! architecture with (`create_tensor` calls in src/models/<name>.cpp,
//! sized from layer 0's hyper-parameters by `LLAMA_LOAD_LOCALS`). A file
//! whose tensor has another shape makes llama.cpp throw "tensor ... has
//! wrong shape" while loading; olm refuses it first so that `olm show` and
//! `olm run` agree. Tensors this table does not know (optional extras,
//! experts) are left to llama.cpp.

use super::arch::Family;
use super::error::{printable, GgufError};
use super::keys::{self, arch_key};
use super::{GgufFile, TensorInfo};

/// The sizes tensor shapes are made of, as `LLAMA_LOAD_LOCALS` reads them.
struct Sizes {
    embedding: u64,
    vocab: u64,
    heads: u64,
    kv_heads: u64,
    feed_forward: u64,
    head_k: u64,
    head_v: u64,
    rope: u64,
}

impl Sizes {
    /// `None` when a size is missing (the required-key check reports it).
    fn read(header: &GgufFile, architecture: &str) -> Result<Option<Self>, GgufError> {
        let key = |suffix: &str| arch_key(architecture, suffix);
        let (Some(embedding), Some(layers), Some(vocab)) = (
            keys::u32_value(header, &key("embedding_length"))?,
            keys::u32_value(header, &key("block_count"))?,
            header.vocab_size(),
        ) else {
            return Ok(None);
        };
        let layers = u64::from(layers);
        let first = |suffix: &str| -> Result<Option<u64>, GgufError> {
            Ok(keys::u32_per_layer(header, &key(suffix), layers)?
                .and_then(|values| values.first().copied())
                .map(u64::from))
        };
        let (Some(heads), Some(feed_forward)) = (
            first("attention.head_count")?,
            first("feed_forward_length")?,
        ) else {
            return Ok(None);
        };
        let kv_heads = first("attention.head_count_kv")?.unwrap_or(heads);
        let embedding = u64::from(embedding);
        let per_head = embedding.checked_div(heads).unwrap_or(0);
        let head_k =
            keys::u32_value(header, &key("attention.key_length"))?.map_or(per_head, u64::from);
        let head_v =
            keys::u32_value(header, &key("attention.value_length"))?.map_or(per_head, u64::from);
        let rope = keys::u32_value(header, &key("rope.dimension_count"))?.map_or(head_k, u64::from);
        Ok(Some(Self {
            embedding,
            vocab,
            heads,
            kv_heads,
            feed_forward,
            head_k,
            head_v,
            rope,
        }))
    }

    /// The shape `create_tensor` gives the tensor named `role` (without
    /// its `blk.N.` prefix), if this table knows it.
    fn shape(&self, family: &Family, role: &str) -> Option<Vec<u64>> {
        let Sizes {
            embedding: e,
            vocab: v,
            heads: h,
            kv_heads: k,
            feed_forward: f,
            head_k: dk,
            head_v: dv,
            rope: r,
        } = *self;
        let query = if family.attention_is_embedding_wide {
            e
        } else {
            dk * h
        };
        let (key, value) = (dk * k, dv * k);
        let up = if family.name == "phi3" { 2 * f } else { f };
        Some(match role {
            "token_embd.weight" | "output.weight" => vec![e, v],
            "output.bias" => vec![v],
            "output_norm.weight"
            | "attn_norm.weight"
            | "ffn_norm.weight"
            | "post_attention_norm.weight"
            | "post_ffw_norm.weight"
            | "attn_output.bias"
            | "ffn_down.bias" => vec![e],
            "attn_q.weight" => vec![e, query],
            "attn_k.weight" => vec![e, key],
            "attn_v.weight" => vec![e, value],
            "attn_qkv.weight" => vec![e, query + key + value],
            "attn_q.bias" => vec![query],
            "attn_k.bias" => vec![key],
            "attn_v.bias" => vec![value],
            "attn_qkv.bias" => vec![query + key + value],
            "attn_output.weight" => vec![query, e],
            "attn_q_norm.weight" | "attn_k_norm.weight" => vec![dk],
            "ffn_gate.weight" => vec![e, f],
            "ffn_up.weight" => vec![e, up],
            "ffn_down.weight" => vec![f, e],
            "ffn_gate.bias" => vec![f],
            "ffn_up.bias" => vec![up],
            "rope_freqs.weight" | "rope_factors_long.weight" | "rope_factors_short.weight" => {
                vec![r / 2]
            }
            _ => return None,
        })
    }
}

/// `blk.N.role` → `role`; other names as they are.
fn role_of(name: &str) -> &str {
    name.strip_prefix("blk.")
        .and_then(|rest| rest.split_once('.'))
        .filter(|(layer, _)| layer.parse::<u64>().is_ok())
        .map_or(name, |(_, role)| role)
}

/// Dimensions with trailing ones dropped, as ggml compares them
/// (`llama_model_loader::check_tensor_dims`).
fn trimmed(dimensions: &[u64]) -> &[u64] {
    let length = dimensions
        .iter()
        .rposition(|&size| size != 1)
        .map_or(0, |last| last + 1);
    &dimensions[..length]
}

/// Every tensor this table knows has the shape llama.cpp will create it with.
pub fn check(header: &GgufFile, family: &Family, tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let Some(sizes) = Sizes::read(header, family.name)? else {
        return Ok(());
    };
    for tensor in tensors {
        let Some(expected) = sizes.shape(family, role_of(&tensor.name)) else {
            continue;
        };
        if trimmed(&expected) != trimmed(&tensor.dimensions) {
            return Err(GgufError::TensorShapeMismatch {
                name: printable(&tensor.name),
                found: tensor.dimensions.clone().into(),
                expected: expected.into(),
            });
        }
    }
    Ok(())
}

/// Any architecture whose head counts vary from layer to layer: each
/// layer's query, key and value projections are as wide as that layer's
/// heads. llama.cpp sizes a layer's KV cache row by its own counts
/// (`n_embd_k_gqa(il)`) and reshapes its queries by them, but many
/// architectures create every layer's tensors with layer 0's counts and
/// `create_tensor` cannot tell: the first decode then aborts
/// (`ggml_set_rows`: `GGML_ASSERT(a->ne[0] == b->ne[0])`, or a reshape's
/// element count). Layers without key heads (the recurrent layers of hybrid
/// models) have no KV cache row and are left alone. Found by an audit
/// relabelling SmolLM2 as mistral3, smollm3, exaone, minicpm...
pub fn check_per_layer_widths(header: &GgufFile, tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let Some(architecture) = header.architecture() else {
        return Ok(());
    };
    let key = |suffix: &str| arch_key(architecture, suffix);
    let (Some(layers), Some(embedding)) = (
        keys::u32_value(header, &key("block_count"))?,
        keys::u32_value(header, &key("embedding_length"))?,
    ) else {
        return Ok(());
    };
    let layers = u64::from(layers);
    let Some(heads) = keys::u32_per_layer(header, &key("attention.head_count"), layers)? else {
        return Ok(());
    };
    let kv_heads = keys::u32_per_layer(header, &key("attention.head_count_kv"), layers)?
        .unwrap_or_else(|| heads.clone());
    let varies = |values: &[u32]| values.iter().any(|&value| value != values[0]);
    if heads.is_empty() || !(varies(&heads) || varies(&kv_heads)) {
        return Ok(());
    }
    let per_head = u64::from(embedding)
        .checked_div(u64::from(heads[0]))
        .unwrap_or(0);
    let size = |suffix: &str| -> Result<Option<u64>, GgufError> {
        Ok(keys::u32_value(header, &key(suffix))?.map(u64::from))
    };
    // A sliding-window layer may use its own head sizes: either is accepted.
    let head_k = [
        size("attention.key_length")?.unwrap_or(per_head),
        size("attention.key_length_swa")?.unwrap_or(0),
    ];
    let head_v = [
        size("attention.value_length")?.unwrap_or(per_head),
        size("attention.value_length_swa")?.unwrap_or(0),
    ];
    for tensor in tensors {
        let Some((layer, role)) = layer_and_role(&tensor.name) else {
            continue;
        };
        let (Some(&query), Some(&kv)) = (heads.get(layer), kv_heads.get(layer)) else {
            continue;
        };
        let (query, kv) = (u64::from(query), u64::from(kv));
        if kv == 0 {
            continue;
        }
        let widths: Vec<u64> = match role {
            "attn_q.weight" if varies(&heads) => head_k.iter().map(|dk| dk * query).collect(),
            "attn_k.weight" => head_k.iter().map(|dk| dk * kv).collect(),
            "attn_v.weight" => head_v.iter().map(|dv| dv * kv).collect(),
            "attn_qkv.weight" => head_k
                .iter()
                .zip(&head_v)
                .map(|(dk, dv)| dk * query + (dk + dv) * kv)
                .collect(),
            _ => continue,
        };
        let width = tensor.dimensions.get(1).copied().unwrap_or(1);
        if !widths.contains(&width) {
            return Err(GgufError::TensorShapeMismatch {
                name: printable(&tensor.name),
                found: tensor.dimensions.clone().into(),
                expected: vec![tensor.dimensions.first().copied().unwrap_or(0), widths[0]].into(),
            });
        }
    }
    Ok(())
}

/// `blk.N.role` → `(N, role)`.
fn layer_and_role(name: &str) -> Option<(usize, &str)> {
    let (layer, role) = name.strip_prefix("blk.")?.split_once('.')?;
    Some((layer.parse().ok()?, role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_drop_the_layer_prefix() {
        assert_eq!(role_of("blk.12.attn_q.weight"), "attn_q.weight");
        assert_eq!(role_of("token_embd.weight"), "token_embd.weight");
        assert_eq!(role_of("blk.x.attn_q.weight"), "blk.x.attn_q.weight");
    }

    #[test]
    fn trailing_ones_do_not_count() {
        assert_eq!(trimmed(&[32, 1, 1]), &[32]);
        assert_eq!(trimmed(&[32, 8]), &[32, 8]);
        assert_eq!(trimmed(&[1]), &[] as &[u64]);
    }
}
