//! Catalog aliases: short names (`qwen-7b`) for Hugging Face GGUF repos, with
//! a default quant and the file-name pattern of each quant. The built-in list
//! is data (`catalog.toml`, compiled in); users add or override entries in
//! olm's `config.toml` with the same `[[model]]` tables.
//!
//! Owns: reading and validating catalog entries. Must not touch: the network,
//! the terminal, the store's files.

use std::path::Path;

use serde::Deserialize;

use crate::store::names::{check_part, check_tag};
use crate::store::RepoId;

const BUILTIN: &str = include_str!("catalog.toml");

/// One alias.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub alias: String,
    pub repo: RepoId,
    /// Quant pulled when none is asked for.
    pub quant: String,
    /// File name of a quant, `{quant}`/`{QUANT}` standing for it in lower/upper case.
    pub file: Option<String>,
    pub description: String,
}

#[derive(Deserialize)]
struct CatalogFile {
    #[serde(default)]
    model: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    alias: String,
    repo: String,
    quant: String,
    file: Option<String>,
    #[serde(default)]
    description: String,
}

/// A catalog that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("catalog {source_name}: {message}")]
pub struct CatalogError {
    pub source_name: String,
    pub message: String,
}

/// The aliases olm knows.
#[derive(Debug, Clone)]
pub struct Catalog {
    entries: Vec<CatalogEntry>,
}

impl Catalog {
    /// The built-in catalog only.
    pub fn builtin() -> Result<Self, CatalogError> {
        Ok(Self {
            entries: parse(BUILTIN, "built-in catalog")?,
        })
    }

    /// The built-in catalog plus the `[[model]]` entries of `config` (which
    /// win over built-in aliases of the same name), if that file exists.
    pub fn load(config: &Path) -> Result<Self, CatalogError> {
        let mut catalog = Self::builtin()?;
        let text = match std::fs::read_to_string(config) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(catalog),
            Err(error) => {
                return Err(CatalogError {
                    source_name: config.display().to_string(),
                    message: error.to_string(),
                })
            }
        };
        for entry in parse(&text, &config.display().to_string())? {
            catalog
                .entries
                .retain(|existing| existing.alias != entry.alias);
            catalog.entries.push(entry);
        }
        Ok(catalog)
    }

    pub fn get(&self, alias: &str) -> Option<&CatalogEntry> {
        self.entries
            .iter()
            .find(|entry| entry.alias.eq_ignore_ascii_case(alias))
    }

    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }
}

fn parse(text: &str, source_name: &str) -> Result<Vec<CatalogEntry>, CatalogError> {
    let error = |message: String| CatalogError {
        source_name: source_name.to_owned(),
        message,
    };
    let file: CatalogFile = toml::from_str(text).map_err(|e| error(e.to_string()))?;
    file.model
        .into_iter()
        .map(|raw| {
            check_part(&raw.alias)
                .map_err(|reason| error(format!("alias '{}': {reason}", raw.alias)))?;
            check_tag(&raw.quant)
                .map_err(|reason| error(format!("quant of '{}': {reason}", raw.alias)))?;
            let repo = RepoId::parse(&raw.repo).map_err(|e| error(e.to_string()))?;
            if let Some(file) = &raw.file {
                let sample = file
                    .replace("{quant}", "q4_k_m")
                    .replace("{QUANT}", "Q4_K_M");
                crate::store::names::check_repo_file_name(&sample)
                    .map_err(|reason| error(format!("file of '{}': {reason}", raw.alias)))?;
            }
            Ok(CatalogEntry {
                alias: raw.alias,
                repo,
                quant: raw.quant.to_ascii_uppercase(),
                file: raw.file,
                description: raw.description,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_is_valid_and_large_enough() {
        let catalog = Catalog::builtin().unwrap();
        assert!(catalog.entries().len() >= 20);
        let qwen = catalog.get("qwen-7b").unwrap();
        assert_eq!(qwen.repo.to_string(), "Qwen/Qwen2.5-7B-Instruct-GGUF");
        let mut aliases: Vec<&str> = catalog.entries().iter().map(|e| e.alias.as_str()).collect();
        aliases.sort_unstable();
        aliases.dedup();
        assert_eq!(aliases.len(), catalog.entries().len(), "aliases are unique");
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
            catalog.get("qwen-7b").unwrap().repo.to_string(),
            "me/x-GGUF"
        );
        std::fs::write(
            &config,
            "[[model]]\nalias = \"../x\"\nrepo = \"me/x\"\nquant = \"Q4_0\"\n",
        )
        .unwrap();
        assert!(Catalog::load(&config).is_err());
    }
}
