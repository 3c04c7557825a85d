//! What the user typed as MODEL: a path, a store name or catalog alias with an
//! optional tag, or a Hugging Face repo with an optional quant.

use std::fmt;
use std::path::{Path, PathBuf};

use super::names::{check_part, check_tag, MAX_REFERENCE_LENGTH};
use super::StoreError;

/// A Hugging Face repo id, `owner/name`, both parts validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId {
    pub owner: String,
    pub name: String,
}

impl RepoId {
    /// Parse and validate `owner/name`.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let invalid = |reason| StoreError::invalid(text, reason);
        let (owner, name) = text
            .split_once('/')
            .ok_or_else(|| invalid("a repo is owner/name"))?;
        check_part(owner).map_err(invalid)?;
        check_part(name).map_err(invalid)?;
        Ok(Self {
            owner: owner.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The Hugging Face cache folder name: `models--owner--name`.
    pub fn cache_folder(&self) -> String {
        format!("models--{}--{}", self.owner, self.name)
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

/// What the user typed as MODEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    /// A file on disk.
    Path(PathBuf),
    /// A store name or catalog alias, with an optional tag (`qwen-7b:q8_0`).
    Name { name: String, tag: Option<String> },
    /// A Hugging Face repo with an optional quant (`owner/repo:Q4_K_M`).
    Repo { repo: RepoId, quant: Option<String> },
}

/// Prefixes that mark a Hugging Face repo.
const HUB_PREFIXES: &[&str] = &["https://huggingface.co/", "huggingface.co/", "hf.co/"];

impl ModelRef {
    /// Parse MODEL. Anything path-like (`./x`, `../x`, `/x`, `~/x`, `*.gguf`,
    /// an existing file) is a path; everything else must be a valid name.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        if text.is_empty() {
            return Err(StoreError::EmptyReference);
        }
        if text.len() > MAX_REFERENCE_LENGTH {
            return Err(StoreError::invalid(text, "longer than 256 characters"));
        }
        if text.contains('\0') || text.chars().any(char::is_control) {
            return Err(StoreError::invalid(text, "contains a control character"));
        }
        if looks_like_path(text) {
            return Ok(ModelRef::Path(expand_home(text)));
        }
        Self::parse_name(text)
    }

    /// Parse a name (never a path): `name[:tag]`, `owner/repo[:quant]`, `hf.co/owner/repo[:quant]`.
    pub fn parse_name(text: &str) -> Result<Self, StoreError> {
        if text.is_empty() {
            return Err(StoreError::EmptyReference);
        }
        if text.len() > MAX_REFERENCE_LENGTH {
            return Err(StoreError::invalid(text, "longer than 256 characters"));
        }
        let invalid = |reason| StoreError::invalid(text, reason);
        let hub_prefix = HUB_PREFIXES
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix));
        let body = hub_prefix.unwrap_or(text);
        let (base, tag) = match body.split_once(':') {
            Some((base, tag)) => {
                check_tag(tag).map_err(invalid)?;
                (base, Some(tag.to_ascii_uppercase()))
            }
            None => (body, None),
        };
        match base.matches('/').count() {
            0 if hub_prefix.is_none() => {
                check_part(base).map_err(invalid)?;
                Ok(ModelRef::Name {
                    name: base.to_owned(),
                    tag,
                })
            }
            1 => {
                let repo = RepoId::parse(base).map_err(|_| invalid("not a valid owner/repo"))?;
                Ok(ModelRef::Repo { repo, quant: tag })
            }
            _ => Err(invalid("expected NAME[:TAG] or OWNER/REPO[:QUANT]")),
        }
    }

    /// The tag or quant, if one was given.
    pub fn tag(&self) -> Option<&str> {
        match self {
            ModelRef::Path(_) => None,
            ModelRef::Name { tag, .. } => tag.as_deref(),
            ModelRef::Repo { quant, .. } => quant.as_deref(),
        }
    }

    /// The same reference with another tag.
    pub fn with_tag(&self, new_tag: Option<String>) -> Self {
        match self {
            ModelRef::Path(path) => ModelRef::Path(path.clone()),
            ModelRef::Name { name, .. } => ModelRef::Name {
                name: name.clone(),
                tag: new_tag,
            },
            ModelRef::Repo { repo, .. } => ModelRef::Repo {
                repo: repo.clone(),
                quant: new_tag,
            },
        }
    }

    /// The store key without the tag (`qwen-7b`, `owner/repo`).
    pub fn base(&self) -> String {
        match self {
            ModelRef::Path(path) => path.display().to_string(),
            ModelRef::Name { name, .. } => name.clone(),
            ModelRef::Repo { repo, .. } => repo.to_string(),
        }
    }

    /// Without a store: a path resolves to itself if it exists.
    pub fn resolve(&self) -> Result<PathBuf, StoreError> {
        match self {
            ModelRef::Path(path) if path.exists() => Ok(path.clone()),
            ModelRef::Path(path) => Err(StoreError::NoSuchFile(path.clone())),
            other => Err(StoreError::NotInStore(other.to_string())),
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Path(path) => write!(f, "{}", path.display()),
            _ => {
                write!(f, "{}", self.base())?;
                match self.tag() {
                    Some(tag) => write!(f, ":{tag}"),
                    None => Ok(()),
                }
            }
        }
    }
}

fn looks_like_path(text: &str) -> bool {
    text.starts_with("./")
        || text.starts_with("../")
        || text == "."
        || text == ".."
        || text.starts_with('/')
        || text.starts_with("~/")
        || text.to_ascii_lowercase().ends_with(".gguf")
        || (!text.contains(':') && Path::new(text).is_file())
}

fn expand_home(text: &str) -> PathBuf {
    match (text.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(name: &str, tag: Option<&str>) -> ModelRef {
        ModelRef::Name {
            name: name.into(),
            tag: tag.map(Into::into),
        }
    }

    #[test]
    fn paths_are_paths() {
        assert_eq!(
            ModelRef::parse("x.gguf").unwrap(),
            ModelRef::Path("x.gguf".into())
        );
        assert_eq!(
            ModelRef::parse("./x").unwrap(),
            ModelRef::Path("./x".into())
        );
        assert_eq!(
            ModelRef::parse("/abs/m").unwrap(),
            ModelRef::Path("/abs/m".into())
        );
    }

    #[test]
    fn names_aliases_and_repos() {
        assert_eq!(ModelRef::parse("qwen-7b").unwrap(), name("qwen-7b", None));
        assert_eq!(
            ModelRef::parse("qwen-7b:q8_0").unwrap(),
            name("qwen-7b", Some("Q8_0"))
        );
        let repo = ModelRef::parse("hf.co/bartowski/Llama-3.2-3B-Instruct-GGUF:Q5_K_M").unwrap();
        assert_eq!(
            repo.to_string(),
            "bartowski/Llama-3.2-3B-Instruct-GGUF:Q5_K_M"
        );
        assert_eq!(
            ModelRef::parse("Qwen/Qwen2.5-7B-Instruct-GGUF")
                .unwrap()
                .tag(),
            None
        );
        assert!(matches!(
            ModelRef::parse(""),
            Err(StoreError::EmptyReference)
        ));
    }

    #[test]
    fn hostile_names_are_invalid() {
        let long = "a".repeat(1000);
        for bad in [
            "owner/../../x",
            "hf.co/owner/repo:../../x",
            "qwen:../../x",
            "%2e%2e%2f",
            "a\\b",
            "a\0b",
            "a\r\nb",
            "\x1b[31mred",
            "CON",
            long.as_str(),
            "a/b/c",
            "hf.co/qwen",
            "a:",
            "a:b:c",
            ":x",
            "owner/",
            "/",
            "hf.co/../x",
        ] {
            let parsed = ModelRef::parse(bad);
            assert!(
                matches!(parsed, Err(StoreError::InvalidReference { .. }))
                    || matches!(parsed, Ok(ModelRef::Path(_))) && bad.starts_with('/'),
                "{bad:?} gave {parsed:?}"
            );
        }
    }

    #[test]
    fn missing_files_and_names_do_not_resolve() {
        assert!(matches!(
            ModelRef::parse("/nonexistent/m.gguf").unwrap().resolve(),
            Err(StoreError::NoSuchFile(_))
        ));
        assert!(matches!(
            ModelRef::parse("nothing-here").unwrap().resolve(),
            Err(StoreError::NotInStore(_))
        ));
    }

    /// Every accepted name maps to path parts that are plain, non-dot components.
    #[test]
    fn accepted_names_have_safe_parts() {
        let alphabet = ['a', 'Z', '0', '.', '-', '_', '/', ':', '\\', '%', ' '];
        let mut state: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..20_000 {
            let mut text = String::new();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let length = 1 + (state % 12) as usize;
            let mut seed = state;
            for _ in 0..length {
                text.push(alphabet[(seed % alphabet.len() as u64) as usize]);
                seed /= alphabet.len() as u64;
                if seed == 0 {
                    seed = state.rotate_left(17) | 1;
                }
            }
            if let Ok(parsed) = ModelRef::parse_name(&text) {
                let key = parsed.to_string();
                for part in key.split(['/', ':']) {
                    assert!(
                        !part.is_empty() && part != "." && part != ".." && !part.contains('\\'),
                        "{text:?} -> {key:?}"
                    );
                }
                assert_eq!(
                    ModelRef::parse_name(&key).unwrap().to_string(),
                    key,
                    "round trip of {text:?}"
                );
            }
        }
    }
}
