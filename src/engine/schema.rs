//! Bounds on a JSON schema for structured output, checked before llama.cpp's
//! converter turns it into a grammar: the one check `olm run --schema`,
//! `--format json` and both server APIs share (T-D6, T-G3).
//!
//! Owns: what a schema may contain. Pure (serde_json only), so the server
//! can refuse a schema with a 400 before it reaches a model's worker, and
//! the worker checks again before the converter runs.

use std::collections::HashSet;

use serde_json::Value;

use super::EngineError;

/// Text from the schema as messages show it: control characters and quotes escaped.
fn escaped(text: &str) -> String {
    text.chars().flat_map(char::escape_debug).collect()
}

/// llama.cpp's conversion is recursive C++: its `std::regex` over a property name
/// overflows a 2 MiB thread stack near 10,000 characters, and it follows
/// `$ref`s, nesting and regex groups one stack frame each. Its grammar
/// parser then copies each repetition `{m,n}` out in full (and refuses
/// more than 2000), and it drops regex patterns nested over 100 groups
/// without a word. Well inside all of that, everything else is a clear 400.
const MAX_SCHEMA_BYTES: usize = 256 << 10;
const MAX_SCHEMA_DEPTH: usize = 64;
/// Property names, `$defs` names and every other key of the schema.
const MAX_SCHEMA_KEY_BYTES: usize = 256;
const MAX_REF_BYTES: usize = 1024;
const MAX_PATTERN_BYTES: usize = 4096;
const MAX_PATTERN_GROUPS: usize = 32;
/// Largest `{m,n}` in a pattern and largest `minLength` / `minItems`.
const MAX_REPETITION: u64 = 1000;
/// Values looked at, `$ref` targets included: a bound on the check itself.
const MAX_SCHEMA_VISITS: usize = 1_000_000;
/// The converter's time grows with the square of an object's optional
/// properties and more (400 of them take 80 ms, 3000 take 40 s, on a server
/// thread): the sum of those squares over all objects stays under this.
const MAX_OPTIONAL_PROPERTIES_SQUARED: usize = 250_000;
/// Items the grammar writes out for the whole schema: every `minLength`,
/// `maxLength`, `minItems` and `maxItems` up to 2000 (llama.cpp's grammar
/// parser nests one rule per repetition; above 2000 it leaves the upper
/// bound open) and every pattern's written-out size, summed. Each item
/// took about 0.5 KB and 3 us: 4,000 strings of `maxLength` 1999 took 2.3 GB
/// and 20 s, and held a preparing thread meanwhile.
const MAX_WRITTEN_OUT: u64 = 200_000;
/// The grammar parser's bound past which a repetition's maximum is dropped.
const GRAMMAR_REPETITION_THRESHOLD: u64 = 2000;
/// Choices in one `enum`, `anyOf` or `oneOf`, and in the whole schema. Each
/// live choice is a grammar stack checked against the whole vocabulary at
/// every step: an enum of 20,000 strings made every request on the model
/// wait 30 s.
const MAX_CHOICES: usize = 1000;
const MAX_CHOICES_IN_SCHEMA: usize = 2000;
/// Bytes of all `enum` and `const` values together: values that share long
/// beginnings keep their stacks alive for all of it (6,000 values sharing 30
/// characters took 56 s).
const MAX_CHOICE_BYTES: usize = 16 << 10;
/// Largest magnitude of a numeric bound: exactly representable, and far
/// from the `int64_t` llama.cpp casts an integer bound to.
const MAX_BOUND: f64 = 9_007_199_254_740_992.0;

/// A schema within the bounds above, with every `$ref` pointing into itself
/// and none leading back to where it started (400 otherwise).
pub fn check_schema(text: &str) -> Result<(), EngineError> {
    if text.len() > MAX_SCHEMA_BYTES {
        return Err(schema_error(format!(
            "it is {} bytes; the limit is {MAX_SCHEMA_BYTES}",
            text.len()
        )));
    }
    let root: Value =
        serde_json::from_str(text).map_err(|error| schema_error(error.to_string()))?;
    SchemaCheck {
        root: &root,
        visits: 0,
        optional_squared: 0,
        written_out: 0,
        choices: 0,
        choice_bytes: 0,
        following: Vec::new(),
        followed: HashSet::new(),
    }
    .visit(&root, 0)
}

fn schema_error(reason: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidSchema(reason.to_string())
}

/// One walk over a schema, into `$ref` targets too (each once).
struct SchemaCheck<'a> {
    root: &'a Value,
    visits: usize,
    /// Sum of the squares of each object's optional property count.
    optional_squared: usize,
    /// Items the grammar writes out (see [`MAX_WRITTEN_OUT`]).
    written_out: u64,
    /// Choices of every `enum`, `anyOf` and `oneOf`, and bytes of every
    /// `enum` and `const` value.
    choices: usize,
    choice_bytes: usize,
    /// `$ref` targets being walked now, by address: meeting one again is a cycle.
    following: Vec<*const Value>,
    /// `$ref` targets walked to the end.
    followed: HashSet<*const Value>,
}

impl<'a> SchemaCheck<'a> {
    fn visit(&mut self, value: &'a Value, depth: usize) -> Result<(), EngineError> {
        self.visits += 1;
        if self.visits > MAX_SCHEMA_VISITS {
            return Err(schema_error("it is too large to turn into a grammar"));
        }
        if depth > MAX_SCHEMA_DEPTH {
            return Err(schema_error(format!(
                "it nests deeper than {MAX_SCHEMA_DEPTH} levels (counting $ref)"
            )));
        }
        match value {
            Value::Array(items) => items
                .iter()
                .try_for_each(|item| self.visit(item, depth + 1)),
            Value::Object(fields) => {
                self.count_optional_properties(fields)?;
                check_bounds(fields)?;
                for (key, field) in fields {
                    if key.len() > MAX_SCHEMA_KEY_BYTES {
                        return Err(schema_error(format!(
                            "a key is {} bytes; the limit is {MAX_SCHEMA_KEY_BYTES}",
                            key.len()
                        )));
                    }
                    match (key.as_str(), field) {
                        ("$ref", Value::String(reference)) => self.follow(reference, depth)?,
                        ("pattern", Value::String(pattern)) => {
                            let size = check_pattern(pattern)?;
                            self.write_out(size)?;
                        }
                        ("minLength" | "minItems", Value::Number(count))
                            if count.as_u64().is_none_or(|count| count > MAX_REPETITION) =>
                        {
                            return Err(schema_error(format!(
                                "{key} must be an integer from 0 to {MAX_REPETITION}, not {count}"
                            )));
                        }
                        ("maxLength" | "maxItems", Value::Number(count))
                            if count.as_u64().is_none_or(|count| count > i32::MAX as u64) =>
                        {
                            return Err(schema_error(format!(
                                "{key} must be an integer from 0 to {}, not {count}",
                                i32::MAX
                            )));
                        }
                        (
                            "minLength" | "minItems" | "maxLength" | "maxItems",
                            Value::Number(count),
                        ) => {
                            let count = count.as_u64().unwrap_or(0);
                            if count <= GRAMMAR_REPETITION_THRESHOLD {
                                self.write_out(count)?;
                            }
                        }
                        ("minLength" | "maxLength" | "minItems" | "maxItems", other) => {
                            return Err(schema_error(format!(
                                "{key} must be a whole number, not {}",
                                escaped(&other.to_string())
                            )));
                        }
                        ("enum" | "anyOf" | "oneOf", Value::Array(choices)) => {
                            self.count_choices(key, choices)?;
                        }
                        ("const", value) => self.count_choice_bytes(value)?,
                        _ => {}
                    }
                    self.visit(field, depth + 1)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn write_out(&mut self, items: u64) -> Result<(), EngineError> {
        self.written_out = self.written_out.saturating_add(items);
        if self.written_out > MAX_WRITTEN_OUT {
            return Err(schema_error(format!(
                "its lengths, item counts and patterns write out more than {MAX_WRITTEN_OUT} \
                 grammar items together; lower some maxLength or maxItems"
            )));
        }
        Ok(())
    }

    fn count_choices(&mut self, key: &str, choices: &[Value]) -> Result<(), EngineError> {
        if choices.len() > MAX_CHOICES {
            return Err(schema_error(format!(
                "an {key} has {} choices; the limit is {MAX_CHOICES}",
                choices.len()
            )));
        }
        self.choices += choices.len();
        if self.choices > MAX_CHOICES_IN_SCHEMA {
            return Err(schema_error(format!(
                "its enum, anyOf and oneOf lists have more than {MAX_CHOICES_IN_SCHEMA} \
                 choices together"
            )));
        }
        if key == "enum" {
            for choice in choices {
                self.count_choice_bytes(choice)?;
            }
        }
        Ok(())
    }

    fn count_choice_bytes(&mut self, value: &Value) -> Result<(), EngineError> {
        self.choice_bytes += value.to_string().len();
        if self.choice_bytes > MAX_CHOICE_BYTES {
            return Err(schema_error(format!(
                "its enum and const values take more than {MAX_CHOICE_BYTES} bytes together"
            )));
        }
        Ok(())
    }

    fn count_optional_properties(
        &mut self,
        fields: &serde_json::Map<String, Value>,
    ) -> Result<(), EngineError> {
        let Some(Value::Object(properties)) = fields.get("properties") else {
            return Ok(());
        };
        // Each name once: a repeated one must not hide an optional property.
        let required: HashSet<&str> = match fields.get("required") {
            Some(Value::Array(names)) => names
                .iter()
                .filter_map(Value::as_str)
                .filter(|name| properties.contains_key(*name))
                .collect(),
            _ => HashSet::new(),
        };
        let optional = properties.len() - required.len();
        self.optional_squared = self.optional_squared.saturating_add(optional * optional);
        if self.optional_squared > MAX_OPTIONAL_PROPERTIES_SQUARED {
            return Err(schema_error(
                "it has too many optional properties to turn into a grammar in good time; \
                 list more of them in `required`",
            ));
        }
        Ok(())
    }

    /// Walk a `$ref`'s target: only `#...` (a JSON pointer into this schema).
    fn follow(&mut self, reference: &str, depth: usize) -> Result<(), EngineError> {
        if reference.len() > MAX_REF_BYTES {
            return Err(schema_error(format!(
                "a $ref is {} bytes; the limit is {MAX_REF_BYTES}",
                reference.len()
            )));
        }
        let shown = escaped(reference);
        let Some(pointer) = reference.strip_prefix('#') else {
            return Err(schema_error(format!(
                "$ref '{shown}' points outside the schema; only '#/...' is supported"
            )));
        };
        let Some(target) = self.root.pointer(pointer) else {
            return Err(schema_error(format!("$ref '{shown}' points to nothing")));
        };
        let address: *const Value = target;
        if self.following.contains(&address) {
            return Err(schema_error(format!(
                "$ref '{shown}' is recursive; recursive schemas are not supported"
            )));
        }
        if self.followed.contains(&address) {
            return Ok(());
        }
        self.following.push(address);
        self.visit(target, depth + 1)?;
        self.following.pop();
        self.followed.insert(address);
        Ok(())
    }
}

/// Numeric bounds llama.cpp can hold (it casts an integer's to `int64_t`),
/// and length, item and value ranges that something satisfies: a grammar
/// for an empty range would have let anything through or nothing.
fn check_bounds(fields: &serde_json::Map<String, Value>) -> Result<(), EngineError> {
    let number = |key: &str| -> Result<Option<f64>, EngineError> {
        match fields.get(key) {
            None => Ok(None),
            Some(Value::Number(value)) => match value.as_f64() {
                Some(value) if value.abs() <= MAX_BOUND => Ok(Some(value)),
                _ => Err(schema_error(format!(
                    "{key} must be a number from -{MAX_BOUND} to {MAX_BOUND}, not {value}"
                ))),
            },
            Some(other) => Err(schema_error(format!("{key} must be a number, not {other}"))),
        }
    };
    let is_integer = fields.get("type").and_then(Value::as_str) == Some("integer");
    let lower = match (number("minimum")?, number("exclusiveMinimum")?) {
        (Some(minimum), _) if is_integer => Some(minimum.ceil()),
        (None, Some(exclusive)) if is_integer => Some(exclusive.floor() + 1.0),
        (minimum, exclusive) => minimum.or(exclusive),
    };
    let upper = match (number("maximum")?, number("exclusiveMaximum")?) {
        (Some(maximum), _) if is_integer => Some(maximum.floor()),
        (None, Some(exclusive)) if is_integer => Some(exclusive.ceil() - 1.0),
        (maximum, exclusive) => maximum.or(exclusive),
    };
    if let (Some(lower), Some(upper)) = (lower, upper) {
        if lower > upper {
            return Err(schema_error(format!(
                "no value lies between its minimum ({lower}) and maximum ({upper})"
            )));
        }
    }
    for (least, most) in [("minLength", "maxLength"), ("minItems", "maxItems")] {
        let count = |key| fields.get(key).and_then(Value::as_u64);
        if let (Some(least_count), Some(most_count)) = (count(least), count(most)) {
            if least_count > most_count {
                return Err(schema_error(format!(
                    "its {least} ({least_count}) is above its {most} ({most_count})"
                )));
            }
        }
    }
    Ok(())
}

/// A regex `pattern` llama.cpp can turn into a grammar without harm: not too
/// long, no control characters, and within the bounds of [`PatternScan`].
/// Returns its written-out size.
fn check_pattern(pattern: &str) -> Result<u64, EngineError> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(schema_error(format!(
            "a pattern is {} bytes; the limit is {MAX_PATTERN_BYTES}",
            pattern.len()
        )));
    }
    // llama.cpp prints a pattern it cannot enforce to stderr as it is: a
    // line break in one would forge a log line (T-D7). Regexes spell them `\n`.
    if pattern.chars().any(char::is_control) {
        return Err(schema_error(
            "a pattern contains a control character; write it as an escape such as \\n",
        ));
    }
    PatternScan::default().scan(pattern)
}

/// Most alternatives (`|`) in one pattern. Each live alternative is a
/// grammar stack that llama.cpp checks every vocabulary entry against when
/// it filters a step: 512 nested alternatives in a 2 KB pattern made each
/// generated token take seconds. An `enum` is the way to list many values.
const MAX_PATTERN_ALTERNATIVES: usize = 64;
/// Deepest nesting of quantified groups (`((a*)+)?`): every level doubles
/// the ways to match the same text, and with them the grammar's stacks.
const MAX_QUANTIFIER_NESTING: usize = 4;
/// Largest pattern once every repetition is written out, as llama.cpp's
/// converter writes `(ab){3}` as `ab ab ab`: counts multiply when nested
/// (`(a{1000}){1000}` is a million copies).
const MAX_PATTERN_EXPANSION: u64 = 20_000;

/// One pass over a regex, measuring what the grammar made of it costs.
#[derive(Default)]
struct PatternScan {
    /// Open groups, innermost last; the pattern itself is the frame below.
    frames: Vec<Frame>,
    top: Frame,
    alternatives: usize,
}

/// What is known of one group so far.
#[derive(Default, Clone, Copy)]
struct Frame {
    /// Expanded size of the group's content (all alternatives summed).
    size: u64,
    /// Expanded size and quantifier nesting of the last atom, which a
    /// quantifier that follows applies to.
    last_size: u64,
    last_nesting: usize,
    /// Deepest quantifier nesting inside the group.
    nesting: usize,
}

impl PatternScan {
    /// The pattern's written-out size, or why it is refused.
    fn scan(mut self, pattern: &str) -> Result<u64, EngineError> {
        let mut chars = pattern.chars().peekable();
        while let Some(char) = chars.next() {
            match char {
                '\\' => {
                    chars.next();
                    self.atom(1, 0);
                }
                '[' => {
                    skip_class(&mut chars);
                    self.atom(1, 0);
                }
                '(' => self.open()?,
                ')' => self.close(),
                '|' => {
                    self.alternatives += 1;
                    if self.alternatives > MAX_PATTERN_ALTERNATIVES {
                        return Err(schema_error(format!(
                            "a pattern has more than {MAX_PATTERN_ALTERNATIVES} alternatives; \
                             list many values with an enum instead"
                        )));
                    }
                    self.current().last_size = 0;
                }
                '*' | '?' => self.quantify(1)?,
                '+' => self.quantify(2)?,
                '{' => match repetition(&mut chars)? {
                    Some(count) => self.quantify(count)?,
                    None => self.atom(1, 0),
                },
                '^' | '$' => {}
                _ => self.atom(1, 0),
            }
            // A lazy or possessive quantifier's second character.
            if matches!(char, '*' | '+' | '?' | '}') && matches!(chars.peek(), Some('?' | '+')) {
                chars.next();
            }
        }
        Ok(self.top.size)
    }

    fn current(&mut self) -> &mut Frame {
        self.frames.last_mut().unwrap_or(&mut self.top)
    }

    fn atom(&mut self, size: u64, nesting: usize) {
        let frame = self.current();
        frame.size = frame.size.saturating_add(size);
        frame.last_size = size;
        frame.last_nesting = nesting;
        frame.nesting = frame.nesting.max(nesting);
    }

    fn open(&mut self) -> Result<(), EngineError> {
        if self.frames.len() >= MAX_PATTERN_GROUPS {
            return Err(schema_error(format!(
                "a pattern nests more than {MAX_PATTERN_GROUPS} groups"
            )));
        }
        self.frames.push(Frame::default());
        Ok(())
    }

    fn close(&mut self) {
        if let Some(group) = self.frames.pop() {
            self.atom(group.size.max(1), group.nesting);
        }
    }

    /// A quantifier on the last atom, written out `copies` times.
    fn quantify(&mut self, copies: u64) -> Result<(), EngineError> {
        let frame = self.current();
        let nesting = frame.last_nesting + 1;
        let added = frame.last_size.saturating_mul(copies.saturating_sub(1));
        frame.size = frame.size.saturating_add(added);
        frame.last_nesting = nesting;
        frame.nesting = frame.nesting.max(nesting);
        if nesting > MAX_QUANTIFIER_NESTING {
            return Err(schema_error(format!(
                "a pattern nests quantified groups more than {MAX_QUANTIFIER_NESTING} deep"
            )));
        }
        if frame.size > MAX_PATTERN_EXPANSION
            || self
                .frames
                .iter()
                .chain([&self.top])
                .any(|frame| frame.size > MAX_PATTERN_EXPANSION)
        {
            return Err(schema_error(format!(
                "a pattern's repetitions write out more than {MAX_PATTERN_EXPANSION} items"
            )));
        }
        Ok(())
    }
}

/// Past a character class `[...]` (its first `]` may be literal).
fn skip_class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    let mut first = true;
    while let Some(char) = chars.next() {
        match char {
            '\\' => {
                chars.next();
            }
            ']' if !first => return,
            _ => {}
        }
        first = false;
    }
}

/// A `{m}`, `{m,}` or `{m,n}` after its `{`: how many copies the converter
/// writes (`None` when the braces are a literal). Counts over
/// [`MAX_REPETITION`] are refused.
fn repetition(
    chars: &mut std::iter::Peekable<std::str::Chars<'_>>,
) -> Result<Option<u64>, EngineError> {
    let mut counts = String::new();
    while let Some(&next) = chars.peek() {
        if !(next.is_ascii_digit() || next == ',' || next == ' ') {
            break;
        }
        counts.push(next);
        chars.next();
    }
    if chars.peek() != Some(&'}') {
        return Ok(None);
    }
    chars.next();
    let mut largest = 0;
    for count in counts
        .split(',')
        .map(str::trim)
        .filter(|count| !count.is_empty())
    {
        match count.parse::<u64>() {
            Ok(count) if count <= MAX_REPETITION => largest = largest.max(count),
            _ => {
                return Err(schema_error(format!(
                    "a pattern repeats {{{counts}}} times; the limit is {MAX_REPETITION}"
                )))
            }
        }
    }
    // `{m,}` is m copies and a star: one more.
    Ok(Some(if counts.trim_end().ends_with(',') {
        largest + 1
    } else {
        largest.max(1)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema_refused(schema: &str) -> String {
        let error = check_schema(schema).expect_err(&schema[..schema.len().min(200)]);
        assert!(matches!(error, EngineError::InvalidSchema(_)), "{error}");
        error.to_string()
    }

    fn nested(levels: usize, leaf: &str) -> String {
        let mut schema = leaf.to_owned();
        for _ in 0..levels {
            schema = format!(r#"{{"type":"array","items":{schema}}}"#);
        }
        schema
    }

    /// T-D6: each refused with a 400 before llama.cpp sees it.
    #[test]
    fn hostile_schemas_are_refused() {
        let string = r#"{"type":"string"}"#;
        let pattern = |pattern: &str| json_string_schema("pattern", pattern);
        let cases = [
            (nested(70, string), "nests deeper"),
            ("[".repeat(100) + &"]".repeat(100), "nests deeper"),
            (r##"{"$ref":"#"}"##.into(), "recursive"),
            (
                r##"{"type":"object","properties":{"child":{"$ref":"#"}}}"##.into(),
                "recursive",
            ),
            (
                r##"{"$defs":{"a":{"$ref":"#/$defs/b"},"b":{"type":"array","items":{"$ref":"#/$defs/a"}}},"$ref":"#/$defs/a"}"##.into(),
                "recursive",
            ),
            (r#"{"$ref":"https://example.com/schema.json"}"#.into(), "outside"),
            (r#"{"$ref":"/etc/passwd"}"#.into(), "outside"),
            (r##"{"$ref":"#/$defs/missing"}"##.into(), "points to nothing"),
            (
                // Crashes llama.cpp's converter (std::regex recursion).
                format!(r#"{{"type":"object","properties":{{"{}":{string}}}}}"#, " ".repeat(20_000)),
                "key is",
            ),
            (pattern(&format!("^{}a{}$", "(".repeat(40), ")".repeat(40))), "groups"),
            (pattern("^a{1000000}$"), "repeats"),
            (pattern("^(ab){5,2001}$"), "repeats"),
            (pattern("^a{99999999999999999999999}$"), "repeats"),
            (pattern(&format!("^{}$", "a".repeat(5000))), "bytes"),
            (pattern(&format!("^({})$", (0..66).map(|i| format!("w{i}")).collect::<Vec<_>>().join("|"))), "alternatives"),
            (pattern(&format!("^{}$", nested_alternation(9))), "alternatives"),
            (pattern(&format!("^{}a*{}$", "(".repeat(5), ")*".repeat(5))), "quantified groups"),
            (pattern("^((a{1000}){100})$"), "write out"),
            (pattern(&"(ab){999}".repeat(30)), "write out"),
            (pattern("^a\r\nFAKE LOG LINE$"), "control character"),
            (r#"{"type":"string","minLength":1000000000}"#.into(), "minLength"),
            (r#"{"type":"array","minItems":-1}"#.into(), "minItems"),
            (format!(r#"{{"enum":["{}"]}}"#, "x".repeat(300 << 10)), "bytes"),
            ("{not json".into(), "invalid JSON schema"),
            (object_schema(1000, &["p1"; 1000]), "optional properties"),
            (
                format!(r#"{{"anyOf":[{}]}}"#, vec![object_schema(100, &[]); 26].join(",")),
                "optional properties",
            ),
            (many_bounded_strings(4000, 1999), "write out more than"),
            (
                serde_json::json!({"enum": (0..1001).collect::<Vec<_>>()}).to_string(),
                "choices; the limit",
            ),
            (
                serde_json::json!({"enum": (0..600).map(|i| format!("{}{i}", "x".repeat(30))).collect::<Vec<_>>()})
                    .to_string(),
                "bytes together",
            ),
            (r#"{"type":"integer","minimum":1e300}"#.into(), "must be a number from"),
            (
                r#"{"type":"integer","minimum":-5,"maximum":-9223372036854775808}"#.into(),
                "must be a number from",
            ),
            (r#"{"type":"integer","minimum":100,"maximum":5}"#.into(), "no value lies"),
            (
                r#"{"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":1}"#.into(),
                "no value lies",
            ),
            (r#"{"type":"array","maxItems":4294967299}"#.into(), "maxItems must be"),
            (r#"{"type":"string","minLength":5,"maxLength":3}"#.into(), "above its maxLength"),
            (r#"{"type":"string","minLength":"5"}"#.into(), "minLength must be a whole number"),
        ];
        for (schema, why) in cases {
            let message = schema_refused(&schema);
            assert!(message.contains(why), "{why:?} not in {message:?}");
        }
    }

    /// A balanced tree of alternations `depth` deep: 2^depth leaves.
    fn nested_alternation(depth: u32) -> String {
        if depth == 0 {
            return "a".into();
        }
        let inner = nested_alternation(depth - 1);
        format!("({inner}|{})", inner.replace('a', "b"))
    }

    /// An object of `count` string properties `p0`, `p1`...
    fn object_schema(count: usize, required: &[&str]) -> String {
        let properties: serde_json::Map<String, Value> = (0..count)
            .map(|i| (format!("p{i}"), serde_json::json!({"type": "string"})))
            .collect();
        serde_json::json!({"type": "object", "properties": properties, "required": required})
            .to_string()
    }

    /// An object of `count` required strings of at most `max_length` characters.
    fn many_bounded_strings(count: usize, max_length: u32) -> String {
        let properties: serde_json::Map<String, Value> = (0..count)
            .map(|i| {
                (
                    format!("p{i}"),
                    serde_json::json!({"type": "string", "maxLength": max_length}),
                )
            })
            .collect();
        let names: Vec<String> = properties.keys().cloned().collect();
        serde_json::json!({"type": "object", "properties": properties, "required": names})
            .to_string()
    }

    fn json_string_schema(keyword: &str, value: &str) -> String {
        serde_json::json!({"type": "string", keyword: value}).to_string()
    }

    #[test]
    fn ordinary_schemas_pass() {
        let schemas = [
            nested(20, r#"{"type":"string"}"#),
            // One definition used twice is not a cycle.
            r##"{"$defs":{"n":{"type":"integer"}},"type":"object","properties":{"a":{"$ref":"#/$defs/n"},"b":{"type":"array","items":{"$ref":"#/$defs/n"}}}}"##.into(),
            json_string_schema("pattern", r"^[0-9]{3}-[a-z]{2,8}(\.[a-z]+)*$"),
            json_string_schema("pattern", "^[{(]{1000}$"),
            json_string_schema("pattern", "^(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)-[0-9]{2}$"),
            json_string_schema("pattern", r"^(\+[0-9]{1,3} )?([0-9]{3}-){2}[0-9]{4}$"),
            json_string_schema("pattern", "^[a-z]+(-[a-z]+)*(\\.[a-z]{2,})+$"),
            r#"{"type":"string","minLength":3,"maxLength":100000}"#.into(),
            many_bounded_strings(40, 1000),
            serde_json::json!({"enum": (0..600).map(|i| format!("Zone/{i}")).collect::<Vec<_>>()}).to_string(),
            r#"{"type":"integer","minimum":0,"maximum":100}"#.into(),
            r#"{"type":"integer","exclusiveMinimum":0,"exclusiveMaximum":2}"#.into(),
            r#"{"type":"number","minimum":0.5,"maximum":0.7}"#.into(),
            r#"{"type":"array","minItems":2,"maxItems":2}"#.into(),
            object_schema(400, &[]),
            {
                let names: Vec<String> = (0..2000).map(|i| format!("p{i}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                object_schema(2000, &names)
            },
        ];
        for schema in schemas {
            check_schema(&schema).unwrap_or_else(|error| panic!("{schema}: {error}"));
        }
    }
}
