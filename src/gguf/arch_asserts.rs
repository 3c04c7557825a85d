//! The `GGML_ASSERT`s of single architectures' `load_arch_hparams`
//! (llama.cpp src/models/<name>.cpp), and those `load_hparams` makes for one
//! architecture only: a hyper-parameter of the wrong value
//! aborts the process while the model loads, where a missing key or one of
//! the wrong type only makes the loader throw, which llama.cpp reports.
//! olm's abort net turns such an abort into one error line, but only in a
//! process that loads the model; these checks let `olm show` refuse the same
//! files `olm run` does.
//!
//! Owns: those per-architecture relations, each next to the assertion it
//! mirrors. Must not touch: the rules every architecture shares
//! (`hparams.rs`). A key that is absent is left to llama.cpp: it either has
//! a default that passes, or the loader throws for it first.

use super::error::GgufError;
use super::hparams::out_of_range;
use super::keys::{self, arch_key};
use super::value::Value;
use super::{GgufFile, MAX_BLOCK_COUNT};

/// Checks the relations `architecture`'s own loader asserts on.
/// `layers` is `{arch}.block_count` when the file has it.
pub fn check(file: &GgufFile, architecture: &str, layers: Option<u64>) -> Result<(), GgufError> {
    let keys = Keys { file, architecture };
    match architecture {
        "nanbeige" => nanbeige(keys, layers),
        "hrm_text" => hrm_text(keys, layers),
        "bailingmoe3" => bailingmoe3(keys),
        "deepseek4" => deepseek4(keys),
        "dflash" => dflash(keys),
        "gemma-embedding" => gemma_embedding(keys),
        "glm5-next" => glm5_next(keys),
        "minimax-m3" => minimax_m3(keys),
        "hy_v4" => hy_v4(keys),
        "wavtokenizer-dec" => wavtokenizer_dec(keys, layers),
        _ => Ok(()),
    }
}

/// An architecture's keys in one file.
#[derive(Clone, Copy)]
struct Keys<'a> {
    file: &'a GgufFile,
    architecture: &'a str,
}

impl Keys<'_> {
    fn name(self, suffix: &str) -> String {
        arch_key(self.architecture, suffix)
    }

    fn u32(self, suffix: &str) -> Result<Option<u32>, GgufError> {
        keys::u32_value(self.file, &self.name(suffix))
    }

    /// `{arch}.{suffix}`, when present, a value `accepts` takes (else
    /// refused as not `expected`).
    fn require(
        self,
        suffix: &str,
        accepts: impl Fn(u32) -> bool,
        expected: impl Into<String>,
    ) -> Result<Option<u32>, GgufError> {
        let value = self.u32(suffix)?;
        match value {
            Some(found) if !accepts(found) => {
                Err(out_of_range(&self.name(suffix), found, expected))
            }
            _ => Ok(value),
        }
    }

    /// `{arch}.{suffix}`, when present, at least `min`.
    fn at_least(self, suffix: &str, min: u32) -> Result<Option<u32>, GgufError> {
        self.require(suffix, |found| found >= min, format!("at least {min}"))
    }
}

/// `GGML_ASSERT(n_loops_u >= 1)` and `GGML_ASSERT(n_layer_phys * n_loops_u
/// <= LLAMA_MAX_LAYERS)`: the layers are run `num_loops` times over.
fn nanbeige(keys: Keys, layers: Option<u64>) -> Result<(), GgufError> {
    let loops = keys.at_least("num_loops", 1)?.unwrap_or(1);
    let Some(layers) = layers else {
        return Ok(());
    };
    if layers * u64::from(loops) > MAX_BLOCK_COUNT {
        return Err(out_of_range(
            &keys.name("num_loops"),
            loops,
            format!("at most {MAX_BLOCK_COUNT} layers in all with a block count of {layers}"),
        ));
    }
    Ok(())
}

/// `GGML_ASSERT`s that each stack and cycle count is above 0 and that the
/// block count is the expanded slot count, `layers_per_stack * h_cycles *
/// (l_cycles + 1)`.
fn hrm_text(keys: Keys, layers: Option<u64>) -> Result<(), GgufError> {
    let per_stack = keys.at_least("hrm.layers_per_stack", 1)?;
    let h_cycles = keys.at_least("hrm.h_cycles", 1)?;
    let l_cycles = keys.at_least("hrm.l_cycles", 1)?;
    let (Some(per_stack), Some(h_cycles), Some(l_cycles), Some(layers)) =
        (per_stack, h_cycles, l_cycles, layers)
    else {
        return Ok(());
    };
    // In u64: llama.cpp's u32 product could wrap onto the block count.
    let slots = u64::from(per_stack) * u64::from(h_cycles) * (u64::from(l_cycles) + 1);
    if slots != layers {
        return Err(out_of_range(
            &keys.name("block_count"),
            layers,
            format!("layers_per_stack x h_cycles x (l_cycles + 1) = {slots}"),
        ));
    }
    Ok(())
}

/// `GGML_ASSERT(hparams.kda_safe_gate)` and
/// `GGML_ASSERT(hparams.kda_gate_lower_bound < 0.0f)`.
fn bailingmoe3(keys: Keys) -> Result<(), GgufError> {
    let safe_gate = keys.name("kda.safe_gate");
    if keys::bool_value(keys.file, &safe_gate)? == Some(false) {
        return Err(out_of_range(&safe_gate, false, "true"));
    }
    let lower_bound = keys.name("kda.gate_lower_bound");
    match keys::f32_value(keys.file, &lower_bound)? {
        Some(bound) if bound.is_nan() || bound >= 0.0 => {
            Err(out_of_range(&lower_bound, bound, "below 0"))
        }
        _ => Ok(()),
    }
}

/// `GGML_ASSERT(n_compress_ratios <= LLAMA_MAX_LAYERS)`: one ratio per
/// layer, in an array llama.cpp sizes for the most layers it supports.
fn deepseek4(keys: Keys) -> Result<(), GgufError> {
    let key = keys.name("attention.compress_ratios");
    match keys.file.get(&key) {
        Some(Value::Array(ratios)) if ratios.len() as u64 > MAX_BLOCK_COUNT => Err(out_of_range(
            &key,
            format!("an array of {}", ratios.len()),
            format!("at most {MAX_BLOCK_COUNT} entries"),
        )),
        _ => Ok(()),
    }
}

/// With a DeepSeek-V4 backbone (`hyper_connection.count` above 0):
/// `GGML_ASSERT(hparams.dsv4_o_group_count > 0)` and
/// `GGML_ASSERT(hparams.n_swa > 0)`.
fn dflash(keys: Keys) -> Result<(), GgufError> {
    if keys.u32("hyper_connection.count")?.unwrap_or(0) == 0 {
        return Ok(());
    }
    keys.at_least("attention.output_group_count", 1)?;
    keys.at_least("attention.sliding_window", 1)?;
    Ok(())
}

/// `GGML_ASSERT(dense_2_feat_in == 0 || dense_2_feat_in == n_embd)`, and the
/// same for `dense_3_feat_out`.
fn gemma_embedding(keys: Keys) -> Result<(), GgufError> {
    let Some(width) = keys.u32("embedding_length")? else {
        return Ok(());
    };
    for suffix in ["dense_2_feat_in", "dense_3_feat_out"] {
        let expected = format!("0 or the embedding length ({width})");
        keys.require(suffix, |found| found == 0 || found == width, expected)?;
    }
    Ok(())
}

/// `GGML_ASSERT(indexer_kpool > 1 && indexer_top_k % indexer_kpool == 0)`
/// and `GGML_ASSERT(dsv4_hc_mult == 4)`.
fn glm5_next(keys: Keys) -> Result<(), GgufError> {
    if let Some(kpool) = keys.at_least("attention.indexer.kpool", 2)? {
        let expected = format!("a multiple of the indexer's kpool ({kpool})");
        keys.require(
            "attention.indexer.top_k",
            |top_k| top_k % kpool == 0,
            expected,
        )?;
    }
    keys.require("hyper_connection.count", |count| count == 4, "4")?;
    Ok(())
}

/// `GGML_ASSERT(hparams.indexer_block_size > 0)`.
fn minimax_m3(keys: Keys) -> Result<(), GgufError> {
    keys.at_least("attention.indexer.block_size", 1)?;
    Ok(())
}

/// `GGML_ASSERT(hparams.is_mla())`: both MLA head lengths above 0.
fn hy_v4(keys: Keys) -> Result<(), GgufError> {
    keys.at_least("attention.key_length_mla", 1)?;
    keys.at_least("attention.value_length_mla", 1)?;
    Ok(())
}

/// `llama_model_base::load_hparams`, for this architecture only:
/// `GGML_ASSERT(hparams.posnet.n_layer <= hparams.n_layer_all)`, and the
/// same for the ConvNeXt blocks.
fn wavtokenizer_dec(keys: Keys, layers: Option<u64>) -> Result<(), GgufError> {
    let Some(layers) = layers else {
        return Ok(());
    };
    for suffix in ["posnet.block_count", "convnext.block_count"] {
        let expected = format!("at most the block count ({layers})");
        keys.require(suffix, |found| u64::from(found) <= layers, expected)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::samples::tiny_model_as;
    use crate::gguf::writer::GgufBuilder;

    /// The whole metadata check, which runs this one.
    fn judge(builder: GgufBuilder) -> Result<(), GgufError> {
        let bytes = builder.to_bytes();
        crate::gguf::parse(std::io::Cursor::new(&bytes), bytes.len() as u64).map(|_| ())
    }

    fn refusal(builder: GgufBuilder) -> String {
        judge(builder)
            .expect_err("the file should be refused")
            .to_string()
    }

    #[test]
    fn files_without_the_keys_pass() {
        for architecture in ["nanbeige", "hrm_text", "bailingmoe3", "glm5-next", "hy_v4"] {
            assert!(judge(tiny_model_as(architecture)).is_ok(), "{architecture}");
        }
    }

    #[test]
    fn nanbeige_loops() {
        let model = || tiny_model_as("nanbeige");
        let zero = model().set_metadata("nanbeige.num_loops", 0u32);
        assert!(refusal(zero).contains("'nanbeige.num_loops' is 0"));
        // Two layers looped 256 times fill LLAMA_MAX_LAYERS exactly.
        assert!(judge(model().set_metadata("nanbeige.num_loops", 256u32)).is_ok());
        let over = model().set_metadata("nanbeige.num_loops", 257u32);
        assert!(refusal(over).contains("at most 512 layers"));
    }

    #[test]
    fn hrm_slots_match_the_block_count() {
        let model = |per_stack: u32, h: u32, l: u32| {
            tiny_model_as("hrm_text")
                .set_metadata("hrm_text.hrm.layers_per_stack", per_stack)
                .set_metadata("hrm_text.hrm.h_cycles", h)
                .set_metadata("hrm_text.hrm.l_cycles", l)
        };
        // The tiny model has two blocks: 1 x 1 x (1 + 1).
        assert!(judge(model(1, 1, 1)).is_ok());
        assert!(refusal(model(1, 2, 1)).contains("= 4"));
        assert!(refusal(model(1, 0, 1)).contains("'hrm_text.hrm.h_cycles' is 0"));
        // 2^31 x 2 x (1 + 1) wraps a u32 to 0; in u64 it is not 2.
        assert!(judge(model(1 << 31, 2, 1)).is_err());
    }

    #[test]
    fn bailingmoe3_gate() {
        let model = || tiny_model_as("bailingmoe3");
        let unsafe_gate = model().set_metadata("bailingmoe3.kda.safe_gate", false);
        assert!(refusal(unsafe_gate).contains("safe_gate"));
        for bound in [0.0f32, 1.0, f32::NAN] {
            let file = model().set_metadata("bailingmoe3.kda.gate_lower_bound", bound);
            assert!(refusal(file).contains("below 0"), "{bound}");
        }
        let fine = model().set_metadata("bailingmoe3.kda.gate_lower_bound", -5.0f32);
        assert!(judge(fine).is_ok());
    }

    #[test]
    fn glm5_next_indexer_and_hyper_connections() {
        let model = || tiny_model_as("glm5-next");
        let kpool_one = model().set_metadata("glm5-next.attention.indexer.kpool", 1u32);
        assert!(refusal(kpool_one).contains("at least 2"));
        let uneven = model()
            .set_metadata("glm5-next.attention.indexer.kpool", 4u32)
            .set_metadata("glm5-next.attention.indexer.top_k", 6u32);
        assert!(refusal(uneven).contains("a multiple of"));
        let three = model().set_metadata("glm5-next.hyper_connection.count", 3u32);
        assert!(refusal(three).contains("'glm5-next.hyper_connection.count' is 3"));
        let fine = model()
            .set_metadata("glm5-next.attention.indexer.kpool", 4u32)
            .set_metadata("glm5-next.attention.indexer.top_k", 8u32)
            .set_metadata("glm5-next.hyper_connection.count", 4u32);
        assert!(judge(fine).is_ok());
    }

    #[test]
    fn the_other_architectures() {
        let dense =
            tiny_model_as("gemma-embedding").set_metadata("gemma-embedding.dense_2_feat_in", 7u32);
        assert!(refusal(dense).contains("0 or the embedding length"));
        let ratios = tiny_model_as("deepseek4")
            .set_metadata("deepseek4.attention.compress_ratios", vec![0u32; 513]);
        assert!(refusal(ratios).contains("at most 512 entries"));
        let dflash = tiny_model_as("dflash")
            .set_metadata("dflash.hyper_connection.count", 4u32)
            .set_metadata("dflash.attention.output_group_count", 0u32);
        assert!(refusal(dflash).contains("output_group_count"));
        // Without the DeepSeek-V4 backbone the group count is not read.
        assert!(judge(tiny_model_as("dflash")).is_ok());
        let block = tiny_model_as("minimax-m3")
            .set_metadata("minimax-m3.attention.indexer.block_size", 0u32);
        assert!(refusal(block).contains("block_size"));
        let posnet = tiny_model_as("wavtokenizer-dec")
            .set_metadata("wavtokenizer-dec.posnet.block_count", 3u32);
        assert!(refusal(posnet).contains("at most the block count (2)"));
        let mla = tiny_model_as("hy_v4").set_metadata("hy_v4.attention.key_length_mla", 0u32);
        assert!(refusal(mla).contains("key_length_mla"));
    }
}
