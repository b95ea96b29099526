//! JSON's grammar checked byte by byte, building nothing: what serde_json accepts when it skips a value
//! (`IgnoredAny`), this accepts, and what it refuses, this refuses. The request peek reads its few
//! top-level fields with it and skips the rest, checked, for a fraction of serde's cost.
//!
//! Like serde when it skips, a string's bytes from 0x80 up are not checked as UTF-8: a caller that
//! reads a string as text checks it. Containers nested deeper than [`MAX_DEPTH`] are refused (serde
//! skips any depth): a caller that gets `None` asks serde, whose verdict and error message stand.

/// How deep containers may nest in a skipped value.
pub const MAX_DEPTH: usize = 256;

/// The index of the first byte at or after `i` that is not JSON whitespace. Most JSON has none
/// between tokens: a byte above the space is checked first.
#[inline(always)]
pub fn skip_ws(b: &[u8], mut i: usize) -> usize {
    if b.get(i).is_some_and(|&c| c > b' ') {
        return i;
    }
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// `b[i]` is a quote: the index after the string's closing quote, and whether the string holds an
/// escape. `None` when the string is not well formed: a control byte, an escape JSON does not have, or
/// no closing quote.
#[inline]
pub fn string_end(b: &[u8], i: usize) -> Option<(usize, bool)> {
    let mut i = i + 1;
    let mut escaped = false;
    loop {
        i = special_in_string(b, i)?;
        match b[i] {
            b'"' => return Some((i + 1, escaped)),
            b'\\' => {
                escaped = true;
                i = match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i + 2,
                    b'u' if b.get(i + 2..i + 6)?.iter().all(u8::is_ascii_hexdigit) => i + 6,
                    _ => return None,
                };
            }
            // A control byte.
            _ => return None,
        }
    }
}

/// The index of the first byte at or after `i` that ends a string's plain run: a quote, a backslash
/// or a control byte (below 0x20). Sixteen bytes at a time with SSE2 (part of every x86-64), eight
/// at a time elsewhere; the last few bytes of the body one by one.
#[inline(always)]
pub(crate) fn special_in_string(b: &[u8], i: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    let words = sixteen_at_a_time(b, i);
    #[cfg(not(target_arch = "x86_64"))]
    let words = eight_at_a_time(b, i);
    match words {
        Ok(found) => Some(found),
        Err(i) => b.get(i..)?.iter().position(|&c| is_special(c)).map(|at| i + at),
    }
}

fn is_special(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

/// [`special_in_string`] sixteen bytes at a time: `Ok` with the special byte's index, or `Err` with
/// the index from which no special byte was looked for (the end, unless `b` is shorter than sixteen
/// bytes). The last bytes are looked at in the sixteen that end `b`, the ones before `i` masked off.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn sixteen_at_a_time(b: &[u8], mut i: usize) -> Result<usize, usize> {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let specials = |at: usize| -> u32 {
        debug_assert!(at + 16 <= b.len());
        // SAFETY: SSE2 is in every x86-64 CPU, and the unaligned load reads `b[at..at + 16]`, which
        // every caller keeps in bounds.
        unsafe {
            let v = _mm_loadu_si128(b.as_ptr().add(at).cast());
            let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // A byte below 0x20 is its own minimum with 0x1f.
            let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
            _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
        }
    };
    while i + 16 <= b.len() {
        let mask = specials(i);
        if mask != 0 {
            return Ok(i + mask.trailing_zeros() as usize);
        }
        i += 16;
    }
    if i < b.len() && b.len() >= 16 {
        let last = b.len() - 16;
        let mask = specials(last) >> (i - last);
        return if mask != 0 { Ok(i + mask.trailing_zeros() as usize) } else { Err(b.len()) };
    }
    Err(i)
}

/// [`special_in_string`] eight bytes at a time, read as one word: `Ok` with the special byte's index,
/// or `Err` with the index from which fewer than eight bytes are left.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn eight_at_a_time(b: &[u8], mut i: usize) -> Result<usize, usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    while let Some(bytes) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(bytes.try_into().unwrap_or_default());
        // A byte of `quotes`/`backslashes` is zero where the word holds that byte, and `x - ONES & !x`
        // flags a zero byte's high bit; `word - 0x20…` with `!word` flags a byte below 0x20. Only a
        // flagged byte borrows, so the lowest flag is exact.
        let quotes = word ^ (ONES * u64::from(b'"'));
        let backslashes = word ^ (ONES * u64::from(b'\\'));
        let found = (quotes.wrapping_sub(ONES) & !quotes
            | backslashes.wrapping_sub(ONES) & !backslashes
            | word.wrapping_sub(ONES * 0x20) & !word)
            & HIGH;
        if found != 0 {
            return Ok(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    Err(i)
}

/// The index after the number that starts at `b[i]`: `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digits_from =
        |i: usize| i + b.get(i..).map_or(0, |rest| rest.iter().take_while(|c| c.is_ascii_digit()).count());
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match *b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits_from(i + 1),
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        let end = digits_from(i + 1);
        if end == i + 1 {
            return None;
        }
        i = end;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let end = digits_from(i);
        if end == i {
            return None;
        }
        i = end;
    }
    Some(i)
}

/// `b[i]` starts a member: the index after its key's closing quote, whether the key holds an escape,
/// and the index after the colon that follows it.
#[inline]
fn member_key(b: &[u8], i: usize) -> Option<(usize, bool, usize)> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let (key_end, escaped) = string_end(b, i)?;
    let colon = skip_ws(b, key_end);
    (b.get(colon) == Some(&b':')).then_some((key_end, escaped, colon + 1))
}

/// [`member_key`]: the index after the colon.
#[inline]
fn after_key(b: &[u8], i: usize) -> Option<usize> {
    member_key(b, i).map(|(_, _, after)| after)
}

/// The index after the JSON value that starts at `b[i]` or after whitespace there; `None` when the
/// value is not well formed or nests deeper than [`MAX_DEPTH`]. What follows the value is not looked at.
pub fn value_end(b: &[u8], mut i: usize) -> Option<usize> {
    // One bit per open container, set for an object.
    let mut objects = [0u64; MAX_DEPTH / 64];
    let mut depth = 0usize;
    loop {
        // A value starts at `i`.
        i = skip_ws(b, i);
        match *b.get(i)? {
            b'"' => i = string_end(b, i)?.0,
            open @ (b'{' | b'[') => {
                let object = open == b'{';
                i = skip_ws(b, i + 1);
                if *b.get(i)? == if object { b'}' } else { b']' } {
                    i += 1;
                } else {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    let bit = 1u64 << (depth % 64);
                    objects[depth / 64] = if object { objects[depth / 64] | bit } else { objects[depth / 64] & !bit };
                    depth += 1;
                    if object {
                        i = after_key(b, i)?;
                    }
                    continue;
                }
            }
            b't' => i = literal_end(b, i, b"true")?,
            b'f' => i = literal_end(b, i, b"false")?,
            b'n' => i = literal_end(b, i, b"null")?,
            _ => i = number_end(b, i)?,
        }
        // A value ended at `i`: a comma goes on to the next one, a closing bracket ends its container.
        loop {
            if depth == 0 {
                return Some(i);
            }
            i = skip_ws(b, i);
            let object = objects[(depth - 1) / 64] >> ((depth - 1) % 64) & 1 == 1;
            match (*b.get(i)?, object) {
                (b',', true) => {
                    i = after_key(b, skip_ws(b, i + 1))?;
                    break;
                }
                (b',', false) => {
                    i += 1;
                    break;
                }
                (b'}', true) | (b']', false) => {
                    depth -= 1;
                    i += 1;
                }
                _ => return None,
            }
        }
    }
}

/// The index after `literal` when `b[i..]` starts with it.
#[inline]
pub fn literal_end(b: &[u8], i: usize, literal: &[u8]) -> Option<usize> {
    b.get(i..)?.starts_with(literal).then_some(i + literal.len())
}

/// Walks the members of the object at `b[i]` (its opening brace), handing `visit` each key (written
/// without escapes, and valid UTF-8) and the index where its value starts; `visit` returns the index
/// after the value, or `None` to stop. Returns the index after the closing brace; `None` when a key is
/// written with an escape or is not UTF-8 (serde reads keys as text), when `visit` stopped, or when the
/// object is not well formed.
pub fn members(b: &[u8], i: usize, mut visit: impl FnMut(&[u8], usize) -> Option<usize>) -> Option<usize> {
    let mut i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        let (key_end, escaped, after_colon) = member_key(b, i)?;
        let key = &b[i + 1..key_end - 1];
        if escaped || !key.is_ascii() && std::str::from_utf8(key).is_err() {
            return None;
        }
        i = skip_ws(b, visit(key, skip_ws(b, after_colon))?);
        match *b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' => return Some(i + 1),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(text: &str) -> bool {
        value_end(text.as_bytes(), 0).is_some_and(|end| skip_ws(text.as_bytes(), end) == text.len())
    }

    #[test]
    fn what_serde_skips_is_accepted_and_what_it_refuses_is_refused() {
        for good in [
            "0",
            "-0",
            "-12.5e+3",
            "1E9",
            " true ",
            "null",
            "\"a\\u00e9\\n\\\"\"",
            "\"\u{e9}\u{1f600}\"",
            "[]",
            "{}",
            " [ 1 , [ ] , { } , \"x\" ] ",
            r#"{"a":{"b":[1,{"c":null}]},"d":"}"}"#,
            "\"\\ud800\"",
        ] {
            assert!(whole(good), "{good}");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(good).is_ok(), "serde on {good}");
        }
        for bad in [
            "",
            "01",
            "-",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "tru",
            "nul",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\"}",
            "{1:2}",
            "[1 2]",
            "{\"a\":1 \"b\":2}",
            "\"a",
            "\"\\x\"",
            "\"\\u12g4\"",
            "\"\t\"",
            "[",
            "{\"a\":",
            "]",
            "[1}",
            "{\"a\":1]",
            "'a'",
        ] {
            assert!(!whole(bad), "{bad:?}");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(bad).is_err(), "serde on {bad:?}");
        }
    }

    #[test]
    fn strings_end_at_their_closing_quote_whatever_their_length() {
        for len in 0..40 {
            let text = format!("\"{}\\\"{}\" tail", "a".repeat(len), "b".repeat(len));
            let (end, escaped) = string_end(text.as_bytes(), 0).unwrap();
            assert_eq!((&text[end..], escaped), (" tail", true), "{len}");
            let control = format!("\"{}\u{1}\"", "a".repeat(len));
            assert_eq!(string_end(control.as_bytes(), 0), None, "{len}");
            let open = format!("\"{}", "a".repeat(len));
            assert_eq!(string_end(open.as_bytes(), 0), None, "{len}");
        }
        // Bytes from 0x80 up (UTF-8, or not) are plain string bytes, as for serde when it skips.
        assert_eq!(string_end(b"\"\xff\xfe\x80\"", 0), Some((5, false)));
    }

    #[test]
    fn the_word_scans_find_the_first_special_byte_as_a_byte_loop_does() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed = crate::router::xorshift(seed);
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 48) as usize;
            // Mostly plain bytes (from 0x20 up, including 0x80 and above), a special one now and then.
            let bytes: Vec<u8> = (0..len)
                .map(|_| match next() % 40 {
                    0 => b'"',
                    1 => b'\\',
                    2 => (next() % 0x20) as u8,
                    _ => 0x20 + (next() % 0xe0) as u8,
                })
                .collect();
            let from = (next() % (len as u64 + 1)) as usize;
            let expected = bytes[from..].iter().position(|&c| is_special(c)).map(|at| from + at);
            let finish = |words: Result<usize, usize>| match words {
                Ok(found) => Some(found),
                Err(i) => bytes[i..].iter().position(|&c| is_special(c)).map(|at| i + at),
            };
            assert_eq!(finish(eight_at_a_time(&bytes, from)), expected, "{bytes:?} from {from}");
            #[cfg(target_arch = "x86_64")]
            assert_eq!(finish(sixteen_at_a_time(&bytes, from)), expected, "{bytes:?} from {from}");
            assert_eq!(special_in_string(&bytes, from), expected);
        }
    }

    #[test]
    fn nesting_is_followed_to_the_depth_limit_and_refused_past_it() {
        let nested = |depth: usize| format!("{}1{}", "[{\"k\":".repeat(depth / 2), "}]".repeat(depth / 2));
        assert!(whole(&nested(MAX_DEPTH)));
        assert!(!whole(&nested(MAX_DEPTH + 2)));
        // Objects and arrays interleaved across the words of the bit stack close in the right order.
        let mixed = format!("{}0{}", "[{\"a\":".repeat(100), "}]".repeat(100));
        assert!(whole(&mixed));
        let crossed = format!("{}0{}", "[{\"a\":".repeat(100), "]}".repeat(100));
        assert!(!whole(&crossed));
    }

    #[test]
    fn members_hand_each_plain_key_its_value_and_refuse_escaped_or_non_utf8_keys() {
        let body = br#" {"a" : 1 , "b":{"x":[2]}, "c":"}"} "#;
        let mut seen = Vec::new();
        let end = members(body, 1, |key, at| {
            let end = value_end(body, at)?;
            seen.push((String::from_utf8(key.to_vec()).unwrap(), String::from_utf8(body[at..end].to_vec()).unwrap()));
            Some(end)
        });
        assert_eq!(end, Some(body.len() - 1));
        assert_eq!(
            seen,
            [("a".into(), "1".into()), ("b".into(), r#"{"x":[2]}"#.into()), ("c".into(), r#""}""#.into())]
        );
        assert_eq!(members(b"{}", 0, |_, _| None), Some(2));
        for refused in [&br#"{"\u0061":1}"#[..], b"{\"\xff\":1}", b"{\"a\":1", b"{\"a\":1,}", b"{\"a\" 1}"] {
            assert_eq!(
                members(refused, 0, |_, at| value_end(refused, at)),
                None,
                "{}",
                String::from_utf8_lossy(refused)
            );
        }
        assert_eq!(members("{\"é\":1}".as_bytes(), 0, |_, at| value_end(b"{\"\xc3\xa9\":1}", at)), Some(8));
    }
}
