//! `olm list`: the store's models, and GGUF files other tools left in the
//! Hugging Face and ModelScope caches; with `--available`, the catalog.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use crate::catalog::Catalog;
use crate::cli::ListArgs;
use crate::human;
use crate::store::{self, HubKind, Manifest, Source, Store};
use crate::ui::Printer;

/// One row of `olm list`.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    quant: Option<String>,
    size: u64,
    /// `hub`, `local`, `hf-cache` or `ms-cache` (found in a hub's cache,
    /// not pulled by olm).
    source: &'static str,
    /// The hub a `hub` or cache row comes from: `hf` or `modelscope`.
    hub: Option<HubKind>,
    repo: Option<String>,
    revision: Option<String>,
    path: PathBuf,
    /// Seconds since the Unix epoch.
    modified: u64,
}

impl Row {
    /// The SOURCE column: the hub a pulled model came from (`hf`,
    /// `modelscope`), `local`, or the cache a file was found in.
    fn source_label(&self) -> &'static str {
        match (self.source, self.hub) {
            ("hub", Some(hub)) => hub.label(),
            (source, _) => source,
        }
    }
}

pub fn run(args: ListArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    if args.available {
        return available(&store, args.json);
    }
    let (manifests, damaged) = store.manifests_all();
    for error in &damaged {
        printer.warn(&error.to_string());
    }
    let mut rows: Vec<Row> = manifests
        .iter()
        .map(|manifest| manifest_row(&store, manifest))
        .collect();
    let (cached, escapes) = store.cached_files();
    for escape in &escapes {
        printer.warn(&format!("skipped: {escape}"));
    }
    rows.extend(cache_rows(&store, &manifests, cached));
    let (ms_cached, ms_escapes) = store.ms_cached_files();
    for escape in &ms_escapes {
        printer.warn(&format!("skipped: {escape}"));
    }
    rows.extend(ms_cache_rows(&store, &manifests, ms_cached));
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &rows)?;
        writeln!(stdout)?;
    } else {
        writeln!(
            stdout,
            "{:<44} {:<8} {:>9}  {:<10} MODIFIED",
            "NAME", "QUANT", "SIZE", "SOURCE"
        )?;
        let now = store::now();
        for row in &rows {
            writeln!(
                stdout,
                "{:<44} {:<8} {:>9}  {:<10} {}",
                row.name,
                row.quant.as_deref().unwrap_or("-"),
                human::size(row.size),
                row.source_label(),
                human::ago(now, row.modified)
            )?;
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn manifest_row(store: &Store, manifest: &Manifest) -> Row {
    let (source, repo, revision) = match &manifest.source {
        Source::Hub { repo, revision } => ("hub", Some(repo.clone()), Some(revision.clone())),
        Source::Local { .. } => ("local", None, None),
    };
    Row {
        name: manifest.name.clone(),
        quant: manifest.quant.clone(),
        size: manifest.size(),
        source,
        hub: manifest.hub_kind(),
        repo,
        revision,
        path: store.files(manifest).into_iter().next().unwrap_or_default(),
        modified: manifest.pulled_at,
    }
}

fn modified(path: &std::path::Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|metadata| metadata.modified())
        .ok()
        .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// The paths stored models use.
fn known_paths(store: &Store, manifests: &[Manifest]) -> Vec<PathBuf> {
    manifests
        .iter()
        .flat_map(|manifest| store.files(manifest))
        .collect()
}

/// GGUF files in the HF cache that no manifest refers to (first parts only).
fn cache_rows(store: &Store, manifests: &[Manifest], cached: Vec<store::CachedFile>) -> Vec<Row> {
    let known = known_paths(store, manifests);
    cached
        .into_iter()
        .filter(|file| store::is_first_part(&file.name) && !known.contains(&file.path))
        .map(|file| {
            let quant = store::quant_in_name(&file.name);
            let name = match &quant {
                Some(quant) => format!("{}:{quant}", file.repo),
                None => format!("{}/{}", file.repo, file.name),
            };
            Row {
                name,
                quant,
                size: file.size,
                source: "hf-cache",
                hub: Some(HubKind::HuggingFace),
                repo: Some(file.repo.to_string()),
                revision: Some(file.commit),
                modified: modified(&file.path),
                path: file.path,
            }
        })
        .collect()
}

/// GGUF files in the ModelScope cache (the `modelscope` client's downloads)
/// that no manifest refers to (first parts only), named so that `olm run`
/// takes them as they are: `ms://owner/repo:QUANT`.
fn ms_cache_rows(
    store: &Store,
    manifests: &[Manifest],
    cached: Vec<store::MsCachedFile>,
) -> Vec<Row> {
    let known = known_paths(store, manifests);
    cached
        .into_iter()
        .filter(|file| store::is_first_part(&file.name) && !known.contains(&file.path))
        .map(|file| {
            let quant = store::quant_in_name(&file.name);
            let name = match &quant {
                Some(quant) => format!("ms://{}:{quant}", file.repo),
                None => format!("ms://{}/{}", file.repo, file.name),
            };
            Row {
                name,
                quant,
                size: file.size,
                source: "ms-cache",
                hub: Some(HubKind::ModelScope),
                repo: Some(file.repo.to_string()),
                revision: file.revision,
                modified: modified(&file.path),
                path: file.path,
            }
        })
        .collect()
}

/// One row of `olm list --available`.
#[derive(Debug, Serialize)]
struct Available {
    name: String,
    quant: String,
    /// Bytes of the default quant, when the catalog knows.
    size: Option<u64>,
    /// The hubs that have it: `hf`, `modelscope`.
    sources: Vec<HubKind>,
    hf_repo: Option<String>,
    modelscope_repo: Option<String>,
    /// Ollama's names for the same model.
    ollama: Vec<String>,
    description: String,
}

/// `olm list --available`: the catalog (built-in and config.toml aliases).
fn available(store: &Store, json: bool) -> anyhow::Result<ExitCode> {
    let catalog = Catalog::load(&store.config_path())?;
    let rows: Vec<Available> = catalog
        .entries()
        .iter()
        .map(|entry| Available {
            name: entry.alias.clone(),
            quant: entry.quant.clone(),
            size: entry.size,
            sources: entry.hubs(),
            hf_repo: entry.repo.as_ref().map(ToString::to_string),
            modelscope_repo: entry.modelscope.as_ref().map(ToString::to_string),
            ollama: entry.ollama.clone(),
            description: entry.description.clone(),
        })
        .collect();
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, &rows)?;
        writeln!(stdout)?;
    } else {
        writeln!(
            stdout,
            "{:<24} {:<8} {:>9}  {:<15} OLLAMA",
            "NAME", "QUANT", "SIZE", "SOURCES"
        )?;
        for row in &rows {
            let sources: Vec<&str> = row.sources.iter().map(|hub| hub.label()).collect();
            writeln!(
                stdout,
                "{:<24} {:<8} {:>9}  {:<15} {}",
                row.name,
                row.quant,
                row.size.map_or("-".into(), human::size),
                sources.join(","),
                row.ollama.join(" ")
            )?;
        }
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}
