//! The grammar of a request's tool calls: each tool's arguments schema is
//! turned into GBNF by llama.cpp's converter (each tool on its own, so its
//! `$ref`s keep pointing into its own schema), its rules are renamed apart,
//! and the family's call syntax is written around them.
//!
//! `required` and a named tool constrain the answer from its first token.
//! `auto` is lazy: the grammar wakes when the model writes the family's
//! opening marker (its trigger words) or, for families that write a bare
//! JSON object, an opening brace at the very start; before that, prose is
//! free.

use super::format::{
    DEEPSEEK_CALLS_BEGIN, DEEPSEEK_CALLS_END, DEEPSEEK_CALL_BEGIN, DEEPSEEK_CALL_END, DEEPSEEK_SEP,
};
use super::{ReasoningMode, ToolChoice, ToolConstraint, ToolFormat};
use crate::engine::EngineError;

/// A GBNF grammar, its start rule, and for a lazy grammar what wakes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grammar {
    pub text: String,
    pub root: String,
    /// Empty: the grammar applies from the first token.
    pub triggers: Vec<Trigger>,
}

impl Grammar {
    /// A grammar that applies from the first token, starting at `root`.
    pub fn eager(text: String) -> Self {
        Self {
            text,
            root: "root".into(),
            triggers: Vec::new(),
        }
    }
}

/// What wakes a lazy grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// This text, anywhere in the answer; the grammar sees it and what follows.
    Word(String),
    /// A regular expression (ECMAScript, as llama.cpp's `std::regex` reads it)
    /// searched in the answer so far; the grammar sees the text from its
    /// first capture group on.
    Pattern(String),
}

/// Whitespace between the parts of a call, bounded (an unbounded run lets
/// a small model loop on newlines forever).
const WS_RULE: &str = "ws ::= [ \\t\\n]{0,20}";
/// Reasoning text before the calls: anything but the start of `</think>`.
const THINK_RULES: &str = "think-rest ::= think-char* \"</think>\"\n\
                           think-char ::= [^<] | \"<\" [^/] | \"</\" [^t]";

/// The grammar for `constraint`; `convert` turns one JSON schema into GBNF
/// (llama.cpp's converter in production, a stub in unit tests).
pub fn tool_grammar(
    constraint: &ToolConstraint,
    convert: impl Fn(&str) -> Result<String, EngineError>,
) -> Result<Grammar, EngineError> {
    let format = constraint.format;
    let tools: Vec<(usize, &super::ToolSpec)> = constraint
        .tools
        .iter()
        .enumerate()
        .filter(|(_, tool)| match &constraint.choice {
            ToolChoice::Function(name) => &tool.name == name,
            ToolChoice::Auto | ToolChoice::Required => true,
        })
        .collect();
    if tools.is_empty() {
        return Err(EngineError::InvalidSchema(match &constraint.choice {
            ToolChoice::Function(name) => {
                format!("tool_choice names '{name}', which is not among the tools")
            }
            _ => "no tools to call".into(),
        }));
    }
    let mut rules = Vec::new();
    let mut calls = Vec::new();
    for (index, tool) in tools {
        let prefix = format!("t{index}-");
        let parameters = match &tool.parameters {
            serde_json::Value::Null => r#"{"type": "object"}"#.to_owned(),
            schema => schema.to_string(),
        };
        let schema_rules = convert(&parameters)?;
        rules.push(prefix_rules(&schema_rules, &prefix));
        let arguments = format!("{prefix}root");
        let name = &tool.name;
        let call = match format {
            ToolFormat::DeepSeekR1 => format!(
                "{prefix}call ::= {}? {} {arguments} ws {}",
                literal(DEEPSEEK_CALL_BEGIN),
                literal(&format!("function{DEEPSEEK_SEP}{name}\n```json\n")),
                literal(&format!("```{DEEPSEEK_CALL_END}")),
            ),
            _ => {
                let key = format.arguments_key();
                let id = if format == ToolFormat::Mistral {
                    r#" ( ws "," ws "\"id\"" ws ":" ws "\"" [a-zA-Z0-9]{9} "\"" )?"#
                } else {
                    ""
                };
                format!(
                    "{prefix}call ::= \"{{\" ws {} ws \":\" ws {} ws \",\" ws {} ws \":\" ws {arguments}{id} ws \"}}\"",
                    literal("\"name\""),
                    literal(&format!("\"{name}\"")),
                    literal(&format!("\"{key}\"")),
                )
            }
        };
        rules.push(call);
        calls.push(format!("{prefix}call"));
    }
    rules.push(format!("call ::= {}", calls.join(" | ")));
    rules.push(WS_RULE.into());
    let several = constraint.parallel;
    let body = match format {
        ToolFormat::Hermes | ToolFormat::Generic => {
            rules.push(format!(
                "block ::= {} ws call ws {}",
                literal("<tool_call>"),
                literal("</tool_call>")
            ));
            repeated("block", "ws", several)
        }
        ToolFormat::Llama3 => format!(
            "{}? {}",
            literal("<|python_tag|>"),
            repeated("call", "ws", several)
        ),
        ToolFormat::Gemma => {
            if several {
                "( call | \"[\" ws call ( ws \",\" ws call )* ws \"]\" )".to_owned()
            } else {
                "call".to_owned()
            }
        }
        ToolFormat::Mistral => format!(
            "{} ws \"[\" ws {} ws \"]\"",
            literal("[TOOL_CALLS]"),
            repeated("call", "ws \",\" ws", several)
        ),
        ToolFormat::Phi4 => format!(
            "{} ws \"[\" ws {} ws \"]\" ws {}",
            literal("<|tool_call|>"),
            repeated("call", "ws \",\" ws", several),
            literal("<|/tool_call|>")
        ),
        ToolFormat::DeepSeekR1 => format!(
            "{} {} {}",
            literal(DEEPSEEK_CALLS_BEGIN),
            repeated("call", "ws", several),
            literal(DEEPSEEK_CALLS_END)
        ),
    };
    let lazy = constraint.choice == ToolChoice::Auto;
    let root = match (lazy, constraint.reasoning) {
        // A lazy grammar wakes after any reasoning, at the call itself.
        (true, _) | (false, ReasoningMode::Off) => body,
        (
            false,
            ReasoningMode::Tags {
                starts_inside: true,
            },
        ) => {
            rules.push(THINK_RULES.into());
            format!("think-rest ws {body}")
        }
        (
            false,
            ReasoningMode::Tags {
                starts_inside: false,
            },
        ) => {
            rules.push(THINK_RULES.into());
            format!("( \"<think>\" think-rest ws )? {body}")
        }
    };
    rules.push(format!("root ::= {root}"));
    let triggers = if lazy { triggers(format) } else { Vec::new() };
    Ok(Grammar {
        text: rules.join("\n") + "\n",
        root: "root".into(),
        triggers,
    })
}

fn repeated(item: &str, separator: &str, several: bool) -> String {
    if several {
        format!("{item} ( {separator} {item} )*")
    } else {
        item.to_owned()
    }
}

/// What wakes the `auto` grammar of `format`.
fn triggers(format: ToolFormat) -> Vec<Trigger> {
    let mut triggers: Vec<Trigger> = format
        .markers()
        .iter()
        // `functools[` is parsed when a Phi-4 model writes it, but the
        // grammar only writes the tokenized form.
        .filter(|marker| **marker != "functools[")
        .map(|marker| Trigger::Word((*marker).to_owned()))
        .collect();
    if format.calls_open_with_json() {
        // An answer that opens with a JSON object (in a ```json fence or
        // not) is a call in these families.
        triggers.push(Trigger::Pattern(r"^\s*(?:```(?:json)?\s*)?(\{)".into()));
    }
    triggers
}

/// `text` as a GBNF string literal.
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

/// `grammar` (rules of the form `name ::= body`, one or more lines each)
/// with every rule name, where defined and where used, given `prefix`.
/// String literals and character classes are copied as they are.
pub fn prefix_rules(grammar: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(grammar.len() + grammar.len() / 4);
    let mut chars = grammar.chars().peekable();
    while let Some(character) = chars.next() {
        match character {
            '"' | '[' => {
                let close = if character == '"' { '"' } else { ']' };
                out.push(character);
                while let Some(inner) = chars.next() {
                    out.push(inner);
                    if inner == '\\' {
                        if let Some(escaped) = chars.next() {
                            out.push(escaped);
                        }
                    } else if inner == close {
                        break;
                    }
                }
            }
            '#' => {
                // A comment runs to the end of the line.
                out.push(character);
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == '\n' {
                        break;
                    }
                }
            }
            '{' => {
                // A repetition count: digits and commas, no names.
                out.push(character);
                for inner in chars.by_ref() {
                    out.push(inner);
                    if inner == '}' {
                        break;
                    }
                }
            }
            // Rule names (the converter's may start with a digit).
            c if c.is_ascii_alphanumeric() || c == '_' => {
                out.push_str(prefix);
                out.push(c);
                while let Some(&next) = chars.peek() {
                    if next.is_ascii_alphanumeric() || next == '-' || next == '_' {
                        out.push(next);
                        chars.next();
                    } else {
                        break;
                    }
                }
            }
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tools::ToolSpec;
    use serde_json::json;

    fn stub(_schema: &str) -> Result<String, EngineError> {
        Ok("root ::= \"{\" space city-kv \"}\" space\ncity-kv ::= \"\\\"city\\\"\" space \":\" space string\nspace ::= | \" \" | \"\\n\" [ \\t]{0,20}\nstring ::= \"\\\"\" [^\"\\\\]* \"\\\"\" space\n".into())
    }

    fn constraint(format: ToolFormat, choice: ToolChoice) -> ToolConstraint {
        ToolConstraint {
            format,
            tools: vec![
                ToolSpec {
                    name: "get_weather".into(),
                    description: None,
                    parameters: json!({"type": "object"}),
                },
                ToolSpec {
                    name: "get_time".into(),
                    description: None,
                    parameters: json!({"type": "object"}),
                },
            ],
            choice,
            parallel: true,
            reasoning: ReasoningMode::Off,
        }
    }

    #[test]
    fn rules_are_renamed_apart_but_literals_and_classes_are_kept() {
        let renamed = prefix_rules(&stub("").unwrap(), "t0-");
        assert!(
            renamed.starts_with("t0-root ::= \"{\" t0-space t0-city-kv"),
            "{renamed}"
        );
        assert!(renamed.contains("\"\\\"city\\\"\""), "{renamed}");
        assert!(renamed.contains("[ \\t]{0,20}"), "{renamed}");
        assert!(renamed.contains("[^\"\\\\]*"), "{renamed}");
        assert!(!renamed.contains("t0-t"), "{renamed}");
    }

    #[test]
    fn required_is_eager_and_auto_is_lazy() {
        let required =
            tool_grammar(&constraint(ToolFormat::Hermes, ToolChoice::Required), stub).unwrap();
        assert!(required.triggers.is_empty());
        assert!(
            required.text.contains("root ::= block ( ws block )*"),
            "{}",
            required.text
        );
        assert!(
            required.text.contains(
                "t0-call ::= \"{\" ws \"\\\"name\\\"\" ws \":\" ws \"\\\"get_weather\\\"\""
            ),
            "{}",
            required.text
        );
        assert!(
            required.text.contains("call ::= t0-call | t1-call"),
            "{}",
            required.text
        );
        let auto = tool_grammar(&constraint(ToolFormat::Hermes, ToolChoice::Auto), stub).unwrap();
        assert_eq!(auto.triggers, vec![Trigger::Word("<tool_call>".into())]);
        let llama = tool_grammar(&constraint(ToolFormat::Llama3, ToolChoice::Auto), stub).unwrap();
        assert!(
            llama.text.contains("\"\\\"parameters\\\"\""),
            "{}",
            llama.text
        );
        assert!(
            matches!(&llama.triggers[1], Trigger::Pattern(pattern) if pattern.starts_with('^'))
        );
    }

    #[test]
    fn a_named_tool_is_the_only_one_in_the_grammar() {
        let named = tool_grammar(
            &constraint(ToolFormat::Mistral, ToolChoice::Function("get_time".into())),
            stub,
        )
        .unwrap();
        assert!(named.text.contains("call ::= t1-call\n"), "{}", named.text);
        assert!(!named.text.contains("get_weather"), "{}", named.text);
        assert!(named.text.contains("[a-zA-Z0-9]{9}"), "{}", named.text);
        let missing = tool_grammar(
            &constraint(ToolFormat::Hermes, ToolChoice::Function("nope".into())),
            stub,
        );
        assert!(missing.is_err());
    }

    #[test]
    fn reasoning_may_come_before_a_required_call() {
        let mut forced = constraint(ToolFormat::DeepSeekR1, ToolChoice::Required);
        forced.reasoning = ReasoningMode::Tags {
            starts_inside: true,
        };
        let grammar = tool_grammar(&forced, stub).unwrap();
        assert!(
            grammar.text.contains("root ::= think-rest ws"),
            "{}",
            grammar.text
        );
        assert!(
            grammar
                .text
                .contains("function<｜tool▁sep｜>get_weather\\n```json\\n"),
            "{}",
            grammar.text
        );
    }
}
