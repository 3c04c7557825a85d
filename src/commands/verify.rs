//! `olm verify`: re-hash stored files against their manifests.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::VerifyArgs;
use crate::store::{Manifest, ModelRef, Store, StoreError};
use crate::ui::Printer;

pub fn run(args: VerifyArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    let mut failed = false;
    let manifests: Vec<Manifest> = if args.models.is_empty() {
        let (found, damaged) = store.manifests_all();
        for error in &damaged {
            printer.error(&error.to_string(), None);
            failed = true;
        }
        found
    } else {
        let mut found = Vec::new();
        for text in &args.models {
            let reference = ModelRef::parse_name(text)?;
            found.push(
                store
                    .find(&reference)?
                    .ok_or_else(|| StoreError::NotInStore(reference.to_string()))?,
            );
        }
        found
    };
    let mut stdout = std::io::stdout().lock();
    for manifest in &manifests {
        for check in store.verify(manifest) {
            match &check.problem {
                None => writeln!(stdout, "ok       {}  {}", check.model, check.path.display())?,
                Some(problem) => {
                    failed = true;
                    writeln!(
                        stdout,
                        "CHANGED  {}  {}: {problem}",
                        check.model,
                        check.path.display()
                    )?;
                }
            }
        }
    }
    stdout.flush()?;
    if failed {
        printer.error(
            "some stored files changed since they were pulled",
            Some("pull them again with `olm pull NAME --force`, or remove them with `olm rm`"),
        );
        return Ok(ExitCode::from(super::exit::FAILURE));
    }
    Ok(ExitCode::SUCCESS)
}
