//! Which ggml types a tensor may have for the role llama.cpp gives it. The
//! loader does not check types against roles: a weight of a type the
//! operator has no kernel for loads fine and aborts (or crashes) the first
//! time the graph is computed. The rules, from ggml's CPU backend
//! (ggml/src/ggml-cpu), whose kernels every backend falls back to:
//!
//! | role | operator | allowed | source |
//! | --- | --- | --- | --- |
//! | any weight | — | not I8, I16, I32, I64, F64, Q8_1, Q8_K | `type_traits_cpu` in ggml-cpu.c has no `vec_dot` for them, so `ggml_compute_forward_mul_mat` calls a null kernel; `ggml_compute_forward_get_rows` aborts on Q8_K, I8, I16, I64, F64 and turns I32 embeddings into integer activations |
//! | norm weight or bias, any `.bias`, any 1-D tensor | `ggml_mul`, `ggml_add` with F32 activations | F32 | binary-ops.cpp `binary_op`: an F32 first operand has only the all-F32 kernel, anything else hits `GGML_ABORT("unsupported types")`; ggml-cpu/ops.cpp `rms_norm` fused with `mul` reads the weight as floats |
//! | rope frequency factors | `ggml_rope_ext` | F32 | ggml.c `ggml_rope_impl`: `GGML_ASSERT(c->type == GGML_TYPE_F32)`, checked while the model loads (`weight_buft_supported`) |
//! | matrices, embeddings, experts | `ggml_mul_mat`, `ggml_get_rows`, `ggml_mul_mat_id` | the rest: F32, F16, BF16 and every quantized type with a `vec_dot` | ggml-cpu.c `type_traits_cpu` |
//!
//! llama.cpp's own converters and quantizer agree: they keep 1-D tensors and
//! norms in F32 ("most of the codebase that takes in 1D tensors or norms
//! only handles F32 tensors", convert_hf_to_gguf.py) and quantize only 2-D
//! and larger tensors (llama-quant.cpp `ggml_n_dims(tensor) >= 2`).

use super::error::{printable, GgufError, TypeRule};
use super::types::GgmlType;
use super::TensorInfo;

/// Types no weight may have: integers, F64 and the activation-only
/// quantizations (see the module table).
const NEVER_WEIGHTS: [GgmlType; 7] = [
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::I64,
    GgmlType::F64,
    GgmlType::Q8_1,
    GgmlType::Q8_K,
];

/// What llama.cpp does with a tensor, judged from its name and shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Multiplied or added element-wise into F32 activations.
    Elementwise,
    /// Rope frequency factors.
    RopeFactors,
    /// A matrix, an embedding table or an expert stack.
    Weights,
}

impl Role {
    fn of(tensor: &TensorInfo) -> Self {
        let name = tensor.name.as_str();
        if name.starts_with("rope_freqs.")
            || name.starts_with("rope_factors_")
            || name.contains(".rope_freqs.")
            || name.contains(".rope_factors_")
        {
            Role::RopeFactors
        } else if name.ends_with(".bias") || name.contains("norm.") || tensor.dimensions.len() == 1
        {
            Role::Elementwise
        } else {
            Role::Weights
        }
    }
}

/// Every tensor's type fits its role.
pub fn check(tensors: &[TensorInfo]) -> Result<(), GgufError> {
    tensors.iter().try_for_each(check_tensor)
}

/// Element-wise operands and rope factors: F32 only.
static F32_ONLY: [TypeRule; 2] = [
    TypeRule {
        role: "a norm, bias or other 1-D tensor",
        allowed: "F32",
        reason: "ggml's element-wise kernels take F32 operands only",
    },
    TypeRule {
        role: "a rope frequency factor",
        allowed: "F32",
        reason: "ggml's rope asserts F32 frequency factors",
    },
];

/// Weights: anything ggml can multiply.
static WEIGHTS: TypeRule = TypeRule {
    role: "a weight",
    allowed: "a float or weight-quantization type",
    reason: "ggml has no matrix kernel for it",
};

fn check_tensor(tensor: &TensorInfo) -> Result<(), GgufError> {
    let ggml_type = tensor.ggml_type;
    let rule = match Role::of(tensor) {
        Role::Elementwise if ggml_type != GgmlType::F32 => &F32_ONLY[0],
        Role::RopeFactors if ggml_type != GgmlType::F32 => &F32_ONLY[1],
        Role::Weights if NEVER_WEIGHTS.contains(&ggml_type) => &WEIGHTS,
        _ => return Ok(()),
    };
    Err(GgufError::TensorTypeNotAllowed {
        name: printable(&tensor.name),
        ggml_type,
        rule,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(name: &str, dimensions: &[u64], ggml_type: GgmlType) -> TensorInfo {
        TensorInfo {
            name: name.to_owned(),
            dimensions: dimensions.to_vec(),
            ggml_type,
            offset: 0,
        }
    }

    #[test]
    fn roles_follow_names_and_shapes() {
        let role = |name, dimensions: &[u64]| Role::of(&tensor(name, dimensions, GgmlType::F32));
        assert_eq!(role("blk.0.attn_norm.weight", &[32]), Role::Elementwise);
        assert_eq!(role("blk.0.attn_q.bias", &[32]), Role::Elementwise);
        assert_eq!(role("output_norm.weight", &[32]), Role::Elementwise);
        assert_eq!(
            role("blk.3.ffn_gate_exps.bias", &[64, 8]),
            Role::Elementwise
        );
        assert_eq!(role("rope_freqs.weight", &[64]), Role::RopeFactors);
        assert_eq!(
            role("blk.0.rope_factors_long.weight", &[64]),
            Role::RopeFactors
        );
        assert_eq!(role("blk.0.attn_q.weight", &[32, 32]), Role::Weights);
        assert_eq!(role("token_embd.weight", &[32, 5]), Role::Weights);
    }

    #[test]
    fn real_model_types_pass() {
        for (name, dimensions, ggml_type) in [
            ("token_embd.weight", &[640u64, 256][..], GgmlType::Q8_0),
            ("blk.0.attn_q.weight", &[640, 1024], GgmlType::Q4_K),
            ("blk.0.ffn_down.weight", &[2048, 640], GgmlType::Q6_K),
            ("blk.0.attn_k_norm.weight", &[256], GgmlType::F32),
            ("output.weight", &[576, 49152], GgmlType::BF16),
        ] {
            assert!(
                check_tensor(&tensor(name, dimensions, ggml_type)).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn integer_and_quantized_norms_and_integer_weights_are_refused() {
        for (name, dimensions, ggml_type) in [
            ("blk.0.attn_norm.weight", &[32u64][..], GgmlType::I32),
            ("blk.0.attn_norm.weight", &[32], GgmlType::Q8_0),
            ("blk.0.attn_norm.weight", &[32], GgmlType::F16),
            ("rope_freqs.weight", &[32], GgmlType::F16),
            ("blk.0.attn_q.weight", &[32, 32], GgmlType::I8),
            ("token_embd.weight", &[32, 5], GgmlType::I32),
            ("blk.0.ffn_up.weight", &[256, 32], GgmlType::Q8_K),
            ("blk.0.ffn_up.weight", &[32, 32], GgmlType::Q8_1),
        ] {
            assert!(
                matches!(
                    check_tensor(&tensor(name, dimensions, ggml_type)),
                    Err(GgufError::TensorTypeNotAllowed { .. })
                ),
                "{name} {ggml_type}"
            );
        }
    }
}
