//! `olm import FILE`: the models of a bundle made by `olm export`, verified
//! whole before any is registered (`store::bundle`). stdout lists the names
//! imported, one per line.

use std::fs::File;
use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::UsageError;
use crate::cli::ImportArgs;
use crate::human;
use crate::store::{Store, StoreError};
use crate::ui::Printer;

/// Bytes buffered between the bundle and the store.
const BUFFER: usize = 1 << 20;

pub fn run(args: ImportArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    let manifests = if args.file.as_os_str() == "-" {
        if std::io::stdin().is_terminal() {
            return Err(UsageError::new("refusing to read a bundle from a terminal")
                .with_hint("pipe one in (`olm export MODEL -o - | olm import -`) or give its file")
                .into());
        }
        let stdin = std::io::stdin().lock();
        store.import_bundle(
            BufReader::with_capacity(BUFFER, stdin),
            Path::new("-"),
            args.force,
        )?
    } else {
        let file = open_bundle(&args.file)?;
        let origin = std::fs::canonicalize(&args.file).unwrap_or_else(|_| args.file.clone());
        store.import_bundle(BufReader::with_capacity(BUFFER, file), &origin, args.force)?
    };
    let mut stdout = std::io::stdout().lock();
    for manifest in &manifests {
        printer.status(&format!(
            "imported {} ({})",
            manifest.name,
            human::size(manifest.size())
        ));
        writeln!(stdout, "{}", manifest.name)?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// The bundle file: anything readable as a stream but a folder.
fn open_bundle(path: &PathBuf) -> Result<File, StoreError> {
    let missing = || StoreError::NoSuchFile(path.clone());
    let metadata = std::fs::metadata(path).map_err(|_| missing())?;
    if metadata.is_dir() {
        return Err(missing());
    }
    File::open(path).map_err(|_| missing())
}
