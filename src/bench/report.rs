//! Report formats for `olm bench`, with llama-bench's columns and JSON field
//! names where they mean the same thing.

use std::io::{self, Write};

use serde::Serialize;

use super::Measurement;

/// `-o` formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Markdown,
    Json,
    Jsonl,
    Csv,
}

/// What the report says about the model and the machine.
#[derive(Debug, Clone)]
pub struct ModelSummary {
    pub filename: String,
    /// e.g. `llama 135M Q4_1`
    pub model_type: String,
    pub size_bytes: u64,
    pub n_params: u64,
    pub backend: String,
    pub cpu_info: String,
    pub build: String,
}

/// One row of output; field names follow llama-bench's JSON.
#[derive(Debug, Serialize)]
struct Record<'a> {
    build_commit: &'a str,
    cpu_info: &'a str,
    backends: &'a str,
    model_filename: &'a str,
    model_type: &'a str,
    model_size: u64,
    model_n_params: u64,
    n_batch: u32,
    n_ubatch: u32,
    n_threads: u32,
    n_prompt: u32,
    n_gen: u32,
    n_seq: u32,
    test: String,
    avg_ns: u64,
    stddev_ns: u64,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ns: &'a [u64],
    samples_ts: &'a [f64],
    /// Copy tests: speculative decoding's draft tokens, proposed and accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    n_drafted: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n_accepted: Option<usize>,
}

fn record<'a>(model: &'a ModelSummary, measurement: &'a Measurement) -> Record<'a> {
    let case = measurement.case;
    Record {
        build_commit: &model.build,
        cpu_info: &model.cpu_info,
        backends: &model.backend,
        model_filename: &model.filename,
        model_type: &model.model_type,
        model_size: model.size_bytes,
        model_n_params: model.n_params,
        n_batch: case.n_batch,
        n_ubatch: case.n_ubatch,
        n_threads: case.threads,
        n_prompt: case.n_prompt,
        n_gen: case.n_gen,
        n_seq: case.sequences,
        test: case.name(),
        avg_ns: measurement.avg_ns().round() as u64,
        stddev_ns: measurement.stddev_ns().round() as u64,
        avg_ts: measurement.avg_ts(),
        stddev_ts: measurement.stddev_ts(),
        samples_ns: &measurement.samples_ns,
        samples_ts: &measurement.samples_ts,
        n_drafted: case.copy.map(|_| measurement.drafted),
        n_accepted: case.copy.map(|_| measurement.accepted),
    }
}

/// Write all measurements in `format`.
pub fn write_report(
    out: &mut impl Write,
    format: ReportFormat,
    model: &ModelSummary,
    measurements: &[Measurement],
) -> io::Result<()> {
    match format {
        ReportFormat::Markdown => write_markdown(out, model, measurements),
        ReportFormat::Json => {
            let records: Vec<_> = measurements.iter().map(|m| record(model, m)).collect();
            serde_json::to_writer_pretty(&mut *out, &records)?;
            writeln!(out)
        }
        ReportFormat::Jsonl => {
            for measurement in measurements {
                serde_json::to_writer(&mut *out, &record(model, measurement))?;
                writeln!(out)?;
            }
            Ok(())
        }
        ReportFormat::Csv => write_csv(out, model, measurements),
    }
}

/// The header line of the markdown table (printed before the first result,
/// so rows can be streamed as they are measured).
pub fn markdown_header() -> &'static str {
    "| model | size | params | backend | threads | n_batch | test | t/s |\n| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |"
}

pub fn markdown_row(model: &ModelSummary, measurement: &Measurement) -> String {
    let case = measurement.case;
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {:.2} ± {:.2} |",
        model.model_type,
        human_size(model.size_bytes),
        human_params(model.n_params),
        model.backend,
        case.threads,
        case.n_batch,
        case.name(),
        measurement.avg_ts(),
        measurement.stddev_ts(),
    )
}

fn write_markdown(
    out: &mut impl Write,
    model: &ModelSummary,
    measurements: &[Measurement],
) -> io::Result<()> {
    writeln!(out, "{}", markdown_header())?;
    for measurement in measurements {
        writeln!(out, "{}", markdown_row(model, measurement))?;
    }
    Ok(())
}

const CSV_COLUMNS: &str = "model_filename,model_type,model_size,model_n_params,backends,n_threads,n_batch,n_ubatch,n_prompt,n_gen,n_seq,test,avg_ns,stddev_ns,avg_ts,stddev_ts";

fn write_csv(
    out: &mut impl Write,
    model: &ModelSummary,
    measurements: &[Measurement],
) -> io::Result<()> {
    writeln!(out, "{CSV_COLUMNS}")?;
    for measurement in measurements {
        let r = record(model, measurement);
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:.6},{:.6}",
            csv_field(r.model_filename),
            csv_field(r.model_type),
            r.model_size,
            r.model_n_params,
            csv_field(r.backends),
            r.n_threads,
            r.n_batch,
            r.n_ubatch,
            r.n_prompt,
            r.n_gen,
            r.n_seq,
            csv_field(&r.test),
            r.avg_ns,
            r.stddev_ns,
            r.avg_ts,
            r.stddev_ts,
        )?;
    }
    Ok(())
}

/// Quote a CSV field (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// llama-bench style: `93.80 MiB`, `4.36 GiB`.
fn human_size(bytes: u64) -> String {
    let bytes = bytes as f64;
    if bytes >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", bytes / (1u64 << 30) as f64)
    } else {
        format!("{:.2} MiB", bytes / (1u64 << 20) as f64)
    }
}

/// llama-bench style: `134.52 M`, `7.62 B`.
fn human_params(count: u64) -> String {
    let count = count as f64;
    if count >= 1e9 {
        format!("{:.2} B", count / 1e9)
    } else {
        format!("{:.2} M", count / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::TestCase;

    fn sample() -> (ModelSummary, Vec<Measurement>) {
        let model = ModelSummary {
            filename: "m,1.gguf".into(),
            model_type: "llama 135M Q4_1".into(),
            size_bytes: 98_360_000,
            n_params: 134_515_008,
            backend: "CPU".into(),
            cpu_info: "test cpu".into(),
            build: "test".into(),
        };
        let case = TestCase {
            n_prompt: 512,
            n_gen: 0,
            n_batch: 2048,
            n_ubatch: 512,
            threads: 2,
            sequences: 1,
            copy: None,
        };
        let measurement = Measurement {
            case,
            samples_ns: vec![1_000_000_000, 2_000_000_000],
            samples_ts: vec![512.0, 256.0],
            drafted: 0,
            accepted: 0,
        };
        (model, vec![measurement])
    }

    #[test]
    fn json_uses_llama_bench_field_names() {
        let (model, measurements) = sample();
        let mut out = Vec::new();
        write_report(&mut out, ReportFormat::Json, &model, &measurements).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let row = &value[0];
        assert_eq!(row["test"], "pp512");
        assert_eq!(row["n_prompt"], 512);
        assert_eq!(row["avg_ts"], 384.0);
        assert_eq!(row["avg_ns"], 1_500_000_000u64);
        assert_eq!(row["model_type"], "llama 135M Q4_1");
        assert!(row["stddev_ts"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn markdown_and_csv_render() {
        let (model, measurements) = sample();
        let mut out = Vec::new();
        write_report(&mut out, ReportFormat::Markdown, &model, &measurements).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("| llama 135M Q4_1 | 93.80 MiB | 134.52 M | CPU | 2 | 2048 | pp512 | 384.00 ± 181.02 |"), "{text}");
        let mut out = Vec::new();
        write_report(&mut out, ReportFormat::Csv, &model, &measurements).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with("\"m,1.gguf\",llama 135M Q4_1,"),
            "{text}"
        );
    }
}
