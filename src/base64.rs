//! Base64 with the standard alphabet (RFC 4648 section 4), with no IO.
//!
//! [`encode`] always pads with `=`. [`decode`] accepts padded and unpadded
//! input, rejects any character outside the alphabet (whitespace included)
//! and misplaced or partial padding. Like most decoders (RFC 4648 section 3.5
//! leaves it open) it ignores non-zero bits in the last character.
//!
//! [`encode_url`] is the URL-safe alphabet (section 5: `-` and `_` for `+`
//! and `/`) without padding, as JSON Web Tokens use it (RFC 7515).
//!
//! Uses: Bedrock's InvokeModelWithResponseStream frames carry
//! `{"bytes":"<base64 of a provider event JSON>"}`, Converse image and
//! document blocks carry base64 data, OpenAI embeddings may be returned
//! as base64 of little-endian `f32`s, and Google service-account JWTs are
//! base64url.

/// The 64 characters of the standard alphabet, by value.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Marks a byte that is not in the alphabet in [`DECODE`].
const INVALID: u8 = 0xFF;

/// The value of each alphabet character, [`INVALID`] for every other byte.
const DECODE: [u8; 256] = decode_table();

const fn decode_table() -> [u8; 256] {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
}

/// Base64 of `bytes`, padded with `=` to a multiple of four characters.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Base64url of `bytes` (RFC 4648 section 5) without padding, as in a JWT.
pub fn encode_url(bytes: &[u8]) -> String {
    encode(bytes)
        .trim_end_matches('=')
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect()
}

/// The bytes that `text` encodes. Padding is optional, but if present it
/// must complete the last group of four; nothing is skipped.
pub fn decode(text: &str) -> Result<Vec<u8>, &'static str> {
    let data = strip_padding(text.as_bytes())?;
    let mut out = Vec::with_capacity(data.len() / 4 * 3 + 2);
    for group in data.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in group.iter().enumerate() {
            let v = DECODE[c as usize];
            if v == INVALID {
                return Err(if c == b'=' { "misplaced base64 padding" } else { "invalid base64 character" });
            }
            n |= u32::from(v) << (18 - 6 * i);
        }
        if group.len() == 1 {
            return Err("base64 input ends with a lone character");
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..group.len()]);
    }
    Ok(out)
}

/// `data` without its trailing `=`s, after checking that they pad the input
/// to a multiple of four characters (at most two of them).
fn strip_padding(data: &[u8]) -> Result<&[u8], &'static str> {
    let pad = data.iter().rev().take_while(|&&c| c == b'=').count();
    if pad == 0 {
        return Ok(data);
    }
    if pad > 2 || !data.len().is_multiple_of(4) {
        return Err("invalid base64 padding");
    }
    Ok(&data[..data.len() - pad])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 section 10.
    const RFC_VECTORS: [(&str, &str); 7] = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ];

    #[test]
    fn encode_matches_rfc_4648_vectors() {
        for (plain, encoded) in RFC_VECTORS {
            assert_eq!(encode(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn decode_matches_rfc_4648_vectors() {
        for (plain, encoded) in RFC_VECTORS {
            assert_eq!(decode(encoded).as_deref(), Ok(plain.as_bytes()), "{encoded:?}");
        }
    }

    #[test]
    fn decode_accepts_input_without_padding() {
        for (plain, encoded) in RFC_VECTORS {
            let bare = encoded.trim_end_matches('=');
            assert_eq!(decode(bare).as_deref(), Ok(plain.as_bytes()), "{bare:?}");
        }
    }

    #[test]
    fn every_byte_value_round_trips_at_every_length_remainder() {
        let all: Vec<u8> = (0..=255u8).collect();
        for len in 253..=256 {
            let text = encode(&all[..len]);
            assert!(text.len().is_multiple_of(4));
            assert_eq!(decode(&text).as_deref(), Ok(&all[..len]));
        }
    }

    #[test]
    fn the_last_two_alphabet_characters_are_plus_and_slash() {
        assert_eq!(encode(&[0xFB, 0xFF, 0xBF]), "+/+/");
        assert_eq!(decode("+/+/"), Ok(vec![0xFB, 0xFF, 0xBF]));
    }

    #[test]
    fn url_encoding_swaps_the_last_two_characters_and_drops_padding() {
        assert_eq!(encode_url(&[0xFB, 0xFF, 0xBF]), "-_-_");
        assert_eq!(encode_url(b"f"), "Zg");
        assert_eq!(encode_url(b"fo"), "Zm8");
        // RFC 7515 appendix A.1's JWS header.
        assert_eq!(encode_url(b"{\"typ\":\"JWT\",\r\n \"alg\":\"HS256\"}"), "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9");
    }

    #[test]
    fn characters_outside_the_alphabet_are_rejected() {
        for bad in ["Zm9v YmFy", "Zm9v\nYmFy", "Zm9v-mFy", "Zm9v_mFy", "Zm9vYmF*", "Zm9v\u{e9}A="] {
            assert_eq!(decode(bad), Err("invalid base64 character"), "{bad:?}");
        }
    }

    #[test]
    fn bad_padding_is_rejected() {
        assert_eq!(decode("Zg="), Err("invalid base64 padding"));
        assert_eq!(decode("Zg==="), Err("invalid base64 padding"));
        assert_eq!(decode("Z==="), Err("invalid base64 padding"));
        assert_eq!(decode("===="), Err("invalid base64 padding"));
        assert_eq!(decode("Zg==Zg=="), Err("misplaced base64 padding"));
        assert_eq!(decode("Z=9v"), Err("misplaced base64 padding"));
    }

    #[test]
    fn a_lone_final_character_is_rejected() {
        assert_eq!(decode("Z"), Err("base64 input ends with a lone character"));
        assert_eq!(decode("Zm9vY"), Err("base64 input ends with a lone character"));
    }
}
