//! JSON Schema → the OpenAPI subset Gemini's `Schema` accepts.

use super::*;

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

pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
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
