//! Split models: one model in `split.count` files named
//! `PREFIX-00001-of-0000N.gguf` … `PREFIX-0000N-of-0000N.gguf`, as
//! llama.cpp's `llama_split_path` names them and its loader finds them from
//! the first part's path (`llama_get_list_splits` in
//! llama-model-loader.cpp). llama.cpp opens every part with `fopen` (a FIFO
//! blocks it forever), mmaps each part's tensors (a short part is a SIGBUS),
//! reads `split.no` with `gguf_get_val_u16`, which asserts its type, and
//! sums the tensors across parts. olm checks each part the same way before
//! llama.cpp sees any of them, without ever blocking: it looks at each path's
//! metadata first and opens it non-blocking.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::error::{printable, GgufError};
use super::keys;
use super::{
    parse_with_limits, GgufFile, Limits, TensorInfo, MAX_SPLIT_COUNT, MAX_SPLIT_METADATA_BYTES,
    MAX_TENSOR_COUNT,
};

pub const COUNT_KEY: &str = "split.count";
pub const INDEX_KEY: &str = "split.no";
pub const TENSORS_KEY: &str = "split.tensors.count";

/// The split keys of one part, with the types llama.cpp reads them as
/// (`u16` count and index, `i32` tensor count).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitKeys {
    pub count: u64,
    pub index: u64,
    pub tensors: Option<u64>,
}

impl SplitKeys {
    /// The split keys of `file`, if it has `split.count`.
    pub fn read(file: &GgufFile) -> Result<Option<Self>, GgufError> {
        let Some(count) = keys::u16_value(file, COUNT_KEY)? else {
            return Ok(None);
        };
        let index = keys::u16_value(file, INDEX_KEY)?.unwrap_or(0);
        let tensors =
            match keys::i32_value(file, TENSORS_KEY)? {
                Some(tensors) => Some(u64::try_from(tensors).map_err(|_| {
                    GgufError::HyperParameterOutOfRange {
                        key: TENSORS_KEY.to_owned(),
                        value: tensors.to_string().into(),
                        expected: "0 or more".into(),
                    }
                })?),
                None => None,
            };
        Ok(Some(Self {
            count: u64::from(count),
            index: u64::from(index),
            tensors,
        }))
    }
}

/// The split keys a single file can be judged by: the count, bounded, and
/// the index within it (parse level).
pub fn check_keys(file: &GgufFile) -> Result<(), GgufError> {
    let Some(split) = SplitKeys::read(file)? else {
        keys::u16_value(file, INDEX_KEY)?;
        return Ok(());
    };
    if split.count == 0 || split.index >= split.count {
        return Err(GgufError::InvalidSplit {
            index: split.index,
            count: split.count,
        });
    }
    if split.count > MAX_SPLIT_COUNT {
        return Err(GgufError::ValueTooLarge {
            key: COUNT_KEY.to_owned(),
            value: split.count,
            limit: MAX_SPLIT_COUNT,
        });
    }
    Ok(())
}

/// `-0000k-of-0000n.gguf`, as `llama_split_path` formats it ("%s-%05d-of-%05d.gguf").
pub fn part_suffix(part: u64, count: u64) -> String {
    format!("-{part:05}-of-{count:05}.gguf")
}

/// The paths of every part of a split model whose first part is `first`,
/// in load order (the first included). `first` must end with the first
/// part's suffix, as `llama_split_prefix` requires.
pub fn part_paths(first: &Path, count: u64) -> Result<Vec<PathBuf>, GgufError> {
    let suffix = part_suffix(1, count);
    let name = first.as_os_str().as_encoded_bytes();
    let Some(prefix) = name
        .strip_suffix(suffix.as_bytes())
        .filter(|prefix| !prefix.is_empty())
    else {
        return Err(GgufError::SplitFileName {
            path: first.to_owned(),
            count,
            suffix,
        });
    };
    let prefix = String::from_utf8_lossy(prefix);
    // llama.cpp formats paths as C strings; a lossless round trip is only
    // possible for a UTF-8 prefix, which is what olm's store writes.
    if prefix.as_bytes() != &name[..name.len() - suffix.len()] {
        return Err(GgufError::SplitFileName {
            path: first.to_owned(),
            count,
            suffix,
        });
    }
    Ok((1..=count)
        .map(|part| PathBuf::from(format!("{prefix}{}", part_suffix(part, count))))
        .collect())
}

/// Opens a file for reading without blocking and only if it is a regular
/// file: its metadata is checked before it is opened (opening a FIFO for
/// reading blocks until a writer comes), the open itself is non-blocking in
/// case it was swapped meanwhile, and the opened file is checked again.
/// Returns the file and its length.
pub fn open_regular(path: &Path) -> Result<(File, u64), GgufError> {
    let open_error = |source| GgufError::Open {
        path: path.to_owned(),
        source,
    };
    let not_a_file = || GgufError::NotAFile {
        path: path.to_owned(),
    };
    if !std::fs::metadata(path).map_err(open_error)?.is_file() {
        return Err(not_a_file());
    }
    let file = open_nonblocking(path).map_err(open_error)?;
    let metadata = file.metadata().map_err(open_error)?;
    if !metadata.is_file() {
        return Err(not_a_file());
    }
    Ok((file, metadata.len()))
}

#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    if let Some(flag) = nonblocking_flag() {
        options.custom_flags(flag);
    }
    options.open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    File::open(path)
}

/// `O_NONBLOCK` of <fcntl.h> where olm knows its value (this module uses
/// std only, not libc); elsewhere the metadata check before opening stands
/// alone.
#[cfg(unix)]
fn nonblocking_flag() -> Option<i32> {
    if cfg!(all(
        any(target_os = "linux", target_os = "android"),
        any(
            target_arch = "x86",
            target_arch = "x86_64",
            target_arch = "arm",
            target_arch = "aarch64",
            target_arch = "riscv64",
            target_arch = "powerpc64",
            target_arch = "s390x",
            target_arch = "loongarch64"
        )
    )) {
        Some(0o4000)
    } else if cfg!(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    )) {
        Some(0x0004)
    } else {
        None
    }
}

/// A model's files, in the order llama.cpp loads them, and the tensors of
/// all of them.
pub struct Parts {
    pub paths: Vec<PathBuf>,
    pub tensors: Vec<TensorInfo>,
}

/// A file that says it is part k > 1 of a split model cannot be loaded on
/// its own: llama.cpp throws "model must be loaded with the first split".
/// Says which file to open instead, before anything else about it.
pub fn check_is_first_part(path: &Path, header: &GgufFile) -> Result<(), GgufError> {
    match SplitKeys::read(header)? {
        Some(split) if split.index != 0 => Err(not_the_first_part(path, split).unwrap_or(
            GgufError::InvalidSplit {
                index: split.index,
                count: split.count,
            },
        )),
        _ => Ok(()),
    }
}

/// Checks every part after the first of the split model whose first part,
/// at `first`, is `header`: each is a regular file that parses, holds its
/// tensors, says it is part `k` of the same count, belongs to the same
/// architecture, and together the parts hold `split.tensors.count` tensors,
/// none twice. A model that is not split is its one file.
pub fn check_parts(first: &Path, header: &GgufFile) -> Result<Parts, GgufError> {
    let single = || Parts {
        paths: vec![first.to_owned()],
        tensors: header.tensors.clone(),
    };
    let Some(split) = SplitKeys::read(header)? else {
        return Ok(single());
    };
    if split.count <= 1 {
        return Ok(single());
    }
    // Named as a later part: say which file to open instead.
    let paths = part_paths(first, split.count)
        .map_err(|error| not_the_first_part(first, split).unwrap_or(error))?;
    if split.index != 0 {
        return Err(GgufError::NotFirstSplitPart {
            path: first.to_owned(),
            index: split.index,
            count: split.count,
            first: paths[0].clone().into_boxed_path(),
        });
    }
    let mut tensors = TensorIndex::default();
    tensors.add(header, 1)?;
    let mut all_tensors = header.tensors.clone();
    let mut budget = Limits {
        metadata_bytes: MAX_SPLIT_METADATA_BYTES,
        tensor_count: MAX_TENSOR_COUNT.saturating_sub(header.tensors.len() as u64),
    };
    for (part_index, path) in paths.iter().enumerate().skip(1) {
        let part = part_index as u64 + 1;
        let in_part = |problem: GgufError| GgufError::SplitPart {
            part,
            count: split.count,
            path: path.clone(),
            problem: Box::new(problem),
        };
        let file = read_part(path, &budget).map_err(in_part)?;
        check_same_model(header, &file, split, part, path)?;
        tensors.add(&file, part)?;
        all_tensors.extend(file.tensors.iter().cloned());
        budget.tensor_count = budget
            .tensor_count
            .saturating_sub(file.tensors.len() as u64);
        budget.metadata_bytes = budget.metadata_bytes.saturating_sub(metadata_size(&file));
    }
    if let Some(declared) = split.tensors {
        if declared != tensors.count() {
            return Err(GgufError::SplitTensorCount {
                declared,
                found: tensors.count(),
            });
        }
    }
    Ok(Parts {
        paths,
        tensors: all_tensors,
    })
}

/// For a file named as part k of n: the first part's path.
fn not_the_first_part(path: &Path, split: SplitKeys) -> Option<GgufError> {
    if split.index == 0 {
        return None;
    }
    let own_suffix = part_suffix(split.index + 1, split.count);
    let name = path.to_str()?;
    let prefix = name.strip_suffix(&own_suffix)?;
    Some(GgufError::NotFirstSplitPart {
        path: path.to_owned(),
        index: split.index,
        count: split.count,
        first: PathBuf::from(format!("{prefix}{}", part_suffix(1, split.count))).into_boxed_path(),
    })
}

fn read_part(path: &Path, budget: &Limits) -> Result<GgufFile, GgufError> {
    let (file, length) = open_regular(path)?;
    let part = parse_with_limits(file, length, budget)?;
    Ok(part)
}

/// Bytes the metadata of `file` took from the budget, roughly: its header
/// up to the tensor list is a fair measure.
fn metadata_size(file: &GgufFile) -> u64 {
    file.data_offset
}

/// A later part must repeat the first part's split keys, with its own index,
/// and name the same architecture when it names one.
fn check_same_model(
    header: &GgufFile,
    part_file: &GgufFile,
    split: SplitKeys,
    part: u64,
    path: &Path,
) -> Result<(), GgufError> {
    let foreign = |what: &str, found: String, expected: String| GgufError::ForeignSplitPart {
        part,
        count: split.count,
        path: path.into(),
        difference: format!("{what} is {found}, expected {expected}").into(),
    };
    let in_part = |problem: GgufError| GgufError::SplitPart {
        part,
        count: split.count,
        path: path.to_owned(),
        problem: Box::new(problem),
    };
    // llama.cpp reads a later part's `split.no` with gguf_get_val_u16,
    // which asserts the type: check it exists and is a u16 first.
    let Some(index) = keys::u16_value(part_file, INDEX_KEY).map_err(in_part)? else {
        return Err(in_part(GgufError::MissingKey {
            key: INDEX_KEY.to_owned(),
            needed_by: "every part of a split model".to_owned(),
        }));
    };
    if u64::from(index) != part - 1 {
        return Err(foreign(
            "'split.no'",
            index.to_string(),
            (part - 1).to_string(),
        ));
    }
    let part_split = SplitKeys::read(part_file).map_err(in_part)?;
    match part_split {
        Some(keys) if keys.count != split.count => {
            return Err(foreign(
                "'split.count'",
                keys.count.to_string(),
                split.count.to_string(),
            ))
        }
        Some(SplitKeys {
            tensors: Some(tensors),
            ..
        }) if split.tensors.is_some_and(|expected| expected != tensors) => {
            return Err(foreign(
                "'split.tensors.count'",
                tensors.to_string(),
                split.tensors.unwrap_or_default().to_string(),
            ))
        }
        None => {
            return Err(in_part(GgufError::MissingKey {
                key: COUNT_KEY.to_owned(),
                needed_by: "every part of a split model".to_owned(),
            }))
        }
        _ => {}
    }
    if let (Some(expected), Some(found)) = (header.architecture(), part_file.architecture()) {
        if expected != found {
            return Err(foreign(
                "'general.architecture'",
                format!("'{}'", printable(found)),
                format!("'{}'", printable(expected)),
            ));
        }
    }
    Ok(())
}

/// Tensor names across parts, to find one in two parts.
#[derive(Default)]
struct TensorIndex {
    parts: HashMap<String, u64>,
}

impl TensorIndex {
    fn add(&mut self, file: &GgufFile, part: u64) -> Result<(), GgufError> {
        for tensor in &file.tensors {
            if let Some(&first) = self.parts.get(&tensor.name) {
                return Err(GgufError::DuplicateSplitTensor {
                    name: printable(&tensor.name),
                    first,
                    second: part,
                });
            }
            self.parts.insert(tensor.name.clone(), part);
        }
        Ok(())
    }

    fn count(&self) -> u64 {
        self.parts.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_paths_follow_llama_split_path() {
        let paths = part_paths(Path::new("/m/model-00001-of-00003.gguf"), 3).expect("valid");
        assert_eq!(
            paths,
            [
                PathBuf::from("/m/model-00001-of-00003.gguf"),
                PathBuf::from("/m/model-00002-of-00003.gguf"),
                PathBuf::from("/m/model-00003-of-00003.gguf"),
            ]
        );
    }

    #[test]
    fn a_first_part_must_carry_the_first_suffix() {
        for (path, count) in [
            ("/m/model.gguf", 2),
            ("/m/model-00002-of-00003.gguf", 3),
            ("/m/model-00001-of-00004.gguf", 3),
            ("-00001-of-00002.gguf", 2),
        ] {
            assert!(
                matches!(
                    part_paths(Path::new(path), count),
                    Err(GgufError::SplitFileName { .. })
                ),
                "{path}"
            );
        }
    }
}
