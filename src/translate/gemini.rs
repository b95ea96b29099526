//! What the Gemini translators ([`super::openai_gemini`], [`super::anthropic_gemini`]) share: the
//! response wire types, the conversion of JSON Schema into the OpenAPI subset Gemini's `Schema`
//! accepts, finish reasons, tool-call ids (which carry thought signatures), media parts, thinking
//! budgets and Google's error shape.
//!
//! The Gemini API (`generativelanguage.googleapis.com`) and Vertex AI (`aiplatform.googleapis.com`)
//! speak the same `generateContent` format, so one translator pair serves both providers.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::TranslateError;
use crate::schema::null_as_default;

// ---------------------------------------------------------------------------
// Order-preserving JSON

/// A JSON value whose objects keep their keys in document order (`serde_json::Value` sorts them).
/// Client schemas are read in this form so that a response schema's property order reaches Gemini
/// as `propertyOrdering`, and function-call arguments go back to clients in the model's order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ordered {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Ordered>),
    /// Keys in document order; a repeated key keeps its first position and its last value.
    Object(Vec<(String, Ordered)>),
}

impl Ordered {
    /// The value of `key`, for an object.
    pub(crate) fn get(&self, key: &str) -> Option<&Ordered> {
        match self {
            Ordered::Object(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Ordered::String(s) => Some(s),
            _ => None,
        }
    }

    /// Parses JSON text (`None` when it is not JSON).
    pub(crate) fn parse(text: &str) -> Option<Ordered> {
        serde_json::from_str(text).ok()
    }

    /// The same value with sorted keys (for values that arrived as `serde_json::Value`).
    pub(crate) fn from_value(v: &Value) -> Ordered {
        match v {
            Value::Null => Ordered::Null,
            Value::Bool(b) => Ordered::Bool(*b),
            Value::Number(n) => Ordered::Number(n.clone()),
            Value::String(s) => Ordered::String(s.clone()),
            Value::Array(a) => Ordered::Array(a.iter().map(Ordered::from_value).collect()),
            Value::Object(m) => Ordered::Object(m.iter().map(|(k, v)| (k.clone(), Ordered::from_value(v))).collect()),
        }
    }

    /// Compact JSON text, keys in document order.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OrderedVisitor;
        impl<'de> Visitor<'de> for OrderedVisitor {
            type Value = Ordered;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, b: bool) -> Result<Ordered, E> {
                Ok(Ordered::Bool(b))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.into()))
            }
            fn visit_u64<E>(self, n: u64) -> Result<Ordered, E> {
                Ok(Ordered::Number(n.into()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Ordered, E> {
                serde_json::Number::from_f64(n).map(Ordered::Number).ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_str<E>(self, s: &str) -> Result<Ordered, E> {
                Ok(Ordered::String(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Ordered, E> {
                Ok(Ordered::String(s))
            }
            fn visit_unit<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_none<E>(self) -> Result<Ordered, E> {
                Ok(Ordered::Null)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Ordered, D2::Error> {
                Ordered::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut items = Vec::new();
                while let Some(x) = a.next_element()? {
                    items.push(x);
                }
                Ok(Ordered::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Ordered, A::Error> {
                let mut entries: Vec<(String, Ordered)> = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, Ordered>()? {
                    match entries.iter_mut().find(|(key, _)| *key == k) {
                        Some(slot) => slot.1 = v,
                        None => entries.push((k, v)),
                    }
                }
                Ok(Ordered::Object(entries))
            }
        }
        d.deserialize_any(OrderedVisitor)
    }
}

impl Serialize for Ordered {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Ordered::Null => s.serialize_unit(),
            Ordered::Bool(b) => s.serialize_bool(*b),
            Ordered::Number(n) => n.serialize(s),
            Ordered::String(t) => s.serialize_str(t),
            Ordered::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for x in items {
                    seq.serialize_element(x)?;
                }
                seq.end()
            }
            Ordered::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

// ---------------------------------------------------------------------------
// JSON Schema → Gemini Schema

/// How deep a schema may nest (references inlined) before it is refused.
const MAX_SCHEMA_DEPTH: usize = 48;

/// Converts a JSON Schema (OpenAI `parameters` and `response_format.json_schema.schema`, Anthropic
/// `input_schema`) into the OpenAPI 3.0 subset Gemini's `Schema` accepts. `field` names the schema
/// in errors. With `ordering`, every object with several properties gets `propertyOrdering` in the
/// client's order (Gemini otherwise orders a structured response's properties by name).
///
/// * `type` becomes upper case (`OBJECT`); `["string", "null"]` becomes `STRING` with
///   `nullable: true`, several non-null types an `anyOf`.
/// * `anyOf` and `oneOf` become `anyOf`; a `{"type": "null"}` variant becomes `nullable`; a single
///   remaining variant replaces the `anyOf`. `allOf` is merged into one schema (properties and
///   `required` united, other keywords first come first kept).
/// * Local `$ref`s (`#/$defs/…`, `#/definitions/…`, any pointer into the schema) are inlined; a
///   recursive or non-local reference is refused ([`TranslateError::Invalid`], HTTP 400), since
///   Gemini has no references.
/// * `enum` and `const` of strings become a `STRING` enum (`format: "enum"`); values of other
///   types, which Gemini cannot enumerate, are listed in the `description` instead.
/// * Kept per type: `title`, `description`, `nullable`; strings `minLength`, `maxLength`,
///   `pattern`, `format: date-time`; numbers `minimum`, `maximum`, `format` `float`/`double`
///   (`int32`/`int64` for integers); arrays `items` (an array without `items` gets `items: {}`, which
///   Gemini requires; tuple `items`/`prefixItems` become an `anyOf` of the positions), `minItems`,
///   `maxItems`; objects `properties`, `required` (only names that are properties),
///   `minProperties`, `maxProperties`.
/// * Dropped (Gemini rejects them or has no equivalent): `additionalProperties`, `$schema`, `$id`,
///   `$defs`, `definitions`, `$comment`, `default`, `examples`, `const` of non-strings (described),
///   `not`, `if`/`then`/`else`, `patternProperties`, `propertyNames`, `unevaluatedProperties`,
///   `dependentRequired`, `exclusiveMinimum`/`exclusiveMaximum`, `multipleOf`, `uniqueItems`,
///   `contains`, other `format`s and unknown keywords.
pub(crate) fn gemini_schema(schema: &Ordered, field: &str, ordering: bool) -> Result<Value, TranslateError> {
    SchemaConverter { root: schema, references: Vec::new(), ordering }.convert(schema, field, 0)
}

/// A function's `parameters` for Gemini, or `None` when the function takes none: Gemini rejects an
/// `OBJECT` without properties there ("properties: should be non-empty for OBJECT type").
pub(crate) fn parameters_schema(schema: &Ordered, field: &str) -> Result<Option<Value>, TranslateError> {
    let converted = gemini_schema(schema, field, false)?;
    let empty_object = converted.get("properties").is_none()
        && converted.get("anyOf").is_none()
        && matches!(converted.get("type").and_then(Value::as_str), None | Some("OBJECT"));
    Ok((!empty_object).then_some(converted))
}

struct SchemaConverter<'a> {
    root: &'a Ordered,
    /// References being inlined, outermost first (a repeat is a recursive schema).
    references: Vec<String>,
    ordering: bool,
}

const TYPES: &[&str] = &["string", "number", "integer", "boolean", "array", "object"];

fn invalid(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::invalid(field, message)
}

fn is_null_schema(s: &Ordered) -> bool {
    s.get("type").and_then(Ordered::as_str) == Some("null")
}

impl<'a> SchemaConverter<'a> {
    /// The node a local reference (a JSON pointer after `#`) points to.
    fn resolve(&self, reference: &str, field: &str) -> Result<&'a Ordered, TranslateError> {
        let pointer = reference.strip_prefix('#').ok_or_else(|| {
            invalid(field, format!("`{reference}` is not a local reference (`#/$defs/…`): Gemini schemas have no references to inline it from"))
        })?;
        let mut node = self.root;
        for token in pointer.split('/').skip(1) {
            let token = token.replace("~1", "/").replace("~0", "~");
            let next = match node {
                Ordered::Object(_) => node.get(&token),
                Ordered::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
                _ => None,
            };
            node = next.ok_or_else(|| invalid(field, format!("`{reference}` points to nothing in the schema")))?;
        }
        Ok(node)
    }

    fn convert(&mut self, node: &Ordered, field: &str, depth: usize) -> Result<Value, TranslateError> {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(invalid(field, "the schema nests too deeply"));
        }
        let entries = match node {
            Ordered::Bool(true) => return Ok(json!({})),
            Ordered::Object(entries) => entries,
            _ => return Err(invalid(field, "a schema must be an object")),
        };
        if let Some(reference) = node.get("$ref") {
            return self.inline_reference(node, reference, field, depth);
        }
        if let Some(all) = node.get("allOf") {
            let merged = self.merge_all_of(entries, all, field)?;
            return self.convert(&merged, field, depth + 1);
        }
        let mut nullable = node.get("nullable") == Some(&Ordered::Bool(true));
        let mut types: Vec<&str> = match node.get("type") {
            None => vec![],
            Some(Ordered::String(t)) => vec![t.as_str()],
            Some(Ordered::Array(ts)) if ts.iter().all(|t| t.as_str().is_some()) => {
                ts.iter().filter_map(Ordered::as_str).collect()
            }
            Some(_) => return Err(invalid(format!("{field}.type"), "must be a string or an array of strings")),
        };
        if types.contains(&"null") {
            nullable = true;
            types.retain(|t| *t != "null");
        }
        if let Some(t) = types.iter().find(|t| !TYPES.contains(t)) {
            return Err(invalid(format!("{field}.type"), format!("unknown type `{t}`")));
        }
        let variants = match (node.get("anyOf"), node.get("oneOf")) {
            (Some(v), _) => Some(("anyOf", v)),
            (None, Some(v)) => Some(("oneOf", v)),
            _ => None,
        };
        if let Some((key, variants)) = variants {
            let Ordered::Array(variants) = variants else {
                return Err(invalid(format!("{field}.{key}"), "must be an array of schemas"));
            };
            let mut converted = Vec::new();
            for (i, v) in variants.iter().enumerate() {
                if is_null_schema(v) {
                    nullable = true;
                } else {
                    converted.push(self.convert(v, &format!("{field}.{key}[{i}]"), depth + 1)?);
                }
            }
            let out = match converted.len() {
                1 => converted.pop().unwrap_or_default(),
                _ => json!({ "anyOf": converted }),
            };
            return Ok(annotate(out, node, nullable));
        }
        if types.len() > 1 {
            // One variant per type, each with the keywords that apply to it.
            let mut converted = Vec::new();
            for t in &types {
                let mut single: Vec<(String, Ordered)> = entries
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "type" | "title" | "description" | "nullable"))
                    .cloned()
                    .collect();
                single.push(("type".into(), Ordered::String(t.to_string())));
                converted.push(self.convert(&Ordered::Object(single), field, depth + 1)?);
            }
            return Ok(annotate(json!({ "anyOf": converted }), node, nullable));
        }
        let ty = types.first().copied().or_else(|| inferred_type(node));
        let mut out = Map::new();
        if let Some(t) = ty {
            out.insert("type".into(), json!(t.to_ascii_uppercase()));
        }
        self.enumeration(node, ty, &mut out, &mut nullable);
        match ty {
            Some("string") => {
                copy_numbers(node, &["minLength", "maxLength"], &mut out);
                if let Some(p) = node.get("pattern").and_then(Ordered::as_str) {
                    out.insert("pattern".into(), json!(p));
                }
                if node.get("format").and_then(Ordered::as_str) == Some("date-time") && !out.contains_key("format") {
                    out.insert("format".into(), json!("date-time"));
                }
            }
            Some(t @ ("number" | "integer")) => {
                copy_numbers(node, &["minimum", "maximum"], &mut out);
                let formats: &[&str] = if t == "number" { &["float", "double"] } else { &["int32", "int64"] };
                if let Some(f) = node.get("format").and_then(Ordered::as_str).filter(|f| formats.contains(f)) {
                    out.insert("format".into(), json!(f));
                }
            }
            Some("array") => {
                out.insert("items".into(), self.items(node, field, depth)?);
                copy_numbers(node, &["minItems", "maxItems"], &mut out);
            }
            Some("object") => {
                self.properties(node, field, depth, &mut out)?;
                copy_numbers(node, &["minProperties", "maxProperties"], &mut out);
            }
            _ => {}
        }
        Ok(annotate(Value::Object(out), node, nullable))
    }

    fn inline_reference(
        &mut self,
        node: &Ordered,
        reference: &Ordered,
        field: &str,
        depth: usize,
    ) -> Result<Value, TranslateError> {
        let at = format!("{field}.$ref");
        let reference = reference.as_str().ok_or_else(|| invalid(&at, "must be a string"))?;
        if self.references.iter().any(|r| r == reference) {
            return Err(invalid(
                at,
                format!("`{reference}` refers to itself: Gemini schemas cannot express recursive structures"),
            ));
        }
        let target = self.resolve(reference, &at)?;
        self.references.push(reference.to_string());
        let out = self.convert(target, field, depth + 1);
        self.references.pop();
        // Keywords beside `$ref` (a description, say) apply as well.
        Ok(annotate(out?, node, false))
    }

    /// One schema holding the node's keywords and those of every `allOf` member (references resolved).
    fn merge_all_of(
        &self,
        entries: &[(String, Ordered)],
        all: &Ordered,
        field: &str,
    ) -> Result<Ordered, TranslateError> {
        let Ordered::Array(members) = all else {
            return Err(invalid(format!("{field}.allOf"), "must be an array of schemas"));
        };
        let mut merged: Vec<(String, Ordered)> = entries.iter().filter(|(k, _)| k != "allOf").cloned().collect();
        for (i, member) in members.iter().enumerate() {
            let at = format!("{field}.allOf[{i}]");
            let member = match member.get("$ref") {
                Some(r) => {
                    self.resolve(r.as_str().ok_or_else(|| invalid(format!("{at}.$ref"), "must be a string"))?, &at)?
                }
                None => member,
            };
            let member_entries = match member {
                Ordered::Bool(true) => continue,
                Ordered::Object(e) => e,
                _ => return Err(invalid(at, "a schema must be an object")),
            };
            for (k, v) in member_entries {
                let existing = merged.iter_mut().find(|(key, _)| key == k);
                match (k.as_str(), existing, v) {
                    ("properties", Some((_, Ordered::Object(mine))), Ordered::Object(theirs)) => {
                        for (name, schema) in theirs {
                            if !mine.iter().any(|(n, _)| n == name) {
                                mine.push((name.clone(), schema.clone()));
                            }
                        }
                    }
                    ("required", Some((_, Ordered::Array(mine))), Ordered::Array(theirs)) => {
                        mine.extend(theirs.iter().filter(|r| !mine.contains(r)).cloned().collect::<Vec<_>>());
                    }
                    (_, Some(_), _) => {}
                    (_, None, _) => merged.push((k.clone(), v.clone())),
                }
            }
        }
        Ok(Ordered::Object(merged))
    }

    /// `enum` / `const`: a string enumeration, or the values listed in the description.
    fn enumeration(&self, node: &Ordered, ty: Option<&str>, out: &mut Map<String, Value>, nullable: &mut bool) {
        let values: Vec<&Ordered> = match (node.get("enum"), node.get("const")) {
            (Some(Ordered::Array(values)), _) => values.iter().collect(),
            (None, Some(c)) => vec![c],
            _ => return,
        };
        let strings: Vec<&str> = values.iter().filter_map(|v| v.as_str()).collect();
        let nulls = values.iter().filter(|v| matches!(v, Ordered::Null)).count();
        if !strings.is_empty() && strings.len() + nulls == values.len() && matches!(ty, None | Some("string")) {
            out.insert("type".into(), json!("STRING"));
            out.insert("format".into(), json!("enum"));
            out.insert("enum".into(), json!(strings));
            *nullable |= nulls > 0;
            return;
        }
        let listed: Vec<String> = values.iter().map(|v| v.to_json()).collect();
        let note = format!("Allowed values: {}.", listed.join(", "));
        let description = match node.get("description").and_then(Ordered::as_str) {
            Some(d) if !d.is_empty() => format!("{d} {note}"),
            _ => note,
        };
        out.insert("description".into(), json!(description));
    }

    fn items(&mut self, node: &Ordered, field: &str, depth: usize) -> Result<Value, TranslateError> {
        let tuple = |key: &str| match node.get(key) {
            Some(Ordered::Array(positions)) => Some((key.to_string(), positions)),
            _ => None,
        };
        let positions = match node.get("items") {
            None | Some(Ordered::Bool(true)) => tuple("prefixItems"),
            Some(Ordered::Array(_)) => tuple("items"),
            Some(schema) => return self.convert(schema, &format!("{field}.items"), depth + 1),
        };
        let Some((key, positions)) = positions else {
            // Gemini requires `items`; an empty schema keeps "any item".
            return Ok(json!({}));
        };
        let mut converted = Vec::new();
        for (i, p) in positions.iter().enumerate() {
            converted.push(self.convert(p, &format!("{field}.{key}[{i}]"), depth + 1)?);
        }
        Ok(match converted.len() {
            0 => json!({}),
            1 => converted.pop().unwrap_or_default(),
            _ => json!({ "anyOf": converted }),
        })
    }

    fn properties(
        &mut self,
        node: &Ordered,
        field: &str,
        depth: usize,
        out: &mut Map<String, Value>,
    ) -> Result<(), TranslateError> {
        let Some(Ordered::Object(props)) = node.get("properties") else {
            return Ok(());
        };
        let mut converted = Map::new();
        let mut order = Vec::new();
        for (name, schema) in props {
            converted.insert(name.clone(), self.convert(schema, &format!("{field}.properties.{name}"), depth + 1)?);
            order.push(name.as_str());
        }
        if converted.is_empty() {
            return Ok(());
        }
        let mut required: Vec<&str> = Vec::new();
        if let Some(Ordered::Array(names)) = node.get("required") {
            for n in names.iter().filter_map(Ordered::as_str) {
                if converted.contains_key(n) && !required.contains(&n) {
                    required.push(n);
                }
            }
        }
        if !required.is_empty() {
            out.insert("required".into(), json!(required));
        }
        if self.ordering && order.len() > 1 {
            out.insert("propertyOrdering".into(), json!(order));
        }
        out.insert("properties".into(), Value::Object(converted));
        Ok(())
    }
}

/// The type a schema without `type` evidently has.
fn inferred_type(node: &Ordered) -> Option<&'static str> {
    if node.get("properties").is_some() {
        Some("object")
    } else if node.get("items").is_some() || node.get("prefixItems").is_some() {
        Some("array")
    } else {
        None
    }
}

/// Adds the node's `title` and `description` (unless already set) and `nullable`.
fn annotate(mut out: Value, node: &Ordered, nullable: bool) -> Value {
    if let Value::Object(o) = &mut out {
        for key in ["title", "description"] {
            if let Some(text) = node.get(key).and_then(Ordered::as_str) {
                o.entry(key).or_insert_with(|| json!(text));
            }
        }
        if nullable {
            o.insert("nullable".into(), json!(true));
        }
    }
    out
}

fn copy_numbers(node: &Ordered, keys: &[&str], out: &mut Map<String, Value>) {
    for key in keys {
        if let Some(Ordered::Number(n)) = node.get(key) {
            out.insert((*key).to_string(), Value::Number(n.clone()));
        }
    }
}

// ---------------------------------------------------------------------------
// Responses

/// A `generateContent` response, or one `streamGenerateContent` chunk (the fields the translators
/// read). A stream chunk may also be an in-stream `{"error": …}`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GenerateContentResponse {
    #[serde(default, deserialize_with = "null_as_default")]
    pub candidates: Vec<Candidate>,
    #[serde(default)]
    pub prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    pub usage_metadata: Option<Value>,
    #[serde(default)]
    pub response_id: Option<String>,
    #[serde(default)]
    pub error: Option<GoogleError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Candidate {
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Content {
    #[serde(default, deserialize_with = "null_as_default")]
    pub parts: Vec<Part>,
}

/// One response part: text (a thought when `thought`), a whole function call, or something the
/// translators do not relay (inline images, executable code).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Part {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub thought: Option<bool>,
    #[serde(default)]
    pub thought_signature: Option<String>,
    #[serde(default)]
    pub function_call: Option<FunctionCall>,
}

impl Part {
    pub(crate) fn is_thought(&self) -> bool {
        self.thought == Some(true)
    }
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct FunctionCall {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub args: Option<Box<RawValue>>,
}

impl FunctionCall {
    /// The arguments as compact JSON text in the model's key order (`{}` when absent or not an object).
    pub(crate) fn arguments(&self) -> String {
        match self.args.as_deref().and_then(|raw| Ordered::parse(raw.get())) {
            Some(o @ Ordered::Object(_)) => o.to_json(),
            _ => "{}".to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PromptFeedback {
    #[serde(default)]
    pub block_reason: Option<String>,
    #[serde(default)]
    pub block_reason_message: Option<String>,
}

impl GenerateContentResponse {
    /// The parts of the first candidate (the translators ask for one).
    pub(crate) fn parts(&self) -> &[Part] {
        self.candidates.first().and_then(|c| c.content.as_ref()).map_or(&[], |c| &c.parts)
    }

    pub(crate) fn finish_reason(&self) -> Option<&str> {
        self.candidates.first().and_then(|c| c.finish_reason.as_deref())
    }

    /// A prompt Gemini blocked (`promptFeedback.blockReason` and no candidate) as the refusal the
    /// client gets: HTTP 400, code `content_filter`.
    pub(crate) fn refusal(&self) -> Option<TranslateError> {
        if !self.candidates.is_empty() {
            return None;
        }
        let feedback = self.prompt_feedback.as_ref()?;
        let reason = feedback.block_reason.as_deref().filter(|r| !r.is_empty())?;
        let mut message = format!("the prompt was blocked by the upstream's safety filters (blockReason {reason})");
        if let Some(detail) = feedback.block_reason_message.as_deref().filter(|m| !m.is_empty()) {
            message.push_str(": ");
            message.push_str(detail);
        }
        Some(TranslateError::Refused { status: 400, code: BLOCKED_CODE.to_string(), message })
    }
}

/// `error.code` of a refusal for a blocked prompt (the code OpenAI and Azure use for filtered content).
pub(crate) const BLOCKED_CODE: &str = "content_filter";

/// What a `finishReason` means, whatever the client's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finish {
    /// `STOP` (natural end or a stop sequence).
    Stop,
    /// `MAX_TOKENS`.
    Length,
    /// Withheld by a filter: `SAFETY`, `RECITATION`, `BLOCKLIST`, `PROHIBITED_CONTENT`, `SPII`,
    /// `LANGUAGE`, `IMAGE_SAFETY` and the like.
    Filtered,
    /// Anything else (`OTHER`, `MALFORMED_FUNCTION_CALL`, `UNEXPECTED_TOOL_CALL`, new values).
    Other,
}

pub(crate) fn finish(reason: &str) -> Finish {
    match reason {
        "STOP" => Finish::Stop,
        "MAX_TOKENS" => Finish::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "LANGUAGE"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION"
        | "MODEL_ARMOR" => Finish::Filtered,
        _ => Finish::Other,
    }
}

// ---------------------------------------------------------------------------
// Tool-call ids and thought signatures

/// Separates a tool-call id from the thought signature it carries.
///
/// Gemini correlates function results by name and position, and some of its endpoints reject an `id`
/// on `functionCall`/`functionResponse` parts ("Unknown name \"id\""), so ids are never sent
/// upstream: the id a client sees is Gemini's own `functionCall.id` when it gave one, otherwise
/// synthesized (deterministic). Gemini 3 rejects a history whose function calls lost their
/// `thoughtSignature` ("Function call is missing a thought_signature"), and neither client family
/// has a field for one: the signature therefore rides in the id, after this mark, in base64url, and
/// is restored when the client sends the call back in its history.
pub(crate) const SIGNATURE_MARK: &str = "__thought__";

/// Gemini's documented placeholder signature for function calls it did not produce (a history from
/// another model): set on the first call of a model turn whose calls carry no signature.
pub(crate) const FOREIGN_SIGNATURE: &str = "skip_thought_signature_validator";

/// 64-bit FNV-1a over `parts`, from `seed`: a small, stable hash for deterministic ids.
pub(crate) fn fnv1a(seed: u64, parts: &[&[u8]]) -> u64 {
    let mut h = seed;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The client-facing id of the `n`-th function call of a response: Gemini's id if it gave one,
/// else `{prefix}{seed}_{n}`; with the part's thought signature appended after [`SIGNATURE_MARK`].
pub(crate) fn call_id(prefix: &str, given: Option<&str>, seed: u64, n: u64, signature: Option<&str>) -> String {
    let mut id = match given.filter(|id| !id.is_empty()) {
        Some(id) => id.to_string(),
        None => format!("{prefix}{seed:016x}_{n}"),
    };
    if let Some(sig) = signature.filter(|s| !s.is_empty()) {
        id.push_str(SIGNATURE_MARK);
        id.extend(sig.chars().filter(|c| *c != '=').map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        }));
    }
    id
}

/// The thought signature a client's tool-call id carries (standard base64, padded), if any.
pub(crate) fn signature_in_id(id: &str) -> Option<String> {
    let (_, tail) = id.split_once(SIGNATURE_MARK)?;
    if tail.is_empty() || !tail.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return None;
    }
    let mut sig: String = tail
        .chars()
        .map(|c| match c {
            '-' => '+',
            '_' => '/',
            c => c,
        })
        .collect();
    while !sig.len().is_multiple_of(4) {
        sig.push('=');
    }
    Some(sig)
}

/// A `functionCall` part for the history, with its signature when there is one.
pub(crate) fn function_call_part(name: &str, args: Value, signature: Option<String>) -> Value {
    let mut part = Map::new();
    part.insert("functionCall".into(), json!({"name": name, "args": args}));
    if let Some(sig) = signature {
        part.insert("thoughtSignature".into(), json!(sig));
    }
    Value::Object(part)
}

/// Gives the first function call of each model turn whose calls carry no signature at all Gemini's
/// placeholder ([`FOREIGN_SIGNATURE`]): such a history came from another model, or from a client
/// that lost the signature, and Gemini 3 would otherwise reject it.
pub(crate) fn sign_foreign_calls(contents: &mut [Value]) {
    for content in contents.iter_mut().filter(|c| c["role"] == "model") {
        let Some(parts) = content.get_mut("parts").and_then(Value::as_array_mut) else { continue };
        let calls = || parts.iter().filter(|p| p.get("functionCall").is_some());
        if calls().any(|p| p.get("thoughtSignature").is_some()) {
            continue;
        }
        if let Some(first) = parts.iter_mut().find(|p| p.get("functionCall").is_some()) {
            first["thoughtSignature"] = json!(FOREIGN_SIGNATURE);
        }
    }
}

/// Appends `parts` to the conversation, merging them into the last content when it has the same
/// role (Gemini wants the results of parallel calls together, and alternating turns).
pub(crate) fn push_content(contents: &mut Vec<(&'static str, Vec<Value>)>, role: &'static str, parts: Vec<Value>) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some((r, p)) if *r == role => p.extend(parts),
        _ => contents.push((role, parts)),
    }
}

/// The `contents` array, with placeholder signatures where the history lacks them.
pub(crate) fn contents_value(contents: Vec<(&'static str, Vec<Value>)>) -> Value {
    let mut out: Vec<Value> = contents.into_iter().map(|(role, parts)| json!({"role": role, "parts": parts})).collect();
    sign_foreign_calls(&mut out);
    Value::Array(out)
}

// ---------------------------------------------------------------------------
// Media and thinking

pub(crate) fn inline_data(mime_type: &str, data: &str) -> Value {
    json!({"inlineData": {"mimeType": mime_type, "data": data}})
}

pub(crate) fn file_data(mime_type: &str, uri: &str) -> Value {
    json!({"fileData": {"mimeType": mime_type, "fileUri": uri}})
}

/// The media type a file URI's extension names (Vertex requires one on `fileData`).
pub(crate) fn mime_from_uri(uri: &str) -> Option<&'static str> {
    let path = uri.split(['?', '#']).next().unwrap_or("");
    let name = path.rsplit('/').next().unwrap_or("");
    let (_, ext) = name.rsplit_once('.')?;
    Some(match ext.to_ascii_lowercase().as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "mp3" => "audio/mp3",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        _ => return None,
    })
}

/// A `fileData` part for a URL (`gs://…`, a Files API URI, an http(s) URL Vertex can fetch), or an
/// error naming `field` when its media type cannot be told from its name.
pub(crate) fn url_part(url: &str, field: &str) -> Result<Value, TranslateError> {
    let mime = mime_from_uri(url).ok_or_else(|| {
        invalid(
            field,
            "Gemini takes a media URL as `fileData` with its media type, which this URL's name does not tell \
             (.png, .jpg, .gif, .webp, .heic, .pdf, …): send a data URL or base64 data instead",
        )
    })?;
    Ok(file_data(mime, url))
}

/// The thinking budget for an OpenAI `reasoning_effort`: the budgets Google's own OpenAI
/// compatibility uses (`low` 1024, `medium` 8192, `high` 24576, `none` 0 = off), plus `minimal` 512.
pub(crate) fn effort_budget(effort: &str) -> Result<u64, TranslateError> {
    match effort {
        "none" => Ok(0),
        "minimal" => Ok(512),
        "low" => Ok(1024),
        "medium" => Ok(8192),
        "high" => Ok(24576),
        other => Err(invalid("reasoning_effort", format!("unknown value `{other}`"))),
    }
}

/// `thinkingConfig` for a budget: thought summaries are asked for whenever thinking is on, so that
/// clients see the reasoning (`reasoning_content`, `thinking` blocks).
pub(crate) fn thinking_config(budget: i64) -> Value {
    if budget == 0 {
        json!({"thinkingBudget": 0})
    } else {
        json!({"thinkingBudget": budget, "includeThoughts": true})
    }
}

// ---------------------------------------------------------------------------
// Errors

/// Google's `{"error": {"code", "message", "status"}}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct GoogleError {
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: GoogleError,
}

/// The error in a Google error body (also the one-element array `streamGenerateContent` answers
/// without SSE).
pub(crate) fn google_error(body: &[u8]) -> Option<GoogleError> {
    // Checked first: serde would also read a one-element array as the struct.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return serde_json::from_slice::<Vec<ErrorBody>>(body).ok()?.into_iter().next().map(|e| e.error);
    }
    serde_json::from_slice::<ErrorBody>(body).ok().map(|e| e.error)
}

/// The HTTP status of an error reported inside a stream (its `code`, or its `status` name).
pub(crate) fn stream_error_status(e: &GoogleError) -> u16 {
    if let Some(code) = e.code.filter(|c| (400..=599).contains(c)) {
        return code;
    }
    match e.status.as_deref().unwrap_or("") {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => 400,
        "UNAUTHENTICATED" => 401,
        "PERMISSION_DENIED" => 403,
        "NOT_FOUND" => 404,
        "ABORTED" | "ALREADY_EXISTS" => 409,
        "RESOURCE_EXHAUSTED" => 429,
        "UNIMPLEMENTED" => 501,
        "UNAVAILABLE" => 503,
        "DEADLINE_EXCEEDED" => 504,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(text: &str) -> Result<Value, TranslateError> {
        gemini_schema(&Ordered::parse(text).unwrap(), "s", true)
    }

    #[test]
    fn ordered_keeps_key_order_and_round_trips_compactly() {
        let o = Ordered::parse(r#"{"z": 1, "a": [true, null, 1.5, "x"], "m": {"y": {}, "b": -2}}"#).unwrap();
        assert_eq!(o.to_json(), r#"{"z":1,"a":[true,null,1.5,"x"],"m":{"y":{},"b":-2}}"#);
        assert_eq!(Ordered::parse(r#"{"a":1,"b":2,"a":3}"#).unwrap().to_json(), r#"{"a":3,"b":2}"#);
        assert_eq!(Ordered::from_value(&json!({"b": 1, "a": 2})).to_json(), r#"{"a":2,"b":1}"#);
    }

    #[test]
    fn types_are_upper_case_and_property_order_is_kept() {
        let out = schema(
            r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0},
                "tags":{"type":"array","items":{"type":"string"},"maxItems":3}},"required":["name","ghost"],
                "additionalProperties":false,"$schema":"http://json-schema.org/draft-07/schema#"}"#,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"type": "OBJECT", "propertyOrdering": ["name", "age", "tags"], "required": ["name"],
                "properties": {"name": {"type": "STRING"}, "age": {"type": "INTEGER", "minimum": 0},
                    "tags": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 3}}})
        );
    }

    #[test]
    fn nullable_type_arrays_and_null_variants_become_nullable() {
        assert_eq!(schema(r#"{"type":["string","null"]}"#).unwrap(), json!({"type": "STRING", "nullable": true}));
        assert_eq!(
            schema(r#"{"anyOf":[{"type":"integer"},{"type":"null"}],"description":"n"}"#).unwrap(),
            json!({"type": "INTEGER", "nullable": true, "description": "n"})
        );
        assert_eq!(
            schema(r#"{"oneOf":[{"type":"integer"},{"type":"string"}]}"#).unwrap(),
            json!({"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]})
        );
        assert_eq!(
            schema(r#"{"type":["integer","string"],"minimum":1,"maxLength":2}"#).unwrap(),
            json!({"anyOf": [{"type": "INTEGER", "minimum": 1}, {"type": "STRING", "maxLength": 2}]})
        );
    }

    #[test]
    fn references_are_inlined_and_recursion_is_refused() {
        let out = schema(
            r##"{"type":"object","properties":{"home":{"$ref":"#/$defs/Addr","description":"where"},
                "work":{"$ref":"#/definitions/Addr"}},
                "$defs":{"Addr":{"type":"object","properties":{"city":{"type":"string"}}}},
                "definitions":{"Addr":{"type":"object","properties":{"zip":{"type":"string"}}}}}"##,
        )
        .unwrap();
        assert_eq!(out["properties"]["home"]["properties"]["city"], json!({"type": "STRING"}));
        assert_eq!(out["properties"]["home"]["description"], "where");
        assert_eq!(out["properties"]["work"]["properties"]["zip"], json!({"type": "STRING"}));
        assert!(out.get("$defs").is_none() && out.get("definitions").is_none());

        let e = schema(
            r##"{"type":"object","properties":{"node":{"$ref":"#/$defs/Node"}},
                "$defs":{"Node":{"type":"object","properties":{"next":{"$ref":"#/$defs/Node"}}}}}"##,
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("s.properties.node.properties.next.$ref"));
        assert!(e.to_string().contains("recursive"), "{e}");
        let e = schema(r#"{"$ref":"https://example.com/s.json"}"#).unwrap_err();
        assert_eq!(e.field(), Some("s.$ref"));
        let e = schema(r##"{"$ref":"#/$defs/Missing"}"##).unwrap_err();
        assert!(e.to_string().contains("points to nothing"), "{e}");
    }

    #[test]
    fn enums_and_consts_of_strings_are_enums_others_are_described() {
        assert_eq!(
            schema(r#"{"enum":["a","b",null]}"#).unwrap(),
            json!({"type": "STRING", "format": "enum", "enum": ["a", "b"], "nullable": true})
        );
        assert_eq!(
            schema(r#"{"type":"string","const":"fixed"}"#).unwrap(),
            json!({"type": "STRING", "format": "enum", "enum": ["fixed"]})
        );
        assert_eq!(
            schema(r#"{"type":"integer","enum":[1,2],"description":"Level."}"#).unwrap(),
            json!({"type": "INTEGER", "description": "Level. Allowed values: 1, 2."})
        );
    }

    #[test]
    fn all_of_is_merged_and_unsupported_keywords_are_dropped() {
        let out = schema(
            r##"{"allOf":[{"$ref":"#/$defs/A"},{"type":"object","properties":{"b":{"type":"boolean"}},"required":["b"]}],
                "$defs":{"A":{"type":"object","properties":{"a":{"type":"number","format":"double","exclusiveMinimum":0}},
                "required":["a"],"additionalProperties":{"type":"string"}}},"$comment":"x","default":{}}"##,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"type": "OBJECT", "propertyOrdering": ["a", "b"], "required": ["a", "b"],
                "properties": {"a": {"type": "NUMBER", "format": "double"}, "b": {"type": "BOOLEAN"}}})
        );
        let out = schema(
            r#"{"type":"string","format":"uri","pattern":"^h","not":{"const":"x"},"examples":["h"],"minLength":1}"#,
        )
        .unwrap();
        assert_eq!(out, json!({"type": "STRING", "pattern": "^h", "minLength": 1}));
    }

    #[test]
    fn arrays_always_have_items() {
        assert_eq!(schema(r#"{"type":"array"}"#).unwrap(), json!({"type": "ARRAY", "items": {}}));
        assert_eq!(
            schema(r#"{"type":"array","prefixItems":[{"type":"string"},{"type":"number"}]}"#).unwrap(),
            json!({"type": "ARRAY", "items": {"anyOf": [{"type": "STRING"}, {"type": "NUMBER"}]}})
        );
        assert_eq!(
            schema(r#"{"type":"array","items":{"type":"array"}}"#).unwrap(),
            json!({"type": "ARRAY", "items": {"type": "ARRAY", "items": {}}})
        );
    }

    #[test]
    fn bad_schemas_are_refused_with_their_path() {
        assert_eq!(schema(r#"{"type":"tuple"}"#).unwrap_err().field(), Some("s.type"));
        assert_eq!(
            schema(r#"{"type":"object","properties":{"a":false}}"#).unwrap_err().field(),
            Some("s.properties.a")
        );
        assert_eq!(schema(r#"{"anyOf":{"type":"string"}}"#).unwrap_err().field(), Some("s.anyOf"));
        let mut deep = String::from(r#"{"type":"string"}"#);
        for _ in 0..60 {
            deep = format!(r#"{{"type":"array","items":{deep}}}"#);
        }
        assert!(schema(&deep).unwrap_err().to_string().contains("too deeply"));
    }

    #[test]
    fn parameters_without_properties_are_omitted() {
        let p = |t: &str| parameters_schema(&Ordered::parse(t).unwrap(), "p").unwrap();
        assert_eq!(p(r#"{"type":"object","properties":{}}"#), None);
        assert_eq!(p(r#"{"type":"object","additionalProperties":true}"#), None);
        assert_eq!(p("{}"), None);
        assert!(p(r#"{"type":"object","properties":{"a":{"type":"string"}}}"#).is_some());
        // Function parameters carry no propertyOrdering.
        let out = p(r#"{"type":"object","properties":{"b":{"type":"string"},"a":{"type":"string"}}}"#).unwrap();
        assert!(out.get("propertyOrdering").is_none());
    }

    #[test]
    fn signatures_ride_in_ids_as_base64url_and_come_back_padded() {
        let sig = "ab+/cd==";
        let id = call_id("call_", None, 0xabc, 2, Some(sig));
        assert_eq!(id, "call_0000000000000abc_2__thought__ab-_cd");
        assert_eq!(signature_in_id(&id).as_deref(), Some(sig));
        assert_eq!(call_id("toolu_", Some("fc-1"), 0, 0, None), "fc-1");
        assert_eq!(signature_in_id("call_1"), None);
        assert_eq!(signature_in_id("call_1__thought__a+b"), None, "not base64url");
    }

    #[test]
    fn foreign_calls_get_the_placeholder_on_the_first_call_only() {
        let mut contents = vec![
            json!({"role": "model", "parts": [{"text": "x"}, {"functionCall": {"name": "a", "args": {}}},
                {"functionCall": {"name": "b", "args": {}}}]}),
            json!({"role": "model", "parts": [{"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "c2ln"}]}),
            json!({"role": "user", "parts": [{"text": "y"}]}),
        ];
        sign_foreign_calls(&mut contents);
        assert_eq!(contents[0]["parts"][1]["thoughtSignature"], FOREIGN_SIGNATURE);
        assert!(contents[0]["parts"][2].get("thoughtSignature").is_none());
        assert_eq!(contents[1]["parts"][0]["thoughtSignature"], "c2ln");
    }

    #[test]
    fn blocked_prompts_are_refusals_and_finish_reasons_are_classified() {
        let r: GenerateContentResponse = serde_json::from_str(
            r#"{"promptFeedback":{"blockReason":"SAFETY","blockReasonMessage":"unsafe"},"usageMetadata":{"promptTokenCount":5}}"#,
        )
        .unwrap();
        match r.refusal() {
            Some(TranslateError::Refused { status: 400, code, message }) => {
                assert_eq!(code, "content_filter");
                assert!(message.contains("SAFETY") && message.ends_with("unsafe"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(finish("RECITATION"), Finish::Filtered);
        assert_eq!(finish("MAX_TOKENS"), Finish::Length);
        assert_eq!(finish("MALFORMED_FUNCTION_CALL"), Finish::Other);
    }

    #[test]
    fn google_errors_are_read_from_objects_and_arrays() {
        let e = google_error(br#"[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}]"#).unwrap();
        assert_eq!((e.code, e.message.as_deref()), (Some(429), Some("quota")));
        assert_eq!(stream_error_status(&GoogleError { status: Some("UNAVAILABLE".into()), ..Default::default() }), 503);
        assert!(google_error(b"<html>").is_none());
    }

    #[test]
    fn urls_need_a_known_extension() {
        assert_eq!(mime_from_uri("gs://b/cat.JPG?x=1"), Some("image/jpeg"));
        assert_eq!(mime_from_uri("https://example.com/img"), None);
        assert_eq!(mime_from_uri("https://example.com.org/"), None);
        assert!(url_part("https://x.test/a", "f").is_err());
    }
}
