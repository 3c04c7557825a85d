//! The conversation: the system prompt, the turns so far, and the policy for
//! making them fit the context.
//!
//! An assistant message is kept exactly as it was generated, so the next
//! turn's prompt starts with the tokens the KV cache already holds and only
//! the new message is evaluated.
//!
//! Owns: message order and trimming. Must not touch: the model (token counts
//! come through a callback), the terminal, files.

use crate::engine::Message;

pub const SYSTEM: &str = "system";
pub const USER: &str = "user";
pub const ASSISTANT: &str = "assistant";

/// System prompt plus alternating user and assistant messages.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conversation {
    system: Option<String>,
    /// User and assistant messages, oldest first.
    messages: Vec<Message>,
}

/// What [`Conversation::trim_to_fit`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    /// Oldest turns dropped.
    pub dropped_turns: usize,
    /// Prompt tokens after trimming.
    pub prompt_tokens: usize,
    /// Whether the prompt now fits; false when even the newest message alone is too long.
    pub fits: bool,
}

impl Conversation {
    pub fn new(system: Option<String>) -> Self {
        Self {
            system: system.filter(|text| !text.is_empty()),
            messages: Vec::new(),
        }
    }

    pub fn system(&self) -> Option<&str> {
        self.system.as_deref()
    }

    pub fn set_system(&mut self, system: Option<String>) {
        self.system = system.filter(|text| !text.is_empty());
    }

    /// User and assistant messages, oldest first (no system prompt).
    pub fn turns(&self) -> &[Message] {
        &self.messages
    }

    pub fn push_user(&mut self, text: String) {
        self.messages.push(Message::new(USER, text));
    }

    /// Record the answer exactly as generated (also a partial, cancelled one).
    pub fn push_assistant(&mut self, text: String) {
        self.messages.push(Message::new(ASSISTANT, text));
    }

    /// Take back the last user message (it could not be answered).
    pub fn pop_user(&mut self) -> Option<String> {
        match self.messages.last() {
            Some(message) if message.role == USER => {
                self.messages.pop().map(|message| message.content)
            }
            _ => None,
        }
    }

    /// Forget the turns; the system prompt stays.
    pub fn clear(&mut self) {
        self.messages.clear();
    }

    /// The messages to render: system prompt first.
    pub fn prompt_messages(&self) -> Vec<Message> {
        self.prompt_messages_from(0)
    }

    /// Rebuild from saved messages: a leading system message becomes the
    /// system prompt; the rest must be user or assistant messages.
    pub fn from_messages(messages: Vec<Message>) -> Result<Self, String> {
        let mut conversation = Conversation::default();
        for (index, message) in messages.into_iter().enumerate() {
            match message.role.as_str() {
                SYSTEM if index == 0 => conversation.set_system(Some(message.content)),
                USER | ASSISTANT => conversation.messages.push(message),
                other => {
                    return Err(format!(
                        "message {} has role '{}'",
                        index + 1,
                        crate::store::names::escaped(other)
                    ))
                }
            }
        }
        Ok(conversation)
    }

    /// Drop the oldest turns (a user message and the answers after it) until
    /// `count_tokens` of the prompt is at most `budget`. The system prompt and
    /// the newest user message always stay. The fewest turns that make it fit
    /// are found by bisection (fewer turns never count more tokens): a loaded
    /// transcript of 100,000 messages took one counting per dropped turn,
    /// each of the whole conversation, and ran for hours.
    pub fn trim_to_fit<E>(
        &mut self,
        budget: usize,
        mut count_tokens: impl FnMut(&[Message]) -> Result<usize, E>,
    ) -> Result<Trim, E> {
        // Dropping `k` turns keeps the messages from `starts[k]` on.
        let starts: Vec<usize> = std::iter::once(0)
            .chain(
                self.messages
                    .iter()
                    .enumerate()
                    .skip(1)
                    .filter(|(_, message)| message.role == USER)
                    .map(|(index, _)| index),
            )
            .collect();
        let droppable = starts.len() - 1;
        let mut count =
            |this: &Self, turns: usize| count_tokens(&this.prompt_messages_from(starts[turns]));
        let mut fitting = None;
        let (mut low, mut high) = (0, droppable);
        while low <= high {
            let middle = low + (high - low) / 2;
            let tokens = count(self, middle)?;
            if tokens <= budget {
                fitting = Some((middle, tokens));
                match middle.checked_sub(1) {
                    Some(fewer) => high = fewer,
                    None => break,
                }
            } else {
                low = middle + 1;
            }
        }
        let (dropped_turns, prompt_tokens, fits) = match fitting {
            Some((turns, tokens)) => (turns, tokens, true),
            None => (droppable, count(self, droppable)?, false),
        };
        self.messages.drain(..starts[dropped_turns]);
        Ok(Trim {
            dropped_turns,
            prompt_tokens,
            fits,
        })
    }

    /// The system prompt and the messages from `start` on.
    fn prompt_messages_from(&self, start: usize) -> Vec<Message> {
        let system = self
            .system
            .iter()
            .map(|text| Message::new(SYSTEM, text.clone()));
        system
            .chain(self.messages[start..].iter().cloned())
            .collect()
    }
}

/// Prompt tokens a turn may use in a context of `n_ctx`: the rest is kept for
/// the answer (`max_tokens`, or a quarter of the context without a limit, and
/// never more than half of it).
pub fn prompt_budget(n_ctx: u32, max_tokens: Option<u32>) -> usize {
    let n_ctx = n_ctx as usize;
    let reserve = max_tokens
        .map_or(n_ctx / 4, |limit| limit as usize)
        .min(n_ctx / 2);
    n_ctx.saturating_sub(reserve).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token count of one per word, plus two per message.
    fn count_words(messages: &[Message]) -> Result<usize, std::convert::Infallible> {
        Ok(messages
            .iter()
            .map(|message| message.content.split_whitespace().count() + 2)
            .sum())
    }

    fn three_turns() -> Conversation {
        let mut conversation = Conversation::new(Some("be brief".into()));
        for turn in ["one", "two", "three"] {
            conversation.push_user(format!("question {turn}"));
            conversation.push_assistant(format!("answer {turn}"));
        }
        conversation.push_user("question four".into());
        conversation
    }

    #[test]
    fn the_system_prompt_comes_first() {
        let conversation = three_turns();
        let messages = conversation.prompt_messages();
        assert_eq!(messages[0], Message::new(SYSTEM, "be brief"));
        assert_eq!(messages.len(), 8);
    }

    #[test]
    fn a_conversation_that_fits_is_left_alone() {
        let mut conversation = three_turns();
        let trim = conversation.trim_to_fit(100, count_words).unwrap();
        assert_eq!(
            trim,
            Trim {
                dropped_turns: 0,
                prompt_tokens: 32,
                fits: true
            }
        );
        assert_eq!(conversation, three_turns());
    }

    #[test]
    fn oldest_turns_go_first_and_the_system_prompt_stays() {
        let mut conversation = three_turns();
        let trim = conversation.trim_to_fit(20, count_words).unwrap();
        assert_eq!(trim.dropped_turns, 2);
        assert!(trim.fits);
        assert_eq!(conversation.system(), Some("be brief"));
        assert_eq!(conversation.turns()[0].content, "question three");
        assert_eq!(conversation.turns().len(), 3);
    }

    #[test]
    fn the_newest_message_alone_may_still_not_fit() {
        let mut conversation = three_turns();
        let trim = conversation.trim_to_fit(3, count_words).unwrap();
        assert!(!trim.fits);
        assert_eq!(trim.dropped_turns, 3);
        assert_eq!(conversation.turns(), [Message::new(USER, "question four")]);
        assert_eq!(conversation.pop_user().as_deref(), Some("question four"));
        assert!(conversation.turns().is_empty());
    }

    #[test]
    fn a_hundred_thousand_messages_are_trimmed_in_a_few_countings() {
        let mut conversation = Conversation::new(None);
        for turn in 0..50_000 {
            conversation.push_user(format!("question {turn}"));
            conversation.push_assistant("answer".into());
        }
        conversation.push_user("last question".into());
        let mut countings = 0;
        let trim = conversation
            .trim_to_fit(100, |messages| {
                countings += 1;
                count_words(messages)
            })
            .unwrap();
        assert!(trim.fits && trim.prompt_tokens <= 100, "{trim:?}");
        assert!(countings <= 20, "{countings} countings");
        assert_eq!(
            conversation.turns().last().unwrap().content,
            "last question"
        );
    }

    #[test]
    fn clear_keeps_the_system_prompt() {
        let mut conversation = three_turns();
        conversation.clear();
        assert!(conversation.turns().is_empty());
        assert_eq!(
            conversation.prompt_messages(),
            [Message::new(SYSTEM, "be brief")]
        );
    }

    #[test]
    fn saved_messages_rebuild_the_conversation() {
        let conversation = three_turns();
        let rebuilt = Conversation::from_messages(conversation.prompt_messages()).unwrap();
        assert_eq!(rebuilt, conversation);
        let bad = vec![Message::new(USER, "hi"), Message::new("tool", "x")];
        assert!(Conversation::from_messages(bad).is_err());
    }

    #[test]
    fn the_answer_keeps_its_share_of_the_context() {
        assert_eq!(prompt_budget(8192, None), 6144);
        assert_eq!(prompt_budget(8192, Some(100)), 8092);
        assert_eq!(prompt_budget(256, Some(1000)), 128);
    }
}
