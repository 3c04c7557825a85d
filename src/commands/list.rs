//! `olm list`: the store's models, and GGUF files other tools left in the
//! Hugging Face cache.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use crate::cli::ListArgs;
use crate::human;
use crate::store::{self, Manifest, Source, Store};
use crate::ui::Printer;

/// One row of `olm list`.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    quant: Option<String>,
    size: u64,
    /// `hub`, `local` or `hf-cache` (found in the cache, not pulled by olm).
    source: &'static str,
    repo: Option<String>,
    revision: Option<String>,
    path: PathBuf,
    /// Seconds since the Unix epoch.
    modified: u64,
}

pub fn run(args: ListArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
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
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &rows)?;
        writeln!(stdout)?;
    } else {
        writeln!(
            stdout,
            "{:<44} {:<8} {:>9}  {:<8} MODIFIED",
            "NAME", "QUANT", "SIZE", "SOURCE"
        )?;
        let now = store::now();
        for row in &rows {
            writeln!(
                stdout,
                "{:<44} {:<8} {:>9}  {:<8} {}",
                row.name,
                row.quant.as_deref().unwrap_or("-"),
                human::size(row.size),
                row.source,
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
        repo,
        revision,
        path: store.files(manifest).into_iter().next().unwrap_or_default(),
        modified: manifest.pulled_at,
    }
}

/// GGUF files in the HF cache that no manifest refers to (first parts only).
fn cache_rows(store: &Store, manifests: &[Manifest], cached: Vec<store::CachedFile>) -> Vec<Row> {
    let known: Vec<PathBuf> = manifests
        .iter()
        .flat_map(|manifest| store.files(manifest))
        .collect();
    cached
        .into_iter()
        .filter(|file| store::is_first_part(&file.name) && !known.contains(&file.path))
        .map(|file| {
            let quant = store::quant_in_name(&file.name);
            let name = match &quant {
                Some(quant) => format!("{}:{quant}", file.repo),
                None => format!("{}/{}", file.repo, file.name),
            };
            let modified = std::fs::metadata(&file.path)
                .and_then(|metadata| metadata.modified())
                .ok()
                .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |elapsed| elapsed.as_secs());
            Row {
                name,
                quant,
                size: file.size,
                source: "hf-cache",
                repo: Some(file.repo.to_string()),
                revision: Some(file.commit),
                path: file.path,
                modified,
            }
        })
        .collect()
}
