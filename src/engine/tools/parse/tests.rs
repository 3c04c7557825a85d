//! The parser on fixed answers written as each family's documentation and
//! chat template show them, whole and streamed one character at a time.

use serde_json::json;

use super::*;

fn weather() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: Some("Current weather in a city".into()),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"]
        }),
    }
}

fn search() -> ToolSpec {
    ToolSpec {
        name: "brave_search".into(),
        description: None,
        parameters: json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
    }
}

fn tools(format: ToolFormat) -> Option<(ToolFormat, Vec<ToolSpec>)> {
    Some((format, vec![weather(), search()]))
}

/// Parse `text` whole, and again streamed one character at a time: both
/// must agree.
fn parse(text: &str, reasoning: ReasoningMode, format: ToolFormat) -> Parsed {
    let whole = OutputParser::parse(text, reasoning, tools(format));
    let mut parser = OutputParser::new(reasoning, tools(format));
    let mut streamed = Parsed::default();
    for character in text.chars() {
        let pieces = parser.push(&character.to_string());
        for piece in &pieces {
            if let Piece::Content(content) = piece {
                for marker in format.markers() {
                    assert!(
                        !(marker.len() > 1
                            && content.ends_with(&marker[..1])
                            && text.contains(marker)),
                        "released the start of a marker {marker:?} in {content:?}"
                    );
                }
            }
        }
        streamed.add(pieces);
    }
    let (pieces, error) = parser.finish();
    streamed.add(pieces);
    streamed.error = error;
    if !streamed.calls.is_empty() && streamed.content.trim().is_empty() {
        streamed.content.clear();
    }
    assert_eq!(
        whole, streamed,
        "whole and streamed parses differ for {text:?}"
    );
    whole
}

fn call(name: &str, arguments: serde_json::Value) -> ToolCall {
    ToolCall {
        id: String::new(),
        name: name.into(),
        arguments,
    }
}

const OFF: ReasoningMode = ReasoningMode::Off;

#[test]
fn hermes_and_qwen_blocks() {
    let parsed = parse(
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        OFF,
        ToolFormat::Hermes,
    );
    assert_eq!(
        parsed.calls,
        vec![call("get_weather", json!({"city": "Paris"}))]
    );
    assert_eq!((parsed.content.as_str(), parsed.error), ("", None));

    let parsed = parse(
        "Let me check both.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"brave_search\", \"arguments\": \"{\\\"query\\\": \\\"Paris events\\\"}\"}\n</tool_call>",
        OFF,
        ToolFormat::Hermes,
    );
    assert_eq!(parsed.content, "Let me check both.\n");
    assert_eq!(
        parsed.calls,
        vec![
            call("get_weather", json!({"city": "Paris", "unit": "celsius"})),
            call("brave_search", json!({"query": "Paris events"})),
        ]
    );
}

#[test]
fn qwen3_thinks_then_calls() {
    let parsed = parse(
        "<think>\nThe user wants the weather; I will call the tool.\n</think>\n\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        ReasoningMode::Tags { starts_inside: false },
        ToolFormat::Hermes,
    );
    assert_eq!(
        parsed.reasoning,
        "The user wants the weather; I will call the tool."
    );
    assert_eq!(parsed.calls.len(), 1);
    assert_eq!(parsed.content, "");
}

#[test]
fn reasoning_apart_from_content() {
    let parsed = parse(
        "<think>\nParis is the capital.\n</think>\n\nParis is the capital of France.",
        ReasoningMode::Tags {
            starts_inside: false,
        },
        ToolFormat::Generic,
    );
    assert_eq!(parsed.reasoning, "Paris is the capital.");
    assert_eq!(parsed.content, "Paris is the capital of France.");
    // No opening tag: plain content, even with tags known.
    let parsed = parse(
        "  Paris <think> is</think> here",
        ReasoningMode::Tags {
            starts_inside: false,
        },
        ToolFormat::Generic,
    );
    assert_eq!(
        (parsed.reasoning.as_str(), parsed.content.as_str()),
        ("", "  Paris <think> is</think> here")
    );
    // An answer that never closes its reasoning is all reasoning.
    let parsed = OutputParser::parse(
        "<think>still going",
        ReasoningMode::Tags {
            starts_inside: false,
        },
        None,
    );
    assert_eq!(
        (parsed.reasoning.as_str(), parsed.content.as_str()),
        ("still going", "")
    );
}

#[test]
fn deepseek_r1_distill_starts_inside_thinking() {
    let parsed = parse(
        "Okay, the user asks about Paris weather.\n</think>\n\n<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n{\"city\": \"Paris\"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>",
        ReasoningMode::Tags { starts_inside: true },
        ToolFormat::DeepSeekR1,
    );
    assert_eq!(parsed.reasoning, "Okay, the user asks about Paris weather.");
    assert_eq!(
        parsed.calls,
        vec![call("get_weather", json!({"city": "Paris"}))]
    );
    assert_eq!(parsed.error, None);
    let parsed = parse(
        "Let me think.\n</think>\n\nIt is sunny.",
        ReasoningMode::Tags {
            starts_inside: true,
        },
        ToolFormat::DeepSeekR1,
    );
    assert_eq!(
        (parsed.reasoning.as_str(), parsed.content.as_str()),
        ("Let me think.", "It is sunny.")
    );
}

#[test]
fn llama3_json_and_python_tag() {
    let parsed = parse(
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        OFF,
        ToolFormat::Llama3,
    );
    assert_eq!(
        parsed.calls,
        vec![call("get_weather", json!({"city": "Paris"}))]
    );
    let parsed = parse(
        "{\"type\": \"function\", \"name\": \"get_weather\", \"parameters\": {\"city\": \"Oslo\"}}",
        OFF,
        ToolFormat::Llama3,
    );
    assert_eq!(
        parsed.calls,
        vec![call("get_weather", json!({"city": "Oslo"}))]
    );
    let parsed = parse(
        "<|python_tag|>brave_search.call(query=\"weather in Paris\")",
        OFF,
        ToolFormat::Llama3,
    );
    assert_eq!(
        parsed.calls,
        vec![call("brave_search", json!({"query": "weather in Paris"}))]
    );
    let parsed = parse(
        "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Rome\"}}",
        OFF,
        ToolFormat::Llama3,
    );
    assert_eq!(
        parsed.calls,
        vec![call("get_weather", json!({"city": "Rome"}))]
    );
}

#[test]
fn mistral_and_nemo() {
    let parsed = parse(
        "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
        OFF,
        ToolFormat::Mistral,
    );
    assert_eq!(
        parsed.calls,
        vec![call("get_weather", json!({"city": "Paris"}))]
    );
    let parsed = parse(
        "[TOOL_CALLS][{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}, \"id\": \"abcDEF123\"}, {\"name\": \"brave_search\", \"arguments\": {\"query\": \"x\"}, \"id\": \"zzzzzzzz1\"}]",
        OFF,
        ToolFormat::Mistral,
    );
    assert_eq!(parsed.calls.len(), 2);
    assert_eq!(parsed.calls[0].id, "abcDEF123");
    assert_eq!(parsed.calls[1].name, "brave_search");
}

#[test]
fn phi4_mini() {
    let parsed = parse(
        "<|tool_call|>[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]<|/tool_call|>",
        OFF,
        ToolFormat::Phi4,
    );
    assert_eq!(
        parsed.calls,
        vec![call("get_weather", json!({"city": "Paris"}))]
    );
    let parsed = parse(
        "functools[{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Lima\"}}]",
        OFF,
        ToolFormat::Phi4,
    );
    assert_eq!(
        parsed.calls,
        vec![call("get_weather", json!({"city": "Lima"}))]
    );
}

#[test]
fn gemma3_prompted_json() {
    for text in [
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
        "```json\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n```",
        "\n```tool_code\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n```\n",
    ] {
        let parsed = parse(text, OFF, ToolFormat::Gemma);
        assert_eq!(
            parsed.calls,
            vec![call("get_weather", json!({"city": "Paris"}))],
            "{text}"
        );
        assert_eq!(parsed.content, "", "{text}");
    }
}

#[test]
fn generic_json_fallback() {
    let parsed = parse(
        "{\"tool_call\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}}",
        OFF,
        ToolFormat::Generic,
    );
    assert_eq!(
        parsed.calls,
        vec![call("get_weather", json!({"city": "Paris"}))]
    );
    let parsed = parse(
        "{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"A\"}}, {\"name\": \"get_weather\", \"arguments\": {\"city\": \"B\"}}]}",
        OFF,
        ToolFormat::Generic,
    );
    assert_eq!(parsed.calls.len(), 2);
}

#[test]
fn prose_and_json_that_are_not_calls_stay_content() {
    for text in [
        "{\"answer\": 42}",
        "[1, 2, 3]",
        "```python\nprint(1)\n```",
        "The sky is blue. a < b, and <tool is not a tag",
        "",
        "   ",
    ] {
        let parsed = parse(text, OFF, ToolFormat::Hermes);
        assert_eq!(parsed.content, text, "{text}");
        assert!(parsed.calls.is_empty() && parsed.error.is_none(), "{text}");
    }
}

#[test]
fn bad_calls_are_content_with_a_reason() {
    for (text, reason) in [
        (
            "<tool_call>\n{\"name\": \"launch_rockets\", \"arguments\": {}}\n</tool_call>",
            "not among the tools",
        ),
        (
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"town\": \"Paris\"}}\n</tool_call>",
            "required property 'city'",
        ),
        (
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Par",
            "ended inside a tool call",
        ),
        ("<tool_call>\n{\"name\": get_weather}", "not valid JSON"),
        (
            "{\"name\": \"get_weather\", \"parameters\": {\"city\": 7}}",
            "must be of type",
        ),
    ] {
        let parsed = parse(text, OFF, ToolFormat::Hermes);
        assert!(parsed.calls.is_empty(), "{text}");
        let error = parsed.error.unwrap_or_else(|| panic!("no reason for {text}"));
        assert!(error.contains(reason), "{text}: {error}");
        assert_eq!(parsed.content.trim(), text.trim(), "the text is kept");
    }
}

#[test]
fn a_good_call_then_a_bad_one() {
    let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"nope\", \"arguments\": {}}\n</tool_call>";
    let parsed = parse(text, OFF, ToolFormat::Hermes);
    assert_eq!(parsed.calls.len(), 1);
    assert!(parsed.error.is_some());
    assert!(
        parsed.content.contains("nope") && !parsed.content.contains("Paris"),
        "{}",
        parsed.content
    );
}

#[test]
fn without_tools_everything_is_content() {
    let text = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>";
    let parsed = OutputParser::parse(text, OFF, None);
    assert_eq!(parsed.content, text);
}

#[test]
fn a_call_cut_after_a_complete_one_leaves_only_its_own_text() {
    let text = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":";
    let parsed = parse(text, OFF, ToolFormat::Hermes);
    assert_eq!(parsed.calls.len(), 1);
    assert_eq!(
        parsed.content,
        "\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":"
    );
    assert!(parsed.error.unwrap_or_default().contains("ended inside"));
}
