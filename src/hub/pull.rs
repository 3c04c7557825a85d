//! A pull from the hub into the store, without a terminal: what to pull
//! ([`Target`], from a catalog alias or a repo), which quant, disk and memory
//! checks, fetch and verify each file, then register the model (the manifest
//! last). `olm pull` and `olm serve`'s `POST /api/pull` both run this code;
//! what differs between a terminal and an HTTP stream goes through
//! [`PullEvents`].
//!
//! Uses: `store` (cache layout, manifests), `catalog` (aliases), `gguf`
//! (validating what was fetched). Must not touch: the terminal, `commands`,
//! `cli`, `ui`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::quant::{self, QuantChoice};
use super::{FileHead, Hub, HubError, HubOptions, PullReporter, RemoteFile};
use crate::catalog::{Catalog, CatalogError};
use crate::hub;
use crate::human;
use crate::store::{
    self, space, Manifest, ManifestFile, ModelRef, RepoId, Source, Store, StoreError,
};

/// The quant pulled when neither the user nor the catalog names one.
const DEFAULT_QUANT: &str = "Q4_K_M";

/// What a pull tells its caller besides the bytes, and asks of it: the
/// terminal draws bars and may offer a picker; `olm serve` streams NDJSON.
pub trait PullEvents {
    /// Byte progress of each file.
    fn reporter(&self) -> &dyn PullReporter;
    /// Something worth knowing that does not stop the pull.
    fn warn(&self, message: &str);
    /// The quant asked for is missing: the index of one of `choices` to take
    /// instead, or `None` to fail with the list.
    fn pick(&self, _repo: &RepoId, _wanted: &str, _choices: &[QuantChoice]) -> Option<usize> {
        None
    }
    /// The next file to fetch, as the hub describes it (before its download).
    fn file(&self, _name: &str, _head: &FileHead) {}
    /// Every file is verified; the manifest is written next.
    fn writing_manifest(&self) {}
    /// The name held other files (the hub's version changed): `previous`
    /// was replaced, and `freed` bytes of its files no other name used are gone.
    fn replaced(&self, _previous: &Manifest, _freed: u64) {}
}

/// Why a [`Target`] cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// A path where only a hub name will do (`olm pull` reports it as a
    /// usage error).
    #[error("a model name is needed, not a path")]
    NotAName,
    /// A path given without the store name to register it under.
    #[error("a path needs --name")]
    PathNeedsName,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// What to pull and under which store name.
#[derive(Debug, Clone)]
pub struct Target {
    repo: RepoId,
    /// The quant asked for, if any.
    quant: Option<String>,
    /// The quant when none is asked for.
    default_quant: String,
    /// Catalog file-name pattern.
    pattern: Option<String>,
    /// The store name to write.
    name: ModelRef,
}

impl Target {
    /// The target of `reference` (an alias of `catalog` or a repo);
    /// `quant_flag` overrides the reference's `:QUANT`. No network.
    pub fn new(
        reference: &ModelRef,
        quant_flag: Option<String>,
        catalog: &Catalog,
    ) -> Result<Self, TargetError> {
        let quant = quant_flag.or_else(|| reference.tag().map(str::to_owned));
        let name = reference.with_tag(quant.clone());
        match reference {
            ModelRef::Name { name: alias, .. } => {
                let Some(entry) = catalog.get(alias) else {
                    return Err(HubError::RepoNotFound(format!(
                        "'{alias}' (not a catalog alias; give owner/repo)"
                    ))
                    .into());
                };
                Ok(Self {
                    repo: entry.repo.clone(),
                    quant,
                    default_quant: entry.quant.clone(),
                    pattern: entry.file.clone(),
                    name,
                })
            }
            ModelRef::Repo { repo, .. } => Ok(Self {
                repo: repo.clone(),
                quant,
                default_quant: DEFAULT_QUANT.into(),
                pattern: None,
                name,
            }),
            ModelRef::Path(_) => Err(TargetError::PathNeedsName),
        }
    }

    /// The hub repo.
    pub fn repo(&self) -> &RepoId {
        &self.repo
    }

    /// The quant asked for, or the default one.
    pub fn wanted_quant(&self) -> String {
        self.quant
            .clone()
            .unwrap_or_else(|| self.default_quant.clone())
    }
}

/// The target of a pull asked for by name over the API: a catalog alias or
/// a hub repo (`:QUANT` picks the quant), never a path. Reads only the
/// catalog; no network.
pub fn hub_target(reference: &ModelRef) -> Result<Target, TargetError> {
    if let ModelRef::Path(_) = reference {
        return Err(TargetError::NotAName);
    }
    let store = Store::from_env();
    let catalog = Catalog::load(&store.config_path())?;
    Target::new(reference, None, &catalog)
}

/// Download `target` into the store and register it, without a terminal
/// (`olm serve`'s `POST /api/pull`): a blob already verified is kept; with
/// `HF_HUB_OFFLINE` only the local cache is used. Setting `cancel` stops the
/// download; the partial file stays out of sight and the next pull resumes it.
pub fn pull_from_hub(
    target: &Target,
    cancel: Arc<AtomicBool>,
    events: &dyn PullEvents,
) -> Result<Manifest, HubError> {
    let store = Store::from_env();
    if crate::env::flag(crate::env::HF_HUB_OFFLINE) {
        return match register_from_cache(&store, target)? {
            FromCache::AlreadyStored(manifest) | FromCache::Registered(manifest) => Ok(manifest),
        };
    }
    let hub = Hub::new(HubOptions::from_env(), cancel);
    let (files, choices) = list_quants(&hub, target, events.reporter())?;
    let (_, manifest) = fetch_and_register(
        &store,
        &hub,
        target,
        &files,
        &choices,
        hub::Existing::KeepIfVerified,
        events,
    )?;
    Ok(manifest)
}

/// What [`register_from_cache`] found.
pub enum FromCache {
    AlreadyStored(Manifest),
    Registered(Manifest),
}

/// Offline: the store or the HF cache only.
pub fn register_from_cache(store: &Store, target: &Target) -> Result<FromCache, HubError> {
    if let Some(manifest) = store.find(&target.name)? {
        if store.files(&manifest).iter().all(|path| path.exists()) {
            return Ok(FromCache::AlreadyStored(manifest));
        }
    }
    let quant = target.wanted_quant();
    let Some(path) = store.find_in_hf_cache(&target.repo, Some(&quant)) else {
        return Err(HubError::Offline(format!("{}:{quant}", target.repo)));
    };
    let cache = store.checked_repo_cache(&target.repo)?;
    let commit = cache
        .main_commit()
        .ok_or_else(|| HubError::Offline(target.repo.to_string()))?;
    let snapshot = cache.snapshot_folder(&commit);
    let name = path
        .strip_prefix(&snapshot)
        .map(|relative| relative.to_string_lossy().into_owned())
        .unwrap_or_default();
    let info = crate::gguf::inspect(&path).map_err(|error| StoreError::InvalidModel {
        path: path.clone(),
        source: error,
    })?;
    if info.split_count() > 1 {
        return Err(HubError::Offline(format!(
            "{} (split models are registered only by an online pull)",
            target.repo
        )));
    }
    let sha256 = store::sha256_file(&path).map_err(HubError::io("cannot read", &path))?;
    let size = std::fs::metadata(&path)
        .map_err(HubError::io("cannot read", &path))?
        .len();
    let manifest = Manifest {
        name: target.name.to_string(),
        source: Source::Hub {
            repo: target.repo.to_string(),
            revision: commit,
        },
        quant: Some(quant),
        files: vec![ManifestFile { name, sha256, size }],
        pulled_at: store::now(),
    };
    store.save_manifest(&manifest)?;
    Ok(FromCache::Registered(manifest))
}

/// The repo's files and the GGUF quants among them (an error if none).
pub fn list_quants(
    hub: &Hub,
    target: &Target,
    reporter: &dyn PullReporter,
) -> Result<(Vec<RemoteFile>, Vec<QuantChoice>), HubError> {
    let files = hub.list_files(&target.repo, reporter)?;
    let choices = quant::quants(&files);
    if choices.is_empty() {
        return Err(HubError::NoGguf {
            repo: target.repo.to_string(),
        });
    }
    Ok((files, choices))
}

/// Choose the quant, check the disk, fetch and verify each file, then
/// register the model (the manifest last).
pub fn fetch_and_register(
    store: &Store,
    hub: &Hub,
    target: &Target,
    files: &[RemoteFile],
    choices: &[QuantChoice],
    existing: hub::Existing,
    events: &dyn PullEvents,
) -> Result<(QuantChoice, Manifest), HubError> {
    let choice = choose(target, files, choices, events)?;
    check_space(store, &target.repo, &choice, events)?;
    // Every folder a download writes into lies inside the cache (a planted
    // link out would have the bytes written elsewhere).
    let cache = store.checked_repo_cache(&target.repo)?;
    let mut entries = Vec::new();
    let mut commit = None;
    for file in &choice.files {
        let head = hub.head_file(&target.repo, &file.name, events.reporter())?;
        check_head(file, &head)?;
        events.file(&file.name, &head);
        hub::fetch_file(hub, &cache, &file.name, &head, existing, events.reporter())?;
        commit.get_or_insert_with(|| head.commit.clone());
        entries.push(ManifestFile {
            name: file.name.clone(),
            sha256: head.sha256.clone(),
            size: head.size,
        });
    }
    let commit = commit.unwrap_or_default();
    events.writing_manifest();
    let previous = store.find(&target.name)?;
    let manifest = register(store, target, &choice, &commit, entries)?;
    if let Some(previous) = previous.filter(|previous| previous.files != manifest.files) {
        let removed = store.remove_unused_files(&previous)?;
        let freed = if removed.is_empty() {
            0
        } else {
            previous
                .files
                .iter()
                .filter(|old| manifest.files.iter().all(|new| new.sha256 != old.sha256))
                .map(|old| old.size)
                .sum()
        };
        events.replaced(&previous, freed);
    }
    Ok((choice, manifest))
}

/// The hub's headers must agree with its listing.
fn check_head(file: &RemoteFile, head: &FileHead) -> Result<(), HubError> {
    if head.size != file.size {
        return Err(HubError::BadMetadata {
            what: "size (x-linked-size differs from the listing)",
            value: format!("{} vs {}", head.size, file.size),
        });
    }
    if let Some(sha256) = &file.sha256 {
        if sha256 != &head.sha256 {
            return Err(HubError::BadMetadata {
                what: "sha256 (etag differs from the listing)",
                value: head.sha256.clone(),
            });
        }
    }
    Ok(())
}

/// The quant asked for or the default; when missing, the caller may pick
/// one (a terminal shows a picker), otherwise an error listing what the repo has.
fn choose(
    target: &Target,
    files: &[RemoteFile],
    choices: &[QuantChoice],
    events: &dyn PullEvents,
) -> Result<QuantChoice, HubError> {
    let wanted = target.wanted_quant();
    if let Some(choice) = quant::select(files, &wanted, target.pattern.as_deref()) {
        return Ok(choice);
    }
    if target.quant.is_none() && choices.len() == 1 {
        return Ok(choices[0].clone());
    }
    if let Some(choice) = events
        .pick(&target.repo, &wanted, choices)
        .and_then(|index| choices.get(index))
    {
        return Ok(choice.clone());
    }
    Err(HubError::QuantNotFound {
        repo: target.repo.to_string(),
        quant: wanted,
        available: choices
            .iter()
            .map(|choice| (choice.quant.clone(), choice.size))
            .collect(),
    })
}

/// Refuse when the disk is short; warn when memory is.
fn check_space(
    store: &Store,
    repo: &RepoId,
    choice: &QuantChoice,
    events: &dyn PullEvents,
) -> Result<(), HubError> {
    let cache = store.checked_repo_cache(repo)?;
    let needed: u64 = choice
        .files
        .iter()
        .filter(|file| {
            file.sha256
                .as_ref()
                .is_none_or(|sha| !cache.blob(sha).exists())
        })
        .map(|file| {
            let partial = file
                .sha256
                .as_ref()
                .and_then(|sha| std::fs::metadata(cache.partial(sha)).ok())
                .map_or(0, |m| m.len());
            file.size.saturating_sub(partial)
        })
        .sum();
    if let Some(free) = space::free_disk(store.hf_cache()) {
        if needed > free {
            return Err(HubError::DiskFull {
                path: store.hf_cache().display().to_string(),
                needed,
                free,
            });
        }
    }
    if let Some(memory) = space::available_memory() {
        if choice.size > memory {
            events.warn(&format!(
                "{} needs about {} of memory and {} is available; it may run slowly or not load",
                choice.quant,
                human::size(choice.size),
                human::size(memory)
            ));
        }
    }
    Ok(())
}

/// Link the snapshot, point `refs/main` at the commit, validate the GGUF,
/// then write the manifest (last).
fn register(
    store: &Store,
    target: &Target,
    choice: &QuantChoice,
    commit: &str,
    files: Vec<ManifestFile>,
) -> Result<Manifest, HubError> {
    let cache = store.checked_repo_cache(&target.repo)?;
    for file in &files {
        cache
            .link_snapshot(commit, &file.name, &file.sha256)
            .map_err(HubError::io("cannot link", &cache.root))?;
    }
    let refs = cache.reference("main");
    store::write_atomic(&refs, commit.as_bytes()).map_err(HubError::io("cannot write", &refs))?;
    let first = cache.snapshot_file(commit, &files[0].name);
    if let Err(error) = crate::gguf::inspect(&first) {
        for file in &files {
            let _ = cache.remove_entry(&cache.snapshot_file(commit, &file.name));
            let _ = cache.remove_entry(&cache.blob(&file.sha256));
        }
        return Err(StoreError::InvalidModel {
            path: first,
            source: error,
        }
        .into());
    }
    let manifest = Manifest {
        name: target.name.to_string(),
        source: Source::Hub {
            repo: target.repo.to_string(),
            revision: commit.to_owned(),
        },
        quant: Some(choice.quant.clone()),
        files,
        pulled_at: store::now(),
    };
    store.save_manifest(&manifest)?;
    Ok(manifest)
}
