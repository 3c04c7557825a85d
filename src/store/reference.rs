//! What the user typed as MODEL: a path, a store name or catalog alias with an
//! optional tag, or a hub repo with an optional quant: Hugging Face
//! (`owner/repo`, `hf.co/owner/repo`) or ModelScope (`ms://owner/repo`,
//! `modelscope.cn/owner/repo`).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::names::{check_part, check_tag, MAX_REFERENCE_LENGTH};
use super::StoreError;

/// The hubs olm pulls from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
pub enum HubKind {
    /// huggingface.co or a mirror (`HF_ENDPOINT`).
    #[default]
    #[serde(rename = "hf")]
    HuggingFace,
    /// modelscope.cn or a mirror (`MODELSCOPE_ENDPOINT`).
    #[serde(rename = "modelscope")]
    ModelScope,
}

impl HubKind {
    /// Both hubs, Hugging Face first.
    pub const ALL: [HubKind; 2] = [HubKind::HuggingFace, HubKind::ModelScope];

    /// The short name used in `olm list`, `--source` and config: `hf`, `modelscope`.
    pub fn label(self) -> &'static str {
        match self {
            HubKind::HuggingFace => "hf",
            HubKind::ModelScope => "modelscope",
        }
    }

    /// The name people know: `Hugging Face`, `ModelScope`.
    pub fn title(self) -> &'static str {
        match self {
            HubKind::HuggingFace => "Hugging Face",
            HubKind::ModelScope => "ModelScope",
        }
    }

    /// The other hub.
    pub fn other(self) -> HubKind {
        match self {
            HubKind::HuggingFace => HubKind::ModelScope,
            HubKind::ModelScope => HubKind::HuggingFace,
        }
    }

    /// `hf` or `modelscope` (also `huggingface`, `ms`), any case.
    pub fn parse(text: &str) -> Option<HubKind> {
        match text.trim().to_ascii_lowercase().as_str() {
            "hf" | "huggingface" | "hugging-face" => Some(HubKind::HuggingFace),
            "modelscope" | "ms" => Some(HubKind::ModelScope),
            _ => None,
        }
    }

    pub fn is_hugging_face(&self) -> bool {
        *self == HubKind::HuggingFace
    }
}

/// A hub repo id, `owner/name`, both parts validated.
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

    /// The Hugging Face cache folder name: `models--owner--name` (as
    /// `hf-hub` and huggingface_hub name it).
    pub fn cache_folder(&self) -> String {
        hf_hub::Repo::model(self.to_string()).folder_name()
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
    /// A hub repo with an optional quant (`owner/repo:Q4_K_M`). `hub` is the
    /// hub the reference names (`hf.co/`, `ms://`), `None` for a plain
    /// `owner/repo` (either hub; `--source` decides). The hub is not part of
    /// the store name: `ms://a/b:Q` and `a/b:Q` are the same model.
    Repo {
        repo: RepoId,
        quant: Option<String>,
        hub: Option<HubKind>,
    },
}

/// Prefixes that mark a Hugging Face repo.
const HUB_PREFIXES: &[&str] = &["https://huggingface.co/", "huggingface.co/", "hf.co/"];

/// Prefixes that mark a ModelScope repo (the web address may carry `models/`).
const MODELSCOPE_PREFIXES: &[&str] = &[
    "ms://",
    "modelscope://",
    "https://www.modelscope.cn/models/",
    "https://modelscope.cn/models/",
    "www.modelscope.cn/models/",
    "modelscope.cn/models/",
    "https://www.modelscope.cn/",
    "https://modelscope.cn/",
    "www.modelscope.cn/",
    "modelscope.cn/",
];

/// The hub a prefix names and the text after it.
fn strip_hub_prefix(text: &str) -> Option<(HubKind, &str)> {
    let lower = text.to_ascii_lowercase();
    for (hub, prefixes) in [
        (HubKind::HuggingFace, HUB_PREFIXES),
        (HubKind::ModelScope, MODELSCOPE_PREFIXES),
    ] {
        if let Some(prefix) = prefixes.iter().find(|prefix| lower.starts_with(*prefix)) {
            return Some((hub, &text[prefix.len()..]));
        }
    }
    None
}

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

    /// Parse a name (never a path): `name[:tag]`, `owner/repo[:quant]`,
    /// `hf.co/owner/repo[:quant]`, `ms://owner/repo[:quant]`, `modelscope.cn/owner/repo[:quant]`.
    pub fn parse_name(text: &str) -> Result<Self, StoreError> {
        if text.is_empty() {
            return Err(StoreError::EmptyReference);
        }
        if text.len() > MAX_REFERENCE_LENGTH {
            return Err(StoreError::invalid(text, "longer than 256 characters"));
        }
        let invalid = |reason| StoreError::invalid(text, reason);
        let hub_prefix = strip_hub_prefix(text);
        let body = hub_prefix.map_or(text, |(_, body)| body);
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
                Ok(ModelRef::Repo {
                    repo,
                    quant: tag,
                    hub: hub_prefix.map(|(hub, _)| hub),
                })
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
            ModelRef::Repo { repo, hub, .. } => ModelRef::Repo {
                repo: repo.clone(),
                quant: new_tag,
                hub: *hub,
            },
        }
    }

    /// The hub a repo reference names (`hf.co/`, `ms://`), if any.
    pub fn hub(&self) -> Option<HubKind> {
        match self {
            ModelRef::Repo { hub, .. } => *hub,
            _ => None,
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
    fn cache_folders_are_huggingface_hubs() {
        let repo = RepoId::parse("Qwen/Qwen2.5-7B-Instruct-GGUF").unwrap();
        assert_eq!(
            repo.cache_folder(),
            "models--Qwen--Qwen2.5-7B-Instruct-GGUF"
        );
    }

    #[test]
    fn modelscope_references_name_their_hub_but_share_the_store_name() {
        for text in [
            "ms://Qwen/Qwen2.5-7B-Instruct-GGUF:q4_k_m",
            "modelscope.cn/Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M",
            "https://www.modelscope.cn/models/Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M",
            "MS://Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M",
        ] {
            let parsed = ModelRef::parse(text).unwrap();
            assert_eq!(parsed.hub(), Some(HubKind::ModelScope), "{text}");
            assert_eq!(
                parsed.to_string(),
                "Qwen/Qwen2.5-7B-Instruct-GGUF:Q4_K_M",
                "{text}"
            );
        }
        let plain = ModelRef::parse("Qwen/Qwen2.5-7B-Instruct-GGUF").unwrap();
        assert_eq!(plain.hub(), None);
        assert_eq!(
            ModelRef::parse("hf.co/Qwen/Qwen2.5-7B-Instruct-GGUF")
                .unwrap()
                .hub(),
            Some(HubKind::HuggingFace)
        );
        let tagged = plain.with_tag(Some("Q8_0".into()));
        assert_eq!(tagged.hub(), None);
        for bad in [
            "ms://../x",
            "ms://owner/../../x",
            "ms://owner/repo:../../x",
            "ms://qwen",
            "ms://a/b/c",
            "ms://",
            "modelscope.cn/owner/repo:a:b",
            "ms://owner/repo\\x",
            "ms://owner/re po",
            "modelscope.cn/%2e%2e/x",
        ] {
            assert!(
                matches!(
                    ModelRef::parse(bad),
                    Err(StoreError::InvalidReference { .. } | StoreError::EmptyReference)
                ),
                "{bad:?} gave {:?}",
                ModelRef::parse(bad)
            );
        }
        assert_eq!(HubKind::parse("MS"), Some(HubKind::ModelScope));
        assert_eq!(HubKind::parse("hf"), Some(HubKind::HuggingFace));
        assert_eq!(HubKind::parse("x"), None);
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
