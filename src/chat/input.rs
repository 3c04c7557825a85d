//! Multi-line input: lines typed at the prompt assembled into one message.
//!
//! `"""` opens a block that runs until a line ending in `"""` (text on the
//! opening and closing lines counts); a line ending in `\` continues on the
//! next line. Owns only this assembly; must not touch the terminal.

const FENCE: &str = "\"\"\"";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Mode {
    #[default]
    Single,
    /// Inside a `"""` block.
    Fenced,
    /// After a line that ended in `\`.
    Continued,
}

/// Collects typed lines until they form a complete message.
#[derive(Debug, Default)]
pub struct MultilineInput {
    mode: Mode,
    lines: Vec<String>,
}

impl MultilineInput {
    /// Whether a message is being continued (the prompt shows `...`).
    pub fn is_continuing(&self) -> bool {
        self.mode != Mode::Single
    }

    /// Drop a half-typed message (Ctrl-C).
    pub fn reset(&mut self) {
        self.mode = Mode::Single;
        self.lines.clear();
    }

    /// Feed one typed line; returns the message when it is complete.
    pub fn feed(&mut self, line: &str) -> Option<String> {
        match self.mode {
            Mode::Single => self.feed_first(line),
            Mode::Fenced => self.feed_fenced(line),
            Mode::Continued => self.feed_continued(line),
        }
    }

    fn feed_first(&mut self, line: &str) -> Option<String> {
        if let Some(rest) = line.trim_start().strip_prefix(FENCE) {
            if let Some(inner) = rest.trim_end().strip_suffix(FENCE) {
                return Some(inner.to_owned());
            }
            self.mode = Mode::Fenced;
            if !rest.trim().is_empty() {
                self.lines.push(rest.to_owned());
            }
            return None;
        }
        if let Some(start) = line.strip_suffix('\\') {
            self.mode = Mode::Continued;
            self.lines.push(start.to_owned());
            return None;
        }
        Some(line.to_owned())
    }

    fn feed_fenced(&mut self, line: &str) -> Option<String> {
        match line.trim_end().strip_suffix(FENCE) {
            Some(last) => {
                if !last.trim().is_empty() {
                    self.lines.push(last.to_owned());
                }
                Some(self.take())
            }
            None => {
                self.lines.push(line.to_owned());
                None
            }
        }
    }

    fn feed_continued(&mut self, line: &str) -> Option<String> {
        match line.strip_suffix('\\') {
            Some(start) => {
                self.lines.push(start.to_owned());
                None
            }
            None => {
                self.lines.push(line.to_owned());
                Some(self.take())
            }
        }
    }

    fn take(&mut self) -> String {
        let message = self.lines.join("\n");
        self.reset();
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assemble(lines: &[&str]) -> Vec<Option<String>> {
        let mut input = MultilineInput::default();
        lines.iter().map(|line| input.feed(line)).collect()
    }

    #[test]
    fn a_plain_line_is_a_message() {
        assert_eq!(assemble(&["hello"]), [Some("hello".into())]);
    }

    #[test]
    fn a_fenced_block_keeps_its_lines() {
        assert_eq!(
            assemble(&["\"\"\"", "a multi-line", "message", "\"\"\""]),
            [None, None, None, Some("a multi-line\nmessage".into())]
        );
    }

    #[test]
    fn text_on_the_fence_lines_counts() {
        assert_eq!(
            assemble(&["\"\"\"first", "second\"\"\""]),
            [None, Some("first\nsecond".into())]
        );
        assert_eq!(
            assemble(&["\"\"\"one line\"\"\""]),
            [Some("one line".into())]
        );
    }

    #[test]
    fn a_trailing_backslash_continues() {
        assert_eq!(
            assemble(&["one \\", "two\\", "three"]),
            [None, None, Some("one \ntwo\nthree".into())]
        );
    }

    #[test]
    fn reset_drops_a_half_typed_message() {
        let mut input = MultilineInput::default();
        assert_eq!(input.feed("\"\"\""), None);
        assert!(input.is_continuing());
        input.feed("lost");
        input.reset();
        assert!(!input.is_continuing());
        assert_eq!(input.feed("fresh"), Some("fresh".into()));
    }
}
