//! `olm pull`: register a local file, or download a model from the hub into
//! the store (catalog alias, repo, quant choice, disk and memory checks).
//!
//! The download path is shared with `olm serve`'s `POST /api/pull`
//! ([`hub_target`], [`pull_from_hub`]): what differs between a terminal and
//! an HTTP stream goes through [`PullEvents`].

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::run::install_interrupt_flag;
use super::UsageError;
use crate::catalog::Catalog;
use crate::cli::PullArgs;
use crate::hub::quant::{self, QuantChoice};
use crate::hub::{self, human_size, FileHead, Hub, HubError, HubOptions, PullReporter, RemoteFile};
use crate::store::{
    self, space, Manifest, ManifestFile, ModelRef, RepoId, Source, Store, StoreError,
};
use crate::ui::{Printer, PullProgress};

/// The quant pulled when neither the user nor the catalog names one.
const DEFAULT_QUANT: &str = "Q4_K_M";

pub fn run(args: PullArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    let reference = ModelRef::parse(&args.model)?;
    if let ModelRef::Path(path) = &reference {
        return import(&store, path, args.name.as_deref(), printer);
    }
    if args.name.is_some() {
        return Err(UsageError::new("--name is only for local .gguf files").into());
    }
    let quant_flag = args.quant.as_deref().map(normalize_quant).transpose()?;
    let catalog = Catalog::load(&store.config_path())?;
    let target = Target::new(&reference, quant_flag, &catalog)?;
    let offline = args.offline || crate::env::flag(crate::env::HF_HUB_OFFLINE);
    if offline {
        if args.dry_run {
            return Err(UsageError::new("--dry-run needs the hub; drop --offline").into());
        }
        let message = match register_from_cache(&store, &target)? {
            FromCache::AlreadyStored(manifest) => {
                format!("{} is already in the store", manifest.name)
            }
            FromCache::Registered(manifest) => format!(
                "registered {} from the Hugging Face cache (offline)",
                manifest.name
            ),
        };
        printer.status(&message);
        return Ok(ExitCode::SUCCESS);
    }
    let hub = Hub::new(HubOptions::from_env(), install_interrupt_flag()?);
    let events = Terminal {
        printer,
        progress: PullProgress::new(printer),
    };
    let result = pull_online(&store, &hub, &target, &args, &events);
    if let Err(error) = &result {
        if error
            .downcast_ref::<HubError>()
            .is_some_and(|hub| matches!(hub, HubError::Interrupted))
        {
            printer.status(
                "interrupted: the partial download is kept; run the same command to resume",
            );
        }
    }
    result
}

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
}

/// `olm pull` on a terminal (or with stderr redirected).
struct Terminal<'a> {
    printer: &'a Printer,
    progress: PullProgress,
}

impl PullEvents for Terminal<'_> {
    fn reporter(&self) -> &dyn PullReporter {
        &self.progress
    }

    fn warn(&self, message: &str) {
        self.printer.warn(message);
    }

    fn pick(&self, repo: &RepoId, wanted: &str, choices: &[QuantChoice]) -> Option<usize> {
        if !self.printer.is_interactive() || !std::io::stdin().is_terminal() {
            return None;
        }
        let labels: Vec<String> = choices
            .iter()
            .map(|choice| {
                format!(
                    "{:<10} {:>9}  {}",
                    choice.quant,
                    human_size(choice.size),
                    choice.set_name
                )
            })
            .collect();
        dialoguer::Select::new()
            .with_prompt(format!("{repo} has no {wanted}; pick a quant"))
            .items(&labels)
            .default(0)
            .interact_opt()
            .ok()
            .flatten()
    }
}

/// The target of a pull asked for by name over the API: a catalog alias or
/// a hub repo (`:QUANT` picks the quant), never a path. Reads only the
/// catalog; no network.
pub fn hub_target(reference: &ModelRef) -> anyhow::Result<Target> {
    if let ModelRef::Path(_) = reference {
        return Err(UsageError::new("a model name is needed, not a path").into());
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
) -> anyhow::Result<Manifest> {
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

/// Quants are case-insensitive; stored upper case.
fn normalize_quant(text: &str) -> Result<String, StoreError> {
    store::names::check_tag(text).map_err(|reason| StoreError::invalid(text, reason))?;
    Ok(text.to_ascii_uppercase())
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

/// What [`register_from_cache`] found.
enum FromCache {
    AlreadyStored(Manifest),
    Registered(Manifest),
}

impl Target {
    fn new(
        reference: &ModelRef,
        quant_flag: Option<String>,
        catalog: &Catalog,
    ) -> anyhow::Result<Self> {
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
            ModelRef::Path(_) => Err(UsageError::new("a path needs --name").into()),
        }
    }
}

/// `olm pull ./file.gguf --name NAME`: validate, copy into the store, register.
fn import(
    store: &Store,
    path: &Path,
    name: Option<&str>,
    printer: &Printer,
) -> anyhow::Result<ExitCode> {
    if !path
        .to_string_lossy()
        .to_ascii_lowercase()
        .ends_with(".gguf")
    {
        return Err(UsageError::new(format!("{} is not a .gguf file", store::names::escaped(&path.to_string_lossy())))
            .with_hint("olm pull takes a model name, owner/repo[:QUANT], or a path to a .gguf file with --name")
            .into());
    }
    let Some(name) = name else {
        return Err(UsageError::new("a local file needs a store name")
            .with_hint("add --name NAME, e.g. --name my-model")
            .into());
    };
    let name = ModelRef::parse_name(name)?;
    let manifest = store.import(path, &name)?;
    printer.status(&format!(
        "registered {} ({}, {})",
        manifest.name,
        manifest.quant.as_deref().unwrap_or("unknown quant"),
        human_size(manifest.size())
    ));
    Ok(ExitCode::SUCCESS)
}

/// `--offline`: the store or the HF cache only.
fn register_from_cache(store: &Store, target: &Target) -> anyhow::Result<FromCache> {
    if let Some(manifest) = store.find(&target.name)? {
        if store.files(&manifest).iter().all(|path| path.exists()) {
            return Ok(FromCache::AlreadyStored(manifest));
        }
    }
    let quant = target
        .quant
        .clone()
        .unwrap_or_else(|| target.default_quant.clone());
    let Some(path) = store.find_in_hf_cache(&target.repo, Some(&quant)) else {
        return Err(HubError::Offline(format!("{}:{quant}", target.repo)).into());
    };
    let cache = store.repo_cache(&target.repo);
    let commit = cache
        .main_commit()
        .ok_or_else(|| HubError::Offline(target.repo.to_string()))?;
    let snapshot = cache.snapshot_file(&commit, "");
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
        ))
        .into());
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

fn pull_online(
    store: &Store,
    hub: &Hub,
    target: &Target,
    args: &PullArgs,
    events: &Terminal<'_>,
) -> anyhow::Result<ExitCode> {
    let printer = events.printer;
    printer.status(&format!("resolving {} on {}", target.repo, hub.endpoint()));
    let (files, choices) = list_quants(hub, target, events.reporter())?;
    if args.dry_run {
        print_dry_run(store, &choices, target, printer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let existing = if args.force {
        hub::Existing::Replace
    } else {
        hub::Existing::KeepIfVerified
    };
    let (choice, manifest) =
        fetch_and_register(store, hub, target, &files, &choices, existing, events)?;
    printer.status(&format!(
        "pulled {} ({}, {}); run it with `olm run {} \"...\"`",
        manifest.name,
        choice.quant,
        human_size(manifest.size()),
        manifest.name
    ));
    Ok(ExitCode::SUCCESS)
}

/// The repo's files and the GGUF quants among them (an error if none).
fn list_quants(
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
fn fetch_and_register(
    store: &Store,
    hub: &Hub,
    target: &Target,
    files: &[RemoteFile],
    choices: &[QuantChoice],
    existing: hub::Existing,
    events: &dyn PullEvents,
) -> anyhow::Result<(QuantChoice, Manifest)> {
    let choice = choose(target, files, choices, events)?;
    check_space(store, &target.repo, &choice, events)?;
    let mut entries = Vec::new();
    let mut commit = None;
    for file in &choice.files {
        let head = hub.head_file(&target.repo, &file.name, events.reporter())?;
        check_head(file, &head)?;
        events.file(&file.name, &head);
        hub::fetch_file(
            hub,
            &store.repo_cache(&target.repo),
            &file.name,
            &head,
            existing,
            events.reporter(),
        )?;
        commit.get_or_insert_with(|| head.commit.clone());
        entries.push(ManifestFile {
            name: file.name.clone(),
            sha256: head.sha256.clone(),
            size: head.size,
        });
    }
    let commit = commit.unwrap_or_default();
    events.writing_manifest();
    let manifest = register(store, target, &choice, &commit, entries)?;
    Ok((choice, manifest))
}

/// The hub's headers must agree with its listing.
fn check_head(file: &RemoteFile, head: &hub::FileHead) -> Result<(), HubError> {
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
    let wanted = target
        .quant
        .clone()
        .unwrap_or_else(|| target.default_quant.clone());
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
    let cache = store.repo_cache(repo);
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
                human_size(choice.size),
                human_size(memory)
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
) -> anyhow::Result<Manifest> {
    let cache = store.repo_cache(&target.repo);
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
            let _ = std::fs::remove_file(cache.snapshot_file(commit, &file.name));
            let _ = std::fs::remove_file(cache.blob(&file.sha256));
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

/// `--dry-run`: every quant with its size and whether it fits (stdout).
fn print_dry_run(
    store: &Store,
    choices: &[QuantChoice],
    target: &Target,
    printer: &Printer,
) -> anyhow::Result<()> {
    use std::io::Write;
    let free = space::free_disk(store.hf_cache());
    let memory = space::available_memory();
    let default = target
        .quant
        .clone()
        .unwrap_or_else(|| target.default_quant.clone());
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "{:<10} {:>10} {:>6}  {:<20} FILE",
        "QUANT", "SIZE", "PARTS", "FITS"
    )?;
    for choice in choices {
        let fits = match (
            free.is_some_and(|free| choice.size > free),
            memory.is_some_and(|memory| choice.size > memory),
        ) {
            (true, _) => "no (disk)",
            (false, true) => "disk only (memory)",
            (false, false) => "yes",
        };
        let marker = if choice.quant.eq_ignore_ascii_case(&default) {
            " *"
        } else {
            ""
        };
        writeln!(
            stdout,
            "{:<10} {:>10} {:>6}  {:<20} {}{marker}",
            choice.quant,
            human_size(choice.size),
            choice.files.len(),
            fits,
            choice.set_name
        )?;
    }
    stdout.flush()?;
    printer.status(&format!(
        "free disk: {}, available memory: {}; * = the quant `olm pull` takes",
        free.map_or("unknown".into(), human_size),
        memory.map_or("unknown".into(), human_size)
    ));
    Ok(())
}
