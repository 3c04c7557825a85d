//! `olm doctor [--offline] [MODEL...] [--json]`: what this machine gives olm
//! (build, CPU features, backends, the sandbox the kernel allows and the one
//! in force) and the store's health; with MODELs or `--offline`, proof that
//! each model can run with no network: every file present, its sha256 equal
//! to the manifest's, its header valid.
//!
//! Exit 0 only when every model checked holds; 3 when a file is missing; 5
//! when a file changed, leads outside the store or is not a valid model.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use super::exit;
use crate::cli::DoctorArgs;
use crate::human;
use crate::sandbox;
use crate::store::{Manifest, ModelRef, Problem, Store, StoreError};
use crate::ui::Printer;

/// Everything doctor found, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Report {
    olm: String,
    commit: String,
    llama_cpp: String,
    cpu: String,
    devices: Vec<String>,
    gpu_backends: String,
    /// llama.cpp's RPC backend (`olm worker`, `--rpc`).
    rpc: RpcReport,
    sandbox: SandboxReport,
    store: StoreReport,
    /// Present with MODELs or --offline.
    #[serde(skip_serializing_if = "Option::is_none")]
    models: Option<Vec<ModelReport>>,
}

#[derive(Debug, Serialize)]
struct RpcReport {
    /// Whether this build has the RPC backend.
    available: bool,
    /// The RPC protocol version this olm speaks; workers must speak the same.
    protocol: String,
}

#[derive(Debug, Serialize)]
struct SandboxReport {
    kernel: String,
    landlock_abi: i32,
    landlock_network_rules: bool,
    landlock_udp_rules: bool,
    seccomp: bool,
    /// What this very command runs under; `null` with --allow-network.
    in_force: Option<InForce>,
    missing: Vec<MissingFeature>,
}

#[derive(Debug, Serialize)]
struct InForce {
    landlock_network_rules: bool,
    seccomp_filter: bool,
}

#[derive(Debug, Serialize)]
struct MissingFeature {
    feature: String,
    reason: String,
}

#[derive(Debug, Serialize)]
struct StoreReport {
    home: PathBuf,
    hf_cache: PathBuf,
    models: usize,
    damaged: Vec<String>,
    free_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct ModelReport {
    name: String,
    files: Vec<FileReport>,
    /// `ok`, or why the model cannot run offline.
    status: Status,
}

#[derive(Debug, Serialize)]
struct FileReport {
    name: String,
    path: PathBuf,
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    problem: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Ok,
    Missing,
    Changed,
    Invalid,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "MISSING",
            Status::Changed => "CHANGED",
            Status::Invalid => "INVALID",
        }
    }
}

pub fn run(args: DoctorArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    let models = if args.offline || !args.models.is_empty() {
        Some(check_models(&store, &args.models)?)
    } else {
        None
    };
    let report = Report {
        olm: env!("CARGO_PKG_VERSION").into(),
        commit: option_env!("OLM_GIT_COMMIT").unwrap_or("unknown").into(),
        llama_cpp: crate::engine::llama_cpp_description(),
        cpu: crate::engine::system_info(),
        devices: crate::engine::devices(),
        gpu_backends: if cfg!(feature = "cuda") {
            "CUDA".into()
        } else {
            "none (build with --features cuda for CUDA)".into()
        },
        rpc: RpcReport {
            available: crate::engine::rpc::available(),
            protocol: crate::engine::rpc::PROTOCOL.to_string(),
        },
        sandbox: sandbox_report(),
        store: store_report(&store),
        models,
    };
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        write_text(&mut stdout, &report)?;
    }
    stdout.flush()?;
    drop(stdout);
    let Some(models) = &report.models else {
        return Ok(ExitCode::SUCCESS);
    };
    let worst = models
        .iter()
        .map(|model| model.status)
        .max()
        .unwrap_or(Status::Ok);
    let failing: Vec<&str> = models
        .iter()
        .filter(|model| model.status != Status::Ok)
        .map(|model| model.name.as_str())
        .collect();
    match worst {
        Status::Ok => Ok(ExitCode::SUCCESS),
        Status::Missing => {
            printer.error(
                &format!("files of {} are missing", failing.join(", ")),
                Some(&format!("pull it again: `olm pull {} --force`", failing[0])),
            );
            Ok(ExitCode::from(exit::NOT_FOUND))
        }
        Status::Changed | Status::Invalid => {
            printer.error(
                &format!(
                    "files of {} changed or are not valid models",
                    failing.join(", ")
                ),
                Some(&format!("pull it again: `olm pull {} --force`", failing[0])),
            );
            Ok(ExitCode::from(exit::INTEGRITY))
        }
    }
}

fn sandbox_report() -> SandboxReport {
    let kernel = sandbox::kernel_support();
    let applied = sandbox::applied();
    let mut missing: Vec<MissingFeature> = kernel
        .missing()
        .into_iter()
        .map(|missing| MissingFeature {
            feature: missing.feature.into(),
            reason: missing.reason,
        })
        .collect();
    if let Some(applied) = applied {
        for extra in &applied.missing {
            if !missing.iter().any(|known| known.feature == extra.feature) {
                missing.push(MissingFeature {
                    feature: extra.feature.into(),
                    reason: extra.reason.clone(),
                });
            }
        }
    }
    SandboxReport {
        landlock_abi: kernel.landlock.abi,
        landlock_network_rules: kernel.landlock.network_rules(),
        landlock_udp_rules: kernel.landlock.udp_rules(),
        seccomp: kernel.seccomp,
        kernel: kernel.release,
        in_force: applied.map(|applied| InForce {
            landlock_network_rules: applied.landlock_network,
            seccomp_filter: applied.seccomp_filter,
        }),
        missing,
    }
}

fn store_report(store: &Store) -> StoreReport {
    let (manifests, damaged) = store.manifests_all();
    StoreReport {
        home: store.home().to_owned(),
        hf_cache: store.hf_cache().to_owned(),
        models: manifests.len(),
        damaged: damaged.iter().map(ToString::to_string).collect(),
        free_bytes: crate::store::space::free_disk(store.home()).or_else(|| {
            store
                .home()
                .parent()
                .and_then(crate::store::space::free_disk)
        }),
    }
}

/// The models named (all stored ones when none is), each checked file by file.
fn check_models(store: &Store, names: &[String]) -> anyhow::Result<Vec<ModelReport>> {
    let manifests: Vec<Manifest> = if names.is_empty() {
        store.manifests_all().0
    } else {
        let mut manifests = Vec::new();
        for text in names {
            let reference = ModelRef::parse_name(text)?;
            let manifest = store
                .find(&reference)?
                .ok_or_else(|| StoreError::NotInStore(reference.to_string()))?;
            manifests.push(manifest);
        }
        manifests
    };
    Ok(manifests
        .iter()
        .map(|manifest| check_model(store, manifest))
        .collect())
}

/// Every file present (the file `olm run` loads and the blob behind it),
/// of the manifest's size and sha256; then the header of the whole model.
fn check_model(store: &Store, manifest: &Manifest) -> ModelReport {
    let loaded_paths = store.files(manifest);
    let checks = store.verify(manifest);
    let mut files = Vec::new();
    for ((file, loaded), check) in manifest.files.iter().zip(&loaded_paths).zip(&checks) {
        let blob = store.blob_path(manifest, file);
        let absent = |path: &PathBuf| {
            std::fs::symlink_metadata(path)
                .is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound)
        };
        let (status, problem) = if absent(&blob) || absent(loaded) {
            (Status::Missing, Some("not on disk".to_owned()))
        } else {
            match &check.problem {
                None => (Status::Ok, None),
                Some(Problem::Changed(reason)) => (Status::Changed, Some(reason.clone())),
                Some(Problem::Outside(escape)) => (Status::Changed, Some(escape.to_string())),
            }
        };
        files.push(FileReport {
            name: file.name.clone(),
            path: loaded.clone(),
            status,
            problem,
        });
    }
    let mut status = files
        .iter()
        .map(|file| file.status)
        .max()
        .unwrap_or(Status::Ok);
    if status == Status::Ok {
        if let Some(first) = loaded_paths.first() {
            if let Err(error) = crate::gguf::check_model(first) {
                status = Status::Invalid;
                files.push(FileReport {
                    name: "header".into(),
                    path: first.clone(),
                    status,
                    problem: Some(error.to_string()),
                });
            }
        }
    }
    ModelReport {
        name: manifest.name.clone(),
        files,
        status,
    }
}

fn write_text(out: &mut impl Write, report: &Report) -> std::io::Result<()> {
    let sandbox = &report.sandbox;
    let yes_no = |on: bool| if on { "yes" } else { "no" };
    writeln!(
        out,
        "olm           {} (commit {})",
        report.olm, report.commit
    )?;
    writeln!(out, "llama.cpp     {}", report.llama_cpp)?;
    writeln!(out, "cpu           {}", report.cpu.trim())?;
    writeln!(out, "devices       {}", report.devices.join(", "))?;
    writeln!(out, "gpu backends  {}", report.gpu_backends)?;
    writeln!(
        out,
        "rpc           {}",
        if report.rpc.available {
            format!(
                "protocol {} (olm worker, --rpc; workers must speak the same)",
                report.rpc.protocol
            )
        } else {
            "not built in (GGML_RPC)".into()
        }
    )?;
    writeln!(out, "kernel        {}", sandbox.kernel)?;
    writeln!(
        out,
        "landlock      ABI {}: network rules {}, UDP rules {}",
        sandbox.landlock_abi,
        yes_no(sandbox.landlock_network_rules),
        if sandbox.landlock_udp_rules {
            "yes"
        } else {
            "no (the seccomp filter keeps UDP out)"
        }
    )?;
    writeln!(out, "seccomp       {}", yes_no(sandbox.seccomp))?;
    match &sandbox.in_force {
        Some(in_force) => writeln!(
            out,
            "sandbox       in force: landlock network rules {}, seccomp socket filter {}",
            if in_force.landlock_network_rules {
                "on"
            } else {
                "OFF"
            },
            if in_force.seccomp_filter { "on" } else { "OFF" },
        )?,
        None => writeln!(
            out,
            "sandbox       OFF (--allow-network or OLM_ALLOW_NETWORK)"
        )?,
    }
    for missing in &sandbox.missing {
        writeln!(out, "missing       {}: {}", missing.feature, missing.reason)?;
    }
    let store = &report.store;
    writeln!(
        out,
        "store         {} ({} models{}), free {}",
        store.home.display(),
        store.models,
        if store.damaged.is_empty() {
            String::new()
        } else {
            format!(", {} damaged manifests", store.damaged.len())
        },
        store.free_bytes.map_or("unknown".into(), human::size)
    )?;
    writeln!(out, "hf cache      {}", store.hf_cache.display())?;
    for damaged in &store.damaged {
        writeln!(out, "damaged       {damaged}")?;
    }
    let Some(models) = &report.models else {
        return Ok(());
    };
    for model in models {
        writeln!(out)?;
        writeln!(out, "model {}", model.name)?;
        for file in &model.files {
            match &file.problem {
                None => writeln!(out, "  {:<8} {}", file.status.label(), file.path.display())?,
                Some(problem) => writeln!(
                    out,
                    "  {:<8} {}: {problem}",
                    file.status.label(),
                    file.path.display()
                )?,
            }
        }
        let verdict = match model.status {
            Status::Ok => "ready offline: every file is local, hash-verified, with a valid header",
            Status::Missing => "NOT ready: a file is missing",
            Status::Changed => "NOT ready: a file changed",
            Status::Invalid => "NOT ready: not a valid model",
        };
        writeln!(out, "  {verdict}")?;
    }
    if models.is_empty() {
        writeln!(out)?;
        writeln!(out, "no models in the store")?;
    }
    Ok(())
}
