//! A response's headers as one block of text: lower-case names and trimmed values. Reading a head costs
//! two allocations whatever its size, not two a header (a provider's answer carries twenty or more).

/// Headers in the order they came; names in lower case, values trimmed of spaces and tabs (bytes that
/// are not UTF-8 read as U+FFFD).
#[derive(Debug, Default)]
pub struct ResponseHeaders {
    text: String,
    /// Each header's name end and value end in `text` (its name starts where the previous value ended,
    /// its value where its name ends).
    ends: Vec<(u32, u32)>,
}

impl ResponseHeaders {
    pub fn with_capacity(headers: usize, bytes: usize) -> ResponseHeaders {
        ResponseHeaders { text: String::with_capacity(bytes), ends: Vec::with_capacity(headers) }
    }

    pub fn push(&mut self, name: &str, value: &[u8]) {
        let start = self.text.len();
        self.text.push_str(name);
        self.text[start..].make_ascii_lowercase();
        let name_end = self.text.len();
        // Trimmed of HTTP's whitespace (space and tab) before the UTF-8 check; httparse has usually
        // trimmed it already, which two byte checks tell.
        let untrimmed = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
        let value = if untrimmed(value.first()) || untrimmed(value.last()) { value.trim_ascii() } else { value };
        match crate::text::utf8(value) {
            Ok(text) => self.text.push_str(text),
            // The lossy conversion is slow: only a value that is not valid text takes it.
            Err(_) => self.text.push_str(&String::from_utf8_lossy(value)),
        }
        self.ends.push((offset(name_end), offset(self.text.len())));
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// `(name, value)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            let pair = (&self.text[start..name_end], &self.text[name_end..value_end]);
            start = value_end;
            pair
        })
    }

    /// The values of every header named `name` (lower case).
    pub fn values<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'h str> + 'h {
        self.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// A head is at most a few KiB (`MAX_HEAD_BYTES`), far below `u32::MAX`.
fn offset(at: usize) -> u32 {
    u32::try_from(at).expect("a response head fits in u32 offsets")
}

/// Headers from pairs, as tests write them.
#[cfg(test)]
impl<'a> FromIterator<(&'a str, &'a str)> for ResponseHeaders {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(pairs: I) -> ResponseHeaders {
        let mut headers = ResponseHeaders::default();
        for (name, value) in pairs {
            headers.push(name, value.as_bytes());
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_cased_values_trimmed_text_and_order_kept() {
        let mut headers = ResponseHeaders::with_capacity(4, 64);
        headers.push("X-RateLimit-Remaining", b" 99 ");
        headers.push("content-type", b"  application/json \t");
        headers.push("X-Note", b" caf\xe9 ");
        headers.push("Empty", b"");
        headers.push("x-ratelimit-remaining", b"98");
        let pairs: Vec<(&str, &str)> = headers.iter().collect();
        assert_eq!(
            pairs,
            [
                ("x-ratelimit-remaining", "99"),
                ("content-type", "application/json"),
                ("x-note", "caf\u{fffd}"),
                ("empty", ""),
                ("x-ratelimit-remaining", "98"),
            ]
        );
        assert_eq!(headers.values("x-ratelimit-remaining").collect::<Vec<_>>(), ["99", "98"]);
        assert_eq!(headers.values("absent").count(), 0);
        assert_eq!(headers.iter().count(), 5);
        assert_eq!(ResponseHeaders::default().iter().count(), 0);
    }
}
