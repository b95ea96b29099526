//! The request target and the Host header (RFC 9112 §3.2, RFC 9110 §7.2, RFC 3986 §3.2.2): which
//! forms of target a request may use, and what a host with its port may be.

use std::ops::Range;

use super::HeadError;

/// The path-and-query part of a request target, as a range of `target`: origin-form (`/p?q`) is
/// itself; absolute-form (`http://host/p?q`, RFC 9112 §3.2.2) is the part after its authority, which
/// must be a valid host; `*` (asterisk-form) only for OPTIONS. Fragments are refused.
pub(super) fn origin_form(method: &str, target: &str) -> Result<Range<usize>, HeadError> {
    if !target.is_ascii() {
        return Err(HeadError::Malformed("a request target is ASCII (percent-encode other bytes)"));
    }
    if target.contains('#') {
        return Err(HeadError::Malformed("a request target cannot carry a fragment (#)"));
    }
    if target.starts_with('/') {
        return Ok(0..target.len());
    }
    if target == "*" && method == "OPTIONS" {
        return Ok(0..1);
    }
    let rest = [("http://", 7), ("https://", 8)]
        .iter()
        .find(|(scheme, n)| target.get(..*n).is_some_and(|t| t.eq_ignore_ascii_case(scheme)))
        .map(|(_, n)| *n);
    let Some(start) = rest else {
        return Err(HeadError::Malformed("the request target must be a path (/…) or an absolute http(s) URI"));
    };
    let end = target[start..].find(['/', '?']).map_or(target.len(), |i| start + i);
    let authority = &target[start..end];
    if authority.is_empty() || !valid_host(authority.as_bytes()) {
        return Err(HeadError::Malformed("invalid authority in the request target"));
    }
    Ok(end..target.len())
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2): a reg-name (unreserved, pct-encoded,
/// sub-delims), an IPv4 address (a reg-name too) or a bracketed IP literal, then an optional port of
/// digits. An empty value is valid (a target without authority). Userinfo (`u@h`), `/`, `?`, `#` and
/// whitespace are not.
pub fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(close) = v.iter().position(|b| *b == b']') else { return false };
        let literal = &v[1..close];
        let ipv6 = literal.contains(&b':') && literal.iter().all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'));
        let future = matches!(literal.first(), Some(b'v' | b'V'))
            && literal.iter().all(|b| crate::digits::is_unreserved(*b) || is_sub_delim(*b) || *b == b':');
        if !(ipv6 || future) {
            return false;
        }
        match &v[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&v[..0], port),
            _ => return false,
        }
    } else {
        match v.iter().rposition(|b| *b == b':') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => (v, &v[v.len()..]),
        }
    };
    if !port.iter().all(u8::is_ascii_digit) || port.len() > 5 {
        return false;
    }
    let mut i = 0;
    while i < host.len() {
        let b = host[i];
        if b == b'%' {
            if !(i + 2 < host.len() && host[i + 1].is_ascii_hexdigit() && host[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
            continue;
        }
        if !(crate::digits::is_unreserved(b) || is_sub_delim(b)) {
            return false;
        }
        i += 1;
    }
    true
}

fn is_sub_delim(b: u8) -> bool {
    matches!(b, b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=')
}
