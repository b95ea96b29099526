//! Key-order-preserving embedding of JSON fragments.
//!
//! `serde_json::Value` (without the `preserve_order` feature, which would add
//! dependencies) sorts object keys. Key order in JSON Schemas steers the
//! order in which models generate fields, and clients expect tool arguments
//! as the model wrote them, so schemas and tool inputs are carried through
//! verbatim: the output tree holds a placeholder string for each fragment,
//! and after serialization each placeholder is replaced with the fragment's
//! original text.
//!
//! Placeholders contain a NUL character, so they cannot collide with
//! anything but a client string crafted to look exactly like one; if the
//! tree holds any placeholder-like string that is not exactly one of ours
//! (or one of ours twice), rendering falls back to the parsed values —
//! correct JSON, sorted keys.

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

const MARK: &str = "\u{0}xlate-raw:";
const NEEDLE: &str = "\"\\u0000xlate-raw:";
const NEEDLE_END: &str = "\\u0000\"";

#[derive(Debug, Default)]
pub(crate) struct RawSlots {
    items: Vec<(String, Value)>,
}

impl RawSlots {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A placeholder standing for `raw` (valid JSON text whose parsed form
    /// is `parsed`). Insert it into the output tree exactly once.
    pub(crate) fn slot(&mut self, raw: &str, parsed: Value) -> Value {
        let n = self.items.len();
        self.items.push((raw.trim().to_string(), parsed));
        Value::String(format!("{MARK}{n}\u{0}"))
    }

    fn index_of(&self, s: &str) -> Option<usize> {
        let n = s.strip_prefix(MARK)?.strip_suffix('\u{0}')?;
        let n: usize = n.parse().ok()?;
        (n < self.items.len() && format!("{MARK}{n}\u{0}") == s).then_some(n)
    }

    fn scan(&self, v: &Value, seen: &mut [usize], ok: &mut bool) {
        match v {
            Value::String(s) if s.contains(MARK) => match self.index_of(s) {
                Some(n) => seen[n] += 1,
                None => *ok = false,
            },
            Value::Array(a) => a.iter().for_each(|x| self.scan(x, seen, ok)),
            Value::Object(o) => {
                for (k, x) in o {
                    if k.contains(MARK) {
                        *ok = false;
                    }
                    self.scan(x, seen, ok);
                }
            }
            _ => {}
        }
    }

    fn substitute(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(n) = self.index_of(s) {
                    *v = self.items[n].1.clone();
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.substitute(x)),
            Value::Object(o) => o.values_mut().for_each(|x| self.substitute(x)),
            _ => {}
        }
    }

    /// Serialize `v`, splicing in the raw fragments.
    pub(crate) fn render(&self, mut v: Value) -> Vec<u8> {
        if self.items.is_empty() {
            return serde_json::to_vec(&v).unwrap_or_default();
        }
        let mut seen = vec![0usize; self.items.len()];
        let mut ok = true;
        self.scan(&v, &mut seen, &mut ok);
        if ok && seen.iter().all(|&c| c <= 1) {
            if let Some(out) = self.splice(&serde_json::to_string(&v).unwrap_or_default()) {
                return out.into_bytes();
            }
        }
        self.substitute(&mut v);
        serde_json::to_vec(&v).unwrap_or_default()
    }

    fn splice(&self, s: &str) -> Option<String> {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(p) = rest.find(NEEDLE) {
            out.push_str(&rest[..p]);
            let after = &rest[p + NEEDLE.len()..];
            let end = after.find(NEEDLE_END)?;
            let n: usize = after[..end].parse().ok()?;
            out.push_str(&self.items.get(n)?.0);
            rest = &after[end + NEEDLE_END.len()..];
        }
        out.push_str(rest);
        Some(out)
    }
}

/// Side-parse helpers: the raw parts of request/response bodies whose key
/// order matters. These structs have no `flatten` so that `RawValue` works.
#[derive(Deserialize, Default)]
pub(crate) struct RawOpenAiRequest {
    #[serde(default)]
    pub tools: Option<Vec<RawOpenAiTool>>,
    #[serde(default)]
    pub response_format: Option<RawResponseFormat>,
}

#[derive(Deserialize, Default)]
pub(crate) struct RawOpenAiTool {
    #[serde(default)]
    pub function: Option<RawFunction>,
}

#[derive(Deserialize, Default)]
pub(crate) struct RawFunction {
    #[serde(default)]
    pub parameters: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default)]
pub(crate) struct RawResponseFormat {
    #[serde(default)]
    pub json_schema: Option<RawJsonSchema>,
}

#[derive(Deserialize, Default)]
pub(crate) struct RawJsonSchema {
    #[serde(default)]
    pub schema: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default)]
pub(crate) struct RawAnthropicRequest {
    #[serde(default)]
    pub tools: Option<Vec<RawAnthropicTool>>,
    #[serde(default)]
    pub messages: Option<Vec<RawAnthropicMessage>>,
}

#[derive(Deserialize, Default)]
pub(crate) struct RawAnthropicTool {
    #[serde(default)]
    pub input_schema: Option<Box<RawValue>>,
}

#[derive(Deserialize, Default)]
pub(crate) struct RawAnthropicMessage {
    #[serde(default)]
    pub content: Option<Box<RawValue>>,
}

impl RawAnthropicMessage {
    /// Raw `input` of each content block (None for blocks without one, or
    /// when the content is a string).
    pub(crate) fn block_inputs(&self) -> Vec<Option<Box<RawValue>>> {
        self.content
            .as_ref()
            .and_then(|c| serde_json::from_str::<Vec<RawBlock>>(c.get()).ok())
            .map(|blocks| blocks.into_iter().map(|b| b.input).collect())
            .unwrap_or_default()
    }
}

/// `{"content": [...]}` of an Anthropic response.
#[derive(Deserialize, Default)]
pub(crate) struct RawAnthropicResponse {
    #[serde(default)]
    pub content: Option<Vec<RawBlock>>,
}

#[derive(Deserialize, Default)]
pub(crate) struct RawBlock {
    #[serde(default)]
    pub input: Option<Box<RawValue>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn render_splices_fragments_in_their_original_key_order() {
        let mut slots = RawSlots::new();
        let raw = r#"{"z": 1, "a": {"y": 2, "b": 3}}"#;
        let p = slots.slot(raw, serde_json::from_str(raw).unwrap());
        let out = slots.render(json!({"schema": p, "k": "v"}));
        assert_eq!(String::from_utf8(out).unwrap(), r#"{"k":"v","schema":{"z": 1, "a": {"y": 2, "b": 3}}}"#);
    }

    #[test]
    fn render_falls_back_to_parsed_values_on_lookalike_strings() {
        let mut slots = RawSlots::new();
        let p = slots.slot(r#"{"z":1,"a":2}"#, json!({"z": 1, "a": 2}));
        let lookalike = Value::String(format!("{MARK}0\u{0}"));
        let out = slots.render(json!({"a": p, "b": lookalike}));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"a": {"a": 2, "z": 1}, "b": {"a": 2, "z": 1}}));
        let mut slots = RawSlots::new();
        let p = slots.slot("[1]", json!([1]));
        let out = slots.render(json!({"a": p, "b": format!("x{MARK}9")}));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["a"], json!([1]));
        assert_eq!(v["b"], json!(format!("x{MARK}9")));
    }
}
