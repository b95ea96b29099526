//! Byte-level edits of JSON request bodies that keep every other byte as the client sent it.

use std::borrow::Cow;
use std::ops::Range;

use crate::strict_json::skip_ws;

/// The body with its top-level `model` replaced by `new` (borrowed unchanged when `new == old`).
/// The body must already be valid JSON.
pub fn with_model<'a>(body: &'a [u8], old: &str, new: &str) -> Result<Cow<'a, [u8]>, serde_json::Error> {
    if old == new {
        return Ok(Cow::Borrowed(body));
    }
    let value = serde_json::to_vec(new)?;
    Ok(Cow::Owned(set_top_level(body, "model", &value)?))
}

/// The body with `stream_options.include_usage` set to true, other `stream_options` fields kept.
pub fn with_stream_usage(body: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    let options = match top_level_value(body, "stream_options") {
        Some(span) => {
            let mut map: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&body[span]).unwrap_or_default();
            map.insert("include_usage".into(), serde_json::Value::Bool(true));
            serde_json::to_vec(&map)?
        }
        None => br#"{"include_usage":true}"#.to_vec(),
    };
    set_top_level(body, "stream_options", &options)
}

/// Replaces (or adds) a top-level key's value with `value` (serialized JSON).
pub fn set_top_level(body: &[u8], key: &str, value: &[u8]) -> Result<Vec<u8>, serde_json::Error> {
    match top_level_value(body, key) {
        Some(span) => {
            let mut out = Vec::with_capacity(body.len() + value.len());
            out.extend_from_slice(&body[..span.start]);
            out.extend_from_slice(value);
            out.extend_from_slice(&body[span.end..]);
            Ok(out)
        }
        None => {
            if let Some(close) = closing_brace_if_keys_plain(body) {
                // Absent: added before the object's closing brace, every other byte kept.
                let empty = skip_ws(body, skip_ws(body, 0) + 1) == close;
                let mut out = Vec::with_capacity(body.len() + key.len() + value.len() + 4);
                out.extend_from_slice(&body[..close]);
                if !empty {
                    out.push(b',');
                }
                out.push(b'"');
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(b"\":");
                out.extend_from_slice(value);
                out.extend_from_slice(&body[close..]);
                return Ok(out);
            }
            // A key spelled with escapes may be this one, or the body is not a well-formed object:
            // edit a parsed tree instead (which also reports a body that is not JSON).
            let mut tree: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)?;
            tree.insert(key.to_string(), serde_json::from_slice(value)?);
            serde_json::to_vec(&tree)
        }
    }
}

/// The index of the closing brace of the JSON object `body` when it is well-formed at its top level,
/// nothing follows it, and none of its top-level keys is written with an escape.
fn closing_brace_if_keys_plain(body: &[u8]) -> Option<usize> {
    let close = walk_members(body, |key, _| !key.contains(&b'\\'))?;
    (skip_ws(body, close + 1) == body.len()).then_some(close)
}

/// Walks the members of the JSON object `body`, handing `visit` each key as written (between its
/// quotes) and the byte range of its value, for as long as `visit` returns true. Returns the index of
/// the closing brace when the walk reached it; `None` when `visit` stopped it or a byte was not
/// well-formed JSON.
fn walk_members(body: &[u8], visit: impl FnMut(&[u8], Range<usize>) -> bool) -> Option<usize> {
    walk_members_with(body, |_, at| skip_value(body, at), visit)
}

/// [`walk_members`] with the end of each value found by `value_end(key, start)`: a scan that may read
/// the value on its way.
fn walk_members_with(
    body: &[u8],
    value_end: impl FnMut(&[u8], usize) -> Option<usize>,
    visit: impl FnMut(&[u8], Range<usize>) -> bool,
) -> Option<usize> {
    let start = skip_ws(body, 0);
    if body.get(start) != Some(&b'{') {
        return None;
    }
    let i = skip_ws(body, start + 1);
    if body.get(i) == Some(&b'}') {
        return Some(i);
    }
    members_from(body, i, value_end, visit)
}

/// The members of an object from the one whose key starts at `body[i]` to the closing brace, as
/// [`walk_members_with`] walks them; returns the index of that brace.
fn members_from(
    body: &[u8],
    mut i: usize,
    mut value_end: impl FnMut(&[u8], usize) -> Option<usize>,
    mut visit: impl FnMut(&[u8], Range<usize>) -> bool,
) -> Option<usize> {
    loop {
        if body.get(i) != Some(&b'"') {
            return None;
        }
        let key_end = skip_string(body, i)?;
        let key = &body[i + 1..key_end - 1];
        i = skip_ws(body, key_end);
        if body.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(body, i + 1);
        let value_end = value_end(key, value_start)?;
        if !visit(key, value_start..value_end) {
            return None;
        }
        i = skip_ws(body, value_end);
        match body.get(i)? {
            b',' => i = skip_ws(body, i + 1),
            b'}' => return Some(i),
            _ => return None,
        }
    }
}

/// The byte range of a top-level key's value in a JSON object, found without building a tree.
/// Keys written with escape sequences are not matched.
pub fn top_level_value(body: &[u8], key: &str) -> Option<Range<usize>> {
    let [found] = top_level_values(body, [key]);
    found
}

/// The byte range of the value of the last member named `quoted_key` (the key with its quotes, written
/// without escapes) of the JSON object `body`, found from the end: a response puts its `usage` after
/// its content, which this does not scan. `None` when the last occurrence of the key's bytes is not a
/// member of the top-level object (the caller then walks the body from the start).
///
/// Why a match is a key of the top-level object: a quote inside a string is escaped, so the key's
/// closing quote (after a letter) is a string's end, and its opening quote, after `{` or `,`, a string's
/// start; the members after the value are walked to a `}`, and only the top-level object's `}` is the
/// body's last byte. Of a repeated key, the last is found, as a parser that keeps the last sees it.
pub fn last_top_level_value(body: &[u8], quoted_key: &[u8]) -> Option<Range<usize>> {
    if body.get(skip_ws(body, 0)) != Some(&b'{') {
        return None;
    }
    // From the end, each occurrence of the key's first letter (memchr's reverse search is vectorised;
    // its reverse substring search is not, and has a setup cost of its own).
    let letter = *quoted_key.get(1)?;
    let at = memchr::memrchr_iter(letter, body).find_map(|i| {
        let at = i.checked_sub(1)?;
        body[at..].starts_with(quoted_key).then_some(at)
    })?;
    let before = body[..at].iter().rposition(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
    if !matches!(body[before], b'{' | b',') {
        return None;
    }
    let colon = skip_ws(body, at + quoted_key.len());
    if body.get(colon) != Some(&b':') {
        return None;
    }
    let start = skip_ws(body, colon + 1);
    let end = skip_value(body, start)?;
    // The members after it, to the object's closing brace.
    let after = skip_ws(body, end);
    let close = match *body.get(after)? {
        b'}' => after,
        b',' => members_from(body, skip_ws(body, after + 1), |_, at| skip_value(body, at), |_, _| true)?,
        _ => return None,
    };
    (skip_ws(body, close + 1) == body.len()).then_some(start..end)
}

/// [`top_level_value`] for several keys in one pass: each key's first occurrence. The scan stops at the
/// first byte that is not well-formed JSON, keeping what it found before it.
pub fn top_level_values<const N: usize>(body: &[u8], keys: [&str; N]) -> [Option<Range<usize>>; N] {
    top_level_values_reading(body, keys, |_, at| skip_value(body, at))
}

/// [`top_level_values`], and in the same pass the value of `element_key` in each element of the array
/// that is the first value of `keys[array]` (see [`read_elements`]): the array is read once, not skipped
/// and then read.
pub fn top_level_values_and_element_values<const N: usize>(
    body: &[u8],
    keys: [&str; N],
    array: usize,
    element_key: &str,
) -> ([Option<Range<usize>>; N], Vec<Range<usize>>) {
    let mut elements = Vec::new();
    let mut array_read = false;
    let found = top_level_values_reading(body, keys, |key, at| {
        if !array_read && key == keys[array].as_bytes() {
            array_read = true;
            // A fault inside an element ends the reading of elements, not the walk: the value's end then
            // comes from the plain skip, as for any other value.
            return read_elements(body, at, element_key, &mut elements).or_else(|| skip_value(body, at));
        }
        skip_value(body, at)
    });
    (found, elements)
}

fn top_level_values_reading<const N: usize>(
    body: &[u8],
    keys: [&str; N],
    value_end: impl FnMut(&[u8], usize) -> Option<usize>,
) -> [Option<Range<usize>>; N] {
    let mut found: [Option<Range<usize>>; N] = std::array::from_fn(|_| None);
    let mut missing = N;
    walk_members_with(body, value_end, |key, value| {
        if let Some(slot) = keys.iter().position(|k| k.as_bytes() == key) {
            if found[slot].is_none() {
                found[slot] = Some(value);
                missing -= 1;
            }
        }
        missing > 0
    });
    found
}

/// Reads the JSON array at `b[at]`: for each element that is an object holding the top-level `key`, the
/// byte range (in `b`) of that key's first value goes to `values`. Walking an element's members is what
/// finds its end, so nothing is scanned twice. Returns the index after the closing bracket; `None` (with
/// the values read up to there) at the first element or separator that is not well-formed, or when
/// `b[at]` is not an array.
fn read_elements(b: &[u8], at: usize, key: &str, values: &mut Vec<Range<usize>>) -> Option<usize> {
    if b.get(at) != Some(&b'[') {
        return None;
    }
    let mut i = skip_ws(b, at + 1);
    if b.get(i) == Some(&b']') {
        return Some(i + 1);
    }
    loop {
        let end = if b.get(i) == Some(&b'{') {
            let mut found = None;
            let close = walk_members(&b[i..], |k, value| {
                if found.is_none() && k == key.as_bytes() {
                    found = Some(i + value.start..i + value.end);
                }
                true
            })?;
            values.extend(found);
            i + close + 1
        } else {
            skip_value(b, i)?
        };
        i = skip_ws(b, end);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b']' => return Some(i + 1),
            _ => return None,
        }
    }
}

/// The JSON string `json` (quotes included) as text; `None` when it is not a well-formed string. One
/// without escapes or control bytes is copied as it is; any other is parsed.
pub fn string_value(json: &[u8]) -> Option<String> {
    let inner = json.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.iter().all(|&b| b != b'\\' && b >= 0x20) {
        return crate::text::utf8(inner).ok().map(str::to_owned);
    }
    serde_json::from_slice(json).ok()
}

/// `b[i]` is a quote: returns the index after the closing quote. Not a check: a control byte inside
/// is stepped over, and an escape's letter is not looked at.
#[inline(always)]
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        i = crate::strict_json::special_in_string(b, i)?;
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

/// What a byte is to [`skip_value`] inside an object or array: nothing, a string's quote, an opening
/// or a closing bracket.
const PLAIN: u8 = 0;
const QUOTE: u8 = 1;
const OPEN: u8 = 2;
const CLOSE: u8 = 3;
static STRUCTURE: [u8; 256] = {
    let mut table = [PLAIN; 256];
    table[b'"' as usize] = QUOTE;
    table[b'{' as usize] = OPEN;
    table[b'[' as usize] = OPEN;
    table[b'}' as usize] = CLOSE;
    table[b']' as usize] = CLOSE;
    table
};

fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match STRUCTURE[b[j] as usize] {
                    PLAIN => j += 1,
                    QUOTE => j = skip_string(b, j)?,
                    OPEN => {
                        depth += 1;
                        j += 1;
                    }
                    _ => {
                        depth -= 1;
                        j += 1;
                        if depth == 0 {
                            return Some(j);
                        }
                    }
                }
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_top_level_value_is_found_from_the_end_or_not_at_all() {
        fn found(body: &str) -> Option<&str> {
            last_top_level_value(body.as_bytes(), b"\"usage\"").map(|r| &body[r])
        }
        assert_eq!(found(r#"{"choices":[{"x":"}"}],"usage":{"a":1},"id":"x"}"#), Some(r#"{"a":1}"#));
        assert_eq!(found(" { \"usage\" : [1, {\"b\": \"}\"}] , \"k\" : null } \n"), Some(r#"[1, {"b": "}"}]"#));
        assert_eq!(found(r#"{"usage":1,"usage":2}"#), Some("2"), "the last, as serde keeps");
        // Not a top-level member: nested, inside a string, an escaped quote, a value, or text after the object.
        for body in [
            r#"{"a":{"usage":{"n":1}}}"#,
            r#"{"a":[{"usage":1}],"b":2}"#,
            r#"{"a":"x \"usage\": 1"}"#,
            r#"{"a\"usage":1}"#,
            r#"{"a":"usage"}"#,
            r#"{"usage":1} x"#,
            r#"[{"usage":1}]"#,
            r#"{"usage":1,}"#,
            r#"{"usage":1,"b"}"#,
            r#"{"usage":"#,
        ] {
            assert_eq!(found(body), None, "{body}");
        }
    }

    #[test]
    fn an_absent_key_is_added_before_the_closing_brace_keeping_every_other_byte() {
        let body = br#"{"model": "m",  "messages": [{"content": "a\nb"}], "stream": true}"#;
        let out = set_top_level(body, "stream_options", br#"{"include_usage":true}"#).unwrap();
        assert_eq!(
            out,
            br#"{"model": "m",  "messages": [{"content": "a\nb"}], "stream": true,"stream_options":{"include_usage":true}}"#
        );
        assert_eq!(set_top_level(b" { } ", "k", b"1").unwrap(), b" { \"k\":1} ");
        // A top-level key written with an escape could be the same key: the tree decides.
        let escaped = br#"{"stre\u0061m_options": {"x": 1}, "b": 2}"#;
        let tree: serde_json::Value =
            serde_json::from_slice(&set_top_level(escaped, "stream_options", b"7").unwrap()).unwrap();
        assert_eq!(tree, serde_json::json!({"stream_options": 7, "b": 2}));
        // Not an object, or something after it: an error or the tree's verdict, never a spliced body.
        assert!(set_top_level(b"[1]", "k", b"1").is_err());
        assert!(set_top_level(br#"{"a":1} x"#, "k", b"1").is_err());
        assert_eq!(with_stream_usage(br#"{"a":1}"#).unwrap(), br#"{"a":1,"stream_options":{"include_usage":true}}"#);
    }

    #[test]
    fn several_top_level_values_are_found_in_one_pass_and_a_key_read_in_array_elements() {
        let body = br#" {"a": [1, {"b": "x\"}"}], "model" : "m", "c": {"model": 1}, "model": "later"} "#;
        let [a, model, missing] = top_level_values(body, ["a", "model", "zz"]);
        assert_eq!(&body[a.clone().unwrap()], br#"[1, {"b": "x\"}"}]"#);
        assert_eq!(&body[model.unwrap()], br#""m""#, "the first occurrence");
        assert_eq!(missing, None);
        let a = &body[a.unwrap()];
        assert_eq!(elements(a, "b"), [br#""x\"}""#]);
        assert!(elements(b"[]", "b").is_empty());
        assert!(elements(br#""not an array""#, "b").is_empty());
        // Malformed input: what came before the fault is kept, nothing after it.
        let [x, y] = top_level_values(br#"{"x": 1, "y" 2}"#, ["x", "y"]);
        assert_eq!((x, y), (Some(6..7), None));
        assert_eq!(elements(br#"[{"k":1}, {"k":2} {"k":3}]"#, "k").len(), 2);
        assert_eq!(top_level_values(b"[1]", ["x"]), [None]);
        // An escape at the very end of an unterminated string.
        assert_eq!(top_level_values(br#"{"x": "ab\"#, ["x"]), [None]);
    }

    #[test]
    fn finds_top_level_values_not_nested_ones() {
        let body =
            br#" { "messages": [{"model": "inner", "x": "a\"}b"}], "n": 1, "model" : "gpt-4o" , "z": {"model": 2} }"#;
        let span = top_level_value(body, "model").unwrap();
        assert_eq!(&body[span], br#""gpt-4o""#);
        assert_eq!(&body[top_level_value(body, "n").unwrap()], b"1");
        assert!(top_level_value(body, "absent").is_none());
    }

    #[test]
    fn model_override_keeps_every_other_byte() {
        let body = br#"{"model":"alias","messages":[{"role":"user","content":"hi"}],"unknown_field":{"a":[1,2]}}"#;
        let out = with_model(body, "alias", "llama3.2:1b").unwrap();
        assert_eq!(
            &out[..],
            &br#"{"model":"llama3.2:1b","messages":[{"role":"user","content":"hi"}],"unknown_field":{"a":[1,2]}}"#[..]
        );
        assert!(matches!(with_model(body, "alias", "alias").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn stream_usage_is_added_or_merged() {
        let out = with_stream_usage(br#"{"model":"m","stream":true}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        let out = with_stream_usage(br#"{"stream_options":{"include_usage":false,"x":1},"model":"m"}"#).unwrap();
        assert_eq!(&out[..], &br#"{"stream_options":{"include_usage":true,"x":1},"model":"m"}"#[..]);
    }

    #[test]
    fn escaped_key_falls_back_to_a_tree_edit() {
        let out = set_top_level(br#"{"mod\u0065l":"a","x":1}"#, "model", br#""b""#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "b");
        assert_eq!(v["x"], 1);
    }

    /// The values of `key` in the elements of the array `b` (at its first byte that is not space).
    fn elements<'b>(b: &'b [u8], key: &str) -> Vec<&'b [u8]> {
        let mut values = Vec::new();
        read_elements(b, skip_ws(b, 0), key, &mut values);
        values.into_iter().map(|r| &b[r]).collect()
    }

    #[test]
    fn a_string_value_is_copied_when_plain_and_parsed_otherwise() {
        let cases: [&[u8]; 10] = [
            br#""stop""#,
            br#""""#,
            br#""caf\u00e9 \"x\"""#,
            "\"café\"".as_bytes(),
            b"\"a\tb\"",
            br#""a"#,
            br#""a\""#,
            b"\"\xff\"",
            b"null",
            b"7",
        ];
        for json in cases {
            let parsed = serde_json::from_slice::<String>(json).ok();
            assert_eq!(string_value(json), parsed, "{}", String::from_utf8_lossy(json));
        }
        assert_eq!(string_value(br#""stop""#).as_deref(), Some("stop"));
    }

    #[test]
    fn a_key_is_read_from_each_object_element_in_order() {
        let choices = br#" [ {"index":0,"message":{"finish_reason":"nested"},"finish_reason":"stop"},
            "text", 7, {"index":1}, {"finish_reason":null,"finish_reason":"later"} ,{"finish_reason":"length"}] "#;
        assert_eq!(elements(choices, "finish_reason"), [&br#""stop""#[..], b"null", br#""length""#]);
        // A malformed element ends the reading; what came before it stands.
        let broken = br#"[{"finish_reason":"stop"}, {"finish_reason":"length" "x"}, {"finish_reason":"tail"}]"#;
        assert_eq!(elements(broken, "finish_reason"), [&br#""stop""#[..]]);
        assert_eq!(elements(br#"[{"finish_reason":"stop"}"#, "finish_reason").len(), 1, "unterminated array");
    }

    #[test]
    fn the_array_is_read_in_the_same_pass_as_the_top_level() {
        let body = br#"{"choices": [{"message": {"content": "a \"quoted\" [reply]"}, "finish_reason": "stop"},
            {"finish_reason": "length"}], "model": "m", "choices": [{"finish_reason": "second"}], "usage": {"x": 1}}"#;
        let keys = ["choices", "model", "usage"];
        let (found, values) = top_level_values_and_element_values(body, keys, 0, "finish_reason");
        assert_eq!(found, top_level_values(body, keys));
        let values: Vec<&[u8]> = values.into_iter().map(|r| &body[r]).collect();
        assert_eq!(values, [&br#""stop""#[..], br#""length""#], "the first `choices` only");
        // An element that is not well-formed ends the elements' reading, not the walk: `usage` after it
        // is still found, as without the array being read.
        let faulty = br#"{"choices": [{"finish_reason": "stop"}, {"a" 1}], "usage": {"x": 1}}"#;
        let (found, values) = top_level_values_and_element_values(faulty, keys, 0, "finish_reason");
        assert_eq!(found, top_level_values(faulty, keys));
        assert!(found[2].is_some());
        assert_eq!(values.len(), 1);
    }

    #[test]
    fn a_string_ends_at_its_first_unescaped_quote_at_any_length_and_offset() {
        // Lengths and offsets on both sides of the word reads and of the switch to memchr.
        for len in 0usize..80 {
            for escape_at in [None, Some(0), Some(len / 3), Some(len.saturating_sub(1))] {
                let mut text = vec![b'x'; len];
                if let Some(at) = escape_at.filter(|_| len > 0) {
                    text[at] = b'"';
                    text.insert(at, b'\\');
                }
                for lead in 0..9 {
                    let mut body = b" ".repeat(lead);
                    body.extend_from_slice(br#"{"k":""#);
                    body.extend_from_slice(&text);
                    body.extend_from_slice(br#"","z":[1,"]"]}"#);
                    let [k, z] = top_level_values(&body, ["k", "z"]);
                    assert_eq!(&body[k.unwrap()][1..=text.len()], &text[..], "len {len}, lead {lead}");
                    assert_eq!(&body[z.unwrap()], br#"[1,"]"]"#, "len {len}, lead {lead}");
                }
            }
        }
        // A control byte is stepped over, as a walker that does not check does.
        assert_eq!(skip_string(b"\"a\x01b\" x", 0), Some(5));
        assert_eq!(skip_string(b"\"a\x01b", 0), None);
    }
}
