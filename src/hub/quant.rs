//! Which files of a repo make up a quant: GGUF files grouped by the quant in
//! their name, split sets (`-00001-of-0000N`) kept whole.

use super::RemoteFile;
use crate::store::{quant_in_name, split_part};

/// The files of one quant, in load order (part 1 first), and their total size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuantChoice {
    pub quant: String,
    /// The file name without the split suffix (`x-q4_k_m.gguf`).
    pub set_name: String,
    pub files: Vec<RemoteFile>,
    pub size: u64,
}

/// Every quant in a listing, smallest first; multimodal projectors and
/// incomplete split sets are left out.
pub fn quants(files: &[RemoteFile]) -> Vec<QuantChoice> {
    let mut choices: Vec<QuantChoice> = Vec::new();
    for file in files {
        let lower = file.name.to_ascii_lowercase();
        if !lower.ends_with(".gguf")
            || lower
                .rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with("mmproj"))
        {
            continue;
        }
        let Some(quant) = quant_in_name(&file.name) else {
            continue;
        };
        let set_name = set_name(&file.name);
        match choices
            .iter_mut()
            .find(|choice| choice.set_name == set_name)
        {
            Some(choice) => {
                choice.files.push(file.clone());
                choice.size = choice.size.saturating_add(file.size);
            }
            None => choices.push(QuantChoice {
                quant,
                set_name,
                files: vec![file.clone()],
                size: file.size,
            }),
        }
    }
    for choice in &mut choices {
        choice.files.sort_by(|a, b| a.name.cmp(&b.name));
    }
    choices.retain(is_complete);
    choices.sort_by(|a, b| (a.size, &a.set_name).cmp(&(b.size, &b.set_name)));
    choices
}

/// The set for `quant`; with a catalog `pattern` (`{quant}`/`{QUANT}` stand
/// for the quant in lower/upper case), the set whose name matches it.
pub fn select(files: &[RemoteFile], quant: &str, pattern: Option<&str>) -> Option<QuantChoice> {
    let all = quants(files);
    if let Some(pattern) = pattern {
        let wanted = pattern
            .replace("{quant}", &quant.to_ascii_lowercase())
            .replace("{QUANT}", &quant.to_ascii_uppercase());
        if let Some(choice) = all.iter().find(|choice| choice.set_name == wanted) {
            return Some(choice.clone());
        }
    }
    let mut matching: Vec<QuantChoice> = all
        .into_iter()
        .filter(|choice| choice.quant.eq_ignore_ascii_case(quant))
        .collect();
    // Prefer a plain file name over variants such as `UD-Q4_K_XL` by picking the shortest name.
    matching.sort_by_key(|choice| choice.set_name.len());
    matching.into_iter().next()
}

fn set_name(name: &str) -> String {
    match (split_part(name), name.strip_suffix(".gguf")) {
        (Some(_), Some(stem)) => format!("{}.gguf", stem.rsplitn(4, '-').nth(3).unwrap_or(stem)),
        _ => name.to_owned(),
    }
}

fn is_complete(choice: &QuantChoice) -> bool {
    let parts: Vec<(u32, u32)> = choice
        .files
        .iter()
        .filter_map(|file| split_part(&file.name))
        .collect();
    if parts.is_empty() {
        return choice.files.len() == 1;
    }
    let count = parts[0].1;
    parts.len() == choice.files.len()
        && parts.len() as u32 == count
        && parts
            .iter()
            .enumerate()
            .all(|(index, &(part, of))| part == index as u32 + 1 && of == count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> RemoteFile {
        RemoteFile {
            name: name.into(),
            size,
            sha256: None,
        }
    }

    #[test]
    fn split_sets_are_grouped_and_kept_whole() {
        let files = [
            file("README.md", 1),
            file("m-q4_k_m-00002-of-00002.gguf", 5),
            file("m-q4_k_m-00001-of-00002.gguf", 10),
            file("m-q8_0.gguf", 20),
            file("mmproj-f16.gguf", 3),
            file("m-q6_k-00001-of-00002.gguf", 7),
        ];
        let all = quants(&files);
        assert_eq!(
            all.iter().map(|c| c.quant.as_str()).collect::<Vec<_>>(),
            ["Q4_K_M", "Q8_0"]
        );
        let chosen = select(&files, "q4_k_m", Some("m-{quant}.gguf")).unwrap();
        assert_eq!(chosen.files[0].name, "m-q4_k_m-00001-of-00002.gguf");
        assert_eq!(chosen.size, 15);
        assert!(select(&files, "Q6_K", None).is_none());
    }

    #[test]
    fn sizes_add_up_without_overflow() {
        let files = [
            file("m-q4_k_m-00001-of-00002.gguf", u64::MAX),
            file("m-q4_k_m-00002-of-00002.gguf", u64::MAX),
        ];
        assert_eq!(quants(&files)[0].size, u64::MAX);
    }
}
