//! The tool-call conventions of the model families, each as its chat
//! template documents it, and how to tell them apart from the template text.

use serde::{Deserialize, Serialize};

/// How a model writes tool calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolFormat {
    /// Hermes 2/3 and Qwen 2.5/3: `<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`,
    /// one block per call.
    Hermes,
    /// Llama 3.1/3.2/3.3: a bare JSON object `{"name": ..., "parameters": {...}}`,
    /// optionally after `<|python_tag|>` (which also opens the built-in
    /// tools' `name.call(arg="value")` form).
    Llama3,
    /// Mistral v0.3 and Nemo: `[TOOL_CALLS] [{"name": ..., "arguments": {...}}, ...]`.
    Mistral,
    /// Phi-4 mini: `<|tool_call|>[{"name": ..., "arguments": {...}}]<|/tool_call|>`,
    /// tools offered on the system message between `<|tool|>` and `<|/tool|>`.
    Phi4,
    /// Gemma 3 has no tool tokens; Google's documented prompt asks for
    /// `{"name": ..., "parameters": {...}}` and nothing else when calling.
    Gemma,
    /// DeepSeek-R1 (and its distills): reasoning in `<think>`, then
    /// `<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\n{...}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>`.
    DeepSeekR1,
    /// A template with no tool convention: olm's fallback prompt asks for
    /// Hermes-style `<tool_call>` blocks, the most widely trained form.
    Generic,
}

/// DeepSeek-R1's markers (full-width bars, `▁` for spaces).
pub const DEEPSEEK_CALLS_BEGIN: &str = "<｜tool▁calls▁begin｜>";
pub const DEEPSEEK_CALLS_END: &str = "<｜tool▁calls▁end｜>";
pub const DEEPSEEK_CALL_BEGIN: &str = "<｜tool▁call▁begin｜>";
pub const DEEPSEEK_CALL_END: &str = "<｜tool▁call▁end｜>";
pub const DEEPSEEK_SEP: &str = "<｜tool▁sep｜>";

impl ToolFormat {
    /// The convention a template follows, from its text (checked in this
    /// order: a template may mention several families' tokens).
    pub fn detect(template: &str) -> Self {
        let has = |needle: &str| template.contains(needle);
        if has(DEEPSEEK_CALLS_BEGIN) {
            ToolFormat::DeepSeekR1
        } else if has("<tool_call>") {
            ToolFormat::Hermes
        } else if has("[TOOL_CALLS]") {
            ToolFormat::Mistral
        } else if has("<|tool_call|>") || (has("<|tool|>") && has("<|/tool|>")) {
            ToolFormat::Phi4
        } else if has("<|start_header_id|>") && (has("ipython") || has("<|python_tag|>")) {
            ToolFormat::Llama3
        } else if has("<start_of_turn>") {
            ToolFormat::Gemma
        } else {
            ToolFormat::Generic
        }
    }

    /// The name olm shows for this convention.
    pub fn name(self) -> &'static str {
        match self {
            ToolFormat::Hermes => "hermes",
            ToolFormat::Llama3 => "llama3",
            ToolFormat::Mistral => "mistral",
            ToolFormat::Phi4 => "phi4",
            ToolFormat::Gemma => "gemma",
            ToolFormat::DeepSeekR1 => "deepseek-r1",
            ToolFormat::Generic => "generic",
        }
    }

    /// Texts that open a call region in this convention (the lazy
    /// grammar's trigger words, and where the parser starts a call).
    pub fn markers(self) -> &'static [&'static str] {
        match self {
            ToolFormat::Hermes | ToolFormat::Generic => &["<tool_call>"],
            ToolFormat::Llama3 => &["<|python_tag|>"],
            ToolFormat::Mistral => &["[TOOL_CALLS]"],
            ToolFormat::Phi4 => &["<|tool_call|>", "functools["],
            ToolFormat::DeepSeekR1 => &[DEEPSEEK_CALLS_BEGIN],
            ToolFormat::Gemma => &[],
        }
    }

    /// The key under which a call's arguments are written.
    pub fn arguments_key(self) -> &'static str {
        match self {
            ToolFormat::Llama3 | ToolFormat::Gemma => "parameters",
            _ => "arguments",
        }
    }

    /// Calls written as a bare JSON object at the start of the answer (the
    /// lazy grammar triggers on an opening brace there).
    pub fn calls_open_with_json(self) -> bool {
        matches!(self, ToolFormat::Llama3 | ToolFormat::Gemma)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_told_apart_by_their_templates() {
        let cases = [
            (
                "{%- for tool_call in message.tool_calls %}<tool_call>\n{{ tool_call | tojson }}\n</tool_call>{% endfor %}<|im_start|>",
                ToolFormat::Hermes,
            ),
            (
                "<|start_header_id|>ipython<|end_header_id|>\n\n{{- '<|python_tag|>' }}",
                ToolFormat::Llama3,
            ),
            (
                "{{- '[AVAILABLE_TOOLS] ' }}{{- '[TOOL_CALLS] ' }}[INST]",
                ToolFormat::Mistral,
            ),
            (
                "{{ '<|' + message['role'] + '|>' + message['content'] + '<|tool|>' + message['tools'] + '<|/tool|>' + '<|end|>' }}",
                ToolFormat::Phi4,
            ),
            (
                "{{ '<start_of_turn>' + role + '\n' }}",
                ToolFormat::Gemma,
            ),
            (
                "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] }}<think>",
                ToolFormat::DeepSeekR1,
            ),
            (
                "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}",
                ToolFormat::Generic,
            ),
        ];
        for (template, format) in cases {
            assert_eq!(ToolFormat::detect(template), format, "{template}");
        }
    }
}
