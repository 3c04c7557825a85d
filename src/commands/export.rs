//! `olm export MODEL... -o FILE`: stored models as one bundle for a machine
//! without a network, every file hashed on the way (`store::bundle`). A
//! bundle file appears under its name only when complete; `-o -` streams to
//! stdout (never to a terminal).

use std::fs::{self, OpenOptions};
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use super::UsageError;
use crate::cli::ExportArgs;
use crate::human;
use crate::store::bundle::{BundleError, ExportSummary};
use crate::store::{Manifest, ModelRef, Store, StoreError};
use crate::ui::Printer;

/// Bytes buffered between the store and the bundle.
const BUFFER: usize = 1 << 20;

pub fn run(args: ExportArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    let mut manifests: Vec<Manifest> = Vec::new();
    for text in &args.models {
        let reference = ModelRef::parse_name(text)?;
        let manifest = store
            .find(&reference)?
            .ok_or_else(|| StoreError::NotInStore(reference.to_string()))?;
        if !manifests.iter().any(|known| known.name == manifest.name) {
            manifests.push(manifest);
        }
    }
    let size: u64 = manifests.iter().map(Manifest::size).sum();
    printer.status(&format!(
        "exporting {} ({})",
        manifests
            .iter()
            .map(|manifest| manifest.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        human::size(size)
    ));
    let summary = if args.output.as_os_str() == "-" {
        if printer.stdout_is_terminal() {
            return Err(UsageError::new("refusing to write a bundle to a terminal")
                .with_hint(
                    "redirect it (`-o - > FILE`, `-o - | ssh HOST olm import -`) or give -o FILE",
                )
                .into());
        }
        let stdout = std::io::stdout().lock();
        match store.export_bundle(&manifests, BufWriter::with_capacity(BUFFER, stdout)) {
            Ok(summary) => summary,
            // The reader stopped (`| head`): end quietly, as every command does.
            Err(BundleError::Io { error, .. }) if error.kind() == ErrorKind::BrokenPipe => {
                return Ok(ExitCode::SUCCESS)
            }
            Err(error) => return Err(error.into()),
        }
    } else {
        export_to_file(&store, &manifests, &args.output)?
    };
    printer.status(&format!(
        "exported {} model(s), {} file(s), {}",
        summary.models,
        summary.files,
        human::size(summary.bytes)
    ));
    Ok(ExitCode::SUCCESS)
}

/// Write the bundle to a temporary file beside `output`, then rename it:
/// a bundle that failed half-way never carries the name asked for.
fn export_to_file(
    store: &Store,
    manifests: &[Manifest],
    output: &Path,
) -> anyhow::Result<ExportSummary> {
    let name = output
        .file_name()
        .ok_or_else(|| UsageError::new(format!("-o {} is not a file name", output.display())))?;
    let directory = match output.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = directory.join(format!(
        ".{}.{}.partial",
        name.to_string_lossy(),
        std::process::id()
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .with_context(|| format!("cannot create {}", temp.display()))?;
    let written = (|| -> anyhow::Result<ExportSummary> {
        let mut writer = BufWriter::with_capacity(BUFFER, &file);
        let summary = store.export_bundle(manifests, &mut writer)?;
        writer
            .flush()
            .with_context(|| format!("cannot write {}", temp.display()))?;
        drop(writer);
        file.sync_all()
            .with_context(|| format!("cannot write {}", temp.display()))?;
        crate::store::rename_durable(&temp, output)
            .with_context(|| format!("cannot write {}", output.display()))?;
        Ok(summary)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}
