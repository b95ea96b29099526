use super::*;

fn event(name: Option<&'static str>, data: &'static str) -> Event<'static> {
    Event { name, data: std::borrow::Cow::Borrowed(data.as_bytes()), raw: &[] }
}

#[test]
fn anthropic_usage_is_set_from_message_start_then_replaced_by_cumulative_deltas() {
    let mut s = StreamUsage::new(Api::Anthropic, false);
    for data in [
        r#"{"type":"message_start","message":{"usage":{"input_tokens":25,"output_tokens":1}}}"#,
        r#"{"type":"content_block_delta","delta":{"text":"hi"}}"#,
        r#"{"type":"message_delta","usage":{"output_tokens":10}}"#,
        r#"{"type":"message_delta","usage":{"output_tokens":15}}"#,
    ] {
        s.observe(&event(None, data));
    }
    let u = s.usage().unwrap();
    assert_eq!((u.input_tokens, u.output_tokens), (25, 15));
    assert_eq!(s.content_events(), 1);
}

#[test]
fn openai_usage_only_chunk_is_stripped_only_when_asked() {
    let chunk = r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
    let mut s = StreamUsage::new(Api::OpenAi, true);
    assert_eq!(s.observe(&event(None, r#"{"choices":[{"delta":{"content":"a"}}],"usage":null}"#)), EventKind::Content);
    assert_eq!(s.observe(&event(None, chunk)), EventKind::StrippedUsage);
    assert_eq!(s.observe(&event(None, "[DONE]")), EventKind::Other);
    assert_eq!(s.usage().unwrap().output_tokens, 2);
    let mut s = StreamUsage::new(Api::OpenAi, false);
    assert_eq!(s.observe(&event(None, chunk)), EventKind::Other);
}

#[test]
fn converse_usage_comes_from_metadata_and_deltas_count_as_content() {
    let mut s = StreamUsage::new(Api::Converse, false);
    s.observe(&event(Some("messageStart"), r#"{"role":"assistant"}"#));
    s.observe(&event(Some("contentBlockDelta"), r#"{"contentBlockIndex":0,"delta":{"text":"Hi"}}"#));
    s.observe(&event(Some("messageStop"), r#"{"stopReason":"end_turn"}"#));
    s.observe(&event(
        Some("metadata"),
        r#"{"usage":{"inputTokens":11,"outputTokens":7,"totalTokens":18,"cacheReadInputTokens":3}}"#,
    ));
    let u = s.usage().unwrap();
    assert_eq!((u.input_tokens, u.output_tokens, u.cache_read_input_tokens), (11, 7, 3));
    assert_eq!(s.content_events(), 1);
}

#[test]
fn gemini_usage_is_cumulative_per_chunk_and_set_not_added() {
    let mut s = StreamUsage::new(Api::Gemini, false);
    for data in [
        r#"{"candidates":[{"content":{"parts":[{"text":"a"}]}}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":1}}"#,
        r#"{"candidates":[{"content":{"parts":[{"text":"b"}]}}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":2}}"#,
        r#"{"candidates":[{"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":4,"thoughtsTokenCount":3,"cachedContentTokenCount":5}}"#,
    ] {
        s.observe(&event(None, data));
    }
    let u = s.usage().unwrap();
    assert_eq!((u.prompt_tokens(), u.input_tokens, u.cache_read_input_tokens), (9, 4, 5));
    assert_eq!((u.output_tokens, u.reasoning_tokens), (7, 3));
    assert_eq!(s.content_events(), 3);
    assert_eq!(s.observe(&event(None, r#"{"promptFeedback":{"blockReason":"SAFETY"}}"#)), EventKind::Other);
}

#[test]
fn gemini_bodies_report_usage_metadata_or_embedding_token_counts() {
    let u =
        from_body(Api::Gemini, br#"{"candidates":[],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":4}}"#)
            .unwrap();
    assert_eq!((u.input_tokens, u.output_tokens), (3, 4));
    let predict =
        br#"{"predictions":[{"embeddings":{"values":[0.1],"statistics":{"token_count":6.0,"truncated":false}}},
        {"embeddings":{"values":[0.2],"statistics":{"token_count":2}}}]}"#;
    assert_eq!(from_body(Api::Gemini, predict).unwrap().prompt_tokens(), 8);
    assert_eq!(from_body(Api::Gemini, br#"{"embeddings":[{"values":[0.1]}]}"#), Some(Usage::default()));
    assert_eq!(from_body(Api::Gemini, br#"{"usage":{"prompt_tokens":1}}"#), None);
}

#[test]
fn response_model_and_finish_reasons_come_from_streams_of_each_family() {
    let mut s = StreamUsage::new(Api::OpenAi, false);
    s.collect_finish_reasons();
    s.observe(&event(
        None,
        r#"{"model":"gpt-4o-2024","choices":[{"delta":{"content":"the \"model\" is"},"finish_reason":null}]}"#,
    ));
    s.observe(&event(None, r#"{"model":"gpt-4o-2024","choices":[{"delta":{},"finish_reason":"stop"}]}"#));
    assert_eq!(s.model(), Some("gpt-4o-2024"));
    assert_eq!(s.finish_reasons(), ["stop"]);
    let mut s = StreamUsage::new(Api::Anthropic, false);
    s.collect_finish_reasons();
    s.observe(&event(None, r#"{"type":"message_start","message":{"model":"claude-x","usage":{"input_tokens":1}}}"#));
    s.observe(&event(
        None,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}"#,
    ));
    assert_eq!((s.model(), s.finish_reasons()), (Some("claude-x"), &["end_turn".to_string()][..]));
    let mut s = StreamUsage::new(Api::Converse, false);
    s.collect_finish_reasons();
    s.observe(&event(Some("messageStop"), r#"{"stopReason":"max_tokens"}"#));
    assert_eq!(s.finish_reasons(), ["max_tokens"]);
    // Not collected unless asked.
    let mut s = StreamUsage::new(Api::OpenAi, false);
    s.observe(&event(None, r#"{"model":"m","choices":[{"delta":{},"finish_reason":"stop"}]}"#));
    assert!(s.finish_reasons().is_empty());
}

#[test]
fn body_facts_are_read_leniently() {
    let body = br#"{"model":"gpt-x","choices":[{"message":{"content":"hi"},"finish_reason":"stop"},{"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#;
    let f = facts_from_body(Api::OpenAi, body, true);
    assert_eq!(f.model.as_deref(), Some("gpt-x"));
    assert_eq!(f.finish_reasons, ["stop", "length"]);
    assert_eq!(f.usage.as_ref().unwrap().output_tokens, 4);
    // Unless asked for, the finish reasons are not read; the rest is the same.
    assert_eq!(facts_from_body(Api::OpenAi, body, false), BodyFacts { finish_reasons: Vec::new(), ..f });
    // Odd shapes lose only themselves.
    let odd = br#"{"model":7,"choices":"x","usage":{"prompt_tokens":1,"completion_tokens":2}}"#;
    for asked in [true, false] {
        let f = facts_from_body(Api::OpenAi, odd, asked);
        assert_eq!((f.model, f.finish_reasons.len(), f.usage.unwrap().output_tokens), (None, 0, 2));
    }
    let f = facts_from_body(Api::OpenAi, br#"{"choices":[1,[2],null,{"finish_reason":null}]}"#, true);
    assert!(f.finish_reasons.is_empty());
    let f = facts_from_body(
        Api::Anthropic,
        br#"{"model":"claude","stop_reason":"tool_use","usage":{"input_tokens":1,"output_tokens":1}}"#,
        true,
    );
    assert_eq!((f.model.as_deref(), &f.finish_reasons[..]), (Some("claude"), &["tool_use".to_string()][..]));
    let converse = br#"{"stopReason":"end_turn","usage":{"inputTokens":1,"outputTokens":2,"totalTokens":3}}"#;
    let f = facts_from_body(Api::Converse, converse, true);
    assert_eq!(f.finish_reasons, ["end_turn"]);
    let f = facts_from_body(Api::Converse, converse, false);
    assert_eq!((f.finish_reasons.len(), f.usage.unwrap().output_tokens), (0, 2));
}

#[test]
fn string_fields_are_found_by_a_byte_scan() {
    assert_eq!(string_field(br#"{"a":1, "model" : "x-1"}"#, &MODEL_KEY), Some("x-1"));
    assert_eq!(string_field(br#"{"model":null}"#, &MODEL_KEY), None);
    assert_eq!(string_field(br#"{"model":"a\"b"}"#, &MODEL_KEY), None);
    assert_eq!(string_field(br#"{"x":"\"model\" here","model":"y"}"#, &MODEL_KEY), Some("y"));
    assert_eq!(string_field(br#"{"model""#, &MODEL_KEY), None);
}

#[test]
fn only_usage_objects_count_as_usage() {
    assert!(has_usage_object(br#"{"choices":[],"usage": {"prompt_tokens":1}}"#));
    assert!(!has_usage_object(br#"{"choices":[{"delta":{}}],"usage":null}"#));
    assert!(!has_usage_object(br#"{"content":"the word \"usage\" in text"}"#));
}

#[test]
fn body_usage_per_family() {
    let u = from_body(Api::OpenAi, br#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#).unwrap();
    assert_eq!(u.output_tokens, 4);
    let u = from_body(Api::Anthropic, br#"{"usage":{"input_tokens":3,"output_tokens":4}}"#).unwrap();
    assert_eq!(u.prompt_tokens(), 3);
    let u = from_body(Api::Converse, br#"{"usage":{"inputTokens":3,"outputTokens":4,"totalTokens":7}}"#).unwrap();
    assert_eq!((u.input_tokens, u.output_tokens), (3, 4));
    assert!(from_body(Api::OpenAi, b"{}").is_none());
    let u = from_body(
        Api::Responses,
        br#"{"id":"resp_1","usage":{"input_tokens":10,"input_tokens_details":{"cached_tokens":4},
            "output_tokens":6,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":16}}"#,
    )
    .unwrap();
    assert_eq!((u.input_tokens, u.cache_read_input_tokens, u.output_tokens, u.reasoning_tokens), (6, 4, 6, 2));
    assert_eq!(u.prompt_tokens(), 10);
}

#[test]
fn responses_usage_comes_from_the_terminal_event_and_deltas_count_as_content() {
    let mut s = StreamUsage::new(Api::Responses, false);
    assert_eq!(
        s.observe(&event(Some("response.created"), r#"{"type":"response.created","response":{"usage":null}}"#)),
        EventKind::Other
    );
    assert_eq!(s.observe(&event(None, r#"{"type":"response.output_text.delta","delta":"Hi"}"#)), EventKind::Content);
    s.observe(&event(
        Some("response.completed"),
        r#"{"type":"response.completed","response":{"usage":{"input_tokens":7,"output_tokens":3,
            "input_tokens_details":{"cached_tokens":2},"output_tokens_details":{"reasoning_tokens":0}}}}"#,
    ));
    let u = s.usage().unwrap();
    assert_eq!((u.input_tokens, u.cache_read_input_tokens, u.output_tokens), (5, 2, 3));
    assert_eq!(s.content_events(), 1);
}
