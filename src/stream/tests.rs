use super::*;
use crate::eventstream;

const OPENAI: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":null}\r\n\r\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n\
data: [DONE]\n\n";

fn passthrough(strip: bool) -> StreamPipeline {
    StreamPipeline::new(Framing::Sse, Api::OpenAi, Api::OpenAi, None, strip)
}

fn run(mut p: StreamPipeline, pieces: &[&[u8]]) -> (Vec<u8>, StreamPipeline) {
    let mut out = Vec::new();
    for piece in pieces {
        p.push(piece);
        p.relay(&mut out);
    }
    p.finish(&mut out);
    (out, p)
}

#[test]
fn strips_the_usage_only_chunk_in_any_split_and_reads_it() {
    let expected = OPENAI.replace(
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
        "",
    );
    for split in 0..OPENAI.len() {
        let (out, p) = run(passthrough(true), &[&OPENAI.as_bytes()[..split], &OPENAI.as_bytes()[split..]]);
        assert_eq!(String::from_utf8(out).unwrap(), expected, "split {split}");
        assert_eq!(p.usage().unwrap().output_tokens, 2);
        assert_eq!(p.usage().unwrap().prompt_tokens(), 5);
        assert_eq!(p.content_events(), 2);
    }
}

#[test]
fn passthrough_is_byte_exact_without_stripping() {
    let bytes: Vec<&[u8]> = OPENAI.as_bytes().chunks(1).collect();
    let (out, _) = run(passthrough(false), &bytes);
    assert_eq!(out, OPENAI.as_bytes());
}

#[test]
fn a_stream_cut_inside_a_line_ends_with_an_error_event() {
    let (out, _) = run(passthrough(false), &[b"data: {\"a\":1}\n\ndata: {\"choices\":[{\"del"]);
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("data: {\"a\":1}\n\ndata: {\"error\""), "{text}");
    assert!(!text.contains("del"), "the partial event is not forwarded: {text}");
    let (out, _) = run(passthrough(false), &[b"data: [DONE]\n"]);
    assert_eq!(out, b"data: [DONE]\n\n", "a last event without its blank line is completed");
}

fn frame(event_type: &str, payload: &str) -> Vec<u8> {
    use eventstream::HeaderValue::String as S;
    eventstream::encode(
        &[
            (":event-type", S(event_type.into())),
            (":content-type", S("application/json".into())),
            (":message-type", S("event".into())),
        ],
        payload.as_bytes(),
    )
}

#[test]
fn invoke_model_chunks_become_anthropic_sse_events_in_any_split() {
    let events = [
        r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":9,"output_tokens":1}}}"#,
        r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hé"}}"#,
        r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}"#,
    ];
    let mut wire = Vec::new();
    for e in events {
        wire.extend(frame("chunk", &format!(r#"{{"bytes":"{}","p":"abc"}}"#, crate::base64::encode(e.as_bytes()))));
    }
    let make = || StreamPipeline::new(Framing::EventStreamChunks, Api::Anthropic, Api::Anthropic, None, false);
    let (whole, p) = run(make(), &[&wire]);
    let text = String::from_utf8(whole.clone()).unwrap();
    assert!(text.starts_with("event: message_start\ndata: {\"type\":\"message_start\""), "{text}");
    assert!(text.contains("event: content_block_delta\ndata: ") && text.contains("hé"), "{text}");
    assert_eq!((p.usage().unwrap().input_tokens, p.usage().unwrap().output_tokens), (9, 4));
    for split in 0..wire.len() {
        assert_eq!(run(make(), &[&wire[..split], &wire[split..]]).0, whole, "split {split}");
    }
}

#[test]
fn an_exception_frame_ends_the_stream_with_an_error_in_the_clients_shape() {
    use eventstream::HeaderValue::String as S;
    let mut wire = frame("messageStart", r#"{"role":"assistant"}"#);
    wire.extend(eventstream::encode(
        &[(":message-type", S("exception".into())), (":exception-type", S("throttlingException".into()))],
        br#"{"message":"Too many tokens"}"#,
    ));
    wire.extend(frame("metadata", r#"{"usage":{"inputTokens":1,"outputTokens":1}}"#));
    let p = StreamPipeline::new(Framing::EventStream, Api::Converse, Api::Anthropic, None, false);
    let (out, p) = run(p, &[&wire]);
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with("\n\n") && text.contains("event: error\ndata: "), "{text}");
    assert!(text.contains("rate_limit_error") && text.contains("Too many tokens"), "{text}");
    assert!(p.usage().is_none(), "nothing after the exception is read");
}

#[test]
fn a_corrupt_frame_ends_the_stream_with_an_error_event() {
    let mut wire = frame("messageStart", r#"{"role":"assistant"}"#);
    let mut bad = frame("contentBlockDelta", r#"{"delta":{"text":"x"}}"#);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    wire.extend(bad);
    let p = StreamPipeline::new(Framing::EventStream, Api::Converse, Api::OpenAi, None, false);
    let (out, _) = run(p, &[&wire]);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("\"error\"") && text.contains("checksum mismatch"), "{text}");
}

/// The one-scan path for one-`data:`-line events gives exactly what the general scan and parse give,
/// and declines everything else (checked on edge cases and 20,000 random byte strings).
#[test]
fn the_one_data_line_path_agrees_with_the_general_scan() {
    let check = |buf: &[u8]| {
        if let Some(fast) = one_data_line(buf) {
            let len = scan_event(buf, 0).unwrap_or_else(|_| panic!("{buf:?}"));
            assert_eq!(fast.raw, &buf[..len], "{buf:?}");
            let general = sse_event(&buf[..len]);
            assert_eq!((fast.name, &fast.data[..]), (general.name, &general.data[..]), "{buf:?}");
        }
    };
    for case in [
        &b"data:x\n\n"[..],
        b"data: x\n\n",
        b"data:  x\n\n",
        b"data: x\n\r\n",
        b"data: x\r\n\r\n",
        b"data: x\ndata: y\n\n",
        b"data: x\n",
        b"data:\n\n",
        b"data: a\n\ndata: b\n\n",
        b"datax: y\n\n",
        b"data: a\rb\n\n",
    ] {
        check(case);
    }
    assert!(one_data_line(b"data: x\n").is_none() && one_data_line(b"data: x\ndata: y\n\n").is_none());
    assert!(one_data_line(b"data: a\rb\n\n").is_none());
    let alphabet = b"data: \n\r{}x";
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..20_000 {
        let mut buf = b"data:".to_vec();
        seed = crate::router::xorshift(seed);
        for k in 0..(seed % 24) {
            buf.push(alphabet[((seed >> (k * 2 % 60)) % alphabet.len() as u64) as usize]);
        }
        check(&buf);
    }
}
