//! A pull from a hub into the store, without a terminal: what to pull
//! ([`Target`], from a catalog alias, an Ollama name or a repo, and the hubs
//! that have it), which hub answers ([`connect`]: `--source auto` tries the
//! other hub only when the first cannot be reached at all, never after an
//! HTTP error), which quant, disk and memory checks, fetch and verify each
//! file, then register the model (the manifest last). `olm pull` and `olm
//! serve`'s `POST /api/pull` both run this code; what differs between a
//! terminal and an HTTP stream goes through [`PullEvents`].
//!
//! Uses: `store` (cache layouts, manifests), `catalog` (aliases, source
//! settings), `gguf` (validating what was fetched). Must not touch: the
//! terminal, `commands`, `cli`, `ui`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::quant::{self, QuantChoice};
use super::{FileHead, Hub, HubError, HubOptions, PullReporter, RemoteFile};
use crate::catalog::{Catalog, CatalogError, SourceChoice, SourceSetting};
use crate::hub;
use crate::human;
use crate::store::{
    self, space, DownloadPaths, HubKind, Manifest, ManifestFile, ModelRef, RepoId, Source, Store,
    StoreError, MODELSCOPE_REVISION,
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
    /// A step worth one status line (a hub that cannot be reached and the
    /// other one tried instead); by default a warning.
    fn notice(&self, message: &str) {
        self.warn(message);
    }
    /// About to ask `hub` at `endpoint` for `repo`'s files.
    fn connecting(&self, _hub: HubKind, _repo: &RepoId, _endpoint: &str) {}
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
    /// A name that is neither a catalog alias nor one of Ollama's names
    /// for a catalog model.
    #[error("'{name}' is not a model olm knows (not a catalog alias, and not owner/repo)")]
    UnknownName {
        name: String,
        /// Close aliases and Ollama names, closest first.
        suggestions: Vec<String>,
    },
    /// `--source` names one hub and the reference another (`ms://...
    /// --source hf`).
    #[error("{reference} names {named}, but --source asks for {asked}")]
    SourceConflict {
        reference: String,
        named: &'static str,
        asked: &'static str,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// One hub a target can come from: its repo there and the catalog's file
/// name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub hub: HubKind,
    pub repo: RepoId,
    pattern: Option<String>,
}

/// What to pull, from which hubs, and under which store name.
#[derive(Debug, Clone)]
pub struct Target {
    /// The hubs that have it, Hugging Face first.
    origins: Vec<Origin>,
    /// The reference named its hub (`ms://`, `hf.co/`): only that one.
    named_hub: Option<HubKind>,
    /// The hubs to try, in order (`--source`, `OLM_SOURCE`, config).
    choice: SourceChoice,
    /// The catalog alias, when the reference was one (for messages).
    alias: Option<String>,
    /// The quant asked for, if any.
    quant: Option<String>,
    /// The quant when none is asked for.
    default_quant: String,
    /// The store name to write.
    name: ModelRef,
}

impl Target {
    /// The target of `reference` (a catalog alias, one of Ollama's names for
    /// a catalog model, or a repo); `quant_flag` overrides the reference's
    /// `:QUANT`. The hubs are tried as `OLM_SOURCE` or config.toml say
    /// ([`Target::with_source`] overrides). No network.
    pub fn new(
        reference: &ModelRef,
        quant_flag: Option<String>,
        catalog: &Catalog,
    ) -> Result<Self, TargetError> {
        let choice = catalog.source_choice(None)?;
        match reference {
            ModelRef::Name { name: alias, tag } => {
                let Some((entry, catalog_quant)) = catalog.find(alias, tag.as_deref()) else {
                    return Err(TargetError::UnknownName {
                        name: reference.to_string(),
                        suggestions: catalog.suggest(&reference.to_string()),
                    });
                };
                let quant = quant_flag.or(catalog_quant);
                // An alias's tag is the quant; an Ollama name keeps its own tag.
                let name = if entry.alias.eq_ignore_ascii_case(alias) {
                    reference.with_tag(quant.clone())
                } else {
                    reference.clone()
                };
                let origins = entry
                    .hubs()
                    .into_iter()
                    .filter_map(|hub| {
                        Some(Origin {
                            hub,
                            repo: entry.repo_on(hub)?.clone(),
                            pattern: entry.file_on(hub).map(str::to_owned),
                        })
                    })
                    .collect();
                Ok(Self {
                    origins,
                    named_hub: None,
                    choice,
                    alias: Some(entry.alias.clone()),
                    quant,
                    default_quant: entry.quant.clone(),
                    name,
                })
            }
            ModelRef::Repo { repo, hub, .. } => {
                let quant = quant_flag.or_else(|| reference.tag().map(str::to_owned));
                let origins = HubKind::ALL
                    .into_iter()
                    .filter(|candidate| hub.is_none_or(|hub| hub == *candidate))
                    .map(|hub| Origin {
                        hub,
                        repo: repo.clone(),
                        pattern: None,
                    })
                    .collect();
                Ok(Self {
                    origins,
                    named_hub: *hub,
                    choice,
                    alias: None,
                    name: reference.with_tag(quant.clone()),
                    quant,
                    default_quant: DEFAULT_QUANT.into(),
                })
            }
            ModelRef::Path(_) => Err(TargetError::PathNeedsName),
        }
    }

    /// The same target with the hubs `--source` asks for; an error when the
    /// reference names the other hub.
    pub fn with_source(
        mut self,
        setting: SourceSetting,
        catalog: &Catalog,
    ) -> Result<Self, TargetError> {
        let choice = catalog.source_choice(Some(setting))?;
        if let (Some(named), SourceChoice::Only(asked)) = (self.named_hub, choice) {
            if named != asked {
                return Err(TargetError::SourceConflict {
                    reference: self.name.to_string(),
                    named: named.title(),
                    asked: asked.label(),
                });
            }
        }
        self.choice = choice;
        Ok(self)
    }

    /// The store name the pull writes.
    pub fn name(&self) -> &ModelRef {
        &self.name
    }

    /// The hub repo (the first hub that has it).
    pub fn repo(&self) -> &RepoId {
        &self.origins[0].repo
    }

    /// The quant asked for, or the default one.
    pub fn wanted_quant(&self) -> String {
        self.quant
            .clone()
            .unwrap_or_else(|| self.default_quant.clone())
    }

    /// The hubs to try, in order: the one the reference names, else those
    /// of the source choice that have the model.
    pub fn candidates(&self) -> Result<Vec<&Origin>, HubError> {
        let order = match self.named_hub {
            Some(hub) => vec![hub],
            None => self.choice.order(),
        };
        let candidates: Vec<&Origin> = order
            .iter()
            .filter_map(|hub| self.origins.iter().find(|origin| origin.hub == *hub))
            .collect();
        if candidates.is_empty() {
            let wanted = order.first().copied().unwrap_or_default();
            let what = self.alias.clone().unwrap_or_else(|| self.name.to_string());
            return Err(HubError::RepoNotFound(format!(
                "'{what}' on {} (the catalog names no {} repo for it; try --source {})",
                wanted.title(),
                wanted.title(),
                wanted.other().label()
            )));
        }
        Ok(candidates)
    }
}

/// The target of a pull asked for by name over the API: a catalog alias or
/// a hub repo (`:QUANT` picks the quant), never a path. Reads only the
/// catalog; no network. An unknown name is a [`HubError::RepoNotFound`]
/// that lists the closest names.
pub fn hub_target(reference: &ModelRef) -> Result<Target, TargetError> {
    if let ModelRef::Path(_) = reference {
        return Err(TargetError::NotAName);
    }
    let store = Store::from_env();
    let catalog = Catalog::load(&store.config_path())?;
    Target::new(reference, None, &catalog).map_err(|error| match error {
        TargetError::UnknownName { name, suggestions } => {
            let close = if suggestions.is_empty() {
                String::new()
            } else {
                format!("; did you mean {}?", suggestions.join(", "))
            };
            TargetError::Hub(HubError::RepoNotFound(format!(
                "'{name}' (not a catalog alias; give owner/repo{close})"
            )))
        }
        other => other,
    })
}

/// A hub that answered, the origin asked and what the repo holds.
pub struct Connection {
    pub hub: Hub,
    pub origin: Origin,
    pub files: Vec<RemoteFile>,
    pub choices: Vec<QuantChoice>,
}

/// Ask the target's hubs in turn for its files: the first that answers is
/// used. Only a hub that cannot be reached at all (DNS failure, refused
/// connection, connect timeout) makes way for the next, with one notice; an
/// HTTP error (404, 401, ...) is the answer.
pub fn connect(
    target: &Target,
    cancel: &Arc<AtomicBool>,
    events: &dyn PullEvents,
) -> Result<Connection, HubError> {
    let candidates = target.candidates()?;
    let mut index = 0;
    loop {
        let origin = candidates[index];
        let hub = Hub::new(HubOptions::for_hub(origin.hub), Arc::clone(cancel));
        hub.check_endpoint()?;
        events.connecting(origin.hub, &origin.repo, &hub.shown_endpoint());
        match list_quants(&hub, &origin.repo, events.reporter()) {
            Ok((files, choices)) => {
                return Ok(Connection {
                    hub,
                    origin: origin.clone(),
                    files,
                    choices,
                })
            }
            Err(HubError::Network {
                message,
                unreachable: true,
                ..
            }) if index + 1 < candidates.len() => {
                let next = candidates[index + 1].hub;
                events.notice(&format!(
                    "{} cannot be reached at {} ({message}); trying {} instead",
                    origin.hub.title(),
                    hub.shown_endpoint(),
                    next.title()
                ));
                index += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Download `target` into the store and register it, without a terminal
/// (`olm serve`'s `POST /api/pull`): a file already verified is kept; with
/// `HF_HUB_OFFLINE` only the local caches are used. Setting `cancel` stops
/// the download; the partial file stays out of sight and the next pull
/// resumes it.
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
    let connection = connect(target, &cancel, events)?;
    let (_, manifest) = fetch_and_register(
        &store,
        &connection,
        target,
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

/// Offline: the store, or the caches of the target's hubs (in the order
/// they would be tried): a file another tool downloaded is registered.
pub fn register_from_cache(store: &Store, target: &Target) -> Result<FromCache, HubError> {
    if let Some(manifest) = store.find(&target.name)? {
        if store.files(&manifest).iter().all(|path| path.exists()) {
            return Ok(FromCache::AlreadyStored(manifest));
        }
    }
    let quant = target.wanted_quant();
    for origin in target.candidates()? {
        let found = match origin.hub {
            HubKind::HuggingFace => hf_cached(store, &origin.repo, &quant)?,
            HubKind::ModelScope => ms_cached(store, &origin.repo, &quant)?,
        };
        let Some((path, name, revision)) = found else {
            continue;
        };
        let info = crate::gguf::inspect(&path).map_err(|error| StoreError::InvalidModel {
            path: path.clone(),
            source: error,
        })?;
        if info.split_count() > 1 {
            return Err(HubError::Offline(format!(
                "{} (split models are registered only by an online pull)",
                origin.repo
            )));
        }
        let sha256 = store::sha256_file(&path).map_err(HubError::io("cannot read", &path))?;
        let size = std::fs::metadata(&path)
            .map_err(HubError::io("cannot read", &path))?
            .len();
        let manifest = Manifest {
            name: target.name.to_string(),
            source: Source::Hub {
                repo: origin.repo.to_string(),
                revision,
            },
            quant: Some(quant),
            files: vec![ManifestFile { name, sha256, size }],
            pulled_at: store::now(),
            hub: origin.hub,
        };
        store.save_manifest(&manifest)?;
        return Ok(FromCache::Registered(manifest));
    }
    let repo = target.repo();
    Err(HubError::Offline(format!("{repo}:{quant}")))
}

/// A file of `quant` in the Hugging Face cache: (path, name in the repo, commit).
fn hf_cached(
    store: &Store,
    repo: &RepoId,
    quant: &str,
) -> Result<Option<(std::path::PathBuf, String, String)>, HubError> {
    let Some(path) = store.find_in_hf_cache(repo, Some(quant)) else {
        return Ok(None);
    };
    let cache = store.checked_repo_cache(repo)?;
    let Some(commit) = cache.main_commit() else {
        return Ok(None);
    };
    let snapshot = cache.snapshot_folder(&commit);
    let name = path
        .strip_prefix(&snapshot)
        .map(|relative| relative.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Some((path, name, commit)))
}

/// A file of `quant` in the ModelScope cache (at `master`, or in the
/// legacy folder the client would use): (path, name in the repo, revision).
fn ms_cached(
    store: &Store,
    repo: &RepoId,
    quant: &str,
) -> Result<Option<(std::path::PathBuf, String, String)>, HubError> {
    Ok(store
        .find_in_ms_cache_checked(repo, Some(quant))?
        .map(|file| (file.path, file.name, MODELSCOPE_REVISION.to_owned())))
}

/// The repo's files and the GGUF quants among them (an error if none).
pub fn list_quants(
    hub: &Hub,
    repo: &RepoId,
    reporter: &dyn PullReporter,
) -> Result<(Vec<RemoteFile>, Vec<QuantChoice>), HubError> {
    let files = hub.list_files(repo, reporter)?;
    let choices = quant::quants(&files);
    if choices.is_empty() {
        return Err(HubError::NoGguf {
            repo: repo.to_string(),
        });
    }
    Ok((files, choices))
}

/// Choose the quant, check the disk, fetch and verify each file, then
/// register the model (the manifest last).
pub fn fetch_and_register(
    store: &Store,
    connection: &Connection,
    target: &Target,
    existing: hub::Existing,
    events: &dyn PullEvents,
) -> Result<(QuantChoice, Manifest), HubError> {
    let Connection {
        hub,
        origin,
        files,
        choices,
    } = connection;
    let choice = choose(target, origin, files, choices, events)?;
    check_space(store, origin, &choice, events)?;
    let mut entries = Vec::new();
    let mut commit = None;
    for file in &choice.files {
        let head = hub.head_file(&origin.repo, file, events.reporter())?;
        check_head(file, &head)?;
        events.file(&file.name, &head);
        // Every folder a download writes into lies inside the cache (a
        // planted link out would have the bytes written elsewhere).
        let paths = download_paths(store, origin, &file.name, &head)?;
        hub::fetch_file(hub, &paths, &file.name, &head, existing, events.reporter())?;
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
    let manifest = register(store, target, origin, &choice, &commit, entries)?;
    if let Some(previous) = previous.filter(|previous| previous.files != manifest.files) {
        let removed = store.remove_unused_files(&previous)?;
        let freed = if removed.is_empty() {
            0
        } else {
            previous
                .files
                .iter()
                .filter(|old| manifest.files.iter().all(|new| new.sha256 != old.sha256))
                .fold(0u64, |total, old| total.saturating_add(old.size))
        };
        events.replaced(&previous, freed);
    }
    Ok((choice, manifest))
}

/// Where one file's download writes, in the cache of the hub it comes
/// from, after checking that nothing on the way leads outside that cache.
fn download_paths(
    store: &Store,
    origin: &Origin,
    name: &str,
    head: &FileHead,
) -> Result<DownloadPaths, HubError> {
    Ok(match origin.hub {
        HubKind::HuggingFace => store
            .checked_repo_cache(&origin.repo)?
            .download_paths(&head.sha256),
        HubKind::ModelScope => {
            let cache = store.ms_repo_cache(&origin.repo);
            cache.check(&head.commit, name)?;
            cache.download_paths(&head.commit, name, &head.sha256)
        }
    })
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
    origin: &Origin,
    files: &[RemoteFile],
    choices: &[QuantChoice],
    events: &dyn PullEvents,
) -> Result<QuantChoice, HubError> {
    let wanted = target.wanted_quant();
    if let Some(choice) = quant::select(files, &wanted, origin.pattern.as_deref()) {
        return Ok(choice);
    }
    if target.quant.is_none() && choices.len() == 1 {
        return Ok(choices[0].clone());
    }
    if let Some(choice) = events
        .pick(&origin.repo, &wanted, choices)
        .and_then(|index| choices.get(index))
    {
        return Ok(choice.clone());
    }
    Err(HubError::QuantNotFound {
        repo: origin.repo.to_string(),
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
    origin: &Origin,
    choice: &QuantChoice,
    events: &dyn PullEvents,
) -> Result<(), HubError> {
    let repo = &origin.repo;
    let (hf, ms) = match origin.hub {
        HubKind::HuggingFace => (Some(store.checked_repo_cache(repo)?), None),
        HubKind::ModelScope => (None, Some(store.ms_repo_cache(repo))),
    };
    let needed: u64 = choice
        .files
        .iter()
        .map(|file| {
            let (target, partial) = match (&file.sha256, &hf, &ms) {
                (Some(sha), Some(cache), _) => (cache.blob(sha), Some(cache.partial(sha))),
                (sha, _, Some(cache)) => (
                    cache.file(MODELSCOPE_REVISION, &file.name),
                    sha.as_ref().map(|sha| cache.partial(sha)),
                ),
                _ => return file.size,
            };
            if std::fs::metadata(&target).is_ok_and(|m| m.is_file() && m.len() == file.size) {
                return 0;
            }
            let partial = partial
                .and_then(|partial| std::fs::metadata(partial).ok())
                .map_or(0, |m| m.len());
            file.size.saturating_sub(partial)
        })
        .fold(0u64, u64::saturating_add);
    let cache = store.cache_of(origin.hub);
    if let Some(free) = space::free_disk(cache) {
        if needed > free {
            return Err(HubError::DiskFull {
                path: cache.display().to_string(),
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

/// Make the files visible as the hub's cache lays them out (Hugging Face:
/// snapshot links and `refs/main`; ModelScope: the files are already in
/// their snapshot folder), validate the GGUF, then write the manifest (last).
fn register(
    store: &Store,
    target: &Target,
    origin: &Origin,
    choice: &QuantChoice,
    commit: &str,
    files: Vec<ManifestFile>,
) -> Result<Manifest, HubError> {
    let first = match origin.hub {
        HubKind::HuggingFace => {
            let cache = store.checked_repo_cache(&origin.repo)?;
            for file in &files {
                cache
                    .link_snapshot(commit, &file.name, &file.sha256)
                    .map_err(HubError::io("cannot link", &cache.root))?;
            }
            let refs = cache.reference("main");
            store::write_atomic(&refs, commit.as_bytes())
                .map_err(HubError::io("cannot write", &refs))?;
            cache.snapshot_file(commit, &files[0].name)
        }
        HubKind::ModelScope => store
            .ms_repo_cache(&origin.repo)
            .file(commit, &files[0].name),
    };
    if let Err(error) = crate::gguf::inspect(&first) {
        match origin.hub {
            HubKind::HuggingFace => {
                let cache = store.repo_cache(&origin.repo);
                for file in &files {
                    let _ = cache.remove_entry(&cache.snapshot_file(commit, &file.name));
                    let _ = cache.remove_entry(&cache.blob(&file.sha256));
                }
            }
            HubKind::ModelScope => {
                let cache = store.ms_repo_cache(&origin.repo);
                for file in &files {
                    let _ = cache.cache().remove_entry(&cache.file(commit, &file.name));
                }
            }
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
            repo: origin.repo.to_string(),
            revision: commit.to_owned(),
        },
        quant: Some(choice.quant.clone()),
        files,
        pulled_at: store::now(),
        hub: origin.hub,
    };
    store.save_manifest(&manifest)?;
    Ok(manifest)
}
