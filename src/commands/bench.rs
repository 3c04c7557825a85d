//! `olm bench`: llama-bench's tests through olm's engine.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::resolve::{load_options, resolve_model};
use crate::bench::{self, Measurement, ModelSummary, Plan, ReportFormat};
use crate::cli::{BenchArgs, BenchFormat, DraftChoice};
use crate::engine::{self, Model};
use crate::ui::Printer;

pub fn run(args: BenchArgs, printer: &Printer) -> anyhow::Result<ExitCode> {
    crate::ui::init_tracing(args.verbose);
    engine::configure_logging(args.verbose);
    let checked = resolve_model(&args.model)?;
    let quant = checked
        .header()
        .file_type_name()
        .unwrap_or_else(|| "?".to_owned());
    let model = Model::load(&checked, &load_options(&args.load, None)?)
        .with_context(|| format!("cannot load {}", checked.path().display()))?;
    let summary = summarize(checked.path(), &model, &quant);
    let format = report_format(args.output);
    let plan = Plan {
        prompts: args.prompts,
        generations: args.generations,
        batch_sizes: args.batch_size,
        ubatch_sizes: args.ubatch_size,
        threads: if args.threads.is_empty() {
            vec![engine::physical_cores()]
        } else {
            args.threads
        },
        concurrency: args.concurrency,
        draft: args.draft == DraftChoice::Ngram,
        repetitions: args.repetitions,
        warmup: !args.no_warmup,
    };

    let mut stdout = io::stdout().lock();
    if format == ReportFormat::Markdown {
        writeln!(stdout, "{}", bench::markdown_header())?;
    }
    let mut measurements: Vec<Measurement> = Vec::new();
    let cases = plan.cases();
    for (index, case) in cases.iter().enumerate() {
        printer.status(&format!(
            "[{}/{}] {} ({} threads)",
            index + 1,
            cases.len(),
            case.name(),
            case.threads
        ));
        let measurement = bench::measure(&model, *case, plan.repetitions, plan.warmup)?;
        match format {
            ReportFormat::Markdown => {
                writeln!(stdout, "{}", bench::markdown_row(&summary, &measurement))?
            }
            ReportFormat::Jsonl => bench::write_report(
                &mut stdout,
                format,
                &summary,
                std::slice::from_ref(&measurement),
            )?,
            ReportFormat::Json | ReportFormat::Csv => {}
        }
        stdout.flush()?;
        measurements.push(measurement);
    }
    if matches!(format, ReportFormat::Json | ReportFormat::Csv) {
        bench::write_report(&mut stdout, format, &summary, &measurements)?;
    }
    stdout.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn report_format(format: BenchFormat) -> ReportFormat {
    match format {
        BenchFormat::Md => ReportFormat::Markdown,
        BenchFormat::Json => ReportFormat::Json,
        BenchFormat::Jsonl => ReportFormat::Jsonl,
        BenchFormat::Csv => ReportFormat::Csv,
    }
}

fn summarize(path: &Path, model: &Model, quant: &str) -> ModelSummary {
    let system = engine::system_info();
    ModelSummary {
        filename: path.display().to_string(),
        model_type: format!("{} {quant}", model.description()),
        size_bytes: model.size(),
        n_params: model.n_params(),
        backend: "CPU".to_owned(),
        cpu_info: system,
        build: option_env!("OLM_GIT_COMMIT")
            .unwrap_or("unknown")
            .to_owned(),
    }
}
