//! `olm bench`: the test plan (llama-bench's pp N / tg N tests and their
//! combinations), repetitions and statistics, and the report formats.
//!
//! Owns: what is measured and how results are summarised and written.
//! Must not touch: HTTP, the hub, the terminal (progress goes through a callback).

mod report;

use std::time::Duration;

use serde::Serialize;

use crate::engine::{BenchParams, DraftConfig, DraftMode, EngineError, Model};

pub use report::{markdown_header, markdown_row, write_report, ModelSummary, ReportFormat};

/// One test: a prompt of `n_prompt` tokens or `n_gen` generated tokens
/// (llama-bench's pp and tg), with its context settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestCase {
    pub n_prompt: u32,
    pub n_gen: u32,
    pub n_batch: u32,
    pub n_ubatch: u32,
    pub threads: u32,
    /// Sequences generating at once (`--concurrency`); 1 for plain tests.
    pub sequences: u32,
    /// A copy test (`--draft`): greedy generation after a repeated passage,
    /// with speculative decoding on (`true`) or off.
    pub copy: Option<bool>,
}

impl TestCase {
    /// llama-bench's name: `pp512`, `tg128`, or `tg128 x4` for concurrent sequences.
    pub fn name(&self) -> String {
        match self.copy {
            Some(true) => return format!("tg{} copy+draft", self.n_gen),
            Some(false) => return format!("tg{} copy", self.n_gen),
            None => {}
        }
        match (self.n_prompt, self.n_gen, self.sequences) {
            (prompt, 0, _) => format!("pp{prompt}"),
            (0, generated, 1) => format!("tg{generated}"),
            (0, generated, sequences) => format!("tg{generated} x{sequences}"),
            (prompt, generated, _) => format!("pp{prompt}+tg{generated}"),
        }
    }

    /// Tokens processed per repetition (all sequences).
    fn tokens(&self) -> u64 {
        u64::from(self.n_prompt) + u64::from(self.n_gen) * u64::from(self.sequences)
    }

    fn params(&self) -> BenchParams {
        let per_sequence = self.n_prompt + self.n_gen;
        BenchParams {
            n_ctx: (per_sequence * self.sequences).max(1).div_ceil(256) * 256,
            n_batch: self.n_batch,
            n_ubatch: self.n_ubatch,
            threads: self.threads,
            sequences: self.sequences,
        }
    }
}

/// The cross product of the list-valued flags, in llama-bench's order.
#[derive(Debug, Clone)]
pub struct Plan {
    pub prompts: Vec<u32>,
    pub generations: Vec<u32>,
    pub batch_sizes: Vec<u32>,
    pub ubatch_sizes: Vec<u32>,
    pub threads: Vec<u32>,
    pub concurrency: Vec<u32>,
    pub repetitions: u32,
    pub warmup: bool,
    /// Add copy tests with and without speculative decoding (`--draft ngram`).
    pub draft: bool,
}

impl Plan {
    pub fn cases(&self) -> Vec<TestCase> {
        let mut cases = Vec::new();
        for &threads in &self.threads {
            for &n_batch in &self.batch_sizes {
                for &n_ubatch in &self.ubatch_sizes {
                    let base = TestCase {
                        n_prompt: 0,
                        n_gen: 0,
                        n_batch,
                        n_ubatch,
                        threads,
                        sequences: 1,
                        copy: None,
                    };
                    for &n_prompt in self.prompts.iter().filter(|&&n| n > 0) {
                        cases.push(TestCase { n_prompt, ..base });
                    }
                    for &n_gen in self.generations.iter().filter(|&&n| n > 0) {
                        for &sequences in &self.concurrency {
                            cases.push(TestCase {
                                n_gen,
                                sequences: sequences.max(1),
                                ..base
                            });
                        }
                        if self.draft {
                            for drafting in [false, true] {
                                cases.push(TestCase {
                                    n_gen,
                                    copy: Some(drafting),
                                    ..base
                                });
                            }
                        }
                    }
                }
            }
        }
        cases
    }
}

/// Results of one test case over its repetitions.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    #[serde(skip)]
    pub case: TestCase,
    pub samples_ns: Vec<u64>,
    pub samples_ts: Vec<f64>,
    /// Copy tests: draft tokens proposed and accepted, over all repetitions.
    pub drafted: usize,
    pub accepted: usize,
}

impl Measurement {
    pub fn avg_ns(&self) -> f64 {
        mean(
            &self
                .samples_ns
                .iter()
                .map(|&n| n as f64)
                .collect::<Vec<_>>(),
        )
    }

    pub fn stddev_ns(&self) -> f64 {
        stddev(
            &self
                .samples_ns
                .iter()
                .map(|&n| n as f64)
                .collect::<Vec<_>>(),
        )
    }

    pub fn avg_ts(&self) -> f64 {
        mean(&self.samples_ts)
    }

    pub fn stddev_ts(&self) -> f64 {
        stddev(&self.samples_ts)
    }
}

/// Run one case: an optional warm-up, then `repetitions` timed runs, each on
/// an empty KV cache.
pub fn measure(
    model: &Model,
    case: TestCase,
    repetitions: u32,
    warmup: bool,
) -> Result<Measurement, EngineError> {
    if let Some(drafting) = case.copy {
        return measure_copy(model, case, drafting, repetitions, warmup);
    }
    let mut context = model.bench_context(case.params())?;
    if warmup {
        context.clear();
        if case.n_prompt > 0 {
            context.prompt(case.n_prompt)?;
        }
        if case.n_gen > 0 {
            context.clear();
            context.generate(1)?;
        }
    }
    let mut samples_ns = Vec::with_capacity(repetitions as usize);
    let mut samples_ts = Vec::with_capacity(repetitions as usize);
    for _ in 0..repetitions.max(1) {
        context.clear();
        let mut elapsed = Duration::ZERO;
        if case.n_prompt > 0 {
            elapsed += context.prompt(case.n_prompt)?;
        }
        if case.n_gen > 0 {
            elapsed += context.generate(case.n_gen)?;
        }
        let nanos = elapsed.as_nanos().max(1) as u64;
        samples_ns.push(nanos);
        samples_ts.push(case.tokens() as f64 * 1e9 / nanos as f64);
    }
    Ok(Measurement {
        case,
        samples_ns,
        samples_ts,
        drafted: 0,
        accepted: 0,
    })
}

/// A copy test: its generation timed through the real generation loop.
fn measure_copy(
    model: &Model,
    case: TestCase,
    drafting: bool,
    repetitions: u32,
    warmup: bool,
) -> Result<Measurement, EngineError> {
    let draft = DraftConfig {
        mode: if drafting {
            DraftMode::Ngram
        } else {
            DraftMode::Off
        },
        ..DraftConfig::default()
    };
    if warmup {
        model.bench_copy(case.n_gen.min(16), case.threads, draft)?;
    }
    let mut measurement = Measurement {
        case,
        samples_ns: Vec::new(),
        samples_ts: Vec::new(),
        drafted: 0,
        accepted: 0,
    };
    for _ in 0..repetitions.max(1) {
        let run = model.bench_copy(case.n_gen, case.threads, draft)?;
        let nanos = run.generation.as_nanos().max(1) as u64;
        measurement.samples_ns.push(nanos);
        measurement
            .samples_ts
            .push(run.tokens as f64 * 1e9 / nanos as f64);
        measurement.drafted += run.drafted;
        measurement.accepted += run.accepted;
    }
    Ok(measurement)
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Sample standard deviation (n - 1), as llama-bench reports it.
fn stddev(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return 0.0;
    }
    let average = mean(values);
    let squares: f64 = values.iter().map(|v| (v - average).powi(2)).sum();
    (squares / (values.len() - 1) as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            prompts: vec![512],
            generations: vec![128],
            batch_sizes: vec![2048],
            ubatch_sizes: vec![512],
            threads: vec![2, 4],
            concurrency: vec![1],
            repetitions: 5,
            warmup: true,
            draft: false,
        }
    }

    #[test]
    fn cases_cover_the_cross_product_in_llama_bench_order() {
        let names: Vec<_> = plan()
            .cases()
            .iter()
            .map(|c| (c.name(), c.threads))
            .collect();
        assert_eq!(
            names,
            [
                ("pp512".into(), 2),
                ("tg128".into(), 2),
                ("pp512".into(), 4),
                ("tg128".into(), 4)
            ]
        );
    }

    #[test]
    fn zero_skips_a_test_and_concurrency_multiplies_generation() {
        let mut plan = plan();
        plan.prompts = vec![0];
        plan.threads = vec![2];
        plan.concurrency = vec![1, 4];
        let cases = plan.cases();
        let names: Vec<_> = cases.iter().map(TestCase::name).collect();
        assert_eq!(names, ["tg128", "tg128 x4"]);
        assert_eq!(cases[1].tokens(), 512);
        assert!(cases[1].params().n_ctx >= 512);
    }

    #[test]
    fn statistics_match_a_hand_computation() {
        assert_eq!(mean(&[1.0, 2.0, 3.0]), 2.0);
        assert!((stddev(&[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
        assert_eq!(stddev(&[5.0]), 0.0);
    }
}
