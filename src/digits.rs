//! Numbers and bytes written as ASCII digits, without `fmt`'s machinery (a response head, a chunk size,
//! a log line, a request id and a trace id each carry a few, on every request), decimal digits read
//! back, and bytes percent-encoded.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The decimal digits of `n`.
pub fn push_decimal(out: &mut Vec<u8>, n: u64) {
    push_in_base::<10>(out, n);
}

/// The lowercase hexadecimal digits of `n` (an HTTP chunk size).
pub fn push_hex(out: &mut Vec<u8>, n: u64) {
    push_in_base::<16>(out, n);
}

fn push_in_base<const BASE: u64>(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = HEX[(n % BASE) as usize];
        n /= BASE;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The number written in `digits` (ASCII digits only, at least one); `None` for anything else or a
/// number past `u64::MAX`. Without `str::parse`'s UTF-8 check and sign handling (a Content-Length, a
/// token count).
pub fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        let digit = d.wrapping_sub(b'0');
        (digit < 10).then_some(())?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// RFC 3986 unreserved: letters, digits, `-`, `.`, `_` and `~`.
pub fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 encoding: unreserved bytes kept, every other byte `%XX` in upper-case hex (SigV4's
/// canonical URI and query, a secret as an upstream may quote it in a URL).
pub fn percent_encode(bytes: &[u8]) -> String {
    const UPPER: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if is_unreserved(b) {
            out.push(b as char);
        } else {
            out.extend(['%', UPPER[usize::from(b >> 4)] as char, UPPER[usize::from(b & 15)] as char]);
        }
    }
    out
}

/// Two lower-case hex digits for each of `bytes`, appended to `out` (ids, hashes, signatures).
pub fn push_hex_bytes(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// `value` as 16 lower-case hex digits, all at once: each nibble is spread into a byte of its own
/// (nibble k into byte k), then turned into its digit in every byte together.
pub fn hex_u64(value: u64) -> [u8; 16] {
    const fn every_byte(b: u8) -> u128 {
        u128::from_ne_bytes([b; 16])
    }
    let mut x = u128::from(value);
    x = (x | x << 32) & 0x0000_0000_ffff_ffff_0000_0000_ffff_ffff;
    x = (x | x << 16) & 0x0000_ffff_0000_ffff_0000_ffff_0000_ffff;
    x = (x | x << 8) & 0x00ff_00ff_00ff_00ff_00ff_00ff_00ff_00ff;
    x = (x | x << 4) & every_byte(0x0f);
    // 1 in each byte that holds 10 or more (adding 6 carries it into bit 4; no byte overflows).
    let letters = ((x + every_byte(6)) >> 4) & every_byte(1);
    // '0' + n for a digit, 'a' + n - 10 = '0' + n + 39 for a letter.
    (x + every_byte(b'0') + letters * 39).to_be_bytes()
}

/// Two lower-case hex digits for each of `bytes`.
pub fn hex_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex_bytes(&mut s, bytes);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_match_formatting_at_the_edges() {
        for n in [0, 1, 9, 10, 15, 16, 255, 4096, 99_999, u32::MAX as u64, u64::MAX] {
            let (mut decimal, mut hex) = (Vec::new(), Vec::new());
            push_decimal(&mut decimal, n);
            push_hex(&mut hex, n);
            assert_eq!(decimal, n.to_string().into_bytes());
            assert_eq!(hex, format!("{n:x}").into_bytes());
            assert_eq!(hex_bytes(&n.to_be_bytes()), format!("{n:016x}"));
        }
        assert_eq!(hex_bytes(&[]), "");
        let mut n = 0x9e37_79b9_7f4a_7c15_u64;
        for edge in [0, 9, 10, 15, 16, 0x0123_4567_89ab_cdef, 0xa5a5_a5a5_a5a5_a5a5, u64::MAX] {
            assert_eq!(hex_u64(edge), format!("{edge:016x}").as_bytes(), "{edge:x}");
        }
        for _ in 0..10_000 {
            n = crate::router::xorshift(n);
            assert_eq!(hex_u64(n), format!("{n:016x}").as_bytes(), "{n:x}");
        }
        for n in [0, 7, 4096, u64::MAX] {
            assert_eq!(parse_decimal(n.to_string().as_bytes()), Some(n));
        }
        for bad in ["", "18446744073709551616", "-1", "+1", "1.0", "1e3", " 1", "12a"] {
            assert_eq!(parse_decimal(bad.as_bytes()), None, "{bad}");
        }
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_bytes(&bytes), bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
        assert_eq!(percent_encode(b"a/b c~"), "a%2Fb%20c~");
    }
}
