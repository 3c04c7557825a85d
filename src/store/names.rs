//! Validation of every string that becomes part of a path: names the user
//! types and values a hub sends (commits, hashes, file names). Pure functions.

/// Longest model reference accepted (the whole text the user typed).
pub const MAX_REFERENCE_LENGTH: usize = 256;
/// Longest owner, repo or store name part (Hugging Face allows 96).
pub const MAX_PART_LENGTH: usize = 96;
/// Longest tag (quant).
pub const MAX_TAG_LENGTH: usize = 64;
/// Longest path component of a file name sent by a hub.
pub const MAX_COMPONENT_LENGTH: usize = 255;
/// Longest file name (with folders) sent by a hub.
pub const MAX_FILE_NAME_LENGTH: usize = 1024;

/// Names Windows reserves for devices; refused everywhere for portability.
const RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// A store name, owner or repo part: ASCII letters, digits, `.`, `_`, `-`;
/// starts and ends with a letter or digit; no `..` or `--` (as Hugging Face).
pub fn check_part(part: &str) -> Result<(), &'static str> {
    if part.is_empty() {
        return Err("a name part is empty");
    }
    if part.len() > MAX_PART_LENGTH {
        return Err("a name part is longer than 96 characters");
    }
    if !part
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("names may contain only letters, digits, '.', '_' and '-'");
    }
    let first = part.as_bytes()[0];
    let last = part.as_bytes()[part.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err("a name must start and end with a letter or digit");
    }
    if part.contains("..") || part.contains("--") {
        return Err("a name may not contain '..' or '--'");
    }
    let stem = part.split('.').next().unwrap_or(part).to_ascii_uppercase();
    if RESERVED.contains(&stem.as_str()) {
        return Err("that name is reserved by Windows");
    }
    Ok(())
}

/// A tag (quant): letters, digits, `.`, `_`, `-`, starting with a letter or digit.
pub fn check_tag(tag: &str) -> Result<(), &'static str> {
    if tag.is_empty() {
        return Err("the tag after ':' is empty");
    }
    if tag.len() > MAX_TAG_LENGTH {
        return Err("the tag after ':' is longer than 64 characters");
    }
    if !tag
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("a tag may contain only letters, digits, '.', '_' and '-'");
    }
    if !tag.as_bytes()[0].is_ascii_alphanumeric() || tag.contains("..") {
        return Err("a tag must start with a letter or digit and not contain '..'");
    }
    Ok(())
}

/// A git commit hash as the hub sends it: exactly 40 lowercase hex digits.
pub fn is_commit(text: &str) -> bool {
    text.len() == 40 && is_lower_hex(text)
}

/// A revision that names a snapshot folder (ModelScope's `master`, a tag,
/// or a commit): a plain name part ([`check_part`]) or a commit hash.
pub fn is_revision(text: &str) -> bool {
    is_commit(text) || check_part(text).is_ok()
}

/// A sha256 (LFS object id): exactly 64 lowercase hex digits.
pub fn is_sha256(text: &str) -> bool {
    text.len() == 64 && is_lower_hex(text)
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A file name inside a repo, as a hub sends it: relative, `/`-separated,
/// no empty, `.` or `..` component, no backslash, NUL or control character.
pub fn check_repo_file_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_FILE_NAME_LENGTH {
        return Err("file name is empty or too long");
    }
    if name.starts_with('/') {
        return Err("file name is absolute");
    }
    if name
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ':')
    {
        return Err("file name contains a control character, '\\' or ':'");
    }
    if name.chars().any(is_invisible) {
        return Err("file name contains an invisible or text-direction character");
    }
    for component in name.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err("file name has an empty, '.' or '..' component");
        }
        if component.len() > MAX_COMPONENT_LENGTH {
            return Err("file name has a component longer than 255 bytes");
        }
    }
    Ok(())
}

/// Characters that print as nothing or reorder the text around them
/// (zero-width, bidi controls, line and paragraph separators, BOM): a name
/// shown on a terminal could pass for another.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}')
}

/// `text` with control characters and non-ASCII escaped, for messages.
pub fn escaped(text: &str) -> String {
    let shown: String = text
        .chars()
        .take(MAX_REFERENCE_LENGTH)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().count() > MAX_REFERENCE_LENGTH {
        format!("{shown}…")
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_refuse_traversal_and_oddities() {
        for bad in [
            "", "..", ".", "a..b", "-a", "a-", ".hidden", "a/b", "a\\b", "a\0b", "a b", "con",
            "LPT1.txt", "a--b", "%2e%2e",
        ] {
            assert!(check_part(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["qwen-7b", "Qwen2.5-7B-Instruct-GGUF", "a", "my_model.v2"] {
            assert!(check_part(good).is_ok(), "{good:?} refused");
        }
        assert!(check_part(&"a".repeat(97)).is_err());
    }

    #[test]
    fn hub_values_are_checked() {
        assert!(is_commit(&"a".repeat(40)));
        assert!(!is_commit(&"a".repeat(41)));
        assert!(!is_commit("../x"));
        assert!(is_sha256(&"0f".repeat(32)));
        assert!(!is_sha256(&"0F".repeat(32)));
        assert!(!is_sha256(&"a".repeat(63)));
        assert!(is_revision("master") && is_revision("v1.0") && is_revision(&"a".repeat(40)));
        assert!(
            !is_revision("../x") && !is_revision("") && !is_revision("a/b") && !is_revision("..")
        );
        for bad in [
            "../../x",
            "/abs/x",
            "a\\..\\b",
            "a/../b",
            "a\0b",
            "a//b",
            "x:y",
            "model-\u{202E}fug.gguf",
            "a\u{200B}.gguf",
            "a\u{2028}b.gguf",
            "a\u{1b}[31m.gguf",
            "a\u{9b}31m.gguf",
            &"a".repeat(300),
        ] {
            assert!(check_repo_file_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_repo_file_name("Q8_0/model-Q8_0-00001-of-00002.gguf").is_ok());
        assert!(check_repo_file_name("模型/Qwen-Q4_K_M.gguf").is_ok());
    }
}
