//! `/set PARAM VALUE`: the generation parameters a chat can change while it
//! runs, their parsing and range checks (the same ranges as the command-line
//! flags), and how they read back for `/show params`.
//!
//! Owns: parameter names and value validation. Must not touch: the terminal,
//! the model, the conversation.

use std::fmt;
use std::str::FromStr;

use crate::engine::GenerateRequest;

/// A parameter `/set` can change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameter {
    Temperature,
    TopK,
    TopP,
    MinP,
    Seed,
    MaxTokens,
    RepeatPenalty,
}

impl Parameter {
    pub const ALL: [Parameter; 7] = [
        Parameter::Temperature,
        Parameter::TopK,
        Parameter::TopP,
        Parameter::MinP,
        Parameter::Seed,
        Parameter::MaxTokens,
        Parameter::RepeatPenalty,
    ];

    /// The name as typed after `/set` (and as the command-line flag spells it).
    pub fn name(self) -> &'static str {
        match self {
            Parameter::Temperature => "temperature",
            Parameter::TopK => "top-k",
            Parameter::TopP => "top-p",
            Parameter::MinP => "min-p",
            Parameter::Seed => "seed",
            Parameter::MaxTokens => "max-tokens",
            Parameter::RepeatPenalty => "repeat-penalty",
        }
    }
}

impl fmt::Display for Parameter {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Parameter {
    type Err = SettingError;

    /// Accepts `top-k`, `top_k` and `topk` alike, in any case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wanted: String = text
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .flat_map(char::to_lowercase)
            .collect();
        Parameter::ALL
            .into_iter()
            .find(|parameter| parameter.name().replace('-', "") == wanted)
            .ok_or_else(|| SettingError::UnknownParameter(text.to_owned()))
    }
}

/// Why a `/set` was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingError {
    #[error("unknown parameter '{0}'; one of: temperature, top-k, top-p, min-p, seed, max-tokens, repeat-penalty")]
    UnknownParameter(String),
    #[error("{parameter} must be {expected}, not '{value}'")]
    InvalidValue {
        parameter: Parameter,
        value: String,
        expected: &'static str,
    },
}

/// A parameter with a checked value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Setting {
    Temperature(f32),
    TopK(u32),
    TopP(f32),
    MinP(f32),
    /// `None`: a fresh random seed for each answer.
    Seed(Option<u32>),
    /// `None`: no limit but the context.
    MaxTokens(Option<u32>),
    RepeatPenalty(f32),
}

impl Setting {
    /// Parse `VALUE` for `parameter`, with the command-line flags' ranges.
    pub fn parse(parameter: Parameter, value: &str) -> Result<Self, SettingError> {
        let invalid = |expected| SettingError::InvalidValue {
            parameter,
            value: value.to_owned(),
            expected,
        };
        let value = value.trim();
        let setting = match parameter {
            Parameter::Temperature => Setting::Temperature(
                parse_float(value, 0.0, f32::MAX, false).ok_or_else(|| invalid("a number >= 0"))?,
            ),
            Parameter::TopK => {
                Setting::TopK(value.parse().map_err(|_| invalid("a whole number >= 0"))?)
            }
            Parameter::TopP => Setting::TopP(
                parse_float(value, 0.0, 1.0, false).ok_or_else(|| invalid("between 0 and 1"))?,
            ),
            Parameter::MinP => Setting::MinP(
                parse_float(value, 0.0, 1.0, false).ok_or_else(|| invalid("between 0 and 1"))?,
            ),
            Parameter::RepeatPenalty => Setting::RepeatPenalty(
                parse_float(value, 0.0, f32::MAX, true).ok_or_else(|| invalid("a number > 0"))?,
            ),
            Parameter::Seed => Setting::Seed(
                parse_optional(value).map_err(|_| invalid("a whole number, or 'random'"))?,
            ),
            Parameter::MaxTokens => Setting::MaxTokens(
                parse_optional(value)
                    .map_err(|_| invalid("a whole number, or 'none'"))?
                    .filter(|limit| *limit > 0),
            ),
        };
        Ok(setting)
    }

    /// The parameter this setting changes.
    pub fn parameter(self) -> Parameter {
        match self {
            Setting::Temperature(_) => Parameter::Temperature,
            Setting::TopK(_) => Parameter::TopK,
            Setting::TopP(_) => Parameter::TopP,
            Setting::MinP(_) => Parameter::MinP,
            Setting::Seed(_) => Parameter::Seed,
            Setting::MaxTokens(_) => Parameter::MaxTokens,
            Setting::RepeatPenalty(_) => Parameter::RepeatPenalty,
        }
    }

    pub fn apply(self, request: &mut GenerateRequest) {
        let sampling = &mut request.sampling;
        match self {
            Setting::Temperature(value) => sampling.temperature = value,
            Setting::TopK(value) => sampling.top_k = value,
            Setting::TopP(value) => sampling.top_p = value,
            Setting::MinP(value) => sampling.min_p = value,
            Setting::Seed(value) => sampling.seed = value,
            Setting::MaxTokens(value) => request.max_tokens = value,
            Setting::RepeatPenalty(value) => sampling.repeat_penalty = value,
        }
    }
}

/// Each parameter's current value, for `/show params`.
pub fn describe(request: &GenerateRequest) -> Vec<(Parameter, String)> {
    let sampling = &request.sampling;
    let optional = |value: Option<u32>, absent: &str| {
        value.map_or_else(|| absent.to_owned(), |value| value.to_string())
    };
    Parameter::ALL
        .into_iter()
        .map(|parameter| {
            let value = match parameter {
                Parameter::Temperature => sampling.temperature.to_string(),
                Parameter::TopK => sampling.top_k.to_string(),
                Parameter::TopP => sampling.top_p.to_string(),
                Parameter::MinP => sampling.min_p.to_string(),
                Parameter::Seed => optional(sampling.seed, "random"),
                Parameter::MaxTokens => optional(request.max_tokens, "none"),
                Parameter::RepeatPenalty => sampling.repeat_penalty.to_string(),
            };
            (parameter, value)
        })
        .collect()
}

fn parse_float(text: &str, minimum: f32, maximum: f32, exclusive_minimum: bool) -> Option<f32> {
    let number: f32 = text.parse().ok()?;
    let above_minimum = if exclusive_minimum {
        number > minimum
    } else {
        number >= minimum
    };
    (number.is_finite() && above_minimum && number <= maximum).then_some(number)
}

/// A whole number, or a word meaning "none" (`none`, `random`, `off`).
fn parse_optional(text: &str) -> Result<Option<u32>, std::num::ParseIntError> {
    match text.to_ascii_lowercase().as_str() {
        "none" | "random" | "off" => Ok(None),
        number => number.parse().map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_names_accept_dashes_underscores_and_case() {
        assert_eq!("top-k".parse::<Parameter>(), Ok(Parameter::TopK));
        assert_eq!("TOP_P".parse::<Parameter>(), Ok(Parameter::TopP));
        assert_eq!("maxtokens".parse::<Parameter>(), Ok(Parameter::MaxTokens));
        assert!(matches!(
            "warmth".parse::<Parameter>(),
            Err(SettingError::UnknownParameter(_))
        ));
    }

    #[test]
    fn values_are_range_checked_like_the_flags() {
        assert_eq!(
            Setting::parse(Parameter::Temperature, "0.2"),
            Ok(Setting::Temperature(0.2))
        );
        assert!(Setting::parse(Parameter::Temperature, "-1").is_err());
        assert!(Setting::parse(Parameter::Temperature, "NaN").is_err());
        assert!(Setting::parse(Parameter::TopP, "1.5").is_err());
        assert!(Setting::parse(Parameter::RepeatPenalty, "0").is_err());
        assert!(Setting::parse(Parameter::TopK, "-3").is_err());
        assert_eq!(
            Setting::parse(Parameter::Seed, "random"),
            Ok(Setting::Seed(None))
        );
        assert_eq!(
            Setting::parse(Parameter::Seed, "42"),
            Ok(Setting::Seed(Some(42)))
        );
        assert_eq!(
            Setting::parse(Parameter::MaxTokens, "0"),
            Ok(Setting::MaxTokens(None))
        );
    }

    #[test]
    fn applied_settings_show_up_in_the_description() {
        let mut request = GenerateRequest::default();
        Setting::Temperature(0.25).apply(&mut request);
        Setting::MaxTokens(Some(64)).apply(&mut request);
        let described = describe(&request);
        assert!(described.contains(&(Parameter::Temperature, "0.25".to_owned())));
        assert!(described.contains(&(Parameter::MaxTokens, "64".to_owned())));
        assert!(described.contains(&(Parameter::Seed, "random".to_owned())));
    }
}
