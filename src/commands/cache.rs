//! `olm cache ls|clear`: the prompt cache `olm run` keeps.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::{CacheAction, CacheArgs};
use crate::human;
use crate::promptcache::PromptCache;
use crate::ui::Printer;

pub fn run(args: CacheArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let Some(cache) = PromptCache::from_env() else {
        printer.status("no cache folder is known (set OLM_PROMPT_CACHE)");
        return Ok(ExitCode::SUCCESS);
    };
    match args.action {
        CacheAction::Ls { json } => list(&cache, json)?,
        CacheAction::Clear => {
            let freed = cache
                .clear()
                .with_context(|| format!("cannot clear {}", cache.dir().display()))?;
            printer.status(&format!(
                "removed the prompt cache in {} ({})",
                cache.dir().display(),
                human::size(freed)
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn list(cache: &PromptCache, json: bool) -> anyhow::Result<()> {
    let entries = cache.list();
    let mut stdout = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut stdout, &entries)?;
        writeln!(stdout)?;
    } else {
        writeln!(
            stdout,
            "{:>8} {:>9}  {:<14} ENTRY",
            "TOKENS", "SIZE", "USED"
        )?;
        let now = human::unix_seconds();
        for entry in &entries {
            writeln!(
                stdout,
                "{:>8} {:>9}  {:<14} {}",
                entry.tokens,
                human::size(entry.bytes),
                human::ago(now, entry.last_used),
                entry.path.display()
            )?;
        }
    }
    stdout.flush()?;
    Ok(())
}
