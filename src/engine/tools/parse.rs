//! Reading an answer as it streams: reasoning (`<think>...</think>`) apart
//! from content, and tool calls apart from prose, each call emitted once it
//! is complete and checked against its tool's schema.
//!
//! Text that may be the start of a marker is held back until it is known
//! not to be one, so content never carries half a tag. A call region that
//! cannot be read as calls (an unknown tool, arguments that do not match,
//! an answer that ends inside a call) is given back as content at the end,
//! with the reason: never a half call reported as a call.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::format::{
    DEEPSEEK_CALLS_BEGIN, DEEPSEEK_CALLS_END, DEEPSEEK_CALL_BEGIN, DEEPSEEK_CALL_END, DEEPSEEK_SEP,
};
use super::{validate, ToolCall, ToolFormat, ToolSpec};

/// How an answer's reasoning is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasoningMode {
    /// No reasoning: all text is content.
    Off,
    /// Reasoning between `<think>` and `</think>` at the start; with
    /// `starts_inside`, the prompt opened the block and the answer begins
    /// inside it.
    Tags { starts_inside: bool },
}

/// One piece of a parsed answer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Content(String),
    Reasoning(String),
    /// A complete call whose arguments match its tool's schema. Its id is
    /// the model's own (Mistral Nemo writes one) or empty for the caller to give.
    Call(ToolCall),
}

/// A whole answer, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub content: String,
    pub reasoning: String,
    pub calls: Vec<ToolCall>,
    /// Why text that began a call is content instead.
    pub error: Option<String>,
}

impl Parsed {
    pub fn add(&mut self, pieces: Vec<Piece>) {
        for piece in pieces {
            match piece {
                Piece::Content(text) => self.content.push_str(&text),
                Piece::Reasoning(text) => self.reasoning.push_str(&text),
                Piece::Call(call) => self.calls.push(call),
            }
        }
    }
}

const THINK_OPEN: &str = "<think>";
const THINK_CLOSE: &str = "</think>";

/// Splits an answer into content, reasoning and calls as it streams.
#[derive(Debug)]
pub struct OutputParser {
    think: Think,
    calls: Option<CallScanner>,
}

impl OutputParser {
    /// `tools`: the convention and the tools offered, when calls are to be read.
    pub fn new(reasoning: ReasoningMode, tools: Option<(ToolFormat, Vec<ToolSpec>)>) -> Self {
        let think = match reasoning {
            ReasoningMode::Off => Think::Off,
            ReasoningMode::Tags {
                starts_inside: false,
            } => Think::Start(String::new()),
            ReasoningMode::Tags {
                starts_inside: true,
            } => Think::Inside {
                held: String::new(),
                started: false,
            },
        };
        Self {
            think,
            calls: tools.map(|(format, tools)| CallScanner::new(format, tools)),
        }
    }

    /// Parse a whole answer at once.
    pub fn parse(
        text: &str,
        reasoning: ReasoningMode,
        tools: Option<(ToolFormat, Vec<ToolSpec>)>,
    ) -> Parsed {
        let mut parser = Self::new(reasoning, tools);
        let mut parsed = Parsed::default();
        parsed.add(parser.push(text));
        let (pieces, error) = parser.finish();
        parsed.add(pieces);
        parsed.error = error;
        if !parsed.calls.is_empty() && parsed.content.trim().is_empty() {
            parsed.content.clear();
        }
        parsed
    }

    /// Take the next piece of text; returns what is now known.
    pub fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut pieces = Vec::new();
        let mut content = String::new();
        self.think.push(text, &mut pieces, &mut content);
        self.content(content, &mut pieces);
        pieces
    }

    /// The answer ended: release what was held, and say why text that
    /// began a call could not be read as calls.
    pub fn finish(&mut self) -> (Vec<Piece>, Option<String>) {
        let mut pieces = Vec::new();
        let mut content = String::new();
        self.think.finish(&mut pieces, &mut content);
        self.content(content, &mut pieces);
        let error = match &mut self.calls {
            Some(scanner) => scanner.finish(&mut pieces),
            None => None,
        };
        (merge(pieces), error)
    }

    fn content(&mut self, content: String, pieces: &mut Vec<Piece>) {
        if content.is_empty() {
            return;
        }
        match &mut self.calls {
            Some(scanner) => scanner.push(&content, pieces),
            None => pieces.push(Piece::Content(content)),
        }
    }
}

/// Join neighbouring pieces of the same kind.
fn merge(pieces: Vec<Piece>) -> Vec<Piece> {
    let mut merged: Vec<Piece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match (merged.last_mut(), piece) {
            (Some(Piece::Content(last)), Piece::Content(text)) => last.push_str(&text),
            (Some(Piece::Reasoning(last)), Piece::Reasoning(text)) => last.push_str(&text),
            (_, piece) => merged.push(piece),
        }
    }
    merged.retain(
        |piece| !matches!(piece, Piece::Content(text) | Piece::Reasoning(text) if text.is_empty()),
    );
    merged
}

/// Where the reasoning splitter is.
#[derive(Debug)]
enum Think {
    /// No reasoning to look for.
    Off,
    /// At the start: the answer may open with `<think>` (after whitespace).
    Start(String),
    /// Inside the block; `held` may end with the start of `</think>` or with
    /// whitespace (dropped if the block closes after it).
    Inside { held: String, started: bool },
    /// Just after `</think>`: whitespace before the content is dropped.
    AfterClose,
    /// Past the reasoning.
    Content,
}

impl Think {
    fn push(&mut self, text: &str, pieces: &mut Vec<Piece>, content: &mut String) {
        match self {
            Think::Off | Think::Content => content.push_str(text),
            Think::Start(held) => {
                held.push_str(text);
                let trimmed = held.trim_start();
                if trimmed.len() >= THINK_OPEN.len() || !THINK_OPEN.starts_with(trimmed) {
                    if let Some(rest) = trimmed.strip_prefix(THINK_OPEN) {
                        let rest = rest.to_owned();
                        *self = Think::Inside {
                            held: String::new(),
                            started: false,
                        };
                        self.push(&rest, pieces, content);
                    } else {
                        content.push_str(held);
                        *self = Think::Content;
                    }
                }
            }
            Think::Inside { held, started } => {
                held.push_str(text);
                if !*started {
                    let trimmed = held.trim_start().len();
                    held.drain(..held.len() - trimmed);
                    *started = !held.is_empty();
                }
                if let Some(end) = held.find(THINK_CLOSE) {
                    let reasoning = held[..end].trim_end().to_owned();
                    let rest = held[end + THINK_CLOSE.len()..].to_owned();
                    pieces.push(Piece::Reasoning(reasoning));
                    *self = Think::AfterClose;
                    self.push(&rest, pieces, content);
                    return;
                }
                // Hold a possible start of `</think>` and the whitespace before
                // it: reasoning is given without the whitespace around it.
                let partial = partial_suffix(held, &[THINK_CLOSE]);
                let before = &held[..held.len() - partial];
                let cut = before.trim_end().len();
                if cut > 0 {
                    pieces.push(Piece::Reasoning(held[..cut].to_owned()));
                    held.drain(..cut);
                }
            }
            Think::AfterClose => {
                let trimmed = text.trim_start();
                if !trimmed.is_empty() {
                    content.push_str(trimmed);
                    *self = Think::Content;
                }
            }
        }
    }

    fn finish(&mut self, pieces: &mut Vec<Piece>, content: &mut String) {
        match std::mem::replace(self, Think::Content) {
            Think::Start(held) => content.push_str(&held),
            Think::Inside { held, .. } => pieces.push(Piece::Reasoning(held.trim_end().to_owned())),
            Think::Off | Think::AfterClose | Think::Content => {}
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of one of
/// `markers` (on a character boundary).
fn partial_suffix(text: &str, markers: &[&str]) -> usize {
    let mut longest = 0;
    for marker in markers {
        for (index, _) in marker.char_indices().skip(1) {
            if index > longest && text.ends_with(&marker[..index]) {
                longest = index;
            }
        }
    }
    longest
}

/// Finds calls in the content stream.
#[derive(Debug)]
struct CallScanner {
    format: ToolFormat,
    tools: Vec<ToolSpec>,
    state: Scan,
    /// Nothing but whitespace released so far: a JSON object here is a call.
    at_start: bool,
}

#[derive(Debug)]
enum Scan {
    /// Prose; `held` may be the start of a marker.
    Prose { held: String },
    /// Inside a call region that began at a marker (or with JSON at the
    /// start); `emitted` calls of it have been released.
    Calls {
        region: String,
        kind: Region,
        emitted: usize,
        /// Bytes of `region` up to the end of the last call released.
        consumed: usize,
    },
    /// A region that could not be read: its text becomes content at the end.
    Failed { text: String, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    Marker,
    JsonStart,
}

/// What reading a call region found so far.
#[derive(Debug)]
struct Extracted {
    calls: Vec<RawCall>,
    /// The region is over at this byte (what follows is prose again).
    end: Option<usize>,
    /// More text may complete a call that has begun.
    incomplete: bool,
    /// The region cannot be calls: why.
    invalid: Option<String>,
    /// JSON at the start that is not shaped as a call: plain content.
    not_calls: bool,
}

impl Extracted {
    fn new() -> Self {
        Self {
            calls: Vec::new(),
            end: None,
            incomplete: false,
            invalid: None,
            not_calls: false,
        }
    }
}

#[derive(Debug)]
struct RawCall {
    name: String,
    arguments: Value,
    id: Option<String>,
    /// Where in the region the call's text ends.
    end: usize,
}

impl Extracted {
    /// The calls found last end at `at`.
    fn mark(&mut self, at: usize) {
        for call in self.calls.iter_mut().rev() {
            if call.end != usize::MAX {
                break;
            }
            call.end = at;
        }
    }
}

impl CallScanner {
    fn new(format: ToolFormat, tools: Vec<ToolSpec>) -> Self {
        Self {
            format,
            tools,
            state: Scan::Prose {
                held: String::new(),
            },
            at_start: true,
        }
    }

    fn push(&mut self, text: &str, pieces: &mut Vec<Piece>) {
        match &mut self.state {
            Scan::Prose { held } => held.push_str(text),
            Scan::Calls { region, .. } => region.push_str(text),
            Scan::Failed { text: failed, .. } => {
                failed.push_str(text);
                return;
            }
        }
        self.advance(pieces, false);
    }

    fn finish(&mut self, pieces: &mut Vec<Piece>) -> Option<String> {
        self.advance(pieces, true);
        match std::mem::replace(
            &mut self.state,
            Scan::Prose {
                held: String::new(),
            },
        ) {
            Scan::Prose { held } => {
                pieces.push(Piece::Content(held));
                None
            }
            Scan::Failed { text, reason } => {
                pieces.push(Piece::Content(text));
                Some(reason)
            }
            Scan::Calls {
                region, consumed, ..
            } => {
                // advance(last) leaves no region open; should one be, its
                // unreleased text is content.
                pieces.push(Piece::Content(
                    region[consumed.min(region.len())..].to_owned(),
                ));
                Some("the answer ended inside a tool call".into())
            }
        }
    }

    /// Move through the held text as far as it can be read now.
    fn advance(&mut self, pieces: &mut Vec<Piece>, last: bool) {
        let Self {
            format,
            tools,
            state,
            at_start,
        } = self;
        let format = *format;
        loop {
            match state {
                Scan::Failed { .. } => return,
                Scan::Prose { held } => {
                    if *at_start
                        && matches!(json_opening(held.trim_start(), last), Opening::Undecided)
                    {
                        return;
                    }
                    let Some((before, region, kind)) = find_region(format, held, last, *at_start)
                    else {
                        let keep = if last {
                            0
                        } else {
                            held_back(format, held, *at_start)
                        };
                        let release = held.len() - keep;
                        if release > 0 {
                            let text: String = held.drain(..release).collect();
                            if !text.trim().is_empty() {
                                *at_start = false;
                            }
                            pieces.push(Piece::Content(text));
                        }
                        return;
                    };
                    if !before.is_empty() {
                        if !before.trim().is_empty() {
                            *at_start = false;
                        }
                        pieces.push(Piece::Content(before));
                    }
                    *state = Scan::Calls {
                        region,
                        kind,
                        emitted: 0,
                        consumed: 0,
                    };
                }
                Scan::Calls {
                    region,
                    kind,
                    emitted,
                    consumed,
                } => {
                    let extracted = extract(format, *kind, region, last);
                    if extracted.not_calls {
                        // JSON that is not a call: it was content all along.
                        let text = std::mem::take(region);
                        *at_start = false;
                        pieces.push(Piece::Content(text));
                        *state = Scan::Prose {
                            held: String::new(),
                        };
                        continue;
                    }
                    // Calls released earlier may have learnt their end since
                    // (a closing tag that arrived after the call).
                    if let Some(end) = extracted
                        .calls
                        .get(emitted.saturating_sub(1))
                        .filter(|_| *emitted > 0)
                        .map(|call| call.end)
                        .filter(|end| *end != usize::MAX)
                    {
                        *consumed = (*consumed).max(end.min(region.len()));
                    }
                    for raw in extracted.calls.into_iter().skip(*emitted) {
                        let end = raw.end;
                        match check(tools, raw) {
                            Ok(call) => {
                                *emitted += 1;
                                *consumed = end.min(region.len());
                                *at_start = false;
                                pieces.push(Piece::Call(call));
                            }
                            Err(reason) => {
                                let text = region[*consumed..].to_owned();
                                *state = Scan::Failed { text, reason };
                                return;
                            }
                        }
                    }
                    if let Some(reason) = extracted.invalid {
                        let text = region[*consumed..].to_owned();
                        *state = Scan::Failed { text, reason };
                        return;
                    }
                    match extracted.end {
                        Some(end) => {
                            let rest = region[end..].to_owned();
                            *state = Scan::Prose { held: rest };
                        }
                        None => return,
                    }
                }
            }
        }
    }
}

/// Text held back from prose: a possible start of a marker, or at the
/// start of the answer a possible opening of a JSON call.
fn held_back(format: ToolFormat, held: &str, at_start: bool) -> usize {
    if at_start && held.trim().is_empty() {
        return held.len();
    }
    partial_suffix(held, format.markers())
}

/// Where a call region begins in `held`: the prose before it, the
/// region's text and its kind.
fn find_region(
    format: ToolFormat,
    held: &str,
    last: bool,
    at_start: bool,
) -> Option<(String, String, Region)> {
    if at_start {
        let trimmed = held.trim_start();
        match json_opening(trimmed, last) {
            Opening::Json => {
                return Some((String::new(), trimmed.to_owned(), Region::JsonStart));
            }
            Opening::Undecided => return None,
            Opening::Not => {}
        }
    }
    let found = format
        .markers()
        .iter()
        .filter_map(|marker| held.find(marker))
        .min()?;
    Some((
        held[..found].to_owned(),
        held[found..].to_owned(),
        Region::Marker,
    ))
}

/// A raw call as the response reports it: a known tool, arguments that
/// match its schema.
fn check(tools: &[ToolSpec], raw: RawCall) -> Result<ToolCall, String> {
    let Some(tool) = tools.iter().find(|tool| tool.name == raw.name) else {
        return Err(format!(
            "the model called '{}', which is not among the tools",
            raw.name.chars().take(80).collect::<String>()
        ));
    };
    if !raw.arguments.is_object() {
        return Err(format!(
            "the arguments of '{}' are not a JSON object",
            tool.name
        ));
    }
    validate(&raw.arguments, &tool.parameters).map_err(|reason| {
        format!(
            "the call of '{}' does not match its schema: {reason}",
            tool.name
        )
    })?;
    Ok(ToolCall {
        id: raw.id.unwrap_or_default(),
        name: raw.name,
        arguments: raw.arguments,
    })
}

enum Opening {
    Json,
    Not,
    /// Too little text to tell.
    Undecided,
}

/// Whether text at the start of an answer opens a JSON object (or an array
/// of objects), bare or in a Markdown fence.
fn json_opening(text: &str, last: bool) -> Opening {
    if text.is_empty() {
        return if last {
            Opening::Not
        } else {
            Opening::Undecided
        };
    }
    let mut rest = text;
    if let Some(after) = rest.strip_prefix("```") {
        let Some(newline) = after.find('\n') else {
            return if last || after.len() > 16 {
                Opening::Not
            } else {
                Opening::Undecided
            };
        };
        let language = after[..newline].trim();
        if !matches!(language, "" | "json" | "tool_code") {
            return Opening::Not;
        }
        rest = after[newline + 1..].trim_start();
    } else if "```".starts_with(rest) {
        return if last {
            Opening::Not
        } else {
            Opening::Undecided
        };
    }
    if let Some(after) = rest.strip_prefix('[') {
        let after = after.trim_start();
        return match after.chars().next() {
            Some('{') => Opening::Json,
            Some(_) => Opening::Not,
            None if last => Opening::Not,
            None => Opening::Undecided,
        };
    }
    match rest.chars().next() {
        Some('{') => Opening::Json,
        Some(_) => Opening::Not,
        None if last => Opening::Not,
        None => Opening::Undecided,
    }
}

/// The first JSON value of `text`: the value and the bytes it took, or
/// whether more text could complete it.
enum JsonScan {
    Value(Value, usize),
    Incomplete,
    Invalid(String),
}

fn json_prefix(text: &str) -> JsonScan {
    let mut values = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    match values.next() {
        Some(Ok(value)) => JsonScan::Value(value, values.byte_offset()),
        Some(Err(error)) if error.is_eof() => JsonScan::Incomplete,
        Some(Err(error)) => JsonScan::Invalid(error.to_string()),
        None => JsonScan::Incomplete,
    }
}

/// A cursor over a call region.
struct Cursor<'a> {
    text: &'a str,
    at: usize,
}

enum Expect {
    Found,
    /// The rest is a proper prefix of what was expected.
    Partial,
    Missing,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.text[self.at..]
    }

    fn skip_ws(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn expect(&mut self, literal: &str) -> Expect {
        let rest = self.rest();
        if rest.starts_with(literal) {
            self.at += literal.len();
            Expect::Found
        } else if literal.starts_with(rest) {
            Expect::Partial
        } else {
            Expect::Missing
        }
    }

    fn json(&mut self) -> JsonScan {
        match json_prefix(self.rest()) {
            JsonScan::Value(value, used) => {
                self.at += used;
                JsonScan::Value(value, used)
            }
            other => other,
        }
    }
}

/// Read the calls of a region so far. `last`: no more text will come.
fn extract(format: ToolFormat, kind: Region, region: &str, last: bool) -> Extracted {
    let mut out = Extracted::new();
    let mut cursor = Cursor {
        text: region,
        at: 0,
    };
    match kind {
        Region::JsonStart => json_start(&mut cursor, &mut out, last),
        Region::Marker => match format {
            ToolFormat::Hermes | ToolFormat::Generic | ToolFormat::Gemma => tagged(
                &mut cursor,
                &mut out,
                "<tool_call>",
                Some("</tool_call>"),
                last,
            ),
            ToolFormat::Mistral => tagged(&mut cursor, &mut out, "[TOOL_CALLS]", None, last),
            ToolFormat::Phi4 => {
                if cursor.rest().starts_with("functools") {
                    tagged(&mut cursor, &mut out, "functools", None, last)
                } else {
                    tagged(
                        &mut cursor,
                        &mut out,
                        "<|tool_call|>",
                        Some("<|/tool_call|>"),
                        last,
                    )
                }
            }
            ToolFormat::Llama3 => python_tag(&mut cursor, &mut out, last),
            ToolFormat::DeepSeekR1 => deepseek(&mut cursor, &mut out, last),
        },
    }
    if last && out.incomplete && out.invalid.is_none() {
        out.invalid = Some("the answer ended inside a tool call".into());
    }
    out
}

/// Calls as JSON (one object, or an array) between `open` and `close`
/// (when the format closes its blocks), repeated.
fn tagged(
    cursor: &mut Cursor<'_>,
    out: &mut Extracted,
    open: &str,
    close: Option<&str>,
    last: bool,
) {
    loop {
        let block_start = cursor.at;
        cursor.skip_ws();
        match cursor.expect(open) {
            Expect::Found => {}
            // What follows may still become another block: wait for it.
            Expect::Partial if !last => return,
            Expect::Partial | Expect::Missing => {
                out.end = Some(block_start);
                return;
            }
        }
        cursor.skip_ws();
        match cursor.json() {
            JsonScan::Value(value, _) => {
                if !calls_from_json(value, out) {
                    out.invalid = Some("the text after a tool-call marker is not a call".into());
                    return;
                }
            }
            JsonScan::Incomplete => {
                out.incomplete = true;
                return;
            }
            JsonScan::Invalid(error) => {
                out.invalid = Some(format!("a tool call is not valid JSON: {error}"));
                return;
            }
        }
        if let Some(close) = close {
            let before_close = cursor.at;
            cursor.skip_ws();
            match cursor.expect(close) {
                Expect::Found => {}
                // The calls so far are complete; the tag may still come.
                Expect::Partial if !last => {
                    out.mark(before_close);
                    return;
                }
                // Models often drop the closing tag: the call stands.
                Expect::Partial | Expect::Missing => cursor.at = before_close,
            }
        }
        out.mark(cursor.at);
    }
}

/// Llama 3.x: `<|python_tag|>` then JSON calls, or a built-in tool's
/// `name.call(arg="value", ...)`.
fn python_tag(cursor: &mut Cursor<'_>, out: &mut Extracted, last: bool) {
    match cursor.expect("<|python_tag|>") {
        Expect::Found => {}
        _ => {
            out.end = Some(0);
            return;
        }
    }
    cursor.skip_ws();
    if cursor.rest().starts_with('{') {
        json_calls(cursor, out, last);
        return;
    }
    let rest = cursor.rest();
    let Some(open) = rest.find(".call(") else {
        if last || rest.len() > 256 {
            out.invalid = Some("the text after <|python_tag|> is not a call".into());
        } else {
            out.incomplete = true;
        }
        return;
    };
    let name = rest[..open].trim().to_owned();
    let mut arguments = serde_json::Map::new();
    let mut inner = Cursor {
        text: rest,
        at: open + ".call(".len(),
    };
    loop {
        inner.skip_ws();
        if let Expect::Found = inner.expect(")") {
            break;
        }
        let tail = inner.rest();
        let Some(equals) = tail.find('=') else {
            out.incomplete = !last;
            if last {
                out.invalid = Some("a built-in tool call is not complete".into());
            }
            return;
        };
        let key = tail[..equals]
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_owned();
        inner.at += equals + 1;
        inner.skip_ws();
        match inner.json() {
            JsonScan::Value(value, _) => {
                arguments.insert(key, value);
            }
            JsonScan::Incomplete => {
                out.incomplete = true;
                return;
            }
            JsonScan::Invalid(error) => {
                out.invalid = Some(format!(
                    "a built-in tool call's argument is not JSON: {error}"
                ));
                return;
            }
        }
        inner.skip_ws();
        let _ = inner.expect(",");
    }
    cursor.at += inner.at;
    out.calls.push(RawCall {
        name,
        arguments: Value::Object(arguments),
        id: None,
        end: cursor.at,
    });
    out.end = Some(cursor.at);
}

/// One or more JSON calls in a row (separated by whitespace or `;`).
fn json_calls(cursor: &mut Cursor<'_>, out: &mut Extracted, last: bool) {
    loop {
        cursor.skip_ws();
        let _ = cursor.expect(";");
        cursor.skip_ws();
        if !cursor.rest().starts_with('{') {
            if cursor.rest().is_empty() && !last {
                return;
            }
            out.end = Some(cursor.at);
            return;
        }
        match cursor.json() {
            JsonScan::Value(value, _) => {
                if !calls_from_json(value, out) {
                    out.invalid = Some("a JSON object in a call region is not a call".into());
                    return;
                }
                out.mark(cursor.at);
            }
            JsonScan::Incomplete => {
                out.incomplete = true;
                return;
            }
            JsonScan::Invalid(error) => {
                out.invalid = Some(format!("a tool call is not valid JSON: {error}"));
                return;
            }
        }
    }
}

/// JSON at the start of the answer (bare or fenced): calls if shaped as
/// calls, content otherwise.
fn json_start(cursor: &mut Cursor<'_>, out: &mut Extracted, last: bool) {
    let fenced = cursor.rest().starts_with("```");
    if fenced {
        let newline = cursor
            .rest()
            .find('\n')
            .map_or(cursor.rest().len(), |at| at + 1);
        cursor.at += newline;
    }
    cursor.skip_ws();
    match cursor.json() {
        JsonScan::Value(value, _) => {
            let shaped = match &value {
                Value::Array(items) => !items.is_empty() && items.iter().all(looks_like_call),
                other => looks_like_call(other),
            };
            if !shaped {
                out.not_calls = true;
                return;
            }
            calls_from_json(value, out);
            out.mark(cursor.at);
        }
        JsonScan::Incomplete => {
            out.incomplete = true;
            return;
        }
        JsonScan::Invalid(_) => {
            out.not_calls = true;
            return;
        }
    }
    cursor.skip_ws();
    if fenced {
        match cursor.expect("```") {
            Expect::Found => cursor.skip_ws(),
            Expect::Partial if !last => {
                out.incomplete = true;
                out.calls.clear();
                return;
            }
            _ => {}
        }
    }
    out.end = Some(cursor.at);
}

/// DeepSeek-R1's call blocks.
fn deepseek(cursor: &mut Cursor<'_>, out: &mut Extracted, last: bool) {
    if !matches!(cursor.expect(DEEPSEEK_CALLS_BEGIN), Expect::Found) {
        out.end = Some(0);
        return;
    }
    loop {
        cursor.skip_ws();
        if cursor.rest().is_empty() {
            if last && !out.calls.is_empty() {
                out.end = Some(cursor.at);
            } else {
                out.incomplete = true;
            }
            return;
        }
        match cursor.expect(DEEPSEEK_CALLS_END) {
            Expect::Found => {
                out.end = Some(cursor.at);
                return;
            }
            Expect::Partial if !last => {
                if !cursor.rest().is_empty() {
                    out.incomplete = true;
                }
                return;
            }
            _ => {}
        }
        if let Expect::Partial = cursor.expect(DEEPSEEK_CALL_BEGIN) {
            if !last {
                out.incomplete = true;
                return;
            }
        }
        let rest = cursor.rest();
        let header = format!("function{DEEPSEEK_SEP}");
        if !rest.starts_with(&header) {
            if header.starts_with(rest) && !last {
                out.incomplete = true;
            } else {
                out.invalid =
                    Some("a DeepSeek tool call does not begin with function<｜tool▁sep｜>".into());
            }
            return;
        }
        let after = &rest[header.len()..];
        let Some(newline) = after.find('\n') else {
            out.incomplete = true;
            return;
        };
        let name = after[..newline].trim().to_owned();
        cursor.at += header.len() + newline + 1;
        cursor.skip_ws();
        if let Expect::Partial = cursor.expect("```json") {
            if !last {
                out.incomplete = true;
                return;
            }
        }
        cursor.skip_ws();
        let arguments = match cursor.json() {
            JsonScan::Value(value, _) => value,
            JsonScan::Incomplete => {
                out.incomplete = true;
                return;
            }
            JsonScan::Invalid(error) => {
                out.invalid = Some(format!(
                    "a tool call's arguments are not valid JSON: {error}"
                ));
                return;
            }
        };
        cursor.skip_ws();
        match cursor.expect("```") {
            Expect::Found => {}
            Expect::Partial if !last => {
                out.incomplete = true;
                return;
            }
            _ => {}
        }
        cursor.skip_ws();
        match cursor.expect(DEEPSEEK_CALL_END) {
            Expect::Found => {}
            Expect::Partial if !last => {
                out.incomplete = true;
                return;
            }
            _ => {}
        }
        out.calls.push(RawCall {
            name,
            arguments,
            id: None,
            end: cursor.at,
        });
    }
}

/// Whether a JSON value is shaped like a call (a name and arguments) in
/// any of the families' spellings.
fn looks_like_call(value: &Value) -> bool {
    let Some(object) = value.as_object() else {
        return false;
    };
    if let Some(function) = object.get("function").filter(|f| f.is_object()) {
        return looks_like_call(function);
    }
    if object.contains_key("tool_call") || object.contains_key("tool_calls") {
        return true;
    }
    object.get("name").is_some_and(Value::is_string)
        && (object.contains_key("arguments") || object.contains_key("parameters"))
}

/// Append the calls in `value` (one call, an array of calls, or
/// `{"tool_call(s)": ...}`); `false` when it holds none.
fn calls_from_json(value: Value, out: &mut Extracted) -> bool {
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return false;
            }
            items.into_iter().all(|item| calls_from_json(item, out))
        }
        Value::Object(mut object) => {
            if let Some(inner) = object
                .remove("tool_calls")
                .or_else(|| object.remove("tool_call"))
            {
                return calls_from_json(inner, out);
            }
            if let Some(function @ Value::Object(_)) = object.remove("function") {
                let id = object
                    .remove("id")
                    .and_then(|id| id.as_str().map(str::to_owned));
                let before = out.calls.len();
                let found = calls_from_json(function, out);
                if let (true, Some(id)) = (found, id) {
                    if let Some(call) = out.calls.get_mut(before) {
                        call.id.get_or_insert(id);
                    }
                }
                return found;
            }
            let Some(Value::String(name)) = object.remove("name") else {
                return false;
            };
            let arguments = object
                .remove("arguments")
                .or_else(|| object.remove("parameters"))
                .unwrap_or_else(|| Value::Object(serde_json::Map::new()));
            // Some models write the arguments as a JSON string.
            let arguments = match arguments {
                Value::String(text) => serde_json::from_str(&text).unwrap_or(Value::String(text)),
                other => other,
            };
            let id = object
                .remove("id")
                .and_then(|id| id.as_str().map(str::to_owned));
            out.calls.push(RawCall {
                name,
                arguments,
                id,
                end: usize::MAX,
            });
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
