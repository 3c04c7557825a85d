//! The per-token text pipeline, written once for the one-shot generator and
//! the server's scheduler: token bytes are joined into valid UTF-8, text that
//! may be the start of a stop string is held back, and what is left is
//! flushed when generation ends.
//!
//! No llama.cpp here: the callers turn a token into its bytes; everything
//! after that is pure and tested without a model.

/// One sequence's text: feed it each token's bytes with [`TextPipeline::push`],
/// emit what it releases, and call [`TextPipeline::finish`] once when
/// generation ends for any reason but a stop string.
#[derive(Debug, Default)]
pub struct TextPipeline {
    joiner: Utf8Joiner,
    stops: StopMatcher,
    /// Reused for each token's complete UTF-8 text.
    decoded: String,
}

impl TextPipeline {
    pub fn new(stops: &[String]) -> Self {
        Self {
            joiner: Utf8Joiner::default(),
            stops: StopMatcher::new(stops),
            decoded: String::with_capacity(64),
        }
    }

    /// Take one token's bytes; append the text that is now safe to emit to
    /// `release`. [`StopScan::Stopped`] when a stop string completed (the
    /// text before it has been released, the stop string itself never is).
    pub fn push(&mut self, bytes: &[u8], release: &mut String) -> StopScan {
        self.decoded.clear();
        self.joiner.push(bytes, &mut self.decoded);
        self.stops.push(&self.decoded, release)
    }

    /// Generation ended without a stop string: release the bytes of an
    /// unfinished character (as U+FFFD) and any text held back. Those last
    /// bytes may still complete a stop string: then the result is
    /// [`StopScan::Stopped`] and only the text before it is released.
    pub fn finish(&mut self, release: &mut String) -> StopScan {
        self.decoded.clear();
        self.joiner.finish(&mut self.decoded);
        let scan = self.stops.push(&self.decoded, release);
        if scan == StopScan::Continue {
            self.stops.finish(release);
        }
        scan
    }
}

/// Joins byte pieces into UTF-8 text. A character split across two tokens is
/// held until its last byte arrives; bytes that can never form valid UTF-8
/// become U+FFFD.
#[derive(Debug, Default)]
struct Utf8Joiner {
    pending: Vec<u8>,
}

impl Utf8Joiner {
    /// Append `bytes` and push the text that is now complete onto `out`.
    fn push(&mut self, bytes: &[u8], out: &mut String) {
        self.pending.extend_from_slice(bytes);
        let mut consumed = 0;
        loop {
            match std::str::from_utf8(&self.pending[consumed..]) {
                Ok(valid) => {
                    out.push_str(valid);
                    consumed = self.pending.len();
                    break;
                }
                Err(error) => {
                    let valid_end = consumed + error.valid_up_to();
                    // from_utf8 said these bytes are valid, so this copies them as they are.
                    out.push_str(&String::from_utf8_lossy(&self.pending[consumed..valid_end]));
                    match error.error_len() {
                        Some(invalid) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            consumed = valid_end + invalid;
                        }
                        None => {
                            // An incomplete character at the end: wait for more bytes.
                            consumed = valid_end;
                            break;
                        }
                    }
                }
            }
        }
        self.pending.drain(..consumed);
    }

    /// Flush what is left at the end of generation (an incomplete character
    /// becomes U+FFFD).
    fn finish(&mut self, out: &mut String) {
        if !self.pending.is_empty() {
            out.push_str(&String::from_utf8_lossy(&self.pending));
            self.pending.clear();
        }
    }
}

/// Watches generated text for stop strings. Text that might be the beginning
/// of a stop string is held back until it is known not to be one.
#[derive(Debug, Default)]
struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What [`StopMatcher::push`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum StopScan {
    /// No stop string yet; the text released so far is safe to emit.
    Continue,
    /// A stop string was found; the text before it has been released.
    Stopped,
}

impl StopMatcher {
    fn new(stops: &[String]) -> Self {
        Self {
            stops: stops
                .iter()
                .filter(|stop| !stop.is_empty())
                .cloned()
                .collect(),
            held: String::new(),
        }
    }

    /// Feed new text; append what is safe to emit to `release`.
    fn push(&mut self, text: &str, release: &mut String) -> StopScan {
        if self.stops.is_empty() {
            release.push_str(text);
            return StopScan::Continue;
        }
        self.held.push_str(text);
        if let Some(position) = self.earliest_stop() {
            release.push_str(&self.held[..position]);
            self.held.clear();
            return StopScan::Stopped;
        }
        let keep = self.longest_partial_suffix();
        let cut = self.held.len() - keep;
        release.push_str(&self.held[..cut]);
        self.held.drain(..cut);
        StopScan::Continue
    }

    /// Release whatever is held (generation ended without a stop string).
    fn finish(&mut self, release: &mut String) {
        release.push_str(&self.held);
        self.held.clear();
    }

    fn earliest_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min()
    }

    /// Length in bytes of the longest suffix of `held` that is a proper
    /// prefix of some stop string (always on a char boundary).
    fn longest_partial_suffix(&self) -> usize {
        let mut longest = 0;
        for stop in &self.stops {
            for (index, _) in stop.char_indices().skip(1) {
                let prefix = &stop[..index];
                if index > longest && self.held.ends_with(prefix) {
                    longest = index;
                }
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(pieces: &[&[u8]]) -> Vec<String> {
        let mut joiner = Utf8Joiner::default();
        let mut emitted = Vec::new();
        for piece in pieces {
            let mut out = String::new();
            joiner.push(piece, &mut out);
            emitted.push(out);
        }
        let mut out = String::new();
        joiner.finish(&mut out);
        emitted.push(out);
        emitted
    }

    #[test]
    fn character_split_across_pieces_is_emitted_once_complete() {
        // "é" is C3 A9; "🦀" is F0 9F A6 80.
        let emitted = join(&[b"caf\xC3", b"\xA9 ", b"\xF0\x9F", b"\xA6", b"\x80!"]);
        assert_eq!(emitted, ["caf", "é ", "", "", "🦀!", ""]);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let emitted = join(&[b"a\xFFb", b"\xC3"]);
        assert_eq!(emitted, ["a\u{FFFD}b", "", "\u{FFFD}"]);
    }

    #[test]
    fn invalid_continuation_after_incomplete_start() {
        let emitted = join(&[b"\xE2\x82", b"x"]);
        assert_eq!(emitted.concat(), "\u{FFFD}x");
    }

    fn scan(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut matcher = StopMatcher::new(&stops);
        let mut out = String::new();
        for piece in pieces {
            if matcher.push(piece, &mut out) == StopScan::Stopped {
                return (out, true);
            }
        }
        matcher.finish(&mut out);
        (out, false)
    }

    #[test]
    fn stop_string_split_across_pieces_is_caught() {
        assert_eq!(
            scan(&["</end>"], &["hello </", "en", "d> more"]),
            ("hello ".into(), true)
        );
    }

    #[test]
    fn near_miss_is_released() {
        assert_eq!(scan(&["STOP"], &["ST", "OP!"]), ("".into(), true));
        assert_eq!(scan(&["STOP"], &["ST", "ART"]), ("START".into(), false));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        assert_eq!(scan(&["b", "a"], &["xxab"]), ("xx".into(), true));
    }

    #[test]
    fn no_stops_passes_everything_through() {
        assert_eq!(scan(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(scan(&[""], &["a"]), ("a".into(), false));
    }

    #[test]
    fn pipeline_joins_bytes_and_holds_stop_prefixes() {
        let mut pipeline = TextPipeline::new(&["</s>".to_owned()]);
        let mut out = String::new();
        assert_eq!(pipeline.push(b"caf\xC3", &mut out), StopScan::Continue);
        assert_eq!(pipeline.push(b"\xA9 <", &mut out), StopScan::Continue);
        assert_eq!(out, "café ");
        assert_eq!(pipeline.push(b"/s> tail", &mut out), StopScan::Stopped);
        assert_eq!(out, "café ");
    }

    #[test]
    fn pipeline_finish_flushes_held_text_and_broken_characters() {
        let mut pipeline = TextPipeline::new(&["STOP".to_owned()]);
        let mut out = String::new();
        pipeline.push(b"end ST", &mut out);
        pipeline.push(b"\xE2\x82", &mut out);
        assert_eq!(out, "end ");
        assert_eq!(pipeline.finish(&mut out), StopScan::Continue);
        assert_eq!(out, "end ST\u{FFFD}");
    }

    #[test]
    fn pipeline_finish_can_complete_a_stop_string() {
        let mut pipeline = TextPipeline::new(&["a\u{FFFD}".to_owned()]);
        let mut out = String::new();
        pipeline.push(b"xa\xC3", &mut out);
        assert_eq!(pipeline.finish(&mut out), StopScan::Stopped);
        assert_eq!(out, "x");
    }

    #[test]
    fn multibyte_stop_prefix_is_held_on_char_boundary() {
        assert_eq!(scan(&["éé"], &["aé", "b"]), ("aéb".into(), false));
        assert_eq!(scan(&["éé"], &["aé", "é"]), ("a".into(), true));
    }
}
