//! Bounds on a prompt that are known before it is rendered or tokenized, so
//! that work which grows with the input (a template over 100,000 messages,
//! tokenizing 50 MB) never starts for input that cannot fit the context.
//!
//! Owns: the longest text one token can stand for, and the checks derived
//! from it. Pure: no llama.cpp, tested without a model.

use crate::gguf::GgufFile;

use super::{EngineError, Prompt};

/// Normalisation may lengthen text a little before it is tokenized (NFKC
/// turns `ﬁ` into `fi`); the byte bound allows for it with this factor.
const NORMALIZATION_SLACK: usize = 2;
/// When a file lists no tokens: llama.cpp's longest token piece is well
/// under this in every vocabulary known today.
const FALLBACK_TOKEN_BYTES: usize = 256;

/// What a model's vocabulary says about how much text fits a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptLimits {
    /// Bytes of the longest token string in the vocabulary: no token stands
    /// for more text than its string, so text of `n` bytes takes at least
    /// `n / longest_token_bytes` tokens.
    longest_token_bytes: usize,
}

impl PromptLimits {
    pub fn from_header(header: &GgufFile) -> Self {
        let longest = header
            .get_array("tokenizer.ggml.tokens")
            .and_then(|tokens| tokens.as_strings())
            .and_then(|tokens| tokens.iter().map(String::len).max())
            .unwrap_or(FALLBACK_TOKEN_BYTES);
        Self {
            longest_token_bytes: longest.max(1),
        }
    }

    /// For a vocabulary that could not be read.
    pub fn unknown() -> Self {
        Self {
            longest_token_bytes: FALLBACK_TOKEN_BYTES,
        }
    }

    /// Most bytes of text that could still fit `n_ctx` tokens.
    pub fn max_bytes(&self, n_ctx: u32) -> usize {
        (n_ctx as usize)
            .saturating_mul(self.longest_token_bytes)
            .saturating_mul(NORMALIZATION_SLACK)
    }

    /// Refuse a prompt that cannot fit `n_ctx` tokens whatever the template
    /// and tokenizer make of it: more messages than tokens (a message takes
    /// at least one), or more text than [`Self::max_bytes`].
    pub fn check(&self, prompt: &Prompt, n_ctx: u32) -> Result<(), EngineError> {
        check_prompt_fits(prompt, n_ctx, self.max_bytes(n_ctx))
    }
}

/// [`PromptLimits::check`] where the byte bound is already known (a server
/// learns it from the model's worker): at most `n_ctx` messages and
/// `max_bytes` bytes of text.
pub fn check_prompt_fits(prompt: &Prompt, n_ctx: u32, max_bytes: usize) -> Result<(), EngineError> {
    {
        let text_of = |messages: &[super::Message]| {
            messages
                .iter()
                .map(|message| message.text_len() + message.role.len())
                .fold(0usize, usize::saturating_add)
        };
        // A message and each tool call in it take at least one token.
        let items_of = |messages: &[super::Message]| {
            messages
                .iter()
                .map(|message| 1 + message.tool_calls.len())
                .fold(0usize, usize::saturating_add)
        };
        let (messages, items, bytes) = match prompt {
            Prompt::Chat(messages) => (messages.len(), items_of(messages), text_of(messages)),
            Prompt::ChatWith(messages, options) => (
                messages.len(),
                items_of(messages),
                text_of(messages).saturating_add(options.text_len()),
            ),
            Prompt::Raw(text) => (1, 1, text.len()),
        };
        if messages > n_ctx as usize {
            return Err(EngineError::InputTooLong {
                input: format!("{messages} messages"),
                n_ctx,
            });
        }
        if items > n_ctx as usize {
            return Err(EngineError::InputTooLong {
                input: format!("{messages} messages with {} tool calls", items - messages),
                n_ctx,
            });
        }
        if bytes > max_bytes {
            return Err(EngineError::InputTooLong {
                input: format!("{} of text", crate::human::size(bytes as u64)),
                n_ctx,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Message;

    fn limits(longest: usize) -> PromptLimits {
        PromptLimits {
            longest_token_bytes: longest,
        }
    }

    #[test]
    fn more_messages_than_tokens_never_fit() {
        let messages = vec![Message::new("user", "hi"); 5000];
        let error = limits(16).check(&Prompt::Chat(messages), 4096).unwrap_err();
        assert!(error.to_string().contains("5000 messages"), "{error}");
    }

    /// Each call renders at least its name: 100,000 calls in one message
    /// are refused before a template renders them.
    #[test]
    fn more_tool_calls_than_tokens_never_fit() {
        let mut message = Message::new("assistant", "");
        message.tool_calls = vec![
            crate::engine::tools::ToolCall {
                id: String::new(),
                name: "f".into(),
                arguments: serde_json::json!({}),
            };
            100_000
        ];
        let error = limits(16)
            .check(&Prompt::Chat(vec![message]), 4096)
            .unwrap_err();
        assert!(error.to_string().contains("100000 tool calls"), "{error}");
    }

    #[test]
    fn text_longer_than_any_tokenization_is_refused() {
        assert!(limits(8)
            .check(&Prompt::Raw("x".repeat(8 * 2 * 100)), 100)
            .is_ok());
        let error = limits(8)
            .check(&Prompt::Raw("x".repeat(8 * 2 * 100 + 1)), 100)
            .unwrap_err();
        assert!(
            error.to_string().contains("context of 100 tokens"),
            "{error}"
        );
    }
}
