use super::*;

fn s(v: &str) -> HeaderValue {
    HeaderValue::String(v.to_string())
}

/// A message with a prelude and message CRC made to fit `headers_block`
/// (raw header bytes, possibly invalid).
fn raw_frame(headers_block: &[u8], payload: &[u8]) -> Vec<u8> {
    let total = (PRELUDE_LEN + headers_block.len() + payload.len() + 4) as u32;
    prelude_then(total, headers_block.len() as u32, &[headers_block, payload].concat())
}

/// A prelude for the given lengths with a correct CRC, then `rest` and a
/// correct message CRC.
fn prelude_then(total: u32, headers: u32, rest: &[u8]) -> Vec<u8> {
    let mut out = [total.to_be_bytes(), headers.to_be_bytes()].concat();
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out.extend_from_slice(rest);
    out.extend_from_slice(&crc32(&out).to_be_bytes());
    out
}

fn decode_all(bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut out = Vec::new();
    Decoder::new().push(bytes, &mut out).map(|()| out)
}

/// Headers and payload of one test message.
type Frame<'a> = (Vec<(&'a str, HeaderValue)>, &'a [u8]);

fn bedrock_like_stream() -> (Vec<u8>, Vec<Message>) {
    let frames: Vec<Frame> = vec![
        (
            vec![
                (":event-type", s("messageStart")),
                (":content-type", s("application/json")),
                (":message-type", s("event")),
            ],
            br#"{"role":"assistant","p":"abcd"}"#,
        ),
        (vec![(":message-type", s("event")), (":event-type", s("contentBlockDelta"))], b""),
        (vec![], br#"{"contentBlockIndex":0,"delta":{"text":"Hello"}}"#),
        (
            vec![(":message-type", s("exception")), (":exception-type", s("throttlingException"))],
            br#"{"message":"Too many requests"}"#,
        ),
    ];
    let mut bytes = Vec::new();
    let mut messages = Vec::new();
    for (headers, payload) in frames {
        bytes.extend(encode(&headers, payload));
        let headers = headers.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
        messages.push(Message { headers, payload: payload.to_vec() });
    }
    (bytes, messages)
}

#[test]
fn crc32_matches_the_standard_check_value() {
    assert_eq!(crc32(b""), 0);
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
}

#[test]
fn every_header_type_round_trips() {
    let headers = [
        ("true", HeaderValue::Bool(true)),
        ("false", HeaderValue::Bool(false)),
        ("byte", HeaderValue::Byte(-49)),
        ("short", HeaderValue::Short(-12345)),
        ("int", HeaderValue::Int(40972)),
        ("long", HeaderValue::Long(-42_424_242_424_242)),
        ("bytes", HeaderValue::Bytes(vec![0, 1, 254, 255])),
        ("empty bytes", HeaderValue::Bytes(vec![])),
        ("string", s("application/json; ünïcode")),
        ("timestamp", HeaderValue::Timestamp(1_700_000_000_123)),
        ("uuid", HeaderValue::Uuid([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16])),
        ("", s("empty name")),
    ];
    let frame = encode(&headers, b"{\"k\":1}");
    let got = decode_all(&frame).unwrap();
    let want: Vec<(String, HeaderValue)> = headers.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
    assert_eq!(got, vec![Message { headers: want, payload: b"{\"k\":1}".to_vec() }]);
}

#[test]
fn the_longest_name_and_value_round_trip() {
    let name = "n".repeat(255);
    let value = HeaderValue::Bytes(vec![7; 65_535]);
    let got = decode_all(&encode(&[(&name, value.clone())], b"")).unwrap();
    assert_eq!(got[0].headers, vec![(name, value)]);
}

#[test]
fn header_str_finds_string_headers_only() {
    let frame = encode(&[(":event-type", s("chunk")), (":n", HeaderValue::Int(1))], b"");
    let message = &decode_all(&frame).unwrap()[0];
    assert_eq!(message.header_str(":event-type"), Some("chunk"));
    assert_eq!(message.header_str(":n"), None);
    assert_eq!(message.header(":n"), Some(&HeaderValue::Int(1)));
    assert_eq!(message.header_str(":missing"), None);
}

#[test]
fn an_empty_message_is_sixteen_bytes() {
    let frame = encode(&[], b"");
    assert_eq!(frame.len(), 16);
    assert_eq!(decode_all(&frame).unwrap(), vec![Message::default()]);
}

#[test]
fn a_stream_fed_whole_gives_every_message() {
    let (bytes, want) = bedrock_like_stream();
    let mut decoder = Decoder::new();
    let mut got = Vec::new();
    decoder.push(&bytes, &mut got).unwrap();
    assert_eq!(got, want);
    assert_eq!(decoder.pending(), 0);
}

#[test]
fn a_stream_fed_one_byte_at_a_time_gives_the_same_messages() {
    let (bytes, want) = bedrock_like_stream();
    let mut decoder = Decoder::new();
    let mut got = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        decoder.push(std::slice::from_ref(b), &mut got).unwrap();
        assert_eq!(decoder.pending() == 0, got.iter().map(encoded_len).sum::<usize>() == i + 1);
    }
    assert_eq!(got, want);
    assert_eq!(decoder.pending(), 0);
}

fn encoded_len(m: &Message) -> usize {
    let headers: Vec<(&str, HeaderValue)> = m.headers.iter().map(|(n, v)| (n.as_str(), v.clone())).collect();
    encode(&headers, &m.payload).len()
}

#[test]
fn a_stream_split_at_every_offset_gives_the_same_messages() {
    let (bytes, want) = bedrock_like_stream();
    for cut in 0..=bytes.len() {
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        decoder.push(&bytes[..cut], &mut got).unwrap();
        decoder.push(&bytes[cut..], &mut got).unwrap();
        assert_eq!(got, want, "cut at {cut}");
        assert_eq!(decoder.pending(), 0);
    }
}

#[test]
fn a_stream_split_at_every_pair_of_offsets_gives_the_same_messages() {
    let (bytes, want) = bedrock_like_stream();
    for a in 0..=bytes.len() {
        for b in a..=bytes.len() {
            let mut decoder = Decoder::new();
            let mut got = Vec::new();
            for part in [&bytes[..a], &bytes[a..b], &bytes[b..]] {
                decoder.push(part, &mut got).unwrap();
            }
            assert_eq!(got, want, "cuts at {a} and {b}");
        }
    }
}

#[test]
fn a_corrupted_byte_anywhere_is_rejected_by_the_matching_crc() {
    let frame = encode(&[(":event-type", s("chunk"))], br#"{"bytes":"eyJ9"}"#);
    for i in 0..frame.len() {
        for flip in [0x01, 0x80, 0xFF] {
            let mut bad = frame.clone();
            bad[i] ^= flip;
            let err = decode_all(&bad).unwrap_err();
            if i < PRELUDE_LEN {
                assert!(matches!(err, DecodeError::PreludeCrc { .. }), "byte {i}: {err}");
            } else {
                assert!(matches!(err, DecodeError::MessageCrc { .. }), "byte {i}: {err}");
            }
        }
    }
}

#[test]
fn a_crc_error_reports_both_values() {
    let mut frame = encode(&[], b"x");
    let last = frame.len() - 1;
    frame[last] ^= 1;
    let expected = be_u32(&frame[last - 3..]);
    let actual = crc32(&frame[..last - 3]);
    assert_eq!(decode_all(&frame), Err(DecodeError::MessageCrc { expected, actual }));
}

#[test]
fn messages_before_an_error_are_delivered_and_the_decoder_stays_poisoned() {
    let good = encode(&[(":event-type", s("chunk"))], b"1");
    let mut bad = encode(&[], b"2");
    bad[13] ^= 0x40;
    let mut decoder = Decoder::new();
    let mut got = Vec::new();
    let err = decoder.push(&[good.clone(), bad].concat(), &mut got).unwrap_err();
    assert!(matches!(err, DecodeError::MessageCrc { .. }));
    assert_eq!(got.len(), 1);
    assert_eq!(decoder.push(&good, &mut got), Err(err.clone()));
    assert_eq!(decoder.push(&[], &mut got), Err(err));
    assert_eq!(got.len(), 1);
    assert_eq!(decoder.pending(), 0);
}

#[test]
fn a_truncated_stream_leaves_bytes_pending() {
    let (bytes, want) = bedrock_like_stream();
    // Where each message ends in `bytes`.
    let ends: Vec<usize> = want
        .iter()
        .scan(0, |end, m| {
            *end += encoded_len(m);
            Some(*end)
        })
        .collect();
    for cut in [1, 11, 12, ends[0] - 1, ends[0] + 1, ends[1] + 12, bytes.len() - 1] {
        let mut decoder = Decoder::new();
        let mut got = Vec::new();
        decoder.push(&bytes[..cut], &mut got).unwrap();
        let complete = ends.iter().take_while(|&&end| end <= cut).count();
        assert_eq!(got, want[..complete], "cut at {cut}");
        assert_eq!(decoder.pending(), cut - complete.checked_sub(1).map_or(0, |i| ends[i]), "cut at {cut}");
    }
}

#[test]
fn an_absurd_total_length_is_rejected_from_the_prelude_alone() {
    let prelude = &prelude_then(u32::MAX, 0, &[])[..PRELUDE_LEN];
    let mut decoder = Decoder::new();
    assert_eq!(decoder.push(prelude, &mut Vec::new()), Err(DecodeError::TooLarge(u32::MAX as usize)));
    assert_eq!(decoder.pending(), 0);
}

#[test]
fn the_size_limit_is_sixteen_mebibytes() {
    let at_limit = &prelude_then(MAX_MESSAGE_LEN as u32, 0, &[])[..PRELUDE_LEN];
    let mut decoder = Decoder::new();
    decoder.push(at_limit, &mut Vec::new()).unwrap();
    assert_eq!(decoder.pending(), PRELUDE_LEN);
    let over = &prelude_then(MAX_MESSAGE_LEN as u32 + 1, 0, &[])[..PRELUDE_LEN];
    assert_eq!(decode_all(over), Err(DecodeError::TooLarge(MAX_MESSAGE_LEN + 1)));
}

#[test]
fn a_total_length_below_sixteen_is_malformed() {
    for total in [0, 12, 15] {
        let prelude = &prelude_then(total, 0, &[])[..PRELUDE_LEN];
        assert!(matches!(decode_all(prelude), Err(DecodeError::Malformed(_))), "total {total}");
    }
}

#[test]
fn a_headers_length_beyond_the_message_is_malformed() {
    let frame = prelude_then(20, 5, b"abcd");
    assert!(matches!(decode_all(&frame), Err(DecodeError::Malformed(_))));
    let frame = prelude_then(20, 4, b"\x02ab\x00");
    assert!(decode_all(&frame).is_ok());
}

#[test]
fn a_prelude_checksum_is_checked_before_the_lengths() {
    let mut prelude = prelude_then(u32::MAX, u32::MAX, &[])[..PRELUDE_LEN].to_vec();
    prelude[11] ^= 1;
    assert!(matches!(decode_all(&prelude), Err(DecodeError::PreludeCrc { .. })));
}

#[test]
fn bad_header_blocks_are_malformed() {
    let cases: [&[u8]; 7] = [
        b"\x05abc",                   // name runs past the block
        b"\x01a",                     // no value type
        b"\x01a\x0a",                 // unknown value type
        b"\x01a\x04\x00\x00",         // truncated int
        b"\x01a\x07\x00\x05abc",      // string runs past the block
        b"\x01a\x07\x00\x02\xff\xfe", // string not UTF-8
        b"\x02\xc3\x28\x00",          // name not UTF-8
    ];
    for block in cases {
        let err = decode_all(&raw_frame(block, b"payload")).unwrap_err();
        assert!(matches!(err, DecodeError::Malformed(_)), "{block:?}: {err}");
    }
}

#[test]
fn errors_display_as_sentences() {
    assert_eq!(
        DecodeError::PreludeCrc { expected: 1, actual: 0xABCD }.to_string(),
        "event stream prelude checksum mismatch: expected 0x00000001, computed 0x0000abcd"
    );
    assert_eq!(
        DecodeError::TooLarge(20_000_000).to_string(),
        "event stream message of 20000000 bytes exceeds the 16777216-byte limit"
    );
    assert_eq!(DecodeError::Malformed("x").to_string(), "malformed event stream message: x");
}

#[test]
fn a_large_buffer_is_released_once_drained() {
    let big = encode(&[], &vec![b'x'; 200_000]);
    let mut decoder = Decoder::new();
    let mut got = Vec::new();
    decoder.push(&big[..10], &mut got).unwrap();
    decoder.push(&big[10..], &mut got).unwrap();
    assert_eq!(got[0].payload.len(), 200_000);
    assert_eq!(decoder.buf.capacity(), 0);
}
