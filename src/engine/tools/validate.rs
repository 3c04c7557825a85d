//! Checking a call's arguments against its tool's JSON schema.
//!
//! Under a grammar the arguments match by construction; this is the check
//! for calls made without one (a grammar that could not follow the model,
//! formats parsed from free text), so that a half-right call is reported
//! as what it is and never as a call. It covers what llama.cpp's grammar
//! converter enforces (types, properties, `required`, `additionalProperties`,
//! `items`, `enum`, `const`, `anyOf`/`oneOf`/`allOf`, lengths, bounds, local
//! `$ref`s); keywords it does not know (`pattern`, `format`) pass.

use serde_json::{Map, Value};

/// How deep nested values and `$ref`s are followed before giving up.
const MAX_DEPTH: usize = 64;

/// `Ok` when `value` matches `schema`, or why not (naming where).
pub fn validate(value: &Value, schema: &Value) -> Result<(), String> {
    Validator { root: schema }.check(value, schema, "arguments", 0)
}

struct Validator<'a> {
    root: &'a Value,
}

impl<'a> Validator<'a> {
    fn check(
        &self,
        value: &Value,
        schema: &'a Value,
        at: &str,
        depth: usize,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err(format!("{at} is nested too deeply to check"));
        }
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(format!("{at} is not allowed")),
            Value::Object(schema) => schema,
            _ => return Ok(()),
        };
        if let Some(Value::String(reference)) = schema.get("$ref") {
            let target = self
                .resolve(reference)
                .ok_or_else(|| format!("{at}: the schema's $ref {reference} leads nowhere"))?;
            self.check(value, target, at, depth + 1)?;
        }
        if let Some(expected) = schema.get("const") {
            if value != expected {
                return Err(format!("{at} must be {expected}"));
            }
        }
        if let Some(Value::Array(allowed)) = schema.get("enum") {
            if !allowed.contains(value) {
                return Err(format!(
                    "{at} must be one of {}",
                    Value::Array(allowed.clone())
                ));
            }
        }
        if let Some(kind) = schema.get("type") {
            check_type(value, kind, at)?;
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(options)) = schema.get(key) {
                let mut reasons = Vec::new();
                for option in options {
                    match self.check(value, option, at, depth + 1) {
                        Ok(()) => {
                            reasons.clear();
                            break;
                        }
                        Err(reason) => reasons.push(reason),
                    }
                }
                if !reasons.is_empty() {
                    return Err(format!(
                        "{at} matches none of its {key}: {}",
                        reasons.join("; ")
                    ));
                }
            }
        }
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for part in all {
                self.check(value, part, at, depth + 1)?;
            }
        }
        match value {
            Value::Object(object) => self.check_object(object, schema, at, depth),
            Value::Array(items) => self.check_array(items, schema, at, depth),
            Value::String(text) => {
                let length = text.chars().count() as u64;
                bound(
                    schema,
                    "minLength",
                    at,
                    |min| length >= min,
                    "characters at least",
                )?;
                bound(
                    schema,
                    "maxLength",
                    at,
                    |max| length <= max,
                    "characters at most",
                )
            }
            Value::Number(number) => {
                let Some(number) = number.as_f64() else {
                    return Ok(());
                };
                let limit = |key: &str| schema.get(key).and_then(Value::as_f64);
                if limit("minimum").is_some_and(|min| number < min)
                    || limit("exclusiveMinimum").is_some_and(|min| number <= min)
                    || limit("maximum").is_some_and(|max| number > max)
                    || limit("exclusiveMaximum").is_some_and(|max| number >= max)
                {
                    return Err(format!("{at} is out of the schema's range"));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn check_object(
        &self,
        object: &Map<String, Value>,
        schema: &'a Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> Result<(), String> {
        let properties = schema.get("properties").and_then(Value::as_object);
        if let Some(Value::Array(required)) = schema.get("required") {
            for name in required.iter().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    return Err(format!("{at} is missing the required property '{name}'"));
                }
            }
        }
        for (name, value) in object {
            let place = format!("{at}.{name}");
            match properties.and_then(|properties| properties.get(name)) {
                Some(property) => self.check(value, property, &place, depth + 1)?,
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        return Err(format!(
                            "{at} has a property '{name}' its schema does not allow"
                        ))
                    }
                    Some(extra @ Value::Object(_)) => {
                        self.check(value, extra, &place, depth + 1)?
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }

    fn check_array(
        &self,
        items: &[Value],
        schema: &'a Map<String, Value>,
        at: &str,
        depth: usize,
    ) -> Result<(), String> {
        let count = items.len() as u64;
        bound(schema, "minItems", at, |min| count >= min, "items at least")?;
        bound(schema, "maxItems", at, |max| count <= max, "items at most")?;
        let prefix = schema.get("prefixItems").and_then(Value::as_array);
        for (index, item) in items.iter().enumerate() {
            let place = format!("{at}[{index}]");
            match prefix.and_then(|prefix| prefix.get(index)) {
                Some(item_schema) => self.check(item, item_schema, &place, depth + 1)?,
                None => {
                    if let Some(item_schema) = schema.get("items") {
                        self.check(item, item_schema, &place, depth + 1)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A `#/...` JSON pointer into the tool's own schema.
    fn resolve(&self, reference: &str) -> Option<&'a Value> {
        let pointer = reference.strip_prefix('#')?;
        if pointer.is_empty() {
            return Some(self.root);
        }
        self.root.pointer(pointer)
    }
}

fn bound(
    schema: &Map<String, Value>,
    key: &str,
    at: &str,
    holds: impl Fn(u64) -> bool,
    what: &str,
) -> Result<(), String> {
    match schema.get(key).and_then(Value::as_u64) {
        Some(limit) if !holds(limit) => Err(format!("{at} must have {what} {limit}")),
        _ => Ok(()),
    }
}

fn check_type(value: &Value, kind: &Value, at: &str) -> Result<(), String> {
    let matches = |name: &str| match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64()
                || value.is_u64()
                || value.as_f64().is_some_and(|number| number.fract() == 0.0)
        }
        _ => true,
    };
    let ok = match kind {
        Value::String(name) => matches(name),
        Value::Array(names) => names.iter().filter_map(Value::as_str).any(matches),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{at} must be of type {kind}, got {value}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn weather() -> Value {
        json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 2}
            },
            "required": ["city"],
            "additionalProperties": false,
            "$defs": {"tag": {"type": "string"}}
        })
    }

    #[test]
    fn matching_arguments_pass() {
        for value in [
            json!({"city": "Paris"}),
            json!({"city": "Paris", "unit": "celsius", "days": 3, "tags": ["a", "b"]}),
            json!({"city": "Paris", "days": 3.0}),
        ] {
            validate(&value, &weather()).unwrap_or_else(|error| panic!("{value}: {error}"));
        }
    }

    #[test]
    fn mismatches_say_where() {
        for (value, expected) in [
            (json!({}), "required property 'city'"),
            (json!({"city": 3}), "arguments.city must be of type"),
            (
                json!({"city": ""}),
                "arguments.city must have characters at least 1",
            ),
            (
                json!({"city": "x", "unit": "kelvin"}),
                "arguments.unit must be one of",
            ),
            (json!({"city": "x", "days": 9}), "out of the schema's range"),
            (json!({"city": "x", "days": 1.5}), "must be of type"),
            (
                json!({"city": "x", "tags": [1]}),
                "arguments.tags[0] must be of type",
            ),
            (
                json!({"city": "x", "tags": ["a", "b", "c"]}),
                "items at most 2",
            ),
            (json!({"city": "x", "extra": 1}), "does not allow"),
            (json!("Paris"), "arguments must be of type"),
        ] {
            let error = validate(&value, &weather()).expect_err(&value.to_string());
            assert!(error.contains(expected), "{value}: {error}");
        }
    }

    #[test]
    fn any_of_and_unknown_keywords() {
        let schema =
            json!({"anyOf": [{"type": "string", "pattern": "^[a-z]+$"}, {"type": "null"}]});
        assert!(
            validate(&json!("ABC"), &schema).is_ok(),
            "pattern is not checked"
        );
        assert!(validate(&Value::Null, &schema).is_ok());
        assert!(validate(&json!(1), &schema).is_err());
        assert!(validate(&json!({"a": 1}), &json!({})).is_ok());
        assert!(validate(&json!(1), &json!({"$ref": "#/nowhere"})).is_err());
    }
}
