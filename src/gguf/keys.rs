//! Reading metadata values the way llama.cpp's loader does: a key it reads
//! with `get_key<T>` must hold exactly that GGUF type
//! (`GGUFMeta::GKV::get_kv` in llama-model-loader.cpp throws "key ... has
//! wrong type" otherwise), and `get_key_or_arr` takes either one value or an
//! array with one entry per layer. Each reader here returns `Ok(None)` when
//! the key is absent and a typed error naming the key when it is there but
//! unusable.

use super::error::{printable, GgufError};
use super::value::{Array, Value};
use super::GgufFile;

/// `{architecture}.{suffix}`, as llama.cpp's `LLM_KV` formats keys.
pub fn arch_key(architecture: &str, suffix: &str) -> String {
    format!("{architecture}.{suffix}")
}

pub fn wrong_type(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::WrongType {
        key: printable(key),
        expected,
        found: found.describe(),
    }
}

/// The value under `key` as a non-negative integer of any width, if present
/// (for keys llama.cpp reads with a cast, or not at all).
pub fn unsigned(file: &GgufFile, key: &str) -> Result<Option<u64>, GgufError> {
    file.get(key)
        .map(|value| {
            value
                .as_u64()
                .ok_or_else(|| wrong_type(key, "a non-negative integer", value))
        })
        .transpose()
}

/// A `u32` key (`get_key<uint32_t>`).
pub fn u32_value(file: &GgufFile, key: &str) -> Result<Option<u32>, GgufError> {
    match file.get(key) {
        None => Ok(None),
        Some(Value::U32(value)) => Ok(Some(*value)),
        Some(other) => Err(wrong_type(key, "u32", other)),
    }
}

/// A `u16` key (`get_key<uint16_t>`: `split.count`, `split.no`).
pub fn u16_value(file: &GgufFile, key: &str) -> Result<Option<u16>, GgufError> {
    match file.get(key) {
        None => Ok(None),
        Some(Value::U16(value)) => Ok(Some(*value)),
        Some(other) => Err(wrong_type(key, "u16", other)),
    }
}

/// An `i32` key (`get_key<int>`: `split.tensors.count`).
pub fn i32_value(file: &GgufFile, key: &str) -> Result<Option<i32>, GgufError> {
    match file.get(key) {
        None => Ok(None),
        Some(Value::I32(value)) => Ok(Some(*value)),
        Some(other) => Err(wrong_type(key, "i32", other)),
    }
}

/// An `f32` key (`get_key<float>`).
pub fn f32_value(file: &GgufFile, key: &str) -> Result<Option<f32>, GgufError> {
    match file.get(key) {
        None => Ok(None),
        Some(Value::F32(value)) => Ok(Some(*value)),
        Some(other) => Err(wrong_type(key, "f32", other)),
    }
}

/// A `bool` key (`get_key<bool>`).
pub fn bool_value(file: &GgufFile, key: &str) -> Result<Option<bool>, GgufError> {
    match file.get(key) {
        None => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        Some(other) => Err(wrong_type(key, "bool", other)),
    }
}

/// A string key (`get_key<std::string>`).
pub fn str_value<'a>(file: &'a GgufFile, key: &str) -> Result<Option<&'a str>, GgufError> {
    match file.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(other) => Err(wrong_type(key, "str", other)),
    }
}

/// A `u32` per layer (`get_key_or_arr<std::array<uint32_t, 512>>`): one
/// `u32` for every layer, or an array of `u32`, `i32` or `bool` with
/// exactly `layers` entries (llama.cpp reinterprets an `i32` as a `u32`).
pub fn u32_per_layer(
    file: &GgufFile,
    key: &str,
    layers: u64,
) -> Result<Option<Vec<u32>>, GgufError> {
    let Some(value) = file.get(key) else {
        return Ok(None);
    };
    let values: Vec<u32> = match value {
        Value::U32(value) => return Ok(Some(vec![*value; layers as usize])),
        Value::Array(Array::U32(values)) => values.clone(),
        // The bit pattern, as llama.cpp's `std::copy` into a uint32 array.
        Value::Array(Array::I32(values)) => values.iter().map(|&value| value as u32).collect(),
        Value::Array(Array::Bool(values)) => values.iter().map(|&value| u32::from(value)).collect(),
        other => {
            return Err(wrong_type(
                key,
                "u32, or an array of u32 with one entry per layer",
                other,
            ))
        }
    };
    if values.len() as u64 != layers {
        return Err(GgufError::LayerArrayLength {
            key: printable(key),
            length: values.len() as u64,
            layers,
        });
    }
    Ok(Some(values))
}
