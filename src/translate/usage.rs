//! Token usage: the [`Usage`] every translator and the accounting speak (Anthropic's terms), and one
//! reader per API's usage object (OpenAI chat, Responses, Anthropic, Bedrock Converse, Gemini). The
//! readers take any [`Fields`]: a parsed [`Value`], as the translators have, or the bytes of a body's
//! `usage` object ([`RawObject`]), read without building a tree.

use serde_json::{json, Value};

/// Token usage in Anthropic terms: `input_tokens` excludes cached tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub reasoning_tokens: u64,
}

impl Usage {
    /// OpenAI `prompt_tokens`: all input, cached or not.
    pub fn prompt_tokens(&self) -> u64 {
        self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens
    }

    /// OpenAI Responses-shaped usage object.
    pub fn to_responses_json(&self) -> Value {
        let input = self.prompt_tokens();
        json!({
            "input_tokens": input,
            "input_tokens_details": {
                "cached_tokens": self.cache_read_input_tokens,
                "cache_write_tokens": self.cache_creation_input_tokens,
            },
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": input + self.output_tokens,
        })
    }

    /// OpenAI-shaped usage object.
    pub fn to_openai_json(&self) -> Value {
        let prompt = self.prompt_tokens();
        let mut u = json!({
            "prompt_tokens": prompt,
            "completion_tokens": self.output_tokens,
            "total_tokens": prompt + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cache_read_input_tokens},
        });
        if self.reasoning_tokens > 0 {
            u["completion_tokens_details"] = json!({"reasoning_tokens": self.reasoning_tokens});
        }
        u
    }

    /// Anthropic-shaped usage object.
    pub fn to_anthropic_json(&self) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
        })
    }

    /// Overwrite the fields present in an Anthropic usage object (streaming
    /// usage is cumulative, so later values replace earlier ones).
    pub fn merge_anthropic<F: Fields>(&mut self, v: F) {
        let keys = ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"];
        let slots = [
            &mut self.input_tokens,
            &mut self.output_tokens,
            &mut self.cache_read_input_tokens,
            &mut self.cache_creation_input_tokens,
        ];
        for (slot, field) in slots.into_iter().zip(v.fields(keys)) {
            if let Some(n) = field.count() {
                *slot = n;
            }
        }
    }
}

/// A JSON object the usage readers look fields up in: a parsed [`Value`], or the bytes of one
/// ([`RawObject`]), scanned without building a tree (a response body's `usage` is read on every request).
pub trait Fields: Copy {
    /// The fields `keys`, looked up together (one scan of raw bytes).
    fn fields<const N: usize>(self, keys: [&str; N]) -> [Field<Self>; N];
    /// The field `key` when it is a non-negative integer (`Value::as_u64`).
    fn count(self, key: &str) -> Option<u64> {
        let [field] = self.fields([key]);
        field.count()
    }
    /// The field `key` when it is an object.
    fn object(self, key: &str) -> Option<Self> {
        let [field] = self.fields([key]);
        field.object()
    }
    /// The object under `key` when there is one (a whole response holding a `usage` object), else itself.
    fn inner_or_self(self, key: &str) -> Self {
        self.object(key).unwrap_or(self)
    }
}

/// A field of a [`Fields`] object as the usage readers see it.
#[derive(Debug, Clone, Copy)]
pub enum Field<F> {
    /// A non-negative integer.
    Count(u64),
    Object(F),
    /// Absent, or any other value.
    Other,
}

impl<F> Field<F> {
    pub fn count(self) -> Option<u64> {
        match self {
            Field::Count(n) => Some(n),
            _ => None,
        }
    }

    pub fn object(self) -> Option<F> {
        match self {
            Field::Object(o) => Some(o),
            _ => None,
        }
    }
}

impl Fields for &Value {
    fn fields<const N: usize>(self, keys: [&str; N]) -> [Field<Self>; N] {
        keys.map(|key| match self.get(key) {
            Some(v) if v.is_object() => Field::Object(v),
            Some(v) => v.as_u64().map_or(Field::Other, Field::Count),
            None => Field::Other,
        })
    }
}

/// The bytes of a JSON value read as an object with [`crate::json::top_level_values`] (anything but an
/// object has no fields).
#[derive(Debug, Clone, Copy)]
pub struct RawObject<'b>(pub &'b [u8]);

impl Fields for RawObject<'_> {
    fn fields<const N: usize>(self, keys: [&str; N]) -> [Field<Self>; N] {
        crate::json::top_level_values(self.0, keys).map(|range| {
            let Some(value) = range.map(|r| &self.0[r]) else { return Field::Other };
            match value.first() {
                Some(b'{') => Field::Object(RawObject(value)),
                // Only a plain integer counts, as with `Value::as_u64` (no fraction, exponent or sign);
                // digits past u64 are not a count either.
                Some(b'0'..=b'9') => crate::digits::parse_decimal(value).map_or(Field::Other, Field::Count),
                _ => Field::Other,
            }
        })
    }

    /// A `usage` object read from a response body is most of what comes here: when the key's bytes are
    /// nowhere in the object, a byte search tells it holds no such member, without a walk.
    fn inner_or_self(self, key: &str) -> Self {
        let key_bytes = key.as_bytes();
        let mentioned = key_bytes
            .first()
            .is_some_and(|&first| memchr::memchr_iter(first, self.0).any(|at| self.0[at..].starts_with(key_bytes)));
        if !mentioned {
            return self;
        }
        self.object(key).unwrap_or(self)
    }
}

/// The bytes of a `usage` object itself, as found in an answer: read as a [`RawObject`], without the
/// search for a `usage` member inside it that a whole response needs.
#[derive(Debug, Clone, Copy)]
pub struct UsageObject<'b>(pub &'b [u8]);

impl Fields for UsageObject<'_> {
    #[inline(always)]
    fn fields<const N: usize>(self, keys: [&str; N]) -> [Field<Self>; N] {
        RawObject(self.0).fields(keys).map(|field| match field {
            Field::Count(n) => Field::Count(n),
            Field::Object(o) => Field::Object(UsageObject(o.0)),
            Field::Other => Field::Other,
        })
    }

    fn inner_or_self(self, _key: &str) -> Self {
        self
    }
}

/// Usage from an OpenAI `usage` object (or a whole response/chunk holding
/// one). `input_tokens` is `prompt_tokens - cached_tokens`.
pub fn usage_from_openai<F: Fields>(v: F) -> Option<Usage> {
    let [prompt, completion, prompt_details, completion_details] = v.inner_or_self("usage").fields([
        "prompt_tokens",
        "completion_tokens",
        "prompt_tokens_details",
        "completion_tokens_details",
    ]);
    let (prompt, completion) = (prompt.count(), completion.count());
    if prompt.is_none() && completion.is_none() {
        return None;
    }
    let prompt = prompt.unwrap_or(0);
    let detail = |object: Field<F>, key: &str| object.object().and_then(|d| d.count(key)).unwrap_or(0);
    let cached = detail(prompt_details, "cached_tokens").min(prompt);
    Some(Usage {
        input_tokens: prompt - cached,
        output_tokens: completion.unwrap_or(0),
        cache_read_input_tokens: cached,
        cache_creation_input_tokens: 0,
        reasoning_tokens: detail(completion_details, "reasoning_tokens"),
    })
}

/// Usage from an Anthropic `usage` object (or a whole message / event
/// holding one).
pub fn usage_from_anthropic<F: Fields>(v: F) -> Option<Usage> {
    let u = v.inner_or_self("usage");
    if u.fields(["input_tokens", "output_tokens"]).iter().all(|f| f.count().is_none()) {
        return None;
    }
    let mut usage = Usage::default();
    usage.merge_anthropic(u);
    Some(usage)
}

/// Usage from a Bedrock Converse `usage` object (`inputTokens` excludes cache reads and writes).
pub fn usage_from_converse<F: Fields>(v: F) -> Option<Usage> {
    let [input, output, cache_read, cache_write] = v
        .inner_or_self("usage")
        .fields(["inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"])
        .map(Field::count);
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(Usage {
        input_tokens: input.unwrap_or(0),
        output_tokens: output.unwrap_or(0),
        cache_read_input_tokens: cache_read.unwrap_or(0),
        cache_creation_input_tokens: cache_write.unwrap_or(0),
        reasoning_tokens: 0,
    })
}

/// Usage from a Gemini `usageMetadata` object (or a whole response / stream chunk holding one).
/// `promptTokenCount` includes `cachedContentTokenCount`, so `input_tokens` is their difference and
/// [`Usage::prompt_tokens`] is `promptTokenCount`; output is `candidatesTokenCount` plus
/// `thoughtsTokenCount` (Gemini counts thoughts apart, OpenAI's `completion_tokens` includes reasoning),
/// and the thoughts are also the reasoning tokens. `toolUsePromptTokenCount` (built-in tools, which the
/// translators never declare) is not counted. Stream chunks carry cumulative totals: each replaces the
/// last.
pub fn usage_from_gemini(v: &Value) -> Option<Usage> {
    let u = match v.get("usageMetadata") {
        Some(inner) if inner.is_object() => inner,
        _ => v,
    };
    let field = |k: &str| u.get(k).and_then(Value::as_u64);
    let prompt = field("promptTokenCount");
    let candidates = field("candidatesTokenCount");
    if prompt.is_none() && candidates.is_none() {
        return None;
    }
    let prompt = prompt.unwrap_or(0);
    let cached = field("cachedContentTokenCount").unwrap_or(0).min(prompt);
    let thoughts = field("thoughtsTokenCount").unwrap_or(0);
    Some(Usage {
        input_tokens: prompt - cached,
        output_tokens: candidates.unwrap_or(0) + thoughts,
        cache_read_input_tokens: cached,
        cache_creation_input_tokens: 0,
        reasoning_tokens: thoughts,
    })
}

/// Usage from an OpenAI Responses `usage` object (or a whole response holding one): `input_tokens`
/// includes `input_tokens_details.cached_tokens` (read from the cache) and `cache_write_tokens` (written
/// to it); `output_tokens_details.reasoning_tokens` is part of `output_tokens`.
pub fn usage_from_responses<F: Fields>(v: F) -> Option<Usage> {
    let [input, output, input_details, output_details] = v.inner_or_self("usage").fields([
        "input_tokens",
        "output_tokens",
        "input_tokens_details",
        "output_tokens_details",
    ]);
    let (input, output) = (input.count(), output.count());
    if input.is_none() && output.is_none() {
        return None;
    }
    let input = input.unwrap_or(0);
    let [cached, written] = input_details
        .object()
        .map_or([None, None], |d| d.fields(["cached_tokens", "cache_write_tokens"]).map(Field::count));
    let cached = cached.unwrap_or(0).min(input);
    let written = written.unwrap_or(0).min(input - cached);
    Some(Usage {
        input_tokens: input - cached - written,
        output_tokens: output.unwrap_or(0),
        cache_read_input_tokens: cached,
        cache_creation_input_tokens: written,
        reasoning_tokens: output_details.object().and_then(|d| d.count("reasoning_tokens")).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_read_from_bytes_matches_usage_read_from_a_parsed_value() {
        let cases = [
            r#"{"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
                "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 5}}"#,
            r#"{"usage": {"prompt_tokens": 7, "completion_tokens": 2}, "id": "x"}"#,
            r#"{"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 7, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 2},
                "output_tokens_details": {"reasoning_tokens": 1}}"#,
            r#"{"inputTokens": 3, "outputTokens": 4, "cacheReadInputTokens": 20, "cacheWriteInputTokens": 3}"#,
            // Values of other types count as absent, as `Value::as_u64` has it.
            r#"{"prompt_tokens": 1.5, "completion_tokens": "2", "input_tokens": -1, "output_tokens": null,
                "prompt_tokens_details": 3, "completion_tokens_details": {"reasoning_tokens": 2e1}}"#,
            r#"{"prompt_tokens" : 5 , "completion_tokens":6,"prompt_tokens_details":{"cached_tokens":99}}"#,
            r#"{"id": "nothing here"}"#,
            // The largest count, and one past it (serde reads that as a float: not a count).
            r#"{"prompt_tokens": 18446744073709551615, "completion_tokens": 18446744073709551616, "input_tokens": 0}"#,
            // The word `usage` elsewhere than as a key holding an object: the object itself is read.
            r#"{"note": "usage", "prompt_tokens": 3, "usage": 4, "completion_tokens": 1}"#,
            "null",
            "[1, 2]",
        ];
        for case in cases {
            let value: Value = serde_json::from_str(case).unwrap();
            let raw = RawObject(case.as_bytes());
            assert_eq!(usage_from_openai(raw), usage_from_openai(&value), "{case}");
            assert_eq!(usage_from_anthropic(raw), usage_from_anthropic(&value), "{case}");
            assert_eq!(usage_from_converse(raw), usage_from_converse(&value), "{case}");
            assert_eq!(usage_from_responses(raw), usage_from_responses(&value), "{case}");
        }
        // A usage object as found in an answer reads as a whole response's does, when it holds no `usage`.
        for case in cases.iter().filter(|c| !c.contains(r#""usage": {"#)) {
            let (raw, object) = (RawObject(case.as_bytes()), UsageObject(case.as_bytes()));
            assert_eq!(usage_from_openai(object), usage_from_openai(raw), "{case}");
            assert_eq!(usage_from_anthropic(object), usage_from_anthropic(raw), "{case}");
            assert_eq!(usage_from_converse(object), usage_from_converse(raw), "{case}");
            assert_eq!(usage_from_responses(object), usage_from_responses(raw), "{case}");
        }
        // It is read as itself: a member named `usage` inside it is not looked into.
        assert_eq!(usage_from_openai(UsageObject(cases[1].as_bytes())), None);
        // The cached tokens of the sixth case are capped at the prompt's: read, not skipped.
        let capped = usage_from_openai(RawObject(cases[5].as_bytes())).unwrap();
        assert_eq!((capped.input_tokens, capped.cache_read_input_tokens, capped.output_tokens), (0, 5, 6));
    }

    #[test]
    fn usage_from_openai_splits_cached_tokens_out_of_input() {
        let u = usage_from_openai(&json!({"usage": {
            "prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 60},
            "completion_tokens_details": {"reasoning_tokens": 5}
        }}))
        .unwrap();
        assert_eq!(
            u,
            Usage {
                input_tokens: 40,
                output_tokens: 20,
                cache_read_input_tokens: 60,
                cache_creation_input_tokens: 0,
                reasoning_tokens: 5
            }
        );
        assert_eq!(usage_from_openai(&json!({"id": "x"})), None);
    }

    #[test]
    fn usage_from_anthropic_reads_cache_fields_and_prompt_total() {
        let u = usage_from_anthropic(&json!({
            "input_tokens": 10, "output_tokens": 3,
            "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7
        }))
        .unwrap();
        assert_eq!(u.prompt_tokens(), 117);
        assert_eq!(u.to_openai_json()["prompt_tokens_details"]["cached_tokens"], 100);
        assert_eq!(u.to_openai_json()["total_tokens"], 120);
        assert_eq!(usage_from_anthropic(&json!(null)), None);
    }

    #[test]
    fn usage_from_converse_maps_cache_fields() {
        let u = usage_from_converse(&json!({"usage": {"inputTokens": 3, "outputTokens": 4, "totalTokens": 30,
            "cacheReadInputTokens": 20, "cacheWriteInputTokens": 3}}))
        .unwrap();
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens),
            (3, 4, 20, 3)
        );
        assert_eq!(u.prompt_tokens(), 26);
        assert_eq!(usage_from_converse(&json!({"metrics": {}})), None);
    }

    #[test]
    fn usage_from_gemini_keeps_prompt_tokens_and_counts_thoughts_as_output() {
        let u = usage_from_gemini(&json!({"usageMetadata": {
            "promptTokenCount": 120, "candidatesTokenCount": 30, "thoughtsTokenCount": 50,
            "cachedContentTokenCount": 100, "totalTokenCount": 200
        }}))
        .unwrap();
        assert_eq!(u.prompt_tokens(), 120);
        assert_eq!((u.input_tokens, u.cache_read_input_tokens), (20, 100));
        assert_eq!((u.output_tokens, u.reasoning_tokens), (80, 50));
        let o = u.to_openai_json();
        assert_eq!(o["total_tokens"], 200);
        assert_eq!(o["completion_tokens_details"]["reasoning_tokens"], 50);
        assert_eq!(usage_from_gemini(&json!({"candidates": []})), None);
        let blocked = usage_from_gemini(&json!({"promptTokenCount": 7, "totalTokenCount": 7})).unwrap();
        assert_eq!((blocked.input_tokens, blocked.output_tokens), (7, 0));
    }
}
