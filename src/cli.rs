//! Command-line definitions (clap derive): the single source for `--help`,
//! shell completions and man pages.
//!
//! Owns: argument names, defaults, help text and value parsing of plain
//! values. Must not do I/O or resolve anything (no store lookups, no file
//! reads): commands turn these plain values into resolved settings.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run open-weight language models locally.
///
/// olm runs GGUF models through llama.cpp on this machine. Everything but
/// `pull` works offline.
///
/// Exit codes: 0 success; 1 other failure; 2 invalid arguments or model
/// reference; 3 model not found; 4 network or hub error; 5 integrity failure
/// (bad or hostile model file, hash mismatch); 6 not enough disk space;
/// 130 interrupted.
#[derive(Debug, Parser)]
#[command(name = "olm", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an answer to a prompt and stream it to stdout.
    ///
    /// The prompt is the words after MODEL. When stdin is not a terminal it is
    /// read too and appended after a blank line, so `git diff | olm run MODEL
    /// "Write a commit message"` works. Only the answer goes to stdout; status
    /// and statistics go to stderr.
    Run(RunArgs),
}

/// Arguments of `olm run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The model: a path to a .gguf file.
    pub model: String,

    /// The prompt. Several words are joined with spaces.
    #[arg(value_name = "PROMPT")]
    pub prompt: Vec<String>,

    /// Send the prompt to the model as is, without the chat template.
    #[arg(long)]
    pub raw: bool,

    /// Print the prompt as the model sees it (after the chat template) to stderr.
    #[arg(long)]
    pub verbose_prompt: bool,

    /// Print one JSON object with the text and statistics instead of streaming text.
    ///
    /// Fields: model, text, stop_reason (eog, max_tokens, context_full,
    /// stop_sequence, cancelled), prompt_tokens, generated_tokens,
    /// load_ms, time_to_first_token_ms, prompt_ms, generation_ms,
    /// prompt_tokens_per_second, generation_tokens_per_second.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub generation: GenerationArgs,
}

/// Generation flags shared by `run`, `chat` and `serve`.
#[derive(Debug, Clone, Args)]
pub struct GenerationArgs {
    /// System prompt: instructions that frame the conversation.
    #[arg(short = 's', long, value_name = "TEXT", help_heading = "Generation")]
    pub system: Option<String>,

    /// Sampling temperature; 0 picks the most likely token every time (greedy).
    #[arg(long, value_name = "T", value_parser = non_negative_f32, help_heading = "Generation")]
    pub temperature: Option<f32>,

    /// Sample only from the K most likely tokens (0 disables).
    #[arg(long, value_name = "K", help_heading = "Generation")]
    pub top_k: Option<u32>,

    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches P (1.0 disables).
    #[arg(long, value_name = "P", value_parser = probability, help_heading = "Generation")]
    pub top_p: Option<f32>,

    /// Drop tokens less likely than P times the most likely one (0 disables).
    #[arg(long, value_name = "P", value_parser = probability, help_heading = "Generation")]
    pub min_p: Option<f32>,

    /// Penalize tokens repeated in the last 64 tokens (1.0 disables).
    #[arg(long, value_name = "X", value_parser = positive_f32, help_heading = "Generation")]
    pub repeat_penalty: Option<f32>,

    /// Random seed; the same seed, model and prompt give the same answer.
    #[arg(long, value_name = "N", help_heading = "Generation")]
    pub seed: Option<u32>,

    /// Stop after generating N tokens.
    ///
    /// Without it, generation stops at the model's end of turn or when the
    /// context is full.
    #[arg(short = 'n', long, value_name = "N", help_heading = "Generation")]
    pub max_tokens: Option<u32>,

    /// Context size in tokens (prompt plus answer).
    ///
    /// By default olm sizes the context to what the run needs: the prompt plus
    /// the answer budget, within the model's trained context length.
    #[arg(short = 'c', long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Generation")]
    pub ctx_size: Option<u32>,

    /// CPU threads for generation [default: physical cores].
    #[arg(short = 't', long, value_name = "N", env = "OLM_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024), help_heading = "Generation")]
    pub threads: Option<u32>,

    /// Number of layers to offload to the GPU (when olm is built with a GPU backend).
    #[arg(long, value_name = "N", help_heading = "Generation")]
    pub gpu_layers: Option<u32>,

    /// Constrain the output to a format: `json` makes the model answer with a JSON object.
    #[arg(long, value_enum, value_name = "FORMAT", help_heading = "Generation")]
    pub format: Option<OutputFormat>,

    /// Constrain the output to match a JSON schema read from FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "format", help_heading = "Generation")]
    pub schema: Option<PathBuf>,

    /// Chat template to use instead of the model's own: a Jinja file, or a
    /// llama.cpp built-in name (chatml, llama3, gemma, mistral-v7, phi4, ...).
    #[arg(long, value_name = "FILE|NAME", help_heading = "Generation")]
    pub chat_template: Option<String>,

    /// Show llama.cpp's own log lines on stderr.
    #[arg(long)]
    pub verbose: bool,
}

/// Output constraint for `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A JSON object.
    Json,
}

fn non_negative_f32(value: &str) -> Result<f32, String> {
    let number: f32 = value.parse().map_err(|_| format!("'{value}' is not a number"))?;
    if number.is_finite() && number >= 0.0 {
        Ok(number)
    } else {
        Err(format!("{value} must be a finite number >= 0"))
    }
}

fn positive_f32(value: &str) -> Result<f32, String> {
    let number = non_negative_f32(value)?;
    if number > 0.0 {
        Ok(number)
    } else {
        Err(format!("{value} must be greater than 0"))
    }
}

fn probability(value: &str) -> Result<f32, String> {
    let number = non_negative_f32(value)?;
    if number <= 1.0 {
        Ok(number)
    } else {
        Err(format!("{value} must be between 0 and 1"))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_has_help() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(
                    arg.get_help().is_some() || arg.get_long_help().is_some(),
                    "{path} argument '{id}' has no help text"
                );
            }
            for sub in command.get_subcommands() {
                assert!(sub.get_about().is_some(), "{path} {} has no about", sub.get_name());
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "olm");
    }

    #[test]
    fn sampling_values_are_range_checked() {
        assert!(Cli::try_parse_from(["olm", "run", "m", "--temperature", "-1"]).is_err());
        assert!(Cli::try_parse_from(["olm", "run", "m", "--top-p", "1.5"]).is_err());
        assert!(Cli::try_parse_from(["olm", "run", "m", "--repeat-penalty", "0"]).is_err());
        assert!(Cli::try_parse_from(["olm", "run", "m", "-c", "0"]).is_err());
        assert!(Cli::try_parse_from(["olm", "run", "m", "--temperature", "NaN"]).is_err());
        assert!(Cli::try_parse_from(["olm", "run", "m", "--temperature", "0.7", "hi"]).is_ok());
    }
}
