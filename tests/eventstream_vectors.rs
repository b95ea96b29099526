//! AWS's published event-stream vectors (`tests/fixtures/eventstream`, from
//! aws-sdk-go): positive ones decode to the described message and re-encode
//! to the same bytes; negative ones fail with the described checksum error.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use switchyard::base64;
use switchyard::eventstream::{crc32, encode, DecodeError, Decoder, HeaderValue, Message};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/eventstream")
}

/// The case names under `encoded/<kind>`, sorted.
fn cases(kind: &str) -> Vec<String> {
    let dir = fixtures().join("encoded").join(kind);
    let mut names: Vec<String> =
        fs::read_dir(&dir).expect("fixture dir").map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert!(!names.is_empty(), "no vectors in {dir:?}");
    names
}

fn read(parts: &[&str]) -> Vec<u8> {
    let path = parts.iter().fold(fixtures(), |p, part| p.join(part));
    fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

fn b64(v: &Value) -> Vec<u8> {
    base64::decode(v.as_str().expect("base64 string")).expect("valid base64")
}

/// A header as described in a `decoded` vector: `{"name", "type", "value"}`.
fn expected_header(h: &Value) -> (String, HeaderValue) {
    let int = || h["value"].as_i64().expect("integer value");
    let value = match h["type"].as_u64().expect("type") {
        0 => HeaderValue::Bool(true),
        1 => HeaderValue::Bool(false),
        2 => HeaderValue::Byte(int() as i8),
        3 => HeaderValue::Short(int() as i16),
        4 => HeaderValue::Int(int() as i32),
        5 => HeaderValue::Long(int()),
        6 => HeaderValue::Bytes(b64(&h["value"])),
        7 => HeaderValue::String(String::from_utf8(b64(&h["value"])).expect("UTF-8")),
        8 => HeaderValue::Timestamp(int()),
        9 => HeaderValue::Uuid(b64(&h["value"]).try_into().expect("16 bytes")),
        t => panic!("unknown type {t}"),
    };
    (h["name"].as_str().expect("name").to_string(), value)
}

fn decode_whole(bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut out = Vec::new();
    let mut decoder = Decoder::new();
    decoder.push(bytes, &mut out)?;
    assert_eq!(decoder.pending(), 0);
    Ok(out)
}

/// A CRC as the vectors write it: a signed 32-bit integer.
fn crc_field(v: &Value) -> u32 {
    v.as_i64().expect("crc") as i32 as u32
}

#[test]
fn positive_vectors_decode_to_the_described_messages() {
    for case in cases("positive") {
        let bytes = read(&["encoded", "positive", &case]);
        let want: Value = serde_json::from_slice(&read(&["decoded", "positive", &case])).unwrap();
        let total = bytes.len();
        assert_eq!(want["total_length"].as_u64(), Some(total as u64), "{case}");
        assert_eq!(
            u32::from_be_bytes(bytes[4..8].try_into().unwrap()),
            want["headers_length"].as_u64().unwrap() as u32
        );
        assert_eq!(crc32(&bytes[..8]), crc_field(&want["prelude_crc"]), "{case}");
        assert_eq!(crc32(&bytes[..total - 4]), crc_field(&want["message_crc"]), "{case}");

        let got = decode_whole(&bytes).unwrap_or_else(|e| panic!("{case}: {e}"));
        let headers = want["headers"].as_array().unwrap().iter().map(expected_header).collect();
        assert_eq!(got, vec![Message { headers, payload: b64(&want["payload"]) }], "{case}");
    }
}

#[test]
fn positive_vectors_re_encode_to_the_same_bytes() {
    for case in cases("positive") {
        let bytes = read(&["encoded", "positive", &case]);
        let message = decode_whole(&bytes).unwrap().remove(0);
        let headers: Vec<(&str, HeaderValue)> = message.headers.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
        assert_eq!(encode(&headers, &message.payload), bytes, "{case}");
    }
}

#[test]
fn positive_vectors_decode_the_same_one_byte_at_a_time() {
    let all: Vec<u8> = cases("positive").iter().flat_map(|c| read(&["encoded", "positive", c])).collect();
    let whole = decode_whole(&all).unwrap();
    let mut decoder = Decoder::new();
    let mut got = Vec::new();
    for b in &all {
        decoder.push(std::slice::from_ref(b), &mut got).unwrap();
    }
    assert_eq!(got, whole);
    assert_eq!(decoder.pending(), 0);
}

#[test]
fn negative_vectors_fail_with_the_described_checksum_error() {
    for case in cases("negative") {
        let bytes = read(&["encoded", "negative", &case]);
        let want = String::from_utf8(read(&["decoded", "negative", &case])).unwrap();
        let err = decode_whole(&bytes).expect_err(&case);
        match want.trim() {
            "Prelude checksum mismatch" => assert!(matches!(err, DecodeError::PreludeCrc { .. }), "{case}: {err}"),
            "Message checksum mismatch" => assert!(matches!(err, DecodeError::MessageCrc { .. }), "{case}: {err}"),
            other => panic!("{case}: unexpected description {other:?}"),
        }
    }
}

#[test]
fn an_invoke_model_stream_chunk_carries_a_base64_provider_event() {
    let event = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#;
    let payload = format!(r#"{{"bytes":"{}","p":"abcdefghij"}}"#, base64::encode(event.as_bytes()));
    let string = |s: &str| HeaderValue::String(s.to_string());
    let frame = encode(
        &[
            (":event-type", string("chunk")),
            (":content-type", string("application/json")),
            (":message-type", string("event")),
        ],
        payload.as_bytes(),
    );
    let message = decode_whole(&frame).unwrap().remove(0);
    assert_eq!(message.header_str(":message-type"), Some("event"));
    assert_eq!(message.header_str(":event-type"), Some("chunk"));
    let body: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(b64(&body["bytes"]), event.as_bytes());
}
