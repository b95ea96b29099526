//! Phase 1 of a request: the body checked as JSON and the few fields the gateway reads from it.
//!
//! Two readers give the same fields: the strict reader ([`crate::strict_json`]), which checks every
//! byte and builds nothing, and serde. The strict one runs first; anything it does not take (a body
//! that is not JSON, a key written with escapes, a repeated or mistyped field, deep nesting) goes to
//! serde, whose verdict and error message stand. The fuzz target `model_peek` checks that a body the
//! strict reader takes, serde takes with the same fields.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::api::Endpoint;
use crate::error::GatewayError;
use crate::strict_json::{self, literal_end, members, value_end};

/// What the gateway reads from a request body; everything else passes through untouched.
#[derive(Debug)]
pub struct RequestPeek {
    pub model: String,
    pub stream: bool,
    /// The larger of `max_completion_tokens` and `max_tokens`, when either is set.
    pub max_output: Option<u64>,
    pub reasoning_effort: Option<String>,
    /// The client asked for `stream_options.include_usage`.
    pub include_usage: bool,
    /// Responses: the stored response a request continues.
    pub previous_response_id: Option<String>,
}

/// The body's fields as either reader reads them.
#[doc(hidden)]
#[derive(Deserialize, Default, Debug, PartialEq)]
pub struct PeekFields<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    stream: Option<bool>,
    messages: Option<IgnoredAny>,
    prompt: Option<IgnoredAny>,
    input: Option<IgnoredAny>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    stream_options: Option<StreamOptionsPeek>,
    reasoning_effort: Option<String>,
    max_output_tokens: Option<u64>,
    reasoning: Option<ReasoningPeek>,
    previous_response_id: Option<String>,
}

#[derive(Deserialize, Default, Debug, PartialEq)]
struct ReasoningPeek {
    effort: Option<String>,
}

#[derive(Deserialize, Default, Debug, PartialEq)]
struct StreamOptionsPeek {
    include_usage: Option<bool>,
}

/// Validates the body as JSON and reads `model`, `stream` and the few other fields without building a
/// tree.
pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<RequestPeek, GatewayError> {
    if body.is_empty() {
        return Err(GatewayError::BadRequest("the request body is empty: a JSON object is required".into()));
    }
    let fields = match fields_read_strictly(body) {
        Some(fields) => fields,
        None => fields_read_by_serde(body).map_err(|e| GatewayError::BadRequest(format!("invalid JSON body: {e}")))?,
    };
    let present = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => fields.messages.is_some(),
        Endpoint::Completions => fields.prompt.is_some(),
        Endpoint::Embeddings => fields.input.is_some(),
        // `input` may be absent (a stored prompt): what the backend needs, it says.
        Endpoint::Responses | Endpoint::ResponsesInputTokens => true,
    };
    let model = match fields.model {
        Some(m) if !m.is_empty() => m.into_owned(),
        _ => return Err(GatewayError::BadRequest("missing required parameter: 'model'".into())),
    };
    if !present {
        return Err(GatewayError::BadRequest(format!("missing required parameter: '{}'", endpoint.required_field())));
    }
    Ok(RequestPeek {
        model,
        stream: fields.stream.unwrap_or(false),
        max_output: match (fields.max_completion_tokens, fields.max_tokens) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .or(fields.max_output_tokens),
        reasoning_effort: fields.reasoning_effort.or(fields.reasoning.and_then(|r| r.effort)),
        include_usage: fields.stream_options.and_then(|o| o.include_usage).unwrap_or(false),
        previous_response_id: fields.previous_response_id,
    })
}

/// The fields as serde reads them.
#[doc(hidden)]
pub fn fields_read_by_serde(body: &[u8]) -> Result<PeekFields<'_>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// The fields as the strict reader reads them: `None` when the body is not a JSON object, or holds
/// anything serde would read differently or that it leaves to serde (see the module's note).
#[doc(hidden)]
pub fn fields_read_strictly(body: &[u8]) -> Option<PeekFields<'_>> {
    let start = strict_json::skip_ws(body, 0);
    if body.get(start) != Some(&b'{') {
        return None;
    }
    let mut fields = PeekFields::default();
    // A repeated field is an error to serde: one bit per field seen.
    let mut seen = 0u16;
    let end = members(body, start, |key, at| {
        let (bit, end) = match key {
            b"model" => (0, text(body, at, |t| fields.model = t.map(Cow::Borrowed))?),
            b"stream" => (1, flag(body, at, &mut fields.stream)?),
            b"messages" => (2, any(body, at, &mut fields.messages)?),
            b"prompt" => (3, any(body, at, &mut fields.prompt)?),
            b"input" => (4, any(body, at, &mut fields.input)?),
            b"max_tokens" => (5, count(body, at, &mut fields.max_tokens)?),
            b"max_completion_tokens" => (6, count(body, at, &mut fields.max_completion_tokens)?),
            b"max_output_tokens" => (7, count(body, at, &mut fields.max_output_tokens)?),
            b"reasoning_effort" => (8, owned_text(body, at, &mut fields.reasoning_effort)?),
            b"previous_response_id" => (9, owned_text(body, at, &mut fields.previous_response_id)?),
            b"stream_options" => (
                10,
                object(body, at, &mut fields.stream_options, b"include_usage", |at, options| {
                    flag(body, at, &mut options.include_usage)
                })?,
            ),
            b"reasoning" => (
                11,
                object(body, at, &mut fields.reasoning, b"effort", |at, reasoning| {
                    owned_text(body, at, &mut reasoning.effort)
                })?,
            ),
            _ => return value_end(body, at),
        };
        if seen & 1 << bit != 0 {
            return None;
        }
        seen |= 1 << bit;
        Some(end)
    })?;
    (strict_json::skip_ws(body, end) == body.len()).then_some(fields)
}

/// `null`, or a string written without escapes, handed to `set` as text; the index after it.
fn text<'b>(body: &'b [u8], at: usize, set: impl FnOnce(Option<&'b str>)) -> Option<usize> {
    if let Some(end) = null_end(body, at) {
        set(None);
        return Some(end);
    }
    if body.get(at) != Some(&b'"') {
        return None;
    }
    let (end, escaped) = strict_json::string_end(body, at)?;
    if escaped {
        return None;
    }
    set(Some(crate::text::utf8(&body[at + 1..end - 1]).ok()?));
    Some(end)
}

fn owned_text(body: &[u8], at: usize, field: &mut Option<String>) -> Option<usize> {
    text(body, at, |t| *field = t.map(str::to_owned))
}

/// `null`, `true` or `false`.
fn flag(body: &[u8], at: usize, field: &mut Option<bool>) -> Option<usize> {
    let (value, end) = [(Some(true), &b"true"[..]), (Some(false), b"false"), (None, b"null")]
        .into_iter()
        .find_map(|(value, literal)| Some((value, literal_end(body, at, literal)?)))?;
    *field = value;
    Some(end)
}

/// `null`, or a count: digits without a leading zero, no fraction or exponent, within `u64`.
fn count(body: &[u8], at: usize, field: &mut Option<u64>) -> Option<usize> {
    if let Some(end) = null_end(body, at) {
        *field = None;
        return Some(end);
    }
    let digits = body.get(at..)?.iter().take_while(|c| c.is_ascii_digit()).count();
    let end = at + digits;
    if digits > 1 && body[at] == b'0' || matches!(body.get(end), Some(b'.' | b'e' | b'E')) {
        return None;
    }
    *field = Some(crate::digits::parse_decimal(&body[at..end])?);
    Some(end)
}

/// Any well-formed value: present unless it is `null`.
fn any(body: &[u8], at: usize, field: &mut Option<IgnoredAny>) -> Option<usize> {
    let end = value_end(body, at)?;
    *field = (&body[at..end] != b"null").then_some(IgnoredAny);
    Some(end)
}

/// `null`, or an object whose member `key` `read` reads into a `T` (other members skipped); the key
/// named twice is left to serde.
fn object<T: Default>(
    body: &[u8],
    at: usize,
    field: &mut Option<T>,
    key: &[u8],
    mut read: impl FnMut(usize, &mut T) -> Option<usize>,
) -> Option<usize> {
    if let Some(end) = null_end(body, at) {
        *field = None;
        return Some(end);
    }
    if body.get(at) != Some(&b'{') {
        return None;
    }
    let mut value = T::default();
    let mut seen = false;
    let end = members(body, at, |name, at| {
        if name != key {
            return value_end(body, at);
        }
        if seen {
            return None;
        }
        seen = true;
        read(at, &mut value)
    })?;
    *field = Some(value);
    Some(end)
}

fn null_end(body: &[u8], at: usize) -> Option<usize> {
    literal_end(body, at, b"null")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strict_reader_reads_what_serde_reads() {
        for body in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi \"x\" \u00e9"}],"stream":true,"max_tokens":16}"#,
            r#" { "model" : "m" , "prompt" : null , "input" : [1, 2.5e3, -0, {}] } "#,
            r#"{"model":"m","max_tokens":0,"max_completion_tokens":18446744073709551615,"max_output_tokens":null}"#,
            r#"{"model":"m","stream_options":{"x":[1],"include_usage":true},"reasoning":{"effort":"low","y":{}}}"#,
            r#"{"model":null,"stream":null,"stream_options":null,"reasoning":null,"reasoning_effort":"high"}"#,
            r#"{"model":"é","previous_response_id":"resp_1","unknown":{"model":1},"other":"\\"}"#,
            r#"{}"#,
            // A repeated key serde does not read is not an error to it.
            r#"{"a":1,"a":2,"stream_options":{"b":1,"b":2}}"#,
        ] {
            let strict = fields_read_strictly(body.as_bytes());
            assert!(strict.is_some(), "{body}");
            assert_eq!(strict, fields_read_by_serde(body.as_bytes()).ok(), "{body}");
        }
    }

    #[test]
    fn what_serde_reads_differently_or_refuses_is_left_to_serde() {
        for body in [
            // Repeated fields, top level and nested: serde refuses them.
            r#"{"model":"a","model":"b"}"#,
            r#"{"model":"a","stream_options":{"include_usage":true,"include_usage":false}}"#,
            // A key written with escapes may be a field.
            r#"{"mod\u0065l":"a"}"#,
            // A value written with escapes, or of another type.
            r#"{"model":"a\u0062"}"#,
            r#"{"model":1}"#,
            r#"{"stream":"true"}"#,
            r#"{"max_tokens":16.0}"#,
            r#"{"max_tokens":1e3}"#,
            r#"{"max_tokens":-1}"#,
            r#"{"max_tokens":012}"#,
            r#"{"max_tokens":18446744073709551616}"#,
            r#"{"stream_options":[true]}"#,
            // Not an object, not JSON, or something after it.
            r#"["m",false]"#,
            r#"{"model":"m",}"#,
            r#"{"model":"m"} x"#,
            "{\"model\":\"\u{1}\"}",
        ] {
            assert_eq!(fields_read_strictly(body.as_bytes()), None, "{body}");
        }
        // Invalid UTF-8 in a string the gateway reads.
        assert_eq!(fields_read_strictly(b"{\"model\":\"\xff\"}"), None);
    }

    #[test]
    fn a_body_left_to_serde_keeps_serdes_error() {
        let err = parse(Endpoint::ChatCompletions, br#"{"model":"a","model":"b","messages":[]}"#).unwrap_err();
        assert!(err.to_string().contains("duplicate field `model`"), "{err}");
        let err = parse(Endpoint::ChatCompletions, br#"{"model":"a","messages":[1,]}"#).unwrap_err();
        assert!(err.to_string().contains("invalid JSON body"), "{err}");
        let peek = parse(Endpoint::ChatCompletions, br#"{"mod\u0065l":"a\u0062","messages":[]}"#).unwrap();
        assert_eq!(peek.model, "ab");
    }
}
