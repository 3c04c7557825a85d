//! `olm verify`: re-hash stored files against their manifests, and name
//! every path that leads outside the store (olm refuses to follow those).
//!
//! stdout has one line per file: `ok`, `CHANGED` (missing, another size or
//! hash) or `OUTSIDE` (a symlink on the way leads outside the store). Any
//! problem: exit 1.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::VerifyArgs;
use crate::store::{Manifest, ModelRef, Problem, Store, StoreError};
use crate::ui::Printer;

/// What verify found wrong, for the closing error line.
#[derive(Default)]
struct Found {
    changed: bool,
    outside: bool,
}

pub fn run(args: VerifyArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    let mut found = Found::default();
    let mut stdout = std::io::stdout().lock();
    let manifests: Vec<Manifest> = if args.models.is_empty() {
        let (manifests, damaged) = store.manifests_all();
        for error in &damaged {
            report_error(error, "-", &mut found, &mut stdout, printer)?;
        }
        manifests
    } else {
        let mut manifests = Vec::new();
        for text in &args.models {
            let reference = ModelRef::parse_name(text)?;
            match store.find(&reference) {
                Ok(Some(manifest)) => manifests.push(manifest),
                Ok(None) => return Err(StoreError::NotInStore(reference.to_string()).into()),
                Err(error) if error.escape().is_some() => {
                    report_error(&error, text, &mut found, &mut stdout, printer)?;
                }
                Err(error) => return Err(error.into()),
            }
        }
        manifests
    };
    for manifest in &manifests {
        for check in store.verify(manifest) {
            match &check.problem {
                None => writeln!(stdout, "ok       {}  {}", check.model, check.path.display())?,
                Some(Problem::Changed(problem)) => {
                    found.changed = true;
                    writeln!(
                        stdout,
                        "CHANGED  {}  {}: {problem}",
                        check.model,
                        check.path.display()
                    )?;
                }
                Some(Problem::Outside(escape)) => {
                    found.outside = true;
                    writeln!(stdout, "OUTSIDE  {}  {escape}", check.model)?;
                }
            }
        }
    }
    stdout.flush()?;
    if found.outside {
        printer.error(
            "some stored paths are symlinks that lead outside the store; olm will not follow them",
            Some("remove those links (`olm rm NAME` removes what lies inside the store), then pull the models again"),
        );
        return Ok(ExitCode::from(super::exit::FAILURE));
    }
    if found.changed {
        printer.error(
            "some stored files changed since they were pulled",
            Some("pull them again with `olm pull NAME --force`, or remove them with `olm rm`"),
        );
        return Ok(ExitCode::from(super::exit::FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}

/// A store error met while finding manifests: a path out of the store is an
/// `OUTSIDE` line on stdout, anything else an error line on stderr.
fn report_error(
    error: &StoreError,
    model: &str,
    found: &mut Found,
    stdout: &mut impl Write,
    printer: &Printer,
) -> std::io::Result<()> {
    match error.escape() {
        Some(escape) => {
            found.outside = true;
            writeln!(stdout, "OUTSIDE  {model}  {escape}")
        }
        None => {
            found.changed = true;
            printer.error(&error.to_string(), None);
            Ok(())
        }
    }
}
