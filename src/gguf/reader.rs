//! Reading the GGUF layout: header, metadata and tensor descriptors, in file
//! order. Every count and length read from the file is checked against the
//! bytes left in the file and against olm's limits before anything is
//! allocated for it, so memory stays proportional to what the file really
//! holds and never to what it claims.

use std::collections::HashSet;
use std::io::{self, Read};

use super::error::{printable, GgufError};
use super::types::GgmlType;
use super::value::{Array, Value, ValueType};
use super::{
    Limits, NonUtf8String, TensorInfo, MAX_ARRAY_LENGTH, MAX_DIMENSIONS, MAX_KEY_LENGTH,
    MAX_METADATA_COUNT, MAX_STRING_LENGTH, MAX_TENSOR_NAME_LENGTH,
};

const MAGIC: &[u8; 4] = b"GGUF";

/// The smallest metadata entry: key length, a 1-byte key, type id, a 1-byte value.
const MIN_METADATA_ENTRY_BYTES: u64 = 8 + 1 + 4 + 1;

/// The smallest tensor descriptor: name length, a 1-byte name, dimension
/// count, one dimension, type id, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 1 + 4 + 8 + 4 + 8;

/// The fixed part of a GGUF file.
pub struct Header {
    pub version: u32,
    pub tensor_count: u64,
    pub metadata_count: u64,
}

/// A reader that knows its position and how many bytes the file has left.
pub struct Source<R> {
    reader: R,
    position: u64,
    file_len: u64,
}

impl<R: Read> Source<R> {
    pub fn new(reader: R, file_len: u64) -> Self {
        Self {
            reader,
            position: 0,
            file_len,
        }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    pub fn remaining(&self) -> u64 {
        self.file_len.saturating_sub(self.position)
    }

    fn fill(&mut self, buffer: &mut [u8]) -> Result<(), GgufError> {
        let length = buffer.len() as u64;
        let expected = self.position.saturating_add(length);
        if length > self.remaining() {
            return Err(GgufError::Truncated {
                expected,
                found: self.file_len,
            });
        }
        self.reader.read_exact(buffer).map_err(|error| {
            if error.kind() == io::ErrorKind::UnexpectedEof {
                // The file shrank while being read, or the caller's length was wrong.
                GgufError::Truncated {
                    expected,
                    found: self.position,
                }
            } else {
                GgufError::Read {
                    offset: self.position,
                    source: error,
                }
            }
        })?;
        self.position = expected;
        Ok(())
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut buffer = [0; N];
        self.fill(&mut buffer)?;
        Ok(buffer)
    }

    pub fn u8(&mut self) -> Result<u8, GgufError> {
        Ok(u8::from_le_bytes(self.bytes()?))
    }

    pub fn i8(&mut self) -> Result<i8, GgufError> {
        Ok(i8::from_le_bytes(self.bytes()?))
    }

    pub fn u16(&mut self) -> Result<u16, GgufError> {
        Ok(u16::from_le_bytes(self.bytes()?))
    }

    pub fn i16(&mut self) -> Result<i16, GgufError> {
        Ok(i16::from_le_bytes(self.bytes()?))
    }

    pub fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }

    pub fn i32(&mut self) -> Result<i32, GgufError> {
        Ok(i32::from_le_bytes(self.bytes()?))
    }

    pub fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }

    pub fn i64(&mut self) -> Result<i64, GgufError> {
        Ok(i64::from_le_bytes(self.bytes()?))
    }

    pub fn f32(&mut self) -> Result<f32, GgufError> {
        Ok(f32::from_le_bytes(self.bytes()?))
    }

    pub fn f64(&mut self) -> Result<f64, GgufError> {
        Ok(f64::from_le_bytes(self.bytes()?))
    }

    /// A bool is one byte; like llama.cpp, any non-zero byte is true.
    pub fn bool(&mut self) -> Result<bool, GgufError> {
        Ok(self.u8()? != 0)
    }

    /// A length-prefixed string's bytes, refused before allocation when the
    /// length exceeds the bytes left or `limit`. `field` names the string in
    /// the error and is only built on failure.
    pub fn string_bytes(
        &mut self,
        limit: u64,
        field: impl FnOnce() -> String,
    ) -> Result<Vec<u8>, GgufError> {
        let length = self.u64()?;
        if length > self.remaining() {
            return Err(GgufError::StringExceedsFile {
                field: field(),
                length,
            });
        }
        if length > limit {
            return Err(GgufError::StringTooLong {
                field: field(),
                length,
                limit,
            });
        }
        // Bounded by the file and by `limit` just above.
        let mut bytes = vec![0; length as usize];
        self.fill(&mut bytes)?;
        Ok(bytes)
    }
}

/// Reads the header, refusing anything but a little-endian GGUF v2 or v3.
pub fn read_header<R: Read>(source: &mut Source<R>, limits: &Limits) -> Result<Header, GgufError> {
    read_magic(source)?;
    let version = source.u32()?;
    check_version(version)?;
    let tensor_count = source.u64()?;
    let metadata_count = source.u64()?;
    check_count(
        "tensor",
        tensor_count,
        MIN_TENSOR_INFO_BYTES,
        limits.tensor_count,
        source,
    )?;
    check_count(
        "metadata",
        metadata_count,
        MIN_METADATA_ENTRY_BYTES,
        MAX_METADATA_COUNT,
        source,
    )?;
    Ok(Header {
        version,
        tensor_count,
        metadata_count,
    })
}

fn read_magic<R: Read>(source: &mut Source<R>) -> Result<(), GgufError> {
    let file_len = source.file_len();
    if file_len == 0 {
        return Err(GgufError::Empty);
    }
    if file_len < MAGIC.len() as u64 {
        // Too short for a magic: say "truncated" only if what is there could start one.
        let mut start = vec![0; file_len as usize];
        source.fill(&mut start)?;
        return Err(if MAGIC.starts_with(&start) {
            GgufError::Truncated {
                expected: MAGIC.len() as u64,
                found: file_len,
            }
        } else {
            GgufError::BadMagic { magic: start }
        });
    }
    let magic: [u8; 4] = source.bytes()?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic {
            magic: magic.to_vec(),
        });
    }
    Ok(())
}

fn check_version(version: u32) -> Result<(), GgufError> {
    match version {
        2 | 3 => Ok(()),
        // A v2/v3 file written big-endian reads as 0x02000000 or 0x03000000 here.
        _ if version != 0 && version & 0xFFFF == 0 => Err(GgufError::BigEndian { version }),
        _ => Err(GgufError::UnsupportedVersion { version }),
    }
}

fn check_count<R: Read>(
    what: &'static str,
    count: u64,
    min_entry_bytes: u64,
    limit: u64,
    source: &Source<R>,
) -> Result<(), GgufError> {
    let max = source.remaining() / min_entry_bytes;
    if count > max {
        return Err(GgufError::CountExceedsFile { what, count, max });
    }
    if count > limit {
        return Err(GgufError::CountTooLarge { what, count, limit });
    }
    Ok(())
}

/// The metadata section as read: its entries and where its strings were
/// not valid UTF-8.
pub struct Metadata {
    pub entries: Vec<(String, Value)>,
    pub non_utf8: Vec<NonUtf8String>,
}

/// Reads the metadata section: unique, non-empty UTF-8 keys with typed values.
pub fn read_metadata<R: Read>(
    source: &mut Source<R>,
    count: u64,
    limits: &Limits,
) -> Result<Metadata, GgufError> {
    let mut reader = MetadataReader {
        source,
        memory_left: limits.metadata_bytes,
        memory_limit: limits.metadata_bytes,
        non_utf8: Vec::new(),
    };
    // `count` was checked against the file size and MAX_METADATA_COUNT.
    let mut metadata = Vec::with_capacity(count as usize);
    let mut seen_keys = HashSet::new();
    for index in 0..count {
        let key = reader.key(index)?;
        if !seen_keys.insert(key.clone()) {
            return Err(GgufError::DuplicateKey {
                key: printable(&key),
            });
        }
        let type_id = reader.source.u32()?;
        let value = reader.value(&key, type_id)?;
        metadata.push((key, value));
    }
    Ok(Metadata {
        entries: metadata,
        non_utf8: reader.non_utf8,
    })
}

/// Reads metadata values while keeping count of the memory they take, and
/// of the strings that were not valid UTF-8.
struct MetadataReader<'a, R> {
    source: &'a mut Source<R>,
    memory_left: u64,
    memory_limit: u64,
    /// At most one entry per key (the first bad element of an array).
    non_utf8: Vec<NonUtf8String>,
}

impl<R: Read> MetadataReader<'_, R> {
    fn charge(&mut self, bytes: u64) -> Result<(), GgufError> {
        self.memory_left =
            self.memory_left
                .checked_sub(bytes)
                .ok_or(GgufError::MetadataTooLarge {
                    limit: self.memory_limit,
                })?;
        Ok(())
    }

    fn key(&mut self, index: u64) -> Result<String, GgufError> {
        let bytes = self
            .source
            .string_bytes(MAX_KEY_LENGTH, || format!("metadata key #{index}"))?;
        self.charge(string_memory(bytes.len()))?;
        let key = String::from_utf8(bytes).map_err(|_| GgufError::KeyNotUtf8 { index })?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey { index });
        }
        Ok(key)
    }

    /// A string value and whether its bytes were valid UTF-8. GGUF strings
    /// should be UTF-8 but some vocabularies hold raw bytes, so invalid
    /// sequences become U+FFFD here and the caller records where.
    fn string(&mut self, field: impl FnOnce() -> String) -> Result<(String, bool), GgufError> {
        let bytes = self.source.string_bytes(MAX_STRING_LENGTH, field)?;
        self.charge(bytes.len() as u64)?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) => (text, true),
            Err(error) => (
                String::from_utf8_lossy(error.as_bytes()).into_owned(),
                false,
            ),
        })
    }

    fn note_non_utf8(&mut self, key: &str, index: Option<u64>) {
        self.non_utf8.push(NonUtf8String {
            key: key.to_owned(),
            index,
        });
    }

    fn value(&mut self, key: &str, type_id: u32) -> Result<Value, GgufError> {
        let value_type =
            ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
                key: printable(key),
                type_id,
            })?;
        let source = &mut *self.source;
        Ok(match value_type {
            ValueType::U8 => Value::U8(source.u8()?),
            ValueType::I8 => Value::I8(source.i8()?),
            ValueType::U16 => Value::U16(source.u16()?),
            ValueType::I16 => Value::I16(source.i16()?),
            ValueType::U32 => Value::U32(source.u32()?),
            ValueType::I32 => Value::I32(source.i32()?),
            ValueType::F32 => Value::F32(source.f32()?),
            ValueType::Bool => Value::Bool(source.bool()?),
            ValueType::U64 => Value::U64(source.u64()?),
            ValueType::I64 => Value::I64(source.i64()?),
            ValueType::F64 => Value::F64(source.f64()?),
            ValueType::String => {
                self.charge(std::mem::size_of::<String>() as u64)?;
                let (text, valid) = self.string(|| format!("metadata key '{}'", printable(key)))?;
                if !valid {
                    self.note_non_utf8(key, None);
                }
                Value::String(text)
            }
            ValueType::Array => Value::Array(self.array(key)?),
        })
    }

    fn array(&mut self, key: &str) -> Result<Array, GgufError> {
        let type_id = self.source.u32()?;
        let element_type = match ValueType::from_id(type_id) {
            None => {
                return Err(GgufError::UnknownValueType {
                    key: printable(key),
                    type_id,
                })
            }
            Some(ValueType::Array) => {
                return Err(GgufError::NestedArray {
                    key: printable(key),
                })
            }
            Some(element_type) => element_type,
        };
        let length = self.source.u64()?;
        let min_bytes = length.checked_mul(element_type.min_encoded_size());
        if min_bytes.is_none_or(|bytes| bytes > self.source.remaining()) {
            return Err(GgufError::ArrayExceedsFile {
                key: printable(key),
                length,
            });
        }
        if length > MAX_ARRAY_LENGTH {
            return Err(GgufError::ArrayTooLong {
                key: printable(key),
                length,
                limit: MAX_ARRAY_LENGTH,
            });
        }
        // Both bounded just above: length * element size <= bytes left in the file.
        let length = length as usize;
        // Strings: their headers now, their bytes as they are read.
        let element_memory = if element_type == ValueType::String {
            std::mem::size_of::<String>() as u64
        } else {
            element_type.min_encoded_size()
        };
        self.charge(length as u64 * element_memory)?;
        let source = &mut *self.source;
        Ok(match element_type {
            ValueType::U8 => Array::U8(read_all(length, || source.u8())?),
            ValueType::I8 => Array::I8(read_all(length, || source.i8())?),
            ValueType::U16 => Array::U16(read_all(length, || source.u16())?),
            ValueType::I16 => Array::I16(read_all(length, || source.i16())?),
            ValueType::U32 => Array::U32(read_all(length, || source.u32())?),
            ValueType::I32 => Array::I32(read_all(length, || source.i32())?),
            ValueType::F32 => Array::F32(read_all(length, || source.f32())?),
            ValueType::Bool => Array::Bool(read_all(length, || source.bool())?),
            ValueType::U64 => Array::U64(read_all(length, || source.u64())?),
            ValueType::I64 => Array::I64(read_all(length, || source.i64())?),
            ValueType::F64 => Array::F64(read_all(length, || source.f64())?),
            ValueType::String => Array::String(self.strings(key, length)?),
            ValueType::Array => {
                return Err(GgufError::NestedArray {
                    key: printable(key),
                })
            }
        })
    }

    fn strings(&mut self, key: &str, length: usize) -> Result<Vec<String>, GgufError> {
        let mut strings = Vec::with_capacity(length);
        let mut first_invalid = None;
        for index in 0..length {
            let (text, valid) =
                self.string(|| format!("metadata key '{}' element {index}", printable(key)))?;
            if !valid && first_invalid.is_none() {
                first_invalid = Some(index as u64);
            }
            strings.push(text);
        }
        if let Some(index) = first_invalid {
            self.note_non_utf8(key, Some(index));
        }
        Ok(strings)
    }
}

/// Memory a `String` of `length` bytes takes, counting its header.
fn string_memory(length: usize) -> u64 {
    (length + std::mem::size_of::<String>()) as u64
}

fn read_all<T>(
    length: usize,
    mut read_one: impl FnMut() -> Result<T, GgufError>,
) -> Result<Vec<T>, GgufError> {
    let mut values = Vec::with_capacity(length);
    for _ in 0..length {
        values.push(read_one()?);
    }
    Ok(values)
}

/// Reads the tensor descriptors, checking each one's name, shape and type.
pub fn read_tensor_infos<R: Read>(
    source: &mut Source<R>,
    count: u64,
) -> Result<Vec<TensorInfo>, GgufError> {
    // `count` was checked against the file size and MAX_TENSOR_COUNT.
    let mut tensors = Vec::with_capacity(count as usize);
    let mut seen_names = HashSet::new();
    for index in 0..count {
        let name = read_tensor_name(source, index)?;
        if !seen_names.insert(name.clone()) {
            return Err(GgufError::DuplicateTensor {
                name: printable(&name),
            });
        }
        let dimensions = read_dimensions(source, &name)?;
        let ggml_type = read_tensor_type(source, &name, &dimensions)?;
        let offset = source.u64()?;
        tensors.push(TensorInfo {
            name,
            dimensions,
            ggml_type,
            offset,
        });
    }
    Ok(tensors)
}

fn read_tensor_name<R: Read>(source: &mut Source<R>, index: u64) -> Result<String, GgufError> {
    // Read up to the key limit so an over-long name can still be shown.
    let bytes = source.string_bytes(MAX_KEY_LENGTH, || format!("tensor #{index} name"))?;
    let name = String::from_utf8(bytes).map_err(|_| GgufError::TensorNameNotUtf8 { index })?;
    if name.is_empty() {
        return Err(GgufError::EmptyTensorName { index });
    }
    if name.len() as u64 > MAX_TENSOR_NAME_LENGTH {
        return Err(GgufError::TensorNameTooLong {
            name: printable(&name),
            length: name.len() as u64,
            limit: MAX_TENSOR_NAME_LENGTH,
        });
    }
    Ok(name)
}

/// Reads `ne[0..n]`: 1 to 4 dimensions, none zero, whose product fits an `i64`.
fn read_dimensions<R: Read>(source: &mut Source<R>, name: &str) -> Result<Vec<u64>, GgufError> {
    let count = source.u32()?;
    if count == 0 || count > MAX_DIMENSIONS {
        return Err(GgufError::DimensionCount {
            name: printable(name),
            dimensions: count,
        });
    }
    let mut dimensions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        dimensions.push(source.u64()?);
    }
    if let Some(axis) = dimensions.iter().position(|&size| size == 0) {
        return Err(GgufError::ZeroDimension {
            name: printable(name),
            axis,
        });
    }
    if element_count(&dimensions).is_none() {
        return Err(GgufError::ShapeOverflow {
            name: printable(name),
            shape: dimensions,
        });
    }
    Ok(dimensions)
}

/// The product of `dimensions` if it fits in an `i64`, as ggml requires.
pub fn element_count(dimensions: &[u64]) -> Option<u64> {
    let product = dimensions
        .iter()
        .try_fold(1u64, |product, &size| product.checked_mul(size))?;
    (product <= i64::MAX as u64).then_some(product)
}

fn read_tensor_type<R: Read>(
    source: &mut Source<R>,
    name: &str,
    dimensions: &[u64],
) -> Result<GgmlType, GgufError> {
    let type_id = source.u32()?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownTensorType {
        name: printable(name),
        // llama.cpp reads the id as an int32; show negative ids as such.
        type_id: type_id as i32,
    })?;
    let row = dimensions.first().copied().unwrap_or(1);
    if row % ggml_type.block_size() != 0 {
        return Err(GgufError::RowNotBlockMultiple {
            name: printable(name),
            ggml_type,
            row,
            block_size: ggml_type.block_size(),
        });
    }
    let byte_size = element_count(dimensions).and_then(|count| ggml_type.byte_size(count));
    if byte_size.is_none() {
        return Err(GgufError::ByteSizeOverflow {
            name: printable(name),
            shape: dimensions.to_vec(),
            ggml_type,
        });
    }
    Ok(ggml_type)
}
