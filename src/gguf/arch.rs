//! Which architectures olm knows, and how well. llama.cpp refuses, with an
//! exception it reports cleanly, a `general.architecture` it does not know
//! (`llm_arch_from_string` in llama-arch.cpp gives `LLM_ARCH_UNKNOWN` and
//! the loader throws "unknown model architecture"), so olm refuses the same
//! names up front and `olm show` agrees with `olm run`.
//!
//! - **Covered** architectures get every rule: the generic ones, the keys
//!   and tensors their llama.cpp loader requires, and the relations between
//!   hyper-parameters their compute graph asserts on (`llama`, `qwen2`,
//!   `qwen3`, `phi3`, `gemma2`, `gemma3`; Mistral and SmolLM publish under
//!   `llama`).
//! - **Generic** architectures (any other name llama.cpp knows) get the
//!   rules llama.cpp applies to every architecture: the shared
//!   hyper-parameters of `llama_model_base::load_hparams`, the vocabulary,
//!   the tensor types per role and split sets.
//! - `clip` (a multimodal projector, not a language model) and unknown names
//!   are refused.

use super::error::{printable, GgufError};

/// How much of llama.cpp's loader olm mirrors for an architecture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// Every rule, from the architecture's own loader and graph.
    Covered(Family),
    /// The rules llama.cpp applies to every architecture.
    Generic,
}

/// A covered architecture's specifics (src/models/<name>.cpp in llama.cpp).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    /// The graph asserts `n_rot == n_embd_head_k` (llama.cpp `models/llama.cpp`
    /// `GGML_ASSERT(n_embd_head == n_rot)`, likewise qwen2 and qwen3; the
    /// llama loader throws "invalid n_rot" first).
    pub rope_spans_head: bool,
    /// Logit soft-capping is always applied, so a cap of 0 divides by zero
    /// (`models/gemma2.cpp`: `ggml_scale(ctx0, cur, 1.0f / f_final_logit_softcapping)`,
    /// llama-graph.cpp `1.0f / hparams.f_attn_logit_softcapping`).
    pub always_softcaps: bool,
    /// Per-layer tensors the architecture's `load_arch_tensors` creates as
    /// required, besides the query/key/value projections (fused
    /// `attn_qkv`, or `attn_q`, `attn_k` and `attn_v`) and the feed-forward
    /// network.
    pub layer_tensors: &'static [&'static str],
    /// The feed-forward network of a layer without experts.
    pub feed_forward: &'static [&'static str],
    /// Whether `{arch}.expert_count` > 0 replaces the feed-forward network
    /// with a router and expert stacks (`ffn_gate_inp`, `ffn_up_exps`,
    /// `ffn_down_exps`), as `llama_model_llama::load_arch_tensors` does.
    pub has_experts: bool,
    /// The query projection's width and the attention output's input width
    /// are `n_embd` rather than `n_embd_head_k * n_head` (qwen2 and phi3
    /// create `attn_q` as `{n_embd, n_embd}`).
    pub attention_is_embedding_wide: bool,
}

/// Every architecture olm checks in full; see the module documentation.
pub const COVERED_ARCHITECTURES: [&str; 6] =
    ["llama", "qwen2", "qwen3", "phi3", "gemma2", "gemma3"];

const GATED_FEED_FORWARD: &[&str] = &["ffn_gate", "ffn_down", "ffn_up"];

const FAMILIES: [Family; 6] = [
    Family {
        name: "llama",
        rope_spans_head: true,
        always_softcaps: false,
        layer_tensors: &["attn_norm", "attn_output", "ffn_norm"],
        feed_forward: GATED_FEED_FORWARD,
        has_experts: true,
        attention_is_embedding_wide: false,
    },
    Family {
        name: "qwen2",
        rope_spans_head: true,
        always_softcaps: false,
        layer_tensors: &["attn_norm", "attn_output", "ffn_norm"],
        feed_forward: GATED_FEED_FORWARD,
        has_experts: false,
        attention_is_embedding_wide: true,
    },
    Family {
        name: "qwen3",
        rope_spans_head: true,
        always_softcaps: false,
        layer_tensors: &[
            "attn_norm",
            "attn_output",
            "ffn_norm",
            "attn_q_norm",
            "attn_k_norm",
        ],
        feed_forward: GATED_FEED_FORWARD,
        has_experts: false,
        attention_is_embedding_wide: false,
    },
    Family {
        name: "phi3",
        rope_spans_head: false,
        always_softcaps: false,
        layer_tensors: &["attn_norm", "attn_output", "ffn_norm"],
        // Phi-3 packs gate and up into one `ffn_up` of twice the width.
        feed_forward: &["ffn_down", "ffn_up"],
        has_experts: false,
        attention_is_embedding_wide: true,
    },
    Family {
        name: "gemma2",
        rope_spans_head: false,
        always_softcaps: true,
        layer_tensors: &[
            "attn_norm",
            "attn_output",
            "ffn_norm",
            "post_attention_norm",
            "post_ffw_norm",
        ],
        feed_forward: GATED_FEED_FORWARD,
        has_experts: false,
        attention_is_embedding_wide: false,
    },
    Family {
        name: "gemma3",
        rope_spans_head: false,
        always_softcaps: false,
        layer_tensors: &[
            "attn_norm",
            "attn_output",
            "ffn_norm",
            "attn_q_norm",
            "attn_k_norm",
            "post_attention_norm",
            "post_ffw_norm",
        ],
        feed_forward: GATED_FEED_FORWARD,
        has_experts: false,
        attention_is_embedding_wide: false,
    },
];

/// `LLM_ARCH_NAMES` of the vendored llama.cpp (src/llama-arch.cpp), without
/// `clip` and the `(unknown)` placeholder.
#[rustfmt::skip]
const KNOWN_ARCHITECTURES: [&str; 153] = [
    "llama", "llama4", "deci", "falcon", "grok", "gpt2", "gptj", "gptneox", "mpt", "baichuan",
    "starcoder", "refact", "bert", "modern-bert", "nomic-bert", "nomic-bert-moe", "neo-bert",
    "jina-bert-v2", "jina-bert-v3", "eurobert", "bloom", "stablelm", "qwen", "qwen2", "qwen2moe",
    "qwen2vl", "qwen3", "qwen3moe", "qwen3next", "qwen3vl", "qwen3vlmoe", "qwen35", "qwen35moe",
    "clef", "qwen4exp", "phi2", "phi3", "phimoe", "plamo", "plamo2", "plamo3", "codeshell",
    "orion", "internlm2", "minicpm", "minicpm3", "gemma", "gemma2", "gemma3", "gemma3n", "gemma4",
    "gemma4-assistant", "gemma-embedding", "starcoder2", "mamba", "mamba2", "maple", "jamba",
    "falcon-h1", "xverse", "command-r", "cohere2", "cohere2moe", "dbrx", "olmo", "olmo2", "olmoe",
    "muse-glimmer", "openelm", "arctic", "deepseek", "deepseek2", "deepseek2-ocr", "deepseek32",
    "deepseek4", "chatglm", "glm4", "glm4moe", "glm-dsa", "bitnet", "t5", "t5encoder", "jais",
    "jais2", "nemotron", "nemotron_h", "nemotron_h_moe", "exaone", "exaone4", "exaone-moe",
    "rwkv6", "rwkv6qwen2", "rwkv7", "arwkv7", "granite", "granitemoe", "granitehybrid",
    "graniteswitch", "granite_swa", "chameleon", "wavtokenizer-dec", "plm", "bailingmoe",
    "bailingmoe2", "bailingmoe3", "dots1", "dots3note", "arcee", "afmoe", "laguna", "ernie4_5",
    "ernie4_5-moe", "hunyuan-moe", "hunyuan-dense", "hunyuan_vl", "hy_v3", "hy_v4", "smollm3",
    "gpt-oss", "lfm2", "lfm2moe", "dream", "smallthinker", "llada", "llada-moe", "seed_oss",
    "grovemoe", "apertus", "minimax-01", "hrm_text", "minimax-m2", "minimax-m3", "cogvlm", "rnd1",
    "pangu-embedded", "mistral3", "eagle3", "dflash", "mistral4", "paddleocr", "mimo2", "step35",
    "spark2_5", "llama-embed", "maincoder", "kimi-linear", "kimi-k3", "glm5-next", "talkie",
    "mellum", "nanbeige", "qwen3tts", "pockettts",
];

/// How olm checks `architecture`, or why it refuses it.
pub fn coverage(architecture: &str) -> Result<Coverage, GgufError> {
    if let Some(family) = FAMILIES.iter().find(|family| family.name == architecture) {
        return Ok(Coverage::Covered(*family));
    }
    if KNOWN_ARCHITECTURES.contains(&architecture) {
        return Ok(Coverage::Generic);
    }
    let reason = if architecture == "clip" {
        "it is a multimodal projector, not a language model"
    } else {
        "llama.cpp does not know it"
    };
    Err(GgufError::UnsupportedArchitecture {
        architecture: printable(architecture),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_architectures_are_known_and_have_families() {
        for name in COVERED_ARCHITECTURES {
            assert!(KNOWN_ARCHITECTURES.contains(&name), "{name}");
            assert!(matches!(coverage(name), Ok(Coverage::Covered(family)) if family.name == name));
        }
        assert_eq!(FAMILIES.len(), COVERED_ARCHITECTURES.len());
    }

    #[test]
    fn unknown_names_and_clip_are_refused() {
        assert!(matches!(coverage("bert"), Ok(Coverage::Generic)));
        for name in ["clip", "", "llama ", "LLAMA", "(unknown)"] {
            assert!(
                matches!(
                    coverage(name),
                    Err(GgufError::UnsupportedArchitecture { .. })
                ),
                "{name}"
            );
        }
    }
}
