//! `olm show`: a model's metadata from its GGUF header (no weights loaded).
//! It checks the model exactly as `olm run` does (`gguf::check_model`: every
//! part of a split model, every rule), so a file `run` would refuse makes
//! `show` exit 5 too.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde::Serialize;

use crate::cli::ShowArgs;
use crate::gguf;
use crate::store::{self, ModelRef, Source, Store};
use crate::ui::Printer;

#[derive(Debug, Serialize)]
struct Details {
    name: String,
    architecture: Option<String>,
    model_name: Option<String>,
    parameters: u64,
    quant: Option<String>,
    context_length: Option<u64>,
    embedding_length: Option<u64>,
    layers: Option<u64>,
    vocab_size: Option<u64>,
    split_count: u64,
    /// Every file of the model in load order (one, or each split part).
    parts: Vec<PathBuf>,
    license: Option<String>,
    chat_template: Option<String>,
    source: Option<String>,
    path: PathBuf,
    size: u64,
    sha256: String,
}

pub fn run(args: ShowArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    let store = Store::from_env();
    let reference = ModelRef::parse(&args.model)?;
    let resolved = store.resolve(&reference)?;
    let model = gguf::check_model(&resolved.path)
        .with_context(|| format!("{} is not a usable model", resolved.path.display()))?;
    let info = model.header();
    let mut stdout = std::io::stdout().lock();
    if args.template {
        let template = info.chat_template().unwrap_or_default();
        writeln!(stdout, "{}", printer.stdout_text(template))?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.license {
        let license = info.license().unwrap_or("unknown");
        writeln!(stdout, "{}", printer.stdout_text(license))?;
        return Ok(ExitCode::SUCCESS);
    }
    let (source, size, sha256) = match &resolved.manifest {
        Some(manifest) => {
            let source = match &manifest.source {
                Source::Hub { repo, revision } => format!("{repo}@{revision}"),
                Source::Local { original } => format!("imported from {}", original.display()),
            };
            (
                Some(source),
                manifest.size(),
                manifest.files[0].sha256.clone(),
            )
        }
        None => (
            None,
            parts_size(model.parts())?,
            store::sha256_file(&resolved.path)?,
        ),
    };
    let details = Details {
        name: match &resolved.manifest {
            Some(manifest) => manifest.name.clone(),
            None => reference.to_string(),
        },
        architecture: info.architecture().map(str::to_owned),
        model_name: info.name().map(str::to_owned),
        parameters: info.parameter_count(),
        quant: info.file_type_name(),
        context_length: info.context_length(),
        embedding_length: info.embedding_length(),
        layers: info.block_count(),
        vocab_size: info.vocab_size(),
        split_count: info.split_count(),
        parts: model.parts().to_vec(),
        license: info.license().map(str::to_owned),
        chat_template: info.chat_template().map(str::to_owned),
        source,
        path: resolved.path.clone(),
        size,
        sha256,
    };
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &details)?;
        writeln!(stdout)?;
    } else {
        write_table(&mut stdout, &details)?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn write_table(out: &mut impl Write, details: &Details) -> std::io::Result<()> {
    let unknown = || "unknown".to_owned();
    let number = |value: Option<u64>| value.map_or_else(unknown, |value| value.to_string());
    let template = match &details.chat_template {
        Some(template) => format!(
            "yes ({} characters; --template prints it)",
            template.chars().count()
        ),
        None => "none".into(),
    };
    let rows = [
        ("name", details.name.clone()),
        (
            "architecture",
            details.architecture.clone().unwrap_or_else(unknown),
        ),
        ("parameters", human_count(details.parameters)),
        ("quant", details.quant.clone().unwrap_or_else(unknown)),
        ("context", number(details.context_length)),
        ("embedding", number(details.embedding_length)),
        ("layers", number(details.layers)),
        ("vocabulary", number(details.vocab_size)),
        ("template", template),
        ("license", details.license.clone().unwrap_or_else(unknown)),
        (
            "source",
            details.source.clone().unwrap_or_else(|| "file".into()),
        ),
        ("path", details.path.display().to_string()),
        ("size", crate::human::size(details.size)),
        ("sha256", details.sha256.clone()),
    ];
    for (label, value) in rows {
        writeln!(out, "{label:<13} {}", crate::ui::escape_controls(&value))?;
    }
    if details.split_count > 1 {
        writeln!(out, "{:<13} {}", "parts", details.split_count)?;
    }
    Ok(())
}

/// Bytes of all of a model's files.
fn parts_size(parts: &[PathBuf]) -> anyhow::Result<u64> {
    parts.iter().try_fold(0u64, |total, part| {
        let length = std::fs::metadata(part)
            .with_context(|| format!("cannot read {}", part.display()))?
            .len();
        Ok(total.saturating_add(length))
    })
}

/// 135M, 7.6B.
fn human_count(count: u64) -> String {
    match count {
        0..=999_999 => format!("{:.0}K", count as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.0}M", count as f64 / 1e6),
        _ => format!("{:.1}B", count as f64 / 1e9),
    }
}
