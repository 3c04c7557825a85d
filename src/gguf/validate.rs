//! Checks that need the whole header: where each tensor's data lies in the
//! file, the metadata llama.cpp sizes allocations by, and the order in which
//! the rule modules ([`super::vocab`], [`super::hparams`],
//! [`super::tensor_types`], [`super::split`]) judge a file; plus what a
//! model needs to run at all ([`check_runnable`], [`check_tensor_set`]).

use std::collections::HashSet;

use super::error::{printable, GgufError};
use super::keys::{self, wrong_type};
use super::{arch, hparams, split, tensor_shapes, tensor_types, vocab};
use super::{GgufFile, TensorInfo, MAX_BLOCK_COUNT, MAX_EMBEDDING_LENGTH};

const TOKEN_EMBEDDING_TENSOR: &str = "token_embd.weight";

/// Every tensor's data is aligned, inside the file, apart from the others,
/// and packed in list order as llama.cpp's loader requires.
pub fn check_tensor_layout(file: &GgufFile) -> Result<(), GgufError> {
    for tensor in &file.tensors {
        if tensor.offset % file.alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                name: printable(&tensor.name),
                offset: tensor.offset,
                alignment: file.alignment,
            });
        }
    }
    check_tensors_inside_file(file)?;
    check_no_overlap(&file.tensors)?;
    check_packed_in_order(file)
}

/// The truncation check: the furthest tensor end must lie within the file.
fn check_tensors_inside_file(file: &GgufFile) -> Result<(), GgufError> {
    let mut furthest_end = file.data_offset;
    for tensor in &file.tensors {
        let end = tensor
            .offset
            .checked_add(tensor.byte_size())
            .and_then(|end| end.checked_add(file.data_offset))
            .ok_or_else(|| GgufError::TensorOffsetOverflow {
                name: printable(&tensor.name),
                offset: tensor.offset,
            })?;
        furthest_end = furthest_end.max(end);
    }
    if furthest_end > file.file_size {
        return Err(GgufError::Truncated {
            expected: furthest_end,
            found: file.file_size,
        });
    }
    Ok(())
}

fn check_no_overlap(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let mut by_offset: Vec<&TensorInfo> = tensors.iter().collect();
    by_offset.sort_by_key(|tensor| tensor.offset);
    for pair in by_offset.windows(2) {
        let (first, second) = (pair[0], pair[1]);
        // Ends were checked for overflow against the file size.
        if first.offset.saturating_add(first.byte_size()) > second.offset {
            return Err(GgufError::OverlappingTensors {
                first: printable(&first.name),
                second: printable(&second.name),
            });
        }
    }
    Ok(())
}

/// llama.cpp (`gguf_init_from_reader`) wants each offset to equal the sum of
/// the padded sizes of the tensors listed before it.
fn check_packed_in_order(file: &GgufFile) -> Result<(), GgufError> {
    let mut expected = 0u64;
    for tensor in &file.tensors {
        if tensor.offset != expected {
            return Err(GgufError::UnexpectedTensorOffset {
                name: printable(&tensor.name),
                offset: tensor.offset,
                expected,
            });
        }
        expected = align_up(expected.saturating_add(tensor.byte_size()), file.alignment);
    }
    Ok(())
}

/// `value` rounded up to a multiple of `alignment` (saturating).
pub fn align_up(value: u64, alignment: u64) -> u64 {
    let alignment = alignment.max(1);
    value.div_ceil(alignment).saturating_mul(alignment)
}

/// Metadata that would make llama.cpp index out of bounds, allocate by a
/// number the file made up, or abort: every value the file has, checked
/// (the [`super::parse`] level).
pub fn check_metadata(file: &GgufFile) -> Result<(), GgufError> {
    if let Some(value) = file.get("general.architecture") {
        if value.as_str().is_none() {
            return Err(wrong_type("general.architecture", "a string", value));
        }
    }
    vocab::check(file)?;
    check_model_shape(file)?;
    split::check_keys(file)?;
    // An unknown architecture is refused by `check_runnable`; its keys are
    // judged by the rules every architecture shares until then.
    let coverage = file
        .architecture()
        .and_then(|architecture| arch::coverage(architecture).ok());
    hparams::check(file, coverage)?;
    tensor_types::check(&file.tensors)
}

/// What llama.cpp needs to run the model in `file`, beyond well-formed
/// values: an architecture it knows, the keys it reads without a default
/// and a tokenizer olm can use (the [`super::inspect`] level; the tensors,
/// which a split model spreads over its parts, are [`check_tensor_set`]'s).
pub fn check_runnable(file: &GgufFile) -> Result<(), GgufError> {
    let Some(architecture) = file.architecture() else {
        return Err(GgufError::MissingKey {
            key: "general.architecture".to_owned(),
            needed_by: "llama.cpp's loader".to_owned(),
        });
    };
    let coverage = arch::coverage(architecture)?;
    hparams::check_required(file, architecture, coverage)?;
    vocab::check_required(file)
}

/// The tensors of the whole model (every part of a split one) against what
/// a covered architecture's `load_arch_tensors` requires: the embedding
/// table with one row per token, the output norm, and each layer's own.
/// llama.cpp throws "missing tensor" or "wrong shape" for most of these,
/// but reads a Phi-3 layer with neither fused nor separate query/key/value
/// projections as a null tensor and crashes.
pub fn check_tensor_set(header: &GgufFile, tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let Some(architecture) = header.architecture() else {
        return Ok(());
    };
    tensor_shapes::check_per_layer_widths(header, tensors)?;
    let Ok(arch::Coverage::Covered(family)) = arch::coverage(architecture) else {
        return Ok(());
    };
    let names: HashSet<&str> = tensors.iter().map(|tensor| tensor.name.as_str()).collect();
    let missing = |name: String| GgufError::MissingTensor {
        name: printable(&name),
        architecture: printable(architecture),
    };
    for name in [TOKEN_EMBEDDING_TENSOR, "output_norm.weight"] {
        if !names.contains(name) {
            return Err(missing(name.to_owned()));
        }
    }
    check_embedding_rows(header, tensors)?;
    tensor_shapes::check(header, &family, tensors)?;
    let layers = header.block_count().unwrap_or(0);
    let experts = header
        .get_u64(&format!("{architecture}.expert_count"))
        .unwrap_or(0);
    let feed_forward: &[&str] = if family.has_experts && experts > 0 {
        &["ffn_gate_inp", "ffn_down_exps", "ffn_up_exps"]
    } else {
        family.feed_forward
    };
    for layer in 0..layers {
        let weight = |role: &str| format!("blk.{layer}.{role}.weight");
        let fused = names.contains(weight("attn_qkv").as_str());
        let separate = ["attn_q", "attn_k", "attn_v"];
        let required = family
            .layer_tensors
            .iter()
            .chain(feed_forward)
            .chain(if fused { &[][..] } else { &separate[..] });
        for role in required {
            let name = weight(role);
            if !names.contains(name.as_str()) {
                return Err(missing(name));
            }
        }
    }
    Ok(())
}

/// `token_embd.weight` is `{n_embd, n_vocab}` (`create_tensor` in every
/// covered `load_arch_tensors`).
fn check_embedding_rows(header: &GgufFile, tensors: &[TensorInfo]) -> Result<(), GgufError> {
    let (Some(vocab_size), Some(embedding)) = (
        header.vocab_size(),
        tensors
            .iter()
            .find(|tensor| tensor.name == TOKEN_EMBEDDING_TENSOR),
    ) else {
        return Ok(());
    };
    let rows = embedding.dimensions.get(1).copied().unwrap_or(1);
    if rows != vocab_size {
        return Err(GgufError::EmbeddingRowsMismatch {
            name: TOKEN_EMBEDDING_TENSOR.to_owned(),
            rows,
            vocab_size,
        });
    }
    Ok(())
}

/// Shape metadata must agree with the tensors (T-A8); the context length is
/// olm's to choose, but must fit the `u32` llama.cpp reads it into.
fn check_model_shape(file: &GgufFile) -> Result<(), GgufError> {
    let Some(arch) = file.architecture() else {
        return Ok(());
    };
    check_block_count(file, &format!("{arch}.block_count"))?;
    check_embedding_length(file, &format!("{arch}.embedding_length"))?;
    let context_key = format!("{arch}.context_length");
    if let Some(context_length) = keys::unsigned(file, &context_key)? {
        let limit = u64::from(u32::MAX);
        if context_length > limit {
            return Err(GgufError::ValueTooLarge {
                key: printable(&context_key),
                value: context_length,
                limit,
            });
        }
    }
    Ok(())
}

fn check_block_count(file: &GgufFile, key: &str) -> Result<(), GgufError> {
    let Some(block_count) = keys::unsigned(file, key)? else {
        return Ok(());
    };
    if block_count > MAX_BLOCK_COUNT {
        return Err(GgufError::ValueTooLarge {
            key: printable(key),
            value: block_count,
            limit: MAX_BLOCK_COUNT,
        });
    }
    // A split file's first part may hold none of the layers.
    if file.tensors.is_empty() || file.split_count() > 1 {
        return Ok(());
    }
    let layers = layer_count(&file.tensors);
    if block_count > layers {
        return Err(GgufError::BlockCountMismatch {
            key: printable(key),
            block_count,
            layers,
        });
    }
    Ok(())
}

/// One more than the highest `N` in a `blk.N.` tensor name.
fn layer_count(tensors: &[TensorInfo]) -> u64 {
    tensors
        .iter()
        .filter_map(|tensor| {
            let rest = tensor.name.strip_prefix("blk.")?;
            let (number, _) = rest.split_once('.')?;
            number.parse::<u64>().ok()
        })
        .max()
        .map_or(0, |highest| highest.saturating_add(1))
}

fn check_embedding_length(file: &GgufFile, key: &str) -> Result<(), GgufError> {
    let Some(embedding_length) = keys::unsigned(file, key)? else {
        return Ok(());
    };
    if embedding_length > MAX_EMBEDDING_LENGTH {
        return Err(GgufError::ValueTooLarge {
            key: printable(key),
            value: embedding_length,
            limit: MAX_EMBEDDING_LENGTH,
        });
    }
    let row = file
        .tensor(TOKEN_EMBEDDING_TENSOR)
        .and_then(|tensor| tensor.dimensions.first().copied());
    match row {
        Some(row) if row != embedding_length => Err(GgufError::EmbeddingLengthMismatch {
            key: printable(key),
            embedding_length,
            row,
        }),
        _ => Ok(()),
    }
}
