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

mod call_ids;
mod error;
mod media;
mod response;
mod schema;
#[cfg(test)]
mod tests;

pub(crate) use call_ids::*;
pub(crate) use error::*;
pub(crate) use media::*;
pub(crate) use response::*;
pub(crate) use schema::*;

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
