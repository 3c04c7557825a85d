//! `olm rm`: remove store names, and files no other name uses. Only what
//! lies inside the store is removed (a link itself, never its target); a
//! link out of the store is named in a warning and left alone.

use std::io::IsTerminal;
use std::process::ExitCode;

use super::UsageError;
use crate::cli::RmArgs;
use crate::store::{Manifest, ModelRef, Store, StoreError};
use crate::ui::Printer;

pub fn run(args: RmArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    let mut targets: Vec<Manifest> = Vec::new();
    let mut damaged: Vec<ModelRef> = Vec::new();
    for text in &args.models {
        let reference = ModelRef::parse_name(text)?;
        match store.find(&reference) {
            Ok(Some(manifest)) => targets.push(manifest),
            Ok(None) => return Err(StoreError::NotInStore(reference.to_string()).into()),
            // The hint for a damaged manifest is `olm rm`: it must work.
            Err(StoreError::CorruptManifest { .. }) => damaged.push(reference),
            Err(error) => return Err(error.into()),
        }
    }
    for reference in &damaged {
        let path = store.remove_manifest(reference)?;
        printer.status(&format!(
            "removed {reference} (its manifest {} was damaged; `olm verify` reports files no name uses)",
            path.display()
        ));
    }
    if targets.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes && printer.is_interactive() && std::io::stdin().is_terminal() {
        let names: Vec<&str> = targets
            .iter()
            .map(|manifest| manifest.name.as_str())
            .collect();
        let confirmed = crate::ui::confirm(&format!("remove {}?", names.join(", ")), false);
        if !confirmed {
            return Err(UsageError::new("nothing removed").into());
        }
    }
    for manifest in &targets {
        let removal = store.remove(manifest)?;
        let files = match (removal.removed.len(), removal.left.is_empty()) {
            (0, true) => "its files are shared with another name and were kept".to_owned(),
            (count, _) => format!("{count} file(s) deleted"),
        };
        printer.status(&format!("removed {} ({files})", manifest.name));
        for escape in &removal.left {
            printer.warn(&format!(
                "{escape}; nothing outside the store was touched: remove the link yourself if it should not be there"
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
