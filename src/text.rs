//! Text from bytes on the hot path. Most of what a request carries is ASCII (head lines, header values,
//! model names); checking that eight bytes at a time costs a fraction of a full UTF-8 validation's setup
//! on short input, and anything else still gets the full check.

use std::str::Utf8Error;

/// Whether every byte of `bytes` is ASCII: eight bytes at a time (the last eight overlapping), four or
/// one at a time below that.
#[inline]
pub fn is_ascii(bytes: &[u8]) -> bool {
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let n = bytes.len();
    let word = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap_or_default());
    if n >= 8 {
        let mut seen = word(n - 8);
        let mut at = 0;
        while at + 8 < n {
            seen |= word(at);
            at += 8;
        }
        seen & HIGH == 0
    } else if n >= 4 {
        let half = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        (half(0) | half(n - 4)) & 0x8080_8080 == 0
    } else {
        bytes.iter().all(|b| *b < 0x80)
    }
}

/// `bytes` as text: what `std::str::from_utf8` gives, faster for ASCII.
#[inline]
pub fn utf8(bytes: &[u8]) -> Result<&str, Utf8Error> {
    if is_ascii(bytes) {
        // SAFETY: ASCII is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}

/// `bytes` as an owned `String` when it is text, or the bytes back: what `String::from_utf8` gives,
/// faster for ASCII.
pub fn owned_utf8(bytes: Vec<u8>) -> Result<String, Vec<u8>> {
    if is_ascii(&bytes) {
        // SAFETY: ASCII is valid UTF-8.
        Ok(unsafe { String::from_utf8_unchecked(bytes) })
    } else {
        String::from_utf8(bytes).map_err(|e| e.into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_the_standard_check_at_every_length_and_position() {
        for len in 0..40 {
            let ascii = vec![b'a'; len];
            assert!(is_ascii(&ascii));
            assert_eq!(utf8(&ascii).ok(), std::str::from_utf8(&ascii).ok());
            for at in 0..len {
                for high in [0x80u8, 0xc3, 0xff] {
                    let mut b = ascii.clone();
                    b[at] = high;
                    assert!(!is_ascii(&b), "len {len}, byte {high:#x} at {at}");
                    assert_eq!(utf8(&b).ok(), std::str::from_utf8(&b).ok());
                    assert_eq!(owned_utf8(b.clone()).ok(), String::from_utf8(b).ok());
                }
            }
        }
        let text = "modèle é".as_bytes();
        assert_eq!(utf8(text), Ok("modèle é"));
        assert_eq!(owned_utf8(text.to_vec()), Ok("modèle é".to_string()));
    }
}
