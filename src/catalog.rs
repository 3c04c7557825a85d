//! Catalog aliases: short names (`qwen-7b`) for GGUF repos on Hugging Face
//! and, where the model is published there too, ModelScope, with a default
//! quant, the file-name pattern of each quant, the size of the default
//! quant, and the names Ollama's library gives the same model
//! (`qwen2.5:7b`). The built-in list is data (`catalog.toml`, compiled in);
//! users add or override entries in olm's `config.toml` with the same
//! `[[model]]` tables, and set the default pull source there (`source`,
//! `first_source`).
//!
//! Owns: reading and validating catalog entries and pull settings, finding
//! an entry by alias or Ollama name, and suggesting close names. Must not
//! touch: the network, the terminal, the store's files.

use std::path::Path;

use serde::Deserialize;

use crate::store::names::{check_part, check_tag};
use crate::store::{HubKind, RepoId};

const BUILTIN: &str = include_str!("catalog.toml");
/// Most bytes of `config.toml` read: a FIFO or `/dev/zero` in its place is
/// refused, not read forever.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// One alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub alias: String,
    /// The Hugging Face repo, if the model is there (an entry names at
    /// least one hub).
    pub repo: Option<RepoId>,
    /// Quant pulled when none is asked for.
    pub quant: String,
    /// File name of a quant, `{quant}`/`{QUANT}` standing for it in lower/upper case.
    pub file: Option<String>,
    pub description: String,
    /// The same model's GGUF repo on ModelScope, if it has one.
    pub modelscope: Option<RepoId>,
    /// File name pattern on ModelScope, when it differs from `file`.
    pub modelscope_file: Option<String>,
    /// Ollama's names for the same model (`qwen2.5:7b`), lower case.
    pub ollama: Vec<String>,
    /// Bytes of the default quant (all parts), when known.
    pub size: Option<u64>,
}

impl CatalogEntry {
    /// The repo on `hub`, if the model is there.
    pub fn repo_on(&self, hub: HubKind) -> Option<&RepoId> {
        match hub {
            HubKind::HuggingFace => self.repo.as_ref(),
            HubKind::ModelScope => self.modelscope.as_ref(),
        }
    }

    /// The file-name pattern on `hub`.
    pub fn file_on(&self, hub: HubKind) -> Option<&str> {
        match hub {
            HubKind::HuggingFace => self.file.as_deref(),
            HubKind::ModelScope => self.modelscope_file.as_deref().or(self.file.as_deref()),
        }
    }

    /// The hubs that have this model, Hugging Face first.
    pub fn hubs(&self) -> Vec<HubKind> {
        HubKind::ALL
            .into_iter()
            .filter(|hub| self.repo_on(*hub).is_some())
            .collect()
    }
}

#[derive(Deserialize)]
struct CatalogFile {
    #[serde(default)]
    model: Vec<RawEntry>,
    /// Default for `olm pull --source`.
    source: Option<String>,
    /// With `--source auto`, the hub tried first.
    first_source: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    alias: String,
    repo: Option<String>,
    quant: String,
    file: Option<String>,
    #[serde(default)]
    description: String,
    modelscope: Option<String>,
    modelscope_file: Option<String>,
    #[serde(default)]
    ollama: Vec<String>,
    size: Option<u64>,
}

/// Where `olm pull` may download from (`--source`, `OLM_SOURCE`, config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceSetting {
    Hub(HubKind),
    /// One hub, and the other when the first cannot be reached.
    Auto,
}

impl SourceSetting {
    /// `hf`, `modelscope` (also `huggingface`, `ms`) or `auto`.
    pub fn parse(text: &str) -> Option<Self> {
        if text.trim().eq_ignore_ascii_case("auto") {
            return Some(SourceSetting::Auto);
        }
        HubKind::parse(text).map(SourceSetting::Hub)
    }
}

/// The hubs a pull tries, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceChoice {
    /// This hub only.
    Only(HubKind),
    /// `first`, then the other one if `first` cannot be reached at all.
    Auto { first: HubKind },
}

impl SourceChoice {
    /// The hubs in the order they are tried.
    pub fn order(self) -> Vec<HubKind> {
        match self {
            SourceChoice::Only(hub) => vec![hub],
            SourceChoice::Auto { first } => vec![first, first.other()],
        }
    }
}

impl Default for SourceChoice {
    fn default() -> Self {
        SourceChoice::Auto {
            first: HubKind::HuggingFace,
        }
    }
}

/// A catalog that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("catalog {source_name}: {message}")]
pub struct CatalogError {
    pub source_name: String,
    pub message: String,
}

/// The aliases olm knows, and the pull settings of `config.toml`.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
    source: Option<SourceSetting>,
    first_source: Option<HubKind>,
}

impl Catalog {
    /// The built-in catalog only.
    pub fn builtin() -> Result<Self, CatalogError> {
        Ok(Self {
            entries: parse(BUILTIN, "built-in catalog")?.entries,
            source: None,
            first_source: None,
        })
    }

    /// The built-in catalog plus the `[[model]]` entries of `config` (which
    /// win over built-in aliases of the same name), if that file exists.
    pub fn load(config: &Path) -> Result<Self, CatalogError> {
        let mut catalog = Self::builtin()?;
        let text = match crate::files::read_text_bounded(config, MAX_CONFIG_BYTES) {
            Ok(text) => text,
            Err(crate::files::ReadError::Io { error, .. })
                if error.kind() == std::io::ErrorKind::NotFound =>
            {
                return Ok(catalog)
            }
            Err(error) => {
                return Err(CatalogError {
                    source_name: config.display().to_string(),
                    message: error.reason(),
                })
            }
        };
        let user = parse(&text, &config.display().to_string())?;
        for entry in user.entries {
            catalog
                .entries
                .retain(|existing| !existing.alias.eq_ignore_ascii_case(&entry.alias));
            catalog.entries.push(entry);
        }
        catalog.source = user.source;
        catalog.first_source = user.first_source;
        Ok(catalog)
    }

    pub fn get(&self, alias: &str) -> Option<&CatalogEntry> {
        self.entries
            .iter()
            .find(|entry| entry.alias.eq_ignore_ascii_case(alias))
    }

    /// The entry a store-style name means, and the quant it asks for: an
    /// alias (`qwen-7b`, its tag the quant), or one of Ollama's names
    /// (`qwen2.5:7b`, also `qwen2.5:7b-instruct-q8_0`, whose `-q8_0` is the
    /// quant). `None` when neither.
    pub fn find(&self, name: &str, tag: Option<&str>) -> Option<(&CatalogEntry, Option<String>)> {
        if let Some(entry) = self.get(name) {
            return Some((entry, tag.map(str::to_ascii_uppercase)));
        }
        let name = name.to_ascii_lowercase();
        let tag = tag.map(str::to_ascii_lowercase);
        let ollama = |full: &str| {
            self.entries
                .iter()
                .find(|entry| entry.ollama.iter().any(|known| known == full))
        };
        let full = match tag.as_deref() {
            None | Some("latest") => name.clone(),
            Some(tag) => format!("{name}:{tag}"),
        };
        if let Some(entry) = ollama(&full) {
            return Some((entry, None));
        }
        // `NAME:TAG-QUANT`: Ollama's tags with a quant at the end.
        let (stem, quant) = tag.as_deref()?.rsplit_once('-')?;
        crate::store::quant_in_name(&format!("x-{quant}.gguf"))?;
        ollama(&format!("{name}:{stem}")).map(|entry| (entry, Some(quant.to_ascii_uppercase())))
    }

    /// Up to three aliases or Ollama names close to `text` (a typo, a
    /// missing dash, a prefix), closest first.
    pub fn suggest(&self, text: &str) -> Vec<String> {
        let wanted = text.to_ascii_lowercase();
        let squashed = |name: &str| name.replace(['-', '_', '.', ':'], "");
        let mut scored: Vec<(usize, String)> = self
            .entries
            .iter()
            .flat_map(|entry| std::iter::once(entry.alias.clone()).chain(entry.ollama.clone()))
            .filter_map(|candidate| {
                let lower = candidate.to_ascii_lowercase();
                let distance = edit_distance(&wanted, &lower)
                    .min(edit_distance(&squashed(&wanted), &squashed(&lower)));
                let limit = (wanted.len() / 4).clamp(1, 3);
                let prefix = wanted.len() >= 3 && lower.starts_with(&wanted);
                (distance <= limit || prefix).then_some((distance, candidate))
            })
            .collect();
        scored.sort();
        scored.dedup_by(|a, b| a.1 == b.1);
        scored.into_iter().take(3).map(|(_, name)| name).collect()
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// The hubs a pull tries: `requested` (`--source`), else `OLM_SOURCE`,
    /// else config.toml's `source`, else auto; auto tries config.toml's
    /// `first_source` (default Hugging Face) first.
    pub fn source_choice(
        &self,
        requested: Option<SourceSetting>,
    ) -> Result<SourceChoice, CatalogError> {
        let from_env = match std::env::var(crate::env::OLM_SOURCE) {
            Ok(value) if !value.trim().is_empty() => {
                Some(SourceSetting::parse(&value).ok_or_else(|| CatalogError {
                    source_name: crate::env::OLM_SOURCE.into(),
                    message: format!(
                        "'{}' is not a source: use hf, modelscope or auto",
                        crate::store::names::escaped(&value)
                    ),
                })?)
            }
            _ => None,
        };
        let setting = requested.or(from_env).or(self.source);
        Ok(match setting {
            Some(SourceSetting::Hub(hub)) => SourceChoice::Only(hub),
            Some(SourceSetting::Auto) | None => SourceChoice::Auto {
                first: self.first_source.unwrap_or(HubKind::HuggingFace),
            },
        })
    }
}

/// Levenshtein distance of two short ASCII-ish strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            current.push(
                (previous[j] + cost)
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()]
}

/// What one catalog text holds.
struct Parsed {
    entries: Vec<CatalogEntry>,
    source: Option<SourceSetting>,
    first_source: Option<HubKind>,
}

/// A TOML error in one line: where, and what (toml's own message quotes
/// the whole source line, which for a hostile file is 200 KB of it).
fn one_line(text: &str, error: &toml::de::Error) -> String {
    let message: String = error
        .message()
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .chars()
        .take(200)
        .collect();
    match error.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            let line = before.iter().filter(|&&byte| byte == b'\n').count() + 1;
            format!("line {line}: {}", crate::store::names::escaped(&message))
        }
        None => crate::store::names::escaped(&message),
    }
}

fn parse(text: &str, source_name: &str) -> Result<Parsed, CatalogError> {
    let error = |message: String| CatalogError {
        source_name: source_name.to_owned(),
        message,
    };
    let file: CatalogFile = toml::from_str(text).map_err(|e| error(one_line(text, &e)))?;
    let source = file
        .source
        .as_deref()
        .map(|text| {
            SourceSetting::parse(text).ok_or_else(|| {
                error(format!(
                    "source '{}': use hf, modelscope or auto",
                    crate::store::names::escaped(text)
                ))
            })
        })
        .transpose()?;
    let first_source = file
        .first_source
        .as_deref()
        .map(|text| {
            HubKind::parse(text).ok_or_else(|| {
                error(format!(
                    "first_source '{}': use hf or modelscope",
                    crate::store::names::escaped(text)
                ))
            })
        })
        .transpose()?;
    let entries = file
        .model
        .into_iter()
        .map(|raw| {
            check_part(&raw.alias)
                .map_err(|reason| error(format!("alias '{}': {reason}", raw.alias)))?;
            check_tag(&raw.quant)
                .map_err(|reason| error(format!("quant of '{}': {reason}", raw.alias)))?;
            let repo = raw
                .repo
                .as_deref()
                .map(RepoId::parse)
                .transpose()
                .map_err(|e| error(e.to_string()))?;
            let modelscope = raw
                .modelscope
                .as_deref()
                .map(RepoId::parse)
                .transpose()
                .map_err(|e| error(format!("modelscope of '{}': {e}", raw.alias)))?;
            if repo.is_none() && modelscope.is_none() {
                return Err(error(format!(
                    "'{}' names no repo: give repo (Hugging Face), modelscope, or both",
                    raw.alias
                )));
            }
            for file in raw.file.iter().chain(&raw.modelscope_file) {
                let sample = file
                    .replace("{quant}", "q4_k_m")
                    .replace("{QUANT}", "Q4_K_M");
                crate::store::names::check_repo_file_name(&sample)
                    .map_err(|reason| error(format!("file of '{}': {reason}", raw.alias)))?;
            }
            let ollama = raw
                .ollama
                .iter()
                .map(|name| {
                    let lower = name.to_ascii_lowercase();
                    let (base, tag) = match lower.split_once(':') {
                        Some((base, tag)) => (base, Some(tag)),
                        None => (lower.as_str(), None),
                    };
                    check_part(base)
                        .and_then(|()| tag.map_or(Ok(()), check_tag))
                        .map_err(|reason| {
                            error(format!("ollama name '{name}' of '{}': {reason}", raw.alias))
                        })?;
                    Ok(lower)
                })
                .collect::<Result<Vec<_>, CatalogError>>()?;
            Ok(CatalogEntry {
                alias: raw.alias,
                repo,
                quant: raw.quant.to_ascii_uppercase(),
                file: raw.file,
                description: raw.description,
                modelscope,
                modelscope_file: raw.modelscope_file,
                ollama,
                size: raw.size,
            })
        })
        .collect::<Result<Vec<_>, CatalogError>>()?;
    Ok(Parsed {
        entries,
        source,
        first_source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_is_valid_and_large_enough() {
        let catalog = Catalog::builtin().unwrap();
        assert!(catalog.entries().len() >= 20);
        let qwen = catalog.get("qwen-7b").unwrap();
        assert_eq!(
            qwen.repo.as_ref().unwrap().to_string(),
            "Qwen/Qwen2.5-7B-Instruct-GGUF"
        );
        let mut aliases: Vec<&str> = catalog.entries().iter().map(|e| e.alias.as_str()).collect();
        aliases.sort_unstable();
        aliases.dedup();
        assert_eq!(aliases.len(), catalog.entries().len(), "aliases are unique");
    }

    #[test]
    fn a_toml_error_is_one_short_line_naming_its_line() {
        let deep = format!("x = {}1{}", "[".repeat(100_000), "]".repeat(100_000));
        let text = format!("# a comment\n{deep}\n");
        let error = parse(&text, "config.toml").err().expect("refused");
        assert!(!error.message.contains('\n'), "{}", error.message);
        assert!(error.message.len() < 300, "{} bytes", error.message.len());
        assert!(error.message.starts_with("line 2"), "{}", error.message);
    }

    #[test]
    fn user_entries_override() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            "[[model]]\nalias = \"qwen-7b\"\nrepo = \"me/x-GGUF\"\nquant = \"q8_0\"\n",
        )
        .unwrap();
        let catalog = Catalog::load(&config).unwrap();
        assert_eq!(
            catalog
                .get("qwen-7b")
                .unwrap()
                .repo
                .as_ref()
                .unwrap()
                .to_string(),
            "me/x-GGUF"
        );
        std::fs::write(
            &config,
            "[[model]]\nalias = \"../x\"\nrepo = \"me/x\"\nquant = \"Q4_0\"\n",
        )
        .unwrap();
        assert!(Catalog::load(&config).is_err());
        for bad in [
            "source = \"github\"\n",
            "first_source = \"auto\"\n",
            "[[model]]\nalias = \"a\"\nrepo = \"me/x\"\nquant = \"Q4_0\"\nmodelscope = \"../x\"\n",
            "[[model]]\nalias = \"a\"\nrepo = \"me/x\"\nquant = \"Q4_0\"\nollama = [\"a:../x\"]\n",
            "[[model]]\nalias = \"a\"\nrepo = \"me/x\"\nquant = \"Q4_0\"\nmodelscope_file = \"../{quant}.gguf\"\n",
            "[[model]]\nalias = \"a\"\nquant = \"Q4_0\"\n",
        ] {
            std::fs::write(&config, bad).unwrap();
            assert!(Catalog::load(&config).is_err(), "{bad}");
        }
        std::fs::write(
            &config,
            "source = \"modelscope\"\n[[model]]\nalias = \"mine\"\nrepo = \"me/x-GGUF\"\nquant = \"Q4_0\"\nmodelscope = \"me/x-GGUF\"\n",
        )
        .unwrap();
        let catalog = Catalog::load(&config).unwrap();
        assert_eq!(
            catalog.get("mine").unwrap().hubs(),
            [HubKind::HuggingFace, HubKind::ModelScope]
        );
        assert_eq!(
            catalog.source_choice(None).unwrap(),
            SourceChoice::Only(HubKind::ModelScope)
        );
        std::fs::write(
            &config,
            "[[model]]\nalias = \"ms-only\"\nmodelscope = \"me/x-GGUF\"\nquant = \"Q4_0\"\n",
        )
        .unwrap();
        let catalog = Catalog::load(&config).unwrap();
        assert_eq!(
            catalog.get("ms-only").unwrap().hubs(),
            [HubKind::ModelScope]
        );
        assert_eq!(
            catalog.source_choice(Some(SourceSetting::Auto)).unwrap(),
            SourceChoice::Auto {
                first: HubKind::HuggingFace
            }
        );
    }

    #[test]
    fn ollama_names_and_suggestions() {
        let catalog = Catalog::builtin().unwrap();
        for (name, tag, alias, quant) in [
            ("qwen2.5", Some("7b"), "qwen-7b", None),
            ("qwen2.5", None, "qwen-7b", None),
            ("qwen2.5", Some("latest"), "qwen-7b", None),
            ("qwen2.5", Some("7b-instruct-q8_0"), "qwen-7b", Some("Q8_0")),
            ("llama3.2", Some("3b"), "llama3.2-3b", None),
            ("gemma3", Some("4b"), "gemma3-4b", None),
            ("deepseek-r1", Some("7b"), "deepseek-r1-qwen-7b", None),
            ("qwen-7b", Some("q8_0"), "qwen-7b", Some("Q8_0")),
        ] {
            let (entry, wanted) = catalog
                .find(name, tag)
                .unwrap_or_else(|| panic!("{name}:{tag:?} not found"));
            assert_eq!(entry.alias, alias, "{name}:{tag:?}");
            assert_eq!(wanted.as_deref(), quant, "{name}:{tag:?}");
        }
        assert!(catalog.find("qwen2.5", Some("9b")).is_none());
        assert!(catalog.find("nothing", None).is_none());
        assert_eq!(
            catalog.suggest("qwen7b").first().map(String::as_str),
            Some("qwen-7b")
        );
        assert!(catalog.suggest("qwen-7").contains(&"qwen-7b".to_owned()));
        assert!(catalog.suggest("zzzzzzzz").is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn every_entry_says_where_it_lives_and_how_big_it_is() {
        let catalog = Catalog::builtin().unwrap();
        let mut ollama_names: Vec<&str> = catalog
            .entries()
            .iter()
            .flat_map(|entry| entry.ollama.iter().map(String::as_str))
            .collect();
        let count = ollama_names.len();
        ollama_names.sort_unstable();
        ollama_names.dedup();
        assert_eq!(
            ollama_names.len(),
            count,
            "each Ollama name maps to one entry"
        );
        for entry in catalog.entries() {
            assert!(
                entry.size.is_some_and(|size| size > 10 << 20),
                "{}",
                entry.alias
            );
            assert!(
                catalog
                    .get(&entry.alias)
                    .is_some_and(|found| found == entry),
                "{}",
                entry.alias
            );
        }
        assert!(catalog
            .entries()
            .iter()
            .any(|entry| entry.modelscope.is_some()));
    }
}
