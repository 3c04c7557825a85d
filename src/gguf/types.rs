//! The ggml tensor types a GGUF file may use (ids, block sizes, bytes per
//! block) and the `general.file_type` names, as in the vendored llama.cpp:
//! `ggml/include/ggml.h` (`enum ggml_type`), `ggml/src/ggml.c` (`type_traits`),
//! `ggml/src/ggml-common.h` (block layouts) and `include/llama.h`
//! (`enum llama_ftype`). Removed ids (4, 5, 31–33, 36–38) are unknown here, as
//! they are to llama.cpp's loader.

/// A ggml tensor element type that llama.cpp can load from a GGUF file.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    IQ2_XXS,
    IQ2_XS,
    IQ3_XXS,
    IQ1_S,
    IQ4_NL,
    IQ3_S,
    IQ2_S,
    IQ4_XS,
    I8,
    I16,
    I32,
    I64,
    F64,
    IQ1_M,
    BF16,
    TQ1_0,
    TQ2_0,
    MXFP4,
    NVFP4,
    Q1_0,
    Q2_0,
}

/// Elements per block in the k-quant and i-quant families (`QK_K`).
const QK_K: u64 = 256;

/// One row of the type table: id in the file, name, elements per block, bytes per block.
struct TypeTraits {
    ggml_type: GgmlType,
    id: u32,
    name: &'static str,
    block_size: u64,
    type_size: u64,
}

const fn traits(
    ggml_type: GgmlType,
    id: u32,
    name: &'static str,
    block_size: u64,
    type_size: u64,
) -> TypeTraits {
    TypeTraits {
        ggml_type,
        id,
        name,
        block_size,
        type_size,
    }
}

#[rustfmt::skip]
const TYPE_TABLE: [TypeTraits; 35] = [
    traits(GgmlType::F32,      0, "F32",      1,    4),
    traits(GgmlType::F16,      1, "F16",      1,    2),
    traits(GgmlType::Q4_0,     2, "Q4_0",     32,   18),
    traits(GgmlType::Q4_1,     3, "Q4_1",     32,   20),
    traits(GgmlType::Q5_0,     6, "Q5_0",     32,   22),
    traits(GgmlType::Q5_1,     7, "Q5_1",     32,   24),
    traits(GgmlType::Q8_0,     8, "Q8_0",     32,   34),
    traits(GgmlType::Q8_1,     9, "Q8_1",     32,   36),
    traits(GgmlType::Q2_K,    10, "Q2_K",     QK_K, 84),
    traits(GgmlType::Q3_K,    11, "Q3_K",     QK_K, 110),
    traits(GgmlType::Q4_K,    12, "Q4_K",     QK_K, 144),
    traits(GgmlType::Q5_K,    13, "Q5_K",     QK_K, 176),
    traits(GgmlType::Q6_K,    14, "Q6_K",     QK_K, 210),
    traits(GgmlType::Q8_K,    15, "Q8_K",     QK_K, 292),
    traits(GgmlType::IQ2_XXS, 16, "IQ2_XXS",  QK_K, 66),
    traits(GgmlType::IQ2_XS,  17, "IQ2_XS",   QK_K, 74),
    traits(GgmlType::IQ3_XXS, 18, "IQ3_XXS",  QK_K, 98),
    traits(GgmlType::IQ1_S,   19, "IQ1_S",    QK_K, 50),
    traits(GgmlType::IQ4_NL,  20, "IQ4_NL",   32,   18),
    traits(GgmlType::IQ3_S,   21, "IQ3_S",    QK_K, 110),
    traits(GgmlType::IQ2_S,   22, "IQ2_S",    QK_K, 82),
    traits(GgmlType::IQ4_XS,  23, "IQ4_XS",   QK_K, 136),
    traits(GgmlType::I8,      24, "I8",       1,    1),
    traits(GgmlType::I16,     25, "I16",      1,    2),
    traits(GgmlType::I32,     26, "I32",      1,    4),
    traits(GgmlType::I64,     27, "I64",      1,    8),
    traits(GgmlType::F64,     28, "F64",      1,    8),
    traits(GgmlType::IQ1_M,   29, "IQ1_M",    QK_K, 56),
    traits(GgmlType::BF16,    30, "BF16",     1,    2),
    traits(GgmlType::TQ1_0,   34, "TQ1_0",    QK_K, 54),
    traits(GgmlType::TQ2_0,   35, "TQ2_0",    QK_K, 66),
    traits(GgmlType::MXFP4,   39, "MXFP4",    32,   17),
    traits(GgmlType::NVFP4,   40, "NVFP4",    64,   36),
    traits(GgmlType::Q1_0,    41, "Q1_0",     128,  18),
    traits(GgmlType::Q2_0,    42, "Q2_0",     64,   18),
];

impl GgmlType {
    /// The type stored under `id` in a tensor descriptor, if llama.cpp knows it.
    pub fn from_id(id: u32) -> Option<Self> {
        TYPE_TABLE
            .iter()
            .find(|row| row.id == id)
            .map(|row| row.ggml_type)
    }

    fn traits(self) -> &'static TypeTraits {
        // The table lists the variants in declaration order (tested below).
        &TYPE_TABLE[self as usize]
    }

    /// The id written in the file.
    pub fn id(self) -> u32 {
        self.traits().id
    }

    /// The upper-case name, as gguf-py and Hugging Face file names spell it ("Q4_K").
    pub fn name(self) -> &'static str {
        self.traits().name
    }

    /// Elements per block; a row (`ne[0]`) must be a multiple of it.
    pub fn block_size(self) -> u64 {
        self.traits().block_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> u64 {
        self.traits().type_size
    }

    /// Bytes taken by `elements` elements (a whole number of blocks), or
    /// `None` when that does not fit in a `u64`.
    pub fn byte_size(self, elements: u64) -> Option<u64> {
        (elements / self.block_size()).checked_mul(self.type_size())
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// `general.file_type` (`enum llama_ftype`) values and the names quantized
/// files are published under.
#[rustfmt::skip]
const FILE_TYPE_NAMES: [(u64, &str); 37] = [
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (15, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (19, "IQ2_XXS"),
    (20, "IQ2_XS"),
    (21, "Q2_K_S"),
    (22, "IQ3_XS"),
    (23, "IQ3_XXS"),
    (24, "IQ1_S"),
    (25, "IQ4_NL"),
    (26, "IQ3_S"),
    (27, "IQ3_M"),
    (28, "IQ2_S"),
    (29, "IQ2_M"),
    (30, "IQ4_XS"),
    (31, "IQ1_M"),
    (32, "BF16"),
    (36, "TQ1_0"),
    (37, "TQ2_0"),
    (38, "MXFP4_MOE"),
    (39, "NVFP4"),
    (40, "Q1_0"),
    (41, "Q2_0"),
    // Removed from llama.cpp but still found in old files.
    (4, "Q4_1_SOME_F16"),
];

/// The name of a `general.file_type` value ("Q4_K_M"), if it is a known one.
pub fn file_type_name(file_type: u64) -> Option<&'static str> {
    FILE_TYPE_NAMES
        .iter()
        .find(|(id, _)| *id == file_type)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_variant_order_and_ids_are_unique() {
        for (index, row) in TYPE_TABLE.iter().enumerate() {
            assert_eq!(row.ggml_type as usize, index, "{}", row.name);
            assert_eq!(GgmlType::from_id(row.id), Some(row.ggml_type));
            assert_eq!(row.ggml_type.id(), row.id);
            assert!(row.block_size > 0 && row.type_size > 0);
        }
    }

    #[test]
    fn removed_and_unknown_ids_are_rejected() {
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 43, 9999, u32::MAX] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
    }

    #[test]
    fn byte_sizes_match_ggml() {
        assert_eq!(GgmlType::Q4_0.byte_size(64), Some(36));
        assert_eq!(GgmlType::Q4_K.byte_size(512), Some(288));
        assert_eq!(GgmlType::F32.byte_size(u64::MAX), None);
    }

    #[test]
    fn file_type_names() {
        assert_eq!(file_type_name(15), Some("Q4_K_M"));
        assert_eq!(file_type_name(3), Some("Q4_1"));
        assert_eq!(file_type_name(5), None);
    }
}
